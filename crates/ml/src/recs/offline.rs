//! Offline evaluation of recommendations (`ctl ml eval-recs`): train on everything
//! before a cutoff, then score every customer seen before it who buys in the horizon on
//! the distinct products they bought, for the blend and the baselines the literature
//! says are hard to beat — popularity (last 4 weeks), personal top-frequency
//! (P-TopFreq), item-kNN on co-purchases and item2vec neighbours alone.
//!
//! Metrics per method, averaged over customers: Recall@10 (hits / |bought|), Recall@10
//! normalised by min(10, |bought|), NDCG@10 (binary gains), HitRate@10, the same recall
//! split into **repeat** items (bought before the cutoff) and **explore** items (new to
//! the customer), and catalogue coverage (share of the items sold before the cutoff that
//! appear in someone's top 10).
//!
//! The transaction CSV has a header with `customer_id`, `sku` and `date`, and optionally
//! `order_id` (rows of one order are one basket; without it, a customer's rows with the
//! same timestamp), `category`, `name`, `quantity` (rows with quantity ≤ 0 are returns,
//! left out) and `price`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    Activity, Basket, BlendWeights, Catalogue, Corpus, Explore, ExploreTrial, Fitted, ItemId,
    Recommender, RecsParams, TrainTimes, future_purchases, select,
};
use crate::MlError;
use crate::eval::{missing_column, open_csv, parse_date};

/// A transaction CSV read into a corpus.
#[derive(Debug, Clone, Default)]
pub struct TransactionCorpus {
    /// Baskets per customer over the catalogue of every SKU seen.
    pub corpus: Corpus,
    /// Data rows read.
    pub rows: usize,
    /// Rows skipped: (line number, reason); at most the first 100 are kept.
    pub bad_rows: Vec<(u64, String)>,
    /// Rows skipped in all.
    pub skipped: usize,
    /// Earliest and latest basket.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Reads a transaction CSV (columns in the module doc).
pub fn read_transactions<R: Read>(input: R) -> Result<TransactionCorpus, MlError> {
    let (mut reader, headers) = open_csv(input)?;
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let required = |name: &str| col(name).ok_or_else(|| missing_column(&headers, name, ""));
    let (customer_col, sku_col, date_col) = (
        required("customer_id")?,
        required("sku")?,
        required("date")?,
    );
    let (order_col, category_col, name_col, quantity_col) = (
        col("order_id"),
        col("category"),
        col("name"),
        col("quantity"),
    );
    let mut out = TransactionCorpus::default();
    let mut customers: HashMap<String, usize> = HashMap::new();
    let mut baskets: HashMap<(usize, String), usize> = HashMap::new();
    let mut activities: Vec<Activity> = Vec::new();
    let mut catalogue = Catalogue::default();
    let mut record = csv::StringRecord::new();
    fn skip(out: &mut TransactionCorpus, line: u64, why: String) {
        out.skipped += 1;
        if out.bad_rows.len() < 100 {
            out.bad_rows.push((line, why));
        }
    }
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                skip(&mut out, line, e.to_string());
                continue;
            }
        }
        out.rows += 1;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("");
        let (customer, sku) = (field(Some(customer_col)), field(Some(sku_col)));
        if customer.is_empty() || sku.is_empty() {
            skip(&mut out, line, "empty customer_id or sku".into());
            continue;
        }
        let Some(at) = parse_date(field(Some(date_col))) else {
            skip(
                &mut out,
                line,
                format!("unreadable date `{}`", field(Some(date_col))),
            );
            continue;
        };
        let quantity = field(quantity_col);
        if !quantity.is_empty() {
            match quantity.parse::<f64>() {
                Ok(q) if q > 0.0 => {}
                Ok(_) => {
                    skip(&mut out, line, "quantity ≤ 0 (a return)".into());
                    continue;
                }
                Err(_) => {
                    skip(&mut out, line, format!("unreadable quantity `{quantity}`"));
                    continue;
                }
            }
        }
        let item = catalogue.intern(sku, Some(field(name_col)), Some(field(category_col)));
        let next = activities.len();
        let c = *customers.entry(customer.to_string()).or_insert(next);
        if c == next {
            activities.push(Activity::default());
        }
        let order = match field(order_col) {
            "" => at.to_rfc3339(),
            o => o.to_string(),
        };
        let basket = *baskets.entry((c, order)).or_insert_with(|| {
            activities[c].baskets.push(Basket {
                at,
                items: Vec::new(),
            });
            activities[c].baskets.len() - 1
        });
        let b = &mut activities[c].baskets[basket];
        b.at = b.at.min(at);
        if !b.items.contains(&item) {
            b.items.push(item);
        }
        out.span = Some(match out.span {
            None => (at, at),
            Some((lo, hi)) => (lo.min(at), hi.max(at)),
        });
    }
    for a in &mut activities {
        a.sort();
    }
    out.corpus = Corpus {
        catalogue,
        customers: activities,
    };
    Ok(out)
}

