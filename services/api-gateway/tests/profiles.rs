//! Profiles through the HTTP surface: search by any identifier normalised as ingest
//! does, filters, sorts and keyset pages, Customer 360 from the cache and from
//! Postgres, merged-away ids, timeline, merge history, predictions, recommendations and
//! similar products, GDPR export and erasure requests.

mod common;

use chrono::{Duration, Utc};
use common::{Credentials, Gateway, ProfileSeed, code};
use domain::api::{MergeRule, Role};
use redis::AsyncCommands as _;
use serde_json::Value;
use uuid::Uuid;

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_finds_profiles_by_any_identifier_as_typed() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let asha = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha Rao"),
            identifiers: vec![
                ("phone", "+919876543210"),
                ("email", "user@mail.com"),
                ("loyalty_id", "LOY-1"),
                ("customer_id", "shopify:1001"),
            ],
            ..ProfileSeed::default()
        },
    )
    .await;
    let other = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Ravi Kumar"),
            identifiers: vec![("email", "ravi@mail.com")],
            ..ProfileSeed::default()
        },
    )
    .await;
    // An identifier still pointing at a merged-away profile finds the survivor.
    let absorbed = common::seed_profile(
        db,
        ProfileSeed {
            identifiers: vec![("cookie_id", "ck-77")],
            ..ProfileSeed::default()
        },
    )
    .await;
    common::seed_merge(db, asha, absorbed, MergeRule::StrongIdentifier).await;

    let viewer = gw.session(Role::Viewer).await;
    for q in [
        "%2B91%2098765%2043210",
        "098765%2043210",
        "User%40Mail.com",
        "%20USER%40mail.COM%20",
        "loy-1",
        "Shopify:1001",
        "ck-77",
        "asha",
        "Asha%20R",
    ] {
        let (status, page) = gw.get(&format!("/profiles?q={q}"), &viewer).await;
        assert_eq!(status, 200, "{q}");
        assert_eq!(ids(&page), vec![asha.to_string()], "q={q}");
    }
    let (_, page) = gw.get("/profiles?q=ravi%40mail.com", &viewer).await;
    assert_eq!(ids(&page), vec![other.to_string()]);
    // Not a phone: no phone can match it.
    let (status, page) = gw
        .get("/profiles?q=user%40mail.com&kind=phone", &viewer)
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(ids(&page).is_empty());
    let (_, page) = gw.get("/profiles?q=9876543210&kind=phone", &viewer).await;
    assert_eq!(ids(&page), vec![asha.to_string()]);
    // `kind` without `q` restricts nothing.
    let (status, page) = gw.get("/profiles?kind=email", &viewer).await;
    assert_eq!(status, 200, "{page}");
    assert!(ids(&page).contains(&asha.to_string()));
    let (_, page) = gw.get("/profiles?q=asha", &viewer).await;
    let first = &page["items"][0];
    assert_eq!(first["display_name"], "Asha Rao");
    assert!(first["identifiers"].as_array().unwrap().len() >= 4);
}

