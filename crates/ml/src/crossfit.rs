//! Evaluation that can be believed: cross-fitting and bootstrap intervals.
//!
//! [`cross_fit`] splits customers into k folds by a seeded hash of their id and scores
//! each fold with a model fitted on the other folds only. A customer's rows at every
//! cutoff go to the same side, so no model ever scores a customer it learnt from — not
//! even through an earlier cutoff's row. Every customer at the main cutoff gets exactly
//! one out-of-fold score, so metrics cover all of them rather than a held-out slice.
//!
//! [`bootstrap_auc`] resamples customers with replacement and reports the 2.5th and
//! 97.5th percentiles of each scorer's ROC-AUC, on the same resamples for all scorers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::MlError;
use crate::metrics::roc_auc;
use crate::train::LabelledRows;

/// A seeded 64-bit hash of a profile id (splitmix64 finaliser): stable across runs
/// and machines, so folds and validation splits are reproducible.
pub fn hash(profile_id: Uuid, seed: u64) -> u64 {
    let (hi, lo) = profile_id.as_u64_pair();
    let mut z = hi ^ lo.rotate_left(17) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The fold (0..k) of a customer.
pub fn fold_of(profile_id: Uuid, seed: u64, k: usize) -> usize {
    (hash(profile_id, seed ^ 0xF01D) % k as u64) as usize
}

/// Fits `fit` on all rows of the customers outside each fold and scores the fold's
/// main-cutoff rows with `score`. Returns one score per main-cutoff row, in the order
/// those rows appear in `rows`.
pub fn cross_fit<M, T: Clone>(
    rows: &LabelledRows,
    k: usize,
    seed: u64,
    fit: impl Fn(&LabelledRows) -> Result<M, MlError>,
    score: impl Fn(&M, &LabelledRows) -> Result<Vec<T>, MlError>,
) -> Result<Vec<T>, MlError> {
    if k < 2 {
        return Err(MlError::Invalid(format!(
            "cross-fitting needs 2 folds or more, not {k}"
        )));
    }
    let folds: Vec<usize> = rows
        .profile_ids
        .iter()
        .map(|id| fold_of(*id, seed, k))
        .collect();
    let main: Vec<usize> = (0..rows.len()).filter(|i| rows.window[*i] == 0).collect();
    let mut out: Vec<Option<T>> = vec![None; main.len()];
    for fold in 0..k {
        let model = fit(&rows.select(|i| folds[i] != fold))?;
        let positions: Vec<usize> = (0..main.len())
            .filter(|p| folds[main[*p]] == fold)
            .collect();
        let test = rows.select(|i| rows.window[i] == 0 && folds[i] == fold);
        let scores = score(&model, &test)?;
        if scores.len() != positions.len() {
            return Err(MlError::Invalid(format!(
                "cross-fitting: {} scores for {} customers",
                scores.len(),
                positions.len()
            )));
        }
        for (p, s) in positions.into_iter().zip(scores) {
            out[p] = Some(s);
        }
    }
    out.into_iter()
        .map(|s| s.ok_or_else(|| MlError::Invalid("cross-fitting left a customer unscored".into())))
        .collect()
}

/// A 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// 2.5th percentile.
    pub low: f64,
    /// 97.5th percentile.
    pub high: f64,
}

