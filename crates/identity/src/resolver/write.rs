//! The one write of the resolver: [`write`] puts a computed [`Delta`] into Postgres.
//!
//! Forward steps, region replays (late events, identifiers turning suspect, analysts'
//! decisions) and `ctl identity rebuild` all end here, so how rows are written is
//! decided in this one place. Every statement is set-based (arrays bound as
//! parameters, chunked for very large deltas), so a delta costs a fixed number of
//! round trips per table whatever its size — except merge history and review items,
//! one statement per row (they are few).
//!
//! The order matters for the foreign keys and the derived flags: profile rows exist
//! before tombstones point at them; identifier-index rows are written before the
//! identifier states that flag them suspect or shared; order aggregates are computed
//! after orders are attributed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{Identifier, ProfileChangeKind};
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::store::split;
use crate::delta::{Delta, Holding, IdentifierState, OrderOwner, ProfileRow, RefusedLink, Rewrite};
use crate::engine::{MergeRecord, ReviewRecord};
use crate::model::ProfileId;
use crate::rules::PartnerSet;
use storage::profiles::{self, ProfileWrite};

/// What a write reports back.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Ids of the merge-history rows, in the delta's order.
    pub merge_ids: Vec<Uuid>,
    /// Review items raised (repeats of a pending item only count on it).
    pub reviews: usize,
}

/// Writes `delta` in the caller's transaction; prediction requests come due
/// `debounce` after a profile's first unpublished change.
pub(crate) async fn write(
    conn: &mut PgConnection,
    delta: &Delta,
    debounce: Duration,
) -> Result<Written, sqlx::Error> {
    match &delta.rewrite {
        Rewrite::Nothing => {}
        Rewrite::Region {
            profiles, suspects, ..
        } => {
            // Only the rows the replay no longer gives anyone go; the others are
            // rewritten in place below, and only where they changed.
            if !profiles.is_empty() {
                let (kinds, values) = split(delta.holdings.iter().map(|(i, _)| i));
                sqlx::query(
                    "DELETE FROM profile_identifier pi WHERE pi.profile_id = ANY($1) AND NOT EXISTS ( \
                         SELECT 1 FROM unnest($2::text[], $3::text[]) AS u(kind, value) \
                         WHERE u.kind = pi.kind AND u.value = pi.value)",
                )
                .bind(profiles)
                .bind(&kinds)
                .bind(&values)
                .execute(&mut *conn)
                .await?;
            }
            if !suspects.is_empty() {
                let (kinds, values) = split(suspects);
                sqlx::query(
                    "DELETE FROM profile_identifier pi USING unnest($1::text[], $2::text[]) AS u(kind, value) \
                     WHERE pi.kind = u.kind AND pi.value = u.value",
                )
                .bind(&kinds)
                .bind(&values)
                .execute(&mut *conn)
                .await?;
            }
        }
        Rewrite::Everything => {
            sqlx::query("DELETE FROM profile_identifier")
                .execute(&mut *conn)
                .await?;
        }
    }
    // Orders first (no foreign key), so each live profile's row is written once, its
    // order aggregates computed in the same statement; then the bare rows of profiles
    // created only to be merged away, which tombstones need.
    move_orders(conn, &delta.tombstones).await?;
    attribute_orders(conn, &delta.orders).await?;
    upsert_profiles(conn, &delta.profiles).await?;
    let live: std::collections::HashSet<ProfileId> = delta.changed().collect();
    let bare: Vec<ProfileId> = delta
        .created
        .iter()
        .copied()
        .filter(|p| !live.contains(p))
        .collect();
    profiles::insert_ids(conn, &bare).await?;
    tombstone(conn, &delta.tombstones).await?;
    repoint(conn, &delta.repoint).await?;
    assign_events(conn, &delta.assignment).await?;
    let replace = matches!(delta.rewrite, Rewrite::Region { .. });
    upsert_holdings(conn, &delta.holdings, replace).await?;
    if delta.rewrite == Rewrite::Everything {
        sqlx::query("DELETE FROM identity_identifier")
            .execute(&mut *conn)
            .await?;
    }
    upsert_identifier_states(conn, &delta.identifiers).await?;
    match &delta.rewrite {
        Rewrite::Nothing => {}
        Rewrite::Region { events, .. } => {
            // Only the refused links the replay no longer makes go; the rest stay
            // (the insert below skips them).
            let (kinds, values, ids, reasons) = refused_columns(&delta.refused);
            sqlx::query(
                "DELETE FROM identity_refused_link r WHERE r.event_id = ANY($1) AND NOT EXISTS ( \
                     SELECT 1 FROM unnest($2::text[], $3::text[], $4::uuid[], $5::text[]) \
                         AS u(kind, value, event_id, reason) \
                     WHERE u.kind = r.kind AND u.value = r.value AND u.event_id = r.event_id \
                       AND u.reason = r.reason)",
            )
            .bind(events)
            .bind(&kinds)
            .bind(&values)
            .bind(&ids)
            .bind(&reasons)
            .execute(&mut *conn)
            .await?;
        }
        Rewrite::Everything => {
            sqlx::query("DELETE FROM identity_refused_link")
                .execute(&mut *conn)
                .await?;
        }
    }
    insert_refused(conn, &delta.refused).await?;
    let merge_ids = insert_merges(conn, &delta.merges, &delta.actor).await?;
    let reviews = insert_reviews(conn, &delta.reviews).await?;
    queue_predictions(conn, &delta.predictions, debounce).await?;
    queue_changes(conn, delta).await?;
    Ok(Written { merge_ids, reviews })
}

