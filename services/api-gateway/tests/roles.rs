//! Every role × every route: an allowed caller gets 2xx, a caller with too weak a role
//! 403, an anonymous caller 401. The route list comes from the router's own
//! declarations (`api_gateway::routes::build`), so a new route without a case here fails
//! this test instead of going unchecked. Each pair is tried with a session cookie and
//! with a bearer token.

mod common;

use common::{Credentials, Gateway, ProfileSeed, seed_dead_letter};
use domain::api::{MergeRule, Role};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use api_gateway::routes::{Access, RouteAccess};

/// Ids the requests refer to.
struct World {
    profile: Uuid,
    others: [Uuid; 2],
    merge: Uuid,
    review: Uuid,
    model: Uuid,
    integration: Uuid,
    import: Uuid,
    user: Uuid,
    token: Uuid,
    audience: Uuid,
    automation: Uuid,
    destination: Uuid,
    login_email: String,
}

async fn world(gw: &Gateway) -> World {
    let db = gw.db();
    let profile = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha Rao"),
            identifiers: vec![("email", "asha@example.com")],
            ..ProfileSeed::default()
        },
    )
    .await;
    let absorbed = common::seed_profile(db, ProfileSeed::default()).await;
    let merge = common::seed_merge(db, profile, absorbed, MergeRule::StrongIdentifier).await;
    let others = [
        common::seed_profile(db, ProfileSeed::default()).await,
        common::seed_profile(db, ProfileSeed::default()).await,
    ];
    let review = common::seed_review(db, &others).await;
    common::seed_event(db, profile, "product_viewed", chrono::Utc::now()).await;
    common::seed_order(db, profile, "499.00", "Apparel", chrono::Utc::now()).await;
    let model = common::seed_model(db, "churn", "active").await;
    common::seed_prediction(db, profile, model, "churn", Some(0.4), None).await;
    let recommender = common::seed_model(db, "recommend", "active").await;
    sqlx::query(
        "INSERT INTO product_similarity (model_version_id, sku, rank, similar_sku, similarity) \
         VALUES ($1, 'TEE-1', 1, 'TEE-2', 0.8)",
    )
    .bind(recommender)
    .execute(db)
    .await
    .unwrap();
    let integration =
        ingestion::integrations::create(db, &gw.env.secrets_key(), "segment", "web", None)
            .await
            .unwrap()
            .id;
    let import = common::seed_import(db).await;
    let user = gw.user(Role::Viewer).await.id;
    let (_, token) = storage::users::create_token(db, "to-revoke", Role::Viewer, None)
        .await
        .unwrap();
    let login = gw.user(Role::Viewer).await;
    let audience = new_audience(gw, "Reachable").await;
    let automation = new_automation(gw, "Welcome").await;
    let destination = api_gateway_destination(gw).await;
    World {
        profile,
        others,
        merge,
        review,
        model,
        integration,
        import,
        user,
        token: token.id,
        audience,
        automation,
        destination,
        login_email: login.email,
    }
}

/// An automation definition named `name` plus a unique suffix.
fn automation_spec(name: &str) -> Value {
    json!({"name": format!("{name} {}", Uuid::new_v4().simple()),
           "trigger": {"kind": "churn_label_became", "label": "high"},
           "actions": [{"kind": "add_to_list", "list": "win-back"}]})
}

/// A saved automation named `name` plus a unique suffix.
async fn new_automation(gw: &Gateway, name: &str) -> Uuid {
    let spec = serde_json::from_value(automation_spec(name)).unwrap();
    journeys::store::create(gw.db(), &spec, "roles test")
        .await
        .unwrap()
        .id
}

/// A REST destination whose endpoint refuses connections (the discard port).
fn destination_request() -> Value {
    json!({
        "name": format!("Warehouse {}", Uuid::new_v4().simple()),
        "kind": "rest",
        "config": {"url": "http://127.0.0.1:9/constintel", "timeout_secs": 1},
        "credentials": {"token": "roles-test"},
    })
}

async fn api_gateway_destination(gw: &Gateway) -> Uuid {
    let request = serde_json::from_value(destination_request()).unwrap();
    destinations::store::create(gw.db(), &gw.env.secrets_key(), &request, "roles test")
        .await
        .unwrap()
        .id
}

/// A saved audience named `name` plus a unique suffix.
async fn new_audience(gw: &Gateway, name: &str) -> Uuid {
    let request = domain::api::AudienceRequest {
        name: format!("{name} {}", Uuid::new_v4().simple()),
        description: String::new(),
        rule: serde_json::from_value(json!({"has_identifier": "email"})).unwrap(),
    };
    audiences::store::create(gw.db(), &request, "roles test")
        .await
        .unwrap()
        .id
}

/// What a request carries.
enum Body {
    None,
    Json(Value),
    Csv,
}

