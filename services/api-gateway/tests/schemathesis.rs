//! The API fuzzer: schemathesis (PyPI) against the OpenAPI document the gateway serves,
//! signed in as an admin, with a bounded number of examples per operation. It fails on
//! any 5xx, any response off its documented schema, status or content type, and any
//! request the document calls valid that the gateway refuses (a 400, 413, 415 or 422 to
//! a schema-valid request means the document does not declare a bound the handler
//! enforces).
//!
//! Ignored by the plain test run because it needs schemathesis, which `scripts/setup`
//! installs into `.data/tools` (pinned); `just test-api-fuzz` (part of `just test`)
//! runs it. `SCHEMATHESIS` names another binary; `SCHEMATHESIS_MAX_EXAMPLES` (default
//! 25) bounds the examples per operation.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{Gateway, ProfileSeed};
use domain::api::Role;

fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join(".data/tools/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run `scripts/setup` (or `just setup`), or set SCHEMATHESIS",
        path.display()
    );
    path
}

#[tokio::test]
#[ignore = "needs schemathesis (scripts/setup installs it); `just test-api-fuzz` runs it"]
async fn the_openapi_document_describes_what_the_gateway_does() {
    let program = schemathesis();
    let gw = Gateway::start_with(vec![
        // The fuzzer signs in thousands of times; the limits have tests of their own.
        ("LOGIN_ATTEMPTS_PER_MINUTE", "1000000".into()),
        ("LOGIN_ATTEMPTS_PER_ACCOUNT_PER_HOUR", "1000000".into()),
        // Live feeds never end on their own: the fuzzer reads a few events of each
        // (checking each against its documented schema) and stops at its timeout.
        ("LIVE_INTERVAL_MS", "200".into()),
    ])
    .await;
    // Something to find: the operations that take an existing id then have a chance
    // of reaching their handler's 2xx path, not only its 404.
    let db = gw.db();
    let a = common::seed_profile(
        db,
        ProfileSeed {
            name: Some("Asha Rao"),
            identifiers: vec![("email", "asha@example.com"), ("phone", "+919876543210")],
            ..ProfileSeed::default()
        },
    )
    .await;
    let b = common::seed_profile(db, ProfileSeed::default()).await;
    common::seed_review(db, &[a, b]).await;
    common::seed_event(db, a, "product_viewed", chrono::Utc::now()).await;
    common::seed_order(db, a, "499.00", "Apparel", chrono::Utc::now()).await;
    let model = common::seed_model(db, "churn", "active").await;
    common::seed_prediction(db, a, model, "churn", Some(0.4), None).await;

    let (token, _) = storage::users::create_token(db, "schemathesis", Role::Admin, None)
        .await
        .unwrap();
    let max_examples =
        std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let report = tempfile::tempdir().unwrap();
    // A cursor is opaque: only what a page handed out as `next_cursor` is one (anything
    // else is a 400 `bad_cursor`, as documented), so the fuzzer asks for first pages.
    let config = report.path().join("schemathesis.toml");
    // The CSV upload's parts must come in order (`kind` before the streamed `file`) and
    // the file must be a CSV: neither is something OpenAPI can say, so that one
    // operation is spared the "schema-valid means accepted" check (every other check
    // still runs on it; tests/imports.rs covers its refusals).
    std::fs::write(
        &config,
        concat!(
            // Every check, but this one: always sending a valid bearer header makes it
            // report every operation (the tool's own advice); roles.rs proves each
            // route's authorisation.
            "[checks]\n",
            "ignored_auth.enabled = false\n",
            "\n",
            "[parameters]\n",
            "\"query.cursor\" = \"\"\n",
            "\n",
            "[[operations]]\n",
            "include-path-regex = \"/imports$\"\n",
            "include-method = \"POST\"\n",
            "checks.positive_data_acceptance.enabled = false\n",
            // An audience rule's nesting depth and total number of conditions, and
            // whether the audiences it refers to exist and form no cycle, are beyond
            // what a JSON schema says (every other bound of the rule is declared; the
            // audiences tests cover these refusals).
            "\n",
            "[[operations]]\n",
            "include-path-regex = \"/audiences(/preview)?$\"\n",
            "include-method = \"POST\"\n",
            "checks.positive_data_acceptance.enabled = false\n",
            "\n",
            "[[operations]]\n",
            "include-path-regex = \"/audiences/\\\\{id\\\\}$\"\n",
            "include-method = \"PUT\"\n",
            "checks.positive_data_acceptance.enabled = false\n",
        ),
    )
    .unwrap();
    let status = tokio::process::Command::new(&program)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", gw.base))
        .args(["--url", &gw.url("")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", &max_examples])
        .args(["--seed", "20261206"])
        // One worker: the tool's pattern generator is not thread-safe on Python 3.11.
        .args(["--workers", "1"])
        .args(["--request-timeout", "5"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--suppress-health-check", "all"])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(report.path())
        .env("NO_COLOR", "1")
        // It keeps a cache (`.schemathesis/`) in its working folder: the report's
        // temporary folder, not the source tree.
        .current_dir(report.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        status.success(),
        "schemathesis found responses the OpenAPI document does not describe (report above)"
    );
}
