//! Analysts' decisions from `profiles.merge_requests`: approve or reject a review item,
//! merge profiles by hand, undo a merge, erase a person.
//!
//! Decisions are stored as constraints over identifiers (`must_link`: one person;
//! `cannot_link`: different people) and then applied by replaying the affected region,
//! exactly as late events are. So a decision holds through every later replay and
//! `ctl identity rebuild`, and an unmerge restores the absorbed profiles with their
//! original ids (ids derive from the events that created them). Every request is
//! idempotent: a decided review item, an undone merge or an erased profile is left as is.

use std::collections::{BTreeMap, BTreeSet};

use domain::{Identifier, MergeRequest, ProfileChangeKind};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::erasure::{Erasure, erase_unlinked};
use super::locks::{begin_shared, identifier_lock, lock_all, profile_lock};
use super::replay::History;
use super::store::{self, split};
use super::{MAX_ATTEMPTS, ResolveError, ResolveReport, Resolver};
use crate::engine::{Constraint, ConstraintRule};
use crate::model::{ProfileId, suppression_hash};
use crate::rules::MergeRule;

/// What a request did.
#[derive(Debug, Clone, Default)]
pub struct RequestOutcome {
    /// Profile changes (for cache refresh and metrics).
    pub report: ResolveReport,
    /// What to record as the decision's outcome (`manual_merge_queue.outcome`).
    pub detail: serde_json::Value,
}

impl Resolver {
    /// Applies one analyst decision. `request_id` is the envelope id of the request.
    pub async fn apply_request(
        &self,
        request_id: Uuid,
        request: &MergeRequest,
    ) -> Result<RequestOutcome, ResolveError> {
        let outcome = match request {
            MergeRequest::ApproveReview { review_id, actor } => {
                self.approve(*review_id, actor).await?
            }
            MergeRequest::RejectReview { review_id, actor } => {
                self.reject(*review_id, actor).await?
            }
            MergeRequest::ManualMerge { profile_ids, actor } => {
                let live = self.live_profiles(profile_ids).await?;
                self.merge_profiles(&live, MergeRule::Manual, actor, "manual_merge", request_id)
                    .await?
            }
            MergeRequest::Unmerge { merge_id, actor } => self.unmerge(*merge_id, actor).await?,
            MergeRequest::Erase { profile_id, actor } => self.erase(*profile_id, actor).await?,
        };
        self.after_commit(&outcome.report).await;
        // The api-gateway's outbox (`api_merge_requests`) keeps undone requests for
        // `ctl republish`; a request without a row there (sent by a tool) is fine too.
        sqlx::query(
            "UPDATE api_merge_requests SET done_at = now() WHERE id = $1 AND done_at IS NULL",
        )
        .bind(request_id)
        .execute(&self.db)
        .await?;
        Ok(outcome)
    }

    /// The distinct live profiles `ids` resolve to, oldest id order kept.
    async fn live_profiles(&self, ids: &[Uuid]) -> Result<Vec<ProfileId>, sqlx::Error> {
        let mut live = Vec::new();
        for id in ids {
            if let Some(p) = storage::customer360::resolve(&self.db, *id).await?
                && !live.contains(&p)
            {
                live.push(p);
            }
        }
        Ok(live)
    }

