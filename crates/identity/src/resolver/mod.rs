//! The resolver: applies the identity engine to Postgres, for a batch of normalised
//! events at a time.
//!
//! For each batch, in one transaction: skip events already resolved (redelivery) or
//! missing, lock the batch's identifiers, drop events carrying a suppressed (erased)
//! identifier (read with the identifiers' owners, under those locks, which an erase
//! holds too), lock the profiles
//! owning the identifiers (see [`locks`]), load that neighbourhood of
//! the identity graph, and apply the events in canonical order with
//! [`Engine::apply`]. Events that are *late* (something they touch already saw a
//! later event) or that make an identifier suspect — and the step's events touching
//! what those touch — are resolved together by the step's one region replay
//! (`replay.rs`): every event of the profiles they could affect is re-applied in
//! canonical order, so the result is what processing all events in time order gives,
//! whatever order they arrived in and however many replicas shared the work. The
//! replay reads its region's events once and writes only what came out different.
//!
//! Everything a change implies is computed as one [`Delta`](crate::delta::Delta) by
//! pure code and written in the same transaction by the one set-based write
//! (`write.rs` — used alike by forward steps, region replays, analysts' decisions and
//! [`rebuild`]): events' profiles, the identifier index, merged-away profiles as
//! tombstones (with their events, identifiers and orders moved), merge history with
//! snapshots, review items, orders' profiles, Customer 360 facts and order aggregates,
//! and the queued prediction request. After commit the changed profiles' Customer 360
//! documents are rewritten in Redis. A crash at any point loses nothing: the stream
//! entries are redelivered and resolved events are skipped.

pub mod disjoint;
mod erasure;
pub mod locks;
pub mod outbox;
pub mod rebuild;
mod replay;
pub mod requests;
mod settled;
pub(crate) mod store;
mod write;

#[cfg(test)]
mod erase_race;
#[cfg(test)]
mod lost_update;

pub use store::load_profile_ids;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use domain::{Identifier, NormalizedEvent};
use redis::aio::ConnectionManager;
use sqlx::{PgConnection, PgPool, Row};
use storage::customer360::Customer360Cache;
use storage::normalized;
use uuid::Uuid;

use crate::delta::Step;
use crate::engine::{Engine, Graph, Unsettled};
use crate::facts::ProfileFacts;
use crate::model::{EventKey, Observation, ProfileId};
use crate::rules::{PartnerSet, Policy, observe_partners};
use locks::{begin_shared, identifier_lock, lock_all, profile_lock, try_lock_all};
use write::write;

/// Attempts at one transaction before giving up (each retry takes more locks up front).
const MAX_ATTEMPTS: usize = 50;

/// The resolver failed; nothing of the failed step was committed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Postgres failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed while an erase removed the person's copies from it (the erase is
    /// committed; the request is retried and finishes the removal).
    #[error("redis: {0}")]
    Redis(String),
    /// The locks an event needs stayed contended for every attempt.
    #[error("could not take the locks of event {0} after {MAX_ATTEMPTS} attempts")]
    Contended(Uuid),
}

/// Why an event of a step went to the step's region replay instead of being applied
/// where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplayCause {
    /// It is late and may not be applied in place ([`Engine::settled_late`]).
    Late(Unsettled),
    /// It makes an identifier suspect.
    NewSuspect,
    /// In order (or late and settled), but it touches an identifier or profile that an
    /// event of the step going to the replay touches.
    Touching,
}

impl ReplayCause {
    /// The name the merger's metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayCause::Late(why) => why.as_str(),
            ReplayCause::NewSuspect => "new_suspect",
            ReplayCause::Touching => "touching",
        }
    }
}