/// Inserts or rewrites live profiles through the one writer of `customer_profile`.
async fn upsert_profiles(conn: &mut PgConnection, rows: &[ProfileRow]) -> Result<(), sqlx::Error> {
    let writes: Vec<ProfileWrite<'_>> = rows
        .iter()
        .map(|r| ProfileWrite {
            id: r.id,
            first_event: Some((r.node.first_key.occurred_at, r.node.first_key.event_id)),
            last_event: Some((r.node.last_key.occurred_at, r.node.last_key.event_id)),
            name_keys: r.node.names.iter().map(String::as_str).collect(),
            display_name: r.facts.display_name(),
            identifiers: r
                .node
                .identifiers
                .iter()
                .filter(|i| !i.is_order_reference())
                .collect(),
            traits: &r.facts.traits,
            first_seen_at: r.facts.first_seen_at,
            last_seen_at: r.facts.last_seen_at,
            channels: r.facts.channels.iter().copied().collect(),
            category_affinity: r
                .facts
                .state
                .category_affinity(r.facts.last_seen_at.unwrap_or(r.node.last_key.occurred_at)),
            state: &r.facts.state,
            created_at: None,
        })
        .collect();
    profiles::upsert(conn, &writes).await
}

/// Turns `absorbed` profiles into tombstones of `into` (pairs), moving their events
/// and identifiers (their orders moved first, [`move_orders`]), and dropping their stale predictions, features and queued
/// prediction requests. Tombstones that pointed at an absorbed profile point at its
/// survivor too, so no pointer targets a tombstone (a survivor that was itself such a
/// tombstone was revived by the profile upsert before, so it is not re-pointed).
async fn tombstone(
    conn: &mut PgConnection,
    pairs: &[(ProfileId, ProfileId)],
) -> Result<(), sqlx::Error> {
    if pairs.is_empty() {
        return Ok(());
    }
    let (from, into): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    sqlx::query(
        "UPDATE customer_profile p SET merged_into = u.into_id, merged_at = now(), updated_at = now(), \
             identifiers = '[]'::jsonb, version = p.version + 1 \
         FROM unnest($1::uuid[], $2::uuid[]) AS u(from_id, into_id) WHERE p.id = u.from_id",
    )
    .bind(&from)
    .bind(&into)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE customer_profile p SET merged_into = u.into_id, updated_at = now(), version = p.version + 1 \
         FROM unnest($1::uuid[], $2::uuid[]) AS u(from_id, into_id) \
         WHERE p.merged_into = u.from_id AND p.id <> u.into_id",
    )
    .bind(&from)
    .bind(&into)
    .execute(&mut *conn)
    .await?;
    for table in ["normalized_event", "profile_identifier"] {
        move_profile_rows(conn, table, &from, &into).await?;
    }
    for table in ["predictions", "features", "identity_prediction_outbox"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE profile_id = ANY($1)"))
            .bind(&from)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Moves the orders of `absorbed` profiles to their survivors (pairs), before the
/// survivors' rows are written with their order aggregates.
async fn move_orders(
    conn: &mut PgConnection,
    pairs: &[(ProfileId, ProfileId)],
) -> Result<(), sqlx::Error> {
    if pairs.is_empty() {
        return Ok(());
    }
    let (from, into): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    move_profile_rows(conn, "orders", &from, &into).await
}

/// Points the `profile_id` of `table`'s rows of each `from` profile at its `into`.
async fn move_profile_rows(
    conn: &mut PgConnection,
    table: &str,
    from: &[Uuid],
    into: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE {table} t SET profile_id = u.into_id \
         FROM unnest($1::uuid[], $2::uuid[]) AS u(from_id, into_id) WHERE t.profile_id = u.from_id"
    ))
    .bind(from)
    .bind(into)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Re-points existing tombstones (pairs `(tombstone, live profile)`); ids that are not
