//! Reading the part of the identity graph an operation touches, and writing back what
//! changed. Every query is set-based (arrays bound as parameters), so a batch of events
//! costs a fixed number of round trips.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use domain::profile::ProfileState;
use domain::{Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Order, Source};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::engine::{
    Constraint, ConstraintRule, IdentifierNode, MergeRecord, PartnerSet, ProfileNode, ReviewRecord,
};
use crate::facts::ProfileFacts;
use crate::model::{EventKey, ProfileId, is_order_ref};
use crate::rules::Withheld;

/// Splits identifiers into parallel kind and value arrays for binding.
pub(crate) fn split(
    ids: impl IntoIterator<Item = impl std::borrow::Borrow<Identifier>>,
) -> (Vec<String>, Vec<String>) {
    ids.into_iter()
        .map(|i| {
            let i = i.borrow();
            (i.kind.as_str().to_owned(), i.value.clone())
        })
        .unzip()
}

fn identifier(kind: &str, value: String) -> Option<Identifier> {
    Some(Identifier {
        kind: kind.parse::<IdentifierKind>().ok()?,
        value,
    })
}

/// Who owns each of `ids` now.
pub(crate) async fn owners(
    conn: &mut PgConnection,
    ids: &[Identifier],
) -> Result<HashMap<Identifier, ProfileId>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (kinds, values) = split(ids);
    let rows = sqlx::query(
        "SELECT pi.kind, pi.value, pi.profile_id FROM profile_identifier pi \
         JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value)",
    )
    .bind(&kinds)
    .bind(&values)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                identifier(r.get("kind"), r.get("value"))?,
                r.get("profile_id"),
            ))
        })
        .collect())
}

/// What the merger has learned of `ids`: latest event, suspect flag and partners.
pub(crate) async fn identifier_states(
    conn: &mut PgConnection,
    ids: &[Identifier],
) -> Result<HashMap<Identifier, (IdentifierNode, PartnerSet)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (kinds, values) = split(ids);
    let rows = sqlx::query(
        "SELECT t.kind, t.value, t.last_event_at, t.last_event_id, t.partners, t.suspect, t.shared \
         FROM identity_identifier t \
         JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value)",
    )
    .bind(&kinds)
    .bind(&values)
    .fetch_all(conn)
    .await?;
    let mut out = HashMap::new();
    for r in rows {
        let Some(id) = identifier(r.get("kind"), r.get("value")) else {
            continue;
        };
        let partners: Json<PartnerSet> = r.get("partners");
        let node = IdentifierNode {
            owner: None,
            suspect: r.get("suspect"),
            shared: r.get("shared"),
            last_key: Some(EventKey {
                occurred_at: r.get("last_event_at"),
                event_id: r.get("last_event_id"),
            }),
        };
        out.insert(id, (node, partners.0));
    }
    Ok(out)
}

/// A live profile as the resolver needs it.
pub(crate) struct LoadedProfile {
    pub id: ProfileId,
    pub node: ProfileNode,
    pub facts: ProfileFacts,
}