/// One customer's top list judged against what they bought.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankingMetrics {
    /// Hits / |bought|.
    pub recall: f64,
    /// Hits / min(k, |bought|).
    pub recall_normalised: f64,
    /// NDCG with binary gains.
    pub ndcg: f64,
    /// 1 when there is a hit.
    pub hit: f64,
}

/// Metrics of one top list (`top` best first) against the bought items.
pub fn ranking_metrics(top: &[ItemId], truth: &HashSet<ItemId>) -> RankingMetrics {
    let hits: Vec<bool> = top.iter().map(|i| truth.contains(i)).collect();
    let n_hits = hits.iter().filter(|h| **h).count() as f64;
    let dcg: f64 = hits
        .iter()
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(r, _)| 1.0 / (r as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..truth.len().min(top.len().max(1)))
        .map(|r| 1.0 / (r as f64 + 2.0).log2())
        .sum();
    let n = truth.len().max(1) as f64;
    RankingMetrics {
        recall: n_hits / n,
        recall_normalised: n_hits / truth.len().min(top.len().max(1)).max(1) as f64,
        ndcg: if ideal > 0.0 { dcg / ideal } else { 0.0 },
        hit: if n_hits > 0.0 { 1.0 } else { 0.0 },
    }
}

/// One method's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodReport {
    /// Method name.
    pub method: String,
    /// Recall@10.
    pub recall_at_10: f64,
    /// Recall@10 / min(10, |bought|).
    pub recall_norm_at_10: f64,
    /// NDCG@10.
    pub ndcg_at_10: f64,
    /// HitRate@10.
    pub hit_rate_at_10: f64,
    /// Recall@10 on items bought before (customers with any).
    pub repeat_recall_at_10: f64,
    /// Recall@10 on items new to the customer (customers with any).
    pub explore_recall_at_10: f64,
    /// Share of the catalogue sold before the cutoff that appears in some top 10.
    pub coverage: f64,
}

/// An evaluation at one cutoff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecsEvaluation {
    /// Training data ends here.
    pub cutoff: DateTime<Utc>,
    /// Days after the cutoff that are the truth.
    pub horizon_days: i64,
    /// Customers scored.
    pub customers: usize,
    /// Of them, customers who bought an item again / an item new to them.
    pub repeat_customers: usize,
    /// Customers who bought something new to them.
    pub explore_customers: usize,
    /// Items sold before the cutoff.
    pub catalogue_items: usize,
    /// Items with a vector.
    pub embedded_items: usize,
    /// Of them, the items still sold at the cutoff: those the HNSW graph holds (the only
    /// ones that can be recommended).
    pub indexed_items: usize,
    /// Recall@10 of the HNSW index against exact search (1,000 random items).
    pub ann_recall_at_10: f64,
    /// Seconds to train (tuning included).
    pub train_seconds: f64,
    /// CPU seconds the process spent training (all threads; NaN where the system does
    /// not report it): what a loaded machine's wall time hides.
    pub train_cpu_seconds: f64,
    /// Where the training's time went, phase by phase.
    pub train_phases: TrainTimes,
    /// Profiles scored per second by the blend.
    pub profiles_per_second: f64,
    /// Profiles scored per CPU second by the blend (same pass).
    pub profiles_per_cpu_second: f64,
    /// Similar-items queries (10 neighbours through the HNSW index) and exact search
    /// beside them, timed in the same run.
    pub similar: QueryTimes,
    /// The tuned blend weights.
    pub weights: BlendWeights,
    /// The tuned explore slots.
    pub explore: Explore,
    /// The explore policies the tuning weighed, with their figures on its window.
    pub explore_trials: Vec<ExploreTrial>,
    /// The explore ceiling: for a number of places, the mean over customers who bought
    /// something new of the share of those new items an oracle would place there,
    /// picking perfectly among the profile's candidates it never bought (item2vec
    /// neighbours, popular in its categories and overall). What no ranking of these
    /// candidates can beat.
    pub explore_oracle: Vec<(usize, f64)>,
    /// The same ceiling among the learned explore ranker's pool only (what it scores:
    /// [`super::explore::EXPLORE_POOL`] never-bought candidates outside the main list).
    pub explore_pool_oracle: Vec<(usize, f64)>,
    /// The learned explore ranker's policy when it was kept: most places and margin.
    pub explore_ranker: Option<(usize, f64)>,
    /// The learned explore policies weighed, with their figures on held-out tuning
    /// customers.
    pub explore_ranker_trials: Vec<super::explore::LearnedTrial>,
    /// Whether the re-ranker was kept.
    pub ranker_kept: bool,
    /// How the re-ranker did against the blend on held-out tuning customers.
    pub ranker_trial: Option<super::ranker::HeldOut>,
    /// Popularity, P-TopFreq, item-kNN, item2vec-ANN, blend.
    pub methods: Vec<MethodReport>,
}

