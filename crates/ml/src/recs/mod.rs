//! Product recommendations: the next products for a profile, each with its reason.
//!
//! Next-basket studies keep finding that a person's own repeat purchases (personal
//! top-frequency, "P-TopFreq") beat most learned models on grocery and D2C baskets, so
//! the recommender blends three candidate sources and learns how much each counts:
//!
//! - **repeat**: what the profile bought before — how often, how recently, how often
//!   buyers of that item buy it again, and whether its usual repurchase cycle is due;
//! - **explore**: [`item2vec`] neighbours (through the HNSW [`ann`] index) of the items
//!   in its last baskets and of the products it viewed;
//! - **popular**: what sells now in its top categories, and overall (cold start).
//!
//! Each candidate carries a few features; the score is their weighted sum, with weights
//! tuned by coordinate ascent on a past window (trained before `as_of − horizon`, judged
//! on the horizon before `as_of`), so the blend is fitted on data the evaluation never
//! sees. The last few places of a list can be kept for explore candidates (items never
//! bought, near what was bought or viewed) when that window says they pay ([`Explore`]),
//! or, when it pays on held-out tuning customers, by a learned explore ranker that gives
//! a place to a new item only where its probability beats that of the item it pushes
//! out ([`explore`]).
//! Exclusions: items not bought or viewed by anyone for `stale_days` (no longer in
//! the catalogue) and items the profile bought in the last `just_bought_days` unless
//! they are repeat items. [`offline`] measures it against the baselines.

pub mod ann;
pub mod explore;
pub mod item2vec;
pub mod offline;
pub mod ranker;
#[cfg(test)]
mod testing;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use item2vec::{Embeddings, Item2VecParams};

/// An item's index in the [`Catalogue`].
pub type ItemId = u32;

/// The products known to the recommender: SKU, name and category of each [`ItemId`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    /// SKU of each item.
    pub skus: Vec<String>,
    /// Display name of each item (the SKU when unknown).
    pub names: Vec<String>,
    /// Category of each item, as an index into `category_names`.
    pub categories: Vec<Option<u32>>,
    /// Category names.
    pub category_names: Vec<String>,
    #[serde(skip)]
    by_sku: HashMap<String, ItemId>,
    #[serde(skip)]
    by_category: HashMap<String, u32>,
}

impl Catalogue {
    /// The item with this SKU, added if new (a later name or category fills gaps).
    pub fn intern(&mut self, sku: &str, name: Option<&str>, category: Option<&str>) -> ItemId {
        let category = category.filter(|c| !c.is_empty()).map(|c| {
            let next = self.category_names.len() as u32;
            *self.by_category.entry(c.to_string()).or_insert_with(|| {
                self.category_names.push(c.to_string());
                next
            })
        });
        if let Some(&id) = self.by_sku.get(sku) {
            let i = id as usize;
            if self.categories[i].is_none() {
                self.categories[i] = category;
            }
            if let Some(n) = name.filter(|n| !n.is_empty())
                && self.names[i] == self.skus[i]
            {
                self.names[i] = n.to_string();
            }
            return id;
        }
        let id = self.skus.len() as ItemId;
        self.skus.push(sku.to_string());
        self.names
            .push(name.filter(|n| !n.is_empty()).unwrap_or(sku).to_string());
        self.categories.push(category);
        self.by_sku.insert(sku.to_string(), id);
        id
    }

    /// Rebuilds the lookups (after deserialising).
    pub fn reindex(&mut self) {
        self.by_sku = self
            .skus
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as ItemId))
            .collect();
        self.by_category = self
            .category_names
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u32))
            .collect();
    }

    /// The item with this SKU.
    pub fn get(&self, sku: &str) -> Option<ItemId> {
        self.by_sku.get(sku).copied()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.skus.len()
    }

    /// Whether the catalogue is empty.
    pub fn is_empty(&self) -> bool {
        self.skus.is_empty()
    }

    /// The category name of an item.
    pub fn category_of(&self, item: ItemId) -> Option<&str> {
        self.categories[item as usize].map(|c| self.category_names[c as usize].as_str())
    }
}

/// One order's distinct items.
#[derive(Debug, Clone, PartialEq)]
pub struct Basket {
    /// When it was placed.
    pub at: DateTime<Utc>,
    /// Its distinct items.
    pub items: Vec<ItemId>,
}

/// One product view (or cart add).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// When.
    pub at: DateTime<Utc>,
    /// Which product.
    pub item: ItemId,
}

/// What one profile bought and viewed, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// Orders.
    pub baskets: Vec<Basket>,
    /// Product views and cart adds.
    pub views: Vec<View>,
}

impl Activity {
    /// Sorts baskets and views by time (the recommender reads them oldest first).
    pub fn sort(&mut self) {
        self.baskets.sort_by_key(|b| b.at);
        self.views.sort_by_key(|v| v.at);
    }

    /// Only what happened strictly before `t`.
    pub fn before(&self, t: DateTime<Utc>) -> Activity {
        Activity {
            baskets: self.baskets.iter().filter(|b| b.at < t).cloned().collect(),
            views: self.views.iter().filter(|v| v.at < t).copied().collect(),
        }
    }
}

/// Everyone's activity over one catalogue: what the recommender trains on.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// The products.
    pub catalogue: Catalogue,
    /// One activity per customer.
    pub customers: Vec<Activity>,
}

impl Corpus {
    /// Only what happened strictly before `t` (customers with nothing left stay, empty).
    pub fn before(&self, t: DateTime<Utc>) -> Corpus {
        Corpus {
            catalogue: self.catalogue.clone(),
            customers: self.customers.iter().map(|a| a.before(t)).collect(),
        }
    }
}

/// Everything that shapes a recommender, stored with the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecsParams {
    /// item2vec settings (its seed seeds everything else too).
    pub item2vec: Item2VecParams,
    /// "Popular now" counts purchases in this many days before `as_of`.
    pub popularity_days: i64,
    /// An item nobody bought or viewed for this long is no longer sold.
    pub stale_days: i64,
    /// A non-repeat item bought this recently is not recommended again.
    pub just_bought_days: i64,
    /// An item whose buyers buy it again at least this often is a repeat item.
    pub repeat_threshold: f64,
    /// Neighbours taken per anchor item.
    pub neighbours: usize,
    /// Most recent baskets whose items are anchors for neighbours.
    pub anchor_baskets: usize,
    /// Most recent views that are anchors.
    pub anchor_views: usize,
    /// Validation window for tuning the blend (days before `as_of`).
    pub tuning_horizon_days: i64,
}

impl Default for RecsParams {
    fn default() -> Self {
        Self {
            item2vec: Item2VecParams::default(),
            popularity_days: 28,
            stale_days: 120,
            just_bought_days: 14,
            repeat_threshold: 0.2,
            neighbours: 10,
            anchor_baskets: 3,
            anchor_views: 10,
            tuning_horizon_days: 28,
        }
    }
}

/// The candidate features, in [`BlendWeights`] order.
pub const FEATURES: [&str; 13] = [
    "frequency",
    "recency",
    "repeat_rate",
    "cycle_due",
    "similarity",
    "category_popularity",
    "popularity",
    "decayed_frequency",
    "buyer_rate",
    "category_share",
    "trend",
    "newcomers",
    "newcomers_in_taste",
];
const FREQ: usize = 0;
const RECENCY: usize = 1;
const REPEAT: usize = 2;
const DUE: usize = 3;
const SIM: usize = 4;
const CAT_POP: usize = 5;
const POP: usize = 6;
const DECAYED: usize = 7;
const BUYER_RATE: usize = 8;
/// Share of the profile's purchases (item lines) in the candidate's category: how much
/// the profile buys what the item is, whether or not it bought the item.
const CAT_SHARE: usize = 9;
/// ln((1 + orders in the last `popularity_days`) / (1 + orders in the `popularity_days`
/// before)): whether the item sells more than it did.
const TREND: usize = 10;
/// Customers who bought the item for the first time in the last `popularity_days`, over
/// the most such customers any item had: what people are trying now, which finds the
/// items new to a profile far better than what sells (mostly to its regular buyers).
const NEWCOMERS: usize = 11;
/// The profile's category share times the item's first-time buyers over the most any
/// item of its category had: what people try now in what the profile buys.
const NEW_IN_TASTE: usize = 12;

/// Time constant (days) of [`FEATURES`]' `decayed_frequency`: each past purchase counts
/// e^(−age/90).
const DECAY_DAYS: f32 = 90.0;

/// Weights as stored: models stored before a feature was added have fewer weights; the
/// missing ones are 0 (the feature did not count), so they score as they did.
fn padded_weights<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BlendWeights, D::Error> {
    let stored: Vec<f32> = Deserialize::deserialize(d)?;
    if stored.len() > FEATURES.len() {
        return Err(serde::de::Error::invalid_length(
            stored.len(),
            &"at most one weight per feature",
        ));
    }
    let mut w = [0.0; FEATURES.len()];
    w[..stored.len()].copy_from_slice(&stored);
    Ok(w)
}

/// Weight of each candidate feature in the score.
pub type BlendWeights = [f32; FEATURES.len()];

/// P-TopFreq's ranking as a blend: frequency, ties broken by recency, popularity
/// filling the rest (where the tuning starts).
pub const P_TOPFREQ: BlendWeights = [
    1.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
];

/// Explore slots: places at the end of a top list kept for items the profile never
/// bought — item2vec neighbours of what it bought or viewed, or popular in its
/// categories — ranked by their own weights, for the profiles whose repeat candidates
/// are weak. Models stored before them load with none (and score as they did).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Explore {
    /// Places reserved (0: none; the tuning picks it).
    pub slots: usize,
    /// Weights ranking the explore candidates ([`FEATURES`] order).
    #[serde(deserialize_with = "padded_weights")]
    pub weights: BlendWeights,
    /// The slots go only to profiles whose best candidate they would push out of the
    /// list scores below this under the blend (its repeat candidates are weak); `None`:
    /// every profile (as models stored before it did).
    #[serde(default)]
    pub weak_below: Option<f32>,
}

/// One explore policy the tuning tried, with what it did on the tuning window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExploreTrial {
    /// The policy.
    pub explore: Explore,
    /// Share of the window's profiles it gave explore slots.
    pub share_exploring: f64,
    /// Recall@10 relative to P-TopFreq's on the window.
    pub recall_ratio: f64,
    /// NDCG@10 relative to P-TopFreq's on the window.
    pub ndcg_ratio: f64,
    /// Recall@10 of the items new to each profile (over profiles that bought any).
    pub explore_recall: f64,
}

/// Where explore weights start: similarity alone.
const EXPLORE_START: BlendWeights = [
    0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
];

/// What the catalogue and everyone's purchases say about each item as of `as_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemStats {
    /// Distinct buyers.
    pub buyers: Vec<u32>,
    /// Buyers who bought it in two or more orders.
    pub repeat_buyers: Vec<u32>,
    /// Share of buyers who buy again, shrunk towards its category's.
    pub repeat_rate: Vec<f32>,
    /// Median days between two purchases of it by one buyer (its category's when it has
    /// too few; `0` when unknown).
    pub cycle_days: Vec<f32>,
    /// Orders containing it in the `popularity_days` before `as_of`.
    pub recent_orders: Vec<u32>,
    /// Orders containing it in the `popularity_days` before those (empty in models
    /// stored before it existed).
    #[serde(default)]
    pub prior_orders: Vec<u32>,
    /// Last time anyone bought or viewed it (Unix seconds; `i64::MIN` never).
    pub last_seen: Vec<i64>,
    /// ln of the mean number of orders containing it per buyer (≥ 0; how much of a
    /// staple it is). Empty in models stored before it existed.
    #[serde(default)]
    pub orders_per_buyer_ln: Vec<f32>,
    /// Customers whose first purchase of it fell in the `popularity_days` before
    /// `as_of` (empty in models stored before it existed).
    #[serde(default)]
    pub recent_newcomers: Vec<u32>,
}

/// Which source put an item on the list (for the reason and the repeat/explore split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Bought before.
    Repeat,
    /// Near something bought or viewed.
    Similar,
    /// Popular in a category the profile buys, or overall.
    Popular,
}

/// One recommended product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommended {
    /// The item.
    pub item: ItemId,
    /// Its score (higher first).
    pub score: f64,
    /// What put it there.
    pub source: Source,
    /// Why, in words ("bought 4 times", "similar to X you viewed", "popular in Y").
    pub reason: String,
}

/// A candidate with its features, before weighting.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The item.
    pub item: ItemId,
    /// Feature values ([`FEATURES`] order).
    pub features: BlendWeights,
    /// Times bought by the profile.
    pub times_bought: u32,
    /// The anchor it is most similar to, and whether the anchor was viewed (not bought).
    pub anchor: Option<(ItemId, bool)>,
    /// The profile's baskets before `now` (the same for all its candidates).
    pub profile_baskets: u32,
    /// Days since the profile last bought it (none: never).
    pub days_since_bought: Option<f32>,
    /// The profile's mean number of distinct items per basket (0 without baskets).
    pub basket_size: f32,
    /// The profile's baskets per week, from its first basket to `now` (at least a week).
    pub baskets_per_week: f32,
    /// What the learned explore ranker reads about the profile's habits of exploring.
    pub exploration: Exploration,
}

/// A candidate's inputs to the learned explore ranker ([`explore`]) beyond its
/// features: how it relates to the profile's anchors and category, and how often the
/// profile buys something new.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exploration {
    /// The profile's anchors whose neighbours include it.
    pub anchor_hits: u32,
    /// The sum of its similarities to those anchors.
    pub similarity_sum: f32,
    /// Days since the profile last bought anything in its category (none: never).
    pub category_days: Option<f32>,
    /// The profile's distinct items over its purchases (item lines) in its category: 1
    /// when it never buys the same item twice there (0 when it never bought there).
    pub category_variety: f32,
    /// Share of the profile's item lines after its first basket that were new to it
    /// when bought (NaN with one basket).
    pub new_share: f32,
    /// The same over its last [`explore::RECENT_BASKETS`] baskets (NaN with one basket).
    pub recent_new_share: f32,
}

