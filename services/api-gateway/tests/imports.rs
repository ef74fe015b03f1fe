//! CSV uploads through the HTTP surface: streamed into the ingestion importer, good
//! rows imported and bad rows reported, progress by id and as server-sent events, and
//! bad forms refused with the reason.

mod common;

use common::{Credentials, Gateway, code};
use domain::api::Role;
use futures::StreamExt as _;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use uuid::Uuid;

fn form(kind: Option<&str>, mapping: Option<&str>, csv: &str) -> Form {
    let mut f = Form::new();
    if let Some(k) = kind {
        f = f.text("kind", k.to_owned());
    }
    if let Some(m) = mapping {
        f = f.text("mapping", m.to_owned());
    }
    f.part(
        "file",
        Part::bytes(csv.as_bytes().to_vec())
            .file_name("customers.csv")
            .mime_str("text/csv")
            .unwrap(),
    )
}

async fn upload(gw: &Gateway, who: &Credentials, f: Form) -> (u16, Value) {
    common::into_json(
        gw.request(reqwest::Method::POST, "/imports", who)
            .multipart(f)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn finished(gw: &Gateway, who: &Credentials, id: &str) -> Value {
    test_support::eventually(30, "the import to finish", || async {
        let (_, view) = gw.get(&format!("/imports/{id}"), who).await;
        (view["status"] != "running").then_some(view)
    })
    .await
}

#[tokio::test]
async fn a_csv_upload_imports_good_rows_and_reports_bad_ones() {
    let gw = Gateway::start().await;
    let analyst = gw.session(Role::Analyst).await;
    let mut csv = String::from("E-mail,Mobile,First\n");
    for i in 0..250 {
        csv.push_str(&format!("user{i}@example.com,,Name{i}\n"));
    }
    csv.push_str("not-an-email,,Bad\n");
    csv.push_str(",12,AlsoBad\n");
    let (status, accepted) = upload(
        &gw,
        &analyst,
        form(
            Some("customers"),
            Some(r#"{"E-mail": "email", "Mobile": "phone", "First": "first_name"}"#),
            &csv,
        ),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["import_id"].as_str().unwrap().to_owned();

    let view = finished(&gw, &analyst, &id).await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["total_rows"], 252);
    assert_eq!(view["imported_rows"], 250);
    assert_eq!(view["error_rows"], 2);
    assert_eq!(view["filename"], "customers.csv");
    assert!(view["created_by"].as_str().unwrap().starts_with("analyst-"));
    assert_eq!(view["mapping"]["columns"]["email"], "E-mail");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_raw_event WHERE source = 'csv'")
            .fetch_one(gw.db())
            .await
            .unwrap();
    assert_eq!(stored, 250);

    let (status, errors) = gw
        .get(&format!("/imports/{id}/errors?limit=1"), &analyst)
        .await;
    assert_eq!(status, 200);
    assert_eq!(errors["items"][0]["line"], 252);
    let cursor = errors["next_cursor"].as_str().unwrap();
    let (_, rest) = gw
        .get(
            &format!("/imports/{id}/errors?limit=1&cursor={cursor}"),
            &analyst,
        )
        .await;
    assert_eq!(rest["items"][0]["line"], 253);
    assert!(rest["next_cursor"].is_null());

    let (_, list) = gw.get("/imports", &analyst).await;
    assert_eq!(list["items"][0]["id"], id.as_str());

    // Uploading the same file again adds nothing.
    let (status, again) = upload(
        &gw,
        &analyst,
        form(
            Some("customers"),
            Some(r#"{"E-mail": "email", "Mobile": "phone", "First": "first_name"}"#),
            &csv,
        ),
    )
    .await;
    assert_eq!(status, 202);
    let view = finished(&gw, &analyst, again["import_id"].as_str().unwrap()).await;
    assert_eq!(view["duplicate_rows"], 250);
    assert_eq!(view["imported_rows"], 0);
}

#[tokio::test]
async fn import_progress_streams_as_server_sent_events() {
    let gw = Gateway::start().await;
    let analyst = gw.token(Role::Analyst).await;
    let (_, accepted) = upload(
        &gw,
        &analyst,
        form(
            Some("customers"),
            None,
            "email\na@example.com\nb@example.com\n",
        ),
    )
    .await;
    let id = accepted["import_id"].as_str().unwrap();
    let resp = gw
        .request(
            reqwest::Method::GET,
            &format!("/imports/{id}/events"),
            &analyst,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = String::new();
    let mut stream = resp.bytes_stream();
    // The stream ends by itself after `done`.
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("the stream ends after done")
    {
        body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(body.contains("event: done"), "{body}");
    let done = body
        .split("event: done\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap();
    let view: Value = serde_json::from_str(done).unwrap();
    assert_eq!(view["status"], "completed");
    assert_eq!(view["imported_rows"], 2);

    let (status, _) = gw
        .get(&format!("/imports/{}/events", Uuid::now_v7()), &analyst)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_forms_are_refused_with_the_reason() {
    let gw = Gateway::start_with(vec![("CSV_MAX_BYTES", "1000".into())]).await;
    let analyst = gw.session(Role::Analyst).await;
    let ok_csv = "email\na@example.com\n";

    let (status, body) = upload(&gw, &analyst, form(None, None, ok_csv)).await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("kind"));

    let (status, body) = upload(&gw, &analyst, form(Some("pets"), None, ok_csv)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = upload(
        &gw,
        &analyst,
        form(Some("customers"), Some("{not json"), ok_csv),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let file_first = Form::new()
        .part(
            "file",
            Part::bytes(ok_csv.as_bytes().to_vec()).file_name("a.csv"),
        )
        .text("kind", "customers");
    let (status, body) = upload(&gw, &analyst, file_first).await;
    assert_eq!(status, 400, "kind must come first: {body}");
    let no_file = Form::new().text("kind", "customers");
    let (status, body) = upload(&gw, &analyst, no_file).await;
    assert_eq!(status, 400, "{body}");

    let big = format!("email\n{}", "someone@example.com\n".repeat(100));
    let (status, body) = upload(&gw, &analyst, form(Some("customers"), None, &big)).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");

    let (status, body) = upload(&gw, &analyst, form(Some("orders"), None, "colour\nred\n")).await;
    // An unusable header is reported at once or on the import, never silently.
    if status == 202 {
        let view = finished(&gw, &analyst, body["import_id"].as_str().unwrap()).await;
        assert_eq!(view["status"], "failed", "{view}");
        assert!(view["error"].as_str().is_some());
    } else {
        assert_eq!(status, 400, "{body}");
    }
    let json_body = gw
        .request(reqwest::Method::POST, "/imports", &analyst)
        .json(&serde_json::json!({"kind": "customers"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 400);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(gw.db())
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing half-written");
}
