//! Maximum-likelihood fitting for the small parametric models (BG/NBD, Gamma-Gamma,
//! Platt scaling): `argmin`'s Nelder–Mead on a handful of parameters. Derivative-free,
//! because these likelihoods are cheap and their gradients (digamma terms) are not
//! worth the code; a few hundred evaluations fit them.

use argmin::core::{CostFunction, Executor};
use argmin::solver::neldermead::NelderMead;

use crate::MlError;

/// A cost over unconstrained parameters.
struct Objective<F: Fn(&[f64]) -> f64>(F);

impl<F: Fn(&[f64]) -> f64> CostFunction for Objective<F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, params: &Self::Param) -> Result<f64, argmin::core::Error> {
        let v = (self.0)(params);
        // Nelder–Mead only compares values: an impossible point is simply very bad.
        Ok(if v.is_finite() { v } else { f64::MAX / 4.0 })
    }
}

/// Minimises `cost` from `start` with Nelder–Mead (initial simplex: one step of `step`
/// along each parameter) and returns the best parameters found.
pub fn minimise(
    what: &str,
    start: &[f64],
    step: f64,
    cost: impl Fn(&[f64]) -> f64,
) -> Result<Vec<f64>, MlError> {
    let mut simplex = vec![start.to_vec()];
    for i in 0..start.len() {
        let mut v = start.to_vec();
        v[i] += step;
        simplex.push(v);
    }
    let solver = NelderMead::new(simplex)
        .with_sd_tolerance(1e-10)
        .map_err(|e| MlError::Invalid(format!("{what}: {e}")))?;
    let result = Executor::new(Objective(cost), solver)
        .configure(|s| s.max_iters(4_000))
        .run()
        .map_err(|e| MlError::Invalid(format!("fitting {what}: {e}")))?;
    result
        .state
        .best_param
        .ok_or_else(|| MlError::Invalid(format!("fitting {what}: no solution")))
}

/// Minimises `neg_ll` (a function of the parameters' logarithms) from `start` (natural
/// scale) and returns the positive parameters on the natural scale.
pub fn fit_positive(
    what: &str,
    start: &[f64],
    neg_ll: impl Fn(&[f64]) -> f64,
) -> Result<Vec<f64>, MlError> {
    let origin: Vec<f64> = start.iter().map(|v| v.ln()).collect();
    let params: Vec<f64> = minimise(what, &origin, 0.5, neg_ll)?
        .iter()
        .map(|v| v.exp())
        .collect();
    if params.iter().all(|p| p.is_finite() && *p > 0.0) {
        Ok(params)
    } else {
        Err(MlError::Invalid(format!(
            "fitting {what}: parameters diverged ({params:?})"
        )))
    }
}
