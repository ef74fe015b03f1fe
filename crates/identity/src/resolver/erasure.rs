//! What an erase removes besides its own rows: the person's copies in Redis, and
//! Postgres rows that name them without belonging to their profile.
//!
//! The erase transaction (`requests.rs`) deletes the profile's rows, suppresses its
//! identifiers and, here, also deletes raw events never linked to any profile that carry
//! one of the identifiers (and their unresolved normalised events) and blanks CSV import
//! error texts naming one. It records the erasure in `erasure` — profile and event ids
//! only, never an identifier. After commit [`Resolver::scrub`] replaces the Customer 360
//! cache entries with tombstones and deletes the person's entries from every topic and
//! dead-letter stream (`streams::Streams::delete_matching`), then stamps `scrubbed_at`.
//! If Redis fails in between the request fails and is redelivered (or republished from
//! the outbox), and the retry finds the unscrubbed erasure and scrubs again.
//!
//! A topic entry is the person's when any id in its envelope (its own id, profile ids in
//! the payload) is one of the erased profiles or events, or when an identifier object
//! (`{"kind", "value"}`) in it hashes to one of the suppressed identifiers. A dead letter
//! is also theirs when its error text names such an id, or — on the first pass, while
//! the values are still known — one of the identifiers' values as a whole word.

use std::collections::HashSet;

use domain::Identifier;
use sqlx::{PgConnection, PgPool};
use streams::Topic;
use uuid::Uuid;

use super::{ResolveError, Resolver};
use crate::model::suppression_hash;

/// Shortest identifier value matched as text (shorter values could name anyone).
const MIN_TEXT_MATCH: usize = 6;

/// An erasure whose Redis copies are (still) to be removed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Erasure {
    /// The erased live profile.
    pub profile_id: Uuid,
    /// It and its tombstones.
    profiles: Vec<Uuid>,
    /// Its events, and unlinked events that carried its identifiers.
    events: Vec<Uuid>,
    ids: HashSet<Uuid>,
    hashes: HashSet<Vec<u8>>,
    /// Lower-cased identifier values, only while the erase itself runs.
    values: Vec<String>,
}

/// What a scrub removed from Redis.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scrubbed {
    /// Stream entries deleted from topics.
    pub entries: u64,
    /// Dead letters deleted.
    pub dead_letters: u64,
}

impl Erasure {
    /// The erasure of `profile_id` while its identifiers are still in hand.
    pub fn new(profile_id: Uuid, profiles: &[Uuid], events: &[Uuid], held: &[&Identifier]) -> Self {
        Self {
            profile_id,
            profiles: profiles.to_vec(),
            events: events.to_vec(),
            ids: profiles.iter().chain(events).copied().collect(),
            hashes: held.iter().map(|i| suppression_hash(i)).collect(),
            values: held
                .iter()
                .map(|i| text_value(i).to_lowercase())
                .filter(|v| v.len() >= MIN_TEXT_MATCH)
                .collect(),
        }
    }

    /// Records the erasure in `erasure` (merged with an earlier one of the same profile).
    pub async fn record(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO erasure (profile_id, profile_ids, event_ids) VALUES ($1, $2, $3) \
             ON CONFLICT (profile_id) DO UPDATE SET \
                 profile_ids = ARRAY(SELECT DISTINCT unnest(erasure.profile_ids || EXCLUDED.profile_ids)), \
                 event_ids = ARRAY(SELECT DISTINCT unnest(erasure.event_ids || EXCLUDED.event_ids)), \
                 scrubbed_at = NULL",
        )
        .bind(self.profile_id)
        .bind(&self.profiles)
        .bind(&self.events)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The unscrubbed erasure that covers `profile` (the erased profile or one of its
    /// tombstones), if any.
    pub async fn pending(db: &PgPool, profile: Uuid) -> Result<Option<Self>, sqlx::Error> {
        let row: Option<(Uuid, Vec<Uuid>, Vec<Uuid>)> = sqlx::query_as(
            "SELECT profile_id, profile_ids, event_ids FROM erasure \
             WHERE scrubbed_at IS NULL AND (profile_id = $1 OR $1 = ANY(profile_ids)) LIMIT 1",
        )
        .bind(profile)
        .fetch_optional(db)
        .await?;
        let Some((profile_id, profiles, events)) = row else {
            return Ok(None);
        };
        let hashes: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT identifier_sha256 FROM suppression WHERE erased_profile_id = $1",
        )
        .bind(profile_id)
        .fetch_all(db)
        .await?;
        Ok(Some(Self {
            profile_id,
            ids: profiles.iter().chain(&events).copied().collect(),
            profiles,
            events,
            hashes: hashes.into_iter().collect(),
            values: Vec::new(),
        }))
    }