/// A valid request for `route`, or `None` when the test has no case for it.
async fn case(gw: &Gateway, w: &World, route: &RouteAccess) -> Option<(String, Body)> {
    let unique = Uuid::new_v4().simple().to_string();
    let p = route.path.trim_start_matches("/api/v1");
    let m = route.method.as_str();
    let id = |template: &str, id: Uuid| template.replace("{id}", &id.to_string());
    Some(match (m, p) {
        ("POST", "/auth/login") => (
            p.into(),
            Body::Json(json!({"email": w.login_email, "password": common::PASSWORD})),
        ),
        ("POST", "/auth/logout") | ("GET", "/auth/me") | ("GET", "/openapi.json") => {
            (p.into(), Body::None)
        }
        ("GET", "/users") | ("GET", "/tokens") => (p.into(), Body::None),
        ("POST", "/users") => (
            p.into(),
            Body::Json(json!({"email": format!("u{unique}@example.com"),
                              "password": common::PASSWORD, "role": "viewer"})),
        ),
        ("PATCH", "/users/{id}") => (id(p, w.user), Body::Json(json!({"role": "analyst"}))),
        ("POST", "/tokens") => (
            p.into(),
            Body::Json(json!({"name": format!("t{unique}"), "role": "viewer"})),
        ),
        ("DELETE", "/tokens/{id}") => (id(p, w.token), Body::None),
        ("GET", "/overview") => (p.into(), Body::None),
        ("GET", "/profiles") => ("/profiles?q=asha".into(), Body::None),
        ("GET", "/profiles/{id}")
        | ("GET", "/profiles/{id}/timeline")
        | ("GET", "/profiles/{id}/merges")
        | ("GET", "/profiles/{id}/predictions")
        | ("GET", "/profiles/{id}/recommendations")
        | ("GET", "/profiles/{id}/export")
        | ("POST", "/profiles/{id}/erase") => (id(p, w.profile), Body::None),
        ("PUT", "/profiles/{id}/consent") => (
            id(p, w.profile),
            Body::Json(json!({"channel": "email", "status": "subscribed"})),
        ),
        ("GET", "/merges") => (p.into(), Body::None),
        ("POST", "/merges") => (p.into(), Body::Json(json!({"profile_ids": w.others}))),
        ("GET", "/merges/{id}") | ("POST", "/merges/{id}/unmerge") => (id(p, w.merge), Body::None),
        ("GET", "/reviews") => (p.into(), Body::None),
        ("GET", "/reviews/{id}")
        | ("POST", "/reviews/{id}/approve")
        | ("POST", "/reviews/{id}/reject") => (id(p, w.review), Body::None),
        ("GET", "/integrations") | ("GET", "/sources") => (p.into(), Body::None),
        ("POST", "/integrations") => (
            p.into(),
            Body::Json(json!({"kind": "pos", "name": format!("till {unique}")})),
        ),
        ("PATCH", "/integrations/{id}") => {
            (id(p, w.integration), Body::Json(json!({"enabled": true})))
        }
        ("GET", "/integrations/{id}")
        | ("GET", "/integrations/{id}/secret")
        | ("POST", "/integrations/{id}/rotate-secret")
        | ("GET", "/integrations/{id}/deliveries")
        | ("POST", "/integrations/{id}/test-event") => (id(p, w.integration), Body::None),
        ("GET", "/imports") => (p.into(), Body::None),
        ("POST", "/imports") => (p.into(), Body::Csv),
        ("GET", "/imports/{id}")
        | ("GET", "/imports/{id}/errors")
        | ("GET", "/imports/{id}/events") => (id(p, w.import), Body::None),
        ("GET", "/models") | ("GET", "/models/active") => (p.into(), Body::None),
        ("GET", "/models/{id}") => (id(p, w.model), Body::None),
        ("GET", "/products/{sku}/similar") => (p.replace("{sku}", "TEE-1"), Body::None),
        ("GET", "/audiences") => (p.into(), Body::None),
        ("POST", "/audiences") => (
            p.into(),
            Body::Json(json!({"name": format!("a{unique}"), "rule": {"has_identifier": "email"}})),
        ),
        ("POST", "/audiences/preview") => (
            p.into(),
            Body::Json(json!({"rule": {"has_identifier": "email"}})),
        ),
        ("GET", "/audiences/{id}")
        | ("GET", "/audiences/{id}/members")
        | ("GET", "/audiences/{id}/export") => (id(p, w.audience), Body::None),
        ("PUT", "/audiences/{id}") => (
            id(p, w.audience),
            Body::Json(json!({"name": "Reachable by e-mail", "rule": {"has_identifier": "email"}})),
        ),
        // Deleting consumes the audience: make one per request.
        ("DELETE", "/audiences/{id}") => (id(p, new_audience(gw, "Doomed").await), Body::None),
        ("GET", "/automations") | ("GET", "/automations/sends") => (p.into(), Body::None),
        ("POST", "/automations") => (p.into(), Body::Json(automation_spec("New"))),
        ("POST", "/automations/dry-run") => (
            p.into(),
            Body::Json(json!({"spec": automation_spec("Tried")})),
        ),
        ("GET", "/automations/{id}")
        | ("GET", "/automations/{id}/runs")
        | ("GET", "/automations/{id}/sends")
        | ("GET", "/automations/{id}/results") => (id(p, w.automation), Body::None),
        ("PUT", "/automations/{id}") => {
            (id(p, w.automation), Body::Json(automation_spec("Changed")))
        }
        ("POST", "/automations/{id}/enabled") => {
            (id(p, w.automation), Body::Json(json!({"enabled": false})))
        }
        ("POST", "/automations/{id}/dry-run") => (id(p, w.automation), Body::Json(json!({}))),
        // Deleting consumes the automation: make one per request.
        ("DELETE", "/automations/{id}") => (id(p, new_automation(gw, "Doomed").await), Body::None),
        ("GET", "/streams") | ("GET", "/streams/live") => (p.into(), Body::None),
        ("GET", "/streams/{topic}/entries") | ("GET", "/streams/{topic}/dlq") => {
            (p.replace("{topic}", "events.raw"), Body::None)
        }
        ("POST", "/streams/{topic}/dlq/{entry_id}/replay") => {
            // Replay consumes the dead letter: make one per request.
            let dead = seed_dead_letter(gw, streams::Topic::EventsRaw).await;
            (
                p.replace("{topic}", "events.raw")
                    .replace("{entry_id}", &dead),
                Body::None,
            )
        }
        ("GET", "/destinations") => (p.into(), Body::None),
        ("POST", "/destinations") => (p.into(), Body::Json(destination_request())),
        ("PATCH", "/destinations/{id}") => {
            (id(p, w.destination), Body::Json(json!({"enabled": true})))
        }
        ("GET", "/destinations/{id}")
        | ("POST", "/destinations/{id}/test")
        | ("POST", "/destinations/{id}/sync")
        | ("POST", "/destinations/{id}/replay")
        | ("GET", "/destinations/{id}/deliveries")
        | ("GET", "/destinations/{id}/dead-letters") => (id(p, w.destination), Body::None),
        _ => return None,
    })
}