/// Loads live profiles (skipping tombstones and unknown ids) with what they hold.
pub(crate) async fn profiles(
    conn: &mut PgConnection,
    ids: &[ProfileId],
) -> Result<Vec<LoadedProfile>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT id, created_at, first_event_at, first_event_id, last_event_at, last_event_id, \
                name_keys, traits, state, first_seen_at, last_seen_at, channels \
         FROM customer_profile WHERE id = ANY($1) AND merged_into IS NULL",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let live: Vec<ProfileId> = rows.iter().map(|r| r.get("id")).collect();
    let held = sqlx::query(
        "SELECT kind, value, profile_id FROM profile_identifier WHERE profile_id = ANY($1)",
    )
    .bind(&live)
    .fetch_all(&mut *conn)
    .await?;
    let mut holdings: HashMap<ProfileId, BTreeSet<Identifier>> = HashMap::new();
    for r in held {
        if let Some(id) = identifier(r.get("kind"), r.get("value")) {
            holdings.entry(r.get("profile_id")).or_default().insert(id);
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let id: ProfileId = r.get("id");
            let created: DateTime<Utc> = r.get("created_at");
            let first_key = EventKey {
                occurred_at: r
                    .get::<Option<DateTime<Utc>>, _>("first_event_at")
                    .unwrap_or(created),
                event_id: r.get::<Option<Uuid>, _>("first_event_id").unwrap_or(id),
            };
            let last_key = EventKey {
                occurred_at: r
                    .get::<Option<DateTime<Utc>>, _>("last_event_at")
                    .unwrap_or(created),
                event_id: r.get::<Option<Uuid>, _>("last_event_id").unwrap_or(id),
            };
            let names: Vec<String> = r.get("name_keys");
            let traits: Json<Map<String, Value>> = r.get("traits");
            let state: Json<Value> = r.get("state");
            let channels: Vec<String> = r.get("channels");
            let facts = ProfileFacts {
                state: serde_json::from_value::<ProfileState>(state.0).unwrap_or_default(),
                traits: traits.0,
                first_seen_at: r.get("first_seen_at"),
                last_seen_at: r.get("last_seen_at"),
                channels: channels
                    .iter()
                    .filter_map(|c| c.parse::<Channel>().ok())
                    .collect(),
            };
            LoadedProfile {
                id,
                node: ProfileNode {
                    first_key,
                    last_key,
                    identifiers: holdings.remove(&id).unwrap_or_default(),
                    names: names.into_iter().collect(),
                },
                facts,
            }
        })
        .collect())
}

/// Constraints mentioning any of `ids`.
pub(crate) async fn constraints_touching(
    conn: &mut PgConnection,
    ids: &[Identifier],
) -> Result<Vec<Constraint>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (kinds, values) = split(ids);
    let rows = sqlx::query(
        "SELECT c.id, c.rule, c.left_identifiers, c.right_identifiers FROM identity_constraint c \
         WHERE c.id IN (SELECT m.constraint_id FROM identity_constraint_member m \
                        JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value))",
    )
    .bind(&kinds)
    .bind(&values)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(constraint_of).collect())
}

/// Every constraint (rebuild).
pub(crate) async fn all_constraints(
    conn: &mut PgConnection,
) -> Result<Vec<Constraint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, rule, left_identifiers, right_identifiers FROM identity_constraint ORDER BY created_at, id",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(constraint_of).collect())
}

fn constraint_of(r: sqlx::postgres::PgRow) -> Option<Constraint> {
    let rule = match r.get::<&str, _>("rule") {
        "must_link" => ConstraintRule::MustLink,
        _ => ConstraintRule::CannotLink,
    };
    let left: Json<BTreeSet<Identifier>> = r.try_get("left_identifiers").ok()?;
    let right: Json<BTreeSet<Identifier>> = r.try_get("right_identifiers").ok()?;
    Some(Constraint {
        id: r.get("id"),
        rule,
        left: left.0,
        right: right.0,
    })
}

