//! The destinations service end to end against real local fakes of HubSpot, Salesforce
//! and a REST endpoint (`test_support::crm`): backfill then only changes, merges and
//! erasures reaching the remote, isolation of a failing destination, token expiry,
//! dead letters and their replay.

mod common;

use std::time::Duration;

use common::*;
use domain::ProfileChangeKind;
use domain::api::{DestinationKind, DestinationUpdate};
use serde_json::json;
use test_support::crm::{FakeHubSpot, FakeRest, FakeSalesforce, RestAuth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_backfill_of_1000_then_only_changes_are_sent() {
    let env = env().await;
    let hs = FakeHubSpot::start(100, Duration::from_secs(10)).await;
    let ids = seed(&env.db, "hb", 1000).await;
    let dest = hubspot(&env, "HubSpot", &hs).await;
    assert_eq!(
        dest.status.pending, 1000,
        "creating a destination queues its backfill"
    );
    start(&env).await;
    drained(&env, dest.id, 60).await;
    {
        let s = hs.state.lock().unwrap();
        assert_eq!(s.contacts.len(), 1000);
        assert_eq!(s.upsert_inputs, 1000, "each profile sent once");
        assert!(s.largest_batch <= 100, "batches of at most 100");
        assert_eq!(s.property_creates.get("constintel_churn_risk"), Some(&1));
        assert!(
            s.property_creates.values().all(|n| *n == 1),
            "each property created once"
        );
        let c = &s.contacts["hb7@example.com"];
        assert_eq!(c.properties["firstname"], "Asha7");
        assert_eq!(c.properties["lastname"], "Rao7");
        assert_eq!(c.properties["constintel_orders_count"], "0");
    }
    let st = status(&env, dest.id).await;
    assert_eq!((st.synced, st.pending, st.dead_letters), (1000, 0, 0));
    assert!(st.last_success_at.is_some());

    // Fifty profiles announce a change; only ten of them really changed.
    sqlx::query("UPDATE customer_profile SET orders_count = 42 WHERE id = ANY($1)")
        .bind(&ids[..10])
        .execute(&env.db)
        .await
        .unwrap();
    changed(&env.db, &ids[..50], ProfileChangeKind::Updated).await;
    until(30, "the ten changes to reach HubSpot", || {
        let s = hs.state.lock().unwrap();
        ids[..10].iter().enumerate().all(|(i, _)| {
            s.contacts[&format!("hb{i}@example.com")].properties["constintel_orders_count"] == "42"
        })
    })
    .await;
    drained(&env, dest.id, 30).await;
    let s = hs.state.lock().unwrap();
    assert_eq!(
        s.upsert_inputs, 1010,
        "the forty unchanged records were not sent again"
    );
    assert_eq!(
        s.throttled, 0,
        "the default rate stays inside HubSpot's limit"
    );
    drop(s);
    assert!(hs.max_requests_in(Duration::from_secs(10)) <= 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_and_erasures_reach_hubspot_and_rest() {
    let env = env().await;
    let hs = FakeHubSpot::start(100, Duration::from_secs(10)).await;
    let web = FakeRest::start(RestAuth::Hmac("whsec-test".into())).await;
    let ids = seed(&env.db, "mg", 3).await;
    let (keep, gone, erased) = (ids[0], ids[1], ids[2]);
    let h = hubspot(&env, "HubSpot", &hs).await;
    let r = rest(&env, "Warehouse", &web, json!({})).await;
    start(&env).await;
    drained(&env, h.id, 30).await;
    drained(&env, r.id, 30).await;
    assert_eq!(hs.state.lock().unwrap().contacts.len(), 3);
    assert_eq!(web.state.lock().unwrap().records.len(), 3);
    let gone_hs_id = hs.state.lock().unwrap().contacts["mg1@example.com"]
        .id
        .clone();
    let keep_hs_id = hs.state.lock().unwrap().contacts["mg0@example.com"]
        .id
        .clone();

    // `gone` is merged into `keep` (its e-mail moves to the survivor), as the merger does.
    sqlx::query("UPDATE customer_profile SET merged_into = $1, merged_at = now() WHERE id = $2")
        .bind(keep)
        .bind(gone)
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::query("UPDATE profile_identifier SET profile_id = $1 WHERE profile_id = $2")
        .bind(keep)
        .bind(gone)
        .execute(&env.db)
        .await
        .unwrap();
    changed(&env.db, &[gone], ProfileChangeKind::Merged).await;
    changed(&env.db, &[keep], ProfileChangeKind::Updated).await;
    // `erased` is erased: its rows are gone.
    sqlx::query("DELETE FROM profile_identifier WHERE profile_id = $1")
        .bind(erased)
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM customer_profile WHERE id = $1")
        .bind(erased)
        .execute(&env.db)
        .await
        .unwrap();
    changed(&env.db, &[erased], ProfileChangeKind::Erased).await;

    until(30, "the merge and the erasure to reach HubSpot", || {
        let s = hs.state.lock().unwrap();
        !s.merges.is_empty() && !s.gdpr_deleted.is_empty()
    })
    .await;
    until(
        30,
        "the merge and the erasure to reach the REST endpoint",
        || {
            let s = web.state.lock().unwrap();
            !s.merges.is_empty() && !s.deleted.is_empty()
        },
    )
    .await;
    {
        let s = hs.state.lock().unwrap();
        assert_eq!(s.merges, vec![(keep_hs_id, gone_hs_id)]);
        assert_eq!(s.gdpr_deleted, vec!["mg2@example.com".to_owned()]);
        assert_eq!(s.contacts.len(), 1);
    }
    {
        let s = web.state.lock().unwrap();
        assert_eq!(s.merges, vec![(gone.to_string(), Some(keep.to_string()))]);
        assert_eq!(s.deleted, vec![(erased.to_string(), true)]);
        assert_eq!(s.refused, 0, "every request was signed");
        assert!(s.records.contains_key(&keep.to_string()));
        assert_eq!(s.records.len(), 1);
    }
    drained(&env, h.id, 30).await;
    // The delivery log recorded the erasure, without the secret.
    let log = destinations::store::deliveries(&env.db, h.id, 100)
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|d| d.request.contains("gdpr-delete") && d.outcome == "ok")
    );
    assert!(
        log.iter()
            .all(|d| !d.request.contains(&hs.token) && !d.response.contains(&hs.token))
    );
    let st = status(&env, h.id).await;
    assert_eq!(st.synced, 1, "only the survivor is left at HubSpot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_destination_down_does_not_hold_up_another() {
    let env = env().await;
    let up = FakeRest::start(RestAuth::Bearer("tok-up".into())).await;
    let down = FakeRest::start(RestAuth::Bearer("tok-down".into())).await;
    down.switch.fail_with_503();
    seed(&env.db, "iso", 300).await;
    let a = rest(&env, "Up", &up, json!({"batch_size": 50})).await;
    let b = rest(&env, "Down", &down, json!({"batch_size": 50})).await;
    start(&env).await;
    drained(&env, a.id, 30).await;
    assert_eq!(up.state.lock().unwrap().records.len(), 300);
    assert_eq!(down.state.lock().unwrap().records.len(), 0);
    let st = status(&env, b.id).await;
    assert_eq!(st.pending, 300, "the failing destination keeps its queue");
    assert!(st.error_rate > 0.0);
    assert_eq!(st.dead_letters, 0, "503s are retried, not dead-lettered");
    // It keeps failing for a while (several retries) while the healthy one is done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = destinations::store::deliveries(&env.db, b.id, 50)
        .await
        .unwrap();
    assert!(log.len() >= 2, "retried with backoff: {log:?}");
    assert!(
        log.iter()
            .all(|d| d.outcome == "transient" && d.status == Some(503))
    );
    down.switch.fix();
    drained(&env, b.id, 30).await;
    assert_eq!(down.state.lock().unwrap().records.len(), 300);
    assert_eq!(down.state.lock().unwrap().upserts, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_token_expiry_mid_sync_refreshes_and_repeats() {
    let env = env().await;
    let sf = FakeSalesforce::start().await;
    seed(&env.db, "sf", 1000).await;
    let d = salesforce(
        &env,
        "Salesforce",
        &sf,
        json!({"batch_size": 200, "requests_per_second": 2}),
    )
    .await;
    start(&env).await;
    until(30, "the first collection to arrive", || {
        sf.state.lock().unwrap().records.len() >= 200
    })
    .await;
    sf.expire_tokens();
    drained(&env, d.id, 60).await;
    {
        let s = sf.state.lock().unwrap();
        assert_eq!(s.records.len(), 1000);
        assert!(s.largest_batch <= 200);
        assert!(s.tokens_issued >= 2, "a new token after the expiry");
        assert!(s.expired_answers >= 1, "the expiry was hit mid-sync");
        assert_eq!(
            s.upsert_records, 1000,
            "the refused request was repeated, nothing sent twice"
        );
    }
    assert_eq!(status(&env, d.id).await.dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_dead_lettered_and_replays_after_the_fix() {
    let env = env().await;
    let hs = FakeHubSpot::start(100, Duration::from_secs(10)).await;
    let sf = FakeSalesforce::start().await;
    let ids = seed(&env.db, "dl", 50).await;
    hs.state
        .lock()
        .unwrap()
        .refuse_keys
        .insert("dl13@example.com".into());
    sf.state
        .lock()
        .unwrap()
        .refuse_keys
        .insert(ids[21].to_string());
    let h = hubspot(&env, "HubSpot", &hs).await;
    let s = salesforce(&env, "Salesforce", &sf, json!({})).await;
    start(&env).await;
    drained(&env, h.id, 30).await;
    drained(&env, s.id, 30).await;
    assert_eq!(
        hs.state.lock().unwrap().contacts.len(),
        49,
        "the other 49 went through"
    );
    assert_eq!(sf.state.lock().unwrap().records.len(), 49);
    let dead = destinations::store::dead_letters(&env.db, h.id, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].profile_id, ids[13]);
    assert!(
        dead[0].error.contains("validation rule"),
        "{}",
        dead[0].error
    );
    let dead = destinations::store::dead_letters(&env.db, s.id, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].profile_id, ids[21]);
    assert!(
        dead[0].error.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        "{}",
        dead[0].error
    );

    // The cause is fixed at the remote; the dead letters replay.
    hs.state.lock().unwrap().refuse_keys.clear();
    sf.state.lock().unwrap().refuse_keys.clear();
    assert_eq!(destinations::store::replay(&env.db, h.id).await.unwrap(), 1);
    assert_eq!(destinations::store::replay(&env.db, s.id).await.unwrap(), 1);
    drained(&env, h.id, 30).await;
    drained(&env, s.id, 30).await;
    assert_eq!(hs.state.lock().unwrap().contacts.len(), 50);
    assert_eq!(sf.state.lock().unwrap().records.len(), 50);
    assert_eq!(status(&env, h.id).await.dead_letters, 0);
    assert_eq!(status(&env, s.id).await.synced, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mapping_resends_only_what_it_changes_and_bad_settings_are_refused() {
    let env = env().await;
    let web = FakeRest::start(RestAuth::Bearer("t".into())).await;
    seed(&env.db, "mp", 20).await;
    let d = rest(&env, "Rest", &web, json!({})).await;
    start(&env).await;
    drained(&env, d.id, 30).await;
    assert_eq!(web.state.lock().unwrap().upserts, 20);
    let mut mapping = d.mapping.clone();
    mapping.insert("aov".into(), domain::api::ProfileField::AverageOrderValue);
    let upd = DestinationUpdate {
        mapping: Some(mapping),
        ..Default::default()
    };
    destinations::store::update(&env.db, &env.secrets_key(), d.id, &upd)
        .await
        .unwrap();
    drained(&env, d.id, 30).await;
    {
        let s = web.state.lock().unwrap();
        assert_eq!(
            s.upserts, 40,
            "every record changed shape, so all were resent"
        );
        assert!(s.records.values().all(|r| r.get("aov").is_some()));
    }
    // Bad settings never reach the database.
    let bad = destinations::store::update(
        &env.db,
        &env.secrets_key(),
        d.id,
        &DestinationUpdate {
            config: Some(json!({"url": "ftp://x"}).as_object().cloned().unwrap()),
            ..Default::default()
        },
    )
    .await;
    assert!(bad.unwrap_err().to_string().contains("http(s) URL"));
    let req = domain::api::DestinationRequest {
        name: "HS".into(),
        kind: DestinationKind::Hubspot,
        config: Default::default(),
        credentials: Default::default(),
        mapping: Default::default(),
        mode: Default::default(),
        audience_id: None,
    };
    let err = destinations::store::create(&env.db, &env.secrets_key(), &req, "t")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("credential `token`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_email_moves_the_hubspot_contact_instead_of_leaving_it_behind() {
    let env = env().await;
    let hs = FakeHubSpot::start(100, Duration::from_secs(10)).await;
    let ids = seed(&env.db, "ke", 3).await;
    let h = hubspot(&env, "HubSpot", &hs).await;
    start(&env).await;
    drained(&env, h.id, 30).await;
    let id_of = |key: &str| hs.state.lock().unwrap().contacts[key].id.clone();
    let (first, second) = (id_of("ke0@example.com"), id_of("ke1@example.com"));
    {
        let mut s = hs.state.lock().unwrap();
        // A contact someone created in HubSpot holds the address the second moves to.
        s.contacts.insert(
            "taken@example.com".into(),
            test_support::crm::HubSpotContact {
                id: "900001".into(),
                properties: [("email".to_owned(), "taken@example.com".to_owned())].into(),
            },
        );
        // The third's contact was deleted in HubSpot meanwhile.
        s.contacts.remove("ke2@example.com");
    }
    // Each profile is seen with a new e-mail (the latest identifier is the key).
    for (id, email) in ids
        .iter()
        .zip(["new0@example.com", "taken@example.com", "new2@example.com"])
    {
        sqlx::query(
            "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, \
             last_seen_at) VALUES ('email', $1, $2, 'shopify', now(), now())",
        )
        .bind(email)
        .bind(id)
        .execute(&env.db)
        .await
        .unwrap();
    }
    changed(&env.db, &ids, ProfileChangeKind::Updated).await;
    until(30, "the changes to reach HubSpot", || {
        let s = hs.state.lock().unwrap();
        s.contacts.contains_key("new0@example.com") && s.contacts.contains_key("new2@example.com")
    })
    .await;
    drained(&env, h.id, 30).await;
    {
        let s = hs.state.lock().unwrap();
        // The first contact now has the new address: same contact, none left behind.
        assert_eq!(s.contacts["new0@example.com"].id, first);
        assert!(!s.contacts.contains_key("ke0@example.com"));
        assert_eq!(
            s.contacts["new0@example.com"].properties["firstname"],
            "Asha0"
        );
        // The second would take another contact's address: refused, nothing changed.
        assert_eq!(s.contacts["ke1@example.com"].id, second);
        assert_eq!(s.contacts["taken@example.com"].id, "900001");
        // The third's old contact was gone: it is created under the new address.
        assert!(s.contacts.contains_key("new2@example.com"));
        assert_eq!(s.contacts.len(), 4);
        assert_eq!(
            s.update_inputs, 3,
            "each changed key went through batch update"
        );
    }
    let dead = destinations::store::dead_letters(&env.db, h.id, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].profile_id, ids[1]);
    assert!(
        dead[0].error.contains("Contact already exists"),
        "{}",
        dead[0].error
    );
    let st = destinations::store::states(&env.db, h.id, &ids)
        .await
        .unwrap();
    assert_eq!(st[&ids[0]].remote_key, "new0@example.com");
    assert_eq!(st[&ids[0]].remote_id.as_deref(), Some(first.as_str()));
    assert_eq!(
        st[&ids[1]].remote_key, "ke1@example.com",
        "still the old record"
    );
}
