//! Customer 360 reads are counted as cache hits and misses
//! (`customer360_cache_reads_total{result}`), the cache hit ratio of docs/metrics.md.
//! Its own test binary, so the process-wide recorder holds only this test's reads.

use std::time::Duration;

use storage::customer360::Customer360Cache;
use test_support::TestEnv;
use uuid::Uuid;

fn reads(text: &str, result: &str) -> u64 {
    text.lines()
        .find(|l| {
            l.starts_with("customer360_cache_reads_total")
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn reads_count_as_hits_and_misses() {
    let metrics = telemetry::metrics_handle();
    let env = TestEnv::new().await;
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO customer_profile (id) VALUES ($1)")
        .bind(id)
        .execute(&env.db)
        .await
        .unwrap();
    let cache = Customer360Cache::new(
        env.db.clone(),
        env.redis.clone(),
        env.prefix(),
        Duration::from_secs(60),
    );
    assert!(!cache.load(id).await.unwrap().unwrap().cached);
    assert!(cache.load(id).await.unwrap().unwrap().cached);
    assert!(cache.load(id).await.unwrap().unwrap().cached);
    // Unknown profiles are neither.
    assert!(cache.load(Uuid::now_v7()).await.unwrap().is_none());
    let text = metrics.render();
    assert_eq!(
        (reads(&text, "hit"), reads(&text, "miss")),
        (2, 1),
        "{text}"
    );
}