/// A trained recommender.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recommender {
    /// Settings it was trained with.
    pub params: RecsParams,
    /// The instant it was trained as of.
    pub as_of: DateTime<Utc>,
    /// The products.
    pub catalogue: Catalogue,
    /// Per-item statistics.
    pub stats: ItemStats,
    /// Items by recent orders, most first (top 100).
    pub popular: Vec<ItemId>,
    /// Per category, its items by recent orders, most first (top 20).
    pub category_popular: Vec<Vec<ItemId>>,
    /// Items by recent first-time buyers ([`ItemStats::recent_newcomers`]), most first
    /// (top 100; empty in models stored before it existed).
    #[serde(default)]
    pub trying: Vec<ItemId>,
    /// Per category, its items by recent first-time buyers, most first (top 20).
    #[serde(default)]
    pub category_trying: Vec<Vec<ItemId>>,
    /// item2vec vectors.
    pub embeddings: Embeddings,
    /// The blend.
    #[serde(deserialize_with = "padded_weights")]
    pub weights: BlendWeights,
    /// Explore slots and their ranking.
    #[serde(default)]
    pub explore: Explore,
    /// The explore policies the tuning weighed, with their figures on its window
    /// (empty when it weighed none, and in models stored before them).
    #[serde(default)]
    pub explore_trials: Vec<ExploreTrial>,
    /// The LightGBM re-ranker of the blend's best candidates, when it beat the blend on
    /// the tuning window (models stored before it load without).
    #[serde(default)]
    pub ranker: Option<ranker::Ranker>,
    /// How a re-ranker did against the blend on tuning customers it was not fitted on
    /// (whether or not it was kept; none when none was tried).
    #[serde(default)]
    pub ranker_trial: Option<ranker::HeldOut>,
    /// The learned explore ranker and its policy, when it found more new items than
    /// the lists without explore places at no cost in accuracy on tuning customers it
    /// was not fitted on; it then decides the explore places instead of [`Explore`]
    /// (models stored before it load without).
    #[serde(default)]
    pub explore_ranker: Option<explore::ExploreRanker>,
    /// The learned explore policies weighed, with their figures on those customers
    /// (empty when none was tried, and in models stored before them).
    #[serde(default)]
    pub explore_ranker_trials: Vec<explore::LearnedTrial>,
    #[serde(skip)]
    index: Option<ann::Index>,
    /// Per item2vec row, its nearest items (most similar first) when they were cached:
    /// found once when the index is built, so scoring and similar-items queries are
    /// lookups; a row left out is searched when asked (the same answer).
    #[serde(skip)]
    neighbours: Vec<Option<Vec<(ItemId, f32)>>>,
}

/// A trained recommender with its item2vec state (input and output vectors), which a
/// training on the same corpus `tuning_horizon_days` later tunes on and continues from
/// ([`Recommender::train_after`]).
#[derive(Debug)]
pub struct Fitted {
    /// The model.
    pub model: Recommender,
    item2vec: item2vec::Trained,
}

/// How a fitted model finds each item's neighbours (only items still sold as of the
/// model's `as_of` are ever neighbours: nothing else can be recommended).
#[derive(Debug, Clone, Copy)]
enum Neighbours<'a> {
    /// An HNSW graph over the items still sold, with the neighbours of every item with
    /// a vector cached.
    Graph,
    /// No graph: the neighbours of these items only, by exact search. The tuning's
    /// model reads only its customers' anchors, a few thousand items, where exact
    /// search costs less than building a graph (and misses nothing).
    ExactFor(&'a HashSet<ItemId>),
}

/// How [`Recommender::fit_timed`] fits.
struct Fitting<'a> {
    /// The blend's weights.
    weights: BlendWeights,
    /// How neighbours are found.
    neighbours: Neighbours<'a>,
    /// Continue item2vec from a fit on the same corpus before this instant, passing
    /// only over the sets completed since ([`item2vec::fit`]).
    continued: Option<(&'a item2vec::Trained, DateTime<Utc>)>,
}

/// Neighbours cached per item (at least the `neighbours` setting).
pub const CACHED_NEIGHBOURS: usize = 20;

/// Wall-clock and CPU seconds of one training phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseTime {
    /// Wall-clock seconds (inflated on a loaded machine).
    pub seconds: f64,
    /// CPU seconds of the process over all its threads while the phase ran (what load
    /// does not distort; NaN where the system does not report it). The tuning's
    /// searches and the final fit run side by side, so each of their phases also counts
    /// what the other side spent meanwhile: their CPU seconds overlap, the training's
    /// total does not.
    pub cpu_seconds: f64,
}

/// Where a training's time went, phase by phase (the tuning's searches before the final
/// fit, which ran beside them; a phase that ran more than once is summed under its
/// name).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainTimes {
    /// Phase name and its time.
    pub phases: Vec<(String, PhaseTime)>,
}

impl TrainTimes {
    /// Runs `f`, adding its time to the phase `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let (started, cpu) = (std::time::Instant::now(), offline::process_cpu_seconds());
        let out = f();
        let spent = PhaseTime {
            seconds: started.elapsed().as_secs_f64(),
            cpu_seconds: offline::process_cpu_seconds() - cpu,
        };
        match self.phases.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => {
                t.seconds += spent.seconds;
                t.cpu_seconds += spent.cpu_seconds;
            }
            None => self.phases.push((name.to_string(), spent)),
        }
        out
    }

    /// All phases added up (more than the training's wall clock and CPU seconds where
    /// phases ran side by side).
    pub fn total(&self) -> PhaseTime {
        self.phases
            .iter()
            .fold(PhaseTime::default(), |a, (_, t)| PhaseTime {
                seconds: a.seconds + t.seconds,
                cpu_seconds: a.cpu_seconds + t.cpu_seconds,
            })
    }
}

fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> f32 {
    (to - from).num_seconds() as f32 / 86_400.0
}

fn median(v: &mut [f32]) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some(v[v.len() / 2])
}

