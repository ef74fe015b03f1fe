//! BG/NBD (Fader, Hardie & Lee, "Counting your customers the easy way", 2005).
//!
//! The story: while alive, a customer buys at Poisson rate λ, λ ~ Gamma(r, α) across
//! customers; after each repeat purchase they die with probability p, p ~ Beta(a, b).
//! From a customer's repeat purchases `x`, the time of the last one `t_x` and their age
//! `T` (both since the first purchase) follow closed forms for the likelihood, P(alive)
//! and the chance of no purchase in the next `t` days. The expected number of purchases
//! needs one integral over p, taken over Beta quantiles (see
//! [`BgNbd::expected_purchases`]), which `beta_quantile` computes in a bounded number
//! of steps whatever the fitted parameters.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use statrs::function::beta::{beta_reg, ln_beta};
use statrs::function::gamma::ln_gamma;

use super::Customer;
use crate::MlError;
use crate::optimise::fit_positive;

/// Fewest customers a fit is attempted on.
pub const MIN_CUSTOMERS: usize = 30;

/// Quantiles of Beta(a, b + x) averaged over for the expected purchases.
const P_NODES: usize = 64;

/// Most steps [`beta_quantile`] takes (it usually needs fewer than ten).
const QUANTILE_STEPS: usize = 100;

/// The `u`-quantile of Beta(a, b) (for `0 < u < 1`): Newton's method on the regularised
/// incomplete beta function, kept inside a bracket of the root that every step
/// narrows; where the Newton step would leave the bracket (or is not a number) a
/// bisection takes its place — geometric, since quantiles of a small `a` lie many
/// orders of magnitude below the mean, and a hundredfold drop while no lower bound is
/// known. At most [`QUANTILE_STEPS`] steps, so it ends for any parameters (a quantile
/// far below 1e-200 comes back as a bound above it: the caller treats every p below
/// 1e-9 alike).
///
/// Not statrs' `Beta::inverse_cdf`: its Newton iteration (AS 64 / AS 109) has no
/// iteration cap and never returns once the density at its starting point overflows
/// (b from about 10⁷ with a far smaller a). A BG/NBD fit on customers who show no
/// dropout heterogeneity gets there: its likelihood keeps rising towards a mean dropout
/// of 0, and Nelder–Mead stops far out (a ≈ 1.5e-6, b ≈ 1.7e10 on a fold of a
/// 150-customer brand), where `ctl demo`'s training spun one core until CI's timeout
/// (docs/ml.md, "Not done / known limits").
fn beta_quantile(a: f64, b: f64, u: f64) -> f64 {
    let ln_b = ln_beta(a, b);
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    // The mean: a start inside (0, 1) near the bulk of the mass.
    let mut p = (a / (a + b)).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
    for _ in 0..QUANTILE_STEPS {
        let cdf = beta_reg(a, b, p);
        // A CDF that is not a number says nothing of the side: taken as above.
        if cdf < u {
            lo = p;
        } else {
            hi = p;
        }
        if (cdf - u).abs() <= 1e-13 * u || hi - lo <= 1e-15 * hi {
            break;
        }
        let density = ((a - 1.0) * p.ln() + (b - 1.0) * (-p).ln_1p() - ln_b).exp();
        let newton = p - (cdf - u) / density;
        let next = if newton > lo && newton < hi {
            newton
        } else if lo > 0.0 {
            (lo * hi).sqrt()
        } else {
            hi * 0.01
        };
        if next == p || next < 1e-300 {
            break;
        }
        p = next;
    }
    p
}

/// Fitted BG/NBD parameters (time unit: days).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    /// Shape of the purchase-rate distribution.
    pub r: f64,
    /// Scale (in days) of the purchase-rate distribution.
    pub alpha: f64,
    /// Beta parameter a of the dropout probability.
    pub a: f64,
    /// Beta parameter b of the dropout probability.
    pub b: f64,
}

/// `ln(e^u + e^v)` without overflow.
fn log_add_exp(u: f64, v: f64) -> f64 {
    if u == f64::NEG_INFINITY {
        return v;
    }
    let (hi, lo) = if u > v { (u, v) } else { (v, u) };
    hi + (lo - hi).exp().ln_1p()
}

impl BgNbd {
    /// Log-likelihood of one customer.
    pub fn log_likelihood(&self, c: &Customer) -> f64 {
        let Self { r, alpha, a, b } = *self;
        let x = c.x;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        a1 + a2 + self.log_bracket(c)
    }

    /// `ln[(α+T)^-(r+x) + δ(x>0) a/(b+x-1) (α+t_x)^-(r+x)]`: the part of the likelihood
    /// that depends on the times.
    fn log_bracket(&self, c: &Customer) -> f64 {
        let Self { r, alpha, a, b } = *self;
        let alive = -(r + c.x) * (alpha + c.t).ln();
        let died = if c.x > 0.0 {
            a.ln() - (b + c.x - 1.0).ln() - (r + c.x) * (alpha + c.t_x).ln()
        } else {
            f64::NEG_INFINITY
        };
        log_add_exp(alive, died)
    }