/// tombstones, or already point there, are left alone.
async fn repoint(
    conn: &mut PgConnection,
    pairs: &[(ProfileId, ProfileId)],
) -> Result<(), sqlx::Error> {
    for chunk in pairs.chunks(10_000) {
        let (from, into): (Vec<Uuid>, Vec<Uuid>) = chunk.iter().copied().unzip();
        sqlx::query(
            "UPDATE customer_profile p SET merged_into = u.into_id, updated_at = now(), version = p.version + 1 \
             FROM unnest($1::uuid[], $2::uuid[]) AS u(from_id, into_id) \
             WHERE p.id = u.from_id AND p.merged_into IS NOT NULL AND p.merged_into <> u.into_id",
        )
        .bind(&from)
        .bind(&into)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records sightings in the identifier index: claims or moves each identifier to its
/// profile, widens first/last seen, adds to the count. With `replace` (a region replay,
/// whose holdings count every event of the region from nothing) each row is set to the
/// holding instead, and a row already equal to it is left alone.
async fn upsert_holdings(
    conn: &mut PgConnection,
    rows: &[(Identifier, Holding)],
    replace: bool,
) -> Result<(), sqlx::Error> {
    let on_conflict = if replace {
        "ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id, source = EXCLUDED.source, \
             first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at, \
             seen_count = EXCLUDED.seen_count \
         WHERE (profile_identifier.profile_id, profile_identifier.source, profile_identifier.first_seen_at, \
                profile_identifier.last_seen_at, profile_identifier.seen_count) \
               IS DISTINCT FROM \
               (EXCLUDED.profile_id, EXCLUDED.source, EXCLUDED.first_seen_at, EXCLUDED.last_seen_at, \
                EXCLUDED.seen_count)"
    } else {
        "ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id, \
             first_seen_at = LEAST(profile_identifier.first_seen_at, EXCLUDED.first_seen_at), \
             source = CASE WHEN EXCLUDED.first_seen_at < profile_identifier.first_seen_at \
                           THEN EXCLUDED.source ELSE profile_identifier.source END, \
             last_seen_at = GREATEST(profile_identifier.last_seen_at, EXCLUDED.last_seen_at), \
             seen_count = profile_identifier.seen_count + EXCLUDED.seen_count"
    };
    let statement = format!(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at, seen_count) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], \
                              $6::timestamptz[], $7::bigint[]) {on_conflict}"
    );
    for chunk in rows.chunks(5_000) {
        let (kinds, values) = split(chunk.iter().map(|(i, _)| i));
        let profiles: Vec<Uuid> = chunk.iter().map(|(_, h)| h.profile).collect();
        let sources: Vec<&str> = chunk.iter().map(|(_, h)| h.source.as_str()).collect();
        let firsts: Vec<DateTime<Utc>> = chunk.iter().map(|(_, h)| h.first_seen).collect();
        let lasts: Vec<DateTime<Utc>> = chunk.iter().map(|(_, h)| h.last_seen).collect();
        let counts: Vec<i64> = chunk.iter().map(|(_, h)| h.count).collect();
        sqlx::query(&statement)
            .bind(&kinds)
            .bind(&values)
            .bind(&profiles)
            .bind(&sources)
            .bind(&firsts)
            .bind(&lasts)
            .bind(&counts)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes identifier states (latest event kept as the later of stored and given; the
/// partner set as given, since it was read and merged under the identifier's lock),
/// and flags the index rows of suspect or shared identifiers. A state that would come
/// out unchanged (a region replay rewrites every identifier of its region, most of
/// them as they were) is not rewritten.
async fn upsert_identifier_states(
    conn: &mut PgConnection,
    rows: &[(Identifier, IdentifierState)],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(5_000) {
        let (kinds, values) = split(chunk.iter().map(|(i, _)| i));
        let at: Vec<DateTime<Utc>> = chunk.iter().map(|(_, s)| s.last_key.occurred_at).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|(_, s)| s.last_key.event_id).collect();
        let partners: Vec<Json<&PartnerSet>> =
            chunk.iter().map(|(_, s)| Json(&s.partners)).collect();
        let suspect: Vec<bool> = chunk.iter().map(|(_, s)| s.suspect).collect();
        let shared: Vec<bool> = chunk.iter().map(|(_, s)| s.shared).collect();
        let flag: Vec<bool> = suspect.iter().zip(&shared).map(|(a, b)| *a || *b).collect();
        let (raise, clear): (Vec<usize>, Vec<usize>) = (0..chunk.len()).partition(|&i| flag[i]);
        // One statement: the states, then (data-modifying CTEs, all run) the index rows'
        // flags. Flags only change for the few identifiers that are (or were) suspect or
        // shared: the rest are not looked up in the identifier index at all. Raising
        // probes the primary key for the flagged ones only; clearing probes the partial
        // index of flagged rows (`profile_identifier_suspect`), which stays small
        // however many identifiers there are. The two touch disjoint rows (an
        // identifier is flagged or not).
        sqlx::query(
            "WITH states AS ( \
                 INSERT INTO identity_identifier (kind, value, last_event_at, last_event_id, partners, \
                                                  suspect, suspect_since, shared) \
                 SELECT k, v, a, i, p, s, CASE WHEN s THEN now() END, sh \
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::jsonb[], \
                             $6::bool[], $7::bool[]) AS u(k, v, a, i, p, s, sh) \
                 ON CONFLICT (kind, value) DO UPDATE SET \
                     last_event_id = CASE WHEN (EXCLUDED.last_event_at, EXCLUDED.last_event_id) \
                                               > (identity_identifier.last_event_at, identity_identifier.last_event_id) \
                                          THEN EXCLUDED.last_event_id ELSE identity_identifier.last_event_id END, \
                     last_event_at = GREATEST(identity_identifier.last_event_at, EXCLUDED.last_event_at), \
                     partners = EXCLUDED.partners, \
                     suspect = identity_identifier.suspect OR EXCLUDED.suspect, \
                     suspect_since = COALESCE(identity_identifier.suspect_since, EXCLUDED.suspect_since), \
                     shared = EXCLUDED.shared \
                 WHERE (EXCLUDED.last_event_at, EXCLUDED.last_event_id) \
                           > (identity_identifier.last_event_at, identity_identifier.last_event_id) \
                    OR EXCLUDED.partners IS DISTINCT FROM identity_identifier.partners \
                    OR (EXCLUDED.suspect AND NOT identity_identifier.suspect) \
                    OR EXCLUDED.shared IS DISTINCT FROM identity_identifier.shared), \
             raised AS ( \
                 UPDATE profile_identifier pi SET suspect = TRUE \
                 FROM unnest($8::text[], $9::text[]) AS u(k, v) \
                 WHERE pi.kind = u.k AND pi.value = u.v AND NOT pi.suspect) \
             UPDATE profile_identifier pi SET suspect = FALSE \
             FROM unnest($10::text[], $11::text[]) AS u(k, v) \
             WHERE pi.suspect AND pi.kind = u.k AND pi.value = u.v",
        )
        .bind(&kinds)
        .bind(&values)
        .bind(&at)
        .bind(&ids)
        .bind(&partners)
        .bind(&suspect)
        .bind(&shared)
        .bind(pick(&kinds, &raise))
        .bind(pick(&values, &raise))
        .bind(pick(&kinds, &clear))
        .bind(pick(&values, &clear))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The elements of `v` at `at`.
fn pick(v: &[String], at: &[usize]) -> Vec<String> {
    at.iter().map(|&i| v[i].clone()).collect()
}

/// Sets each event's profile and marks it resolved.
async fn assign_events(
    conn: &mut PgConnection,
    assignment: &[(Uuid, ProfileId)],
) -> Result<(), sqlx::Error> {
    let mut sorted = assignment.to_vec();
    sorted.sort();
    for chunk in sorted.chunks(10_000) {
        let (events, profiles): (Vec<Uuid>, Vec<Uuid>) = chunk.iter().copied().unzip();
        sqlx::query(
            "UPDATE normalized_event e SET profile_id = u.p, resolved_at = COALESCE(e.resolved_at, now()) \
             FROM unnest($1::uuid[], $2::uuid[]) AS u(e, p) \
             WHERE e.event_id = u.e AND (e.profile_id IS DISTINCT FROM u.p OR e.resolved_at IS NULL)",
        )
        .bind(&events)
        .bind(&profiles)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Refused links as parallel arrays for binding: kinds, values, events, reasons.
fn refused_columns(rows: &[RefusedLink]) -> (Vec<String>, Vec<String>, Vec<Uuid>, Vec<String>) {
    let (kinds, values) = split(rows.iter().map(|r| &r.identifier));
    let events: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let reasons: Vec<String> = rows
        .iter()
        .map(|r| {
            serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    (kinds, values, events, reasons)
}

/// Records events that carry identifiers their profile does not hold (a link already
/// recorded is left as it is).
async fn insert_refused(conn: &mut PgConnection, rows: &[RefusedLink]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(5_000) {
        let (kinds, values, events, reasons) = refused_columns(chunk);
        sqlx::query(
            "INSERT INTO identity_refused_link (kind, value, event_id, reason) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&kinds)
        .bind(&values)
        .bind(&events)
        .bind(&reasons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Writes merge history rows; returns their ids.
async fn insert_merges(
    conn: &mut PgConnection,
    merges: &[MergeRecord],
    actor: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids = Vec::new();
    for m in merges {
        let id = Uuid::now_v7();
        let absorbed: Vec<Uuid> = m.absorbed.iter().map(|a| a.profile_id).collect();
        let snapshot = serde_json::json!({
            "survivor_identifiers": m.survivor_identifiers,
            "absorbed": m.absorbed,
        });
        sqlx::query(
            "INSERT INTO merge_history (id, survivor_id, absorbed_ids, rule, matched_identifiers, \
                                        trigger_event_id, snapshot, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(m.survivor)
        .bind(&absorbed)
        .bind(m.rule.as_str())
        .bind(Json(&m.matched))
        .bind(m.trigger_event_id)
        .bind(Json(snapshot))
        .bind(actor)
        .execute(&mut *conn)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Raises review items. One per triggering event and reason; a pending item over the
/// same profiles for the same reason only counts the repeat.
async fn insert_reviews(
    conn: &mut PgConnection,
    reviews: &[ReviewRecord],
) -> Result<usize, sqlx::Error> {
    let mut raised = 0;
    for r in reviews {
        let mut candidates: Vec<Uuid> = r.profiles.clone();
        candidates.sort();
        candidates.dedup();
        let reasons: Vec<Value> = r
            .reasons
            .iter()
            .map(|(p, why)| serde_json::json!({"profile_id": p, "reason": why.as_str()}))
            .collect();
        let evidence = serde_json::json!({
            "identifiers": r.identifiers.iter().filter(|i| !i.is_order_reference()).collect::<Vec<_>>(),
            "reasons": reasons,
            "event_profile_id": r.profiles[0],
            "repeats": 0,
        });
        let repeated = sqlx::query(
            "UPDATE manual_merge_queue SET evidence = jsonb_set(evidence, '{repeats}', \
                 to_jsonb(COALESCE((evidence->>'repeats')::bigint, 0) + 1)) \
             WHERE status = 'pending' AND reason = $1 AND candidate_profile_ids = $2",
        )
        .bind(r.reason.as_str())
        .bind(&candidates)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if repeated > 0 {
            continue;
        }
        let inserted = sqlx::query(
            "INSERT INTO manual_merge_queue (id, reason, candidate_profile_ids, evidence, trigger_event_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(r.reason.as_str())
        .bind(&candidates)
        .bind(Json(evidence))
        .bind(r.trigger_event_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        raised += inserted as usize;
    }
    Ok(raised)
}

/// Points orders at the profiles holding their order references.
async fn attribute_orders(
    conn: &mut PgConnection,
    orders: &[OrderOwner],
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&OrderOwner> = orders.iter().collect();
    sorted.sort_by(|a, b| (a.source.as_str(), &a.order_id).cmp(&(b.source.as_str(), &b.order_id)));
    sorted.dedup_by(|a, b| a.source == b.source && a.order_id == b.order_id);
    let sources: Vec<&str> = sorted.iter().map(|o| o.source.as_str()).collect();
    let ids: Vec<&str> = sorted.iter().map(|o| o.order_id.as_str()).collect();
    let profiles: Vec<Uuid> = sorted.iter().map(|o| o.profile).collect();
    sqlx::query(
        "UPDATE orders o SET profile_id = u.p FROM unnest($1::text[], $2::text[], $3::uuid[]) AS u(s, i, p) \
         WHERE o.source = u.s AND o.external_order_id = u.i AND o.profile_id IS DISTINCT FROM u.p",
    )
    .bind(&sources)
    .bind(&ids)
    .bind(&profiles)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues `profiles.changes` for what the delta did to profiles: created, updated,
/// merged away. A full rebuild queues nothing: it rewrites every profile, and the
/// audiences' periodic full recompute is what brings them in line after one.
async fn queue_changes(conn: &mut PgConnection, delta: &Delta) -> Result<(), sqlx::Error> {
    if delta.rewrite == Rewrite::Everything {
        return Ok(());
    }
    let created: std::collections::HashSet<ProfileId> = delta.created.iter().copied().collect();
    let changes: Vec<(ProfileId, ProfileChangeKind)> = delta
        .changed()
        .map(|id| {
            let kind = if created.contains(&id) {
                ProfileChangeKind::Created
            } else {
                ProfileChangeKind::Updated
            };
            (id, kind)
        })
        .chain(delta.removed().map(|id| (id, ProfileChangeKind::Merged)))
        .collect();
    storage::profile_changes::queue(conn, &changes).await
}

/// Queues prediction requests for `profiles`, due `debounce` after their first
/// unpublished change.
async fn queue_predictions(
    conn: &mut PgConnection,
    profiles: &[ProfileId],
    debounce: Duration,
) -> Result<(), sqlx::Error> {
    if profiles.is_empty() {
        return Ok(());
    }
    let mut sorted = profiles.to_vec();
    sorted.sort();
    sorted.dedup();
    let ms = i64::try_from(debounce.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO identity_prediction_outbox (profile_id, due_at, changed_at) \
         SELECT p, now() + make_interval(secs => $2::double precision / 1000), now() FROM unnest($1::uuid[]) AS p \
         ON CONFLICT (profile_id) DO UPDATE SET changed_at = now()",
    )
    .bind(&sorted)
    .bind(ms as f64)
    .execute(conn)
    .await?;
    Ok(())
}
