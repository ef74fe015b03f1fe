//! A profile's recommended products read back as the API, automations and destinations
//! use them: through a merged-away id, truncated to `k`, batch-read, never-scored
//! profiles empty, malformed stored lists an error.

use storage::StorageError;
use storage::recommendations::{as_variables, for_profile, for_profiles};
use test_support::TestEnv;
use uuid::Uuid;

async fn profile(env: &TestEnv, merged_into: Option<Uuid>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO customer_profile (id, merged_into, merged_at) \
         VALUES ($1, $2, CASE WHEN $2 IS NULL THEN NULL ELSE now() END)",
    )
    .bind(id)
    .bind(merged_into)
    .execute(&env.db)
    .await
    .unwrap();
    id
}

async fn scored(env: &TestEnv, profile: Uuid, model: Uuid, details: serde_json::Value) {
    sqlx::query(
        "INSERT INTO predictions (profile_id, task, model_version_id, details) \
         VALUES ($1, 'recommend', $2, $3)",
    )
    .bind(profile)
    .bind(model)
    .bind(details)
    .execute(&env.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn stored_recommendations_for_one_profile_and_many() {
    let env = TestEnv::new().await;
    let model = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO model_version (id, task, algorithm, feature_set_version, artefact, status) \
         VALUES ($1, 'recommend', 'item2vec_blend', 1, '{}', 'active')",
    )
    .bind(model)
    .execute(&env.db)
    .await
    .unwrap();
    let survivor = profile(&env, None).await;
    let absorbed = profile(&env, Some(survivor)).await;
    let never_scored = profile(&env, None).await;
    let broken = profile(&env, None).await;
    let items: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({"sku": format!("SKU-{i}"), "name": format!("Product {i}"),
                "category": "Dairy", "score": 10.0 - f64::from(i), "source": "repeat",
                "reason": format!("bought {} times", 10 - i)})
        })
        .collect();
    scored(
        &env,
        survivor,
        model,
        serde_json::json!({"model": "item2vec_blend", "recommendations": items}),
    )
    .await;
    scored(
        &env,
        broken,
        model,
        serde_json::json!({"recommendations": [{"name": "no sku"}]}),
    )
    .await;

    // Through the merged-away id, the survivor's top 3, best first.
    let recs = for_profile(&env.db, absorbed, 3).await.unwrap().unwrap();
    assert_eq!(recs.profile_id, survivor);
    assert_eq!(recs.model_version_id, Some(model));
    assert!(recs.scored_at.is_some());
    let skus: Vec<&str> = recs.items.iter().map(|r| r.sku.as_str()).collect();
    assert_eq!(skus, ["SKU-0", "SKU-1", "SKU-2"]);
    assert_eq!(recs.items[0].name, "Product 0");
    assert_eq!(recs.items[0].category.as_deref(), Some("Dairy"));
    assert_eq!(recs.items[0].reason.as_deref(), Some("bought 10 times"));
    let vars = as_variables(&recs.items);
    assert_eq!(vars["recommended_skus"], "SKU-0,SKU-1,SKU-2");
    assert_eq!(vars["top_recommendation"]["reason"], "bought 10 times");

    // Never scored: empty, not an error; no such profile: None.
    let none = for_profile(&env.db, never_scored, 10)
        .await
        .unwrap()
        .unwrap();
    assert!(none.items.is_empty() && none.model_version_id.is_none());
    assert!(
        for_profile(&env.db, Uuid::now_v7(), 10)
            .await
            .unwrap()
            .is_none()
    );
    // A malformed stored list is an error, not an empty list.
    let err = for_profile(&env.db, broken, 10).await.unwrap_err();
    assert!(matches!(err, StorageError::Invalid(_)), "{err}");

    // Many at once: scored profiles only, each truncated.
    let many = for_profiles(&env.db, &[survivor, never_scored], 5)
        .await
        .unwrap();
    assert_eq!(many.len(), 1);
    assert_eq!(many[&survivor].len(), 5);
    assert_eq!(many[&survivor][4].sku, "SKU-4");
    assert!(for_profiles(&env.db, &[survivor, broken], 5).await.is_err());
}
