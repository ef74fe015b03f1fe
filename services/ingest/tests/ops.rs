//! Every service answers /healthz, /readyz and /metrics on its port, and its binary
//! stops cleanly (exit status 0) on SIGTERM — or, when something in flight will not
//! finish, exits anyway once `SHUTDOWN_DEADLINE_SECS` has passed.

mod common;

use common::{basic, integration};
use test_support::TestEnv;
use test_support::process::{Process, Signal, free_port, wait_ready};
use tokio::io::AsyncWriteExt as _;

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

#[tokio::test]
async fn binary_stops_cleanly_on_sigterm() {
    let env = TestEnv::new().await;
    test_support::process::assert_stops_cleanly_on_sigterm(
        &env,
        env!("CARGO_BIN_EXE_ingest"),
        "INGEST_BIND",
    )
    .await;
}

#[tokio::test]
async fn a_request_that_never_finishes_cannot_keep_the_process_past_the_deadline() {
    let env = TestEnv::new().await;
    let (_, key) = integration(&env, "segment", "web").await;
    let port = free_port();
    let mut vars = env.process_vars();
    vars.extend([
        ("INGEST_BIND".to_owned(), format!("127.0.0.1:{port}")),
        ("SHUTDOWN_DEADLINE_SECS".to_owned(), "1".to_owned()),
        // Long enough that only the deadline can end the request below.
        ("HTTP_REQUEST_TIMEOUT_SECS".to_owned(), "600".to_owned()),
    ]);
    let mut process = Process::spawn(env!("CARGO_BIN_EXE_ingest"), &[], &vars);
    wait_ready(&format!("http://127.0.0.1:{port}"), 60).await;
    // A request whose body never arrives keeps its connection in flight.
    let mut stuck = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{{",
        basic(&key)
    );
    stuck.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    process.signal(Signal::SIGTERM);
    let status = process.wait_exit(30).await;
    assert_eq!(status.code(), Some(1), "exited by the deadline: {status}");
}