    async fn approve(&self, review_id: Uuid, actor: &str) -> Result<RequestOutcome, ResolveError> {
        let row: Option<(String, Vec<Uuid>)> = sqlx::query_as(
            "SELECT status, candidate_profile_ids FROM manual_merge_queue WHERE id = $1",
        )
        .bind(review_id)
        .fetch_optional(&self.db)
        .await?;
        let Some((status, candidates)) = row else {
            return Ok(detail(json!({"error": "unknown review item"})));
        };
        if status != "pending" {
            return Ok(detail(
                json!({"note": format!("review item already {status}")}),
            ));
        }
        let live = self.live_profiles(&candidates).await?;
        let outcome = self
            .merge_profiles(
                &live,
                MergeRule::ReviewApproved,
                actor,
                "review_approved",
                review_id,
            )
            .await?;
        sqlx::query(
            "UPDATE manual_merge_queue SET status = 'applied', decided_at = now(), decided_by = $2, outcome = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(review_id)
        .bind(actor)
        .bind(sqlx::types::Json(&outcome.detail))
        .execute(&self.db)
        .await?;
        Ok(outcome)
    }

    async fn reject(&self, review_id: Uuid, actor: &str) -> Result<RequestOutcome, ResolveError> {
        let mut tx = begin_shared(&self.db).await?;
        let row: Option<(String, Vec<Uuid>)> = sqlx::query_as(
            "SELECT status, candidate_profile_ids FROM manual_merge_queue WHERE id = $1 FOR UPDATE",
        )
        .bind(review_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((status, candidates)) = row else {
            return Ok(detail(json!({"error": "unknown review item"})));
        };
        if status != "pending" {
            return Ok(detail(
                json!({"note": format!("review item already {status}")}),
            ));
        }
        let mut live = Vec::new();
        for c in &candidates {
            if let Some(p) = storage::customer360::resolve(&self.db, *c).await?
                && !live.contains(&p)
            {
                live.push(p);
            }
        }
        let holdings = holdings(&mut tx, &live).await?;
        // "Different people": each candidate apart from the first, so the same evidence
        // never raises this item again.
        let mut constraints = Vec::new();
        if let Some(first) = live.first().and_then(|p| holdings.get(p)) {
            for other in live.iter().skip(1).filter_map(|p| holdings.get(p)) {
                let c = Constraint {
                    id: Uuid::now_v7(),
                    rule: ConstraintRule::CannotLink,
                    left: first.clone(),
                    right: other.clone(),
                };
                store::insert_constraint(&mut tx, &c, "review_rejected", Some(review_id), actor)
                    .await?;
                constraints.push(c.id);
            }
        }
        let outcome = json!({"separated_profiles": live, "constraints": constraints});
        sqlx::query(
            "UPDATE manual_merge_queue SET status = 'rejected', decided_at = now(), decided_by = $2, outcome = $3 \
             WHERE id = $1",
        )
        .bind(review_id)
        .bind(actor)
        .bind(sqlx::types::Json(&outcome))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(detail(outcome))
    }

    /// Merges live profiles by an analyst's decision: must-link constraints from the
    /// oldest to each other, then a region replay.
    async fn merge_profiles(
        &self,
        live: &[ProfileId],
        rule: MergeRule,
        actor: &str,
        origin: &str,
        origin_id: Uuid,
    ) -> Result<RequestOutcome, ResolveError> {
        if live.len() < 2 {
            return Ok(detail(
                json!({"note": "already one profile", "profile_id": live.first()}),
            ));
        }
        let history = History {
            rule,
            actor: actor.to_owned(),
        };
        let mut extra = BTreeSet::new();
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = begin_shared(&self.db).await?;
            let before = holdings(&mut tx, live).await?;
            let seed: Vec<Identifier> = before.values().flatten().cloned().collect();
            let mut keys: BTreeSet<i64> = live.iter().map(|p| profile_lock(*p)).collect();
            keys.extend(seed.iter().map(identifier_lock));
            keys.extend(extra.iter().copied());
            lock_all(&mut tx, &keys).await?;
            let now = holdings(&mut tx, live).await?;
            if now != before || now.len() != live.len() {
                tx.rollback().await?;
                if now.len() != live.len() {
                    // One was merged or erased meanwhile: decide again on what is live.
                    let relive = self.live_profiles(live).await?;
                    return Box::pin(self.merge_profiles(&relive, rule, actor, origin, origin_id))
                        .await;
                }
                extra = keys;
                continue;
            }
            let first = &now[&live[0]];
            for p in &live[1..] {
                let c = Constraint {
                    id: Uuid::now_v7(),
                    rule: ConstraintRule::MustLink,
                    left: first.clone(),
                    right: now[p].clone(),
                };
                store::insert_constraint(&mut tx, &c, origin, Some(origin_id), actor).await?;
            }
            let Some(region) = self.lock_region(&mut tx, &seed, &[], &mut keys).await? else {
                tx.rollback().await?;
                extra = keys;
                continue;
            };
            let report = self
                .rewrite_region(&mut tx, &[], region, Default::default(), &[], &history)
                .await?;
            tx.commit().await?;
            let survivor = report.changed.iter().find(|p| live.contains(p)).copied();
            let detail =
                json!({"survivor": survivor, "merged": live, "merge_ids": report.merge_ids});
            return Ok(RequestOutcome { report, detail });
        }
        Err(ResolveError::Contended(origin_id))
    }

    async fn unmerge(&self, merge_id: Uuid, actor: &str) -> Result<RequestOutcome, ResolveError> {
        let row: Option<(
            Uuid,
            sqlx::types::Json<serde_json::Value>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = sqlx::query_as(
            "SELECT survivor_id, snapshot, undone_at FROM merge_history WHERE id = $1",
        )
        .bind(merge_id)
        .fetch_optional(&self.db)
        .await?;
        let Some((survivor, snapshot, undone)) = row else {
            return Ok(detail(json!({"error": "unknown merge"})));
        };
        if undone.is_some() {
            return Ok(detail(json!({"note": "merge already undone"})));
        }
        let ids_of = |v: &serde_json::Value| -> BTreeSet<Identifier> {
            serde_json::from_value(v.clone()).unwrap_or_default()
        };
        let kept = ids_of(&snapshot.0["survivor_identifiers"]);
        let absorbed: Vec<BTreeSet<Identifier>> = snapshot.0["absorbed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| ids_of(&a["identifiers"]))
            .filter(|s| !s.is_empty())
            .collect();
        let live = storage::customer360::resolve(&self.db, survivor).await?;
        let history = History {
            rule: MergeRule::Replay,
            actor: actor.to_owned(),
        };
        let mut extra = BTreeSet::new();
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = begin_shared(&self.db).await?;
            let mut seed: BTreeSet<Identifier> = kept
                .iter()
                .chain(absorbed.iter().flatten())
                .cloned()
                .collect();
            let current = holdings(&mut tx, &live.into_iter().collect::<Vec<_>>()).await?;
            seed.extend(current.values().flatten().cloned());
            let seed: Vec<Identifier> = seed.into_iter().collect();
            let mut keys: BTreeSet<i64> = seed.iter().map(identifier_lock).collect();
            keys.extend(live.map(profile_lock));
            keys.extend(extra.iter().copied());
            lock_all(&mut tx, &keys).await?;
            // Drop the must-links that would re-join them; then keep them apart.
            for c in store::constraints_touching(&mut tx, &seed).await? {
                let joins = |a: &BTreeSet<Identifier>, b: &BTreeSet<Identifier>| {
                    !a.is_disjoint(&kept) && absorbed.iter().any(|x| !b.is_disjoint(x))
                };
                if c.rule == ConstraintRule::MustLink
                    && (joins(&c.left, &c.right) || joins(&c.right, &c.left))
                {
                    sqlx::query("DELETE FROM identity_constraint WHERE id = $1")
                        .bind(c.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if !kept.is_empty() {
                for side in &absorbed {
                    let c = Constraint {
                        id: Uuid::now_v7(),
                        rule: ConstraintRule::CannotLink,
                        left: kept.clone(),
                        right: side.clone(),
                    };
                    store::insert_constraint(&mut tx, &c, "unmerge", Some(merge_id), actor).await?;
                }
            }
            let Some(region) = self.lock_region(&mut tx, &seed, &[], &mut keys).await? else {
                tx.rollback().await?;
                extra = keys;
                continue;
            };
            let report = self
                .rewrite_region(&mut tx, &[], region, Default::default(), &[], &history)
                .await?;
            sqlx::query("UPDATE merge_history SET undone_at = now(), undone_by = $2 WHERE id = $1")
                .bind(merge_id)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let detail = json!({"merge_id": merge_id, "profiles": report.changed});
            return Ok(RequestOutcome { report, detail });
        }
        Err(ResolveError::Contended(merge_id))
    }

    /// GDPR erasure: deletes the person's events, raw events, orders, identifiers,
    /// predictions, features and history, and unlinked raw events carrying their
    /// identifiers; suppresses the identifiers they held so later events carrying them
    /// are dropped; then removes their copies from Redis (see `erasure.rs`). Erasing an
    /// erased profile finishes a removal from Redis that had failed.
    async fn erase(&self, profile: Uuid, actor: &str) -> Result<RequestOutcome, ResolveError> {
        let Some(live) = storage::customer360::resolve(&self.db, profile).await? else {
            if let Some(erasure) = Erasure::pending(&self.db, profile).await? {
                let scrubbed = self.scrub(&erasure).await?;
                return Ok(detail(json!({
                    "note": "already erased; its copies in Redis are removed now",
                    "stream_entries": scrubbed.entries,
                    "dead_letters": scrubbed.dead_letters,
                })));
            }
            return Ok(detail(json!({"note": "no such profile (already erased?)"})));
        };
        let mut extra = BTreeSet::new();
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = begin_shared(&self.db).await?;
            let before = holdings(&mut tx, &[live]).await?;
            let held: BTreeSet<Identifier> = before.values().flatten().cloned().collect();
            let mut keys: BTreeSet<i64> = held.iter().map(identifier_lock).collect();
            keys.insert(profile_lock(live));
            keys.extend(extra.iter().copied());
            lock_all(&mut tx, &keys).await?;
            let now = holdings(&mut tx, &[live]).await?;
            if now != before {
                tx.rollback().await?;
                if now.is_empty() {
                    return Box::pin(self.erase(profile, actor)).await;
                }
                extra = keys;
                continue;
            }
            #[cfg(test)]
            self.paused().await;
            let (counts, erasure) = erase_in(&mut tx, live, &held).await?;
            tx.commit().await?;
            tracing::info!(profile_id = %live, actor, "profile erased");
            let scrubbed = self.scrub(&erasure).await?;
            let mut report = ResolveReport::default();
            report.removed.extend(counts.profiles.iter().copied());
            return Ok(RequestOutcome {
                report,
                detail: json!({
                    "erased_profile_id": live,
                    "profiles": counts.profiles.len(),
                    "events": counts.events,
                    "orders": counts.orders,
                    "unlinked_events": counts.unlinked,
                    "suppressed_identifiers": counts.suppressed,
                    "stream_entries": scrubbed.entries,
                    "dead_letters": scrubbed.dead_letters,
                }),
            });
        }
        Err(ResolveError::Contended(profile))
    }
}

fn detail(v: serde_json::Value) -> RequestOutcome {
    RequestOutcome {
        report: ResolveReport::default(),
        detail: v,
    }
}

/// What each live profile holds (profiles that are not live are absent).
async fn holdings(
    conn: &mut PgConnection,
    profiles: &[ProfileId],
) -> Result<BTreeMap<ProfileId, BTreeSet<Identifier>>, sqlx::Error> {
    let live: Vec<ProfileId> = sqlx::query_scalar(
        "SELECT id FROM customer_profile WHERE id = ANY($1) AND merged_into IS NULL",
    )
    .bind(profiles)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: BTreeMap<ProfileId, BTreeSet<Identifier>> =
        live.iter().map(|p| (*p, BTreeSet::new())).collect();
    for p in store::profiles(conn, &live).await? {
        out.insert(p.id, p.node.identifiers);
    }
    Ok(out)
}

struct Erased {
    profiles: Vec<Uuid>,
    events: u64,
    orders: u64,
    unlinked: usize,
    suppressed: usize,
}

async fn erase_in(
    conn: &mut PgConnection,
    live: Uuid,
    held: &BTreeSet<Identifier>,
) -> Result<(Erased, Erasure), sqlx::Error> {
    let chain: Vec<Uuid> = sqlx::query_scalar(
        "WITH RECURSIVE chain (id, depth) AS ( \
             SELECT $1::uuid, 0 UNION ALL \
             SELECT p.id, c.depth + 1 FROM customer_profile p JOIN chain c ON p.merged_into = c.id WHERE c.depth < 64) \
         SELECT DISTINCT id FROM chain",
    )
    .bind(live)
    .fetch_all(&mut *conn)
    .await?;
    // Suppress what the person held, except order references and shared (suspect)
    // identifiers, which are not theirs alone.
    let personal: Vec<&Identifier> = held.iter().filter(|i| !i.is_order_reference()).collect();
    let (kinds, values) = split(personal.iter().copied());
    let suspect: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.kind, t.value FROM identity_identifier t \
         JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value) WHERE t.suspect",
    )
    .bind(&kinds)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    let suppressed: Vec<&Identifier> = personal
        .into_iter()
        .filter(|i| {
            !suspect
                .iter()
                .any(|(k, v)| k == i.kind.as_str() && *v == i.value)
        })
        .collect();
    let hashes: Vec<Vec<u8>> = suppressed.iter().map(|i| suppression_hash(i)).collect();
    let hash_kinds: Vec<&str> = suppressed.iter().map(|i| i.kind.as_str()).collect();
    sqlx::query(
        "INSERT INTO suppression (identifier_sha256, kind, erased_profile_id) \
         SELECT h, k, $3 FROM unnest($1::bytea[], $2::text[]) AS u(h, k) ON CONFLICT DO NOTHING",
    )
    .bind(&hashes)
    .bind(&hash_kinds)
    .bind(live)
    .execute(&mut *conn)
    .await?;

    let events: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM normalized_event WHERE profile_id = ANY($1)")
            .bind(&chain)
            .fetch_all(&mut *conn)
            .await?;
    // Other people's events that carried the erased identifiers keep no copy of them.
    let (all_kinds, all_values) = split(held.iter());
    sqlx::query(
        "UPDATE normalized_event e SET identifiers = COALESCE(( \
             SELECT jsonb_agg(x) FROM jsonb_array_elements(e.identifiers) x \
             WHERE NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS u(kind, value) \
                               WHERE u.kind = x->>'kind' AND u.value = x->>'value')), '[]'::jsonb) \
         WHERE e.event_id IN (SELECT r.event_id FROM identity_refused_link r \
                              JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value)) \
           AND NOT (e.event_id = ANY($3))",
    )
    .bind(&all_kinds)
    .bind(&all_values)
    .bind(&events)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM identity_refused_link r USING unnest($1::text[], $2::text[]) AS u(kind, value) \
         WHERE r.kind = u.kind AND r.value = u.value",
    )
    .bind(&all_kinds)
    .bind(&all_values)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM identity_refused_link WHERE event_id = ANY($1)")
        .bind(&events)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM identity_identifier t USING unnest($1::text[], $2::text[]) AS u(kind, value) \
         WHERE t.kind = u.kind AND t.value = u.value",
    )
    .bind(&all_kinds)
    .bind(&all_values)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM identity_constraint WHERE id IN (SELECT m.constraint_id FROM identity_constraint_member m \
             JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value))",
    )
    .bind(&all_kinds)
    .bind(&all_values)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM order_refunds r USING orders o WHERE o.profile_id = ANY($1) AND r.source = o.source AND r.external_order_id = o.external_order_id")
        .bind(&chain)
        .execute(&mut *conn)
        .await?;
    let orders = sqlx::query("DELETE FROM orders WHERE profile_id = ANY($1)")
        .bind(&chain)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let deleted_events = sqlx::query("DELETE FROM normalized_event WHERE event_id = ANY($1)")
        .bind(&events)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM customer_raw_event WHERE id = ANY($1)")
        .bind(&events)
        .execute(&mut *conn)
        .await?;
    for table in [
        "profile_identifier",
        "predictions",
        "features",
        "identity_prediction_outbox",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE profile_id = ANY($1)"))
            .bind(&chain)
            .execute(&mut *conn)
            .await?;
    }
    // History and review items hold snapshots and evidence of the person.
    sqlx::query("DELETE FROM merge_history WHERE survivor_id = ANY($1) OR absorbed_ids && $1")
        .bind(&chain)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM manual_merge_queue WHERE candidate_profile_ids && $1")
        .bind(&chain)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM customer_profile WHERE id = ANY($1)")
        .bind(&chain)
        .execute(&mut *conn)
        .await?;
    // Audiences drop the person once `profiles.changes` says so.
    let erased: Vec<(Uuid, ProfileChangeKind)> = chain
        .iter()
        .map(|id| (*id, ProfileChangeKind::Erased))
        .collect();
    storage::profile_changes::queue(conn, &erased).await?;
    // Shared (suspect) identifiers name others too: only the person's own lead to
    // events no profile holds.
    let unlinked = erase_unlinked(conn, &suppressed).await?;
    let all_events: Vec<Uuid> = events.iter().chain(&unlinked).copied().collect();
    let erasure = Erasure::new(live, &chain, &all_events, &suppressed);
    erasure.record(conn).await?;
    Ok((
        Erased {
            profiles: chain,
            events: deleted_events,
            orders,
            unlinked: unlinked.len(),
            suppressed: suppressed.len(),
        },
        erasure,
    ))
}