/// What a call resolved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolveReport {
    /// Events attached to a profile.
    pub resolved: usize,
    /// Events already resolved (redeliveries).
    pub already_resolved: usize,
    /// Events the resolver stored itself (the normalizer publishes events without a
    /// row; the resolver writes it already attached, see [`Resolver::resolve`]).
    pub stored: usize,
    /// Events dropped because they carry an erased identifier.
    pub suppressed: usize,
    /// Merges performed.
    pub merges: usize,
    /// Review items raised.
    pub reviews: usize,
    /// Regions replayed.
    pub replays: usize,
    /// Events those replays re-applied: their regions' stored events and the step's
    /// events they resolved (what a replay costs).
    pub replayed_events: usize,
    /// Late events applied in place, without a replay (see `settled.rs`).
    pub settled: usize,
    /// Events a step sent to its region replay, by why.
    pub replayed_because: BTreeMap<ReplayCause, usize>,
    /// Merge history rows written by region rewrites.
    pub merge_ids: Vec<Uuid>,
    /// Live profiles changed (their documents were refreshed).
    pub changed: BTreeSet<ProfileId>,
    /// Profiles that became tombstones.
    pub removed: BTreeSet<ProfileId>,
}

impl ResolveReport {
    /// The profiles whose Customer 360 documents the call made stale: those changed and
    /// those merged away.
    pub fn stale_documents(&self) -> Vec<ProfileId> {
        self.changed
            .iter()
            .chain(self.removed.iter())
            .copied()
            .collect()
    }

    fn absorb(&mut self, other: ResolveReport) {
        self.resolved += other.resolved;
        self.already_resolved += other.already_resolved;
        self.stored += other.stored;
        self.suppressed += other.suppressed;
        self.merges += other.merges;
        self.reviews += other.reviews;
        self.replays += other.replays;
        self.replayed_events += other.replayed_events;
        self.settled += other.settled;
        for (cause, n) in other.replayed_because {
            *self.replayed_because.entry(cause).or_default() += n;
        }
        self.merge_ids.extend(other.merge_ids);
        self.removed.extend(other.removed);
        self.changed.extend(other.changed);
        self.changed.retain(|p| !self.removed.contains(p));
    }
}

/// Applies identity resolution to Postgres and keeps the Customer 360 cache fresh.
#[derive(Clone)]
pub struct Resolver {
    pub(crate) db: PgPool,
    pub(crate) engine: Engine,
    pub(crate) cache: Customer360Cache,
    pub(crate) streams: streams::Streams,
    pub(crate) debounce: Duration,
    pub(crate) actor: String,
    /// Tests only: a future a step awaits once, after it has read the owners of its
    /// identifiers and before it locks their profiles (where another replica may commit);
    /// an erase awaits it once it holds its locks and has read what it erases, before it
    /// deletes anything.
    #[cfg(test)]
    pub(crate) pause:
        std::sync::Arc<std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>>,
}

/// Where each event of a batch stands before resolution.
enum Status {
    /// Stored by a seed (`identity::seed`, tests), not yet attached: its row is updated.
    Pending,
    Resolved(Option<ProfileId>),
    /// Published by the normalizer without a row: the resolver stores it, attached.
    New,
}

impl Resolver {
    /// A resolver with the policy and cache settings of `settings`, naming profiles by
    /// the scheme the database stores ([`load_profile_ids`]).
    pub async fn new(
        db: PgPool,
        redis: ConnectionManager,
        settings: &config::Settings,
    ) -> Result<Self, ResolveError> {
        Self::with_policy(
            db,
            redis,
            settings,
            Policy::from_settings(&settings.identity),
        )
        .await
    }

    /// A resolver with an explicit policy (`ctl identity eval` switches guards off).
    pub async fn with_policy(
        db: PgPool,
        redis: ConnectionManager,
        settings: &config::Settings,
        policy: Policy,
    ) -> Result<Self, ResolveError> {
        let ids = load_profile_ids(&db).await?;
        let cache = Customer360Cache::new(
            db.clone(),
            redis.clone(),
            settings.stream_prefix.clone(),
            Duration::from_secs(settings.identity.customer360_cache_ttl_secs),
        );
        let streams = streams::Streams::new(
            redis,
            settings.stream_prefix.clone(),
            settings.stream_maxlen,
        );
        Ok(Self {
            db,
            engine: Engine::new(policy, ids),
            cache,
            streams,
            debounce: Duration::from_millis(settings.identity.identity_predictions_debounce_ms),
            actor: "identity-merger".to_owned(),
            #[cfg(test)]
            pause: Default::default(),
        })
    }

