//! One destination's worker: leases due profiles from its queue, works out what the
//! remote needs (an upsert of a changed record, a removal, a merge), sends it in
//! batches through the destination's connector, and records what was accepted. Every
//! destination has its own worker, queue and pacing, so one that is slow or down only
//! delays itself.
//!
//! The worker is a pipeline: preparers lease the next profiles and build their records
//! (Customer 360 documents, mapping, hash against what the remote has) while earlier
//! leases are delivered, up to [`IN_FLIGHT`] requests per lease at once. The
//! connector's pacer alone decides when a request starts, so the rate limit, not the
//! database work, sets the pace, and the limit is never exceeded. A profile is in one
//! lease at a time (its queue row stays leased until settled), so batches in flight
//! together never hold the same profile.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::api::DestinationMode;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connector::{Connector, Merge, Outcome, Removal};
use crate::http::SendError;
use crate::mapping::{self, Record};
use crate::model::Destination;
use crate::store::{self, Claim, RetryPolicy, Synced};

/// How long an idle worker waits before looking at its queue again.
pub const IDLE_POLL: Duration = Duration::from_millis(200);

/// Most requests of one plan in flight at once (the pacer still spaces their starts to
/// the configured rate); with two plans in flight, twice that per destination.
pub const IN_FLIGHT: usize = 4;

/// Batches leased at a time: enough that the pacing, not the queue round-trips, sets
/// the pace.
const BATCHES_PER_LEASE: usize = 4;

/// Leases prepared at once (each a few database round trips that would otherwise
/// set the pace on a busy database).
const PREPARERS: usize = 2;

/// Plans delivered at once, so one plan's last answers and bookkeeping overlap the
/// next plan's requests.
const PLANS_IN_FLIGHT: usize = 2;

