//! A LightGBM re-ranker of the blend's best candidates.
//!
//! The blend is a weighted sum, so it cannot learn that, say, recency matters only for
//! items with a short repurchase cycle, or that a profile with 80 baskets reads its
//! frequencies differently from one with 3. The re-ranker takes the blend's best
//! [`RERANK_TOP`] candidates of a profile and orders them by the probability, learned by
//! LightGBM on the tuning window, that the profile buys each in the horizon — either
//! pointwise (the probability of a purchase, log loss) or as a learning-to-rank model
//! ([`Loss::Lambdarank`]: LambdaMART's gradients of NDCG with each customer's pool as
//! one query, computed here and handed to LightGBM as a custom objective, since
//! `lightgbm3` exposes no query groups). The tuning fits both and keeps the one that
//! does better on customers of the window it was not fitted on, and only when it beats
//! the blend there by more than [`MIN_STANDARD_ERRORS`] standard errors (see
//! [`super::tune`]). Scoring calls it once per batch of profiles, not once per profile.

use serde::{Deserialize, Serialize};

use super::{Candidate, FEATURES};
use crate::gbm::{GbmError, GbmModel, GbmParams, Objective};

/// How many standard errors of the held-out customers' paired differences the
/// re-ranker's mean gain over the blend must reach to be kept: a win inside the noise
/// of the held-out half is no reason to change the ranking (about a one-sided 2.5 %
/// chance of keeping a ranker that is no better).
pub const MIN_STANDARD_ERRORS: f64 = 2.0;

/// The blend's best candidates the ranker re-orders: 20 (30 before, 50 before that),
/// since the rows the ranker scores are what scoring a profile costs with it, and the
/// blend's places past 20 rarely reach a top 10 (on Complete Journey the ranker fitted
/// on 20 did as well as the one fitted on 30 at every cutoff; docs/ml.md).
pub const RERANK_TOP: usize = 20;

/// Trees of the ranker: 75 at a learning rate of 0.1 (150 at 0.05 before). Serving
/// walks every tree for every row of every profile, so half the trees is about half
/// the ranker's cost per profile; on Complete Journey the held-out gain and the lists'
/// accuracy were no lower (docs/ml.md).
pub const RANKER_TREES: u32 = 75;

/// Explore candidates (never bought) the ranker also weighs, the best under the explore
/// weights outside the blend's best [`RERANK_TOP`]: the blend rarely ranks a new item
/// that high, and the ranker can only promote what it sees.
pub const RERANK_EXPLORE: usize = 10;

/// Ranker inputs per candidate, in order: the blend's [`FEATURES`], then the blend's
/// score, times bought, the share of the profile's baskets that held it, the profile's
/// number of baskets, the item's repurchase cycle (days), ln(1 + its buyers), whether
/// it is a neighbour never bought, the days since the profile last bought it over its
/// cycle (−1 when never bought or the cycle is unknown), those days themselves (−1 when
/// never bought), the item's repeat rate (whether or not the profile bought it), and the
/// profile's mean basket size and baskets per week.
pub const RANKER_INPUTS: usize = FEATURES.len() + 12;

/// The context of a candidate the blend's features leave out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Context {
    /// The blend's score.
    pub blend: f32,
    /// The item's repurchase cycle in days (0 unknown).
    pub cycle_days: f32,
    /// Distinct buyers of the item.
    pub buyers: u32,
    /// Share of the item's buyers who buy it again.
    pub repeat_rate: f32,
}

/// Appends one candidate's [`RANKER_INPUTS`] to `out`.
pub(super) fn push_inputs(c: &Candidate, ctx: Context, out: &mut Vec<f32>) {
    out.extend_from_slice(&c.features);
    out.extend_from_slice(&[
        ctx.blend,
        c.times_bought as f32,
        basket_share(c),
        c.profile_baskets as f32,
        ctx.cycle_days,
        (1.0 + ctx.buyers as f32).ln(),
        f32::from(u8::from(c.times_bought == 0 && c.anchor.is_some())),
        match c.days_since_bought {
            Some(days) if ctx.cycle_days > 0.0 => days / ctx.cycle_days,
            _ => -1.0,
        },
        c.days_since_bought.unwrap_or(-1.0),
        ctx.repeat_rate,
        c.basket_size,
        c.baskets_per_week,
    ]);
}

/// The share of the profile's baskets that held the candidate (0 without baskets).
pub(super) fn basket_share(c: &Candidate) -> f32 {
    if c.profile_baskets > 0 {
        c.times_bought as f32 / c.profile_baskets as f32
    } else {
        0.0
    }
}

/// What the ranker's trees are fitted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Whether the profile buys the candidate (log loss, row by row).
    #[default]
    Pointwise,
    /// The order of each profile's candidates (LambdaMART: pairwise gradients weighted
    /// by what swapping the pair changes of NDCG).
    Lambdarank,
}