    /// The engine (its policy and profile ids) this resolver applies.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Resolves a batch of events (any order, duplicates allowed). Each committed step
    /// refreshes its profiles' Customer 360 documents before the next begins.
    pub async fn resolve(&self, events: &[NormalizedEvent]) -> Result<ResolveReport, ResolveError> {
        self.resolve_steps(events.iter().collect(), true).await
    }

    /// [`resolve`](Self::resolve) without refreshing Customer 360 documents: the caller
    /// refreshes the report's `changed` and `removed` profiles itself, after this returns
    /// ([`refresh`](Self::refresh)). The merger does so off its critical path, so the
    /// documents' reads overlap its next batch (docs/performance.md).
    /// The events are borrowed where they are (the merger's stream deliveries), never
    /// copied.
    pub async fn resolve_deferred<'a>(
        &self,
        events: impl IntoIterator<Item = &'a NormalizedEvent>,
    ) -> Result<ResolveReport, ResolveError> {
        self.resolve_steps(events.into_iter().collect(), false)
            .await
    }

    async fn resolve_steps(
        &self,
        mut pending: Vec<&NormalizedEvent>,
        refresh: bool,
    ) -> Result<ResolveReport, ResolveError> {
        pending.sort_by_key(|e| EventKey::of(e));
        pending.dedup_by_key(|e| e.event_id);
        let mut report = ResolveReport::default();
        while !pending.is_empty() {
            let (consumed, step) = self.step(&pending).await?;
            if refresh {
                self.after_commit(&step).await;
            }
            report.absorb(step);
            pending.drain(..consumed.max(1));
        }
        Ok(report)
    }

    /// Rewrites the cached Customer 360 documents of `profiles` from what is committed
    /// (tombstones and unknown ids lose theirs). A failure is only logged: documents
    /// expire, and the next change or read rebuilds them.
    pub async fn refresh(&self, profiles: &[ProfileId]) {
        if let Err(e) = self.cache.refresh_many(profiles).await {
            tracing::warn!(error = %e, profiles = profiles.len(), "refreshing Customer 360 documents failed");
        }
    }

    /// Rewrites the cached documents of what a step changed ([`refresh`](Self::refresh)).
    pub(crate) async fn after_commit(&self, step: &ResolveReport) {
        self.refresh(&step.stale_documents()).await;
    }

    /// One transaction over a prefix of `pending`. Returns how many events it consumed.
    async fn step(
        &self,
        pending: &[&NormalizedEvent],
    ) -> Result<(usize, ResolveReport), ResolveError> {
        let mut extra: BTreeSet<i64> = BTreeSet::new();
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = begin_shared(&self.db).await?;
            let mut report = ResolveReport::default();
            let statuses = statuses(&mut tx, pending).await?;

            let mut candidates: Vec<(usize, Observation, Vec<Identifier>)> = Vec::new();
            let mut fresh: HashMap<Uuid, &NormalizedEvent> = HashMap::new();
            for (i, ev) in pending.iter().enumerate() {
                match &statuses[i] {
                    Status::Resolved(p) => {
                        report.already_resolved += 1;
                        report.changed.extend(*p);
                    }
                    Status::Pending | Status::New => {
                        if matches!(statuses[i], Status::New) {
                            fresh.insert(ev.event_id, *ev);
                        }
                        let obs = Observation::of(ev);
                        let usable = self.engine.policy.usable(&obs.identifiers);
                        candidates.push((i, obs, usable));
                    }
                }
            }
            if candidates.is_empty() {
                tx.commit().await?;
                return Ok((pending.len(), report));
            }

            // Lock every identifier the candidates carry (the ones they link by and the
            // ones the suppression check reads), then check suppression: an erase holds
            // the same identifier locks while it writes `suppression`, so an event racing
            // an erase either sees the suppression or is resolved before the erase,
            // which then erases it too. It never re-creates the person after. The check
            // is read with the owners and states of the identifiers, the step's next
            // statement anyway (not with the locks: that statement's snapshot predates
            // them).
            let mut keys: BTreeSet<i64> = candidates
                .iter()
                .flat_map(|(i, _, usable)| {
                    usable
                        .iter()
                        .chain(suppressible(pending[*i]))
                        .map(identifier_lock)
                })
                .collect();
            keys.extend(extra.iter().copied());
            lock_all(&mut tx, &keys).await?;

            // The identifiers' owners and states, and suppression. The states are final for
            // the step (written only under the identifier locks it holds); the owners are
            // read again once their profiles are locked.
            let mut all_ids = linking_ids(&candidates);
            let unusable: Vec<Identifier> = candidates
                .iter()
                .flat_map(|(i, _, _)| suppressible(pending[*i]))
                .filter(|id| all_ids.binary_search(id).is_err())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let ((mut owners, states), erased) =
                store::owners_states_and_suppressed(&mut tx, &all_ids, &unusable).await?;
            let suppressed: BTreeSet<Uuid> = candidates
                .iter()
                .map(|(i, _, _)| pending[*i])
                .filter(|ev| suppressible(ev).any(|id| erased.contains(id)))
                .map(|ev| ev.event_id)
                .collect();
            if !suppressed.is_empty() {
                report.suppressed += suppressed.len();
                candidates.retain(|(i, _, _)| !suppressed.contains(&pending[*i].event_id));
                // An unstored event is stored first, so the one drop removes it with its
                // raw event and its unowned order, as for a stored one (erasures are rare).
                let unstored: Vec<&NormalizedEvent> = suppressed
                    .iter()
                    .filter_map(|id| fresh.remove(id))
                    .collect();
                if normalized::insert_unattached(&mut tx, &unstored).await? < unstored.len() {
                    // Another replica stored one meanwhile: start again and see it.
                    tx.rollback().await?;
                    continue;
                }
                drop_events(&mut tx, &suppressed.iter().copied().collect::<Vec<_>>()).await?;
                if candidates.is_empty() {
                    tx.commit().await?;
                    return Ok((pending.len(), report));
                }
                // Only what the events left link by.
                all_ids = linking_ids(&candidates);
                owners.retain(|id, _| all_ids.binary_search(id).is_ok());
            }
            // The profiles owning the identifiers, locked after them (tried: see `locks`),
            // and only then read, in a statement of their own: a profile read before its
            // lock may be stale by the time the lock is held (another replica's step,
            // through an identifier this one does not hold, committed a change to it in
            // between), and writing it back would lose that change. The owners are read
            // again with them: between the first read and the locks another replica may
            // have merged one away; then start again with the new owners in the locked
            // set. A step whose identifiers nobody owns has nothing to lock or read:
            // an unowned identifier gains an owner only under its own lock, held here.
            let mut wanted: BTreeSet<ProfileId> = owners.values().copied().collect();
            if !self
                .lock_profiles(&mut tx, &wanted, &keys, &mut extra)
                .await?
            {
                tx.rollback().await?;
                continue;
            }
            let (mut loaded, owners_now) = if wanted.is_empty() {
                Default::default()
            } else {
                let wanted: Vec<ProfileId> = wanted.iter().copied().collect();
                store::profiles_and_owners(&mut tx, &wanted, &all_ids).await?
            };
            if moved(&owners, &owners_now, &loaded, &keys, &wanted, &mut extra) {
                tx.rollback().await?;
                continue;
            }
            let held: Vec<Identifier> = loaded
                .iter()
                .flat_map(|p| p.node.identifiers.iter().cloned())
                .collect();
            let constraints = store::constraints_touching(
                &mut tx,
                &held
                    .iter()
                    .chain(all_ids.iter())
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .await?;
            // Analysts' must-links may pull in the profile on the other side: locked, then
            // read, the same way.
            let linked: Vec<Identifier> = constraints
                .iter()
                .filter(|c| c.rule == crate::engine::ConstraintRule::MustLink)
                .flat_map(|c| c.left.iter().chain(c.right.iter()).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let linked_owners = store::owners(&mut tx, &linked).await?;
            let more: BTreeSet<ProfileId> = linked_owners
                .values()
                .copied()
                .filter(|p| !wanted.contains(p))
                .collect();
            if !more.is_empty() {
                if !self
                    .lock_profiles(&mut tx, &more, &keys, &mut extra)
                    .await?
                {
                    tx.rollback().await?;
                    extra.extend(wanted.iter().map(|p| profile_lock(*p)));
                    continue;
                }
                wanted.extend(more.iter().copied());
                let more: Vec<ProfileId> = more.into_iter().collect();
                let (more_loaded, linked_now) =
                    store::profiles_and_owners(&mut tx, &more, &linked).await?;
                loaded.extend(more_loaded);
                if moved(
                    &linked_owners,
                    &linked_now,
                    &loaded,
                    &keys,
                    &wanted,
                    &mut extra,
                ) {
                    tx.rollback().await?;
                    continue;
                }
            }

            // The neighbourhood of the graph.
            let mut graph = Graph::default();
            let mut partners: HashMap<Identifier, PartnerSet> = HashMap::new();
            for id in &all_ids {
                let (mut node, set) = states.get(id).cloned().unwrap_or_default();
                node.owner = owners.get(id).copied();
                graph.identifiers.insert(id.clone(), node);
                partners.insert(id.clone(), set);
            }
            for (id, p) in &linked_owners {
                graph.identifiers.entry(id.clone()).or_default().owner = Some(*p);
            }
            let mut facts: HashMap<ProfileId, ProfileFacts> = HashMap::new();
            for p in loaded {
                for id in &p.node.identifiers {
                    graph.identifiers.entry(id.clone()).or_default().owner = Some(p.id);
                }
                graph.profiles.insert(p.id, p.node);
                facts.insert(p.id, p.facts);
            }
            for c in constraints {
                graph.constraints.push(c);
            }

            // Late events whose outcome canonical order provably shares are applied in
            // place (`settled.rs`); asked once for the step, and only if it has any.
            let witnessed = settled::witnessed(
                &mut tx,
                &self.engine,
                &graph,
                candidates.iter().map(|c| &c.1),
            )
            .await?;

            // Apply in canonical order. An event that is late (and not settled), that
            // makes an identifier suspect, or that touches what such an event touched,
            // waits for the one region replay of this step.
            let mut delta = Step::new(facts);
            let mut late: Vec<&NormalizedEvent> = Vec::new();
            let mut newly_suspect: Vec<Identifier> = Vec::new();
            let mut tainted_ids: BTreeSet<Identifier> = BTreeSet::new();
            let mut tainted_profiles: BTreeSet<ProfileId> = BTreeSet::new();
            for (i, obs, usable) in &candidates {
                let mut trial: HashMap<Identifier, PartnerSet> = usable
                    .iter()
                    .map(|id| (id.clone(), partners.get(id).cloned().unwrap_or_default()))
                    .collect();
                let newly = if self.engine.policy.guards.suspect {
                    observe_partners(&self.engine.policy, &mut trial, usable)
                } else {
                    Vec::new()
                };
                partners.extend(trial);
                let owners_of: Vec<ProfileId> = usable
                    .iter()
                    .filter_map(|id| graph.identifiers.get(id).and_then(|n| n.owner))
                    .collect();
                let tainted = usable.iter().any(|id| tainted_ids.contains(id))
                    || owners_of.iter().any(|p| tainted_profiles.contains(p));
                // `None` in order; otherwise whether the late event may be applied in
                // place, or why not.
                let lateness = (!self.engine.in_order(&graph, obs)).then(|| {
                    self.engine.settled_late(&graph, obs).and_then(|_| {
                        match witnessed.contains(&obs.key.event_id) {
                            true => Ok(()),
                            false => Err(Unsettled::Unwitnessed),
                        }
                    })
                });
                let cause = match lateness {
                    Some(Err(why)) => Some(ReplayCause::Late(why)),
                    _ if !newly.is_empty() => Some(ReplayCause::NewSuspect),
                    _ if tainted => Some(ReplayCause::Touching),
                    _ => None,
                };
                if let Some(cause) = cause {
                    tracing::debug!(event_id = %obs.key.event_id, cause = cause.as_str(), "event resolved with its region's replay");
                    *report.replayed_because.entry(cause).or_default() += 1;
                    late.push(pending[*i]);
                    tainted_ids.extend(usable.iter().cloned());
                    tainted_ids.extend(newly.iter().cloned());
                    tainted_profiles.extend(owners_of);
                    newly_suspect.extend(newly);
                    continue;
                }
                let settled = lateness.is_some();
                if settled {
                    report.settled += 1;
                    tracing::debug!(event_id = %obs.key.event_id, "late event applied in place");
                }
                let outcome = self.engine.apply(&mut graph, obs);
                tracing::debug!(
                    event_id = %outcome.event_id,
                    profile_id = %outcome.profile_id,
                    created = outcome.created,
                    merges = outcome.merges.len(),
                    review = outcome.review.is_some(),
                    "event resolved"
                );
                delta.record(pending[*i], usable, &outcome, &graph);
            }
            let resolved = delta.events();
            let mut delta = delta.finish(&graph, &partners, &self.actor);
            // Events published without a row are stored here, already attached, after
            // the write (which moves the rows of merged-away profiles; these carry their
            // final profile already): one insert of the wide row instead of an insert by
            // the normalizer and an update here that can never be HOT.
            let assignment = std::mem::take(&mut delta.assignment);
            let (attached, assigned): (Vec<_>, Vec<_>) = assignment
                .into_iter()
                .partition(|(e, _)| fresh.contains_key(e));
            delta.assignment = assigned;
            let written = write(&mut tx, &delta, self.debounce).await?;
            let rows: Vec<(&NormalizedEvent, Uuid)> = attached
                .iter()
                .filter_map(|(e, p)| Some((*fresh.get(e)?, *p)))
                .collect();
            let stored = normalized::insert_attached(&mut tx, &rows).await?;
            if stored < rows.len() {
                // Another replica stored one of them first (the same entry delivered to
                // both, and an event that takes no identifier lock): its commit stands,
                // this step starts again and finds the event resolved.
                tx.rollback().await?;
                continue;
            }
            report.stored += stored;
            report.resolved += resolved;
            report.merges += delta.merges.len();
            report.reviews += written.reviews;
            report.removed.extend(delta.removed());
            report.changed.extend(delta.changed());
            if !late.is_empty() {
                // A region replay attaches events by their stored rows: the late events
                // published without one are stored first (unattached; the replay's
                // write attaches them).
                let unstored: Vec<&NormalizedEvent> = late
                    .iter()
                    .filter(|e| fresh.contains_key(&e.event_id))
                    .copied()
                    .collect();
                let stored = normalized::insert_unattached(&mut tx, &unstored).await?;
                if stored < unstored.len() {
                    tx.rollback().await?;
                    continue;
                }
                report.stored += stored;
                let seed: Vec<Identifier> = tainted_ids.iter().cloned().collect();
                let Some(region) = self
                    .lock_region(&mut tx, &seed, &newly_suspect, &mut keys)
                    .await?
                else {
                    tx.rollback().await?;
                    extra = keys;
                    continue;
                };
                let late_partners: HashMap<Identifier, PartnerSet> = seed
                    .iter()
                    .filter_map(|id| Some((id.clone(), partners.get(id)?.clone())))
                    .collect();
                let replayed = self
                    .rewrite_region(
                        &mut tx,
                        &late,
                        region,
                        late_partners,
                        &newly_suspect,
                        &replay::History::replay(),
                    )
                    .await?;
                report.absorb(replayed);
            }
            tx.commit().await?;
            report.changed.retain(|p| !report.removed.contains(p));
            return Ok((pending.len(), report));
        }
        Err(ResolveError::Contended(pending[0].event_id))
    }
}