/// Stores a constraint.
pub(crate) async fn insert_constraint(
    conn: &mut PgConnection,
    c: &Constraint,
    origin: &str,
    origin_id: Option<Uuid>,
    actor: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identity_constraint (id, rule, left_identifiers, right_identifiers, origin, origin_id, actor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(c.id)
    .bind(c.rule.as_str())
    .bind(Json(&c.left))
    .bind(Json(&c.right))
    .bind(origin)
    .bind(origin_id)
    .bind(actor)
    .execute(&mut *conn)
    .await?;
    let (kinds, values) = split(c.left.iter().chain(c.right.iter()));
    sqlx::query(
        "INSERT INTO identity_constraint_member (kind, value, constraint_id) \
         SELECT k, v, $3 FROM unnest($1::text[], $2::text[]) AS u(k, v) ON CONFLICT DO NOTHING",
    )
    .bind(&kinds)
    .bind(&values)
    .bind(c.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored event row, back in the normalised shape.
pub(crate) fn event_of(r: &sqlx::postgres::PgRow) -> Option<NormalizedEvent> {
    let identifiers: Json<Vec<Identifier>> = r.try_get("identifiers").ok()?;
    let traits: Json<Map<String, Value>> = r.try_get("traits").ok()?;
    let properties: Json<Map<String, Value>> = r.try_get("properties").ok()?;
    let order: Option<Json<Order>> = r.try_get("order_data").ok().flatten();
    Some(NormalizedEvent {
        event_id: r.get("event_id"),
        occurred_at: r.get("occurred_at"),
        received_at: r.get("received_at"),
        source: r.get::<&str, _>("source").parse::<Source>().ok()?,
        integration_id: r.get("integration_id"),
        channel: r.get::<&str, _>("channel").parse::<Channel>().ok()?,
        event_type: r.get::<&str, _>("type").parse::<EventType>().ok()?,
        name: r.get("name"),
        identifiers: identifiers.0,
        traits: traits.0,
        properties: properties.0,
        order: order.map(|o| o.0),
    })
}

/// The columns [`event_of`] reads.
pub(crate) const EVENT_COLUMNS: &str = "event_id, occurred_at, received_at, source, integration_id, channel, type, \
     name, identifiers, traits, properties, order_data";

/// The profiles of events that carry one of `ids` without their profile holding it.
pub(crate) async fn refusing_profiles(
    conn: &mut PgConnection,
    ids: &[Identifier],
) -> Result<BTreeSet<ProfileId>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let (kinds, values) = split(ids);
    let rows: Vec<Option<Uuid>> = sqlx::query_scalar(
        "SELECT DISTINCT e.profile_id FROM identity_refused_link r \
         JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value) \
         JOIN normalized_event e ON e.event_id = r.event_id",
    )
    .bind(&kinds)
    .bind(&values)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().flatten().collect())
}

/// A live profile's row as written.
pub(crate) struct ProfileWrite<'a> {
    pub id: ProfileId,
    pub node: &'a ProfileNode,
    pub facts: &'a ProfileFacts,
}

