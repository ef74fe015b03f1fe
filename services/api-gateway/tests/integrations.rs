//! Integrations through the HTTP surface: create, list, enable/disable, secrets,
//! webhook URLs, delivery logs and the test event.

mod common;

use common::{Gateway, code};
use domain::api::Role;
use serde_json::{Value, json};
use streams::Topic;
use uuid::Uuid;

#[tokio::test]
async fn integrations_lifecycle_and_secrets() {
    let gw = Gateway::start_with(vec![("PUBLIC_BASE_URL", "https://in.example.com/".into())]).await;
    let admin = gw.session(Role::Admin).await;
    let viewer = gw.token(Role::Viewer).await;

    let (status, created) = gw
        .post(
            "/integrations",
            &admin,
            json!({"kind": "shopify", "name": "Main store"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["integration"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32);
    assert_eq!(
        created["integration"]["webhook_url"],
        format!("https://in.example.com/webhooks/shopify/{id}")
    );
    assert_eq!(
        created["integration"]["secret_hint"],
        format!("…{}", &secret[secret.len() - 4..])
    );

    let (status, page) = gw.get("/integrations", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["id"], id.as_str());
    assert!(
        !page.to_string().contains(&secret),
        "lists never carry secrets"
    );
    let (status, one) = gw.get(&format!("/integrations/{id}"), &viewer).await;
    assert_eq!(status, 200);
    assert!(
        one["authentication"]
            .as_str()
            .unwrap()
            .contains("X-Shopify-Hmac-Sha256")
    );
    assert_eq!(one["label"], "Shopify");
    let steps = one["setup_steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s
            .as_str()
            .unwrap()
            .contains(&format!("https://in.example.com/webhooks/shopify/{id}"))),
        "the setup steps carry this integration's URL: {steps:?}"
    );

    let (status, shown) = gw.get(&format!("/integrations/{id}/secret"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(shown["secret"], secret.as_str());

    let (status, rotated) = gw
        .post(
            &format!("/integrations/{id}/rotate-secret"),
            &admin,
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let found =
        storage::integrations::find_by_secret(gw.db(), &gw.env.secrets_key(), "shopify", &secret)
            .await
            .unwrap();
    assert!(found.is_none(), "the old secret is gone");

    let (status, off) = gw
        .patch(
            &format!("/integrations/{id}"),
            &admin,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(off["enabled"], false);

    // Bad input.
    let (status, body) = gw
        .post(
            "/integrations",
            &admin,
            json!({"kind": "shopify", "name": "Main store"}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "conflict"));
    let (status, _) = gw
        .post("/integrations", &admin, json!({"kind": "fax", "name": "x"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .post(
            "/integrations",
            &admin,
            json!({"kind": "pos", "name": "  "}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .post(
            "/integrations",
            &admin,
            json!({"kind": "pos", "name": "x", "secret": "short"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .patch(
            &format!("/integrations/{id}"),
            &admin,
            json!({"enabled": "yes"}),
        )
        .await;
    assert_eq!(status, 400);
    for path in ["", "/secret", "/deliveries"] {
        let (status, body) = gw
            .get(&format!("/integrations/{}{path}", Uuid::now_v7()), &admin)
            .await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{path}");
    }
    // A CSV integration has no webhook.
    let (_, csv) = gw
        .post(
            "/integrations",
            &admin,
            json!({"kind": "csv", "name": "exports"}),
        )
        .await;
    assert!(csv["integration"]["webhook_url"].is_null());
}

#[tokio::test]
async fn source_kinds_come_from_the_registry() {
    let gw = Gateway::start().await;
    let viewer = gw.token(Role::Viewer).await;
    let (status, kinds) = gw.get("/sources", &viewer).await;
    assert_eq!(status, 200);
    let kinds = kinds.as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    let registered: Vec<&str> = ingestion::sources::all()
        .map(|c| c.source().as_str())
        .collect();
    assert_eq!(names, registered);
    let kind = |k: &str| kinds.iter().find(|v| v["kind"] == k).unwrap();
    assert_eq!(kind("twilio")["label"], "Twilio WhatsApp");
    assert_eq!(kind("segment")["secret_name"], "write key");
    assert_eq!(kind("csv")["receives_deliveries"], false);
    assert_eq!(kind("pos")["receives_deliveries"], true);
    assert!(kind("shopify")["own_secret_hint"].is_string());
    assert!(kind("pos")["own_secret_hint"].is_null());
}

#[tokio::test]
async fn delivery_log_pages_newest_first() {
    let gw = Gateway::start().await;
    let integration =
        ingestion::integrations::create(gw.db(), &gw.env.secrets_key(), "pos", "tills", None)
            .await
            .unwrap();
    for i in 0..5 {
        sqlx::query(
            "INSERT INTO connection_logs (integration_id, at, endpoint, status, latency_ms, error) \
             VALUES ($1, now() - make_interval(secs => $2), 'pos', $3, 1.5, $4)",
        )
        .bind(integration.id)
        .bind(f64::from(i))
        .bind(if i == 0 { 401_i16 } else { 202 })
        .bind(if i == 0 { Some("bad token") } else { None })
        .execute(gw.db())
        .await
        .unwrap();
    }
    let viewer = gw.token(Role::Viewer).await;
    let path = format!("/integrations/{}/deliveries?limit=3", integration.id);
    let (status, first) = gw.get(&path, &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["items"][0]["status"], 401);
    assert_eq!(first["items"][0]["error"], "bad token");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = gw.get(&format!("{path}&cursor={cursor}"), &viewer).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn a_test_event_goes_through_the_ingestion_store_and_stream() {
    let gw = Gateway::start().await;
    let integration =
        ingestion::integrations::create(gw.db(), &gw.env.secrets_key(), "segment", "web", None)
            .await
            .unwrap();
    let analyst = gw.session(Role::Analyst).await;
    let (status, accepted) = gw
        .post(
            &format!("/integrations/{}/test-event", integration.id),
            &analyst,
            Value::Null,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let raw_id: Uuid = accepted["raw_event_id"].as_str().unwrap().parse().unwrap();

    let (source, kind, payload, integration_id): (String, String, Value, Option<Uuid>) =
        sqlx::query_as(
            "SELECT source, kind, payload, integration_id FROM customer_raw_event WHERE id = $1",
        )
        .bind(raw_id)
        .fetch_one(gw.db())
        .await
        .unwrap();
    assert_eq!((source.as_str(), kind.as_str()), ("segment", "identify"));
    assert_eq!(payload["constintel_test"], true);
    assert_eq!(integration_id, Some(integration.id));

    let entries = gw.stream_entries(Topic::EventsRaw).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], raw_id.to_string());
    let published: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM raw_event_outbox_events WHERE id = $1)",
    )
    .bind(raw_id)
    .fetch_one(gw.db())
    .await
    .unwrap();
    assert!(published);

    let (_, log) = gw
        .get(
            &format!("/integrations/{}/deliveries", integration.id),
            &analyst,
        )
        .await;
    assert_eq!(log["items"][0]["raw_event_id"], raw_id.to_string());
    assert_eq!(log["items"][0]["status"], 202);

    storage::integrations::set_enabled(gw.db(), &gw.env.secrets_key(), integration.id, false)
        .await
        .unwrap();
    let (status, _) = gw
        .post(
            &format!("/integrations/{}/test-event", integration.id),
            &analyst,
            Value::Null,
        )
        .await;
    assert_eq!(status, 409, "disabled integrations take no events");
    assert_eq!(gw.stream_entries(Topic::EventsRaw).await.len(), 1);
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_plaintext_rows_get_sealed_at_start() {
    // A row written before secrets were sealed: plaintext in `secret`.
    let gw = Gateway::start().await;
    let legacy_id = Uuid::now_v7();
    let legacy_secret = "whsec_legacy_0123456789abcdef";
    sqlx::query(
        "INSERT INTO integrations (id, kind, name, secret, secret_sha256) \
         VALUES ($1, 'shopify', 'Legacy shop', $2, $3)",
    )
    .bind(legacy_id)
    .bind(legacy_secret)
    .bind(storage::integrations::secret_sha256(legacy_secret))
    .execute(gw.db())
    .await
    .unwrap();
    // A gateway starting on that database seals it (the first one started before the
    // row existed; start a second one on the same env).
    gw.env.spawn(api_gateway::run).await;
    test_support::eventually(30, "the legacy secret to be sealed", || {
        let db = gw.db().clone();
        async move {
            let plain: Option<String> =
                sqlx::query_scalar("SELECT secret FROM integrations WHERE id = $1")
                    .bind(legacy_id)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            plain.is_none().then_some(())
        }
    })
    .await;

    let admin = gw.token(Role::Admin).await;
    let (status, created) = gw
        .post(
            "/integrations",
            &admin,
            json!({"kind": "woocommerce", "name": "Sealed shop"}),
        )
        .await;
    assert_eq!(status, 201);
    let created_id: Uuid = created["integration"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let created_secret = created["secret"].as_str().unwrap().to_owned();

    for (id, secret) in [
        (legacy_id, legacy_secret),
        (created_id, created_secret.as_str()),
    ] {
        let (plain, sealed): (Option<String>, Option<Vec<u8>>) =
            sqlx::query_as("SELECT secret, secret_sealed FROM integrations WHERE id = $1")
                .bind(id)
                .fetch_one(gw.db())
                .await
                .unwrap();
        assert_eq!(plain, None, "no plaintext column value");
        let sealed = sealed.expect("sealed");
        assert!(
            !sealed
                .windows(8)
                .any(|w| secret.as_bytes().windows(8).any(|s| s == w)),
            "no 8 bytes of the secret appear in the stored value"
        );
        // Still usable: revealed to admins, found by ingest.
        let (status, shown) = gw.get(&format!("/integrations/{id}/secret"), &admin).await;
        assert_eq!(status, 200);
        assert_eq!(shown["secret"], secret);
        assert!(
            shown["integration"]["secret_hint"]
                .as_str()
                .unwrap()
                .ends_with(&secret[secret.len() - 4..])
        );
    }

    // Another key cannot open them, and says so.
    let (other, _) = storage::secrets::SecretsKey::generate();
    let err = storage::integrations::get(gw.db(), &other, created_id)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another INTEGRATION_SECRETS_KEY"), "{err}");
    // Re-sealing under a new key keeps every secret.
    let old = gw.env.secrets_key();
    assert_eq!(
        storage::integrations::reseal(gw.db(), &old, &other)
            .await
            .unwrap(),
        2
    );
    let moved = storage::integrations::get(gw.db(), &other, legacy_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.secret, legacy_secret);
    assert!(
        storage::integrations::get(gw.db(), &old, legacy_id)
            .await
            .is_err()
    );
}