async fn send(gw: &Gateway, method: &Method, path: &str, body: Body, who: &Credentials) -> u16 {
    let rb = gw.request(method.clone(), path, who);
    let rb = match body {
        Body::None => rb,
        Body::Json(v) => rb.json(&v),
        Body::Csv => {
            let file = reqwest::multipart::Part::bytes(
                b"email,first_name\nrole-test@example.com,Role\n".to_vec(),
            )
            .file_name("roles.csv");
            rb.multipart(
                reqwest::multipart::Form::new()
                    .text("kind", "customers")
                    .part("file", file),
            )
        }
    };
    // Only the status matters; event streams are dropped after their headers.
    rb.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_role_on_every_route() {
    let gw = Gateway::start().await;
    let w = world(&gw).await;
    let routes = api_gateway::routes::build(
        api_gateway::AppState::new(&gw.env.context(), gw.env.secrets_key()).unwrap(),
    )
    .routes;
    assert!(
        routes.len() >= 40,
        "the table lists the API ({} routes)",
        routes.len()
    );

    let missing: Vec<String> = {
        let mut missing = Vec::new();
        for r in &routes {
            if case(&gw, &w, r).await.is_none() {
                missing.push(format!("{} {}", r.method, r.path));
            }
        }
        missing
    };
    assert!(
        missing.is_empty(),
        "routes without a case in this test: {missing:?}"
    );

    let mut failures = Vec::new();
    for route in &routes {
        // Anonymous.
        let (path, body) = case(&gw, &w, route).await.unwrap();
        let status = send(&gw, &route.method, &path, body, &Credentials::Anonymous).await;
        let expected_anon = match route.access {
            Access::Public => "2xx",
            Access::Role(_) => "401",
        };
        if !matches_expectation(status, expected_anon) {
            failures.push(format!(
                "{} {} anonymous: {status}, expected {expected_anon}",
                route.method, route.path
            ));
        }
        for role in Role::ALL {
            let expected = match route.access {
                Access::Public => "2xx",
                Access::Role(required) if role.allows(required) => "2xx",
                Access::Role(_) => "403",
            };
            for by_token in [false, true] {
                let who = if by_token {
                    gw.token(role).await
                } else {
                    gw.session(role).await
                };
                let (path, body) = case(&gw, &w, route).await.unwrap();
                let status = send(&gw, &route.method, &path, body, &who).await;
                if !matches_expectation(status, expected) {
                    failures.push(format!(
                        "{} {} as {role} ({}): {status}, expected {expected}",
                        route.method,
                        route.path,
                        if by_token { "token" } else { "cookie" }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn matches_expectation(status: u16, expected: &str) -> bool {
    match expected {
        "2xx" => (200..300).contains(&status),
        "401" => status == 401,
        "403" => status == 403,
        _ => false,
    }
}
