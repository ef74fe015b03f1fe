//! Audiences through the HTTP surface: create (members computed at once), preview,
//! members with paging, CSV export, change, delete, and the refusals.

mod common;

use common::{Gateway, ProfileSeed, code, into_json};
use domain::api::Role;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn audiences_lifecycle_preview_members_and_export() {
    let gw = Gateway::start().await;
    let db = gw.db();
    let analyst = gw.session(Role::Analyst).await;
    let viewer = gw.token(Role::Viewer).await;
    let admin = gw.token(Role::Admin).await;
    let asha = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha Rao"),
            identifiers: vec![("email", "asha@example.com"), ("phone", "+919876543210")],
            orders: 3,
            ltv: "4200",
            channels: vec!["web", "whatsapp"],
            ..ProfileSeed::default()
        },
    )
    .await;
    let ravi = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Ravi \"R\", Jr"),
            identifiers: vec![("phone", "+919800000001")],
            orders: 1,
            ltv: "1500",
            channels: vec!["whatsapp"],
            ..ProfileSeed::default()
        },
    )
    .await;
    common::seed_profile(
        db,
        ProfileSeed {
            ltv: "10",
            ..ProfileSeed::default()
        },
    )
    .await;
    let rule = json!({"all": [{"total_spent": {"op": "gte", "value": 1000}}, "whatsapp_capable"]});

    let (status, preview) = gw
        .post("/audiences/preview", &viewer, json!({"rule": rule}))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["size"], 2);
    assert_eq!(preview["sample"].as_array().unwrap().len(), 2);

    let (status, refused) = gw
        .post("/audiences", &viewer, json!({"name": "x", "rule": rule}))
        .await;
    assert_eq!(status, 403, "viewers cannot save audiences: {refused}");
    let (status, created) = gw
        .post(
            "/audiences",
            &analyst,
            json!({"name": "Big on WhatsApp", "description": "reachable", "rule": rule}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["member_count"], 2,
        "members are computed before the answer"
    );
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, first) = gw
        .get(&format!("/audiences/{id}/members?limit=1"), &viewer)
        .await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = gw
        .get(
            &format!("/audiences/{id}/members?limit=1&cursor={cursor}"),
            &viewer,
        )
        .await;
    let mut ids = vec![
        first["items"][0]["profile_id"].as_str().unwrap().to_owned(),
        second["items"][0]["profile_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    ids.sort();
    let mut want = vec![asha.to_string(), ravi.to_string()];
    want.sort();
    assert_eq!(ids, want);
    assert!(second["next_cursor"].is_null());

    let export = gw
        .request(Method::GET, &format!("/audiences/{id}/export"), &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 403, "exports are for admins");
    let export = gw
        .request(Method::GET, &format!("/audiences/{id}/export"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert!(
        export.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = export.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    rows.sort();
    let mut expected = vec![
        vec![
            asha.to_string(),
            "Asha Rao".into(),
            "asha@example.com".into(),
            "+919876543210".into(),
        ],
        vec![
            ravi.to_string(),
            "Ravi \"R\", Jr".into(),
            String::new(),
            "+919800000001".into(),
        ],
    ];
    expected.sort();
    assert_eq!(
        rows.iter().map(|r| r[..4].to_vec()).collect::<Vec<_>>(),
        expected
    );

    // Narrowing the rule recomputes the members.
    let narrower =
        json!({"name": "Big on WhatsApp", "rule": {"all": [rule, {"has_identifier": "email"}]}});
    let (status, changed) = into_json(
        gw.request(Method::PUT, &format!("/audiences/{id}"), &analyst)
            .json(&narrower)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["member_count"], 1);

    let (status, list) = gw.get("/audiences", &viewer).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let (status, _) = into_json(
        gw.request(Method::DELETE, &format!("/audiences/{id}"), &analyst)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = gw.get(&format!("/audiences/{id}"), &viewer).await;
    assert_eq!((status, code(&gone)), (404, "not_found"));
}

#[tokio::test]
async fn bad_rules_names_and_references_are_refused_with_the_reason() {
    let gw = Gateway::start().await;
    let analyst = gw.session(Role::Analyst).await;
    let cases = [
        (
            json!({"name": "a", "rule": {"all": []}}),
            400,
            "invalid_rule",
            "`all` needs at least one rule",
        ),
        (
            json!({"name": "a", "rule": {"churn_score": {"op": "gt", "value": 2}}}),
            400,
            "invalid_rule",
            "from 0 to 1",
        ),
        (
            json!({"name": "a", "rule": {"shoe_size": 3}}),
            400,
            "bad_request",
            "",
        ),
        (
            json!({"name": "  ", "rule": "whatsapp_capable"}),
            400,
            "bad_request",
            "name",
        ),
        (
            json!({"name": "a", "rule": {"in_audience": "0190a0a0-0000-7000-8000-000000000000"}}),
            400,
            "bad_request",
            "does not exist",
        ),
    ];
    for (body, status, want_code, message) in cases {
        let (got, answer) = gw.post("/audiences", &analyst, body.clone()).await;
        assert_eq!(
            (got, code(&answer)),
            (status, want_code),
            "{body} → {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{answer}"
        );
    }
    let (status, first) = gw
        .post(
            "/audiences",
            &analyst,
            json!({"name": "Dup", "rule": "whatsapp_capable"}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, dup) = gw
        .post(
            "/audiences",
            &analyst,
            json!({"name": "Dup", "rule": "whatsapp_capable"}),
        )
        .await;
    assert_eq!((status, code(&dup)), (409, "conflict"));
    let id = first["id"].as_str().unwrap();
    let (status, self_ref) = into_json(
        gw.request(Method::PUT, &format!("/audiences/{id}"), &analyst)
            .json(&json!({"name": "Dup", "rule": {"in_audience": id}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code(&self_ref)),
        (400, "invalid_rule"),
        "{self_ref}"
    );
}