impl Resolver {
    /// Tries the locks of `profiles` not among `keys` (the step's blocking ones). On
    /// `false` the caller rolls back: the next attempt takes `keys` and the profiles'
    /// locks up front (added to `extra`).
    async fn lock_profiles(
        &self,
        tx: &mut PgConnection,
        profiles: &BTreeSet<ProfileId>,
        keys: &BTreeSet<i64>,
        extra: &mut BTreeSet<i64>,
    ) -> Result<bool, sqlx::Error> {
        let profile_keys: BTreeSet<i64> = profiles
            .iter()
            .map(|p| profile_lock(*p))
            .filter(|k| !keys.contains(k))
            .collect();
        #[cfg(test)]
        self.paused().await;
        if try_lock_all(tx, &profile_keys).await? {
            return Ok(true);
        }
        extra.extend(keys.iter().copied());
        extra.extend(profile_keys);
        Ok(false)
    }
}

#[cfg(test)]
impl Resolver {
    /// Awaits the future a test left in [`pause`](Self::pause), once.
    async fn paused(&self) {
        let pause = self.pause.lock().expect("pause lock").take();
        if let Some(pause) = pause {
            pause.await;
        }
    }
}

/// Whether an identifier's owner changed between the step's first read (`before`) and
/// the read under the profile locks (`now`), or one of its owners is no longer live
/// (absent from `loaded`, which holds live profiles only). If so the caller rolls back,
/// and the next attempt takes up front (`extra`) the step's `keys`, the locks of the
/// profiles it `locked` and those of the owners now.
fn moved(
    before: &HashMap<Identifier, ProfileId>,
    now: &HashMap<Identifier, ProfileId>,
    loaded: &[store::LoadedProfile],
    keys: &BTreeSet<i64>,
    locked: &BTreeSet<ProfileId>,
    extra: &mut BTreeSet<i64>,
) -> bool {
    let live: BTreeSet<ProfileId> = loaded.iter().map(|p| p.id).collect();
    if now == before && before.values().all(|p| live.contains(p)) {
        return false;
    }
    extra.extend(keys.iter().copied());
    extra.extend(locked.iter().chain(now.values()).map(|p| profile_lock(*p)));
    true
}

