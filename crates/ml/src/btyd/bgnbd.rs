//! BG/NBD (Fader, Hardie & Lee, "Counting your customers the easy way", 2005).
//!
//! The story: while alive, a customer buys at Poisson rate λ, λ ~ Gamma(r, α) across
//! customers; after each repeat purchase they die with probability p, p ~ Beta(a, b).
//! From a customer's repeat purchases `x`, the time of the last one `t_x` and their age
//! `T` (both since the first purchase) follow closed forms for the likelihood, P(alive)
//! and the chance of no purchase in the next `t` days. The expected number of purchases
//! needs one integral over p, taken over Beta quantiles (see
//! [`BgNbd::expected_purchases`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF};
use statrs::function::gamma::ln_gamma;

use super::Customer;
use crate::MlError;
use crate::optimise::fit_positive;

/// Fewest customers a fit is attempted on.
pub const MIN_CUSTOMERS: usize = 30;

/// Quantiles of Beta(a, b + x) averaged over for the expected purchases.
const P_NODES: usize = 64;

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
                    match Beta::new(self.a, self.b + c.x) {
                        Ok(beta) => (0..P_NODES)
                            .map(|i| beta.inverse_cdf((i as f64 + 0.5) / P_NODES as f64))
                            .collect(),
                        Err(_) => Vec::new(),
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