/// Runs `dest`'s worker until `shutdown`.
pub async fn run(
    db: PgPool,
    dest: Destination,
    connector: Box<dyn Connector>,
    policy: RetryPolicy,
    shutdown: CancellationToken,
) {
    tracing::info!(destination = %dest.name, kind = %dest.kind, "destination worker started");
    // As many plans wait as there are preparers: a preparer leases the next profiles
    // only once there is room, so a waiting plan's lease is not running out behind a
    // long queue.
    let (tx, mut rx) = mpsc::channel::<Plan>(PREPARERS);
    let preparers: Vec<_> = (0..PREPARERS)
        .map(|_| {
            tokio::spawn(prepare_loop(
                db.clone(),
                dest.clone(),
                tx.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    drop(tx);
    {
        // Ends when shut down, or when every preparer stopped (the destination changed
        // or was removed).
        let plans =
            futures::stream::poll_fn(|cx| rx.poll_recv(cx)).take_until(shutdown.cancelled());
        plans
            .for_each_concurrent(PLANS_IN_FLIGHT, |plan| async {
                if plan.leased_at.elapsed() > dest.lease() / 2 {
                    // Waited too long behind a slow delivery: another worker may lease
                    // these once the lease lapses; sending them now could race it.
                    tracing::warn!(destination = %dest.name, "a prepared batch waited past half its lease; its profiles are left to lapse");
                    return;
                }
                if let Err(e) = deliver(&db, &dest, connector.as_ref(), plan, &policy).await {
                    tracing::warn!(destination = %dest.name, error = %e, "destination batch failed; its lease will lapse");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            })
            .await;
    }
    // Hand back what was prepared but not sent, so a restart need not wait for leases.
    rx.close();
    while let Some(plan) = rx.recv().await {
        if let Err(e) = store::release(&db, dest.id, &plan.claims).await {
            tracing::warn!(destination = %dest.name, error = %e, "releasing leased profiles failed; their lease will lapse");
        }
    }
    for p in preparers {
        let _ = p.await;
    }
}

/// Leases due profiles and turns them into [`Plan`]s for the sender, while there is
/// room for one.
async fn prepare_loop(
    db: PgPool,
    dest: Destination,
    tx: mpsc::Sender<Plan>,
    shutdown: CancellationToken,
) {
    let lease_size = dest.batch_size() * BATCHES_PER_LEASE;
    while !shutdown.is_cancelled() {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = tx.reserve() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let leased_at = Instant::now();
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
            Ok(claims) => match plan(&db, &dest, &claims).await {
                Ok(mut plan) => {
                    plan.leased_at = leased_at;
                    permit.send(plan);
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(destination = %dest.name, error = %e, "preparing destination records failed");
                    let _ = store::release(&db, dest.id, &claims).await;
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

/// What the remote needs for one lease of profiles.
#[derive(Debug)]
pub struct Plan {
    leased_at: Instant,
    /// Every profile leased.
    pub claims: Vec<Claim>,
    /// Nothing to send (unchanged, no key, nothing at the remote).
    pub done: Vec<Claim>,
    /// Changed records.
    pub upserts: Vec<(Claim, Record)>,
    /// Erasures and audience exits.
    pub removals: Vec<(Claim, Removal)>,
    /// Merged-away profiles the remote has, with their survivor.
    pub merges: Vec<(Claim, Uuid)>,
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
    let plan = plan(db, dest, claims).await?;
    deliver(db, dest, connector, plan, policy).await
}

/// Works out what the remote needs for `claims`: builds each live profile's record and
/// compares its hash with what the remote last accepted.
pub async fn plan(db: &PgPool, dest: &Destination, claims: &[Claim]) -> Result<Plan, sqlx::Error> {
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
                    Some(mut r) => {
                        // The key changed (a new e-mail): the remote's record under the
                        // old key is updated by its id rather than left behind.
                        if let Some(s) = state.filter(|s| s.remote_key != r.key) {
                            r.replaces = s.remote_id.clone();
                        }
                        upserts.push((*c, r));
                    }
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
    Ok(Plan {
        leased_at: Instant::now(),
        claims: claims.to_vec(),
        done,
        upserts,
        removals,
        merges,
    })
}

/// Why the rest of a delivery is put off: a transient failure (the remote is down,
/// slow or throttling) and how long it asked to wait.
#[derive(Default)]
struct Halt(Mutex<Option<(String, Option<Duration>)>>);

impl Halt {
    fn get(&self) -> Option<(String, Option<Duration>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, message: String, retry_after: Option<Duration>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((message, retry_after));
    }
}

/// How a batch the remote refuses as a whole is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Halved until the record(s) at fault are alone (HubSpot validates a batch as a
    /// whole), so one bad record never holds back the rest.
    Halve,
    /// Dead-lettered together.
    DeadLetter,
}

/// What a worker sends in batches: upserted records and removals.
trait Item: Clone + Send + Sync {
    /// The operation, as the dead letters and the retry name it.
    const OPERATION: &'static str;
    /// What a refusal of a whole batch does.
    const REFUSED: Refused;
    /// Sends `items` through `connector`; one outcome each.
    fn send<'a>(
        connector: &'a dyn Connector,
        items: &'a [Self],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SendError>>;
}

impl Item for Record {
    const OPERATION: &'static str = "upsert";
    const REFUSED: Refused = Refused::Halve;
    fn send<'a>(
        connector: &'a dyn Connector,
        items: &'a [Self],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SendError>> {
        connector.upsert(items)
    }
}

impl Item for Removal {
    const OPERATION: &'static str = "delete";
    const REFUSED: Refused = Refused::DeadLetter;
    fn send<'a>(
        connector: &'a dyn Connector,
        items: &'a [Self],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, SendError>> {
        connector.remove(items)
    }
}

/// One worker's context while it delivers a plan.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    db: &'a PgPool,
    dest: &'a Destination,
    connector: &'a dyn Connector,
    policy: &'a RetryPolicy,
    halt: &'a Halt,
}

/// Sends `batch` under the destination's policy and settles what failed: per-record
/// refusals and permanent failures to the dead letters, transient ones retried later
/// (and the rest of the delivery with them, through `halt`). Returns the accepted
/// items with the remote's id for each.
async fn send_batch<T: Item>(
    cx: Ctx<'_>,
    batch: Vec<(Claim, T)>,
) -> Result<Vec<(Claim, T, Option<String>)>, sqlx::Error> {
    let (db, id, policy, operation) = (cx.db, cx.dest.id, cx.policy, T::OPERATION);
    let mut accepted = Vec::new();
    let mut stack = vec![batch];
    while let Some(batch) = stack.pop() {
        let claims: Vec<Claim> = batch.iter().map(|(c, _)| *c).collect();
        if let Some((message, after)) = cx.halt.get() {
            store::retry_later(db, id, &claims, operation, &message, after, policy).await?;
            continue;
        }
        let items: Vec<T> = batch.iter().map(|(_, t)| t.clone()).collect();
        match T::send(cx.connector, &items).await {
            Ok(outcomes) => {
                for ((c, t), o) in batch.into_iter().zip(outcomes) {
                    match o {
                        Outcome::Accepted(remote_id) => accepted.push((c, t, remote_id)),
                        Outcome::Rejected(e) => {
                            store::dead_letter(db, id, &[c], operation, &e).await?;
                        }
                    }
                }
            }
            Err(SendError::Transient {
                message,
                retry_after,
            }) => {
                store::retry_later(db, id, &claims, operation, &message, retry_after, policy)
                    .await?;
                cx.halt.set(message, retry_after);
            }
            Err(SendError::Permanent { message }) => {
                if T::REFUSED == Refused::Halve && batch.len() > 1 {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    stack.push(second);
                    stack.push(first);
                } else {
                    store::dead_letter(db, id, &claims, operation, &message).await?;
                }
            }
        }
    }
    Ok(accepted)
}

/// Sends one batch of upserts and records what the remote accepted.
async fn upsert_batch(cx: Ctx<'_>, batch: Vec<(Claim, Record)>) -> Result<(), sqlx::Error> {
    let accepted = send_batch(cx, batch).await?;
    let synced: Vec<(Uuid, Synced)> = accepted
        .iter()
        .map(|(c, r, remote_id)| {
            (
                c.profile_id,
                Synced {
                    hash: r.hash(),
                    remote_key: r.key.clone(),
                    remote_id: remote_id.clone(),
                },
            )
        })
        .collect();
    metrics::counter!("destination_records_total", "outcome" => "sent")
        .increment(synced.len() as u64);
    store::save_states(cx.db, cx.dest.id, &synced).await?;
    let finished: Vec<Claim> = accepted.iter().map(|(c, _, _)| *c).collect();
    store::finish(cx.db, cx.dest.id, &finished).await
}

/// Sends one batch of removals and forgets what the remote removed.
async fn removal_batch(cx: Ctx<'_>, batch: Vec<(Claim, Removal)>) -> Result<(), sqlx::Error> {
    let gone = send_batch(cx, batch).await?;
    for (c, r, _) in &gone {
        if r.erase {
            tracing::info!(destination = %cx.dest.name, profile_id = %c.profile_id, "erased profile deleted at the destination");
        }
    }
    let ids: Vec<Uuid> = gone.iter().map(|(c, _, _)| c.profile_id).collect();
    store::forget(cx.db, cx.dest.id, &ids).await?;
    let finished: Vec<Claim> = gone.iter().map(|(c, _, _)| *c).collect();
    store::finish(cx.db, cx.dest.id, &finished).await
}

/// Sends what `plan` needs — upserts, then removals, then merges — and settles every
/// profile of it. Batches go out up to [`IN_FLIGHT`] at once; each is settled (state
/// recorded, queue row finished) as soon as its answer is in.
pub async fn deliver(
    db: &PgPool,
    dest: &Destination,
    connector: &dyn Connector,
    plan: Plan,
    policy: &RetryPolicy,
) -> Result<(), sqlx::Error> {
    let Plan {
        done,
        upserts,
        removals,
        merges,
        ..
    } = plan;
    store::finish(db, dest.id, &done).await?;
    let halt = Halt::default();
    let cx = Ctx {
        db,
        dest,
        connector,
        policy,
        halt: &halt,
    };
    let size = dest.batch_size();
    let mut jobs = Vec::new();
    for batch in upserts.chunks(size) {
        jobs.push(upsert_batch(cx, batch.to_vec()));
    }
    all_in_flight(jobs).await?;
    let mut jobs = Vec::new();
    for batch in removals.chunks(size) {
        jobs.push(removal_batch(cx, batch.to_vec()));
    }
    all_in_flight(jobs).await?;
    merge_all(cx, merges).await
}

/// Runs `jobs` up to [`IN_FLIGHT`] at once; the first error, after all have ended.
async fn all_in_flight<F>(jobs: Vec<F>) -> Result<(), sqlx::Error>
where
    F: Future<Output = Result<(), sqlx::Error>>,
{
    let results: Vec<Result<(), sqlx::Error>> = futures::stream::iter(jobs)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Tells the remote about merges, after the upserts so a survivor synced in this round
/// is known.
async fn merge_all(cx: Ctx<'_>, merges: Vec<(Claim, Uuid)>) -> Result<(), sqlx::Error> {
    let Ctx {
        db,
        dest,
        connector,
        policy,
        halt,
    } = cx;
    let mut done = Vec::new();
    for (c, survivor) in merges {
        if let Some((message, after)) = halt.get() {
            store::retry_later(db, dest.id, &[c], "merge", &message, after, policy).await?;
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
                halt.set(message, retry_after);
            }
            Err(SendError::Permanent { message }) => {
                store::dead_letter(db, dest.id, &[c], "merge", &message).await?;
            }
        }
    }
    store::finish(db, dest.id, &done).await
}
