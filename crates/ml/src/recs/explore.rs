//! A learned explore ranker, and the calibrated choice of when an item new to a profile
//! takes a place of its list.
//!
//! The linear explore ranking (a weighted sum of similarity, category popularity,
//! popularity, trend and first-time buyers) finds few of the items a profile buys for
//! the first time, although its candidates hold them: a perfect pick of one never-bought
//! candidate finds three to four times what popularity does on Complete Journey. What
//! decides it are interactions a sum cannot express — a neighbour of several recent
//! items of a profile that often tries new things, an item many people try for the first
//! time in a category the profile keeps rotating through. So a LightGBM model
//! (pointwise, log loss, one thread, seeded) learns on the tuning window the probability
//! that a profile buys each candidate, over [`EXPLORE_INPUTS`]: the candidate's features
//! and the profile's and item's habits of exploring.
//!
//! It is fitted on rows of both kinds — each tuning customer's best explore candidates
//! ([`EXPLORE_POOL`]) and the last places of its main list (the repeat items an explore
//! item would push out) — so its probabilities of the two are comparable: a profile gets
//! an explore place only where the best new item's probability beats `margin` times the
//! probability of the item it pushes out ([`ExploreRanker::places`]); accuracy is then
//! not paid for exploring, in expectation. The margin and the most places are chosen on
//! tuning customers the model was not fitted on.

use serde::{Deserialize, Serialize};

use super::{Candidate, FEATURES};
use crate::gbm::{GbmError, GbmModel, GbmParams, Objective};

/// Explore candidates (never bought, not in the main list) the model scores per
/// profile: the best [`LINEAR_TOP`] under the linear explore weights, then the best
/// [`FEATURE_TOP`] under each of a few single features (similarity, first-time buyers in
/// the profile's taste, first-time buyers, category popularity, popularity) not already
/// taken. The model can only promote what it sees, and each row it scores is what a
/// profile costs with it.
pub const EXPLORE_POOL: usize = LINEAR_TOP + 5 * FEATURE_TOP;

/// See [`EXPLORE_POOL`].
pub const LINEAR_TOP: usize = 16;

/// See [`EXPLORE_POOL`].
pub const FEATURE_TOP: usize = 6;

/// Places at the end of the main list the model scores (the repeat items an explore
/// item may push out) and the most explore places a profile can get.
pub const MAX_PLACES: usize = 4;

/// Model inputs per candidate, in order: the blend's [`FEATURES`], then ln(1 + times
/// bought), the share of the profile's baskets that held it, the profile's baskets,
/// mean basket size and baskets per week, days since the profile bought it (−1 never);
/// the item's repurchase cycle, ln(1 + buyers), repeat rate, ln of its orders per buyer,
/// ln(1 + its first-time buyers in the last 28 days), those first-time buyers over its
/// orders then (how much it is tried rather than restocked); the anchors whose
/// neighbours it is and the sum of its similarities to them; days since the profile
/// last bought in its category (−1 never), the profile's distinct items over its
/// purchases in that category (how much it rotates there), and the share of the
/// profile's purchases that were new to it when made, over all its baskets and over
/// its last [`RECENT_BASKETS`] (NaN with one basket); the blend's score, the linear
/// explore score, and whether it is an item2vec neighbour of an anchor.
pub const EXPLORE_INPUTS: usize = FEATURES.len() + 21;

/// The baskets of a profile's recent exploration rate.
pub const RECENT_BASKETS: usize = 5;

/// What the model reads about the item and the profile beyond the candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ItemContext {
    /// The item's repurchase cycle in days (0 unknown).
    pub cycle_days: f32,
    /// Distinct buyers of the item.
    pub buyers: u32,
    /// Share of the item's buyers who buy it again.
    pub repeat_rate: f32,
    /// ln of its mean orders per buyer.
    pub orders_per_buyer_ln: f32,
    /// Its first-time buyers in the last `popularity_days`.
    pub newcomers: u32,
    /// Its orders in the last `popularity_days`.
    pub recent_orders: u32,
    /// The blend's score of the candidate.
    pub blend: f32,
    /// The linear explore score of the candidate.
    pub linear: f32,
}

/// Appends one candidate's [`EXPLORE_INPUTS`] to `out`.
pub(super) fn push_inputs(c: &Candidate, item: ItemContext, out: &mut Vec<f32>) {
    let e = &c.exploration;
    out.extend_from_slice(&c.features);
    out.extend_from_slice(&[
        (1.0 + c.times_bought as f32).ln(),
        super::ranker::basket_share(c),
        c.profile_baskets as f32,
        c.basket_size,
        c.baskets_per_week,
        c.days_since_bought.unwrap_or(-1.0),
        item.cycle_days,
        (1.0 + item.buyers as f32).ln(),
        item.repeat_rate,
        item.orders_per_buyer_ln,
        (1.0 + item.newcomers as f32).ln(),
        item.newcomers as f32 / item.recent_orders.max(1) as f32,
        e.anchor_hits as f32,
        e.similarity_sum,
        e.category_days.unwrap_or(-1.0),
        e.category_variety,
        e.new_share,
        e.recent_new_share,
        item.blend,
        item.linear,
        f32::from(u8::from(c.anchor.is_some())),
    ]);
}

