//! The OpenAPI document served at `/api/v1/openapi.json` lists every route the router
//! serves, with its access rule, and documents the errors; every documented route is
//! really served.

mod common;

use std::collections::BTreeSet;

use common::{Credentials, Gateway};
use domain::api::Role;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn document_lists_every_route_with_its_rules_and_errors() {
    let gw = Gateway::start().await;
    let (status, doc) = gw.get("/openapi.json", &Credentials::Anonymous).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["servers"][0]["url"], "/api/v1");

    let routes = api_gateway::routes::build(
        api_gateway::AppState::new(&gw.env.context(), gw.env.secrets_key()).unwrap(),
    )
    .routes;
    let served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| {
            (
                r.method.as_str().to_lowercase(),
                r.path.trim_start_matches("/api/v1").to_owned(),
            )
        })
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.clone(), path.clone()));
            let route = routes
                .iter()
                .find(|r| {
                    r.method.as_str().eq_ignore_ascii_case(method)
                        && r.path.trim_start_matches("/api/v1") == path
                })
                .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
            assert_eq!(
                op["x-required-role"],
                route.access.as_str(),
                "{method} {path} documents its access rule"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path} documents its success"
            );
            assert!(
                responses.contains_key("500"),
                "{method} {path} documents 500"
            );
            if route.access.as_str() != "public" {
                for code in ["401", "403"] {
                    assert!(
                        responses.contains_key(code),
                        "{method} {path} documents {code}"
                    );
                }
                assert!(
                    op["security"].is_array(),
                    "{method} {path} names its security"
                );
            }
            for (code, resp) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    let schema = &resp["content"]["application/json"]["schema"];
                    assert!(
                        !schema.is_null(),
                        "{method} {path} {code} documents the error body"
                    );
                }
            }
            assert!(op["summary"].is_string(), "{method} {path} has a summary");
        }
    }
    assert_eq!(
        served, documented,
        "the document lists exactly the routes the router serves"
    );
    assert!(doc["components"]["schemas"]["ApiErrorBody"].is_object());
    assert!(doc["components"]["schemas"]["Customer360"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["session"].is_object());
}

/// The operations that hand a decision to the identity merger answer 202 whether or not
/// Redis takes the publish (the request is stored first and an outbox relay publishes
/// it), so none of them documents a 503.
#[tokio::test]
async fn merge_decisions_document_202_and_no_503() {
    let gw = Gateway::start().await;
    let (_, doc) = gw.get("/openapi.json", &Credentials::Anonymous).await;
    for path in [
        "/merges",
        "/merges/{id}/unmerge",
        "/reviews/{id}/approve",
        "/reviews/{id}/reject",
        "/profiles/{id}/erase",
    ] {
        let responses = doc["paths"][path]["post"]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("POST {path} is documented"));
        assert!(responses.contains_key("202"), "POST {path} documents 202");
        assert!(
            !responses.contains_key("503"),
            "POST {path} never answers 503: {:?}",
            responses.keys().collect::<Vec<_>>()
        );
    }
}

/// Every documented operation reaches a handler: with an admin token and placeholder
/// ids the answer is never the router's own "no API route" 404 or a 405.
#[tokio::test]
async fn every_documented_route_is_served() {
    let gw = Gateway::start().await;
    let admin = gw.token(Role::Admin).await;
    let (_, doc) = gw.get("/openapi.json", &Credentials::Anonymous).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if path == "/streams/live" {
                continue; // An endpless stream; its route is covered by the role test.
            }
            let concrete = path
                .replace("{id}", "00000000-0000-7000-8000-000000000000")
                .replace("{topic}", "events.raw")
                .replace("{sku}", "TEE-1")
                .replace("{entry_id}", "1-1");
            let resp = gw
                .request(method.clone(), &concrete, &admin)
                .json(&Value::Null)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let router_miss = status == 404
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no API route"));
            assert!(
                !router_miss && status != 405,
                "{method} {path}: {status} {body}"
            );
        }
    }
}

/// Every `$ref` of the document names a schema the document defines (a parameter or body
/// type missing from `components.schemas` leaves clients and viewers guessing).
#[tokio::test]
async fn every_schema_reference_resolves() {
    fn refs(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.insert(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let gw = Gateway::start().await;
    let (_, doc) = gw.get("/openapi.json", &Credentials::Anonymous).await;
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in &found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a schema reference"));
        assert!(
            schemas.contains_key(name),
            "{r} is referenced but not defined"
        );
    }
    for name in [
        "ProfileSort",
        "SortOrder",
        "MergeRule",
        "ReviewReason",
        "CsvMapping",
    ] {
        assert!(
            found.contains(&format!("#/components/schemas/{name}")),
            "{name}"
        );
    }
    assert_eq!(
        schemas["MergeRule"]["enum"],
        serde_json::json!([
            "strong_identifier",
            "medium_identifier",
            "weak_identifier",
            "manual",
            "review_approved",
            "replay"
        ])
    );
}

#[tokio::test]
async fn unknown_api_paths_answer_json_404() {
    let gw = Gateway::start().await;
    for path in ["/api/v1/nope", "/api/v2/profiles", "/api/whatever"] {
        let resp = gw
            .http
            .get(format!("{}{path}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(common::code(&body), "not_found", "{path}");
    }
}