/// Buying sets for item2vec: baskets; two consecutive baskets of one customer less than
/// `NEXT_BASKET_DAYS` apart (so "A, then B" makes A and B neighbours); and browsing
/// sessions (views less than 30 minutes apart).
pub fn training_sets(corpus: &Corpus) -> Vec<Vec<ItemId>> {
    dated_training_sets(corpus)
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// [`training_sets`], each with when it was complete (its basket; the later basket of
/// a pair; the last view of a session).
fn dated_training_sets(corpus: &Corpus) -> Vec<(DateTime<Utc>, Vec<ItemId>)> {
    const NEXT_BASKET_DAYS: i64 = 60;
    let mut sets = Vec::new();
    for a in &corpus.customers {
        sets.extend(a.baskets.iter().map(|b| (b.at, b.items.clone())));
        for pair in a.baskets.windows(2) {
            if pair[1].at - pair[0].at <= Duration::days(NEXT_BASKET_DAYS) {
                let mut union = pair[0].items.clone();
                union.extend(pair[1].items.iter().filter(|i| !pair[0].items.contains(i)));
                sets.push((pair[1].at, union));
            }
        }
        let mut session: Vec<ItemId> = Vec::new();
        let mut last: Option<DateTime<Utc>> = None;
        for v in &a.views {
            if let Some(l) = last.filter(|l| v.at - *l > Duration::minutes(30)) {
                sets.push((l, std::mem::take(&mut session)));
            }
            if !session.contains(&v.item) {
                session.push(v.item);
            }
            last = Some(v.at);
        }
        sets.push((last.unwrap_or(DateTime::<Utc>::MIN_UTC), session));
    }
    sets.retain(|(_, s)| s.len() >= 2);
    sets
}

fn item_stats(corpus: &Corpus, as_of: DateTime<Utc>, p: &RecsParams) -> ItemStats {
    let n = corpus.catalogue.len();
    let mut s = ItemStats {
        buyers: vec![0; n],
        repeat_buyers: vec![0; n],
        repeat_rate: vec![0.0; n],
        cycle_days: vec![0.0; n],
        recent_orders: vec![0; n],
        prior_orders: vec![0; n],
        last_seen: vec![i64::MIN; n],
        orders_per_buyer_ln: vec![0.0; n],
        recent_newcomers: vec![0; n],
    };
    let mut orders = vec![0u32; n];
    let recent_from = as_of - Duration::days(p.popularity_days);
    let prior_from = recent_from - Duration::days(p.popularity_days);
    let mut gaps: Vec<Vec<f32>> = vec![Vec::new(); n];
    for a in &corpus.customers {
        let mut last_bought: HashMap<ItemId, (DateTime<Utc>, u32)> = HashMap::new();
        for b in &a.baskets {
            for &i in &b.items {
                let u = i as usize;
                orders[u] += 1;
                s.last_seen[u] = s.last_seen[u].max(b.at.timestamp());
                if b.at >= recent_from {
                    s.recent_orders[u] += 1;
                } else if b.at >= prior_from {
                    s.prior_orders[u] += 1;
                }
                match last_bought.get_mut(&i) {
                    Some((t, times)) => {
                        gaps[u].push(days(*t, b.at));
                        *t = b.at;
                        *times += 1;
                    }
                    None => {
                        last_bought.insert(i, (b.at, 1));
                        if b.at >= recent_from {
                            s.recent_newcomers[u] += 1;
                        }
                    }
                }
            }
        }
        for (i, (_, times)) in last_bought {
            s.buyers[i as usize] += 1;
            if times >= 2 {
                s.repeat_buyers[i as usize] += 1;
            }
        }
        for v in &a.views {
            let u = v.item as usize;
            s.last_seen[u] = s.last_seen[u].max(v.at.timestamp());
        }
    }
    // Shrink each item's repeat rate and cycle towards its category's: a rarely bought
    // item says little on its own.
    let cats = corpus.catalogue.category_names.len() + 1;
    let cat = |i: usize| {
        corpus.catalogue.categories[i]
            .map(|c| c as usize)
            .unwrap_or(cats - 1)
    };
    let (mut cat_buyers, mut cat_repeat) = (vec![0f32; cats], vec![0f32; cats]);
    let mut cat_gaps: Vec<Vec<f32>> = vec![Vec::new(); cats];
    for i in 0..n {
        cat_buyers[cat(i)] += s.buyers[i] as f32;
        cat_repeat[cat(i)] += s.repeat_buyers[i] as f32;
        cat_gaps[cat(i)].extend(gaps[i].iter().copied());
    }
    let cat_cycle: Vec<f32> = cat_gaps
        .iter_mut()
        .map(|g| median(g).unwrap_or(0.0))
        .collect();
    const PRIOR: f32 = 5.0;
    for ((rate, &orders), &buyers) in s.orders_per_buyer_ln.iter_mut().zip(&orders).zip(&s.buyers) {
        if buyers > 0 {
            *rate = (orders as f32 / buyers as f32).ln();
        }
    }
    for (i, item_gaps) in gaps.iter_mut().enumerate() {
        let c = cat(i);
        let prior = if cat_buyers[c] > 0.0 {
            cat_repeat[c] / cat_buyers[c]
        } else {
            0.0
        };
        s.repeat_rate[i] =
            (s.repeat_buyers[i] as f32 + PRIOR * prior) / (s.buyers[i] as f32 + PRIOR);
        s.cycle_days[i] = if item_gaps.len() >= 3 {
            median(item_gaps).unwrap_or(0.0)
        } else {
            cat_cycle[c]
        };
    }
    s
}

/// The `top` of `items` with the highest `counts` (none with 0), most first (ties by id).
fn by_count(items: impl Iterator<Item = ItemId>, counts: &[u32], top: usize) -> Vec<ItemId> {
    let mut v: Vec<ItemId> = items.filter(|&i| counts[i as usize] > 0).collect();
    v.sort_by(|a, b| counts[*b as usize].cmp(&counts[*a as usize]).then(a.cmp(b)));
    v.truncate(top);
    v
}

impl Recommender {
    /// Fits the statistics and the item vectors on `corpus` (facts before `as_of`
    /// only), with the given blend weights; no tuning.
    pub fn fit(
        corpus: &Corpus,
        as_of: DateTime<Utc>,
        p: &RecsParams,
        weights: BlendWeights,
    ) -> Self {
        Self::fit_timed(
            corpus,
            as_of,
            p,
            Fitting {
                weights,
                neighbours: Neighbours::Graph,
                continued: None,
            },
            &mut TrainTimes::default(),
            "fit",
        )
        .0
    }

    /// [`Recommender::fit`] as [`Fitting`] says, timing each phase under `stage`; with
    /// the item2vec state it ends with (which a later fit can continue from).
    fn fit_timed(
        corpus: &Corpus,
        as_of: DateTime<Utc>,
        p: &RecsParams,
        how: Fitting<'_>,
        times: &mut TrainTimes,
        stage: &str,
    ) -> (Self, item2vec::Trained) {
        let (corpus, stats, best) = times.time(&format!("{stage}: item statistics"), || {
            let corpus = corpus.before(as_of);
            let stats = item_stats(&corpus, as_of, p);
            let n = corpus.catalogue.len() as ItemId;
            let mut per_category: Vec<Vec<ItemId>> =
                vec![Vec::new(); corpus.catalogue.category_names.len()];
            for i in 0..n {
                if let Some(c) = corpus.catalogue.categories[i as usize] {
                    per_category[c as usize].push(i);
                }
            }
            let ranked = |counts: &[u32]| -> (Vec<ItemId>, Vec<Vec<ItemId>>) {
                (
                    by_count(0..n, counts, 100),
                    per_category
                        .iter()
                        .map(|items| by_count(items.iter().copied(), counts, 20))
                        .collect(),
                )
            };
            let best = (
                ranked(&stats.recent_orders),
                ranked(&stats.recent_newcomers),
            );
            (corpus, stats, best)
        });
        let ((popular, category_popular), (trying, category_trying)) = best;
        let trained = times.time(&format!("{stage}: item2vec"), || {
            let dated = dated_training_sets(&corpus);
            let new: Vec<bool> = match how.continued {
                Some((_, since)) => dated.iter().map(|(at, _)| *at >= since).collect(),
                None => Vec::new(),
            };
            let sets: Vec<Vec<ItemId>> = dated.into_iter().map(|(_, s)| s).collect();
            let continued = how
                .continued
                .map(|(previous, _)| (previous, new.as_slice()));
            item2vec::fit(&sets, continued, &p.item2vec)
        });
        let mut model = Self {
            params: *p,
            as_of,
            catalogue: corpus.catalogue,
            stats,
            popular,
            category_popular,
            trying,
            category_trying,
            embeddings: trained.embeddings.clone(),
            weights: how.weights,
            explore: Explore::default(),
            explore_trials: Vec::new(),
            ranker: None,
            ranker_trial: None,
            explore_ranker: None,
            explore_ranker_trials: Vec::new(),
            index: None,
            neighbours: Vec::new(),
        };
        model.build_index_timed(how.neighbours, times, stage);
        (model, trained)
    }

    /// Tunes the blend on the window before `as_of` (see the module doc), then fits on
    /// everything before `as_of` with the tuned weights.
    pub fn train(corpus: &Corpus, as_of: DateTime<Utc>, p: &RecsParams) -> Self {
        Self::train_timed(corpus, as_of, p).0
    }

    /// [`Recommender::train`], with where its time went.
    pub fn train_timed(
        corpus: &Corpus,
        as_of: DateTime<Utc>,
        p: &RecsParams,
    ) -> (Self, TrainTimes) {
        let (fitted, times) = Self::train_after(corpus, as_of, p, None);
        (fitted.model, times)
    }

    /// [`Recommender::train_timed`], given (when there is one) a model trained by this
    /// procedure on the same corpus and settings as of `as_of − tuning_horizon_days`:
    /// that is a fit on exactly the data the tuning's model needs, so the tuning uses it
    /// (with its blend reset to P-TopFreq's) instead of fitting it again, and the final
    /// item2vec continues from it. A model as of another instant is ignored. Returns the
    /// model with its item2vec state (what a later training can continue from).
    pub fn train_after(
        corpus: &Corpus,
        as_of: DateTime<Utc>,
        p: &RecsParams,
        earlier: Option<Fitted>,
    ) -> (Fitted, TrainTimes) {
        let mut times = TrainTimes::default();
        let final_fit = |continued, times: &mut TrainTimes| {
            let how = Fitting {
                weights: P_TOPFREQ,
                neighbours: Neighbours::Graph,
                continued,
            };
            Self::fit_timed(corpus, as_of, p, how, times, "final fit")
        };
        // The final fit needs the tuning's item2vec, not its searches: the two run side
        // by side (each deterministic on its own, so the model is the same as one after
        // the other; only the wall clock differs).
        let (tuned, (mut model, trained)) = match tuning_fit(corpus, as_of, p, earlier, &mut times)
        {
            Some(fit) => {
                let (mut searching, mut fitting) = (TrainTimes::default(), TrainTimes::default());
                let (trained, start) = (&fit.trained, fit.start);
                let (tuned, fitted) = rayon::join(
                    || tune_on(fit.past, fit.histories, start, &mut searching),
                    || final_fit(Some((trained, start)), &mut fitting),
                );
                times.phases.extend(searching.phases);
                times.phases.extend(fitting.phases);
                (tuned, fitted)
            }
            None => (Tuned::p_topfreq(), final_fit(None, &mut times)),
        };
        model.weights = tuned.weights;
        model.explore = tuned.explore;
        model.explore_trials = tuned.explore_trials;
        model.ranker = tuned.ranker;
        model.ranker_trial = tuned.ranker_trial;
        model.explore_ranker = tuned.explore_ranker;
        model.explore_ranker_trials = tuned.explore_ranker_trials;
        (
            Fitted {
                model,
                item2vec: trained,
            },
            times,
        )
    }

    /// The model as JSON (what the registry stores; what [`Recommender::build_index`]
    /// rebuilds is left out).
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// A model from [`Recommender::to_json`]'s text, ready to serve (index rebuilt).
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        let mut model: Self = serde_json::from_str(text)?;
        model.build_index();
        Ok(model)
    }

    /// Rebuilds what is not stored (lookups, the HNSW graph over the items still sold,
    /// their cached neighbours) after deserialising.
    pub fn build_index(&mut self) {
        self.build_index_timed(Neighbours::Graph, &mut TrainTimes::default(), "load");
    }

    /// The item2vec rows of the items still sold as of `as_of` (ascending): the only
    /// items that can be recommended, so the only ones worth finding as neighbours.
    fn live_rows(&self) -> Vec<usize> {
        let e = &self.embeddings;
        (0..e.len())
            .filter(|&r| self.is_live(e.items[r], self.as_of))
            .collect()
    }

    /// [`Recommender::build_index`], finding neighbours as `how` says.
    fn build_index_timed(&mut self, how: Neighbours<'_>, times: &mut TrainTimes, stage: &str) {
        self.catalogue.reindex();
        self.embeddings.reindex();
        if let Some(r) = &mut self.ranker
            && r.model().is_none()
            && let Err(e) = r.load()
        {
            tracing::warn!(error = %e, "the recommender's ranker does not load; ranking by the blend");
            self.ranker = None;
        }
        if let Some(r) = &mut self.explore_ranker
            && r.model().is_none()
            && let Err(e) = r.load()
        {
            tracing::warn!(error = %e, "the recommender's explore ranker does not load; exploring by the blend's policy");
            self.explore_ranker = None;
        }
        let live = self.live_rows();
        let k = self.cached_neighbours();
        let (index, rows, found) = match how {
            Neighbours::Graph => {
                let seed = self.params.item2vec.seed;
                let index = times.time(&format!("{stage}: HNSW graph"), || {
                    ann::Index::build_over(&self.embeddings, live, seed)
                });
                // Every item with a vector is cached, sold or not: a similar-items query
                // or an anchor may name any of them, and a lookup is what keeps those
                // within their latency goal.
                let all: Vec<usize> = (0..self.embeddings.len()).collect();
                let found = times.time(&format!("{stage}: neighbour cache"), || {
                    index.nearest_of(&self.embeddings, &all, k)
                });
                (Some(index), all, found)
            }
            Neighbours::ExactFor(items) => {
                let mut rows: Vec<usize> = items
                    .iter()
                    .filter_map(|&i| self.embeddings.row(i))
                    .collect();
                rows.sort_unstable();
                let found = times.time(&format!("{stage}: exact neighbours"), || {
                    ann::exact_nearest_of(&self.embeddings, &live, &rows, k)
                });
                (None, rows, found)
            }
        };
        let items = &self.embeddings.items;
        self.neighbours = vec![None; self.embeddings.len()];
        for (row, near) in rows.into_iter().zip(found) {
            self.neighbours[row] = Some(near.into_iter().map(|(r, sim)| (items[r], sim)).collect());
        }
        self.index = index;
    }

    fn cached_neighbours(&self) -> usize {
        self.params.neighbours.max(CACHED_NEIGHBOURS)
    }

    /// The nearest items of `item` (empty without a vector), most similar first: the
    /// cached ones, or a graph search for an item whose neighbours were not cached.
    fn nearest_cached(&self, item: ItemId) -> std::borrow::Cow<'_, [(ItemId, f32)]> {
        let Some(row) = self.embeddings.row(item) else {
            return std::borrow::Cow::Borrowed(&[]);
        };
        match self.neighbours.get(row) {
            Some(Some(near)) => std::borrow::Cow::Borrowed(near.as_slice()),
            _ => std::borrow::Cow::Owned(self.similar_uncached(item, self.cached_neighbours())),
        }
    }

    /// The HNSW index (built on load).
    pub fn index(&self) -> Option<&ann::Index> {
        self.index.as_ref()
    }

    /// Whether an item is still sold as of `now` (someone bought or viewed it within
    /// `stale_days`).
    pub fn is_live(&self, item: ItemId, now: DateTime<Utc>) -> bool {
        self.stats.last_seen[item as usize]
            >= (now - Duration::days(self.params.stale_days)).timestamp()
    }

    /// Whether buyers of this item tend to buy it again.
    pub fn is_repeat_item(&self, item: ItemId) -> bool {
        f64::from(self.stats.repeat_rate[item as usize]) >= self.params.repeat_threshold
    }

    /// Items most similar to `item` (by the HNSW index), with cosine similarity: a
    /// lookup in the cached neighbours when `k` is within them, a graph search otherwise.
    pub fn similar(&self, item: ItemId, k: usize) -> Vec<(ItemId, f32)> {
        if k <= self.cached_neighbours() && self.index.is_some() {
            return self.nearest_cached(item).iter().take(k).copied().collect();
        }
        self.similar_uncached(item, k)
    }

    /// Items most similar to `item` by a search of the HNSW graph (what the cache holds).
    pub fn similar_uncached(&self, item: ItemId, k: usize) -> Vec<(ItemId, f32)> {
        let (Some(row), Some(index)) = (self.embeddings.row(item), &self.index) else {
            return Vec::new();
        };
        index
            .nearest(&self.embeddings, row, k)
            .into_iter()
            .map(|(r, sim)| (self.embeddings.items[r], sim))
            .collect()
    }

    /// The `k` most similar products of every product with a vector, by SKU (what
    /// `product_similarity` stores).
    pub fn similarity_table(&self, k: usize) -> Vec<(String, Vec<(String, f32)>)> {
        self.embeddings
            .items
            .iter()
            .map(|&item| {
                let sku = |i: ItemId| self.catalogue.skus[i as usize].clone();
                (
                    sku(item),
                    self.similar(item, k)
                        .into_iter()
                        .map(|(i, sim)| (sku(i), sim))
                        .collect(),
                )
            })
            .collect()
    }

    /// Every candidate for a profile as of `now`, exclusions applied.
    pub fn candidates(&self, activity: &Activity, now: DateTime<Utc>) -> Vec<Candidate> {
        self.candidates_in(activity, now, &mut Scratch::default())
    }

    /// [`Recommender::candidates`], gathering them in `scratch` (reused from one profile
    /// to the next, so a batch allocates its per-item slots once).
    fn candidates_in(
        &self,
        activity: &Activity,
        now: DateTime<Utc>,
        scratch: &mut Scratch,
    ) -> Vec<Candidate> {
        let past = || activity.baskets.iter().filter(|b| b.at < now);
        let profile_baskets = past().count() as u32;
        let profile_lines: usize = past().map(|b| b.items.len()).sum();
        let basket_size = profile_lines as f32 / profile_baskets.max(1) as f32;
        let weeks = past()
            .next()
            .map_or(1.0, |first| (days(first.at, now) / 7.0).max(1.0));
        let baskets_per_week = profile_baskets as f32 / weeks;
        let blank = |item| Candidate {
            item,
            features: [0.0; FEATURES.len()],
            times_bought: 0,
            anchor: None,
            profile_baskets,
            days_since_bought: None,
            basket_size,
            baskets_per_week,
            exploration: Exploration::default(),
        };
        let mut out = Gathered::new(&mut scratch.items);
        // Repeat: what the profile bought. Its items are the first candidates, each
        // with (when it was last bought, its purchases decayed by age) at its index.
        let mut bought: Vec<(DateTime<Utc>, f32)> = Vec::new();
        // Per category the profile bought in: when it last bought there, its distinct
        // items and its item lines there.
        let mut categories = Gathered::new(&mut scratch.categories);
        // Item lines new to the profile when bought (after its first basket), and all
        // such lines; overall and over its last baskets.
        let recent_from = (profile_baskets as usize).saturating_sub(explore::RECENT_BASKETS);
        let (mut new_lines, mut later_lines) = ([0u32; 2], [0u32; 2]);
        for (n, b) in past().enumerate() {
            let weight = (-days(b.at, now).max(0.0) / DECAY_DAYS).exp();
            for &i in &b.items {
                let at = out.index(i, blank);
                let first = at == bought.len();
                if first {
                    bought.push((b.at, 0.0));
                }
                if n > 0 {
                    for (part, counts) in [true, n >= recent_from].into_iter().enumerate() {
                        if counts {
                            later_lines[part] += 1;
                            new_lines[part] += u32::from(first);
                        }
                    }
                }
                out.list[at].times_bought += 1;
                let (last, decayed) = &mut bought[at];
                *last = (*last).max(b.at);
                *decayed += weight;
                if let Some(c) = self.catalogue.categories.get(i as usize).copied().flatten() {
                    let tally = categories.index(c, |cat| CategoryTally {
                        category: cat,
                        last: b.at,
                        distinct: 0,
                        lines: 0,
                    });
                    let tally = &mut categories.list[tally];
                    tally.last = tally.last.max(b.at);
                    tally.distinct += u32::from(first);
                    tally.lines += 1;
                }
            }
        }
        let share_new = |part: usize| match later_lines[part] {
            0 => f32::NAN,
            lines => new_lines[part] as f32 / lines as f32,
        };
        let (new_share, recent_new_share) = (share_new(0), share_new(1));
        for (c, &(last, decayed)) in out.list.iter_mut().zip(&bought) {
            let i = c.item as usize;
            let since = days(last, now).max(0.0);
            let cycle = self.stats.cycle_days[i];
            c.days_since_bought = Some(since);
            c.features[FREQ] = (1.0 + c.times_bought as f32).ln();
            c.features[RECENCY] = (-since / 30.0).exp();
            c.features[REPEAT] = self.stats.repeat_rate[i];
            c.features[DECAYED] = (1.0 + decayed).ln();
            c.features[BUYER_RATE] = self
                .stats
                .orders_per_buyer_ln
                .get(i)
                .copied()
                .unwrap_or(0.0);
            c.features[DUE] = if cycle > 0.0 {
                (-((since + 1.0) / (cycle + 1.0)).ln().abs()).exp()
            } else {
                0.0
            };
        }
        // Explore: neighbours of the last baskets' items and the last views.
        let mut seen_anchor = HashSet::new();
        for (anchor, viewed) in anchors(activity, now, &self.params) {
            if !seen_anchor.insert(anchor) {
                continue;
            }
            let near = self.nearest_cached(anchor);
            for &(i, sim) in near.iter().take(self.params.neighbours) {
                let c = out.entry(i, blank);
                c.exploration.anchor_hits += 1;
                c.exploration.similarity_sum += sim;
                if sim > c.features[SIM] {
                    c.features[SIM] = sim;
                    c.anchor = Some((anchor, viewed));
                }
            }
        }
        // Popular: top categories of the profile, and overall.
        let mut top_categories: Vec<(u32, u32)> = categories
            .list
            .iter()
            .map(|t| (t.category, t.lines))
            .collect();
        top_categories.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let max_recent = self
            .popular
            .first()
            .map(|&i| self.stats.recent_orders[i as usize] as f32)
            .unwrap_or(1.0)
            .max(1.0);
        for &(cat, _) in top_categories.iter().take(3) {
            let items = &self.category_popular[cat as usize];
            let Some(&best) = items.first() else { continue };
            let top = self.stats.recent_orders[best as usize] as f32;
            for &i in items {
                let c = out.entry(i, blank);
                c.features[CAT_POP] =
                    c.features[CAT_POP].max(self.stats.recent_orders[i as usize] as f32 / top);
            }
        }
        for &(cat, _) in top_categories.iter().take(3) {
            for &i in self.category_trying.get(cat as usize).into_iter().flatten() {
                out.index(i, blank);
            }
        }
        for &i in self
            .popular
            .iter()
            .take(30)
            .chain(self.trying.iter().take(30))
        {
            out.index(i, blank);
        }
        let newcomers = |i: ItemId| {
            self.stats
                .recent_newcomers
                .get(i as usize)
                .map_or(0.0, |&n| n as f32)
        };
        let max_newcomers = self.trying.first().map_or(1.0, |&i| newcomers(i).max(1.0));
        let just_bought = now - Duration::days(self.params.just_bought_days);
        let lines: u32 = top_categories.iter().map(|(_, n)| n).sum();
        let in_category = |cat: Option<u32>| categories.get(cat?).map(|at| &categories.list[at]);
        let mut list: Vec<Candidate> = Vec::with_capacity(out.list.len());
        for (at, mut c) in out.list.drain(..).enumerate() {
            if !self.is_live(c.item, now) {
                continue;
            }
            let recent = bought.get(at).is_some_and(|(last, _)| *last >= just_bought);
            if recent && !self.is_repeat_item(c.item) {
                continue;
            }
            let recent = self.stats.recent_orders[c.item as usize] as f32;
            c.features[POP] = recent / max_recent;
            if let Some(&prior) = self.stats.prior_orders.get(c.item as usize) {
                c.features[TREND] = ((1.0 + recent) / (1.0 + prior as f32)).ln();
            }
            let cat = self.catalogue.categories[c.item as usize];
            let tally = in_category(cat);
            c.features[CAT_SHARE] = tally.map_or(0.0, |t| t.lines as f32 / lines.max(1) as f32);
            let tried = newcomers(c.item);
            c.features[NEWCOMERS] = tried / max_newcomers;
            let top_in_category = cat
                .and_then(|cat| self.category_trying.get(cat as usize)?.first().copied())
                .map_or(1.0, |i| newcomers(i).max(1.0));
            c.features[NEW_IN_TASTE] = c.features[CAT_SHARE] * tried / top_in_category;
            c.exploration = Exploration {
                category_days: tally.map(|t| days(t.last, now).max(0.0)),
                category_variety: tally.map_or(0.0, |t| t.distinct as f32 / t.lines.max(1) as f32),
                new_share,
                recent_new_share,
                ..c.exploration
            };
            list.push(c);
        }
        list.sort_by_key(|c| c.item);
        list
    }

    /// The top `k` products for a profile as of `now`, each with its reason.
    pub fn recommend(&self, activity: &Activity, now: DateTime<Utc>, k: usize) -> Vec<Recommended> {
        self.recommend_many(&[activity], now, k)
            .pop()
            .unwrap_or_default()
    }

    /// [`Recommender::recommend`] for many profiles at once: the same lists, with one
    /// call of the re-ranker for all of them (a LightGBM call has a fixed cost that a
    /// profile's few rows do not pay for).
    pub fn recommend_many(
        &self,
        activities: &[&Activity],
        now: DateTime<Utc>,
        k: usize,
    ) -> Vec<Vec<Recommended>> {
        let mut scratch = Scratch::default();
        let candidates: Vec<Vec<Candidate>> = activities
            .iter()
            .map(|a| self.candidates_in(a, now, &mut scratch))
            .collect();
        let lists: Vec<&[Candidate]> = candidates.iter().map(Vec::as_slice).collect();
        let selections = self.selections(&lists, k);
        candidates
            .iter()
            .zip(selections)
            .map(|(candidates, selected)| {
                selected
                    .into_iter()
                    .map(|(ix, explored)| {
                        let c = &candidates[ix];
                        match c.anchor.filter(|_| explored) {
                            Some(anchor) => Recommended {
                                item: c.item,
                                score: f64::from(score(c, &self.explore.weights)),
                                source: Source::Similar,
                                reason: self.similar_reason(anchor),
                            },
                            None => self.explain(c),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Per profile (its candidates), its top `k` — indices into its candidates, each with
    /// whether an explore place put it there: the main ranking with its last places
    /// given to items new to the profile by the learned explore ranker when there is
    /// one (one call of it for all the profiles), otherwise by the [`Explore`] policy.
    fn selections(&self, candidates: &[&[Candidate]], k: usize) -> Vec<Vec<(usize, bool)>> {
        let mains = self.main_rankings(candidates, k);
        if let Some(learned) = &self.explore_ranker
            && let Some(model) = learned.model()
        {
            let from = k.saturating_sub(explore::MAX_PLACES);
            let scored: Vec<Vec<usize>> = candidates
                .iter()
                .zip(&mains)
                .map(|(c, main)| self.explore_scored(c, main, from, k))
                .collect();
            let mut rows = Vec::new();
            for (c, s) in candidates.iter().zip(&scored) {
                rows.extend(self.explore_rows(c, s));
            }
            match model.predict_on_this_thread(&rows) {
                Ok(p) => {
                    let mut offset = 0;
                    return candidates
                        .iter()
                        .zip(mains)
                        .zip(&scored)
                        .map(|((c, main), s)| {
                            let probabilities = &p[offset..offset + s.len()];
                            offset += s.len();
                            let policy = (learned.max_places, learned.margin);
                            learned_select(c, main, from, s, probabilities, policy, k)
                        })
                        .collect();
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "the recommender's explore ranker failed; exploring by the blend's policy"
                ),
            }
        }
        candidates
            .iter()
            .zip(mains)
            .map(|(c, main)| select_from(c, main, &self.weights, &self.explore, k))
            .collect()
    }

    /// What the learned explore ranker scores for a profile: its main list's places from
    /// `from` to `k` (what explore places push out), then its explore pool
    /// ([`explore::EXPLORE_POOL`]: never bought, not in the main list's first `k`).
    fn explore_scored(
        &self,
        candidates: &[Candidate],
        main: &[usize],
        from: usize,
        k: usize,
    ) -> Vec<usize> {
        let listed = &main[..main.len().min(k)];
        let mut scored: Vec<usize> = listed.iter().skip(from).copied().collect();
        let taken = listed_mask(candidates.len(), listed);
        let pool: Vec<usize> = (0..candidates.len())
            .filter(|&i| !taken[i] && explorable(&candidates[i]))
            .collect();
        let mut explore: Vec<usize> = rank_among(
            candidates,
            pool.clone(),
            &self.explore.weights,
            explore::LINEAR_TOP,
        );
        for f in EXPLORE_POOL_FEATURES {
            let mut w = [0.0; FEATURES.len()];
            w[f] = 1.0;
            let best = rank_among(candidates, pool.clone(), &w, explore::EXPLORE_POOL);
            let fresh: Vec<usize> = best
                .into_iter()
                .filter(|i| !explore.contains(i))
                .take(explore::FEATURE_TOP)
                .collect();
            explore.extend(fresh);
        }
        scored.extend(explore);
        scored
    }

    /// The learned explore ranker's inputs of the candidates at `scored`, one row each.
    fn explore_rows(&self, candidates: &[Candidate], scored: &[usize]) -> Vec<f32> {
        let mut rows = Vec::with_capacity(scored.len() * explore::EXPLORE_INPUTS);
        for &i in scored {
            let c = &candidates[i];
            let item = c.item as usize;
            let s = &self.stats;
            let context = explore::ItemContext {
                cycle_days: s.cycle_days[item],
                buyers: s.buyers[item],
                repeat_rate: s.repeat_rate[item],
                orders_per_buyer_ln: s.orders_per_buyer_ln.get(item).copied().unwrap_or(0.0),
                newcomers: s.recent_newcomers.get(item).copied().unwrap_or(0),
                recent_orders: s.recent_orders[item],
                blend: score(c, &self.weights),
                linear: score(c, &self.explore.weights),
            };
            explore::push_inputs(c, context, &mut rows);
        }
        rows
    }

    /// Per profile (its candidates), the best `k` candidates before explore slots: the
    /// blend's order, re-ordered by the ranker when there is one (one call of it for all
    /// the profiles).
    fn main_rankings(&self, candidates: &[&[Candidate]], k: usize) -> Vec<Vec<usize>> {
        let Some(model) = self.ranker.as_ref().and_then(ranker::Ranker::model) else {
            return candidates
                .iter()
                .map(|c| rank(c, &self.weights, k))
                .collect();
        };
        let pools: Vec<Vec<usize>> = candidates.iter().map(|c| self.ranker_pool(c, k)).collect();
        let mut rows = Vec::new();
        for (c, pool) in candidates.iter().zip(&pools) {
            rows.extend(self.ranker_rows(c, pool, &self.weights));
        }
        let scores = match model.predict_on_this_thread(&rows) {
            Ok(scores) => scores,
            Err(e) => {
                tracing::warn!(error = %e, "the recommender's ranker failed; ranking by the blend");
                return candidates
                    .iter()
                    .map(|c| rank(c, &self.weights, k))
                    .collect();
            }
        };
        let mut offset = 0;
        pools
            .into_iter()
            .map(|pool| {
                let mut order = ranker::reorder(&pool, &scores[offset..offset + pool.len()]);
                offset += pool.len();
                order.truncate(k);
                order
            })
            .collect()
    }

    /// What the ranker re-orders: the blend's best [`ranker::RERANK_TOP`] (at least
    /// `k`), then the best [`ranker::RERANK_EXPLORE`] explore candidates under the
    /// explore weights that are not among them (so a likely new item can reach the top).
    fn ranker_pool(&self, candidates: &[Candidate], k: usize) -> Vec<usize> {
        let mut pool = rank(candidates, &self.weights, k.max(ranker::RERANK_TOP));
        if self.explore.weights.iter().any(|w| *w != 0.0) {
            let listed = listed_mask(candidates.len(), &pool);
            let explorable: Vec<usize> = (0..candidates.len())
                .filter(|&i| !listed[i] && explorable(&candidates[i]))
                .collect();
            pool.extend(rank_among(
                candidates,
                explorable,
                &self.explore.weights,
                ranker::RERANK_EXPLORE,
            ));
        }
        pool
    }

    /// The ranker's inputs of the candidates at `top`, one row each.
    fn ranker_rows(&self, candidates: &[Candidate], top: &[usize], w: &BlendWeights) -> Vec<f32> {
        let mut rows = Vec::with_capacity(top.len() * ranker::RANKER_INPUTS);
        for &i in top {
            let c = &candidates[i];
            let item = c.item as usize;
            let ctx = ranker::Context {
                blend: score(c, w),
                cycle_days: self.stats.cycle_days[item],
                buyers: self.stats.buyers[item],
                repeat_rate: self.stats.repeat_rate[item],
            };
            ranker::push_inputs(c, ctx, &mut rows);
        }
        rows
    }

    fn similar_reason(&self, (anchor, viewed): (ItemId, bool)) -> String {
        let how = if viewed { "viewed" } else { "bought" };
        format!(
            "similar to {} you {how}",
            self.catalogue.names[anchor as usize]
        )
    }

    fn explain(&self, c: &Candidate) -> Recommended {
        let w = &self.weights;
        let part = |f: usize| w[f] * c.features[f];
        let repeat = part(FREQ)
            + part(RECENCY)
            + part(REPEAT)
            + part(DUE)
            + part(DECAYED)
            + part(BUYER_RATE);
        // The profile's taste for the category backs what it bought when it bought the
        // item, and what is popular there otherwise.
        let (repeat, taste) = if c.times_bought > 0 {
            (repeat + part(CAT_SHARE), 0.0)
        } else {
            (repeat, part(CAT_SHARE))
        };
        let similar = part(SIM);
        let popular =
            part(CAT_POP) + part(POP) + part(TREND) + part(NEWCOMERS) + part(NEW_IN_TASTE) + taste;
        let score = f64::from(repeat + similar + popular);
        let (source, reason) = if c.times_bought > 0 && repeat >= similar && repeat >= popular {
            let times = if c.times_bought == 1 {
                "bought once".to_string()
            } else {
                format!("bought {} times", c.times_bought)
            };
            let cycle = self.stats.cycle_days[c.item as usize];
            let reason = if c.features[DUE] > 0.7 && cycle >= 1.0 {
                format!("{times}, usually every {} days", cycle.round())
            } else {
                times
            };
            (Source::Repeat, reason)
        } else if let Some(anchor) = c.anchor.filter(|_| similar >= popular) {
            (Source::Similar, self.similar_reason(anchor))
        } else {
            let reason = match self.catalogue.category_of(c.item) {
                Some(cat) if c.features[CAT_POP] > 0.0 => format!("popular in {cat}"),
                Some(cat) if c.features[NEW_IN_TASTE] > 0.0 => {
                    format!("new to many in {cat} this month")
                }
                _ => "popular now".to_string(),
            };
            (Source::Popular, reason)
        };
        Recommended {
            item: c.item,
            score,
            source,
            reason,
        }
    }
}

/// Per-item and per-category slots reused from one profile's candidates to the next
/// ([`Gathered`]).
#[derive(Debug, Default)]
struct Scratch {
    items: Vec<u32>,
    categories: Vec<u32>,
}

/// A slot holding no index.
const NO_SLOT: u32 = u32::MAX;

/// A profile's share of one category's item lines, while its candidates are gathered.
#[derive(Debug, Clone, Copy)]
struct CategoryTally {
    category: u32,
    /// When the profile last bought in it.
    last: DateTime<Utc>,
    /// Its distinct items the profile bought.
    distinct: u32,
    /// Its item lines in the profile's baskets.
    lines: u32,
}

/// Values gathered by key in first-seen order, each key finding its value through a
/// dense array of slots (its value's index) borrowed from a [`Scratch`]: the few hundred
/// items of a profile among tens of thousands cost an array read each instead of a
/// hash, and the array is allocated once per batch. The slots it used are cleared when
/// it is dropped, so the next profile finds them empty.
struct Gathered<'s, T> {
    slots: &'s mut Vec<u32>,
    keys: Vec<u32>,
    list: Vec<T>,
}

impl<'s, T> Gathered<'s, T> {
    fn new(slots: &'s mut Vec<u32>) -> Self {
        Self {
            slots,
            keys: Vec::new(),
            list: Vec::new(),
        }
    }

    /// The index of `key`'s value, if it has one.
    fn get(&self, key: u32) -> Option<usize> {
        match self.slots.get(key as usize) {
            Some(&slot) if slot != NO_SLOT => Some(slot as usize),
            _ => None,
        }
    }

    /// The index of `key`'s value, made by `new` when it has none yet.
    fn index(&mut self, key: u32, new: impl FnOnce(u32) -> T) -> usize {
        let k = key as usize;
        if k >= self.slots.len() {
            self.slots.resize(k + 1, NO_SLOT);
        }
        if self.slots[k] == NO_SLOT {
            self.slots[k] = u32::try_from(self.list.len()).expect("fewer values than slots");
            self.keys.push(key);
            self.list.push(new(key));
        }
        self.slots[k] as usize
    }

    /// `key`'s value, made by `new` when it has none yet.
    fn entry(&mut self, key: u32, new: impl FnOnce(u32) -> T) -> &mut T {
        let at = self.index(key, new);
        &mut self.list[at]
    }
}

impl<T> Drop for Gathered<'_, T> {
    fn drop(&mut self) {
        for &k in &self.keys {
            self.slots[k as usize] = NO_SLOT;
        }
    }
}

/// The items whose neighbours are a profile's explore candidates as of `now`: those of
/// its last `anchor_baskets` baskets, then its last `anchor_views` views (each with
/// whether it was viewed rather than bought).
fn anchors(activity: &Activity, now: DateTime<Utc>, p: &RecsParams) -> Vec<(ItemId, bool)> {
    let mut anchors: Vec<(ItemId, bool)> = Vec::new();
    for b in activity
        .baskets
        .iter()
        .filter(|b| b.at < now)
        .rev()
        .take(p.anchor_baskets)
    {
        anchors.extend(b.items.iter().map(|&i| (i, false)));
    }
    anchors.extend(
        activity
            .views
            .iter()
            .filter(|v| v.at < now)
            .rev()
            .take(p.anchor_views)
            .map(|v| (v.item, true)),
    );
    anchors
}

fn score(c: &Candidate, weights: &BlendWeights) -> f32 {
    c.features.iter().zip(weights).map(|(f, w)| f * w).sum()
}

/// Indices of the `k` best candidates under `weights`, best first (ties by item id, so
/// the order is deterministic).
pub fn rank(candidates: &[Candidate], weights: &BlendWeights, k: usize) -> Vec<usize> {
    rank_among(candidates, (0..candidates.len()).collect(), weights, k)
}

/// [`rank`] over the candidates at `pool` only.
fn rank_among(
    candidates: &[Candidate],
    mut order: Vec<usize>,
    weights: &BlendWeights,
    k: usize,
) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    // Only the pool is scored: the explore pools are a part of a profile's candidates.
    let mut scored: Vec<(f32, usize)> = order
        .drain(..)
        .map(|i| (score(&candidates[i], weights), i))
        .collect();
    let better = |a: &(f32, usize), b: &(f32, usize)| {
        b.0.total_cmp(&a.0)
            .then(candidates[a.1].item.cmp(&candidates[b.1].item))
    };
    // The order is total (ties by item), so selecting the best k first and sorting only
    // them gives the same list as sorting everything.
    if k < scored.len() {
        scored.select_nth_unstable_by(k - 1, better);
        scored.truncate(k);
    }
    scored.sort_by(better);
    order.extend(scored.into_iter().map(|(_, i)| i));
    order
}

/// Per candidate of a profile's `len`, whether `listed` names it: a profile's few
/// hundred candidates cost a flag each instead of a hash.
fn listed_mask(len: usize, listed: &[usize]) -> Vec<bool> {
    let mut mask = vec![false; len];
    for &i in listed {
        mask[i] = true;
    }
    mask
}

/// Whether a candidate may fill an explore slot: never bought by the profile (a
/// neighbour of what it bought or viewed, or popular in its categories or overall).
fn explorable(c: &Candidate) -> bool {
    c.times_bought == 0
}

/// The top `k` under the blend with its last `explore.slots` places given to the best
/// explore candidates not already listed (the blend's next picks fill any place the
/// explore candidates cannot): indices into `candidates`, each with whether an explore
/// slot put it there.
pub fn select(
    candidates: &[Candidate],
    weights: &BlendWeights,
    explore: &Explore,
    k: usize,
) -> Vec<(usize, bool)> {
    select_from(
        candidates,
        rank(candidates, weights, k),
        weights,
        explore,
        k,
    )
}

/// Whether a profile gets its explore slots: there are slots, and its repeat candidates
/// are weak — the best candidate of `main` (its main ranking, best first) that the slots
/// would push out of the top `k` scores below `explore.weak_below` under the blend
/// `weights` (always when no bar is set, or when nothing would be pushed out).
fn explores(
    candidates: &[Candidate],
    main: &[usize],
    weights: &BlendWeights,
    explore: &Explore,
    k: usize,
) -> bool {
    let slots = explore.slots.min(k);
    if slots == 0 {
        return false;
    }
    match (explore.weak_below, main.get(k - slots)) {
        (Some(bar), Some(&pushed_out)) => score(&candidates[pushed_out], weights) < bar,
        _ => true,
    }
}

/// The single features whose best explore candidates join the learned explore ranker's
/// pool ([`explore::EXPLORE_POOL`]).
const EXPLORE_POOL_FEATURES: [usize; 5] = [SIM, NEW_IN_TASTE, NEWCOMERS, CAT_POP, POP];

/// The top `k` of a profile with explore places given by the learned explore ranker:
/// `scored` is what [`Recommender::explore_scored`] gave for `main` and `from`, with
/// its `probabilities` (one each); `(max_places, margin)` the policy
/// ([`explore::places`]). The explore items take the last places, best first.
fn learned_select(
    candidates: &[Candidate],
    main: Vec<usize>,
    from: usize,
    scored: &[usize],
    probabilities: &[f64],
    (max_places, margin): (usize, f64),
    k: usize,
) -> Vec<(usize, bool)> {
    let listed = main.len().min(k);
    let tail = listed.saturating_sub(from);
    // The probability of the item each explore place pushes out, the last first (0
    // where the list has no item to push out).
    let pushed_out: Vec<f64> = (0..max_places.min(k))
        .map(|j| match (k - 1 - j).checked_sub(from) {
            Some(at) if at < tail => probabilities[at],
            _ => 0.0,
        })
        .collect();
    let mut explore: Vec<usize> = (tail..scored.len()).collect();
    explore.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(candidates[scored[a]].item.cmp(&candidates[scored[b]].item))
    });
    let best: Vec<f64> = explore.iter().map(|&j| probabilities[j]).collect();
    let n = explore::places(&best, &pushed_out, max_places, margin);
    let mut top: Vec<(usize, bool)> = main
        .into_iter()
        .take(k - n.min(k))
        .map(|i| (i, false))
        .collect();
    top.extend(explore.into_iter().take(n).map(|j| (scored[j], true)));
    top
}

