//! A LightGBM re-ranker of the blend's best candidates.
//!
//! The blend is a weighted sum, so it cannot learn that, say, recency matters only for
//! items with a short repurchase cycle, or that a profile with 80 baskets reads its
//! frequencies differently from one with 3. The re-ranker takes the blend's best
//! [`RERANK_TOP`] candidates of a profile and orders them by the probability, learned by
//! LightGBM on the tuning window, that the profile buys each in the horizon
//! (a pointwise ranker: `lightgbm3` exposes no query groups for `lambdarank`). It is
//! kept only when it beats the blend, by more than [`MIN_STANDARD_ERRORS`] standard
//! errors, on customers of the window it was not fitted on (see [`super::tune`]).
//! Scoring calls it once per batch of profiles, not once per profile.

use serde::{Deserialize, Serialize};

use super::{Candidate, FEATURES};
use crate::gbm::{GbmError, GbmModel, GbmParams, Objective};

/// How many standard errors of the held-out customers' paired differences the
/// re-ranker's mean gain over the blend must reach to be kept: a win inside the noise
/// of the held-out half is no reason to change the ranking (about a one-sided 2.5 %
/// chance of keeping a ranker that is no better).
pub const MIN_STANDARD_ERRORS: f64 = 2.0;

/// The blend's best candidates the ranker re-orders.
pub const RERANK_TOP: usize = 50;

/// Explore candidates (never bought) the ranker also weighs, the best under the explore
/// weights outside the blend's best [`RERANK_TOP`]: the blend rarely ranks a new item
/// that high, and the ranker can only promote what it sees.
pub const RERANK_EXPLORE: usize = 10;

/// Ranker inputs per candidate, in order: the blend's [`FEATURES`], then the blend's
/// score, times bought, the share of the profile's baskets that held it, the profile's
/// number of baskets, the item's repurchase cycle (days), ln(1 + its buyers), whether
/// it is a neighbour never bought, and the days since the profile last bought it over
/// its cycle (−1 when never bought or the cycle is unknown).
pub const RANKER_INPUTS: usize = FEATURES.len() + 8;

/// The context of a candidate the blend's features leave out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Context {
    /// The blend's score.
    pub blend: f32,
    /// The item's repurchase cycle in days (0 unknown).
    pub cycle_days: f32,
    /// Distinct buyers of the item.
    pub buyers: u32,
}

/// Appends one candidate's [`RANKER_INPUTS`] to `out`.
pub(super) fn push_inputs(c: &Candidate, ctx: Context, out: &mut Vec<f32>) {
    out.extend_from_slice(&c.features);
    out.extend_from_slice(&[
        ctx.blend,
        c.times_bought as f32,
        if c.profile_baskets > 0 {
            c.times_bought as f32 / c.profile_baskets as f32
        } else {
            0.0
        },
        c.profile_baskets as f32,
        ctx.cycle_days,
        (1.0 + ctx.buyers as f32).ln(),
        f32::from(u8::from(c.times_bought == 0 && c.anchor.is_some())),
        match c.days_since_bought {
            Some(days) if ctx.cycle_days > 0.0 => days / ctx.cycle_days,
            _ => -1.0,
        },
    ]);
}

/// A trained re-ranker, stored with the recommender as LightGBM's model text.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ranker {
    /// LightGBM's model text.
    pub model_text: String,
    #[serde(skip)]
    model: Option<GbmModel>,
}

/// How a ranker did against the blend on the half of the tuning window's customers it
/// was not fitted on: each one's objective (Recall@10 and NDCG@10, each relative to
/// P-TopFreq's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    /// The blend's objective.
    pub blend: f64,
    /// The ranker's objective.
    pub ranker: f64,
    /// Standard error of the mean of the customers' differences (ranker − blend); 0 in
    /// models stored before it was measured.
    #[serde(default)]
    pub standard_error: f64,
}