#[tokio::test]
async fn filters_sorts_and_pages() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let now = Utc::now();
    let model = common::seed_model(db, "churn", "active").await;
    let seg = common::seed_model(db, "segment", "active").await;
    let mut all = Vec::new();
    for i in 0..7 {
        let id = common::seed_profile(
            db,
            ProfileSeed {
                last_seen_at: Some(now - Duration::days(i)),
                orders: (i as i32 * 3) % 5,
                ltv: ["10.50", "99.99", "5.00", "1200.00", "0", "42.10", "99.99"][i as usize],
                channels: if i % 2 == 0 {
                    vec!["web", "pos"]
                } else {
                    vec!["whatsapp"]
                },
                ..ProfileSeed::default()
            },
        )
        .await;
        common::seed_prediction(db, id, model, "churn", Some(i as f64 / 7.0), None).await;
        common::seed_prediction(
            db,
            id,
            seg,
            "segment",
            None,
            Some(if i < 3 { "Champions" } else { "At Risk" }),
        )
        .await;
        all.push(id);
    }
    // A profile without any activity sorts last.
    let quiet = common::seed_profile(
        db,
        ProfileSeed {
            last_seen_at: None,
            ..ProfileSeed::default()
        },
    )
    .await;
    let viewer = gw.token(Role::Viewer).await;

    // Default sort: last seen, newest first, paged by 3 without gaps or repeats.
    let mut seen = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            Some(c) => format!("/profiles?limit=3&cursor={c}"),
            None => "/profiles?limit=3".into(),
        };
        let (status, page) = gw.get(&path, &viewer).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = all.iter().map(ToString::to_string).collect();
    expected.push(quiet.to_string());
    assert_eq!(seen, expected);

    // Ascending puts the quiet one first.
    let (_, page) = gw.get("/profiles?order=asc&limit=2", &viewer).await;
    assert_eq!(ids(&page)[0], quiet.to_string());

    // LTV, descending, across pages (equal values tie-break by id).
    let mut by_ltv = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            Some(c) => format!("/profiles?sort=ltv&limit=2&cursor={c}"),
            None => "/profiles?sort=ltv&limit=2".into(),
        };
        let (_, page) = gw.get(&path, &viewer).await;
        for p in page["items"].as_array().unwrap() {
            by_ltv.push(p["lifetime_value"].as_f64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(by_ltv.len(), 8);
    assert!(by_ltv.windows(2).all(|w| w[0] >= w[1]), "{by_ltv:?}");
    let (_, page) = gw.get("/profiles?sort=orders&order=asc", &viewer).await;
    let orders: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["total_orders"].as_i64().unwrap())
        .collect();
    assert!(orders.windows(2).all(|w| w[0] <= w[1]), "{orders:?}");

    // Filters.
    let (_, page) = gw.get("/profiles?segment=Champions", &viewer).await;
    assert_eq!(ids(&page).len(), 3);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["segment"] == "Champions")
    );
    let (_, page) = gw.get("/profiles?churn_band=high", &viewer).await;
    // Scores 5/7 and 6/7 are at least 0.7.
    assert_eq!(ids(&page), vec![all[5].to_string(), all[6].to_string()]);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["churn_band"] == "high")
    );
    let (_, page) = gw.get("/profiles?channel=whatsapp", &viewer).await;
    assert_eq!(ids(&page).len(), 3);
    let from = (now - Duration::days(2) - Duration::hours(1)).to_rfc3339();
    let (_, page) = gw
        .get(
            &format!("/profiles?last_seen_from={}", urlencode(&from)),
            &viewer,
        )
        .await;
    assert_eq!(ids(&page).len(), 3);
    // A window open at the start holds the profiles last seen before its end, not the
    // one never seen.
    let before = (now - Duration::days(4) - Duration::hours(1)).to_rfc3339();
    let (_, page) = gw
        .get(
            &format!("/profiles?last_seen_to={}", urlencode(&before)),
            &viewer,
        )
        .await;
    assert_eq!(ids(&page), vec![all[5].to_string(), all[6].to_string()]);

    // Bad filters answer 400 with the reason.
    for bad in [
        "/profiles?sort=age",
        "/profiles?channel=fax",
        "/profiles?churn_band=extreme",
        "/profiles?last_seen_from=yesterday",
        "/profiles?limit=500",
        "/profiles?cursor=abc",
    ] {
        let (status, body) = gw.get(bad, &viewer).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let to = (now - Duration::days(5)).to_rfc3339();
    let (status, page) = gw
        .get(
            &format!(
                "/profiles?last_seen_from={}&last_seen_to={}",
                urlencode(&from),
                urlencode(&to)
            ),
            &viewer,
        )
        .await;
    assert_eq!(
        status, 200,
        "a window that ends before it starts is empty: {page}"
    );
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0));
    // A cursor of one sort is refused by another.
    let (_, page) = gw.get("/profiles?limit=1", &viewer).await;
    let c = page["next_cursor"].as_str().unwrap();
    let (status, body) = gw
        .get(&format!("/profiles?sort=ltv&cursor={c}"), &viewer)
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_cursor");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn customer_360_comes_from_postgres_then_the_cache_and_follows_merges() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let survivor = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha Rao"),
            identifiers: vec![("email", "asha@mail.com"), ("phone", "+919876543210")],
            orders: 2,
            ltv: "1000.00",
            ..ProfileSeed::default()
        },
    )
    .await;
    let absorbed = common::seed_profile(db, ProfileSeed::default()).await;
    common::seed_merge(db, survivor, absorbed, MergeRule::StrongIdentifier).await;
    common::seed_order(
        db,
        survivor,
        "600.00",
        "Apparel",
        Utc::now() - Duration::days(2),
    )
    .await;
    // The merger moves an absorbed profile's orders to the survivor.
    common::seed_order(
        db,
        survivor,
        "400.00",
        "Shoes",
        Utc::now() - Duration::days(20),
    )
    .await;
    let model = common::seed_model(db, "churn", "active").await;
    common::seed_prediction(db, survivor, model, "churn", Some(0.82), None).await;
    let viewer = gw.token(Role::Viewer).await;

    let resp = gw
        .request(
            reqwest::Method::GET,
            &format!("/profiles/{survivor}"),
            &viewer,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "miss");
    let body: Value = resp.json().await.unwrap();
    let doc = &body["profile"];
    assert_eq!(doc["profile_id"], survivor.to_string());
    assert_eq!(body["merged_into"], Value::Null);
    assert_eq!(doc["display_name"], "Asha Rao");
    assert_eq!(doc["total_orders"], 2);
    assert_eq!(doc["lifetime_value"], 1000.0);
    assert_eq!(doc["average_order_value"], 500.0);
    assert_eq!(doc["identifiers"].as_array().unwrap().len(), 2);
    assert_eq!(doc["identifiers"][0]["source"], "shopify");
    assert_eq!(doc["purchase_history"].as_array().unwrap().len(), 2);
    assert_eq!(doc["purchase_history"][0]["items"][0]["sku"], "TEE-1");
    assert_eq!(doc["predictions"][0]["task"], "churn");
    assert_eq!(doc["predictions"][0]["model_version_id"], model.to_string());
    assert_eq!(doc["predictions"][0]["algorithm"], "lightgbm");
    assert_eq!(
        doc["merged_profile_ids"],
        serde_json::json!([absorbed.to_string()])
    );
    assert!(doc["category_affinity"].is_object());
    assert_eq!(doc["traits"]["city"], "Pune");

    // The read refilled the cache; the next one is served from it.
    let key = format!("{}c360:{survivor}", gw.env.prefix());
    let cached: Option<String> = gw.env.redis.clone().get(&key).await.unwrap();
    assert!(cached.is_some());
    let resp = gw
        .request(
            reqwest::Method::GET,
            &format!("/profiles/{survivor}"),
            &viewer,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-cache"], "hit");
    // What the merger writes to the cache is what is served.
    let mut changed: Value = serde_json::from_str(&cached.unwrap()).unwrap();
    changed["display_name"] = "Asha R.".into();
    let _: () = gw
        .env
        .redis
        .clone()
        .set(&key, changed.to_string())
        .await
        .unwrap();
    let (_, body) = gw.get(&format!("/profiles/{survivor}"), &viewer).await;
    assert_eq!(body["profile"]["display_name"], "Asha R.");

    // A merged-away id answers with the survivor.
    let (status, body) = gw.get(&format!("/profiles/{absorbed}"), &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(body["requested_id"], absorbed.to_string());
    assert_eq!(body["merged_into"], survivor.to_string());
    assert_eq!(body["profile"]["profile_id"], survivor.to_string());

    let (status, body) = gw
        .get(&format!("/profiles/{}", Uuid::now_v7()), &viewer)
        .await;
    assert_eq!(status, 404);
    assert_eq!(code(&body), "not_found");
    let (status, body) = gw.get("/profiles/12345", &viewer).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_path");
}

#[tokio::test]
async fn timeline_merge_history_and_predictions() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let survivor = common::seed_profile(db, ProfileSeed::default()).await;
    let absorbed = common::seed_profile(db, ProfileSeed::default()).await;
    let merge = common::seed_merge(db, survivor, absorbed, MergeRule::StrongIdentifier).await;
    let unrelated = common::seed_profile(db, ProfileSeed::default()).await;
    common::seed_merge_log(db, unrelated, Uuid::now_v7(), MergeRule::Manual).await;
    let now = Utc::now();
    let mut events = Vec::new();
    for i in 0..5 {
        let owner = if i % 2 == 0 { survivor } else { absorbed };
        let kind = if i == 4 {
            "order_placed"
        } else {
            "product_viewed"
        };
        events.push(common::seed_event(db, owner, kind, now - Duration::hours(i)).await);
    }
    common::seed_event(db, unrelated, "product_viewed", now).await;
    let viewer = gw.session(Role::Viewer).await;

    let mut seen = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            Some(c) => format!("/profiles/{absorbed}/timeline?limit=2&cursor={c}"),
            None => format!("/profiles/{absorbed}/timeline?limit=2"),
        };
        let (status, page) = gw.get(&path, &viewer).await;
        assert_eq!(status, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            seen.push(e["event_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = events.iter().map(ToString::to_string).collect();
    assert_eq!(seen, expected, "newest first, both profiles, nothing else");
    let (_, page) = gw
        .get(
            &format!("/profiles/{survivor}/timeline?type=order_placed"),
            &viewer,
        )
        .await;
    assert_eq!(ids_of(&page, "event_id"), vec![events[4].to_string()]);
    let (status, _) = gw
        .get(
            &format!("/profiles/{survivor}/timeline?type=teleported"),
            &viewer,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .get(&format!("/profiles/{}/timeline", Uuid::now_v7()), &viewer)
        .await;
    assert_eq!(status, 404);

    let (status, page) = gw
        .get(&format!("/profiles/{survivor}/merges"), &viewer)
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), vec![merge.to_string()]);
    assert_eq!(page["items"][0]["absorbed_ids"][0], absorbed.to_string());

    let model = common::seed_model(db, "segment", "active").await;
    common::seed_prediction(db, survivor, model, "segment", None, Some("Loyal")).await;
    let (status, preds) = gw
        .get(&format!("/profiles/{absorbed}/predictions"), &viewer)
        .await;
    assert_eq!(status, 200);
    assert_eq!(preds[0]["task"], "segment");
    assert_eq!(preds[0]["label"], "Loyal");
    assert_eq!(preds[0]["algorithm"], "lightgbm");
}

/// What the recommendation model wrote (`ml::scoring` details and
/// `product_similarity`, as `crates/ml/tests/pipeline.rs` proves it writes them) is what
/// the two endpoints serve, bounded by `k`, through merges, to viewers.
#[tokio::test]
async fn recommendations_and_similar_products() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let survivor = common::seed_profile(db, ProfileSeed::default()).await;
    let absorbed = common::seed_profile(db, ProfileSeed::default()).await;
    common::seed_merge(db, survivor, absorbed, MergeRule::StrongIdentifier).await;
    let never_scored = common::seed_profile(db, ProfileSeed::default()).await;
    let viewer = gw.session(Role::Viewer).await;

    let (status, body) = gw.get("/products/MILK/similar", &viewer).await;
    assert_eq!(
        (status, code(&body)),
        (404, "not_found"),
        "no active model yet"
    );

    let model = common::seed_model(db, "recommend", "active").await;
    let retired = common::seed_model(db, "recommend", "retired").await;
    let items: Vec<Value> = (0..10)
        .map(|i| {
            serde_json::json!({"sku": format!("SKU-{i}"), "name": format!("Product {i}"),
                "category": "Dairy", "score": 10.0 - f64::from(i), "source": "repeat",
                "reason": format!("bought {} times", 10 - i)})
        })
        .collect();
    sqlx::query(
        "INSERT INTO predictions (profile_id, task, model_version_id, details)          VALUES ($1, 'recommend', $2, $3)",
    )
    .bind(survivor)
    .bind(model)
    .bind(serde_json::json!({"model": "item2vec_blend", "recommendations": items}))
    .execute(db)
    .await
    .unwrap();
    for (version, similar) in [(model, "BREAD"), (retired, "EGGS")] {
        sqlx::query(
            "INSERT INTO product_similarity (model_version_id, sku, rank, similar_sku, similarity)              VALUES ($1, 'MILK', 1, $2, 0.9), ($1, 'MILK', 2, 'BUTTER', 0.5)",
        )
        .bind(version)
        .bind(similar)
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO products (sku, name, category) VALUES ('BREAD', 'Bread', 'Bakery')")
        .execute(db)
        .await
        .unwrap();

    let (status, recs) = gw
        .get(
            &format!("/profiles/{absorbed}/recommendations?k=3"),
            &viewer,
        )
        .await;
    assert_eq!(status, 200, "{recs}");
    assert_eq!(recs["profile_id"], survivor.to_string());
    assert_eq!(recs["model_version_id"], model.to_string());
    let got = recs["items"].as_array().unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["sku"], "SKU-0");
    assert_eq!(got[0]["reason"], "bought 10 times");
    assert_eq!(got[2]["name"], "Product 2");
    let (_, all) = gw
        .get(&format!("/profiles/{survivor}/recommendations"), &viewer)
        .await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        10,
        "default k is 10"
    );
    let (status, none) = gw
        .get(
            &format!("/profiles/{never_scored}/recommendations"),
            &viewer,
        )
        .await;
    assert_eq!(status, 200);
    assert!(none["items"].as_array().unwrap().is_empty() && none["model_version_id"].is_null());
    for bad in ["k=0", "k=11", "k=ten"] {
        let (status, body) = gw
            .get(
                &format!("/profiles/{survivor}/recommendations?{bad}"),
                &viewer,
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = gw
        .get(
            &format!("/profiles/{}/recommendations", Uuid::now_v7()),
            &viewer,
        )
        .await;
    assert_eq!(status, 404);

    let (status, similar) = gw.get("/products/MILK/similar?k=5", &viewer).await;
    assert_eq!(status, 200, "{similar}");
    assert_eq!(
        similar["model_version_id"],
        model.to_string(),
        "the active version's rows"
    );
    let got = similar["items"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0]["sku"].as_str(), got[0]["name"].as_str()),
        (Some("BREAD"), Some("Bread"))
    );
    assert_eq!(got[0]["category"], "Bakery");
    assert_eq!(got[1]["name"], "BUTTER", "no catalogue name: the SKU");
    let (_, one) = gw.get("/products/MILK/similar?k=1", &viewer).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let (status, body) = gw.get("/products/NOPE/similar", &viewer).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, _) = gw.get("/products/MILK/similar?k=99", &viewer).await;
    assert_eq!(status, 400);
}