/// [`select`] with the main ranking given (`main`: the best candidates, best first).
fn select_from(
    candidates: &[Candidate],
    main: Vec<usize>,
    weights: &BlendWeights,
    explore: &Explore,
    k: usize,
) -> Vec<(usize, bool)> {
    if !explores(candidates, &main, weights, explore, k) {
        return main.into_iter().take(k).map(|i| (i, false)).collect();
    }
    let slots = explore.slots.min(k);
    let mut top: Vec<(usize, bool)> = main[..main.len().min(k - slots)]
        .iter()
        .map(|&i| (i, false))
        .collect();
    let pool = (0..candidates.len())
        .filter(|&i| explorable(&candidates[i]))
        .collect();
    for i in rank_among(candidates, pool, &explore.weights, k) {
        if top.len() >= k {
            break;
        }
        if !top.iter().any(|&(j, _)| j == i) {
            top.push((i, true));
        }
    }
    for &i in &main {
        if top.len() >= k {
            break;
        }
        if !top.iter().any(|&(j, _)| j == i) {
            top.push((i, false));
        }
    }
    top
}

/// Customers active before `cutoff` who bought in `[cutoff, cutoff + horizon)`, with the
/// distinct items they bought then: the ground truth of an evaluation.
pub fn future_purchases(
    corpus: &Corpus,
    cutoff: DateTime<Utc>,
    horizon_days: i64,
) -> Vec<(usize, HashSet<ItemId>)> {
    let end = cutoff + Duration::days(horizon_days);
    corpus
        .customers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.baskets.iter().any(|b| b.at < cutoff))
        .filter_map(|(c, a)| {
            let bought: HashSet<ItemId> = a
                .baskets
                .iter()
                .filter(|b| b.at >= cutoff && b.at < end)
                .flat_map(|b| b.items.iter().copied())
                .collect();
            (!bought.is_empty()).then_some((c, bought))
        })
        .collect()
}