impl RecsEvaluation {
    /// The method with this name.
    pub fn method(&self, name: &str) -> Option<&MethodReport> {
        self.methods.iter().find(|m| m.method == name)
    }

    /// Metrics for the registry: the blend's figures as the model's, the baselines under
    /// `baselines` (so the activation gate demands the blend beat P-TopFreq and
    /// popularity on Recall@10).
    pub fn registry_metrics(&self) -> serde_json::Value {
        let figures = |m: &MethodReport| serde_json::to_value(m).unwrap_or_default();
        let mut metrics = self
            .method("blend")
            .map(figures)
            .unwrap_or_else(|| serde_json::json!({}));
        metrics["customers"] = self.customers.into();
        metrics["ann_recall_at_10"] = self.ann_recall_at_10.into();
        metrics["horizon_days"] = self.horizon_days.into();
        metrics["baselines"] = self
            .methods
            .iter()
            .filter(|m| matches!(m.method.as_str(), "p_topfreq" | "popularity"))
            .map(|m| (m.method.clone(), figures(m)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        metrics
    }
}

/// How long one similar-items query takes: served from the neighbours cached per item,
/// through the HNSW graph (how the cache is filled), and by exact search over every
/// vector (the reference this machine sets in the same run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueryTimes {
    /// Queries timed each way.
    pub queries: usize,
    /// Median, milliseconds (cached neighbours: what serving and scoring use).
    pub p50_ms: f64,
    /// 99th percentile, milliseconds (cached neighbours).
    pub p99_ms: f64,
    /// Median of a search of the HNSW graph, milliseconds.
    pub hnsw_p50_ms: f64,
    /// 99th percentile of a search of the HNSW graph, milliseconds.
    pub hnsw_p99_ms: f64,
    /// Mean time of an exact (brute-force) 10-nearest search over the indexed vectors,
    /// milliseconds (200 queries).
    pub exact_mean_ms: f64,
}

/// Median and 99th percentile (milliseconds) of timing `query` on each row, one at a time.
fn percentiles(rows: &[usize], query: impl Fn(usize)) -> (f64, f64) {
    let mut times: Vec<f64> = rows
        .iter()
        .map(|&r| {
            let started = Instant::now();
            query(r);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    (pct(0.50), pct(0.99))
}

/// Times `queries` similar-items queries (items drawn with `seed`) from the cache and
/// through the index, one at a time, and 200 exact searches.
pub fn time_similar_queries(model: &Recommender, queries: usize, seed: u64) -> QueryTimes {
    use rand::{SeedableRng, seq::index::sample};
    let e = &model.embeddings;
    let n = e.len();
    if n < 2 {
        return QueryTimes {
            queries: 0,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            hnsw_p50_ms: f64::NAN,
            hnsw_p99_ms: f64::NAN,
            exact_mean_ms: f64::NAN,
        };
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let rows = sample(&mut rng, n, queries.min(n)).into_vec();
    let (p50_ms, p99_ms) = percentiles(&rows, |r| {
        std::hint::black_box(model.similar(e.items[r], 10));
    });
    let (hnsw_p50_ms, hnsw_p99_ms) = percentiles(&rows, |r| {
        std::hint::black_box(model.similar_uncached(e.items[r], 10));
    });
    let exact_rows = &rows[..rows.len().min(200)];
    let among = model
        .index()
        .map(super::ann::Index::rows)
        .unwrap_or_default();
    let started = Instant::now();
    for &r in exact_rows {
        std::hint::black_box(super::ann::exact_nearest(e, among, r, 10));
    }
    QueryTimes {
        queries: rows.len(),
        p50_ms,
        p99_ms,
        hnsw_p50_ms,
        hnsw_p99_ms,
        exact_mean_ms: started.elapsed().as_secs_f64() * 1e3 / exact_rows.len() as f64,
    }
}

/// What this machine does at all, measured where it is asked (so figures can be read as
/// ratios to it): sequential memory read bandwidth and single-core dot products.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MachineReference {
    /// GB/s summing a 256 MiB array (best of 3).
    pub memory_gb_per_second: f64,
    /// 32-dimension f32 dot products per second on one core (best of 3, over 4 MiB of
    /// vectors that stay in cache).
    pub dots_per_second: f64,
}

/// Measures the [`MachineReference`] (about a second).
pub fn machine_reference() -> MachineReference {
    let words = vec![1u64; 32 << 20];
    let mut best_memory = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let sum: u64 = std::hint::black_box(&words)
            .iter()
            .copied()
            .fold(0, u64::wrapping_add);
        std::hint::black_box(sum);
        best_memory = best_memory.min(started.elapsed().as_secs_f64());
    }
    drop(words);
    const DIM: usize = 32;
    let vectors: Vec<f32> = (0..(1usize << 20))
        .map(|i| (i % 97) as f32 / 97.0)
        .collect();
    let rows = vectors.len() / DIM;
    let mut best_dots = f64::INFINITY;
    const ROUNDS: usize = 20;
    for _ in 0..3 {
        let started = Instant::now();
        let mut acc = 0f32;
        for round in 0..ROUNDS {
            let q = &vectors[(round % rows) * DIM..][..DIM];
            for r in 0..rows {
                acc += super::item2vec::dot(q, &vectors[r * DIM..][..DIM]);
            }
        }
        std::hint::black_box(acc);
        best_dots = best_dots.min(started.elapsed().as_secs_f64());
    }
    MachineReference {
        memory_gb_per_second: (32usize << 20) as f64 * 8.0 / best_memory / 1e9,
        dots_per_second: (ROUNDS * rows) as f64 / best_dots,
    }
}

/// CPU seconds (user + system, every thread) this process has used so far, from
/// `/proc/self/stat` (in clock ticks of 1/100 s); NaN where it cannot be read.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (in parentheses): state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    match (
        fields.get(11).and_then(|f| f.parse::<f64>().ok()),
        fields.get(12).and_then(|f| f.parse::<f64>().ok()),
    ) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine slows every timing).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Writes an evaluation as `ctl ml eval-recs` prints it: counts, the speed figures as