/// Inserts or rewrites live profiles (reviving a tombstone if the id comes back).
pub(crate) async fn upsert_profiles(
    conn: &mut PgConnection,
    rows: &[ProfileWrite<'_>],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(2_000) {
        let mut ids = Vec::new();
        let mut first_at = Vec::new();
        let mut first_id = Vec::new();
        let mut last_at = Vec::new();
        let mut last_id = Vec::new();
        let mut names = Vec::new();
        let mut display = Vec::new();
        let mut identifiers = Vec::new();
        let mut traits = Vec::new();
        let mut first_seen = Vec::new();
        let mut last_seen = Vec::new();
        let mut channels = Vec::new();
        let mut affinity = Vec::new();
        let mut states = Vec::new();
        for r in chunk {
            ids.push(r.id);
            first_at.push(r.node.first_key.occurred_at);
            first_id.push(r.node.first_key.event_id);
            last_at.push(r.node.last_key.occurred_at);
            last_id.push(r.node.last_key.event_id);
            names.push(Json(r.node.names.iter().cloned().collect::<Vec<_>>()));
            display.push(r.facts.display_name());
            let listed: Vec<&Identifier> = r
                .node
                .identifiers
                .iter()
                .filter(|i| !is_order_ref(i))
                .collect();
            identifiers.push(Json(serde_json::to_value(&listed).unwrap_or_default()));
            traits.push(Json(r.facts.traits.clone()));
            first_seen.push(r.facts.first_seen_at);
            last_seen.push(r.facts.last_seen_at);
            channels.push(Json(
                r.facts
                    .channels
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>(),
            ));
            let at = r.facts.last_seen_at.unwrap_or(r.node.last_key.occurred_at);
            affinity.push(Json(r.facts.state.category_affinity(at)));
            states.push(Json(r.facts.state.clone()));
        }
        sqlx::query(
            "INSERT INTO customer_profile (id, first_event_at, first_event_id, last_event_at, last_event_id, \
                 name_keys, display_name, identifiers, traits, first_seen_at, last_seen_at, channels, \
                 category_affinity, state) \
             SELECT u.id, u.fa, u.fi, u.la, u.li, \
                    ARRAY(SELECT jsonb_array_elements_text(u.names)), u.display, u.identifiers, u.traits, \
                    u.fs, u.ls, ARRAY(SELECT jsonb_array_elements_text(u.channels)), u.affinity, u.state \
             FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::timestamptz[], $5::uuid[], \
                         $6::jsonb[], $7::text[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], \
                         $11::timestamptz[], $12::jsonb[], $13::jsonb[], $14::jsonb[]) \
                  AS u(id, fa, fi, la, li, names, display, identifiers, traits, fs, ls, channels, affinity, state) \
             ON CONFLICT (id) DO UPDATE SET \
                 merged_into = NULL, merged_at = NULL, updated_at = now(), version = customer_profile.version + 1, \
                 first_event_at = EXCLUDED.first_event_at, first_event_id = EXCLUDED.first_event_id, \
                 last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id, \
                 name_keys = EXCLUDED.name_keys, display_name = EXCLUDED.display_name, \
                 identifiers = EXCLUDED.identifiers, traits = EXCLUDED.traits, \
                 first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at, \
                 channels = EXCLUDED.channels, category_affinity = EXCLUDED.category_affinity, \
                 state = EXCLUDED.state",
        )
        .bind(&ids)
        .bind(&first_at)
        .bind(&first_id)
        .bind(&last_at)
        .bind(&last_id)
        .bind(&names)
        .bind(&display)
        .bind(&identifiers)
        .bind(&traits)
        .bind(&first_seen)
        .bind(&last_seen)
        .bind(&channels)
        .bind(&affinity)
        .bind(&states)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Turns `absorbed` profiles into tombstones of `into` (pairs), moving their events,
/// identifiers and orders, and dropping their stale predictions, features and queued
/// prediction requests.
pub(crate) async fn tombstone(
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
    for (table, column) in [
        ("normalized_event", "profile_id"),
        ("profile_identifier", "profile_id"),
        ("orders", "profile_id"),
    ] {
        sqlx::query(&format!(
            "UPDATE {table} t SET {column} = u.into_id \
             FROM unnest($1::uuid[], $2::uuid[]) AS u(from_id, into_id) WHERE t.{column} = u.from_id"
        ))
        .bind(&from)
        .bind(&into)
        .execute(&mut *conn)
        .await?;
    }
    for table in ["predictions", "features", "identity_prediction_outbox"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE profile_id = ANY($1)"))
            .bind(&from)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// One identifier sighting: the identifier, the profile that holds it, the event's
/// source and time.
pub(crate) struct Sighting<'a> {
    pub identifier: &'a Identifier,
    pub profile: ProfileId,
    pub source: Source,
    pub at: DateTime<Utc>,
}

/// Holder, source of the first sighting, first and last time, count.
pub(crate) type Seen = (ProfileId, Source, DateTime<Utc>, DateTime<Utc>, i64);

/// Records sightings in the identifier index: claims or moves the identifier to its
/// profile, widens first/last seen, counts it.
pub(crate) async fn upsert_holdings(
    conn: &mut PgConnection,
    sightings: &[Sighting<'_>],
) -> Result<(), sqlx::Error> {
    // Aggregate per identifier first: one row each per statement.
    let mut agg: BTreeMap<&Identifier, Seen> = BTreeMap::new();
    for s in sightings {
        let e = agg
            .entry(s.identifier)
            .or_insert((s.profile, s.source, s.at, s.at, 0));
        e.0 = s.profile;
        if s.at < e.2 {
            e.2 = s.at;
            e.1 = s.source;
        }
        e.3 = e.3.max(s.at);
        e.4 += 1;
    }
    let rows: Vec<(&Identifier, Seen)> = agg.into_iter().collect();
    upsert_seen(conn, &rows).await
}

/// Writes aggregated sightings (see [`upsert_holdings`]).
pub(crate) async fn upsert_seen(
    conn: &mut PgConnection,
    rows: &[(&Identifier, Seen)],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(5_000) {
        let (kinds, values) = split(chunk.iter().map(|(i, _)| *i));
        let profiles: Vec<Uuid> = chunk.iter().map(|(_, a)| a.0).collect();
        let sources: Vec<&str> = chunk.iter().map(|(_, a)| a.1.as_str()).collect();
        let firsts: Vec<DateTime<Utc>> = chunk.iter().map(|(_, a)| a.2).collect();
        let lasts: Vec<DateTime<Utc>> = chunk.iter().map(|(_, a)| a.3).collect();
        let counts: Vec<i64> = chunk.iter().map(|(_, a)| a.4).collect();
        sqlx::query(
            "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at, seen_count) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], \
                                  $6::timestamptz[], $7::bigint[]) \
             ON CONFLICT (kind, value) DO UPDATE SET profile_id = EXCLUDED.profile_id, \
                 first_seen_at = LEAST(profile_identifier.first_seen_at, EXCLUDED.first_seen_at), \
                 source = CASE WHEN EXCLUDED.first_seen_at < profile_identifier.first_seen_at \
                               THEN EXCLUDED.source ELSE profile_identifier.source END, \
                 last_seen_at = GREATEST(profile_identifier.last_seen_at, EXCLUDED.last_seen_at), \
                 seen_count = profile_identifier.seen_count + EXCLUDED.seen_count",
        )
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

/// What the merger writes about one identifier.
pub(crate) struct IdentifierWrite {
    /// The latest event carrying it.
    pub last_key: EventKey,
    /// Its partners.
    pub partners: PartnerSet,
    /// Suspect (sticky: never cleared).
    pub suspect: bool,
    /// Shared (as recomputed: a replay may clear it).
    pub shared: bool,
}

impl IdentifierWrite {
    /// The write for a graph node.
    pub fn of(node: &IdentifierNode, partners: PartnerSet) -> Option<Self> {
        Some(Self {
            last_key: node.last_key?,
            partners,
            suspect: node.suspect,
            shared: node.shared,
        })
    }
}

/// Writes identifier states (latest event kept as the later of stored and given; the
/// partner set as given, since it was read and merged under the identifier's lock),
/// and flags the index rows of suspect or shared identifiers.
pub(crate) async fn upsert_identifier_states(
    conn: &mut PgConnection,
    states: &BTreeMap<Identifier, IdentifierWrite>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = states.iter().collect();
    for chunk in rows.chunks(5_000) {
        let (kinds, values) = split(chunk.iter().map(|(i, _)| *i));
        let at: Vec<DateTime<Utc>> = chunk.iter().map(|(_, s)| s.last_key.occurred_at).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|(_, s)| s.last_key.event_id).collect();
        let partners: Vec<Json<&PartnerSet>> =
            chunk.iter().map(|(_, s)| Json(&s.partners)).collect();
        let suspect: Vec<bool> = chunk.iter().map(|(_, s)| s.suspect).collect();
        let shared: Vec<bool> = chunk.iter().map(|(_, s)| s.shared).collect();
        sqlx::query(
            "INSERT INTO identity_identifier (kind, value, last_event_at, last_event_id, partners, suspect, \
                                             suspect_since, shared) \
             SELECT k, v, a, i, p, s, CASE WHEN s THEN now() END, sh \
             FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[], $5::jsonb[], $6::bool[], \
                         $7::bool[]) AS u(k, v, a, i, p, s, sh) \
             ON CONFLICT (kind, value) DO UPDATE SET \
                 last_event_id = CASE WHEN (EXCLUDED.last_event_at, EXCLUDED.last_event_id) \
                                           > (identity_identifier.last_event_at, identity_identifier.last_event_id) \
                                      THEN EXCLUDED.last_event_id ELSE identity_identifier.last_event_id END, \
                 last_event_at = GREATEST(identity_identifier.last_event_at, EXCLUDED.last_event_at), \
                 partners = EXCLUDED.partners, \
                 suspect = identity_identifier.suspect OR EXCLUDED.suspect, \
                 suspect_since = COALESCE(identity_identifier.suspect_since, EXCLUDED.suspect_since), \
                 shared = EXCLUDED.shared",
        )
        .bind(&kinds)
        .bind(&values)
        .bind(&at)
        .bind(&ids)
        .bind(&partners)
        .bind(&suspect)
        .bind(&shared)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE profile_identifier pi SET suspect = u.flag \
             FROM unnest($1::text[], $2::text[], $3::bool[]) AS u(k, v, flag) \
             WHERE pi.kind = u.k AND pi.value = u.v AND pi.suspect <> u.flag",
        )
        .bind(&kinds)
        .bind(&values)
        .bind(
            suspect
                .iter()
                .zip(&shared)
                .map(|(a, b)| *a || *b)
                .collect::<Vec<bool>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Sets each event's profile and marks it resolved.
pub(crate) async fn assign_events(
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

/// Records events that carry identifiers their profile does not hold.
pub(crate) async fn insert_refused(
    conn: &mut PgConnection,
    refused: &[(Identifier, Uuid, Withheld)],
) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = refused
        .iter()
        .filter(|r| r.2 != Withheld::Suspect)
        .collect();
    for chunk in rows.chunks(5_000) {
        let (kinds, values) = split(chunk.iter().map(|r| &r.0));
        let events: Vec<Uuid> = chunk.iter().map(|r| r.1).collect();
        let reasons: Vec<String> = chunk
            .iter()
            .map(|r| {
                serde_json::to_value(r.2)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
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
pub(crate) async fn insert_merges(
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
pub(crate) async fn insert_reviews(
    conn: &mut PgConnection,
    reviews: &[ReviewRecord],
    final_of: &(dyn Fn(ProfileId) -> ProfileId + Sync),
) -> Result<usize, sqlx::Error> {
    let mut raised = 0;
    for r in reviews {
        let mut candidates: Vec<Uuid> = r.profiles.iter().map(|p| final_of(*p)).collect();
        candidates.sort();
        candidates.dedup();
        if candidates.len() < 2 {
            continue; // a later event of the batch already merged them
        }
        let reasons: Vec<Value> = r
            .reasons
            .iter()
            .map(|(p, why)| serde_json::json!({"profile_id": final_of(*p), "reason": why.as_str()}))
            .collect();
        let evidence = serde_json::json!({
            "identifiers": r.identifiers.iter().filter(|i| !is_order_ref(i)).collect::<Vec<_>>(),
            "reasons": reasons,
            "event_profile_id": final_of(r.profiles[0]),
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
pub(crate) async fn attribute_orders(
    conn: &mut PgConnection,
    orders: &[(Source, String, ProfileId)],
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<_> = orders.to_vec();
    sorted.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    sorted.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let sources: Vec<&str> = sorted.iter().map(|o| o.0.as_str()).collect();
    let ids: Vec<&str> = sorted.iter().map(|o| o.1.as_str()).collect();
    let profiles: Vec<Uuid> = sorted.iter().map(|o| o.2).collect();
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

/// Recomputes the order aggregates of `profiles` from the `orders` table: orders that
/// were not cancelled, spend net of refunds, the most used currency, the last order.
pub(crate) async fn refresh_order_aggregates(
    conn: &mut PgConnection,
    profiles: &[ProfileId],
) -> Result<(), sqlx::Error> {
    for chunk in profiles.chunks(10_000) {
        sqlx::query(
            "UPDATE customer_profile p SET \
                 orders_count = COALESCE(a.n, 0), total_spent = COALESCE(a.spent, 0), \
                 currency = COALESCE(a.currency, p.currency), last_order_at = a.last_order_at \
             FROM unnest($1::uuid[]) AS ids(id) \
             LEFT JOIN (SELECT profile_id, count(*)::int AS n, sum(total - refunded_total) AS spent, \
                               mode() WITHIN GROUP (ORDER BY currency) AS currency, \
                               max(placed_at) AS last_order_at \
                        FROM orders WHERE profile_id = ANY($1) AND status <> 'cancelled' \
                        GROUP BY profile_id) a ON a.profile_id = ids.id \
             WHERE p.id = ids.id",
        )
        .bind(chunk)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Queues prediction requests for `profiles`, due `debounce` after their first
/// unpublished change.
pub(crate) async fn queue_predictions(
    conn: &mut PgConnection,
    profiles: &[ProfileId],
    debounce: std::time::Duration,
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
