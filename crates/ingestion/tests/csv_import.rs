//! The CSV importer against the real Postgres and Redis: good rows become raw events,
//! bad rows are reported with line and reason, progress is kept in `csv_imports`, and a
//! second import of the same file adds nothing.

use std::path::PathBuf;

use domain::api::{CsvImportKind, CsvImportStatus, CsvMapping};
use ingestion::csv::{ImportOptions, import, row_errors};
use streams::Streams;
use test_support::TestEnv;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/csv")
        .join(name)
}

fn options() -> ImportOptions {
    ImportOptions {
        region: "IN".into(),
        max_bytes: 10 * 1024 * 1024,
        batch_rows: 2,
    }
}

async fn stream_len(env: &TestEnv) -> u64 {
    let mut conn = env.redis.clone();
    redis::cmd("XLEN")
        .arg(streams::Topic::EventsRaw.key(env.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn customers_with_three_bad_rows_import_the_good_ones() {
    let env = TestEnv::new().await;
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);
    let mapping = CsvMapping::parse_pairs("loyalty_id=Loyalty Card").unwrap();
    let file = tokio::fs::File::open(fixture("customers.csv"))
        .await
        .unwrap();
    let summary = import(
        &env.db,
        Some(&streams),
        file,
        CsvImportKind::Customers,
        &mapping,
        "customers.csv",
        "test",
        &options(),
    )
    .await
    .unwrap();
    assert_eq!(summary.status, CsvImportStatus::Completed);
    assert_eq!(summary.total_rows, 7);
    assert_eq!(summary.imported_rows, 4);
    assert_eq!(summary.error_rows, 3);
    assert_eq!(summary.duplicate_rows, 0);
    let errors = row_errors(&env.db, summary.id, 0, 100).await.unwrap();
    let lines: Vec<i64> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 6, 7]);
    assert!(
        errors[0].reason.contains("not-an-email"),
        "{}",
        errors[0].reason
    );
    assert!(
        errors[1].reason.starts_with("no identifier"),
        "{}",
        errors[1].reason
    );
    assert!(errors[2].reason.contains("phone"), "{}", errors[2].reason);

    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT source_event_id, payload FROM customer_raw_event WHERE source = 'csv' ORDER BY (payload->>'line')::int",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let sha = summary.file_sha256.clone().unwrap();
    assert_eq!(rows[0].0, format!("{sha}:2"));
    assert_eq!(rows[0].1["record"]["customer_id"], "csv:7211204280482");
    assert_eq!(rows[0].1["record"]["loyalty_id"], "LOY-88812");
    assert_eq!(
        rows[3].1["record"]["first_name"], "Rao, Sunil",
        "quoted field"
    );
    assert_eq!(stream_len(&env).await, 4, "new rows are published");

    // The same file again: nothing new, every good row a duplicate.
    let file = tokio::fs::File::open(fixture("customers.csv"))
        .await
        .unwrap();
    let again = import(
        &env.db,
        Some(&streams),
        file,
        CsvImportKind::Customers,
        &mapping,
        "customers.csv",
        "test",
        &options(),
    )
    .await
    .unwrap();
    assert_eq!(again.file_sha256, summary.file_sha256);
    assert_eq!(
        (again.imported_rows, again.duplicate_rows, again.error_rows),
        (0, 4, 3)
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(count, 4);
    assert_eq!(stream_len(&env).await, 4, "duplicates are not published");
}

#[tokio::test]
async fn order_exports_group_lines_into_orders() {
    let env = TestEnv::new().await;
    let mapping = CsvMapping::parse_pairs(
        "order_id=Name,placed_at=Paid at,status=Financial Status,qty=Lineitem quantity,\
         name=Lineitem name,price=Lineitem price,sku=Lineitem sku",
    )
    .unwrap();
    let file = tokio::fs::File::open(fixture("orders.csv")).await.unwrap();
    let summary = import(
        &env.db,
        None,
        file,
        CsvImportKind::Orders,
        &mapping,
        "orders_export.csv",
        "test",
        &options(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            summary.total_rows,
            summary.imported_rows,
            summary.error_rows
        ),
        (5, 4, 1)
    );
    let errors = row_errors(&env.db, summary.id, 0, 100).await.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 5);
    assert!(errors[0].reason.contains("qty"), "{}", errors[0].reason);

    let orders: Vec<(serde_json::Value, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT payload, occurred_at FROM customer_raw_event ORDER BY source_event_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(orders.len(), 3, "three orders from four good lines");
    let first = orders
        .iter()
        .find(|(p, _)| p["order"]["order_id"] == "#1043")
        .unwrap();
    assert_eq!(first.0["items"].as_array().unwrap().len(), 2);
    assert_eq!(first.0["lines"], serde_json::json!([2, 3]));
    assert_eq!(
        first.1.unwrap().to_rfc3339(),
        "2026-11-20T13:12:08+00:00",
        "occurred at the order time"
    );
    let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM raw_event_outbox_events")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(unpublished, 3, "without streams, rows wait in the outbox");
}

#[tokio::test]
async fn an_unusable_mapping_fails_the_import_with_a_reason() {
    let env = TestEnv::new().await;
    let mapping = CsvMapping::parse_pairs("email=E-mail Address").unwrap();
    let err = import(
        &env.db,
        None,
        &b"Name,Mail\nx,y@z.com\n"[..],
        CsvImportKind::Customers,
        &mapping,
        "bad.csv",
        "test",
        &options(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("E-mail Address"), "{err}");
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM csv_imports")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("not in the header"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
