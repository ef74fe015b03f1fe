//! Nothing hangs at the edge, against the real service: a client that stops sending
//! its body mid-request is answered 408 after `HTTP_REQUEST_TIMEOUT_SECS` (and nothing is
//! stored), and a connection that sends no request — new, or kept alive after one — is
//! closed after `HTTP_IDLE_TIMEOUT_SECS`. Raw TCP, since an HTTP client would not
//! misbehave on purpose.

mod common;

use std::time::Duration;

use common::*;
use test_support::TestEnv;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn env() -> (TestEnv, String) {
    let env = TestEnv::with_settings([
        ("HTTP_REQUEST_TIMEOUT_SECS", "1".to_owned()),
        ("HTTP_IDLE_TIMEOUT_SECS", "1".to_owned()),
    ])
    .await;
    let base = env.spawn(ingest::run).await;
    let addr = base.trim_start_matches("http://").to_owned();
    (env, addr)
}

/// Reads until the peer closes (or 20 s pass, which fails the test); returns what came.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut seen))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&seen).into_owned()
}

/// Reads until a response head is complete (or the peer closes); fails after 20 s.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("an answer within 20 s");
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_and_nothing_is_stored() {
    let (env, addr) = env().await;
    let (_, key) = integration(&env, "segment", "web").await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{{\"type\": \"track\"",
        basic(&key)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // …and nothing more.
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_raw_event")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn idle_connections_are_closed_new_or_kept_alive() {
    let (_env, addr) = env().await;
    // A new connection that never sends a request.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let said = read_to_close(&mut silent).await;
    assert!(!said.contains("200"), "{said}");

    // A kept-alive connection after one answered request.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"ok\""), "{answer}");
}