fn ids_of(page: &Value, field: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn gdpr_export_and_erase_request() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let survivor = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha"),
            identifiers: vec![("email", "asha@mail.com")],
            ..ProfileSeed::default()
        },
    )
    .await;
    let absorbed = common::seed_profile(
        db,
        ProfileSeed {
            identifiers: vec![("cookie_id", "ck-1")],
            ..ProfileSeed::default()
        },
    )
    .await;
    common::seed_merge(db, survivor, absorbed, MergeRule::StrongIdentifier).await;
    common::seed_event(db, absorbed, "page_viewed", Utc::now()).await;
    common::seed_order(db, survivor, "12.00", "Apparel", Utc::now()).await;
    let admin = gw.session(Role::Admin).await;

    let (status, export) = gw
        .get(&format!("/profiles/{absorbed}/export"), &admin)
        .await;
    assert_eq!(status, 200);
    assert_eq!(export["profile_id"], survivor.to_string());
    assert_eq!(export["identifiers"].as_array().unwrap().len(), 2);
    assert_eq!(export["events"].as_array().unwrap().len(), 1);
    assert_eq!(export["orders"][0]["items"][0]["sku"], "TEE-1");
    assert_eq!(export["orders"][0]["source"], "shopify");
    assert_eq!(export["orders"][0]["status"], "paid");
    assert_eq!(export["orders"][0]["channel"], "web");
    assert_eq!(export["merges"].as_array().unwrap().len(), 1);
    assert_eq!(export["traits"]["city"], "Pune");

    // Erasure is a request to the merger.
    let (status, accepted) = gw
        .post(&format!("/profiles/{survivor}/erase"), &admin, Value::Null)
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["action"], "erase");
    let entries = gw.stream_entries(streams::Topic::MergeRequests).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], accepted["request_id"]);
    assert_eq!(entries[0]["payload"]["action"], "erase");
    assert_eq!(entries[0]["payload"]["profile_id"], survivor.to_string());
    assert!(
        entries[0]["payload"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin-")
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_merge_requests WHERE action = 'erase' AND entry_id IS NOT NULL \
         AND published_at IS NOT NULL AND envelope->>'id' = id::text",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(recorded, 1);

    let (status, body) = gw
        .post(&format!("/profiles/{absorbed}/erase"), &admin, Value::Null)
        .await;
    assert_eq!(status, 409, "erase the survivor instead: {body}");
    let (status, _) = gw
        .post(
            &format!("/profiles/{}/erase", Uuid::now_v7()),
            &admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        gw.stream_entries(streams::Topic::MergeRequests).await.len(),
        1
    );
    let _ = Credentials::Anonymous;
}

#[tokio::test]
async fn an_erase_accepted_while_redis_refuses_it_is_published_by_the_outbox_relay() {
    let gw = Gateway::start_with(vec![("OUTBOX_RELAY_AFTER_SECS", "0".to_owned())]).await;
    let db = gw.db();
    let asha = common::seed_profile(
        db,
        ProfileSeed {
            identifiers: vec![("email", "asha@mail.com")],
            ..ProfileSeed::default()
        },
    )
    .await;
    let admin = gw.session(Role::Admin).await;
    // The stream's key holds a string: every XADD to it fails, as with Redis down.
    let key = streams::Topic::MergeRequests.key(gw.env.prefix());
    let mut redis = gw.env.redis.clone();
    let () = redis.set(&key, "not a stream").await.unwrap();

    let (status, accepted) = gw
        .post(&format!("/profiles/{asha}/erase"), &admin, Value::Null)
        .await;
    assert_eq!(
        status, 202,
        "the request is durable in Postgres: {accepted}"
    );
    let id: Uuid = accepted["request_id"].as_str().unwrap().parse().unwrap();
    let unpublished: bool = sqlx::query_scalar(
        "SELECT published_at IS NULL AND entry_id IS NULL FROM api_merge_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap();
    assert!(unpublished);

    // Redis recovers: the gateway's relay publishes the stored envelope.
    let () = redis.del(&key).await.unwrap();
    let entries = test_support::eventually(20, "the relay publishing the erase", || async {
        let entries = gw.stream_entries(streams::Topic::MergeRequests).await;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], id.to_string());
    assert_eq!(entries[0]["payload"]["action"], "erase");
    assert_eq!(entries[0]["payload"]["profile_id"], asha.to_string());
    test_support::eventually(20, "the request marked published", || async {
        let published: bool = sqlx::query_scalar(
            "SELECT published_at IS NOT NULL FROM api_merge_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
        published.then_some(())
    })
    .await;
}
