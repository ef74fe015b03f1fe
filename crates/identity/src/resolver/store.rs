//! Reading the part of the identity graph an operation touches (and storing analysts'
//! constraints). Every query is set-based (arrays bound as parameters), so a batch of
//! events costs a fixed number of round trips. What changed is written by
//! [`write`](super::write::write).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use domain::profile::ProfileState;
use domain::{Channel, EventType, Identifier, IdentifierKind, NormalizedEvent, Order, Source};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use storage::OrDefault;
use uuid::Uuid;

use crate::engine::{Constraint, ConstraintRule, IdentifierNode, ProfileNode};
use crate::facts::ProfileFacts;
use crate::model::{EventKey, ProfileId, ProfileIds};
use crate::rules::PartnerSet;

/// The profile-id scheme the database stores (`profile_id_scheme`, written once by its
/// migration): the cut-over from which new profiles get time-ordered ids. Every engine
/// that names profiles stored in this database must use it.
pub async fn load_profile_ids(conn: impl sqlx::PgExecutor<'_>) -> Result<ProfileIds, sqlx::Error> {
    // Milliseconds, rounded up: an event id's millisecond is at or after the cut-over
    // exactly when it is at or after this.
    let ms: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN time_ordered_from = '-infinity' THEN $1 \
                     WHEN time_ordered_from = 'infinity' THEN $2 \
                     ELSE ceil(extract(epoch FROM time_ordered_from) * 1000)::bigint END \
         FROM profile_id_scheme",
    )
    .bind(i64::MIN)
    .bind(i64::MAX)
    .fetch_one(conn)
    .await?;
    Ok(ProfileIds::from_millis(ms))
}

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

/// Who owns each of `ids` now ([`owners`]), what the merger has learned of them
/// ([`identifier_states`]), and which of `ids` and `more` are on the suppression list
/// (erased), in one statement: a step's first read, once it holds the identifiers'
/// locks.
///
/// The states are final for the step: `identity_identifier` rows are only written by
/// transactions holding the identifier's lock (forward steps, region replays, erasures).
/// The owners are not (a merge moves an identifier under its *owner's* lock): the step
/// reads them again with the profiles, once it holds those ([`profiles_and_owners`]).
///
/// The suppression list stores SHA-256 of `kind:value`
/// ([`suppression_hash`](crate::model::suppression_hash)); Postgres computes it, and
/// only when the list has any row at all (a one-time filter), so a database without
/// erasures pays one probe of an empty table and nothing per identifier. Read after
/// the identifiers' locks are taken, in a statement of its own, so it sees every erase
/// that held them before (an erase writes `suppression` under the same locks).
pub(crate) async fn owners_states_and_suppressed(
    conn: &mut PgConnection,
    ids: &[Identifier],
    more: &[Identifier],
) -> Result<(IdentifierStates, BTreeSet<Identifier>), sqlx::Error> {
    let mut owners = HashMap::new();
    let mut states = HashMap::new();
    let mut suppressed = BTreeSet::new();
    if ids.is_empty() && more.is_empty() {
        return Ok(((owners, states), suppressed));
    }
    let (kinds, values) = split(ids);
    let (more_kinds, more_values) = split(more);
    let rows = sqlx::query(
        "SELECT u.kind, u.value, pi.profile_id, t.last_event_at, t.last_event_id, t.partners, \
                t.suspect, t.shared, t.kind IS NOT NULL AS known, FALSE AS suppressed \
         FROM unnest($1::text[], $2::text[]) AS u(kind, value) \
         LEFT JOIN profile_identifier pi ON pi.kind = u.kind AND pi.value = u.value \
         LEFT JOIN identity_identifier t ON t.kind = u.kind AND t.value = u.value \
         WHERE pi.kind IS NOT NULL OR t.kind IS NOT NULL \
         UNION ALL \
         SELECT u.kind, u.value, NULL, NULL, NULL, NULL, NULL, NULL, FALSE, TRUE \
         FROM (SELECT * FROM unnest($1::text[], $2::text[]) \
               UNION ALL SELECT * FROM unnest($3::text[], $4::text[])) AS u(kind, value) \
         WHERE EXISTS (SELECT 1 FROM suppression) \
           AND EXISTS (SELECT 1 FROM suppression s \
                       WHERE s.identifier_sha256 = sha256(convert_to(u.kind || ':' || u.value, 'UTF8')))",
    )
    .bind(&kinds)
    .bind(&values)
    .bind(&more_kinds)
    .bind(&more_values)
    .fetch_all(conn)
    .await?;
    for r in rows {
        let Some(id) = identifier(r.get("kind"), r.get("value")) else {
            continue;
        };
        if r.get::<bool, _>("suppressed") {
            suppressed.insert(id);
            continue;
        }
        if let Some(owner) = r.get::<Option<ProfileId>, _>("profile_id") {
            owners.insert(id.clone(), owner);
        }
        if r.get::<bool, _>("known") {
            states.insert(id, state_of(&r));
        }
    }
    Ok(((owners, states), suppressed))
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
    Ok(rows
        .iter()
        .filter_map(|r| Some((identifier(r.get("kind"), r.get("value"))?, state_of(r))))
        .collect())
}

