//! A profile's recommended products as the `recommend` model last scored them: the one
//! read that the API, automations (message variables) and destinations (an export field)
//! share, so none of them needs the ML crate (and its LightGBM build) to use them.
//!
//! The recommender writes one `predictions` row per profile with `task = 'recommend'`
//! and `details.recommendations` = the top 10 products, best first, each `{sku, name,
//! category, score, source, reason}`. These functions read that row for the profile a
//! (possibly merged-away) id resolves to. A profile that was never scored has no
//! recommendations (an empty list), not an error; a stored list that is not that shape
//! is an error ([`StorageError::Invalid`]), never silently dropped.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::api::models::ProfileRecommendations;
use domain::profile::Recommendation;
use sqlx::PgPool;
use uuid::Uuid;

use crate::StorageError;

/// The products of a `recommend` prediction's details, best first (`recommendations`,
/// or `items` as older writers named it; absent: none).
pub fn from_details(details: &serde_json::Value) -> Result<Vec<Recommendation>, StorageError> {
    let Some(list) = ["recommendations", "items"]
        .iter()
        .find_map(|k| details.get(*k))
    else {
        return Ok(Vec::new());
    };
    serde_json::from_value(list.clone())
        .map_err(|e| StorageError::Invalid(format!("stored recommendations are malformed: {e}")))
}

/// The top `k` recommended products of the profile `id` resolves to (itself or the
/// survivor it was merged into), with the model version and time that scored it.
/// `None` when there is no such profile; empty `items` when it was never scored.
pub async fn for_profile(
    db: &PgPool,
    id: Uuid,
    k: usize,
) -> Result<Option<ProfileRecommendations>, StorageError> {
    let Some(survivor) = crate::customer360::resolve(db, id).await? else {
        return Ok(None);
    };
    let row: Option<(Uuid, DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
        "SELECT model_version_id, scored_at, details FROM predictions \
         WHERE profile_id = $1 AND task = 'recommend'",
    )
    .bind(survivor)
    .fetch_optional(db)
    .await?;
    let (model_version_id, scored_at, mut items) = match row {
        Some((m, at, details)) => (Some(m), Some(at), from_details(&details)?),
        None => (None, None, Vec::new()),
    };
    items.truncate(k);
    Ok(Some(ProfileRecommendations {
        profile_id: survivor,
        model_version_id,
        scored_at,
        items,
    }))
}

/// The top `k` recommended products of each of these live profiles (one query, for
/// exports and batch sends). Profiles never scored are absent from the map; ids are
/// taken as they are (resolve merged-away ids first).
pub async fn for_profiles(
    db: &PgPool,
    ids: &[Uuid],
    k: usize,
) -> Result<HashMap<Uuid, Vec<Recommendation>>, StorageError> {
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT profile_id, details FROM predictions \
         WHERE profile_id = ANY($1) AND task = 'recommend'",
    )
    .bind(ids)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, details)| {
            let mut items = from_details(&details)?;
            items.truncate(k);
            Ok((id, items))
        })
        .collect()
}

/// The products as template variables: `{"recommendations": [{sku, name, category,
/// reason}, ...], "recommended_skus": "A,B,C", "top_recommendation": {..}|null}` — what
/// an automation message or a destination field reads (`{{ recommendations.0.name }}`).
pub fn as_variables(items: &[Recommendation]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = items
        .iter()
        .map(|r| {
            serde_json::json!({
                "sku": r.sku,
                "name": r.name,
                "category": r.category,
                "reason": r.reason,
            })
        })
        .collect();
    serde_json::json!({
        "top_recommendation": list.first().cloned(),
        "recommended_skus": items.iter().map(|r| r.sku.as_str()).collect::<Vec<_>>().join(","),
        "recommendations": list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_in_both_shapes_and_malformed_ones() {
        let details = serde_json::json!({"recommendations": [
            {"sku": "A", "name": "Milk", "category": "Dairy", "score": 2.0, "source": "repeat",
             "reason": "bought 4 times"},
            {"sku": "B", "name": "Bread", "score": 1.0}]});
        let items = from_details(&details).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].reason.as_deref(), Some("bought 4 times"));
        assert_eq!(items[1].category, None);
        let old = serde_json::json!({"items": [{"sku": "A", "name": "a", "score": 0.5}]});
        assert_eq!(from_details(&old).unwrap()[0].sku, "A");
        assert!(from_details(&serde_json::json!({})).unwrap().is_empty());
        let bad = from_details(&serde_json::json!({"recommendations": [{"name": "no sku"}]}));
        assert!(matches!(bad, Err(StorageError::Invalid(m)) if m.contains("sku")));

        let vars = as_variables(&items);
        assert_eq!(vars["recommended_skus"], "A,B");
        assert_eq!(vars["top_recommendation"]["name"], "Milk");
        assert_eq!(vars["recommendations"][1]["name"], "Bread");
        assert!(vars["recommendations"][0].get("score").is_none());
        assert!(as_variables(&[])["top_recommendation"].is_null());
    }
}
