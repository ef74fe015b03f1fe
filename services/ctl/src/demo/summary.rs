//! The ground truth of a demo run (which person did each accepted delivery, every order's
//! final state) and the summary printed once the pipeline has drained: what was sent and
//! stored, the profiles, merges and review items the pipeline made, and how well the
//! profiles match the truth (pairwise precision and recall, `identity::quality`).

use std::collections::HashMap;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One accepted delivery and who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruthEvent {
    /// `customer_raw_event.source`.
    pub source: &'static str,
    /// `customer_raw_event.source_event_id`.
    pub key: String,
    /// The person (ground truth).
    pub person: u32,
}

/// An order's final state as its source reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthOrder {
    /// `orders.source`.
    pub source: &'static str,
    /// `orders.external_order_id`.
    pub order_id: String,
    /// Who placed it.
    pub person: u32,
    /// Its total.
    pub total: rust_decimal::Decimal,
    /// Whether it ended cancelled.
    pub cancelled: bool,
    /// Sum of its refunds.
    pub refunded: rust_decimal::Decimal,
}

/// Everything the run knows to be true, written by `ctl demo --truth FILE`.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    /// Brand seed.
    pub seed: u64,
    /// People simulated.
    pub customers: usize,
    /// Every accepted delivery, CSV rows included.
    pub events: Vec<TruthEvent>,
    /// Every order sent.
    pub orders: Vec<TruthOrder>,
}

/// Pairwise quality of the profiles against the truth.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Truth events found in Postgres and scored.
    pub events: u64,
    /// Truth events never stored (should be 0).
    pub not_stored: u64,
    /// Stored events the merger attached to no profile (scored as singletons).
    pub unattributed: u64,
    /// Distinct profiles over the scored events.
    pub profiles: u64,
    /// Distinct people over the scored events.
    pub people: u64,
    /// Pairwise precision.
    pub precision: f64,
    /// Pairwise recall.
    pub recall: f64,
    /// Pairwise F1.
    pub f1: f64,
}

/// Where each truth event ended up: its live profile (merged-away ids followed to the
/// survivor), by `(source, key)`.
pub async fn profiles_of(db: &PgPool) -> anyhow::Result<HashMap<(String, String), Option<Uuid>>> {
    let rows: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT r.source, r.source_event_id, n.profile_id FROM customer_raw_event r \
         LEFT JOIN normalized_event n ON n.event_id = r.id",
    )
    .fetch_all(db)
    .await
    .context("reading where events landed")?;
    let tombstones: HashMap<Uuid, Uuid> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT id, merged_into FROM customer_profile WHERE merged_into IS NOT NULL",
    )
    .fetch_all(db)
    .await
    .context("reading merged-away profiles")?
    .into_iter()
    .collect();
    let live = |mut id: Uuid| {
        for _ in 0..64 {
            match tombstones.get(&id) {
                Some(next) => id = *next,
                None => break,
            }
        }
        id
    };
    Ok(rows
        .into_iter()
        .map(|(s, k, p)| ((s, k), p.map(live)))
        .collect())
}

/// Scores the live profiles against the truth.
pub async fn quality(db: &PgPool, truth: &[TruthEvent]) -> anyhow::Result<Quality> {
    let landed = profiles_of(db).await?;
    let mut not_stored = 0;
    let mut unattributed = 0;
    let mut pairs = Vec::with_capacity(truth.len());
    for (i, t) in truth.iter().enumerate() {
        match landed.get(&(t.source.to_owned(), t.key.clone())) {
            None => not_stored += 1,
            Some(Some(profile)) => pairs.push((profile.as_u128(), t.person)),
            Some(None) => {
                // An event on no profile joins nobody: score it alone (a key no profile
                // id can take).
                unattributed += 1;
                pairs.push((u128::MAX - i as u128, t.person));
            }
        }
    }
    let q = identity::quality::pairwise(pairs);
    Ok(Quality {
        events: q.events,
        not_stored,
        unattributed,
        profiles: q.profiles,
        people: q.people,
        precision: q.precision(),
        recall: q.recall(),
        f1: q.f1(),
    })
}

