//! One profile's facts for the in-memory evaluator (`Rule::evaluate`), read from the
//! same rows the compiled SQL reads: the profile row, its orders' categories, its
//! latest predictions, its events of the types the rules look at, and the audiences it
//! currently belongs to.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use domain::audience::{EventFact, ProfileFacts, as_of_instant};
use domain::{EventType, IdentifierKind};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres};
use storage::Named;
use uuid::Uuid;

/// What of a profile's events to load: the types rules look at and how far back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventScope {
    /// Event types to load (none: no events).
    pub types: BTreeSet<EventType>,
    /// Days back from `as_of`.
    pub lookback_days: u32,
}

type ProfileRow = (
    Json<Value>,
    Json<Map<String, Value>>,
    i32,
    Decimal,
    Option<DateTime<Utc>>,
    Vec<String>,
    Json<Map<String, Value>>,
);

/// The facts of live profile `id` as of `as_of`; `None` when it does not exist or was
/// merged into another (it then belongs to no audience).
pub async fn load(
    db: &mut PgConnection,
    id: Uuid,
    scope: &EventScope,
    as_of: DateTime<Utc>,
) -> Result<Option<ProfileFacts>, sqlx::Error> {
    let as_of = as_of_instant(as_of);
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT identifiers, traits, orders_count, total_spent, last_order_at, channels, \
         category_affinity FROM customer_profile WHERE id = $1 AND merged_into IS NULL",
    )
    .bind(id)
    .fetch_optional(&mut *db)
    .await?;
    let Some((identifiers, traits, orders_count, total_spent, last_order_at, channels, affinity)) =
        row
    else {
        return Ok(None);
    };
    let identifier_kinds = identifiers
        .0
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("kind")?.as_str()?.parse::<IdentifierKind>().ok())
        .collect();
    let category_affinity: BTreeMap<String, f64> = affinity
        .0
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_f64()?)))
        .collect();

    let categories_bought: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT i.category FROM orders o JOIN order_items i ON i.order_id = o.id \
         WHERE o.profile_id = $1 AND i.category IS NOT NULL",
    )
    .bind(id)
    .fetch_all(&mut *db)
    .await?;

    let predictions: Vec<(String, Option<f64>, Option<String>)> = sqlx::query_as(
        "SELECT task, score, label FROM predictions WHERE profile_id = $1 \
         AND task IN ('churn', 'ltv', 'segment')",
    )
    .bind(id)
    .fetch_all(&mut *db)
    .await?;
    let mut facts = ProfileFacts {
        identifier_kinds,
        traits: traits.0,
        orders_count: i64::from(orders_count),
        total_spent,
        last_order_at,
        categories_bought: categories_bought.into_iter().collect(),
        channels: channels.into_iter().collect(),
        category_affinity,
        ..Default::default()
    };
    for (task, score, label) in predictions {
        match task.as_str() {
            "churn" => {
                facts.churn_score = score;
                facts.churn_label = label;
            }
            "ltv" => facts.predicted_ltv = score,
            _ => facts.segment = label,
        }
    }

    if !scope.types.is_empty() {
        let types: Vec<&str> = scope.types.iter().map(|t| t.as_str()).collect();
        let from = as_of - Duration::days(scope.lookback_days.into());
        let events: Vec<EventRow> = sqlx::query_as::<Postgres, EventRow>(
            "SELECT type, name, occurred_at, properties FROM normalized_event \
             WHERE profile_id = $1 AND type = ANY($2) AND occurred_at > $3 AND occurred_at <= $4 \
             ORDER BY occurred_at",
        )
        .bind(id)
        .bind(&types)
        .bind(from)
        .bind(as_of)
        .fetch_all(&mut *db)
        .await?;
        facts.events = events
            .into_iter()
            .map(|(t, name, occurred_at, props)| EventFact {
                event_type: t.0,
                name,
                occurred_at,
                properties: props.0,
            })
            .collect();
    }

    let audiences: Vec<Uuid> = sqlx::query_scalar(
        "SELECT audience_id FROM audience_membership WHERE profile_id = $1 AND current",
    )
    .bind(id)
    .fetch_all(&mut *db)
    .await?;
    facts.audiences = audiences.into_iter().collect();
    Ok(Some(facts))
}

type EventRow = (
    Named<EventType>,
    Option<String>,
    DateTime<Utc>,
    Json<Map<String, Value>>,
);