/// One tuning customer: candidates, what they bought in the window, and which of it
/// was new to them.
struct TuningCase {
    candidates: Vec<Candidate>,
    truth: HashSet<ItemId>,
    new: HashSet<ItemId>,
}

/// Mean figures of the top 10 lists of tuning customers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct WindowMetrics {
    /// Recall@10.
    recall: f64,
    /// NDCG@10.
    ndcg: f64,
    /// Recall@10 of the items new to the customer (over customers who bought any).
    explore_recall: f64,
    /// Share of the customers given explore slots.
    share_exploring: f64,
}

impl WindowMetrics {
    /// Recall@10 and NDCG@10 (what the tuning's objective weighs).
    fn accuracy(&self) -> (f64, f64) {
        (self.recall, self.ndcg)
    }
}

/// Mean Recall@10 and NDCG@10 over the customers under a blend and explore slots.
fn recall_and_ndcg(cases: &[TuningCase], w: &BlendWeights, explore: &Explore) -> (f64, f64) {
    mean_metrics(
        cases.iter().map(|c| (c, rank(&c.candidates, w, 10))),
        w,
        explore,
    )
    .accuracy()
}

/// Mean figures over customers, each given with its main ranking (its best candidates,
/// best first), with explore slots (which profiles get them judged under the blend `w`).
fn mean_metrics<'a>(
    judged: impl Iterator<Item = (&'a TuningCase, Vec<usize>)>,
    w: &BlendWeights,
    explore: &Explore,
) -> WindowMetrics {
    list_metrics(judged.map(|(case, main)| {
        let exploring = explores(&case.candidates, &main, w, explore, 10);
        (
            case,
            select_from(&case.candidates, main, w, explore, 10),
            exploring,
        )
    }))
}

/// Mean figures over customers, each given with its top 10 (indices into its
/// candidates) and whether it was given explore places.
fn list_metrics<'a>(
    lists: impl Iterator<Item = (&'a TuningCase, Vec<(usize, bool)>, bool)>,
) -> WindowMetrics {
    let mut sum = WindowMetrics::default();
    let (mut n, mut with_new) = (0usize, 0usize);
    for (case, list, exploring) in lists {
        sum.share_exploring += f64::from(u8::from(exploring));
        let top: Vec<ItemId> = list
            .into_iter()
            .map(|(i, _)| case.candidates[i].item)
            .collect();
        let m = offline::ranking_metrics(&top, &case.truth);
        sum.recall += m.recall;
        sum.ndcg += m.ndcg;
        n += 1;
        if !case.new.is_empty() {
            sum.explore_recall +=
                top.iter().filter(|i| case.new.contains(i)).count() as f64 / case.new.len() as f64;
            with_new += 1;
        }
    }
    let n = n.max(1) as f64;
    WindowMetrics {
        recall: sum.recall / n,
        ndcg: sum.ndcg / n,
        explore_recall: sum.explore_recall / with_new.max(1) as f64,
        share_exploring: sum.share_exploring / n,
    }
}

/// Mean recall of the new items among the best `slots` explore candidates, over the
/// customers who bought something new.
fn explore_recall(cases: &[TuningCase], w: &BlendWeights, slots: usize) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for case in cases.iter().filter(|c| !c.new.is_empty()) {
        let pool = (0..case.candidates.len())
            .filter(|&i| explorable(&case.candidates[i]))
            .collect();
        let hits = rank_among(&case.candidates, pool, w, slots)
            .into_iter()
            .filter(|&i| case.new.contains(&case.candidates[i].item))
            .count();
        sum += hits as f64 / case.new.len() as f64;
        n += 1;
    }
    sum / n.max(1) as f64
}

/// The blend's weight search covers the first this many [`FEATURES`]: category share
/// and trend serve the explore ranking and the re-ranker only. On a quarter of Complete
/// Journey's households (cutoff 2017-09-01) the search gave category share 0.25, which
/// raised the tuning window's objective and lowered the blend at the cutoff (Recall@10
/// 1.037× → 1.007× P-TopFreq): a window-specific fit.
const BLEND_SEARCHED: usize = 9;

/// Coordinate ascent: two passes over a small grid per weight of the first `searched`
/// features from `start`, keeping a change only when it raises `objective`.
fn coordinate_ascent(
    start: BlendWeights,
    searched: usize,
    objective: impl Fn(&BlendWeights) -> f64,
) -> BlendWeights {
    const GRID: [f32; 7] = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0];
    let mut best = start;
    let mut best_value = objective(&best);
    for _ in 0..2 {
        for f in 0..searched.min(FEATURES.len()) {
            for &g in &GRID {
                let mut w = best;
                w[f] = g;
                if w.iter().all(|x| *x == 0.0) || w == best {
                    continue;
                }
                let v = objective(&w);
                if v > best_value + 1e-9 {
                    best = w;
                    best_value = v;
                }
            }
        }
    }
    best
}

/// Most explore slots the tuning tries.
const MAX_EXPLORE_SLOTS: usize = 4;

/// The blend and its explore slots, tuned on the `tuning_horizon_days` before `as_of`
/// with a model fitted before that window: the blend's weights by coordinate ascent
/// from P-TopFreq's on Recall@10 and NDCG@10, each relative to P-TopFreq's there; the
/// explore weights by coordinate ascent from similarity alone on the recall of new
/// items; then the number of explore slots (0 to 4) that scores best on the blend's
/// objective. Falls back to P-TopFreq without exploring when the window has no buyers.
pub fn tune(corpus: &Corpus, as_of: DateTime<Utc>, p: &RecsParams) -> Tuned {
    let mut times = TrainTimes::default();
    match tuning_fit(corpus, as_of, p, None, &mut times) {
        Some(fit) => tune_on(fit.past, fit.histories, fit.start, &mut times),
        None => Tuned::p_topfreq(),
    }
}

/// What [`tune`] chose.
#[derive(Debug)]
pub struct Tuned {
    /// The blend's weights.
    pub weights: BlendWeights,
    /// Explore slots and their weights.
    pub explore: Explore,
    /// Every explore policy weighed, with its figures on the tuning window.
    pub explore_trials: Vec<ExploreTrial>,
    /// The re-ranker, when it beat the blend on held-out tuning customers.
    pub ranker: Option<ranker::Ranker>,
    /// How the re-ranker did against the blend there (none when it was not tried).
    pub ranker_trial: Option<ranker::HeldOut>,
    /// The learned explore ranker, when a policy of it paid on held-out tuning
    /// customers.
    pub explore_ranker: Option<explore::ExploreRanker>,
    /// Its policies, with their figures on those customers.
    pub explore_ranker_trials: Vec<explore::LearnedTrial>,
}

impl Tuned {
    /// P-TopFreq's blend without exploring (a window without buyers tunes nothing).
    fn p_topfreq() -> Self {
        Self {
            weights: P_TOPFREQ,
            explore: Explore::default(),
            explore_trials: Vec::new(),
            ranker: None,
            ranker_trial: None,
            explore_ranker: None,
            explore_ranker_trials: Vec::new(),
        }
    }
}

/// The tuning's model and what its searches run on.
struct TuningFit {
    /// Fitted before the tuning window, with P-TopFreq's blend.
    past: Recommender,
    /// Its item2vec state (what the final fit continues from).
    trained: item2vec::Trained,
    /// The window's customers: each one's history before it and what it bought in it.
    histories: Vec<(Activity, HashSet<ItemId>)>,
    /// Where the window starts (the tuning model's `as_of`).
    start: DateTime<Utc>,
}

/// The tuning's model, fitted before the window `tuning_horizon_days` before `as_of`
/// (or `earlier`, when it is that fit); none when nobody bought in the window.
fn tuning_fit(
    corpus: &Corpus,
    as_of: DateTime<Utc>,
    p: &RecsParams,
    earlier: Option<Fitted>,
    times: &mut TrainTimes,
) -> Option<TuningFit> {
    let start = as_of - Duration::days(p.tuning_horizon_days);
    let truth = future_purchases(&corpus.before(as_of), start, p.tuning_horizon_days);
    if truth.is_empty() {
        return None;
    }
    let histories: Vec<(Activity, HashSet<ItemId>)> = truth
        .into_iter()
        .map(|(c, truth)| (corpus.customers[c].before(start), truth))
        .collect();
    let anchored: HashSet<ItemId> = histories
        .iter()
        .flat_map(|(h, _)| anchors(h, start, p))
        .map(|(i, _)| i)
        .collect();
    let (past, trained) = match earlier.filter(|e| e.model.as_of == start && e.model.params == *p) {
        Some(Fitted {
            mut model,
            item2vec,
        }) => {
            model.weights = P_TOPFREQ;
            model.explore = Explore::default();
            model.ranker = None;
            model.ranker_trial = None;
            (model, item2vec)
        }
        None => Recommender::fit_timed(
            corpus,
            start,
            p,
            Fitting {
                weights: P_TOPFREQ,
                neighbours: Neighbours::ExactFor(&anchored),
                continued: None,
            },
            times,
            "tuning fit",
        ),
    };
    Some(TuningFit {
        past,
        trained,
        histories,
        start,
    })
}

