//! The limits the schema and the pools keep, on the real Postgres: every money column
//! holds what `domain` says it holds, and a service's pooled connections run under the
//! statement and lock timeouts of the settings, whose cancellations are outages.

use rust_decimal::Decimal;
use storage::fault::{self, Fault};
use test_support::TestEnv;

#[tokio::test]
async fn every_money_column_is_numeric_of_the_shared_width() {
    let env = TestEnv::new().await;
    let columns: Vec<(String, String, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, numeric_precision, numeric_scale \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND data_type = 'numeric' ORDER BY 1, 2",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let names: Vec<String> = columns
        .iter()
        .map(|(t, c, _, _)| format!("{t}.{c}"))
        .collect();
    for money in [
        "customer_profile.total_spent",
        "order_items.price",
        "order_refunds.amount",
        "orders.refunded_total",
        "orders.total",
        "products.price",
    ] {
        assert!(names.contains(&money.to_owned()), "{money} in {names:?}");
    }
    for (table, column, precision, scale) in &columns {
        assert_eq!(
            (*precision, *scale),
            (
                Some(domain::MONEY_PRECISION as i32),
                Some(domain::MONEY_SCALE as i32)
            ),
            "{table}.{column}"
        );
    }
    // The largest sum fits; a cent more does not.
    let fits: Decimal = sqlx::query_scalar("SELECT $1::numeric(20, 2)")
        .bind(domain::MAX_TOTAL)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(fits, domain::MAX_TOTAL);
    let over = sqlx::query_scalar::<_, Decimal>("SELECT ($1::numeric + 0.01)::numeric(20, 2)")
        .bind(domain::MAX_TOTAL)
        .fetch_one(&env.db)
        .await
        .unwrap_err();
    assert_eq!(fault::classify(&over), Fault::Permanent, "{over}");
}

#[tokio::test]
async fn pooled_connections_run_under_the_statement_and_lock_timeouts() {
    let env = TestEnv::new().await;
    for _ in 0..3 {
        let mut conn = env.db.acquire().await.unwrap();
        let statement: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let lock: String = sqlx::query_scalar("SHOW lock_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!((statement.as_str(), lock.as_str()), ("30s", "5s"));
    }
    // Migrating takes no timeout with it, and leaves the pool's as they were.
    storage::migrate(&env.db).await.unwrap();
    let statement: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(statement, "30s");
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_as_an_outage() {
    let env = TestEnv::with_settings([
        ("DATABASE_STATEMENT_TIMEOUT_MS", "200".into()),
        ("DATABASE_LOCK_TIMEOUT_MS", "100".into()),
    ])
    .await;
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(&env.db)
        .await
        .unwrap_err();
    assert_eq!(fault::classify(&err), Fault::Transient, "{err}");
    assert!(err.to_string().contains("statement timeout"), "{err}");

    // A lock held elsewhere: the waiter gives up after lock_timeout.
    let mut holder = env.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE integrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let err = sqlx::query("SELECT count(*) FROM integrations")
        .execute(&env.db)
        .await
        .unwrap_err();
    assert_eq!(fault::classify(&err), Fault::Transient, "{err}");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    holder.rollback().await.unwrap();
}