/// Bootstrap intervals of the ROC-AUC of each of `scorers` against `labels`, from
/// `resamples` resamples of the rows shared by all scorers.
pub fn bootstrap_auc(
    scorers: &[&[f64]],
    labels: &[bool],
    resamples: usize,
    seed: u64,
) -> Vec<Interval> {
    let n = labels.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB007);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); scorers.len()];
    let (mut s, mut y) = (vec![0.0; n], vec![false; n]);
    let mut picks = vec![0usize; n];
    for _ in 0..resamples {
        for p in picks.iter_mut() {
            *p = rng.random_range(0..n.max(1));
        }
        for (j, scores) in scorers.iter().enumerate() {
            for (slot, &i) in picks.iter().enumerate() {
                s[slot] = scores[i];
                y[slot] = labels[i];
            }
            let auc = roc_auc(&s, &y);
            if auc.is_finite() {
                draws[j].push(auc);
            }
        }
    }
    draws
        .into_iter()
        .map(|mut d| {
            d.sort_by(f64::total_cmp);
            let at = |q: f64| {
                if d.is_empty() {
                    f64::NAN
                } else {
                    d[((d.len() - 1) as f64 * q).round() as usize]
                }
            };
            Interval {
                low: at(0.025),
                high: at(0.975),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;
    use crate::features::{Features, Outcome};

    fn rows(customers: u128, windows: u8) -> LabelledRows {
        let mut r = LabelledRows::default();
        for w in 0..windows {
            for c in 0..customers {
                r.profile_ids.push(Uuid::from_u128(c + 1));
                r.features.push(Features {
                    frequency: c as f32,
                    ..Features::default()
                });
                r.outcomes.push(Outcome {
                    orders: 0,
                    spend: 0.0,
                });
                r.window.push(w);
            }
        }
        r
    }

    #[test]
    fn no_customer_is_scored_by_a_model_trained_on_them() {
        let r = rows(500, 3);
        let scored_by: Mutex<Vec<(Uuid, usize)>> = Mutex::new(Vec::new());
        // The "model" is the set of customers it was fitted on, and a serial number.
        let fitted = Mutex::new(0usize);
        let trained_on: Mutex<Vec<HashSet<Uuid>>> = Mutex::new(Vec::new());
        let scores = cross_fit(
            &r,
            5,
            9,
            |train| {
                let mut n = fitted.lock().unwrap();
                *n += 1;
                trained_on
                    .lock()
                    .unwrap()
                    .push(train.profile_ids.iter().copied().collect());
                Ok(*n - 1)
            },
            |model, test| {
                assert!(
                    test.window.iter().all(|w| *w == 0),
                    "only main-cutoff rows are scored"
                );
                for id in &test.profile_ids {
                    scored_by.lock().unwrap().push((*id, *model));
                }
                Ok(test.features.iter().map(|f| f.frequency).collect())
            },
        )
        .unwrap();
        let trained_on = trained_on.into_inner().unwrap();
        let scored_by = scored_by.into_inner().unwrap();
        assert_eq!(trained_on.len(), 5);
        assert_eq!(scored_by.len(), 500, "every customer scored exactly once");
        for (id, model) in &scored_by {
            assert!(
                !trained_on[*model].contains(id),
                "{id} scored by a model fitted on it"
            );
        }
        // Each model saw every other customer, at every cutoff.
        for (m, seen) in trained_on.iter().enumerate() {
            let scored_here = scored_by.iter().filter(|(_, s)| *s == m).count();
            assert_eq!(seen.len() + scored_here, 500);
        }
        // Scores come back in row order.
        assert_eq!(scores, (0..500).map(|c| c as f32).collect::<Vec<_>>());
        // Folds are roughly equal.
        for m in 0..5 {
            let n = scored_by.iter().filter(|(_, s)| *s == m).count();
            assert!((60..140).contains(&n), "fold {m}: {n}");
        }
    }

    #[test]
    fn bootstrap_intervals_cover_the_estimate_and_shrink_with_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let make = |n: usize, rng: &mut ChaCha8Rng| -> (Vec<f64>, Vec<bool>) {
            (0..n)
                .map(|_| {
                    let y = rng.random::<bool>();
                    (f64::from(u8::from(y)) * 0.5 + rng.random::<f64>(), y)
                })
                .unzip()
        };
        let (s, y) = make(400, &mut rng);
        let (big_s, big_y) = make(10_000, &mut rng);
        let small = bootstrap_auc(&[&s], &y, 200, 1)[0];
        let big = bootstrap_auc(&[&big_s], &big_y, 200, 1)[0];
        let auc = roc_auc(&s, &y);
        assert!(small.low < auc && auc < small.high, "{small:?} {auc}");
        assert!(
            big.high - big.low < (small.high - small.low) / 3.0,
            "{big:?} {small:?}"
        );
        // The true AUC of this score is 0.875.
        assert!(big.low < 0.875 && 0.875 < big.high, "{big:?}");
    }
}