impl Loss {
    /// Both, in the order the tuning tries them.
    pub const ALL: [Loss; 2] = [Loss::Pointwise, Loss::Lambdarank];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Pointwise => "pointwise",
            Loss::Lambdarank => "lambdarank",
        }
    }
}

/// Places of a profile's list where LambdaMART's pairs start (a pair counts when its
/// better-placed candidate is within them), and the depth of the NDCG it normalises by:
/// twice the list's 10, so a candidate just outside the list still learns to rise.
const TRUNCATION: usize = 20;

/// The slope of LambdaMART's pairwise logistic (LightGBM's `sigmoid`, default 1).
const SIGMA: f64 = 1.0;

/// LambdaMART's gradients and hessians (binary gains, as LightGBM's `lambdarank` with
/// `lambdarank_norm`) of the rows' current `scores`, for queries that are consecutive
/// runs of `groups` rows each; a query with no purchase, or only purchases, gives 0.
pub fn lambdarank_gradients(
    groups: &[usize],
    scores: &[f64],
    labels: &[f32],
    gradients: &mut [f32],
    hessians: &mut [f32],
) {
    gradients.fill(0.0);
    hessians.fill(0.0);
    let discount = |rank: usize| 1.0 / (rank as f64 + 2.0).log2();
    let mut start = 0;
    for &len in groups {
        let (s, l) = (&scores[start..start + len], &labels[start..start + len]);
        let positives = l.iter().filter(|v| **v > 0.0).count();
        if positives > 0 && positives < len {
            let ideal: f64 = (0..positives.min(TRUNCATION)).map(discount).sum();
            let mut order: Vec<usize> = (0..len).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            let (mut lambdas, mut weights) = (vec![0f64; len], vec![0f64; len]);
            let mut sum = 0.0;
            for (ri, &i) in order.iter().enumerate().take(TRUNCATION) {
                for (rj, &j) in order.iter().enumerate().skip(ri + 1) {
                    if l[i] == l[j] {
                        continue;
                    }
                    let (high, low) = if l[i] > l[j] { (i, j) } else { (j, i) };
                    let delta_ndcg = (discount(ri) - discount(rj)).abs() / ideal;
                    let p = 1.0 / (1.0 + (SIGMA * (s[high] - s[low])).exp());
                    let lambda = -SIGMA * p * delta_ndcg;
                    let hessian = SIGMA * SIGMA * p * (1.0 - p) * delta_ndcg;
                    lambdas[high] += lambda;
                    lambdas[low] -= lambda;
                    weights[high] += hessian;
                    weights[low] += hessian;
                    sum -= 2.0 * lambda;
                }
            }
            let norm = if sum > 0.0 {
                (1.0 + sum).log2() / sum
            } else {
                1.0
            };
            let rows = start..start + len;
            for ((g, h), (lambda, weight)) in gradients[rows.clone()]
                .iter_mut()
                .zip(&mut hessians[rows])
                .zip(lambdas.iter().zip(&weights))
            {
                *g = (lambda * norm) as f32;
                *h = (weight * norm) as f32;
            }
        }
        start += len;
    }
}

/// A trained re-ranker, stored with the recommender as LightGBM's model text.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ranker {
    /// What its trees were fitted to (pointwise in models stored before the choice).
    #[serde(default)]
    pub loss: Loss,
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
    /// The loss of the ranker compared (the better of the two on these customers; none
    /// in models stored before the choice, which were pointwise).
    #[serde(default)]
    pub loss: Option<Loss>,
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
            loss: None,
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
/// the same on any machine. [`RANKER_TREES`] trees at a learning rate of 0.1.
fn params(seed: u64) -> GbmParams {
    GbmParams {
        num_iterations: RANKER_TREES,
        learning_rate: 0.1,
        num_leaves: 31,
        min_data_in_leaf: 50,
        num_threads: 1,
        ..GbmParams::new(Objective::Binary, seed)
    }
}

impl Ranker {
    /// Fits `loss` on rows of [`RANKER_INPUTS`] with 0/1 labels (bought or not), the
    /// rows of each profile consecutive, `groups` of them (used by
    /// [`Loss::Lambdarank`] only).
    pub fn fit(
        loss: Loss,
        rows: &[f32],
        labels: &[f32],
        groups: &[usize],
        seed: u64,
    ) -> Result<GbmModel, GbmError> {
        match loss {
            Loss::Pointwise => GbmModel::train(rows, labels, RANKER_INPUTS, &params(seed)),
            Loss::Lambdarank => {
                GbmModel::train_custom(rows, labels, RANKER_INPUTS, &params(seed), |s, l, g, h| {
                    lambdarank_gradients(groups, s, l, g, h)
                })
            }
        }
    }

    /// A ranker from a model fitted to `loss`.
    pub fn new(loss: Loss, model: GbmModel) -> Result<Self, GbmError> {
        Ok(Self {
            loss,
            model_text: model.to_text()?,
            model: Some(model),
        })
    }

