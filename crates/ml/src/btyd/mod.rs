//! "Buy till you die" models: the classic probabilistic baselines for non-contractual
//! customers, fitted by maximum likelihood.
//!
//! - [`bgnbd`]: BG/NBD (Fader, Hardie & Lee 2005) — how often a customer buys while
//!   alive and the chance of dying after each purchase; gives P(alive), the chance of no
//!   purchase in a horizon and the expected purchases in it.
//! - [`gamma_gamma`]: Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV") — the
//!   expected value of a customer's orders from the values seen so far.
//!
//! They serve three ways: as baselines the LightGBM models must beat before they are
//! activated, as features those models learn from, and as the model that serves when
//! LightGBM does not beat them (see [`crate::train`]).
//!
//! Both are fitted by maximum likelihood ([`crate::optimise`]) on the logarithms of
//! their (positive) parameters; `ln Γ` comes from `statrs`. Times are in days.

pub mod bgnbd;
pub mod gamma_gamma;

use serde::{Deserialize, Serialize};

use crate::features::Features;
use bgnbd::BgNbd;
use gamma_gamma::GammaGamma;

/// A customer as the BTYD models see them at a cutoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Customer {
    /// Repeat purchases (orders after the first).
    pub x: f64,
    /// Days from the first purchase to the last one.
    pub t_x: f64,
    /// Days from the first purchase to the cutoff.
    pub t: f64,
    /// Orders seen (the first included).
    pub orders: f64,
    /// Mean order value.
    pub mean_value: f64,
}

impl Customer {
    /// The summary of a profile's features, or `None` for someone who never ordered.
    pub fn from_features(f: &Features) -> Option<Self> {
        if !f.has_ordered() || !f.first_order_days.is_finite() {
            return None;
        }
        let t = f64::from(f.first_order_days).max(0.0);
        let recency = f64::from(f.recency_days).clamp(0.0, t);
        Some(Self {
            x: f64::from(f.frequency) - 1.0,
            t_x: t - recency,
            t,
            orders: f64::from(f.frequency),
            mean_value: f64::from(f.monetary_avg),
        })
    }
}

/// Names of the inputs the fitted BTYD models add to a profile's features, in model
/// column order after [`crate::FEATURE_NAMES`].
pub const DERIVED_NAMES: [&str; 5] = [
    "bgnbd_p_alive",
    "bgnbd_p_no_purchase",
    "bgnbd_expected_purchases",
    "gg_expected_order_value",
    "bgnbd_gg_expected_spend",
];

/// BG/NBD and Gamma-Gamma fitted on one population at one cutoff, with the horizon
/// their predictions look over. Either may be missing when the data cannot support it
/// (nobody bought twice, too few customers): its outputs are then `NaN` (missing).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Btyd {
    /// The purchase and dropout model.
    pub bgnbd: Option<BgNbd>,
    /// The order value model.
    pub gamma_gamma: Option<GammaGamma>,
    /// Days ahead that "no purchase", "expected purchases" and "expected spend" cover.
    pub horizon_days: u32,
}

impl Btyd {
    /// Fits both models on the buyers among `features` (what failed to fit is left
    /// out, with the reason logged).
    pub fn fit(features: &[Features], horizon_days: u32) -> Self {
        let customers: Vec<Customer> = features
            .iter()
            .filter_map(Customer::from_features)
            .collect();
        let bgnbd = BgNbd::fit(&customers)
            .inspect_err(|e| tracing::debug!(error = %e, "BG/NBD not fitted"))
            .ok();
        let gamma_gamma = GammaGamma::fit(&customers)
            .inspect_err(|e| tracing::debug!(error = %e, "Gamma-Gamma not fitted"))
            .ok();
        Self {
            bgnbd,
            gamma_gamma,
            horizon_days,
        }
    }

    /// The [`DERIVED_NAMES`] values of each profile (`NaN` for non-buyers and for a
    /// model that is not fitted).
    pub fn derived(&self, features: &[Features]) -> Vec<[f64; 5]> {
        let days = f64::from(self.horizon_days);
        let customers: Vec<Option<Customer>> =
            features.iter().map(Customer::from_features).collect();
        let buyers: Vec<Customer> = customers.iter().flatten().copied().collect();
        let expected = self
            .bgnbd
            .map(|m| m.expected_purchases(&buyers, days))
            .unwrap_or_else(|| vec![f64::NAN; buyers.len()]);
        let mut next = 0;
        customers
            .iter()
            .map(|c| {
                let Some(c) = c else {
                    return [f64::NAN; 5];
                };
                let purchases = expected[next];
                next += 1;
                let (alive, quiet) = self.bgnbd.map_or((f64::NAN, f64::NAN), |m| {
                    (m.p_alive(c), m.p_no_purchase(c, days))
                });
                let value = self
                    .gamma_gamma
                    .map_or(f64::NAN, |g| g.expected_order_value(c));
                [alive, quiet, purchases, value, purchases * value]
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod simulate {
    //! Customers drawn from the models' own generative stories, to check that the fits
    //! recover known parameters.

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use statrs::distribution::{Beta, ContinuousCDF, Gamma};

    use super::Customer;

    /// A uniform draw strictly inside (0, 1).
    fn open_unit(rng: &mut ChaCha8Rng) -> f64 {
        rng.random_range(1e-12..1.0 - 1e-12)
    }

    /// `n` customers from BG/NBD(r, α, a, b), each observed for a random 30–400 days
    /// after their first purchase, with order values from Gamma-Gamma(p, q, γ).
    pub fn customers(
        n: usize,
        (r, alpha, a, b): (f64, f64, f64, f64),
        (p, q, gamma): (f64, f64, f64),
        seed: u64,
    ) -> Vec<Customer> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rate = Gamma::new(r, alpha).expect("valid gamma");
        let dropout = Beta::new(a, b).expect("valid beta");
        let scale = Gamma::new(q, gamma).expect("valid gamma");
        (0..n)
            .map(|_| {
                let lambda = rate.inverse_cdf(open_unit(&mut rng));
                let p_drop = dropout.inverse_cdf(open_unit(&mut rng));
                let nu = scale.inverse_cdf(open_unit(&mut rng));
                let spend = Gamma::new(p, nu).expect("valid gamma");
                let t = rng.random_range(30.0..400.0);
                let (mut now, mut x, mut t_x) = (0.0, 0.0, 0.0);
                loop {
                    now += -open_unit(&mut rng).ln() / lambda;
                    if now > t {
                        break;
                    }
                    x += 1.0;
                    t_x = now;
                    if open_unit(&mut rng) < p_drop {
                        break;
                    }
                }
                let orders = x + 1.0;
                let total: f64 = (0..orders as usize)
                    .map(|_| spend.inverse_cdf(open_unit(&mut rng)))
                    .sum();
                Customer {
                    x,
                    t_x,
                    t,
                    orders,
                    mean_value: total / orders,
                }
            })
            .collect()
    }
}