/// Owners and learned states of identifiers ([`owners_states_and_suppressed`]).
pub(crate) type IdentifierStates = (
    HashMap<Identifier, ProfileId>,
    HashMap<Identifier, (IdentifierNode, PartnerSet)>,
);

/// An identifier state row of `identity_identifier` (owner left for the caller).
fn state_of(r: &sqlx::postgres::PgRow) -> (IdentifierNode, PartnerSet) {
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
    (node, partners.0)
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
    Ok(profiles_and_owners(conn, ids, &[]).await?.0)
}

/// Live profiles ([`profiles`]) and who owns each of `identifiers` now ([`owners`]), in
/// one statement. A step reads them once it holds the profiles' locks: the profiles are
/// then what it writes back from, and the owners tell whether one of its identifiers
/// moved before it held them (then it starts again).
pub(crate) async fn profiles_and_owners(
    conn: &mut PgConnection,
    ids: &[ProfileId],
    identifiers: &[Identifier],
) -> Result<(Vec<LoadedProfile>, HashMap<Identifier, ProfileId>), sqlx::Error> {
    let mut profiles = Vec::new();
    let mut owners = HashMap::new();
    if ids.is_empty() && identifiers.is_empty() {
        return Ok((profiles, owners));
    }
    let (kinds, values) = split(identifiers);
    // One round trip: each profile with what it holds, aggregated beside it; then the
    // owners, as rows with only `id`, `kind` and `value`.
    let rows = sqlx::query(
        "SELECT p.id, p.created_at, p.first_event_at, p.first_event_id, p.last_event_at, \
                p.last_event_id, p.name_keys, p.traits, p.state, p.first_seen_at, p.last_seen_at, \
                p.channels, h.kinds, h.vals, NULL::text AS kind, NULL::text AS value \
         FROM customer_profile p \
         LEFT JOIN LATERAL (SELECT array_agg(pi.kind) AS kinds, array_agg(pi.value) AS vals \
                            FROM profile_identifier pi WHERE pi.profile_id = p.id) h ON TRUE \
         WHERE p.id = ANY($1) AND p.merged_into IS NULL \
         UNION ALL \
         SELECT pi.profile_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                NULL, NULL, NULL, pi.kind, pi.value \
         FROM profile_identifier pi \
         JOIN unnest($2::text[], $3::text[]) AS u(kind, value) USING (kind, value)",
    )
    .bind(ids)
    .bind(&kinds)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        match r.get::<Option<&str>, _>("kind") {
            Some(kind) => {
                if let Some(id) = identifier(kind, r.get("value")) {
                    owners.insert(id, r.get("id"));
                }
            }
            None => profiles.push(profile_of(&r)),
        }
    }
    Ok((profiles, owners))
}

/// A profile row of [`profiles_and_owners`].
fn profile_of(r: &sqlx::postgres::PgRow) -> LoadedProfile {
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
    let state = r.get::<OrDefault<ProfileState>, _>("state").0;
    let channels: Vec<String> = r.get("channels");
    let facts = ProfileFacts {
        state,
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
            identifiers: held(r),
            names: names.into_iter().collect(),
        },
        facts,
    }
}

/// The identifiers a profile row of [`profiles`] holds (its aggregated `kinds`, `vals`).
fn held(r: &sqlx::postgres::PgRow) -> BTreeSet<Identifier> {
    let kinds: Option<Vec<String>> = r.get("kinds");
    let values: Option<Vec<String>> = r.get("vals");
    kinds
        .unwrap_or_default()
        .iter()
        .zip(values.unwrap_or_default())
        .filter_map(|(k, v)| identifier(k, v))
        .collect()
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