    /// Loads the model from its text (after deserialising); a model fitted on another
    /// number of inputs (stored before they changed) is an error.
    pub fn load(&mut self) -> Result<(), GbmError> {
        self.model = Some(model_from_text(&self.model_text, RANKER_INPUTS, "ranker")?);
        Ok(())
    }

    /// The loaded model.
    pub fn model(&self) -> Option<&GbmModel> {
        self.model.as_ref()
    }
}

/// A LightGBM model from its text, which must take `inputs` inputs (one stored before
/// they changed is an error naming `what` it is).
pub(super) fn model_from_text(text: &str, inputs: usize, what: &str) -> Result<GbmModel, GbmError> {
    let model = GbmModel::from_text(text)?;
    if model.n_features() != inputs {
        return Err(GbmError::new(format!(
            "the {what} takes {inputs} inputs, this one was fitted on {}",
            model.n_features()
        )));
    }
    Ok(model)
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
    fn lambdarank_pushes_each_query_s_purchases_up_and_the_rest_down() {
        // Two queries of three rows and one with no purchase, all scored alike.
        let groups = [3, 3, 2];
        let labels = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let scores = [0.0; 8];
        let (mut g, mut h) = ([9.0f32; 8], [9.0f32; 8]);
        lambdarank_gradients(&groups, &scores, &labels, &mut g, &mut h);
        for q in [0..3, 3..6] {
            let sum: f32 = g[q.clone()].iter().sum();
            assert!(sum.abs() < 1e-6, "{g:?}");
            for i in q {
                assert!(h[i] > 0.0);
                assert_eq!(g[i] < 0.0, labels[i] > 0.0, "{g:?}");
            }
        }
        assert_eq!((&g[6..], &h[6..]), (&[0.0, 0.0][..], &[0.0, 0.0][..]));
        // A purchase already ranked first is pushed less than one ranked last.
        let mut first = [0.0f32; 3];
        let mut hf = [0.0f32; 3];
        lambdarank_gradients(
            &[3],
            &[2.0, 1.0, 0.0],
            &[1.0, 0.0, 0.0],
            &mut first,
            &mut hf,
        );
        let mut last = [0.0f32; 3];
        lambdarank_gradients(&[3], &[0.0, 1.0, 2.0], &[1.0, 0.0, 0.0], &mut last, &mut hf);
        assert!(first[0] < 0.0 && last[0] < first[0], "{first:?} {last:?}");
    }

    #[test]
    fn a_lambdarank_ranker_learns_an_order_no_weighted_sum_has() {
        use rand::{Rng, SeedableRng};
        // Queries of 20 candidates; bought: those whose first input is in a middle band.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let query = |rng: &mut rand_chacha::ChaCha8Rng| {
            let x: Vec<f32> = (0..20 * RANKER_INPUTS).map(|_| rng.random()).collect();
            let y: Vec<f32> = (0..20)
                .map(|r| f32::from(u8::from((0.4..0.6).contains(&x[r * RANKER_INPUTS]))))
                .collect();
            (x, y)
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            let (qx, qy) = query(&mut rng);
            x.extend(qx);
            y.extend(qy);
        }
        let groups = vec![20; 300];
        let model = Ranker::fit(Loss::Lambdarank, &x, &y, &groups, 1).unwrap();
        let again = Ranker::fit(Loss::Lambdarank, &x, &y, &groups, 1).unwrap();
        assert_eq!(model.to_text().unwrap(), again.to_text().unwrap());
        // On new queries, the top of its order holds the purchases.
        let (mut hits, mut bought) = (0, 0);
        for _ in 0..50 {
            let (qx, qy) = query(&mut rng);
            let scores = model.predict(&qx).unwrap();
            let n = qy.iter().filter(|v| **v > 0.0).count();
            let order = reorder(&(0..20).collect::<Vec<_>>(), &scores);
            hits += order[..n].iter().filter(|&&i| qy[i] > 0.0).count();
            bought += n;
        }
        assert!(hits as f64 > 0.9 * bought as f64, "{hits} of {bought}");
    }

    #[test]
    fn the_ranker_walks_75_trees() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..4_000 * RANKER_INPUTS).map(|_| rng.random()).collect();
        let y: Vec<f32> = (0..4_000)
            .map(|r| f32::from(u8::from(x[r * RANKER_INPUTS] > 0.7)))
            .collect();
        for loss in Loss::ALL {
            let model = Ranker::fit(loss, &x, &y, &[20; 200], 1).unwrap();
            assert_eq!(model.rounds(), 75, "{}", loss.name());
        }
    }

    #[test]
    fn reordering_follows_the_scores_and_keeps_the_blend_order_on_ties() {
        assert_eq!(reorder(&[7, 3, 9, 4], &[0.1, 0.5, 0.5, 0.9]), [4, 3, 9, 7]);
        assert!(reorder(&[], &[]).is_empty());
    }
}
