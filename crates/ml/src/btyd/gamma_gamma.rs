//! Gamma-Gamma spend model (Fader, Hardie & Lee, "RFM and CLV", 2005; Colombo &
//! Jiang 1999).
//!
//! A customer's order values are Gamma(p, ν) with ν ~ Gamma(q, γ) across customers, so
//! the mean of `n` orders, `m`, has a closed-form marginal likelihood and the expected
//! value of the next order is a weighted mix of the population mean and the customer's
//! own: `p (γ + n m) / (p n + q − 1)`. Unlike the textbook use (repeat orders only),
//! every order counts here, the first included, so one-order customers get their own
//! estimate too.

use serde::{Deserialize, Serialize};
use statrs::function::gamma::ln_gamma;

use super::Customer;
use crate::MlError;
use crate::optimise::fit_positive;

/// Fewest customers with a positive mean value a fit is attempted on.
pub const MIN_CUSTOMERS: usize = 30;

/// Fitted Gamma-Gamma parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    /// Shape of one order's value.
    pub p: f64,
    /// Shape of the customers' value-rate distribution.
    pub q: f64,
    /// Scale of the customers' value-rate distribution.
    pub gamma: f64,
}

fn usable(c: &Customer) -> bool {
    c.orders >= 1.0 && c.mean_value.is_finite() && c.mean_value > 0.0
}

impl GammaGamma {
    /// Log-likelihood of one customer's mean order value.
    pub fn log_likelihood(&self, c: &Customer) -> f64 {
        let Self { p, q, gamma } = *self;
        let (n, m) = (c.orders, c.mean_value);
        ln_gamma(p * n + q) - ln_gamma(p * n) - ln_gamma(q)
            + q * gamma.ln()
            + p * n * n.ln()
            + (p * n - 1.0) * m.ln()
            - (p * n + q) * (gamma + n * m).ln()
    }

    /// Fits the parameters by maximum likelihood on the customers with a positive mean
    /// order value.
    pub fn fit(customers: &[Customer]) -> Result<Self, MlError> {
        let used: Vec<Customer> = customers.iter().copied().filter(usable).collect();
        if used.len() < MIN_CUSTOMERS {
            return Err(MlError::NotEnoughData(format!(
                "Gamma-Gamma: {} customers with spend, at least {MIN_CUSTOMERS} needed",
                used.len()
            )));
        }
        let n = used.len() as f64;
        let mean = used.iter().map(|c| c.mean_value).sum::<f64>() / n;
        let neg_ll = |v: &[f64]| {
            let m = GammaGamma {
                p: v[0].exp(),
                q: v[1].exp(),
                gamma: v[2].exp(),
            };
            -used.iter().map(|c| m.log_likelihood(c)).sum::<f64>() / n
        };
        // Start where the population mean p γ / (q − 1) equals the observed mean.
        let p = fit_positive("Gamma-Gamma", &[1.0, 3.0, 2.0 * mean], neg_ll)?;
        let fitted = Self {
            p: p[0],
            q: p[1],
            gamma: p[2],
        };
        if fitted.q <= 1.0 {
            return Err(MlError::Invalid(format!(
                "Gamma-Gamma: q = {:.3} ≤ 1, the mean order value is unbounded",
                fitted.q
            )));
        }
        Ok(fitted)
    }

    /// The expected value of this customer's next order.
    pub fn expected_order_value(&self, c: &Customer) -> f64 {
        let Self { p, q, gamma } = *self;
        if usable(c) {
            p * (gamma + c.orders * c.mean_value) / (p * c.orders + q - 1.0)
        } else {
            p * gamma / (q - 1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simulate;
    use super::*;

    #[test]
    fn fit_recovers_simulated_parameters() {
        let truth = (6.0, 4.0, 15.0);
        let customers = simulate::customers(5_000, (0.8, 20.0, 0.6, 3.0), truth, 11);
        let m = GammaGamma::fit(&customers).unwrap();
        for (name, got, want) in [
            ("p", m.p, truth.0),
            ("q", m.q, truth.1),
            ("gamma", m.gamma, truth.2),
        ] {
            assert!(
                (got - want).abs() / want < 0.2,
                "{name}: fitted {got}, true {want} ({m:?})"
            );
        }
        // The expectation shrinks a customer's own mean towards the population's
        // (p γ / (q − 1) = 30 here), less so the more orders they have.
        let one = Customer {
            x: 0.0,
            t_x: 0.0,
            t: 10.0,
            orders: 1.0,
            mean_value: 100.0,
        };
        let many = Customer {
            orders: 20.0,
            x: 19.0,
            ..one
        };
        let (e1, e20) = (m.expected_order_value(&one), m.expected_order_value(&many));
        assert!(30.0 < e1 && e1 < e20 && e20 < 100.0, "{e1} {e20}");
    }

    #[test]
    fn too_little_data_is_refused() {
        let c = Customer {
            x: 1.0,
            t_x: 1.0,
            t: 2.0,
            orders: 2.0,
            mean_value: 0.0,
        };
        assert!(matches!(
            GammaGamma::fit(&[c; 100]),
            Err(MlError::NotEnoughData(_))
        ));
    }
}
