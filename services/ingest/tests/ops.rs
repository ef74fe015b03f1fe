//! Every service answers /healthz, /readyz and /metrics on its port.

use test_support::TestEnv;

#[tokio::test]
async fn ops_endpoints_answer() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}
