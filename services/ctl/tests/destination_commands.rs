//! `ctl destination add|list|test|sync|replay|log`, run as the real binary against a
//! fresh database and local fakes of HubSpot and a REST endpoint, with the destinations
//! service syncing in between.

mod ctl_cli;

use std::process::Output;
use std::time::Duration;

use test_support::TestEnv;
use test_support::crm::{FakeHubSpot, FakeRest, RestAuth};
use uuid::Uuid;

/// Runs `ctl destination ARGS` with the env's settings plus `extra` variables.
fn run(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut all = vec!["destination"];
    all.extend_from_slice(args);
    ctl_cli::run(env, &all, extra)
}

/// `ctl destination ARGS`, which must succeed; its standard output.
fn ctl(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> String {
    let out = run(env, extra, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctl destination {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `ctl destination ARGS`, which must fail; its standard error.
fn ctl_fails(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> String {
    let out = run(env, extra, args);
    assert!(!out.status.success(), "ctl destination {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn drained(env: &TestEnv, id: Uuid) {
    test_support::eventually(60, "the destination's queue to drain", || async {
        let s = destinations::store::get(&env.db, id).await.unwrap().status;
        (s.pending == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_added_tested_synced_logged_and_replayed() {
    let env = TestEnv::with_settings([
        ("DESTINATION_RETRY_BASE_MS", "100".into()),
        ("DESTINATION_RETRY_MAX_SECS", "1".into()),
    ])
    .await;
    let hs = FakeHubSpot::start(100, Duration::from_secs(10)).await;
    let rest = FakeRest::start(RestAuth::Hmac("whsec-ctl".into())).await;
    let ids = test_support::seed::profiles_with_email(&env.db, "ctl", 20).await;

    // HubSpot with no --credential: the deployment's HUBSPOT_TOKEN is stored.
    let hs_config = format!(r#"{{"base_url": "{}"}}"#, hs.url);
    let out = ctl(
        &env,
        &[("HUBSPOT_TOKEN", &hs.token)],
        &[
            "add", "--name", "HubSpot", "--kind", "hubspot", "--config", &hs_config,
        ],
    );
    assert!(out.contains("queued:   20 profiles"), "{out}");
    assert!(
        out.contains("constintel_churn_risk") && !out.contains(&hs.token),
        "{out}"
    );
    let hs_id: Uuid = out
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A credential named but not in the environment is refused, naming the variable.
    let rest_config = format!(r#"{{"url": "{}", "signing": "hmac"}}"#, rest.endpoint());
    let add_rest = [
        "add",
        "--name",
        "Warehouse",
        "--kind",
        "rest",
        "--credential",
        "secret",
        "--config",
        &rest_config,
    ];
    let err = ctl_fails(&env, &[], &add_rest);
    assert!(err.contains("set DESTINATION_SECRET"), "{err}");
    // Without HUBSPOT_TOKEN either, a HubSpot destination has no token: refused.
    let err = ctl_fails(
        &env,
        &[],
        &[
            "add", "--name", "HS2", "--kind", "hubspot", "--config", &hs_config,
        ],
    );
    assert!(err.contains("credential `token`"), "{err}");
    ctl(&env, &[("DESTINATION_SECRET", "whsec-ctl")], &add_rest);
    // A token the remote refuses: `test` says so and fails.
    ctl(
        &env,
        &[("DESTINATION_TOKEN", "pat-na1-wrong")],
        &[
            "add",
            "--name",
            "Stale",
            "--kind",
            "hubspot",
            "--credential",
            "token",
            "--config",
            &hs_config,
        ],
    );

    let out = ctl(&env, &[], &["test", "HubSpot"]);
    assert!(out.contains("ok: HubSpot answered 200"), "{out}");
    let out = ctl(&env, &[], &["test", "Warehouse"]);
    assert!(out.contains("ok: the endpoint accepted"), "{out}");
    let err = ctl_fails(&env, &[], &["test", "Stale"]);
    assert!(
        err.contains("the destination refused") && err.contains("INVALID_AUTHENTICATION"),
        "{err}"
    );
    assert_eq!(
        rest.state.lock().unwrap().refused,
        0,
        "every request signed"
    );
    let stale = destinations::store::resolve(&env.db, "Stale")
        .await
        .unwrap();
    destinations::store::update(
        &env.db,
        &env.secrets_key(),
        stale,
        &domain::api::DestinationUpdate {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    env.spawn(destinations::run).await;
    drained(&env, hs_id).await;
    let warehouse = destinations::store::resolve(&env.db, "Warehouse")
        .await
        .unwrap();
    drained(&env, warehouse).await;
    let out = ctl(&env, &[], &["list"]);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_owned()
    };
    for name in ["HubSpot", "Warehouse"] {
        let l = line(name);
        assert!(
            l.contains("enabled")
                && l.contains("synced       20")
                && l.contains("pending        0")
                && l.contains("dead     0"),
            "{l}"
        );
    }
    assert!(line("Stale").contains("paused"), "{out}");
    assert_eq!(hs.state.lock().unwrap().contacts.len(), 20);
    assert_eq!(rest.state.lock().unwrap().records.len(), 20);

    // `sync` queues everything again; only the one real change is sent, and HubSpot
    // refuses it: a dead letter, shown by `log`.
    sqlx::query("UPDATE customer_profile SET orders_count = 42 WHERE id = $1")
        .bind(ids[3])
        .execute(&env.db)
        .await
        .unwrap();
    hs.state
        .lock()
        .unwrap()
        .refuse_keys
        .insert("ctl3@example.com".into());
    let before = hs.state.lock().unwrap().upsert_inputs;
    let out = ctl(&env, &[], &["sync", "HubSpot"]);
    assert!(out.contains("20 profiles queued"), "{out}");
    drained(&env, hs_id).await;
    assert_eq!(
        hs.state.lock().unwrap().upsert_inputs,
        before,
        "nothing unchanged was resent and the refused record was not applied"
    );
    let out = ctl(&env, &[], &["log", "HubSpot"]);
    assert!(
        out.contains("/crm/v3/objects/contacts/batch/upsert"),
        "{out}"
    );
    let dead = out.split("dead letters:").nth(1).unwrap();
    assert!(
        dead.contains(&ids[3].to_string()) && dead.contains("validation rule"),
        "{out}"
    );
    assert!(!out.contains(&hs.token), "no secret in the log");

    // The cause is fixed at HubSpot; `replay` sends it.
    hs.state.lock().unwrap().refuse_keys.clear();
    let out = ctl(&env, &[], &["replay", "HubSpot"]);
    assert!(out.contains("1 dead letters queued again"), "{out}");
    drained(&env, hs_id).await;
    assert_eq!(
        hs.state.lock().unwrap().contacts["ctl3@example.com"].properties["constintel_orders_count"],
        "42"
    );
    let out = ctl(&env, &[], &["log", "HubSpot"]);
    assert!(out.trim_end().ends_with("dead letters:"), "{out}");

    // Unknown names are refused by name.
    let err = ctl_fails(&env, &[], &["sync", "Nope"]);
    assert!(err.contains("no destination `Nope`"), "{err}");
}