    /// Fits the parameters by maximum likelihood.
    pub fn fit(customers: &[Customer]) -> Result<Self, MlError> {
        if customers.len() < MIN_CUSTOMERS {
            return Err(MlError::NotEnoughData(format!(
                "BG/NBD: {} customers, at least {MIN_CUSTOMERS} needed",
                customers.len()
            )));
        }
        if customers.iter().all(|c| c.x == 0.0) {
            return Err(MlError::NotEnoughData(
                "BG/NBD: nobody has bought twice yet".into(),
            ));
        }
        // Terms that depend on x alone are computed once per distinct x.
        let mut by_x: HashMap<u64, usize> = HashMap::new();
        for c in customers {
            *by_x.entry(c.x as u64).or_default() += 1;
        }
        let by_x: Vec<(f64, f64)> = by_x
            .into_iter()
            .map(|(x, n)| (x as f64, n as f64))
            .collect();
        let n = customers.len() as f64;
        let neg_ll = |p: &[f64]| {
            let m = BgNbd {
                r: p[0].exp(),
                alpha: p[1].exp(),
                a: p[2].exp(),
                b: p[3].exp(),
            };
            let per_x: f64 = by_x
                .iter()
                .map(|&(x, count)| {
                    count
                        * (ln_gamma(m.r + x) - ln_gamma(m.r)
                            + ln_gamma(m.a + m.b)
                            + ln_gamma(m.b + x)
                            - ln_gamma(m.b)
                            - ln_gamma(m.a + m.b + x))
                })
                .sum();
            let times: f64 = customers.iter().map(|c| m.log_bracket(c)).sum();
            -(per_x + n * m.r * m.alpha.ln() + times) / n
        };
        // Start from a rate matching the mean purchase frequency.
        let rate = customers.iter().map(|c| c.x).sum::<f64>()
            / customers.iter().map(|c| c.t.max(1.0)).sum::<f64>();
        let p = fit_positive("BG/NBD", &[1.0, 1.0 / rate.max(1e-6), 1.0, 1.0], neg_ll)?;
        Ok(Self {
            r: p[0],
            alpha: p[1],
            a: p[2],
            b: p[3],
        })
    }

    /// The probability that the customer is still alive at the cutoff.
    pub fn p_alive(&self, c: &Customer) -> f64 {
        if c.x == 0.0 {
            return 1.0;
        }
        let Self { r, alpha, a, b } = *self;
        let odds_dead =
            (a / (b + c.x - 1.0)).ln() + (r + c.x) * ((alpha + c.t) / (alpha + c.t_x)).ln();
        1.0 / (1.0 + odds_dead.exp())
    }

    /// The probability of no purchase in the `days` after the cutoff: dead, or alive
    /// and no Poisson event (given alive, the rate's posterior is Gamma(r+x, α+T)).
    pub fn p_no_purchase(&self, c: &Customer, days: f64) -> f64 {
        let alive = self.p_alive(c);
        let quiet = ((self.alpha + c.t) / (self.alpha + c.t + days)).powf(self.r + c.x);
        (1.0 - alive) + alive * quiet
    }