/// The tuning's searches on the window starting at `start` (see [`tune`]), with `past`
/// fitted before it and `histories` its customers.
fn tune_on(
    mut past: Recommender,
    histories: Vec<(Activity, HashSet<ItemId>)>,
    start: DateTime<Utc>,
    times: &mut TrainTimes,
) -> Tuned {
    let cases: Vec<TuningCase> = times.time("tuning: candidates", || {
        let mut scratch = Scratch::default();
        histories
            .into_iter()
            .map(|(history, truth)| {
                let bought: HashSet<ItemId> = history
                    .baskets
                    .iter()
                    .flat_map(|b| b.items.iter().copied())
                    .collect();
                TuningCase {
                    candidates: past.candidates_in(&history, start, &mut scratch),
                    new: truth
                        .iter()
                        .copied()
                        .filter(|i| !bought.contains(i))
                        .collect(),
                    truth,
                }
            })
            .collect()
    });
    // Recall@10 and NDCG@10 each relative to P-TopFreq's on the window, so both count
    // alike (NDCG's values are several times recall's).
    let none = Explore::default();
    let (r0, n0) = recall_and_ndcg(&cases, &P_TOPFREQ, &none);
    let relative = |(r, n): (f64, f64)| r / r0.max(1e-12) + n / n0.max(1e-12);
    past.weights = times.time("tuning: weight search", || {
        coordinate_ascent(P_TOPFREQ, BLEND_SEARCHED, |w| {
            relative(recall_and_ndcg(&cases, w, &none))
        })
    });
    // The explore ranking first: the ranker weighs the best explore candidates too.
    past.explore.weights = times.time("tuning: explore weights", || {
        coordinate_ascent(EXPLORE_START, FEATURES.len(), |w| {
            explore_recall(&cases, w, MAX_EXPLORE_SLOTS)
        })
    });
    let (ranker, ranker_trial) =
        times.time("tuning: ranker", || fit_ranker(&past, &cases, &relative));
    past.ranker = ranker;
    let (mains, trials, mut explore) = times.time("tuning: explore slots", || {
        let lists: Vec<&[Candidate]> = cases.iter().map(|c| c.candidates.as_slice()).collect();
        let mains = past.main_rankings(&lists, 10);
        let trials = explore_trials(
            &cases,
            &mains,
            &past.weights,
            past.explore.weights,
            (r0, n0),
        );
        let explore = choose_explore(&trials);
        (mains, trials, explore)
    });
    let (explore_ranker, explore_ranker_trials) = times.time("tuning: explore ranker", || {
        fit_explore_ranker(&past, &cases, &mains)
    });
    if explore_ranker.is_some() {
        // The learned ranker decides the explore places; the linear ranking still feeds
        // its pool.
        explore.slots = 0;
    }
    Tuned {
        weights: past.weights,
        explore: Explore {
            weights: past.explore.weights,
            ..explore
        },
        explore_trials: trials,
        ranker: past.ranker.take(),
        ranker_trial,
        explore_ranker,
        explore_ranker_trials,
    }
}

/// How much of P-TopFreq's Recall@10 and of its NDCG@10 (each, on the tuning window)
/// explore slots may cost against the most accurate policy: within it, the policy that
/// finds the most items new to the customers is kept. New products are what a brand
/// wants a recommender for beyond reminding people of their staples; one percent of
/// P-TopFreq is the price set on them.
pub const EXPLORE_ALLOWANCE: f64 = 0.01;

/// The least gain in explore recall (over the most accurate policy, on the tuning
/// window) for which an exploring policy is kept: a tenth of a percent of the customers'
/// new items; less is noise on a window of a few thousand customers, and would cost
/// accuracy for nothing.
pub const MIN_EXPLORE_GAIN: f64 = 0.001;

/// Quantiles of the window's "pushed out" scores tried as the bar under which a profile
/// counts as having weak repeat candidates (plus no bar: every profile).
const WEAK_QUANTILES: [f64; 4] = [0.1, 0.25, 0.5, 0.75];

/// Every explore policy the tuning weighs — no slots; 1 to [`MAX_EXPLORE_SLOTS`] slots
/// for every profile or only for those whose best candidate the slots push out scores
/// below a quantile of that score over the window — judged on the window (`mains`: each
/// customer's main ranking; `base`: P-TopFreq's Recall@10 and NDCG@10 there). The first
/// is no slots.
fn explore_trials(
    cases: &[TuningCase],
    mains: &[Vec<usize>],
    w: &BlendWeights,
    explore_weights: BlendWeights,
    (r0, n0): (f64, f64),
) -> Vec<ExploreTrial> {
    let judge = |explore: Explore| {
        let m = mean_metrics(cases.iter().zip(mains.iter().cloned()), w, &explore);
        ExploreTrial {
            explore,
            share_exploring: m.share_exploring,
            recall_ratio: m.recall / r0.max(1e-12),
            ndcg_ratio: m.ndcg / n0.max(1e-12),
            explore_recall: m.explore_recall,
        }
    };
    let mut trials = vec![judge(Explore::default())];
    for slots in 1..=MAX_EXPLORE_SLOTS {
        let mut pushed_out: Vec<f32> = cases
            .iter()
            .zip(mains)
            .filter_map(|(case, main)| main.get(10 - slots).map(|&i| score(&case.candidates[i], w)))
            .collect();
        pushed_out.sort_by(f32::total_cmp);
        let mut bars: Vec<Option<f32>> = WEAK_QUANTILES
            .iter()
            .filter_map(|q| {
                let at =
                    ((pushed_out.len() as f64 * q) as usize).min(pushed_out.len().checked_sub(1)?);
                Some(Some(pushed_out[at]))
            })
            .collect();
        bars.dedup();
        bars.push(None);
        for weak_below in bars {
            trials.push(judge(Explore {
                slots,
                weights: explore_weights,
                weak_below,
            }));
        }
    }
    trials
}

/// The explore policy to keep among `trials`: the one with the best explore recall
/// among those within [`EXPLORE_ALLOWANCE`] of the most accurate one (by Recall@10 and
/// NDCG@10 relative to P-TopFreq, summed) on both figures, when it finds at least
/// [`MIN_EXPLORE_GAIN`] more of the new items than the most accurate one; otherwise the
/// most accurate one. Ties go to the more accurate.
fn choose_explore(trials: &[ExploreTrial]) -> Explore {
    let figures = |t: &ExploreTrial| (t.recall_ratio, t.ndcg_ratio, t.explore_recall);
    let accuracy = |t: &&ExploreTrial| t.recall_ratio + t.ndcg_ratio;
    let Some(best) = trials
        .iter()
        .max_by(|a, b| accuracy(a).total_cmp(&accuracy(b)))
    else {
        return Explore::default();
    };
    most_exploring(trials, best, EXPLORE_ALLOWANCE, figures).explore
}

/// The trial with the best explore recall among those within `allowance` of
/// `reference` on both Recall@10 and NDCG@10 (relative to P-TopFreq), when it finds at
/// least [`MIN_EXPLORE_GAIN`] more of the new items than `reference`; otherwise
/// `reference`. Ties go to the more accurate. `figures`: a trial's recall ratio, NDCG
/// ratio and explore recall.
fn most_exploring<'t, T>(
    trials: &'t [T],
    reference: &'t T,
    allowance: f64,
    figures: impl Fn(&T) -> (f64, f64, f64),
) -> &'t T {
    let (recall, ndcg, explored) = figures(reference);
    let accuracy = |t: &T| {
        let (r, n, _) = figures(t);
        r + n
    };
    trials
        .iter()
        .filter(|t| {
            let (r, n, _) = figures(t);
            r >= recall - allowance - 1e-12 && n >= ndcg - allowance - 1e-12
        })
        .max_by(|a, b| {
            figures(a)
                .2
                .total_cmp(&figures(b).2)
                .then(accuracy(a).total_cmp(&accuracy(b)))
        })
        .filter(|t| figures(t).2 >= explored + MIN_EXPLORE_GAIN)
        .unwrap_or(reference)
}

/// Margins the learned explore policy tries: an explore item takes a place when its
/// probability beats this times that of the item it pushes out.
const LEARNED_MARGINS: [f64; 4] = [1.0, 1.5, 2.0, 3.0];

/// Most explore places per profile the learned explore policy tries.
const LEARNED_PLACES: [usize; 3] = [1, 2, explore::MAX_PLACES];

/// Fits the learned explore ranker on the even tuning customers — rows of each one's
/// main list (`mains`) and explore pool ([`Recommender::explore_scored`]), labelled by
/// whether they bought it — and judges its policies ([`LEARNED_PLACES`] ×
/// [`LEARNED_MARGINS`], and no places) on the odd ones. The policy finding the most new
/// items with Recall@10 and NDCG@10 no lower than without places (and at least
/// [`MIN_EXPLORE_GAIN`] more new items) is kept, with the model refitted on every
/// customer; none when no policy does. Returns the trials either way.
fn fit_explore_ranker(
    past: &Recommender,
    cases: &[TuningCase],
    mains: &[Vec<usize>],
) -> (Option<explore::ExploreRanker>, Vec<explore::LearnedTrial>) {
    let seed = past.params.item2vec.seed;
    let scored: Vec<Vec<usize>> = cases
        .iter()
        .zip(mains)
        .map(|(case, main)| past.explore_scored(&case.candidates, main, 0, 10))
        .collect();
    let gather = |keep: &dyn Fn(usize) -> bool| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (_, (case, s)) in cases
            .iter()
            .zip(&scored)
            .enumerate()
            .filter(|(i, _)| keep(*i))
        {
            x.extend(past.explore_rows(&case.candidates, s));
            y.extend(
                s.iter()
                    .map(|&j| f32::from(u8::from(case.truth.contains(&case.candidates[j].item)))),
            );
        }
        (x, y)
    };
    let fit = |(x, y): &(Vec<f32>, Vec<f32>)| {
        let positives = y.iter().filter(|v| **v > 0.0).count();
        if positives < 20 || positives == y.len() {
            return None;
        }
        explore::fit(x, y, seed)
            .map_err(|e| tracing::warn!(error = %e, "fitting the recommender's explore ranker"))
            .ok()
    };
    let Some(model) = fit(&gather(&|i| i % 2 == 0)) else {
        return (None, Vec::new());
    };
    let (judge_x, _) = gather(&|i| i % 2 == 1);
    let Ok(p) = model.predict(&judge_x) else {
        return (None, Vec::new());
    };
    let odd: Vec<usize> = (1..cases.len()).step_by(2).collect();
    let mut probabilities = Vec::with_capacity(odd.len());
    let mut offset = 0;
    for &i in &odd {
        probabilities.push(&p[offset..offset + scored[i].len()]);
        offset += scored[i].len();
    }
    let none = Explore::default();
    let (r0, n0) = mean_metrics(
        odd.iter()
            .map(|&i| (&cases[i], rank(&cases[i].candidates, &P_TOPFREQ, 10))),
        &P_TOPFREQ,
        &none,
    )
    .accuracy();
    let judge = |max_places: usize, margin: f64| {
        let m = list_metrics(odd.iter().zip(&probabilities).map(|(&i, p)| {
            let case = &cases[i];
            let policy = (max_places, margin);
            let list = learned_select(
                &case.candidates,
                mains[i].clone(),
                0,
                &scored[i],
                p,
                policy,
                10,
            );
            let exploring = list.iter().any(|(_, explored)| *explored);
            (case, list, exploring)
        }));
        explore::LearnedTrial {
            max_places,
            margin,
            share_exploring: m.share_exploring,
            recall_ratio: m.recall / r0.max(1e-12),
            ndcg_ratio: m.ndcg / n0.max(1e-12),
            explore_recall: m.explore_recall,
        }
    };
    let mut trials = vec![judge(0, 1.0)];
    for places in LEARNED_PLACES {
        for margin in LEARNED_MARGINS {
            trials.push(judge(places, margin));
        }
    }
    let figures = |t: &explore::LearnedTrial| (t.recall_ratio, t.ndcg_ratio, t.explore_recall);
    let chosen = *most_exploring(&trials, &trials[0], 0.0, figures);
    if chosen.max_places == 0 {
        return (None, trials);
    }
    let kept = fit(&gather(&|_| true)).and_then(|m| {
        explore::ExploreRanker::new(m, chosen.max_places, chosen.margin)
            .map_err(|e| tracing::warn!(error = %e, "saving the recommender's explore ranker"))
            .ok()
    });
    (kept, trials)
}

/// Fits the re-ranker on the even tuning customers (the candidates of each that it
/// re-orders — [`Recommender::ranker_pool`] —, labelled by whether they bought it), once
/// per [`ranker::Loss`], and judges each against the blend on the odd ones by `relative`
/// (the tuning's objective); the better of the two there, when it wins by more than the
/// noise of those customers ([`ranker::HeldOut::keeps`]), is refitted on every customer
/// and kept.
fn fit_ranker(
    past: &Recommender,
    cases: &[TuningCase],
    relative: &dyn Fn((f64, f64)) -> f64,
) -> (Option<ranker::Ranker>, Option<ranker::HeldOut>) {
    let w = &past.weights;
    let seed = past.params.item2vec.seed;
    let tops: Vec<Vec<usize>> = cases
        .iter()
        .map(|c| past.ranker_pool(&c.candidates, 10))
        .collect();
    let gather = |keep: &dyn Fn(usize) -> bool| {
        let (mut x, mut y, mut groups) = (Vec::new(), Vec::new(), Vec::new());
        for (_, (case, top)) in cases
            .iter()
            .zip(&tops)
            .enumerate()
            .filter(|(i, _)| keep(*i))
        {
            x.extend(past.ranker_rows(&case.candidates, top, w));
            y.extend(
                top.iter()
                    .map(|&j| f32::from(u8::from(case.truth.contains(&case.candidates[j].item)))),
            );
            groups.push(top.len());
        }
        (x, y, groups)
    };
    let fit = |loss, (x, y, groups): &(Vec<f32>, Vec<f32>, Vec<usize>)| {
        let positives = y.iter().filter(|v| **v > 0.0).count();
        if positives < 20 || positives == y.len() {
            return None;
        }
        ranker::Ranker::fit(loss, x, y, groups, seed)
            .map_err(|e| tracing::warn!(error = %e, "fitting the recommender's ranker"))
            .ok()
    };
    let fitting = gather(&|i| i % 2 == 0);
    let (judge_x, _, _) = gather(&|i| i % 2 == 1);
    // Each held-out customer's objective under the blend and under the ranker (the
    // objective is a mean over customers, so a customer's share of it is its own value).
    let none = Explore::default();
    let held_out = |scores: &[f64]| {
        let mut offset = 0;
        let paired: Vec<(f64, f64)> = cases
            .iter()
            .zip(&tops)
            .skip(1)
            .step_by(2)
            .map(|(case, top)| {
                let mut order = ranker::reorder(top, &scores[offset..offset + top.len()]);
                offset += top.len();
                order.truncate(10);
                let one = |main: Vec<usize>| {
                    relative(mean_metrics(std::iter::once((case, main)), w, &none).accuracy())
                };
                (one(top.iter().take(10).copied().collect()), one(order))
            })
            .collect();
        ranker::HeldOut::of(&paired)
    };
    let Some((loss, trial)) = ranker::Loss::ALL
        .into_iter()
        .filter_map(|loss| {
            let scores = fit(loss, &fitting)?.predict(&judge_x).ok()?;
            Some((loss, held_out(&scores)))
        })
        .max_by(|a, b| (a.1.ranker).total_cmp(&b.1.ranker))
    else {
        return (None, None);
    };
    let trial = ranker::HeldOut {
        loss: Some(loss),
        ..trial
    };
    if !trial.keeps() {
        return (None, Some(trial));
    }
    let kept = fit(loss, &gather(&|_| true)).and_then(|m| {
        ranker::Ranker::new(loss, m)
            .map_err(|e| tracing::warn!(error = %e, "saving the recommender's ranker"))
            .ok()
    });
    (kept, Some(trial))
}

#[cfg(test)]
mod tests {
    use super::testing::{at, brand, params, synthetic_cases};
    use super::*;

    /// A blend that values neighbours (the brand's tuning window has no A-then-B buyers
    /// to learn that from).
    const EXPLORING: BlendWeights = [
        1.0, 0.1, 0.0, 0.0, 1.0, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];

    fn skus(model: &Recommender, recs: &[Recommended]) -> Vec<String> {
        recs.iter()
            .map(|r| model.catalogue.skus[r.item as usize].clone())
            .collect()
    }