/// ratios to the goals and to this machine's reference, the tuned blend, the method table
/// and the load average when it was written.
pub fn write_report(
    out: &mut impl std::fmt::Write,
    r: &RecsEvaluation,
    machine: &MachineReference,
) -> std::fmt::Result {
    writeln!(
        out,
        "\ncutoff {}, horizon {} days: {} customers ({} bought something again, {} something \
         new to them); {} products sold before the cutoff, {} with a vector, {} of them still \
         sold (indexed)",
        r.cutoff.format("%Y-%m-%d"),
        r.horizon_days,
        r.customers,
        r.repeat_customers,
        r.explore_customers,
        r.catalogue_items,
        r.embedded_items,
        r.indexed_items
    )?;
    let q = &r.similar;
    // Reference: an exact 10-nearest search of every item with a vector, at this run's
    // measured exact-search speed.
    let all_exact_s = q.exact_mean_ms / 1e3 * r.embedded_items as f64;
    writeln!(
        out,
        "  training {:.1} s ({:.1} CPU s over all threads): {:.2}x the 60 s goal, {:.2}x an exact \
         all-items 10-nearest search here ({:.1} s)",
        r.train_seconds,
        r.train_cpu_seconds,
        r.train_seconds / 60.0,
        r.train_seconds / all_exact_s.max(1e-9),
        all_exact_s
    )?;
    for (phase, t) in &r.train_phases.phases {
        writeln!(
            out,
            "    {phase:<36} {:>7.2} CPU s ({:>4.1}% of the training's CPU), {:>7.2} s",
            t.cpu_seconds,
            100.0 * t.cpu_seconds / r.train_cpu_seconds.max(1e-9),
            t.seconds
        )?;
    }
    writeln!(
        out,
        "  similar items ({} queries): cached neighbours p50 {:.4} ms, p99 {:.4} ms: {:.4}x the \
         2 ms goal; an HNSW search (fills the cache) p50 {:.3} ms, p99 {:.3} ms; exact search \
         {:.3} ms = {:.1}x the HNSW p99 (at {:.0}% of this core's measured dot-product rate)",
        q.queries,
        q.p50_ms,
        q.p99_ms,
        q.p99_ms / 2.0,
        q.hnsw_p50_ms,
        q.hnsw_p99_ms,
        q.exact_mean_ms,
        q.exact_mean_ms / q.hnsw_p99_ms.max(1e-9),
        100.0 * r.indexed_items as f64
            / (q.exact_mean_ms / 1e3).max(1e-12)
            / machine.dots_per_second.max(1.0)
    )?;
    writeln!(
        out,
        "  scoring {:.0} profiles/s ({:.0} per CPU second): {:.2}x the 2,000/s goal; one profile \
         costs {:.2} exact searches",
        r.profiles_per_second,
        r.profiles_per_cpu_second,
        r.profiles_per_second / 2000.0,
        1e3 / r.profiles_per_second.max(1e-9) / q.exact_mean_ms.max(1e-9)
    )?;
    let named = |weights: &BlendWeights| {
        super::FEATURES
            .iter()
            .zip(weights)
            .filter(|(_, w)| **w != 0.0)
            .map(|(f, w)| format!("{f} {w}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "  HNSW recall@10 vs exact {:.3}; blend weights {}",
        r.ann_recall_at_10,
        named(&r.weights)
    )?;
    match r.ranker_trial {
        Some(t) => writeln!(
            out,
            "  re-ranker (LightGBM, {}, over the blend's best {} and {} explore candidates): {} \
             — on held-out tuning customers its objective {:.4} vs the blend's {:.4} (gain \
             {:.1} standard errors of {:.4}; kept from {})",
            t.loss.unwrap_or_default().name(),
            super::ranker::RERANK_TOP,
            super::ranker::RERANK_EXPLORE,
            if r.ranker_kept { "kept" } else { "not kept" },
            t.ranker,
            t.blend,
            (t.ranker - t.blend) / t.standard_error.max(1e-12),
            t.standard_error,
            super::ranker::MIN_STANDARD_ERRORS
        )?,
        None => writeln!(out, "  re-ranker: not tried (too few tuning purchases)")?,
    }
    let weak = |e: &Explore| match e.weak_below {
        Some(bar) => format!("when the best candidate pushed out scores below {bar:.3}"),
        None => "for every profile".to_string(),
    };
    if r.explore.slots > 0 {
        writeln!(
            out,
            "  explore slots {} of 10 {}, ranked by {}",
            r.explore.slots,
            weak(&r.explore),
            named(&r.explore.weights)
        )?;
    } else {
        writeln!(
            out,
            "  explore slots: none (on the tuning window no exploring policy was worth its cost)"
        )?;
    }
    match &r.explore_ranker {
        Some((places, margin)) => writeln!(
            out,
            "  learned explore ranker (LightGBM, pointwise): kept — up to {places} places, each \
             when a new item's probability beats {margin} × that of the item it pushes out"
        )?,
        None if r.explore_ranker_trials.is_empty() => writeln!(
            out,
            "  learned explore ranker: not tried (too few tuning purchases)"
        )?,
        None => writeln!(
            out,
            "  learned explore ranker (LightGBM, pointwise): not kept (no policy found more new \
             items at no cost in accuracy on held-out tuning customers)"
        )?,
    }
    for t in &r.explore_ranker_trials {
        writeln!(
            out,
            "    held-out tuning customers: up to {} places at margin {:<3} to {:>5.1}% of \
             profiles: recall {:.3}x, NDCG {:.3}x P-TopFreq, explore recall {:.4}",
            t.max_places,
            t.margin,
            100.0 * t.share_exploring,
            t.recall_ratio,
            t.ndcg_ratio,
            t.explore_recall
        )?;
    }
    for t in &r.explore_trials {
        writeln!(
            out,
            "    tuning window: {} slots {:<52} to {:>5.1}% of profiles: recall {:.3}x, NDCG \
             {:.3}x P-TopFreq, explore recall {:.4}",
            t.explore.slots,
            weak(&t.explore),
            100.0 * t.share_exploring,
            t.recall_ratio,
            t.ndcg_ratio,
            t.explore_recall
        )?;
    }
    writeln!(
        out,
        "  {:<13} {:>9} {:>9} {:>8} {:>8} {:>10} {:>11} {:>9}",
        "method", "recall", "rec/norm", "ndcg", "hit", "repeat rec", "explore rec", "coverage"
    )?;
    for m in &r.methods {
        writeln!(
            out,
            "  {:<13} {:>9.4} {:>9.4} {:>8.4} {:>8.4} {:>10.4} {:>11.4} {:>9.4}",
            m.method,
            m.recall_at_10,
            m.recall_norm_at_10,
            m.ndcg_at_10,
            m.hit_rate_at_10,
            m.repeat_recall_at_10,
            m.explore_recall_at_10,
            m.coverage
        )?;
    }
    if let (Some(b), Some(p), Some(pop)) = (
        r.method("blend"),
        r.method("p_topfreq"),
        r.method("popularity"),
    ) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        writeln!(
            out,
            "  blend / P-TopFreq: recall {:.3}x, NDCG {:.3}x; explore recall blend / popularity {:.2}x",
            ratio(b.recall_at_10, p.recall_at_10),
            ratio(b.ndcg_at_10, p.ndcg_at_10),
            ratio(b.explore_recall_at_10, pop.explore_recall_at_10)
        )?;
    }
    let oracle = |o: &[(usize, f64)]| {
        o.iter()
            .map(|(places, recall)| format!("{places} places {recall:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "  explore oracle (perfect picks among never-bought candidates): {}",
        oracle(&r.explore_oracle)
    )?;
    writeln!(
        out,
        "  explore oracle among the learned explore ranker's pool only: {}",
        oracle(&r.explore_pool_oracle)
    )?;
    writeln!(out, "  load average: {}", load_average())
}

/// Method names, in report order (`linear_blend`: the blend's weighted sum and linear
/// explore slots, without the re-ranker and the learned explore ranker; the same as
/// `blend` when neither was kept).
pub const METHODS: [&str; 6] = [
    "popularity",
    "p_topfreq",
    "item_knn",
    "item2vec_ann",
    "linear_blend",
    "blend",
];

/// Item-kNN on co-purchases: cosine of basket co-occurrence counts, top `k`
/// neighbours per item (items in fewer than `min_count` baskets left out).
fn item_knn(corpus: &Corpus, min_count: u32, k: usize) -> HashMap<ItemId, Vec<(ItemId, f32)>> {
    const MAX_BASKET: usize = 30;
    let mut counts: HashMap<ItemId, u32> = HashMap::new();
    for b in corpus.customers.iter().flat_map(|a| &a.baskets) {
        for &i in &b.items {
            *counts.entry(i).or_default() += 1;
        }
    }
    let mut pairs: HashMap<u64, u32> = HashMap::new();
    for b in corpus.customers.iter().flat_map(|a| &a.baskets) {
        let mut items: Vec<ItemId> = b
            .items
            .iter()
            .copied()
            .filter(|i| counts[i] >= min_count)
            .collect();
        items.sort_unstable();
        items.truncate(MAX_BASKET);
        for (x, &i) in items.iter().enumerate() {
            for &j in &items[x + 1..] {
                *pairs
                    .entry((u64::from(i) << 32) | u64::from(j))
                    .or_default() += 1;
            }
        }
    }
    let mut neighbours: HashMap<ItemId, Vec<(ItemId, f32)>> = HashMap::new();
    for (key, c) in pairs {
        let (i, j) = ((key >> 32) as ItemId, key as ItemId);
        let sim = c as f32 / ((counts[&i] as f32) * (counts[&j] as f32)).sqrt();
        neighbours.entry(i).or_default().push((j, sim));
        neighbours.entry(j).or_default().push((i, sim));
    }
    for list in neighbours.values_mut() {
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        list.truncate(k);
    }
    neighbours
}

fn top_by_score(scores: HashMap<ItemId, f32>, k: usize) -> Vec<ItemId> {
    let mut v: Vec<(ItemId, f32)> = scores.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(k).map(|(i, _)| i).collect()
}

fn fill_with(mut top: Vec<ItemId>, popular: &[ItemId], k: usize) -> Vec<ItemId> {
    for &i in popular {
        if top.len() >= k {
            break;
        }
        if !top.contains(&i) {
            top.push(i);
        }
    }
    top
}

/// P-TopFreq: the customer's items by times bought, then by recency, filled with
/// popular items.
pub fn p_topfreq(history: &Activity, popular: &[ItemId], k: usize) -> Vec<ItemId> {
    let mut bought: HashMap<ItemId, (u32, DateTime<Utc>)> = HashMap::new();
    for b in &history.baskets {
        for &i in &b.items {
            let e = bought.entry(i).or_insert((0, b.at));
            e.0 += 1;
            e.1 = e.1.max(b.at);
        }
    }
    let mut v: Vec<(ItemId, (u32, DateTime<Utc>))> = bought.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    fill_with(v.into_iter().take(k).map(|(i, _)| i).collect(), popular, k)
}

#[derive(Default)]
struct Tally {
    sums: [f64; 4],
    repeat: (f64, usize),
    explore: (f64, usize),
    recommended: HashSet<ItemId>,
}

impl Tally {
    fn add(&mut self, top: &[ItemId], truth: &HashSet<ItemId>, before: &HashSet<ItemId>) {
        let m = ranking_metrics(top, truth);
        for (s, v) in self
            .sums
            .iter_mut()
            .zip([m.recall, m.recall_normalised, m.ndcg, m.hit])
        {
            *s += v;
        }
        let (repeat, explore): (HashSet<ItemId>, HashSet<ItemId>) =
            truth.iter().copied().partition(|i| before.contains(i));
        for (part, acc) in [(&repeat, &mut self.repeat), (&explore, &mut self.explore)] {
            if !part.is_empty() {
                acc.0 += top.iter().filter(|i| part.contains(i)).count() as f64 / part.len() as f64;
                acc.1 += 1;
            }
        }
        self.recommended.extend(top.iter().copied());
    }

    fn report(self, method: &str, customers: usize, catalogue: usize) -> MethodReport {
        let n = customers.max(1) as f64;
        MethodReport {
            method: method.to_string(),
            recall_at_10: self.sums[0] / n,
            recall_norm_at_10: self.sums[1] / n,
            ndcg_at_10: self.sums[2] / n,
            hit_rate_at_10: self.sums[3] / n,
            repeat_recall_at_10: self.repeat.0 / self.repeat.1.max(1) as f64,
            explore_recall_at_10: self.explore.0 / self.explore.1.max(1) as f64,
            coverage: self.recommended.len() as f64 / catalogue.max(1) as f64,
        }
    }
}

/// Profiles scored together in the speed pass (the scorer's batch size).
const SCORING_BATCH: usize = crate::scoring::RECOMMEND_BATCH;

/// Places the explore oracle fills ([`RecsEvaluation::explore_oracle`]).
const ORACLE_PLACES: [usize; 4] = [1, 2, 4, 10];

/// Trains on everything before `cutoff` and scores the horizon (see the module doc).
pub fn evaluate(
    corpus: &Corpus,
    cutoff: DateTime<Utc>,
    horizon_days: i64,
    params: &RecsParams,
) -> Result<RecsEvaluation, MlError> {
    evaluate_keeping(corpus, cutoff, horizon_days, params).map(|(evaluation, _)| evaluation)
}

/// [`evaluate`], keeping the model it trained (with its item2vec state): a training
/// `tuning_horizon_days` after `cutoff` tunes on it instead of fitting the same data
/// again ([`Recommender::train_after`]).
pub fn evaluate_keeping(
    corpus: &Corpus,
    cutoff: DateTime<Utc>,
    horizon_days: i64,
    params: &RecsParams,
) -> Result<(RecsEvaluation, Fitted), MlError> {
    const K: usize = 10;
    let truth = future_purchases(corpus, cutoff, horizon_days);
    if truth.is_empty() {
        return Err(MlError::NotEnoughData(format!(
            "no customer seen before {cutoff} bought in the {horizon_days} days after it"
        )));
    }
    let (started, cpu_started) = (Instant::now(), process_cpu_seconds());
    let (fitted, train_phases) = Recommender::train_after(corpus, cutoff, params, None);
    let model = &fitted.model;
    let train_seconds = started.elapsed().as_secs_f64();
    let train_cpu_seconds = process_cpu_seconds() - cpu_started;
    let train = corpus.before(cutoff);
    let knn = item_knn(&train, params.item2vec.min_count, 20);
    let catalogue_items = model
        .stats
        .last_seen
        .iter()
        .filter(|&&t| t > i64::MIN)
        .count();
    let mut tallies: Vec<Tally> = METHODS.iter().map(|_| Tally::default()).collect();
    let mut oracle = [0.0f64; ORACLE_PLACES.len()];
    let mut pool_oracle = [0.0f64; ORACLE_PLACES.len()];
    let (mut repeat_customers, mut explore_customers) = (0, 0);
    // Scoring speed: one pass of the blend alone over every customer, in batches as
    // the scorer sends them.
    let (started, cpu_started) = (Instant::now(), process_cpu_seconds());
    for batch in truth.chunks(SCORING_BATCH) {
        let activities: Vec<&Activity> = batch.iter().map(|(c, _)| &train.customers[*c]).collect();
        std::hint::black_box(model.recommend_many(&activities, cutoff, K));
    }
    let blend_seconds = started.elapsed().as_secs_f64();
    let blend_cpu_seconds = process_cpu_seconds() - cpu_started;
    for (c, bought) in &truth {
        let history = &train.customers[*c];
        let before: HashSet<ItemId> = history
            .baskets
            .iter()
            .flat_map(|b| b.items.iter().copied())
            .collect();
        repeat_customers += usize::from(bought.iter().any(|i| before.contains(i)));
        explore_customers += usize::from(bought.iter().any(|i| !before.contains(i)));
        let popular: Vec<ItemId> = model.popular.iter().take(K).copied().collect();
        let mut knn_scores: HashMap<ItemId, f32> = HashMap::new();
        for i in &before {
            for &(j, sim) in knn.get(i).map(Vec::as_slice).unwrap_or_default() {
                *knn_scores.entry(j).or_default() += sim;
            }
        }
        let mut ann_scores: HashMap<ItemId, f32> = HashMap::new();
        let anchors: HashSet<ItemId> = history
            .baskets
            .iter()
            .rev()
            .take(params.anchor_baskets)
            .flat_map(|b| b.items.iter().copied())
            .collect();
        for &i in &anchors {
            for (j, sim) in model.similar(i, params.neighbours) {
                *ann_scores.entry(j).or_default() += sim;
            }
        }
        let blend: Vec<ItemId> = model
            .recommend(history, cutoff, K)
            .into_iter()
            .map(|r| r.item)
            .collect();
        let candidates = model.candidates(history, cutoff);
        let new: Vec<ItemId> = bought
            .iter()
            .copied()
            .filter(|i| !before.contains(i))
            .collect();
        if !new.is_empty() {
            let reachable = candidates
                .iter()
                .filter(|c| c.times_bought == 0 && new.contains(&c.item))
                .count();
            let main = model.main_rankings(&[candidates.as_slice()], K).remove(0);
            let in_pool = model
                .explore_scored(&candidates, &main, K, K)
                .into_iter()
                .filter(|&i| new.contains(&candidates[i].item))
                .count();
            for (sums, reached) in [(&mut oracle, reachable), (&mut pool_oracle, in_pool)] {
                for (sum, places) in sums.iter_mut().zip(ORACLE_PLACES) {
                    *sum += reached.min(places) as f64 / new.len() as f64;
                }
            }
        }
        let linear: Vec<ItemId> = select(&candidates, &model.weights, &model.explore, K)
            .into_iter()
            .map(|(i, _)| candidates[i].item)
            .collect();
        let lists = [
            popular.clone(),
            p_topfreq(history, &model.popular, K),
            fill_with(top_by_score(knn_scores, K), &popular, K),
            fill_with(top_by_score(ann_scores, K), &popular, K),
            linear,
            blend,
        ];
        for (tally, top) in tallies.iter_mut().zip(&lists) {
            tally.add(top, bought, &before);
        }
    }
    let index = model
        .index()
        .ok_or_else(|| MlError::Invalid("the recommender has no index".into()))?;
    let per_customer = |sums: [f64; ORACLE_PLACES.len()]| {
        ORACLE_PLACES
            .into_iter()
            .zip(sums)
            .map(|(places, sum)| (places, sum / explore_customers.max(1) as f64))
            .collect()
    };
    let evaluation = RecsEvaluation {
        cutoff,
        horizon_days,
        customers: truth.len(),
        repeat_customers,
        explore_customers,
        catalogue_items,
        embedded_items: model.embeddings.len(),
        indexed_items: index.rows().len(),
        ann_recall_at_10: super::ann::recall_at_k(
            &model.embeddings,
            index,
            K,
            1000,
            params.item2vec.seed,
        ),
        train_seconds,
        train_cpu_seconds,
        train_phases,
        profiles_per_second: truth.len() as f64 / blend_seconds.max(1e-9),
        profiles_per_cpu_second: truth.len() as f64 / blend_cpu_seconds.max(1e-9),
        similar: time_similar_queries(model, 2_000, params.item2vec.seed),
        weights: model.weights,
        explore: model.explore,
        explore_trials: model.explore_trials.clone(),
        explore_oracle: per_customer(oracle),
        explore_pool_oracle: per_customer(pool_oracle),
        explore_ranker: model
            .explore_ranker
            .as_ref()
            .map(|e| (e.max_places, e.margin)),
        explore_ranker_trials: model.explore_ranker_trials.clone(),
        ranker_kept: model.ranker.is_some(),
        ranker_trial: model.ranker_trial,
        methods: tallies
            .into_iter()
            .zip(METHODS)
            .map(|(t, m)| t.report(m, truth.len(), catalogue_items))
            .collect(),
    };
    Ok((evaluation, fitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_top_list() {
        let truth: HashSet<ItemId> = [1, 2, 3, 4].into();
        let m = ranking_metrics(&[1, 9, 2], &truth);
        assert!((m.recall - 0.5).abs() < 1e-12);
        assert!((m.recall_normalised - 2.0 / 3.0).abs() < 1e-12);
        let ideal = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((m.ndcg - (1.0 + 0.5) / ideal).abs() < 1e-12);
        assert_eq!(m.hit, 1.0);
        let miss = ranking_metrics(&[7, 8], &truth);
        assert_eq!((miss.recall, miss.ndcg, miss.hit), (0.0, 0.0, 0.0));
        let perfect = ranking_metrics(&[4, 3, 2, 1], &truth);
        assert!((perfect.ndcg - 1.0).abs() < 1e-12 && perfect.recall == 1.0);
    }

    const CSV: &str = "customer_id,order_id,sku,name,category,date,quantity,price
c1,o1,A,Kurta,Kurtas,2026-01-01,1,10
c1,o1,B,Dupatta,Dupattas,2026-01-01,2,5
c1,o2,A,Kurta,Kurtas,2026-02-01,1,10
c2,o3,B,,,2026-01-05,1,5
c2,o4,C,,Kurtas,not a date,1,5
c2,o5,C,,Kurtas,2026-01-06,-1,5
,o6,C,,Kurtas,2026-01-06,1,5
";

    #[test]
    fn reads_baskets_and_reports_bad_rows() {
        let t = read_transactions(CSV.as_bytes()).unwrap();
        assert_eq!(t.rows, 7);
        assert_eq!(t.skipped, 3);
        assert_eq!(
            t.bad_rows.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [6, 7, 8]
        );
        let c = &t.corpus;
        assert_eq!(c.customers.len(), 2);
        assert_eq!(c.customers[0].baskets.len(), 2);
        assert_eq!(c.customers[0].baskets[0].items.len(), 2);
        let b = c.catalogue.get("B").unwrap();
        assert_eq!(c.catalogue.names[b as usize], "Dupatta");
        assert_eq!(c.catalogue.category_of(b), Some("Dupattas"));
        let missing = read_transactions("customer,sku,date\n".as_bytes()).unwrap_err();
        assert!(missing.to_string().contains("customer_id"), "{missing}");
    }

    #[test]
    fn p_topfreq_ranks_by_count_then_recency_and_fills_with_popular() {
        let t = read_transactions(CSV.as_bytes()).unwrap();
        let c = &t.corpus;
        let (a, b) = (c.catalogue.get("A").unwrap(), c.catalogue.get("B").unwrap());
        let top = p_topfreq(&c.customers[0], &[b, 99, 98], 3);
        assert_eq!(top, [a, b, 99]);
    }

    #[test]
    fn the_process_cpu_time_is_read_and_never_goes_back() {
        let before = process_cpu_seconds();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = process_cpu_seconds();
        assert!(before.is_finite() && before >= 0.0, "{before}");
        assert!(after >= before, "{before} then {after}");
        assert_eq!(load_average().split_whitespace().count(), 3);
    }
}
