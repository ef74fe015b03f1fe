//! A LightGBM re-ranker of the blend's best candidates.
//!
//! The blend is a weighted sum, so it cannot learn that, say, recency matters only for
//! items with a short repurchase cycle, or that a profile with 80 baskets reads its
//! frequencies differently from one with 3. The re-ranker takes the blend's best
//! [`RERANK_TOP`] candidates of a profile and orders them by the probability, learned by
//! LightGBM on the tuning window, that the profile buys each in the horizon
//! (a pointwise ranker: `lightgbm3` exposes no query groups for `lambdarank`). It is
//! kept only when it beats the blend by [`MIN_GAIN`] on customers of the window it was
//! not fitted on (see [`super::tune`]).

use serde::{Deserialize, Serialize};

use super::{Candidate, FEATURES};
use crate::gbm::{GbmError, GbmModel, GbmParams, Objective};

/// The share by which the re-ranker must beat the blend's objective on held-out tuning
/// customers to be kept. It costs one LightGBM call per scored profile (scoring about
/// five times slower: 920 instead of 5,095 profiles per CPU second on Complete
/// Journey), so a win inside the noise of the held-out half does not pay for it.
pub const MIN_GAIN: f64 = 0.01;

/// The blend's best candidates the ranker re-orders.
pub const RERANK_TOP: usize = 50;

/// Ranker inputs per candidate, in order: the blend's [`FEATURES`], then the blend's
/// score, times bought, the share of the profile's baskets that held it, the profile's
/// number of baskets, the item's repurchase cycle (days), ln(1 + its buyers) and
/// whether it is an explore candidate (never bought, near an anchor).
pub const RANKER_INPUTS: usize = FEATURES.len() + 7;

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

    /// Loads the model from its text (after deserialising).
    pub fn load(&mut self) -> Result<(), GbmError> {
        self.model = Some(GbmModel::from_text(&self.model_text)?);
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
    fn reordering_follows_the_scores_and_keeps_the_blend_order_on_ties() {
        assert_eq!(reorder(&[7, 3, 9, 4], &[0.1, 0.5, 0.5, 0.9]), [4, 3, 9, 7]);
        assert!(reorder(&[], &[]).is_empty());
    }
}