/// LightGBM's settings: pointwise log loss, small trees (the rows it scores per profile
/// are what serving pays), one thread so the model is the same on any machine.
fn params(seed: u64) -> GbmParams {
    GbmParams {
        num_iterations: 100,
        learning_rate: 0.08,
        num_leaves: 15,
        min_data_in_leaf: 100,
        num_threads: 1,
        ..GbmParams::new(Objective::Binary, seed)
    }
}

/// How a policy (a margin and a most number of places) did on the tuning customers the
/// model was not fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LearnedTrial {
    /// Most explore places per profile.
    pub max_places: usize,
    /// An explore item takes a place when its probability beats this times that of the
    /// item it pushes out.
    pub margin: f64,
    /// Share of the customers given at least one place.
    pub share_exploring: f64,
    /// Recall@10 relative to P-TopFreq's on those customers.
    pub recall_ratio: f64,
    /// NDCG@10 relative to P-TopFreq's on those customers.
    pub ndcg_ratio: f64,
    /// Recall@10 of the items new to each customer (over customers who bought any).
    pub explore_recall: f64,
}

/// The learned explore ranker, stored with the recommender as LightGBM's model text.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExploreRanker {
    /// Most explore places per profile.
    pub max_places: usize,
    /// An explore item takes a place when its probability beats this times that of the
    /// item it pushes out.
    pub margin: f64,
    /// LightGBM's model text.
    pub model_text: String,
    #[serde(skip)]
    model: Option<GbmModel>,
}

/// Fits the model on rows of [`EXPLORE_INPUTS`] with 0/1 labels (bought or not).
pub fn fit(rows: &[f32], labels: &[f32], seed: u64) -> Result<GbmModel, GbmError> {
    GbmModel::train(rows, labels, EXPLORE_INPUTS, &params(seed))
}

impl ExploreRanker {
    /// A ranker from a fitted model and its policy.
    pub fn new(model: GbmModel, max_places: usize, margin: f64) -> Result<Self, GbmError> {
        Ok(Self {
            max_places,
            margin,
            model_text: model.to_text()?,
            model: Some(model),
        })
    }

    /// Loads the model from its text (after deserialising); a model fitted on another
    /// number of inputs is an error.
    pub fn load(&mut self) -> Result<(), GbmError> {
        let model =
            super::ranker::model_from_text(&self.model_text, EXPLORE_INPUTS, "explore ranker")?;
        self.model = Some(model);
        Ok(())
    }

    /// The loaded model.
    pub fn model(&self) -> Option<&GbmModel> {
        self.model.as_ref()
    }

    /// See [`places`] (with this ranker's policy).
    pub fn places(&self, explore: &[f64], pushed_out: &[f64]) -> usize {
        places(explore, pushed_out, self.max_places, self.margin)
    }
}

/// How many explore places a profile gets: the largest `n ≤ max_places` such that for
/// every `j < n` the `j`-th best explore probability (`explore`, best first) beats
/// `margin` times the probability of the main list's item it pushes out
/// (`pushed_out[j]`: the list's last item first, then the one before it…).
pub fn places(explore: &[f64], pushed_out: &[f64], max_places: usize, margin: f64) -> usize {
    explore
        .iter()
        .zip(pushed_out)
        .take(max_places)
        .take_while(|(e, p)| **e > margin * **p)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_goes_to_a_new_item_only_while_it_beats_what_it_pushes_out() {
        // Explore 0.3, 0.2, 0.1 against pushed-out 0.1, 0.25, 0.05.
        assert_eq!(places(&[0.3, 0.2, 0.1], &[0.1, 0.25, 0.05], 4, 1.0), 1);
        assert_eq!(places(&[0.3, 0.3, 0.1], &[0.1, 0.25, 0.05], 4, 1.0), 3);
        assert_eq!(places(&[0.3, 0.3, 0.1], &[0.1, 0.25, 0.05], 2, 1.0), 2);
        // A margin of 2: 0.3 beats 2 × 0.1 but 0.3 does not beat 2 × 0.25.
        assert_eq!(places(&[0.3, 0.3, 0.1], &[0.1, 0.25, 0.05], 4, 2.0), 1);
        assert_eq!(places(&[0.05], &[0.1], 4, 1.0), 0);
        assert_eq!(places(&[], &[0.1], 4, 1.0), 0);
    }
}
