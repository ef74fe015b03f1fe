//! Every service answers /healthz, /readyz and /metrics on its port, and its binary
//! stops cleanly (exit status 0) on SIGTERM.

use test_support::TestEnv;

#[tokio::test]
async fn ops_endpoints_answer() {
    let env = TestEnv::new().await;
    let base = env.spawn(automations::run).await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn binary_stops_cleanly_on_sigterm() {
    let env = TestEnv::new().await;
    test_support::process::assert_stops_cleanly_on_sigterm(
        &env,
        env!("CARGO_BIN_EXE_automations"),
        "AUTOMATIONS_BIND",
    )
    .await;
}