/// The identifiers the candidates link by, sorted and unique.
fn linking_ids(candidates: &[(usize, Observation, Vec<Identifier>)]) -> Vec<Identifier> {
    let ids: BTreeSet<Identifier> = candidates
        .iter()
        .flat_map(|c| c.2.iter().cloned())
        .collect();
    ids.into_iter().collect()
}

/// The identifiers of `event` an erase can suppress (order references never are).
fn suppressible(event: &NormalizedEvent) -> impl Iterator<Item = &Identifier> {
    event.identifiers.iter().filter(|i| !i.is_order_reference())
}

/// Whether each event is pending, already resolved, or missing. Locks the events' rows
/// (in id order), so a delivery claimed by a second replica while the first is still
/// resolving it waits, then finds it resolved: an event is never applied twice.
async fn statuses(
    conn: &mut PgConnection,
    pending: &[&NormalizedEvent],
) -> Result<Vec<Status>, sqlx::Error> {
    let ids: Vec<Uuid> = pending.iter().map(|e| e.event_id).collect();
    let rows = sqlx::query(
        "SELECT event_id, profile_id, resolved_at IS NOT NULL AS resolved FROM normalized_event \
         WHERE event_id = ANY($1) ORDER BY event_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    let mut found: HashMap<Uuid, (Option<Uuid>, bool)> = HashMap::new();
    for r in rows {
        found.insert(r.get("event_id"), (r.get("profile_id"), r.get("resolved")));
    }
    Ok(pending
        .iter()
        .map(|e| match found.get(&e.event_id) {
            None => Status::New,
            Some((p, true)) => Status::Resolved(*p),
            Some((_, false)) => Status::Pending,
        })
        .collect())
}

/// Deletes events that carry an erased identifier (and their raw events, and orders no
/// profile holds): a person who asked to be forgotten is not re-ingested.
pub(crate) async fn drop_events(
    conn: &mut PgConnection,
    events: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM orders o USING normalized_event e \
         WHERE e.event_id = ANY($1) AND e.order_data IS NOT NULL AND o.source = e.source \
           AND o.external_order_id = e.order_data->>'order_id' AND o.profile_id IS NULL",
    )
    .bind(events)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM normalized_event WHERE event_id = ANY($1)")
        .bind(events)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM customer_raw_event WHERE id = ANY($1)")
        .bind(events)
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        count = events.len(),
        "dropped events carrying erased identifiers"
    );
    Ok(())
}