impl HeldOut {
    /// The comparison of customers' (blend, ranker) objectives, one pair each.
    pub fn of(paired: &[(f64, f64)]) -> Self {
        let n = paired.len().max(1) as f64;
        let blend = paired.iter().map(|p| p.0).sum::<f64>() / n;
        let ranker = paired.iter().map(|p| p.1).sum::<f64>() / n;
        let gain = ranker - blend;
        let variance = paired
            .iter()
            .map(|(b, r)| (r - b - gain).powi(2))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        Self {
            blend,
            ranker,
            standard_error: (variance / n).sqrt(),
        }
    }

    /// Whether the ranker's gain is real enough to keep it: positive, and at least
    /// [`MIN_STANDARD_ERRORS`] standard errors.
    pub fn keeps(&self) -> bool {
        let gain = self.ranker - self.blend;
        gain > 0.0 && gain >= MIN_STANDARD_ERRORS * self.standard_error
    }
}

/// LightGBM's settings for the ranker: a binary objective (bought in the horizon or
/// not) with the defaults the churn model starts from, on one thread so the model is
/// the same on any machine.
fn params(seed: u64) -> GbmParams {
    GbmParams {
        num_iterations: 150,
        learning_rate: 0.05,
        num_leaves: 31,
        min_data_in_leaf: 50,
        num_threads: 1,
        ..GbmParams::new(Objective::Binary, seed)
    }
}

impl Ranker {
    /// Fits the probability of a purchase on rows of [`RANKER_INPUTS`] with 0/1 labels.
    pub fn fit(rows: &[f32], labels: &[f32], seed: u64) -> Result<GbmModel, GbmError> {
        GbmModel::train(rows, labels, RANKER_INPUTS, &params(seed))
    }

    /// A ranker from a fitted model.
    pub fn new(model: GbmModel) -> Result<Self, GbmError> {
        Ok(Self {
            model_text: model.to_text()?,
            model: Some(model),
        })
    }

    /// Loads the model from its text (after deserialising); a model fitted on another
    /// number of inputs (stored before they changed) is an error.
    pub fn load(&mut self) -> Result<(), GbmError> {
        let model = GbmModel::from_text(&self.model_text)?;
        if model.n_features() != RANKER_INPUTS {
            return Err(GbmError::new(format!(
                "the ranker takes {} inputs, this one was fitted on {}",
                RANKER_INPUTS,
                model.n_features()
            )));
        }
        self.model = Some(model);
        Ok(())
    }

    /// The loaded model.
    pub fn model(&self) -> Option<&GbmModel> {
        self.model.as_ref()
    }
}

/// `top` (candidate indices, the blend's order) re-ordered by their scores (one each,
/// in the same order), best first; ties keep the blend's order.
pub(super) fn reorder(top: &[usize], scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..top.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.into_iter().map(|i| top[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ranker_is_kept_only_for_a_gain_beyond_the_noise() {
        // Every customer a little better: kept.
        let steady: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, i as f64 + 0.01)).collect();
        let t = HeldOut::of(&steady);
        assert!((t.ranker - t.blend - 0.01).abs() < 1e-9 && t.standard_error < 1e-9);
        assert!(t.keeps());
        // The same mean gain from a few big swings both ways: noise, not kept.
        let noisy: Vec<(f64, f64)> = (0..100)
            .map(|i| (0.0, if i % 2 == 0 { 1.01 } else { -0.99 }))
            .collect();
        let t = HeldOut::of(&noisy);
        assert!((t.ranker - t.blend - 0.01).abs() < 1e-9, "{t:?}");
        assert!(!t.keeps(), "{t:?}");
        // No gain, or a loss: never.
        assert!(!HeldOut::of(&[(1.0, 1.0), (2.0, 2.0)]).keeps());
        assert!(!HeldOut::of(&[(1.0, 0.5), (2.0, 1.5)]).keeps());
    }

    #[test]
    fn reordering_follows_the_scores_and_keeps_the_blend_order_on_ties() {
        assert_eq!(reorder(&[7, 3, 9, 4], &[0.1, 0.5, 0.5, 0.9]), [4, 3, 9, 7]);
        assert!(reorder(&[], &[]).is_empty());
    }
}
