//! One destination's worker: leases due profiles from its queue, works out what the
//! remote needs (an upsert of a changed record, a removal, a merge), sends it in
//! batches through the destination's connector, and records what was accepted. Every
//! destination has its own worker, queue and pacing, so one that is slow or down only
//! delays itself.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use domain::api::DestinationMode;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connector::{Connector, Merge, Outcome, Removal};
use crate::http::SendError;
use crate::mapping::{self, Record};
use crate::model::Destination;
use crate::store::{self, Claim, RetryPolicy, Synced};

/// How long an idle worker waits before looking at its queue again.
pub const IDLE_POLL: Duration = Duration::from_millis(200);

/// Runs `dest`'s worker until `shutdown`.
pub async fn run(
    db: PgPool,
    dest: Destination,
    connector: Box<dyn Connector>,
    policy: RetryPolicy,
    shutdown: CancellationToken,
) {
    tracing::info!(destination = %dest.name, kind = %dest.kind, "destination worker started");
    // Leasing a few batches at once lets the connector's pacing, not the queue
    // round-trips, set the pace.
    let lease_size = dest.batch_size() * 4;
    while !shutdown.is_cancelled() {
        let pause = match store::claim(&db, dest.id, lease_size, dest.lease()).await {
            Ok(claims) if claims.is_empty() => IDLE_POLL,
            Ok(claims)
                if store::version(&db, dest.id).await.ok().flatten() != Some(dest.version) =>
            {
                // Changed (mapping, settings, credentials) or removed since this worker
                // started: hand the profiles back; the supervisor starts a new worker.
                if let Err(e) = store::release(&db, dest.id, &claims).await {
                    tracing::warn!(destination = %dest.name, error = %e, "releasing leased profiles failed; their lease will lapse");
                }
                break;
            }
            Ok(claims) => match process(&db, &dest, connector.as_ref(), &claims, &policy).await {
                Ok(()) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(destination = %dest.name, error = %e, "destination batch failed; its lease will lapse");
                    Duration::from_secs(1)
                }
            },
            Err(e) => {
                tracing::warn!(destination = %dest.name, error = %e, "reading the destination queue failed");
                Duration::from_secs(1)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Does what the remote needs for `claims` and settles each one: finished, retried
/// later, or dead-lettered.
pub async fn process(
    db: &PgPool,
    dest: &Destination,
    connector: &dyn Connector,
    claims: &[Claim],
    policy: &RetryPolicy,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.profile_id).collect();
    let rows: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT id, merged_into FROM customer_profile WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(db)
            .await?;
    let rows: HashMap<Uuid, Option<Uuid>> = rows.into_iter().collect();
    let members: Option<HashSet<Uuid>> = match dest.audience_id {
        Some(a) => Some(
            sqlx::query_scalar(
                "SELECT profile_id FROM audience_membership \
                 WHERE audience_id = $1 AND current AND profile_id = ANY($2)",
            )
            .bind(a)
            .bind(&ids)
            .fetch_all(db)
            .await?
            .into_iter()
            .collect(),
        ),
        None => None,
    };
    let states = store::states(db, dest.id, &ids).await?;
    let in_scope = |id: &Uuid| members.as_ref().is_none_or(|m| m.contains(id));
    let live: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| matches!(rows.get(id), Some(None)) && in_scope(id))
        .collect();
    let docs = storage::customer360::build_many(db, &live).await?;
    let docs: HashMap<Uuid, domain::Customer360> =
        docs.into_iter().map(|d| (d.profile_id, d)).collect();

    let mut done: Vec<Claim> = Vec::new();
    let mut upserts: Vec<(Claim, Record)> = Vec::new();
    let mut removals: Vec<(Claim, Removal)> = Vec::new();
    let mut merges: Vec<(Claim, Uuid)> = Vec::new();
    for c in claims {
        let state = states.get(&c.profile_id);
        match rows.get(&c.profile_id) {
            Some(None) if in_scope(&c.profile_id) => {
                let record = docs
                    .get(&c.profile_id)
                    .and_then(|d| mapping::record(dest, d));
                match record {
                    Some(r)
                        if state.is_some_and(|s| s.hash == r.hash() && s.remote_key == r.key) =>
                    {
                        metrics::counter!("destination_records_total", "outcome" => "unchanged")
                            .increment(1);
                        done.push(*c);
                    }
                    Some(r) => upserts.push((*c, r)),
                    None => {
                        // No key (a HubSpot destination keyed by e-mail, a profile
                        // without one): nothing the remote can store.
                        metrics::counter!("destination_records_total", "outcome" => "no_key")
                            .increment(1);
                        done.push(*c);
                    }
                }
            }
            Some(None) => match state {
                Some(s) if dest.mode == DestinationMode::Mirror => removals.push((
                    *c,
                    Removal {
                        profile_id: c.profile_id,
                        key: s.remote_key.clone(),
                        remote_id: s.remote_id.clone(),
                        erase: false,
                    },
                )),
                _ => done.push(*c),
            },
            Some(Some(_)) => match state {
                Some(_) => {
                    let survivor = storage::customer360::resolve(db, c.profile_id)
                        .await?
                        .unwrap_or(c.profile_id);
                    if survivor != c.profile_id {
                        store::enqueue_one(db, dest.id, survivor).await?;
                    }
                    merges.push((*c, survivor));
                }
                None => done.push(*c),
            },
            None => match state {
                Some(s) => removals.push((
                    *c,
                    Removal {
                        profile_id: c.profile_id,
                        key: s.remote_key.clone(),
                        remote_id: s.remote_id.clone(),
                        erase: true,
                    },
                )),
                None => done.push(*c),
            },
        }
    }

    // Upserts, a batch at a time; a batch refused as a whole is halved until the
    // record(s) at fault are alone, so one bad record never holds back the rest.
    let mut failed: Option<(String, Option<Duration>)> = None;
    let mut stack: Vec<Vec<(Claim, Record)>> = upserts
        .chunks(dest.batch_size())
        .rev()
        .map(<[_]>::to_vec)
        .collect();
    while let Some(batch) = stack.pop() {
        let batch_claims: Vec<Claim> = batch.iter().map(|(c, _)| *c).collect();
        if let Some((message, after)) = &failed {
            store::retry_later(
                db,
                dest.id,
                &batch_claims,
                "upsert",
                message,
                *after,
                policy,
            )
            .await?;
            continue;
        }
        let records: Vec<Record> = batch.iter().map(|(_, r)| r.clone()).collect();
        match connector.upsert(&records).await {
            Ok(outcomes) => {
                let mut accepted = Vec::new();
                for ((c, r), o) in batch.iter().zip(outcomes) {
                    match o {
                        Outcome::Accepted(remote_id) => {
                            accepted.push((
                                c.profile_id,
                                Synced {
                                    hash: r.hash(),
                                    remote_key: r.key.clone(),
                                    remote_id,
                                },
                            ));
                            done.push(*c);
                        }
                        Outcome::Rejected(e) => {
                            store::dead_letter(db, dest.id, &[*c], "upsert", &e).await?;
                        }
                    }
                }
                metrics::counter!("destination_records_total", "outcome" => "sent")
                    .increment(accepted.len() as u64);
                store::save_states(db, dest.id, &accepted).await?;
            }
            Err(SendError::Transient {
                message,
                retry_after,
            }) => {
                store::retry_later(
                    db,
                    dest.id,
                    &batch_claims,
                    "upsert",
                    &message,
                    retry_after,
                    policy,
                )
                .await?;
                failed = Some((message, retry_after));
            }
            Err(SendError::Permanent { message }) => {
                if batch.len() > 1 {
                    let mid = batch.len() / 2;
                    stack.push(batch[mid..].to_vec());
                    stack.push(batch[..mid].to_vec());
                } else {
                    store::dead_letter(db, dest.id, &batch_claims, "upsert", &message).await?;
                }
            }
        }
    }

    // Removals: erasures and audience exits.
    for batch in removals.chunks(dest.batch_size()) {
        let batch_claims: Vec<Claim> = batch.iter().map(|(c, _)| *c).collect();
        if let Some((message, after)) = &failed {
            store::retry_later(
                db,
                dest.id,
                &batch_claims,
                "delete",
                message,
                *after,
                policy,
            )
            .await?;
            continue;
        }
        let records: Vec<Removal> = batch.iter().map(|(_, r)| r.clone()).collect();
        match connector.remove(&records).await {
            Ok(outcomes) => {
                let mut gone = Vec::new();
                for ((c, r), o) in batch.iter().zip(outcomes) {
                    match o {
                        Outcome::Accepted(_) => {
                            if r.erase {
                                tracing::info!(destination = %dest.name, profile_id = %c.profile_id, "erased profile deleted at the destination");
                            }
                            gone.push(c.profile_id);
                            done.push(*c);
                        }
                        Outcome::Rejected(e) => {
                            store::dead_letter(db, dest.id, &[*c], "delete", &e).await?;
                        }
                    }
                }
                store::forget(db, dest.id, &gone).await?;
            }
            Err(SendError::Transient {
                message,
                retry_after,
            }) => {
                store::retry_later(
                    db,
                    dest.id,
                    &batch_claims,
                    "delete",
                    &message,
                    retry_after,
                    policy,
                )
                .await?;
                failed = Some((message, retry_after));
            }
            Err(SendError::Permanent { message }) => {
                store::dead_letter(db, dest.id, &batch_claims, "delete", &message).await?;
            }
        }
    }

    // Merges, after the upserts so a survivor synced in this round is known.
    for (c, survivor) in merges {
        if let Some((message, after)) = &failed {
            store::retry_later(db, dest.id, &[c], "merge", message, *after, policy).await?;
            continue;
        }
        let both = store::states(db, dest.id, &[c.profile_id, survivor]).await?;
        let Some(merged) = both.get(&c.profile_id) else {
            done.push(c);
            continue;
        };
        let survivor_state = both
            .get(&survivor)
            .map(|s| (s.remote_key.clone(), s.remote_id.clone()));
        let survivor_live = survivor != c.profile_id;
        if survivor_state.is_none() && survivor_live && mapping::key_field(dest).is_some() {
            // The survivor has not reached the remote yet: merge once it has.
            let survivor_keyless = storage::customer360::build(db, survivor)
                .await?
                .is_none_or(|d| mapping::record(dest, &d).is_none());
            if !survivor_keyless {
                store::retry_later(
                    db,
                    dest.id,
                    &[c],
                    "merge",
                    "waiting for the survivor to sync",
                    None,
                    policy,
                )
                .await?;
                continue;
            }
        }
        let survivor_ref = survivor_state.or_else(|| {
            (survivor_live && mapping::key_field(dest).is_none())
                .then(|| (survivor.to_string(), None))
        });
        let merge = Merge {
            merged: Removal {
                profile_id: c.profile_id,
                key: merged.remote_key.clone(),
                remote_id: merged.remote_id.clone(),
                erase: false,
            },
            survivor: survivor_ref,
        };
        match connector.merge(&merge).await {
            Ok(Outcome::Accepted(_)) => {
                store::forget(db, dest.id, &[c.profile_id]).await?;
                done.push(c);
            }
            Ok(Outcome::Rejected(e)) => store::dead_letter(db, dest.id, &[c], "merge", &e).await?,
            Err(SendError::Transient {
                message,
                retry_after,
            }) => {
                store::retry_later(db, dest.id, &[c], "merge", &message, retry_after, policy)
                    .await?;
                failed = Some((message, retry_after));
            }
            Err(SendError::Permanent { message }) => {
                store::dead_letter(db, dest.id, &[c], "merge", &message).await?;
            }
        }
    }
    store::finish(db, dest.id, &done).await
}