    #[test]
    fn training_is_deterministic_given_the_seed() {
        let corpus = brand();
        let one = Recommender::train(&corpus, at(90), &params());
        let two = Recommender::train(&corpus, at(90), &params());
        assert_eq!(one.embeddings, two.embeddings);
        assert_eq!(one.weights, two.weights);
        assert_eq!(one.stats, two.stats);
        let someone = &corpus.customers[45];
        assert_eq!(
            one.recommend(someone, at(90), 10),
            two.recommend(someone, at(90), 10)
        );
    }

    #[test]
    fn the_final_fit_beside_the_tuning_gives_the_model_of_one_after_the_other() {
        let corpus = brand();
        let side_by_side = Recommender::train(&corpus, at(90), &params());
        // On one thread the tuning's searches and the final fit run one after the other.
        let one_after_the_other = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Recommender::train(&corpus, at(90), &params()));
        assert_eq!(
            side_by_side.to_json().unwrap(),
            one_after_the_other.to_json().unwrap()
        );
        assert_eq!(side_by_side.neighbours, one_after_the_other.neighbours);
        for someone in [3, 45, 80] {
            let a = &corpus.customers[someone];
            assert_eq!(
                side_by_side.recommend(a, at(90), 10),
                one_after_the_other.recommend(a, at(90), 10)
            );
        }
    }

    /// A newcomer whose one order, yesterday (day 89), was `item`.
    fn bought_yesterday(item: ItemId) -> Activity {
        Activity {
            baskets: vec![Basket {
                at: at(89),
                items: vec![item],
            }],
            views: Vec::new(),
        }
    }

    #[test]
    fn after_a_comes_b() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), EXPLORING);
        let a = corpus.catalogue.get("A").unwrap();
        let b = corpus.catalogue.get("B").unwrap();
        let newcomer = bought_yesterday(a);
        let recs = model.recommend(&newcomer, at(90), 5);
        let b_rec = recs.iter().find(|r| r.item == b);
        assert!(b_rec.is_some(), "B after A: {:?}", skus(&model, &recs));
        assert_eq!(b_rec.unwrap().source, Source::Similar);
        assert_eq!(b_rec.unwrap().reason, "similar to Kurta A you bought");
        assert!(
            !recs.iter().any(|r| r.item == a),
            "A is a one-off, just bought"
        );
        assert!(model.similar(a, 3).iter().any(|(i, _)| *i == b));
    }

    #[test]
    fn cold_start_gets_what_is_popular_in_its_categories_and_overall() {
        let corpus = brand();
        let model = Recommender::fit(
            &corpus,
            at(90),
            &params(),
            [
                1.0, 0.1, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ],
        );
        let nobody = Activity::default();
        let recs = model.recommend(&nobody, at(90), 3);
        assert_eq!(
            skus(&model, &recs)[..2],
            ["MILK", "BREAD"],
            "equal sales, by id"
        );
        assert!(
            recs.iter()
                .all(|r| r.source == Source::Popular && r.reason == "popular now")
        );
        // Someone who bought one dupatta months ago sees what is popular in Dupattas.
        let d = corpus.catalogue.get("D5").unwrap();
        let once = Activity {
            baskets: vec![Basket {
                at: at(10),
                items: vec![d],
            }],
            views: Vec::new(),
        };
        let recs = model.recommend(&once, at(90), 10);
        assert!(
            recs.iter()
                .any(|r| r.reason == "popular in Dupattas" && r.item != d),
            "{recs:?}"
        );
    }

    #[test]
    fn just_bought_one_off_items_and_stale_items_are_left_out_and_repeat_items_stay() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let a = corpus.catalogue.get("A").unwrap();
        let milk = corpus.catalogue.get("MILK").unwrap();
        let old = corpus.catalogue.get("OLD").unwrap();
        assert!(!model.is_repeat_item(a) && model.is_repeat_item(milk));
        let shopper = Activity {
            baskets: vec![
                Basket {
                    at: at(20),
                    items: vec![old],
                },
                Basket {
                    at: at(88),
                    items: vec![a, milk],
                },
            ],
            views: Vec::new(),
        };
        let recs = model.recommend(&shopper, at(90), 10);
        let items: Vec<ItemId> = recs.iter().map(|r| r.item).collect();
        assert!(!items.contains(&a), "one-off A just bought: {items:?}");
        assert!(!items.contains(&old), "stale item: {items:?}");
        assert!(items.contains(&milk), "repeat item stays: {items:?}");
        assert!(!model.is_live(old, at(90)) && model.is_live(milk, at(90)));
        // A month later A is no longer "just bought".
        let later = model.recommend(&shopper, at(88 + 30), 10);
        assert!(later.iter().any(|r| r.item == a));
    }

    #[test]
    fn repeat_buyers_are_told_how_often_they_bought() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let staple_buyer = corpus.customers[45].before(at(90));
        let recs = model.recommend(&staple_buyer, at(90), 3);
        assert_eq!(recs[0].source, Source::Repeat);
        assert!(
            recs[0].reason.starts_with("bought 12 times"),
            "{}",
            recs[0].reason
        );
    }

    #[test]
    fn a_model_stored_before_the_newer_features_still_loads_and_scores() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let mut stored = serde_json::to_value(&model).unwrap();
        stored["weights"] = serde_json::json!([1.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.01]);
        stored["stats"]
            .as_object_mut()
            .unwrap()
            .remove("orders_per_buyer_ln");
        stored["stats"]
            .as_object_mut()
            .unwrap()
            .remove("prior_orders");
        stored.as_object_mut().unwrap().remove("explore");
        stored["params"]["item2vec"]
            .as_object_mut()
            .unwrap()
            .remove("subsample");
        let mut old: Recommender = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(old.weights, P_TOPFREQ, "missing weights are 0");
        assert_eq!(old.explore, Explore::default(), "no explore slots");
        assert_eq!(old.params.item2vec.subsample, 0.0, "no subsampling");
        old.build_index();
        let someone = &corpus.customers[45];
        assert_eq!(
            model.recommend(someone, at(90), 10),
            old.recommend(someone, at(90), 10)
        );
        stored["weights"] = serde_json::json!(vec![0.0; FEATURES.len() + 1]);
        assert!(serde_json::from_value::<Recommender>(stored).is_err());
    }

    #[test]
    fn a_stored_model_serves_the_same_after_loading() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let again = Recommender::from_json(&model.to_json().unwrap()).unwrap();
        let someone = &corpus.customers[3];
        assert_eq!(
            model.recommend(someone, at(90), 10),
            again.recommend(someone, at(90), 10)
        );
    }

    #[test]
    fn explore_slots_give_the_last_places_to_neighbours_never_bought() {
        let corpus = brand();
        // The blend alone ignores similarity; two explore slots bring B in after A.
        let mut model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let a = corpus.catalogue.get("A").unwrap();
        let b = corpus.catalogue.get("B").unwrap();
        let newcomer = bought_yesterday(a);
        let without = model.recommend(&newcomer, at(90), 5);
        assert!(without.iter().all(|r| r.source != Source::Similar));
        model.explore = Explore {
            slots: 2,
            weights: EXPLORE_START,
            weak_below: None,
        };
        let with = model.recommend(&newcomer, at(90), 5);
        assert_eq!(with.len(), 5);
        assert_eq!(with[..3], without[..3], "the blend keeps the first places");
        let b_rec = with[3..].iter().find(|r| r.item == b);
        assert!(b_rec.is_some(), "B after A: {:?}", skus(&model, &with));
        assert_eq!(b_rec.unwrap().source, Source::Similar);
        assert_eq!(b_rec.unwrap().reason, "similar to Kurta A you bought");
        // A staple buyer's explore slots never hold what they already bought.
        let staple_buyer = corpus.customers[45].before(at(90));
        let bought: HashSet<ItemId> = staple_buyer
            .baskets
            .iter()
            .flat_map(|b| b.items.iter().copied())
            .collect();
        let candidates = model.candidates(&staple_buyer, at(90));
        for (i, explored) in select(&candidates, &model.weights, &model.explore, 10) {
            assert!(!explored || !bought.contains(&candidates[i].item));
        }
    }

    #[test]
    fn explore_slots_go_only_to_profiles_whose_repeat_candidates_are_weak() {
        let corpus = brand();
        let mut model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let b = corpus.catalogue.get("B").unwrap();
        let newcomer = bought_yesterday(corpus.catalogue.get("A").unwrap());
        let staple_buyer = corpus.customers[45].before(at(90));
        let without = model.recommend(&staple_buyer, at(90), 10);
        // The staple buyer's 9th place was bought before (frequency ln 2 and more); the
        // newcomer's is a popular item it never bought (a score near 0).
        model.explore = Explore {
            slots: 2,
            weights: EXPLORE_START,
            weak_below: Some(0.5),
        };
        assert_eq!(
            model.recommend(&staple_buyer, at(90), 10),
            without,
            "strong repeat candidates keep every place"
        );
        let recs = model.recommend(&newcomer, at(90), 10);
        let b_rec = recs[8..].iter().find(|r| r.item == b);
        assert!(b_rec.is_some(), "B after A: {:?}", skus(&model, &recs));
        assert_eq!(b_rec.unwrap().source, Source::Similar);
        // Without a bar, everyone explores, the staple buyer too.
        model.explore.weak_below = None;
        assert_ne!(model.recommend(&staple_buyer, at(90), 10), without);
    }

    /// A brand of 60 explorers, who buy milk, bread, two of twelve pantry items at random
    /// and a snack they never bought before every week (snack `c + week` of a row of 40,
    /// so each next one is the neighbour of the last), and of 120 loyal buyers of milk,
    /// bread, two pantry items and the same snack of that row every week.
    fn explorers_and_loyal() -> Corpus {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut catalogue = Catalogue::default();
        let milk = catalogue.intern("MILK", Some("Milk"), Some("Dairy"));
        let bread = catalogue.intern("BREAD", Some("Bread"), Some("Bakery"));
        let pantry: Vec<ItemId> = (0..12)
            .map(|i| catalogue.intern(&format!("P{i}"), None, Some("Pantry")))
            .collect();
        let snacks: Vec<ItemId> = (0..40)
            .map(|i| catalogue.intern(&format!("S{i}"), None, Some("Snacks")))
            .collect();
        let mut customers = Vec::new();
        for (explorer, group) in [(true, 60usize), (false, 120)] {
            for c in 0..group {
                let mut act = Activity::default();
                for week in 0..20usize {
                    let snack = if explorer { (c + week) % 40 } else { c % 40 };
                    let first = rng.random_range(0..12);
                    let second = (first + rng.random_range(1..12)) % 12;
                    act.baskets.push(Basket {
                        at: at((week * 7 + c % 7) as i64),
                        items: vec![milk, bread, pantry[first], pantry[second], snacks[snack]],
                    });
                }
                customers.push(act);
            }
        }
        Corpus {
            catalogue,
            customers,
        }
    }

    #[test]
    fn the_learned_explore_ranker_gives_a_new_item_to_those_who_explore_and_not_to_others() {
        let corpus = explorers_and_loyal();
        let now = at(140);
        let model = Recommender::train(&corpus, now, &params());
        assert!(
            model.explore_ranker.is_some(),
            "{:#?}",
            model.explore_ranker_trials
        );
        // What explore places put on a customer's list.
        let explored = |c: usize| -> Vec<&str> {
            let candidates = model.candidates(&corpus.customers[c], now);
            model
                .selections(&[candidates.as_slice()], 10)
                .remove(0)
                .into_iter()
                .filter(|(_, explored)| *explored)
                .map(|(i, _)| model.catalogue.skus[candidates[i].item as usize].as_str())
                .collect()
        };
        // Explorers: the next snack of the row (never bought, the neighbour of the last).
        for c in [0, 13, 27] {
            let next = format!("S{}", (c + 20) % 40);
            assert!(
                explored(c).contains(&next.as_str()),
                "{c}: {:?}",
                explored(c)
            );
        }
        // Loyal buyers have the same neighbours, but never try them: no explore place.
        for c in [60, 93, 147] {
            assert!(explored(c).is_empty(), "{c}: {:?}", explored(c));
        }
    }

    #[test]
    fn explore_slots_may_hold_popular_items_never_bought() {
        let corpus = brand();
        let mut model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        // No neighbours: the only candidates never bought are popular ones.
        model.params.neighbours = 0;
        let (a, milk, bread) = (
            corpus.catalogue.get("A").unwrap(),
            corpus.catalogue.get("MILK").unwrap(),
            corpus.catalogue.get("BREAD").unwrap(),
        );
        let someone = Activity {
            baskets: [20, 40]
                .map(|day| Basket {
                    at: at(day),
                    items: vec![a, milk, bread],
                })
                .to_vec(),
            views: Vec::new(),
        };
        let without = model.recommend(&someone, at(90), 3);
        assert!(without.iter().all(|r| r.source == Source::Repeat));
        let mut popular_first = [0.0; FEATURES.len()];
        popular_first[POP] = 1.0;
        model.explore = Explore {
            slots: 1,
            weights: popular_first,
            weak_below: None,
        };
        let recs = model.recommend(&someone, at(90), 3);
        assert_eq!(recs[..2], without[..2]);
        let last = &recs[2];
        assert!(
            ![a, milk, bread].contains(&last.item),
            "{:?}",
            skus(&model, &recs)
        );
        assert_eq!(last.source, Source::Popular);
        // The best seller among what it never bought.
        let best = (0..model.catalogue.len() as ItemId)
            .filter(|i| ![a, milk, bread].contains(i))
            .max_by_key(|&i| (model.stats.recent_orders[i as usize], std::cmp::Reverse(i)))
            .unwrap();
        assert_eq!(last.item, best);
    }

    #[test]
    fn what_many_people_try_for_the_first_time_now_is_an_explore_candidate() {
        let mut corpus = brand();
        let milk = corpus.catalogue.get("MILK").unwrap();
        // NEW: thirty newcomers each bought it once in the 28 days before day 90 (far
        // fewer orders than milk's, whose buyers all bought it first months ago).
        let new = corpus
            .catalogue
            .intern("NEW", Some("New yoghurt"), Some("Dairy"));
        for c in 0..30 {
            corpus.customers.push(Activity {
                baskets: vec![Basket {
                    at: at(65 + c % 20),
                    items: vec![new],
                }],
                views: Vec::new(),
            });
        }
        // TEA sells more than NEW now, to twenty regulars who all began months ago.
        let tea = corpus.catalogue.intern("TEA", Some("Tea"), Some("Drinks"));
        for c in 0..20 {
            corpus.customers.push(Activity {
                baskets: (0..13)
                    .map(|w| Basket {
                        at: at(w * 7 + c % 3),
                        items: vec![tea],
                    })
                    .collect(),
                views: Vec::new(),
            });
        }
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        assert_eq!(model.stats.recent_newcomers[new as usize], 30);
        assert_eq!(model.stats.recent_newcomers[milk as usize], 0);
        assert_eq!(model.stats.recent_newcomers[tea as usize], 0);
        assert!(model.stats.recent_orders[tea as usize] > 30);
        assert_eq!(model.trying.first(), Some(&new));
        // A milk-and-bread buyer never bought it: it is a candidate, first by newcomers.
        let someone = &corpus.customers[45];
        let candidates = model.candidates(someone, at(90));
        let c = candidates
            .iter()
            .find(|c| c.item == new)
            .expect("a candidate");
        assert_eq!(c.features[NEWCOMERS], 1.0);
        assert!(c.features[NEW_IN_TASTE] > 0.0, "it buys dairy: {c:?}");
        // The profile's own rhythm: 12 baskets of 3 items, from day 0 to day 90.
        assert_eq!(c.basket_size, 3.0);
        assert!(
            (c.baskets_per_week - 12.0 / (90.0 / 7.0)).abs() < 1e-4,
            "{c:?}"
        );
        // An explore slot ranked by newcomers gives it; one ranked by what sells does not.
        let slot = |f: usize| {
            let mut weights = [0.0; FEATURES.len()];
            weights[f] = 1.0;
            let explore = Explore {
                slots: 1,
                weights,
                weak_below: None,
            };
            let picked = select(&candidates, &P_TOPFREQ, &explore, 10);
            candidates[picked.last().unwrap().0].item
        };
        assert_eq!(slot(NEWCOMERS), new);
        assert_eq!(slot(POP), tea);
    }

    #[test]
    fn the_explore_policy_is_tuned_on_the_window_for_the_weak_profiles() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        // Half the customers have strong repeat candidates and buy their blend's top 10;
        // the other half have weak ones (all features scaled down), buy one of them and
        // a new item: the neighbour most similar to their anchors, never bought.
        let cases: Vec<TuningCase> = synthetic_cases(&model, 3, |_| false)
            .into_iter()
            .enumerate()
            .map(|(n, mut case)| {
                let weak = n % 2 == 1;
                let explore_item = case.candidates[0].item;
                for c in &mut case.candidates {
                    c.features[SIM] = 0.0;
                    if weak {
                        c.features.iter_mut().for_each(|f| *f *= 0.1);
                    }
                }
                let first = &mut case.candidates[0];
                first.times_bought = 0;
                first.anchor = Some((explore_item, false));
                first.features = [0.0; FEATURES.len()];
                first.features[SIM] = 0.9;
                let top = rank(&case.candidates, &P_TOPFREQ, 10);
                case.truth = top
                    .iter()
                    .take(if weak { 1 } else { 10 })
                    .map(|&i| case.candidates[i].item)
                    .collect();
                case.new.clear();
                if weak {
                    case.truth.insert(explore_item);
                    case.new.insert(explore_item);
                }
                case
            })
            .collect();
        let mains: Vec<Vec<usize>> = cases
            .iter()
            .map(|c| rank(&c.candidates, &P_TOPFREQ, 10))
            .collect();
        let (r0, n0) = recall_and_ndcg(&cases, &P_TOPFREQ, &Explore::default());
        let trials = explore_trials(&cases, &mains, &P_TOPFREQ, EXPLORE_START, (r0, n0));
        assert_eq!(trials[0].explore, Explore::default(), "no slots is weighed");
        assert!((trials[0].recall_ratio - 1.0).abs() < 1e-9);
        let chosen = choose_explore(&trials);
        assert!(chosen.slots > 0, "{trials:#?}");
        let bar = chosen
            .weak_below
            .expect("a bar: only the weak profiles explore");
        let kept = trials.iter().find(|t| t.explore == chosen).unwrap();
        assert!(
            (kept.share_exploring - 0.5).abs() < 0.05,
            "the weak half explores: {kept:?}"
        );
        assert!(
            kept.explore_recall > 0.9 && kept.recall_ratio > 1.0,
            "{kept:?}"
        );
        // The bar sits between the two halves' pushed-out scores.
        for (n, (case, main)) in cases.iter().zip(&mains).enumerate() {
            let pushed_out = score(&case.candidates[main[10 - chosen.slots]], &P_TOPFREQ);
            assert_eq!(
                pushed_out < bar,
                n % 2 == 1,
                "case {n}: {pushed_out} vs {bar}"
            );
        }
    }

    #[test]
    fn the_explore_policy_trades_at_most_the_allowance_of_accuracy() {
        let trial = |slots, recall_ratio, ndcg_ratio, explore_recall| ExploreTrial {
            explore: Explore {
                slots,
                weights: EXPLORE_START,
                weak_below: None,
            },
            share_exploring: 1.0,
            recall_ratio,
            ndcg_ratio,
            explore_recall,
        };
        let none = ExploreTrial {
            explore: Explore::default(),
            share_exploring: 0.0,
            ..trial(0, 1.06, 1.06, 0.001)
        };
        // Within the allowance on both figures: the most exploring one.
        let within = trial(1, 1.06 - EXPLORE_ALLOWANCE / 2.0, 1.055, 0.02);
        let beyond = trial(2, 1.04, 1.05, 0.04);
        assert_eq!(choose_explore(&[none, within, beyond]), within.explore);
        assert_eq!(choose_explore(&[none, beyond]), none.explore);
        // Within the allowance but finding next to nothing new: not worth its cost.
        let idle = trial(4, 1.055, 1.055, 0.001 + MIN_EXPLORE_GAIN / 2.0);
        assert_eq!(choose_explore(&[none, idle]), none.explore);
        // A policy more accurate than none is the reference.
        let better = trial(3, 1.08, 1.08, 0.002);
        assert_eq!(choose_explore(&[none, within, better]), better.explore);
        assert_eq!(choose_explore(&[]), Explore::default());
    }

    #[test]
    fn cached_neighbours_are_what_the_graph_search_returns() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        assert!(!model.embeddings.is_empty());
        for &item in &model.embeddings.items {
            for k in [1, 5, CACHED_NEIGHBOURS] {
                assert_eq!(model.similar(item, k), model.similar_uncached(item, k));
            }
        }
        // The cache is the same however many threads fill it.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ));
        assert_eq!(one.neighbours, model.neighbours);
    }

    #[test]
    fn selecting_the_best_k_matches_sorting_everything() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let candidates = model.candidates(&corpus.customers[45].before(at(90)), at(90));
        let all = rank(&candidates, &P_TOPFREQ, candidates.len());
        for k in [0, 1, 3, 10, candidates.len() + 5] {
            assert_eq!(
                rank(&candidates, &P_TOPFREQ, k),
                all[..k.min(all.len())].to_vec()
            );
            // A pool (every other candidate) ranks as the whole list with the rest
            // left out.
            let pool: Vec<usize> = (0..candidates.len()).step_by(2).collect();
            let expected: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 0).take(k).collect();
            assert_eq!(rank_among(&candidates, pool, &P_TOPFREQ, k), expected);
        }
    }

    #[test]
    fn candidates_gathered_one_profile_after_another_are_each_profile_s_own() {
        let corpus = brand();
        let model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let mut scratch = Scratch::default();
        // Every profile twice through one scratch, long histories next to short ones.
        let n = corpus.customers.len();
        for c in (0..n).rev().chain(0..n) {
            let profile = &corpus.customers[c];
            for now in [at(45), at(90)] {
                let fresh = model.candidates(profile, now);
                assert!(!fresh.is_empty());
                // Compared as printed: a profile with one basket has NaN shares.
                let reused = model.candidates_in(profile, now, &mut scratch);
                assert_eq!(format!("{reused:?}"), format!("{fresh:?}"));
            }
        }
        assert!(scratch.items.iter().all(|&slot| slot == NO_SLOT));
        assert!(scratch.categories.iter().all(|&slot| slot == NO_SLOT));
    }

    #[test]
    fn the_ranker_is_kept_only_when_it_beats_the_blend_on_held_out_customers() {
        let corpus = brand();
        let mut model = Recommender::fit(&corpus, at(90), &params(), P_TOPFREQ);
        let relative = |(r, n): (f64, f64)| r + n;
        // Bought: a middle band of frequency, which no weighted sum ranks first.
        let band = synthetic_cases(&model, 1, |c| (0.4..0.6).contains(&c.features[FREQ]));
        // The ranker weighs the blend's best 20 of the 25 candidates (and explore
        // candidates, of which these have none): what the blend places lower never
        // reaches it.
        for case in &band {
            let pool = model.ranker_pool(&case.candidates, 10);
            assert_eq!(pool, rank(&case.candidates, &model.weights, 20));
        }
        let (ranker, trial) = fit_ranker(&model, &band, &relative);
        let trial = trial.expect("tried");
        assert!(trial.ranker > trial.blend + 0.1, "{trial:?}");
        let ranker = ranker.expect("kept");
        // Bought: the blend's own top 3, which nothing can rank better.
        let own = synthetic_cases(&model, 2, |_| false);
        let own: Vec<TuningCase> = own
            .into_iter()
            .map(|mut case| {
                case.truth = rank(&case.candidates, &P_TOPFREQ, 3)
                    .into_iter()
                    .map(|i| case.candidates[i].item)
                    .collect();
                case
            })
            .collect();
        let (none, trial) = fit_ranker(&model, &own, &relative);
        assert!(none.is_none(), "{trial:?}");
        // A kept ranker re-orders the blend's best candidates, and does so the same
        // after the model is stored and loaded.
        model.ranker = Some(ranker);
        let someone = corpus.customers[45].before(at(90));
        let recs = model.recommend(&someone, at(90), 10);
        let candidates = model.candidates(&someone, at(90));
        let best: HashSet<ItemId> = rank(&candidates, &model.weights, ranker::RERANK_TOP)
            .into_iter()
            .map(|i| candidates[i].item)
            .collect();
        assert!(recs.iter().all(|r| best.contains(&r.item)));
        // Ranking many profiles at once (one call of the ranker) lists the same.
        let others = [corpus.customers[3].before(at(90)), bought_yesterday(0)];
        let many = model.recommend_many(&[&someone, &others[0], &others[1]], at(90), 10);
        assert_eq!(many[0], recs);
        assert_eq!(many[1], model.recommend(&others[0], at(90), 10));
        assert_eq!(many[2], model.recommend(&others[1], at(90), 10));
        let again = Recommender::from_json(&model.to_json().unwrap()).unwrap();
        assert!(again.ranker.as_ref().is_some_and(|r| r.model().is_some()));
        assert_eq!(recs, again.recommend(&someone, at(90), 10));
    }

    #[test]
    fn training_reports_where_its_time_went() {
        let (model, times) = Recommender::train_timed(&brand(), at(90), &params());
        let names: Vec<&str> = times.phases.iter().map(|(n, _)| n.as_str()).collect();
        for phase in [
            "tuning fit: item2vec",
            "tuning fit: exact neighbours",
            "tuning: candidates",
            "tuning: weight search",
            "final fit: item2vec",
            "final fit: HNSW graph",
            "final fit: neighbour cache",
        ] {
            assert!(names.contains(&phase), "{phase} in {names:?}");
        }
        // The tuning's model builds no graph.
        assert!(!names.contains(&"tuning fit: HNSW graph"), "{names:?}");
        let total = times.total();
        assert!(total.seconds > 0.0 && total.cpu_seconds >= 0.0, "{total:?}");
        // The served model has the neighbours of every item cached.
        assert!(!model.neighbours.is_empty());
        assert!(
            model
                .neighbours
                .iter()
                .all(|n| n.as_ref().is_some_and(|n| !n.is_empty()))
        );
    }

    #[test]
    fn an_item_no_longer_sold_is_never_indexed_found_as_a_neighbour_nor_recommended() {
        let mut corpus = brand();
        let milk = corpus.catalogue.get("MILK").unwrap();
        let bread = corpus.catalogue.get("BREAD").unwrap();
        // GONE sold with milk and bread for a while, then not for 200 days (past the
        // 120 days of `stale_days`): it has a vector, near milk's.
        let gone = corpus
            .catalogue
            .intern("GONE", Some("Old milk"), Some("Dairy"));
        for c in 0..30 {
            corpus.customers.push(Activity {
                baskets: (0..3)
                    .map(|w| Basket {
                        at: at(-200 + w * 7 + c % 5),
                        items: vec![gone, milk, bread],
                    })
                    .collect(),
                views: Vec::new(),
            });
        }
        let model = Recommender::fit(&corpus, at(90), &params(), EXPLORING);
        assert!(!model.is_live(gone, at(90)) && model.is_live(milk, at(90)));
        let row = model.embeddings.row(gone).expect("GONE has a vector");
        let index = model.index().unwrap();
        assert!(!index.rows().contains(&row), "not in the graph");
        assert!(index.rows().contains(&model.embeddings.row(milk).unwrap()));
        for &item in &model.embeddings.items {
            assert!(
                model
                    .similar(item, CACHED_NEIGHBOURS + 5)
                    .iter()
                    .all(|(i, _)| *i != gone),
                "GONE found as a neighbour of {item}"
            );
        }
        // It can still be asked for its own neighbours...
        let near = model.similar(gone, 5);
        assert!(!near.is_empty());
        assert_eq!(near, model.similar_uncached(gone, 5));
        // ...but is recommended to nobody: not to someone who bought it with milk, not
        // to someone who just bought milk.
        let fan = Activity {
            baskets: vec![Basket {
                at: at(-180),
                items: vec![gone, milk],
            }],
            views: vec![View {
                at: at(89),
                item: gone,
            }],
        };
        for who in [&fan, &bought_yesterday(milk), &corpus.customers[45]] {
            let recs = model.recommend(who, at(90), 10);
            assert!(!recs.is_empty());
            assert!(recs.iter().all(|r| r.item != gone), "{recs:?}");
        }
    }

    #[test]
    fn a_training_after_an_earlier_one_tunes_on_its_fit_instead_of_fitting_again() {
        let corpus = brand();
        let p = params();
        let earlier_at = at(90) - Duration::days(p.tuning_horizon_days);
        let phases =
            |t: &TrainTimes| -> Vec<String> { t.phases.iter().map(|(n, _)| n.clone()).collect() };
        let (earlier, _) = Recommender::train_after(&corpus, earlier_at, &p, None);
        let (later, times) = Recommender::train_after(&corpus, at(90), &p, Some(earlier));
        let names = phases(&times);
        assert!(
            names.iter().all(|n| !n.starts_with("tuning fit")),
            "no second fit: {names:?}"
        );
        assert!(names.contains(&"tuning: weight search".to_string()));
        assert!(names.contains(&"final fit: item2vec".to_string()));
        // Deterministic given the seed, like a training from nothing.
        let (again, _) = Recommender::train_after(&corpus, earlier_at, &p, None);
        let (later2, _) = Recommender::train_after(&corpus, at(90), &p, Some(again));
        assert_eq!(later.model.embeddings, later2.model.embeddings);
        assert_eq!(later.model.weights, later2.model.weights);
        let someone = &corpus.customers[45];
        let recs = later.model.recommend(someone, at(90), 10);
        assert!(!recs.is_empty());
        assert_eq!(recs, later2.model.recommend(someone, at(90), 10));
        // A model as of another instant is no tuning fit: it is ignored.
        let (other, _) = Recommender::train_after(&corpus, at(50), &p, None);
        let (ignored, times) = Recommender::train_after(&corpus, at(90), &p, Some(other));
        let (plain, _) = Recommender::train_after(&corpus, at(90), &p, None);
        assert!(phases(&times).contains(&"tuning fit: item2vec".to_string()));
        assert_eq!(ignored.model.embeddings, plain.model.embeddings);
        assert_eq!(ignored.model.weights, plain.model.weights);
    }
}
