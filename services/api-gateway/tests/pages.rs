//! The Overview KPIs, the model registry, and what the gateway serves besides the API
//! (the dashboard with its client-side routes, the OpenAPI viewer), plus CORS,
//! compression and request ids.

mod common;

use chrono::{Duration, Utc};
use common::{Credentials, Gateway, ProfileSeed, code};
use domain::api::{MergeRule, Role};
use uuid::Uuid;

#[tokio::test]
async fn overview_counts_the_period() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let now = Utc::now();
    let a = common::seed_profile(
        db,
        ProfileSeed {
            created_at: now - Duration::hours(2),
            ..ProfileSeed::default()
        },
    )
    .await;
    let b = common::seed_profile(
        db,
        ProfileSeed {
            created_at: now - Duration::days(40),
            ..ProfileSeed::default()
        },
    )
    .await;
    let c = common::seed_profile(db, ProfileSeed::default()).await;
    common::seed_merge(db, a, c, MergeRule::StrongIdentifier).await;
    common::seed_order(db, a, "100.00", "Apparel", now - Duration::hours(1)).await;
    common::seed_order(db, b, "50.50", "Shoes", now - Duration::hours(1)).await;
    common::seed_order(db, b, "999.00", "Shoes", now - Duration::days(60)).await;
    for i in 0..3 {
        common::seed_event(db, a, "page_viewed", now - Duration::minutes(30 + i)).await;
    }
    common::seed_review(db, &[a, b]).await;
    let churn = common::seed_model(db, "churn", "active").await;
    let seg = common::seed_model(db, "segment", "active").await;
    common::seed_prediction(db, a, churn, "churn", Some(0.9), None).await;
    common::seed_prediction(db, b, churn, "churn", Some(0.1), None).await;
    common::seed_prediction(db, a, seg, "segment", None, Some("Champions")).await;

    let viewer = gw.session(Role::Viewer).await;
    let from = (now - Duration::hours(4)).to_rfc3339().replace('+', "%2B");
    let (status, o) = gw.get(&format!("/overview?from={from}"), &viewer).await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        o["profiles_total"], 2,
        "merged-away profiles are not counted"
    );
    assert_eq!(o["profiles_new"], 1);
    assert_eq!(o["events_total"], 3);
    let series = o["events_per_minute"].as_array().unwrap();
    assert!((120..=240).contains(&series.len()), "{}", series.len());
    assert_eq!(
        series
            .iter()
            .map(|p| p["count"].as_i64().unwrap())
            .sum::<i64>(),
        3
    );
    assert_eq!(o["orders"], 2);
    assert_eq!(o["revenue"][0]["currency"], "INR");
    assert_eq!(o["revenue"][0]["amount"], 150.5);
    assert_eq!(o["merges"], 1);
    assert_eq!(o["review_items_pending"], 1);
    let bands: Vec<(String, i64)> = o["churn_risk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["band"].as_str().unwrap().to_owned(),
                b["profiles"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bands,
        vec![("low".into(), 1), ("medium".into(), 0), ("high".into(), 1)]
    );
    assert_eq!(o["segments"][0]["segment"], "Champions");
    assert_eq!(o["top_categories"][0]["category"], "Apparel");
    assert_eq!(o["top_products"][0]["sku"], "TEE-1");
    assert_eq!(o["top_products"][0]["units"], 2);

    let (status, o) = gw.get("/overview", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(o["orders"], 2, "default period is 30 days");
    // Revenue per day: every day of the period, the orders on theirs.
    let days = o["revenue_per_day"].as_array().unwrap();
    assert!((30..=31).contains(&days.len()), "{}", days.len());
    assert!(days.iter().all(|d| d["currency"] == "INR"));
    let amounts: f64 = days.iter().map(|d| d["amount"].as_f64().unwrap()).sum();
    assert!((amounts - 150.5).abs() < 1e-9, "{amounts}");
    let order_day = (now - Duration::hours(1)).date_naive().to_string();
    let busy = days
        .iter()
        .find(|d| d["day"] == order_day.as_str())
        .unwrap();
    assert_eq!(busy["orders"], 2);
    assert!(
        days.windows(2)
            .all(|w| w[0]["day"].as_str() < w[1]["day"].as_str())
    );
    // An empty period is answered, empty; a century-long one too, its per-day revenue
    // cut to the last ten years.
    let (status, empty) = gw
        .get(&format!("/overview?from={from}&to={from}"), &viewer)
        .await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["events_total"], 0);
    assert_eq!(empty["events_per_minute"].as_array().map(Vec::len), Some(0));
    let (status, long) = gw.get("/overview?from=1926-01-01T00:00:00Z", &viewer).await;
    assert_eq!(status, 200, "{long}");
    let long_days = long["revenue_per_day"].as_array().unwrap();
    let currencies = long["revenue"].as_array().unwrap().len();
    assert!(
        currencies > 0 && long_days.len() == 3660 * currencies,
        "{}",
        long_days.len()
    );
    assert!(long["events_per_minute"].as_array().unwrap().len() <= 240);
    let (status, _) = gw.get("/overview?from=last-week", &viewer).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn model_registry() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let old = common::seed_model(db, "churn", "retired").await;
    let active = common::seed_model(db, "churn", "active").await;
    let ltv = common::seed_model(db, "ltv", "active").await;
    let viewer = gw.token(Role::Viewer).await;

    let (status, page) = gw.get("/models?task=churn", &viewer).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![active.to_string(), old.to_string()]);
    let (_, page) = gw.get("/models?status=retired", &viewer).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, page) = gw.get("/models?limit=1", &viewer).await;
    assert!(page["next_cursor"].is_string());

    let (status, act) = gw.get("/models/active", &viewer).await;
    assert_eq!(status, 200);
    let tasks: Vec<&str> = act
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, vec!["churn", "ltv"]);
    let (status, one) = gw.get(&format!("/models/{ltv}"), &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(one["metrics"]["roc_auc"], 0.81);
    let (status, _) = gw
        .get(&format!("/models/{}", Uuid::now_v7()), &viewer)
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw.get("/models?task=astrology", &viewer).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_dashboard_is_served_with_client_side_routes() {
    let dir = std::env::temp_dir().join(format!("dash-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("index.html"), "<html>app shell</html>").unwrap();
    std::fs::write(
        dir.join("pkg/app.js"),
        "console.log('x'.repeat(100));".repeat(20),
    )
    .unwrap();
    let gw = Gateway::start_with(vec![("DASHBOARD_DIR", dir.display().to_string())]).await;
    let get = |path: &str| gw.http.get(format!("{}{path}", gw.base)).send();

    for path in ["/", "/profiles/0192", "/merges/review"] {
        let resp = get(path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.text().await.unwrap(),
            "<html>app shell</html>",
            "{path}"
        );
    }
    let js = get("/pkg/app.js").await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(
        get("/pkg/missing.js").await.unwrap().status(),
        404,
        "missing files are 404"
    );
    let api = get("/api/v1/unknown").await.unwrap();
    assert_eq!(api.status(), 404);
    assert_eq!(
        code(&api.json().await.unwrap()),
        "not_found",
        "never the app shell"
    );

    // Compression and request ids.
    // A client that leaves decompression to the test.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let resp = raw
        .get(format!("{}/pkg/app.js", gw.base))
        .header("accept-encoding", "gzip")
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let resp = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "one is made up when absent"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_openapi_viewer_is_served_from_local_files() {
    let dir = std::env::temp_dir().join(format!("viewer-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("swagger-ui-bundle.js"),
        "window.SwaggerUIBundle = () => {};",
    )
    .unwrap();
    let gw = Gateway::start_with(vec![("OPENAPI_VIEWER_DIR", dir.display().to_string())]).await;
    let page = gw
        .http
        .get(format!("{}/api/docs/", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/v1/openapi.json"));
    assert!(html.contains("/api/docs/assets/swagger-ui-bundle.js"));
    let asset = gw
        .http
        .get(format!("{}/api/docs/assets/swagger-ui-bundle.js", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    let redirect = gw
        .http
        .get(format!("{}/api/docs", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn cors_admits_only_configured_origins() {
    let gw = Gateway::start_with(vec![("CORS_ORIGINS", "https://app.example".into())]).await;
    let preflight = |origin: &'static str| {
        gw.http
            .request(reqwest::Method::OPTIONS, gw.url("/profiles"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let no = preflight("https://evil.example").await.unwrap();
    assert!(!no.headers().contains_key("access-control-allow-origin"));
    let _ = Credentials::Anonymous;
}