    /// Whether a topic entry's field value is the person's: it names an erased id or
    /// carries a suppressed identifier, so the merger would not apply it anyway.
    pub fn names(&self, field: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(field).is_ok_and(|v| self.touches(&v))
    }

    /// Whether a dead letter's field value is the person's: as [`Erasure::names`], or
    /// an erased id written in text, or (on the first pass) one of their identifiers'
    /// values as a whole word. Text is matched only in dead letters, which no consumer
    /// will handle again by itself: a topic entry of someone else that merely mentions
    /// the person must still reach its consumer.
    pub fn matches(&self, field: &[u8]) -> bool {
        if self.names(field) {
            return true;
        }
        let text = String::from_utf8_lossy(field);
        if uuids_in(&text).any(|u| self.ids.contains(&u)) {
            return true;
        }
        if self.values.is_empty() {
            return false;
        }
        let text = text.to_lowercase();
        self.values.iter().any(|v| names_word(&text, v))
    }

    fn touches(&self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::String(s) => Uuid::parse_str(s).is_ok_and(|u| self.ids.contains(&u)),
            Value::Array(items) => items.iter().any(|v| self.touches(v)),
            Value::Object(map) => {
                if let (Some(Value::String(kind)), Some(Value::String(v))) =
                    (map.get("kind"), map.get("value"))
                    && let Ok(kind) = kind.parse()
                    && self.hashes.contains(&suppression_hash(&Identifier {
                        kind,
                        value: v.clone(),
                    }))
                {
                    return true;
                }
                map.values().any(|v| self.touches(v))
            }
            _ => false,
        }
    }
}

impl Resolver {
    /// Removes the erased person's copies from Redis: Customer 360 tombstones, then
    /// their entries in every topic and dead-letter stream; marks the erasure scrubbed.
    pub(crate) async fn scrub(&self, erasure: &Erasure) -> Result<Scrubbed, ResolveError> {
        self.cache
            .tombstone(&erasure.profiles)
            .await
            .map_err(|e| ResolveError::Redis(e.to_string()))?;
        let mut scrubbed = Scrubbed::default();
        let names = |field: &[u8]| erasure.names(field);
        let matches = |field: &[u8]| erasure.matches(field);
        for topic in Topic::ALL {
            let deleted = self
                .streams
                .delete_matching(topic, &names, &matches)
                .await
                .map_err(|e| ResolveError::Redis(e.to_string()))?;
            scrubbed.entries += deleted.entries;
            scrubbed.dead_letters += deleted.dead_letters;
        }
        sqlx::query("UPDATE erasure SET scrubbed_at = now() WHERE profile_id = $1")
            .bind(erasure.profile_id)
            .execute(&self.db)
            .await?;
        tracing::info!(
            profile_id = %erasure.profile_id,
            stream_entries = scrubbed.entries,
            dead_letters = scrubbed.dead_letters,
            "erased profile scrubbed from Redis"
        );
        Ok(scrubbed)
    }
}