/// The numbers the demo prints at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Events of the scenario (activities as their touchpoints record them).
    pub events: usize,
    /// Deliveries rendered (webhooks, tracking messages, bills, CSV rows).
    pub deliveries: usize,
    /// What sending did.
    pub accepted: u64,
    /// Accepted deliveries ingest already had.
    pub duplicates: u64,
    /// Deliveries refused.
    pub rejected: u64,
    /// Requests sent again after a failure in transit, a 5xx or a 429.
    pub retries: u64,
    /// Accepted deliveries per source.
    pub by_source: std::collections::BTreeMap<&'static str, u64>,
    /// Events not sent, by reason.
    pub skipped: std::collections::BTreeMap<&'static str, u64>,
    /// Raw events in Postgres.
    pub raw_events: i64,
    /// Normalised events in Postgres.
    pub normalized_events: i64,
    /// Dead letters of the event topics.
    pub dead_letters: u64,
    /// Live profiles.
    pub profiles: i64,
    /// Merges applied (not undone).
    pub merges: i64,
    /// Review items waiting for an analyst.
    pub review_items: i64,
    /// Identifiers learned to be shared.
    pub suspect_identifiers: i64,
    /// Orders and their revenue net of refunds, cancelled orders excluded.
    pub orders: i64,
    /// Sum of order totals, refunds not deducted.
    pub revenue: rust_decimal::Decimal,
    /// Re-drives from Postgres during the wait.
    pub republished: u32,
    /// Seconds spent sending.
    pub send_secs: f64,
    /// Seconds spent waiting for the pipeline to drain.
    pub drain_secs: f64,
    /// Identity quality against the truth.
    pub quality: Quality,
    /// Models trained: `task version status metric`.
    pub models: Vec<String>,
    /// Live profiles with a prediction per task.
    pub predictions: std::collections::BTreeMap<String, i64>,
}

/// The pipeline's own counts.
pub async fn counts(
    db: &PgPool,
) -> anyhow::Result<(i64, i64, i64, i64, i64, rust_decimal::Decimal)> {
    let row: (i64, i64, i64, i64, i64, Option<rust_decimal::Decimal>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_profile WHERE merged_into IS NULL), \
                (SELECT count(*) FROM merge_history WHERE undone_at IS NULL), \
                (SELECT count(*) FROM manual_merge_queue WHERE status = 'pending'), \
                (SELECT count(*) FROM profile_identifier WHERE suspect), \
                (SELECT count(*) FROM orders WHERE status <> 'cancelled'), \
                (SELECT sum(total - refunded_total) FROM orders WHERE status <> 'cancelled')",
    )
    .fetch_one(db)
    .await
    .context("counting profiles, merges and orders")?;
    Ok((row.0, row.1, row.2, row.3, row.4, row.5.unwrap_or_default()))
}

/// Live profiles with a prediction, per task.
pub async fn predictions(db: &PgPool) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT pr.task, count(*) FROM predictions pr \
         JOIN customer_profile p ON p.id = pr.profile_id AND p.merged_into IS NULL \
         GROUP BY pr.task ORDER BY pr.task",
    )
    .fetch_all(db)
    .await
    .context("counting predictions")?;
    Ok(rows.into_iter().collect())
}

impl Summary {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "\nDemo brand loaded.");
        let _ = writeln!(
            s,
            "  sent        {} deliveries for {} events: {} accepted ({} already stored), {} refused, {} requests retried",
            self.deliveries,
            self.events,
            self.accepted,
            self.duplicates,
            self.rejected,
            self.retries
        );
        let by: Vec<String> = self
            .by_source
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "  by source   {}", by.join(", "));
        for (why, n) in &self.skipped {
            let _ = writeln!(s, "  not sent    {n} × {why}");
        }
        let _ = writeln!(
            s,
            "  stored      {} raw events, {} normalised, {} dead letters ({:.0} s sending, {:.0} s draining{})",
            self.raw_events,
            self.normalized_events,
            self.dead_letters,
            self.send_secs,
            self.drain_secs,
            if self.republished > 0 {
                format!(", {} re-drives from Postgres", self.republished)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "  profiles    {} live, {} merges, {} review items waiting, {} suspect identifiers",
            self.profiles, self.merges, self.review_items, self.suspect_identifiers
        );
        let _ = writeln!(
            s,
            "  orders      {} (revenue net of refunds {})",
            self.orders, self.revenue
        );
        let q = &self.quality;
        let _ = writeln!(
            s,
            "  identity    precision {:.4}, recall {:.4}, F1 {:.4} over {} events of {} people in {} profiles{}",
            q.precision,
            q.recall,
            q.f1,
            q.events,
            q.people,
            q.profiles,
            if q.unattributed + q.not_stored > 0 {
                format!(
                    " ({} events on no profile, {} not stored)",
                    q.unattributed, q.not_stored
                )
            } else {
                String::new()
            }
        );
        for m in &self.models {
            let _ = writeln!(s, "  model       {m}");
        }
        if !self.predictions.is_empty() {
            let p: Vec<String> = self
                .predictions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "  predictions {}", p.join(", "));
        }
        s
    }
}
