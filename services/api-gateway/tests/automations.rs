//! Automations through the HTTP surface: create (disabled), roles, validation with the
//! reason, the kill switch, a dry run that renders and records nothing, runs, sends and
//! results.

mod common;

use common::{Gateway, ProfileSeed, code, into_json};
use domain::api::Role;
use reqwest::Method;
use serde_json::json;

fn spec(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "trigger": {"kind": "churn_label_became", "label": "high"},
        "wait": {"kind": "delay", "seconds": 60},
        "actions": [{"kind": "whatsapp", "content_sid": "HX0123456789abcdef0123456789abcdef",
                     "content_variables": {"1": "first_name"}}],
        "guardrails": {"control_percent": 0}
    })
}

#[tokio::test]
async fn automations_lifecycle_dry_run_kill_switch_and_results() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let analyst = gw.session(Role::Analyst).await;
    let viewer = gw.token(Role::Viewer).await;
    let asha = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha Rao"),
            identifiers: vec![("phone", "+919876543210")],
            channels: vec!["whatsapp"],
            ..ProfileSeed::default()
        },
    )
    .await;
    sqlx::query(
        "UPDATE customer_profile SET traits = '{\"whatsapp_marketing\": \"subscribed\"}' WHERE id = $1",
    )
    .bind(asha)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO model_version (id, task, algorithm, feature_set_version, artefact, status) \
         VALUES ('00000000-0000-0000-0000-0000000000c1', 'churn', 'test', 1, '', 'active')",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO predictions (profile_id, task, model_version_id, score, label) \
         VALUES ($1, 'churn', '00000000-0000-0000-0000-0000000000c1', 0.9, 'high')",
    )
    .bind(asha)
    .execute(db)
    .await
    .unwrap();

    let (status, refused) = gw.post("/automations", &viewer, spec("Win-back")).await;
    assert_eq!(status, 403, "viewers cannot save automations: {refused}");
    let mut bad = spec("Bad");
    bad["guardrails"]["control_percent"] = json!(90);
    let (status, body) = gw.post("/automations", &analyst, bad).await;
    assert_eq!((status, code(&body)), (400, "invalid_automation"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("guardrails.control_percent"),
        "{body}"
    );
    let mut typo = spec("Typo");
    typo["trigger"] = json!({"kind": "whenever"});
    let (status, _) = gw.post("/automations", &analyst, typo).await;
    assert_eq!(status, 400);

    let (status, created) = gw.post("/automations", &analyst, spec("Win-back")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["enabled"], false, "created disabled");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, again) = gw.post("/automations", &analyst, spec("Win-back")).await;
    assert_eq!((status, code(&again)), (409, "conflict"));

    // A dry run: Asha would get the template with her first name; nothing is recorded.
    let (status, dry) = gw
        .post(&format!("/automations/{id}/dry-run"), &analyst, json!({}))
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["candidates"], 1);
    let item = &dry["items"][0];
    assert_eq!(item["profile_id"], asha.to_string());
    assert_eq!(item["outcome"], "acted");
    assert_eq!(item["actions"][0]["status"], "queued");
    assert_eq!(
        item["actions"][0]["rendered"]["to"],
        "whatsapp:+919876543210"
    );
    assert_eq!(
        item["actions"][0]["rendered"]["content_variables"]["1"],
        "Asha"
    );
    let (status, unsaved) = gw
        .post(
            "/automations/dry-run",
            &analyst,
            json!({"spec": spec("Unsaved")}),
        )
        .await;
    assert_eq!(status, 200, "{unsaved}");
    assert_eq!(unsaved["items"][0]["outcome"], "acted");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM automation_run")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a dry run records nothing");

    // The kill switch.
    let (status, on) = gw
        .post(
            &format!("/automations/{id}/enabled"),
            &analyst,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["enabled"], true);
    assert!(on["enabled_at"].is_string());
    let (status, off) = gw
        .post(
            &format!("/automations/{id}/enabled"),
            &analyst,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!((status, off["enabled"].clone()), (200, json!(false)));

    for path in ["runs", "sends", "results"] {
        let (status, body) = gw.get(&format!("/automations/{id}/{path}"), &viewer).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, results) = gw.get(&format!("/automations/{id}/results"), &viewer).await;
    assert_eq!(results["funnel"][0]["step"], "triggered");
    assert_eq!(results["conversions"]["treated"], 0);
    let (status, all) = gw
        .get(&format!("/automations/sends?profile_id={asha}"), &viewer)
        .await;
    assert_eq!(status, 200, "{all}");

    let mut changed = spec("Win-back");
    changed["guardrails"]["control_percent"] = json!(20);
    let (status, updated) = into_json(
        gw.request(Method::PUT, &format!("/automations/{id}"), &analyst)
            .json(&changed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["spec"]["guardrails"]["control_percent"], 20);
    let (status, _) = into_json(
        gw.request(Method::DELETE, &format!("/automations/{id}"), &analyst)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = gw.get(&format!("/automations/{id}"), &viewer).await;
    assert_eq!((status, code(&gone)), (404, "not_found"));
}