/// Deletes events never linked to a profile that carry one of `held`: unresolved
/// normalised events holding one as an identifier, and raw events never normalised
/// whose payload holds one as a JSON string (case-insensitive), each with its raw
/// event; and blanks CSV import errors naming one. Returns the deleted event ids.
pub(crate) async fn erase_unlinked(
    conn: &mut PgConnection,
    held: &[&Identifier],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let (kinds, values) = super::store::split(held.iter().copied());
    let texts: Vec<String> = held
        .iter()
        .map(|i| text_value(i).to_lowercase())
        .filter(|v| v.len() >= MIN_TEXT_MATCH)
        .collect();
    let quoted: Vec<String> = texts.iter().map(|t| format!("\"{t}\"")).collect();
    // Rows a resolver has locked are skipped: it is resolving them under the
    // identifier locks this erase holds, so it will find them suppressed and drop them.
    let events: Vec<Uuid> = sqlx::query_scalar(
        "WITH unresolved AS ( \
             SELECT n.event_id FROM normalized_event n \
             WHERE n.profile_id IS NULL \
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(n.identifiers) x \
                           JOIN unnest($1::text[], $2::text[]) AS u(kind, value) \
                             ON u.kind = x->>'kind' AND u.value = x->>'value') \
             FOR UPDATE SKIP LOCKED), \
         unnormalized AS ( \
             SELECT r.id FROM customer_raw_event r \
             WHERE NOT EXISTS (SELECT 1 FROM normalized_event n WHERE n.event_id = r.id) \
               AND EXISTS (SELECT 1 FROM unnest($3::text[]) AS q \
                           WHERE strpos(lower(r.payload::text), q) > 0) \
             FOR UPDATE SKIP LOCKED) \
         SELECT event_id FROM unresolved UNION SELECT id FROM unnormalized",
    )
    .bind(&kinds)
    .bind(&values)
    .bind(&quoted)
    .fetch_all(&mut *conn)
    .await?;
    if !events.is_empty() {
        super::drop_events(conn, &events).await?;
    }
    sqlx::query(
        "UPDATE csv_import_errors SET reason = 'erased: this row named an erased person' \
         WHERE EXISTS (SELECT 1 FROM unnest($1::text[]) AS t \
                       WHERE strpos(lower(reason), t) > 0)",
    )
    .bind(&texts)
    .execute(&mut *conn)
    .await?;
    Ok(events)
}

/// The part of an identifier's value that appears in source payloads: namespaced ids
/// (`source:id`) appear without their namespace.
fn text_value(identifier: &Identifier) -> &str {
    use domain::IdentifierKind;
    match identifier.kind {
        IdentifierKind::CustomerId | IdentifierKind::PosCustomer => identifier
            .value
            .split_once(':')
            .map_or(identifier.value.as_str(), |(_, id)| id),
        _ => &identifier.value,
    }
}

/// Every uuid written in `text` (hyphenated form).
fn uuids_in(text: &str) -> impl Iterator<Item = Uuid> + '_ {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .filter(|t| t.len() == 36)
        .filter_map(|t| Uuid::parse_str(t).ok())
}

/// Whether `text` contains `word` not glued to further address-like characters (so
/// `ann@x.com` is not found in `joann@x.com`).
fn names_word(text: &str, word: &str) -> bool {
    let glued = |c: char| c.is_alphanumeric() || "._%+-@".contains(c);
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(glued) && !after.is_some_and(glued)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::IdentifierKind;

    fn email(v: &str) -> Identifier {
        Identifier {
            kind: IdentifierKind::Email,
            value: v.into(),
        }
    }

    #[test]
    fn matches_ids_hashes_and_whole_words_only() {
        let profile = Uuid::now_v7();
        let event = Uuid::now_v7();
        let held = email("ann@example.com");
        let e = Erasure::new(profile, &[profile], &[event], &[&held]);
        let envelope = serde_json::json!({"id": event, "payload": {}}).to_string();
        assert!(e.matches(envelope.as_bytes()));
        let request = serde_json::json!({"payload": {"profile_ids": [Uuid::now_v7(), profile]}});
        assert!(e.matches(request.to_string().as_bytes()));
        let normalized =
            serde_json::json!({"identifiers": [{"kind": "email", "value": "ann@example.com"}]});
        let hashed_only = Erasure {
            values: Vec::new(),
            ..e.clone()
        };
        assert!(hashed_only.matches(normalized.to_string().as_bytes()));
        assert!(e.matches(format!("bad event {event}: nope").as_bytes()));
        assert!(e.matches(b"invalid order for ANN@example.com"));
        assert!(!e.matches(b"invalid order for joann@example.com"));
        assert!(
            !e.matches(
                serde_json::json!({"id": Uuid::now_v7()})
                    .to_string()
                    .as_bytes()
            )
        );
        assert!(!hashed_only.matches(b"invalid order for ann@example.com"));
    }

    #[test]
    fn namespaced_ids_are_matched_without_their_namespace() {
        let id = Identifier {
            kind: IdentifierKind::CustomerId,
            value: "segment:user-4242".into(),
        };
        assert_eq!(text_value(&id), "user-4242");
        assert_eq!(text_value(&email("a@b.co")), "a@b.co");
    }
}
