//! A worker killed mid-batch — after the remote applied the batch, before the answer
//! was recorded — loses nothing and writes nothing twice: the lease lapses, the batch
//! is sent again, and the remote's upsert by key absorbs the repeat.

mod common;

use std::time::Duration;

use common::*;
use domain::api::DestinationKind;
use serde_json::json;
use test_support::crm::{FakeRest, RestAuth};
use test_support::process::{Process, Signal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_batch_neither_loses_nor_duplicates_remote_records() {
    let env = env().await;
    let rest = FakeRest::start(RestAuth::Bearer("tok".into())).await;
    // The endpoint applies each batch, then takes 3 s to answer.
    rest.switch.slow(Duration::from_secs(3));
    seed(&env.db, "cr", 500).await;
    let d = create(
        &env,
        "Rest",
        DestinationKind::Rest,
        json!({"url": rest.endpoint(), "batch_size": 100, "timeout_secs": 5}),
        &[("token", "tok")],
    )
    .await;
    let bin = env!("CARGO_BIN_EXE_destinations");
    let mut first = Process::spawn(bin, &[], &env.process_vars());
    until(60, "a batch to be applied remotely", || {
        rest.state.lock().unwrap().upserts > 0
    })
    .await;
    // Killed while waiting for the answer: the remote has the batch, we have no record.
    first.signal(Signal::SIGKILL);
    first.wait_exit(10).await;
    let applied_before = rest.state.lock().unwrap().upserts;
    let st = status(&env, d.id).await;
    assert_eq!(
        st.synced, 0,
        "the answer never arrived, so nothing was recorded"
    );
    assert_eq!(st.pending, 500, "nothing left the queue");

    rest.switch.fix();
    let _second = Process::spawn(bin, &[], &env.process_vars());
    drained(&env, d.id, 60).await;
    {
        let s = rest.state.lock().unwrap();
        assert_eq!(
            s.records.len(),
            500,
            "every profile exactly once at the remote"
        );
        assert_eq!(
            s.upserts,
            500 + applied_before,
            "the unanswered batch was sent again"
        );
    }
    assert_eq!(status(&env, d.id).await.synced, 500);
}
