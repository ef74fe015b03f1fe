//! `ctl integration add|list` and `ctl import csv`, run as the real binary against a
//! fresh database.

mod ctl_cli;

use test_support::TestEnv;

fn ctl(env: &TestEnv, args: &[&str]) -> String {
    let out = ctl_cli::run(
        env,
        args,
        &[("PUBLIC_BASE_URL", "https://ingest.example.com/")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn integrations_are_added_and_listed() {
    let env = TestEnv::new().await;
    let out = ctl(
        &env,
        &[
            "integration",
            "add",
            "--kind",
            "shopify",
            "--name",
            "loom-and-co",
        ],
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        out.contains(&format!(
            "webhook url: https://ingest.example.com/webhooks/shopify/{id}"
        )),
        "{out}"
    );
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("signing secret:"))
        .unwrap()
        .trim();
    assert!(secret.starts_with("ci_whs_"), "{out}");

    let out = ctl(
        &env,
        &[
            "integration",
            "add",
            "--kind",
            "segment",
            "--name",
            "app",
            "--secret",
            "wk-given",
        ],
    );
    assert!(out.contains("write key: wk-given"), "{out}");
    assert!(
        out.contains("webhook url: https://ingest.example.com/v1"),
        "{out}"
    );

    let list = ctl(&env, &["integration", "list"]);
    assert!(list.contains("loom-and-co") && list.contains(&id), "{list}");
    assert!(
        !list.contains(secret) && !list.contains("wk-given"),
        "list never shows secrets"
    );
}

#[tokio::test]
async fn csv_files_are_imported_once() {
    let env = TestEnv::new().await;
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/ingestion/tests/fixtures/csv/customers.csv"
    );
    let args = [
        "import",
        "csv",
        file,
        "--kind",
        "customers",
        "--mapping",
        "loyalty_id=Loyalty Card",
    ];
    let out = ctl(&env, &args);
    assert!(
        out.contains("7 read, 4 imported, 0 already imported, 3 rejected"),
        "{out}"
    );
    assert!(out.contains("line 4:"), "{out}");
    let again = ctl(&env, &args);
    assert!(again.contains("0 imported, 4 already imported"), "{again}");
}