    /// Expected purchases in the `days` after the cutoff, for each customer.
    ///
    /// Given alive with rate λ and dropout p, E[purchases in t] = (1 − e^{−λpt}) / p;
    /// over λ's posterior Gamma(r+x, α+T) that is (1 − ((α+T)/(α+T+pt))^{r+x}) / p,
    /// a smooth bounded function of p, averaged here over `P_NODES` mid-quantiles of
    /// p's posterior Beta(a, b+x) (the closed form needs ₂F₁, which no well-kept crate
    /// offers). Quantiles are computed once per distinct x.
    pub fn expected_purchases(&self, customers: &[Customer], days: f64) -> Vec<f64> {
        let mut nodes: HashMap<u64, Vec<f64>> = HashMap::new();
        customers
            .iter()
            .map(|c| {
                let ps = nodes.entry(c.x as u64).or_insert_with(|| {
                    let (a, b) = (self.a, self.b + c.x);
                    if a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite() {
                        (0..P_NODES)
                            .map(|i| beta_quantile(a, b, (i as f64 + 0.5) / P_NODES as f64))
                            .collect()
                    } else {
                        Vec::new()
                    }
                });
                let base = self.alpha + c.t;
                let shape = self.r + c.x;
                let given_alive = ps
                    .iter()
                    .map(|&p| {
                        if p < 1e-9 {
                            // The limit p → 0: purchases at the posterior mean rate.
                            shape * days / base
                        } else {
                            (1.0 - (base / (base + p * days)).powf(shape)) / p
                        }
                    })
                    .sum::<f64>()
                    / ps.len().max(1) as f64;
                self.p_alive(c) * given_alive
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::simulate;
    use super::*;

    /// `lifetimes`' fit of the CDNOW sample (in weeks), with its P(alive) and expected
    /// purchases in 39 weeks for four customers, as computed by `lifetimes` 0.11.3.
    fn cdnow_weeks() -> BgNbd {
        BgNbd {
            r: 0.242593,
            alpha: 4.413532,
            a: 0.792886,
            b: 2.425752,
        }
    }

    fn customer(x: f64, t_x: f64, t: f64) -> Customer {
        Customer {
            x,
            t_x,
            t,
            orders: x + 1.0,
            mean_value: 1.0,
        }
    }

    #[test]
    fn closed_forms_match_the_reference_implementation() {
        let m = cdnow_weeks();
        let cases = [
            (customer(0.0, 0.0, 38.86), 1.0, 0.194_780_86),
            (customer(2.0, 30.43, 38.86), 0.726_609_14, 1.225_910_42),
            (customer(10.0, 35.0, 38.86), 0.846_960_76, 6.163_801_70),
            (customer(1.0, 1.71, 38.86), 0.212_227_39, 0.203_250_62),
        ];
        let expected = m.expected_purchases(&cases.map(|c| c.0), 39.0);
        for ((c, alive, purchases), got) in cases.iter().zip(expected) {
            assert!(
                (m.p_alive(c) - alive).abs() < 1e-6,
                "{c:?}: {}",
                m.p_alive(c)
            );
            assert!(
                (got - purchases).abs() / purchases < 2e-3,
                "{c:?}: expected purchases {got}, reference {purchases}"
            );
        }
        // No purchase is likelier for the customer who went quiet early.
        let quiet = m.p_no_purchase(&customer(1.0, 1.71, 38.86), 39.0);
        let busy = m.p_no_purchase(&customer(10.0, 35.0, 38.86), 39.0);
        assert!(quiet > 0.85 && busy < 0.2, "{quiet} {busy}");
    }

    #[test]
    fn beta_quantiles_invert_the_cdf() {
        for (a, b) in [
            (0.792886, 2.425752),
            (0.792886, 12.4),
            (0.05, 3.0),
            (40.0, 2.0),
        ] {
            for u in [0.5 / 64.0, 0.1, 0.5, 0.9, 63.5 / 64.0] {
                let q = beta_quantile(a, b, u);
                assert!(q > 0.0 && q < 1.0, "Beta({a}, {b}) at {u}: {q}");
                let back = beta_reg(a, b, q);
                assert!(
                    (back - u).abs() < 1e-10,
                    "Beta({a}, {b}) at {u}: {q} has CDF {back}"
                );
            }
        }
    }

    /// A fit on customers who show no dropout heterogeneity runs off to extreme a and
    /// b (the second pair is one fitted in `tests/training_ends.rs`): there statrs'
    /// Beta quantile never returned. The expected purchases come back, finite, for any
    /// parameters; the work runs on a thread of its own so that a hang fails the test
    /// instead of stalling it.
    #[test]
    fn expected_purchases_end_for_any_dropout_parameters() {
        let extremes = [
            (2.0, 5e7),
            (1.491_134_935_632_943_7e-6, 16_732_810_596.032_37),
            (1e7, 1e8),
            (1e9, 1.0),
            (1e-12, 1e-12),
        ];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let customers = [
                customer(0.0, 0.0, 100.0),
                customer(3.0, 80.0, 100.0),
                customer(12.0, 95.0, 100.0),
            ];
            for (a, b) in extremes {
                let m = BgNbd {
                    r: 0.8,
                    alpha: 20.0,
                    a,
                    b,
                };
                let _ = tx.send(((a, b), m.expected_purchases(&customers, 45.0)));
            }
        });
        for (a, b) in extremes {
            let (params, expected) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("expected purchases at a = {a}, b = {b} never came"));
            assert!(
                expected.iter().all(|e| e.is_finite() && *e >= 0.0),
                "{params:?}: {expected:?}"
            );
        }
    }

    #[test]
    fn fit_recovers_simulated_parameters() {
        let truth = (0.8, 20.0, 0.6, 3.0);
        let customers = simulate::customers(6_000, truth, (6.0, 4.0, 15.0), 7);
        let m = BgNbd::fit(&customers).unwrap();
        for (name, got, want, tolerance) in [
            ("r", m.r, truth.0, 0.15),
            ("alpha", m.alpha, truth.1, 0.2),
            ("a", m.a, truth.2, 0.3),
            ("b", m.b, truth.3, 0.35),
        ] {
            assert!(
                (got - want).abs() / want < tolerance,
                "{name}: fitted {got}, true {want} ({m:?})"
            );
        }
        // The fit is the maximum: the truth is no more likely.
        let ll = |m: &BgNbd| customers.iter().map(|c| m.log_likelihood(c)).sum::<f64>();
        let true_model = BgNbd {
            r: truth.0,
            alpha: truth.1,
            a: truth.2,
            b: truth.3,
        };
        assert!(ll(&m) >= ll(&true_model) - 1e-6);
    }

    #[test]
    fn too_little_data_is_refused() {
        assert!(matches!(
            BgNbd::fit(&[customer(1.0, 2.0, 10.0); 5]),
            Err(MlError::NotEnoughData(_))
        ));
        assert!(matches!(
            BgNbd::fit(&[customer(0.0, 0.0, 10.0); 100]),
            Err(MlError::NotEnoughData(_))
        ));
    }
}
