//! Property-based fuzzing of the ingest service over HTTP: mutated fixtures (see
//! `test_support::fuzz`), correctly signed or authorised so they reach the parsers, are
//! posted to the real service. Properties: never a 5xx; every refusal a 4xx with a
//! stable code and a reason; nothing stored for a refused request. (The parsers' own
//! fuzz test, `crates/ingestion/tests/fuzz.rs`, checks that what is accepted can be
//! normalised and written.)

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use test_support::TestEnv;
use test_support::fuzz::{edited_bytes, edits, garble};

const CASES: u32 = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_store_nothing_and_say_why() {
    let env = TestEnv::new().await;
    let base = env.spawn(ingest::run).await;
    let (shop, shop_secret) = integration(&env, "shopify", "shop").await;
    let (_, write_key) = integration(&env, "segment", "web").await;
    let (pos, pos_token) = integration(&env, "pos", "tills").await;
    let client = reqwest::Client::new();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("orders/create", fixture("shopify/orders_create.json")),
        ("refunds/create", fixture("shopify/refunds_create.json")),
        ("customers/create", fixture("shopify/customers_create.json")),
        ("segment", fixture("segment/batch_mixed.json")),
        ("segment", fixture("segment/track_order_completed.json")),
        ("pos", fixture("pos/bills_batch.json")),
    ];
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: test_support::fuzz::cases(CASES),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(0..seeds.len(), edits(), garble()),
            |(seed, edits, garble)| {
                let (what, bytes) = &seeds[seed];
                let body = edited_bytes(bytes, &edits, garble);
                tokio::task::block_in_place(|| {
                    handle.block_on(async {
                        let before = raw_count(&env).await;
                        let request = match *what {
                            "segment" => client
                                .post(format!("{base}/v1/batch"))
                                .header("authorization", basic(&write_key)),
                            "pos" => client
                                .post(format!("{base}/pos/{pos}/bills"))
                                .bearer_auth(&pos_token),
                            topic => client
                                .post(format!("{base}/webhooks/shopify/{shop}"))
                                .header("x-shopify-topic", topic)
                                .header("x-shopify-webhook-id", "fuzz")
                                .header(
                                    "x-shopify-hmac-sha256",
                                    ingestion::signing::sign_shopify(&shop_secret, &body),
                                ),
                        };
                        let resp = request
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        let status = resp.status();
                        let text = resp.text().await.unwrap();
                        prop_assert!(!status.is_server_error(), "{status}: {text}");
                        if status.is_client_error() {
                            let err: Value = serde_json::from_str(&text).unwrap();
                            prop_assert!(
                                err["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                                    && err["error"]["message"]
                                        .as_str()
                                        .is_some_and(|m| !m.is_empty()),
                                "{text}"
                            );
                            prop_assert_eq!(raw_count(&env).await, before, "refused: {}", text);
                        } else {
                            prop_assert!(status.is_success(), "{status}");
                        }
                        Ok(())
                    })
                })
            },
        )
        .unwrap();
}
