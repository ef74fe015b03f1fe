//! Analysts' decisions on the real Postgres: manual merge and its undo, review items
//! approved and rejected, erasure with suppression — and erasure that holds against
//! Redis too: an event racing the erase cannot re-create the person, a Customer 360
//! read racing it cannot put the document back, and the person's unlinked raw events,
//! CSV import errors, stream entries and dead letters go.

use std::collections::BTreeSet;
use std::time::Duration;

use domain::{EventType, IdentifierKind, MergeRequest, NormalizedEvent};
use identity::Policy;
use identity::memory::partition_of;
use identity::resolver::Resolver;
use identity::resolver::locks::identifier_lock;
use sqlx::Connection as _;
use sqlx::Row;
use storage::customer360::{Customer360Cache, cache_key};
use streams::{Envelope, Streams, Topic};
use test_support::events::{self, id};
use test_support::{TestEnv, eventually};
use uuid::Uuid;

fn event(n: u32, ids: &[(IdentifierKind, &str)], name: Option<&str>) -> NormalizedEvent {
    events::event(n)
        .event_id(Uuid::from_u128(0xA000_0000 + u128::from(n)))
        .event_type(EventType::Identify)
        .ids(ids)
        .named(name)
        .build()
}

/// Which events share a profile; checks on the way that no identifier row names a
/// profile that is missing or merged away.
async fn partition(env: &TestEnv) -> BTreeSet<BTreeSet<Uuid>> {
    let stray = env.stray_identifier_rows().await;
    assert!(
        stray.is_empty(),
        "identifier rows name no live profile: {stray:?}"
    );
    let rows = sqlx::query("SELECT event_id, profile_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap();
    partition_of(
        rows.iter()
            .map(|r| (r.get("event_id"), r.get::<Uuid, _>("profile_id"))),
    )
}

async fn live_ids(env: &TestEnv) -> BTreeSet<Uuid> {
    sqlx::query_scalar("SELECT id FROM customer_profile WHERE merged_into IS NULL")
        .fetch_all(&env.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn setup(events: &[NormalizedEvent]) -> (TestEnv, Resolver) {
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    identity::seed::store_events(&env.db, events).await.unwrap();
    resolver.resolve(events).await.unwrap();
    (env, resolver)
}

#[tokio::test]
async fn unmerge_undoes_a_manual_merge_and_keeps_them_apart() {
    use IdentifierKind::*;
    let events = vec![
        event(
            1,
            &[(Email, "asha@mail.in"), (CookieId, "c1")],
            Some("Asha"),
        ),
        event(2, &[(Phone, "+919812345678")], None),
        event(3, &[(CookieId, "c1")], None),
        event(4, &[(Phone, "+919812345678"), (DeviceId, "d2")], None),
    ];
    let (env, resolver) = setup(&events).await;
    let before = partition(&env).await;
    let before_ids = live_ids(&env).await;
    assert_eq!(before.len(), 2);

    let ids: Vec<Uuid> = before_ids.iter().copied().collect();
    let merged = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::ManualMerge {
                profile_ids: ids.clone(),
                actor: "analyst@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(partition(&env).await.len(), 1);
    let (merge_id, rule, actor): (Uuid, String, String) =
        sqlx::query_as("SELECT id, rule, actor FROM merge_history")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        (rule.as_str(), actor.as_str()),
        ("manual", "analyst@brand.in")
    );
    assert_eq!(merged.detail["merge_ids"][0], merge_id.to_string());

    // A later event of the absorbed person lands on the merged profile.
    let late = event(5, &[(DeviceId, "d2")], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&late))
        .await
        .unwrap();
    resolver.resolve(std::slice::from_ref(&late)).await.unwrap();
    assert_eq!(partition(&env).await.len(), 1);

    resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::Unmerge {
                merge_id,
                actor: "analyst@brand.in".into(),
            },
        )
        .await
        .unwrap();
    let after: BTreeSet<BTreeSet<Uuid>> = partition(&env).await;
    let mut expected = before.clone();
    // Event 5 follows its device to the restored profile.
    let phone_side = expected
        .iter()
        .find(|s| s.contains(&events[1].event_id))
        .unwrap()
        .clone();
    expected.remove(&phone_side);
    let mut with_late = phone_side;
    with_late.insert(late.event_id);
    expected.insert(with_late);
    assert_eq!(after, expected, "unmerge(merge(x)) = x");
    assert_eq!(
        live_ids(&env).await,
        before_ids,
        "the original profile ids come back"
    );
    let undone: Option<String> =
        sqlx::query_scalar("SELECT undone_by FROM merge_history WHERE id = $1")
            .bind(merge_id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(undone.as_deref(), Some("analyst@brand.in"));

    // Evidence linking them again no longer merges them: the analyst said they differ.
    let link = event(
        6,
        &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
        None,
    );
    identity::seed::store_events(&env.db, std::slice::from_ref(&link))
        .await
        .unwrap();
    resolver.resolve(std::slice::from_ref(&link)).await.unwrap();
    assert_eq!(live_ids(&env).await.len(), 2);
}

#[tokio::test]
async fn review_items_are_approved_or_rejected() {
    use IdentifierKind::*;
    // Two people on one device: a review item.
    let events = vec![
        event(1, &[(Email, "asha@mail.in"), (DeviceId, "tablet")], None),
        event(2, &[(Email, "ravi@mail.in")], None),
        event(3, &[(Email, "ravi@mail.in"), (DeviceId, "tablet")], None),
        event(
            4,
            &[(Email, "meena@mail.in"), (LoyaltyId, "L-1")],
            Some("Meena"),
        ),
        event(
            5,
            &[(Phone, "+919812345678"), (LoyaltyId, "L-2")],
            Some("Kiran"),
        ),
        event(6, &[(LoyaltyId, "L-1"), (Phone, "+919812345678")], None),
    ];
    let (env, resolver) = setup(&events).await;
    let reviews: Vec<(Uuid, String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT id, reason, candidate_profile_ids FROM manual_merge_queue ORDER BY reason",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let reasons: Vec<&str> = reviews.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(reasons, vec!["name_conflict", "shared_weak_identifier"]);
    assert_eq!(live_ids(&env).await.len(), 4);

    let (name_review, _, _) = &reviews[0];
    resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::ApproveReview {
                review_id: *name_review,
                actor: "a@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(live_ids(&env).await.len(), 3, "approving merges the two");
    let status: (String, Option<String>) =
        sqlx::query_as("SELECT status, decided_by FROM manual_merge_queue WHERE id = $1")
            .bind(name_review)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        status,
        ("applied".to_owned(), Some("a@brand.in".to_owned()))
    );

    let (device_review, _, _) = &reviews[1];
    resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::RejectReview {
                review_id: *device_review,
                actor: "a@brand.in".into(),
            },
        )
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM manual_merge_queue WHERE id = $1")
        .bind(device_review)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(status, "rejected");
    // The same evidence again raises nothing new.
    let again = event(7, &[(Email, "ravi@mail.in"), (DeviceId, "tablet")], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&again))
        .await
        .unwrap();
    let report = resolver
        .resolve(std::slice::from_ref(&again))
        .await
        .unwrap();
    assert_eq!(report.reviews, 0);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM manual_merge_queue WHERE status = 'pending'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(pending, 0);
}

/// Erases the person holding asha@mail.in: their profile and the erase's outcome.
async fn erase_asha(
    env: &TestEnv,
    resolver: &Resolver,
) -> (Uuid, identity::resolver::requests::RequestOutcome) {
    let asha: Uuid = sqlx::query_scalar(
        "SELECT profile_id FROM profile_identifier WHERE value = 'asha@mail.in'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    let out = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::Erase {
                profile_id: asha,
                actor: "dpo@brand.in".into(),
            },
        )
        .await
        .unwrap();
    (asha, out)
}

#[tokio::test]
async fn erasure_deletes_the_person_and_suppresses_their_identifiers() {
    use IdentifierKind::*;
    let events = vec![
        event(
            1,
            &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
            Some("Asha"),
        ),
        event(2, &[(Phone, "+919812345678"), (CookieId, "c1")], None),
        event(3, &[(Email, "ravi@mail.in")], Some("Ravi")),
    ];
    let (env, resolver) = setup(&events).await;
    let (asha, out) = erase_asha(&env, &resolver).await;
    assert_eq!(out.detail["events"], 2);
    assert_eq!(out.detail["suppressed_identifiers"], 3);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert_eq!(left, vec![events[2].event_id]);
    let profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_profile")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(profiles, 1);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM profile_identifier WHERE value LIKE '%asha%' OR value = '+919812345678'")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(kept, 0);

    // The person comes back through a webhook: the event is dropped, nothing returns.
    let back = event(9, &[(Phone, "+91 98123 45678"), (CookieId, "c9")], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&back))
        .await
        .unwrap();
    let report = resolver.resolve(std::slice::from_ref(&back)).await.unwrap();
    assert_eq!(report.suppressed, 1);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE event_id = $1")
            .bind(back.event_id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(stored, 0);
    // Erasing again is a no-op.
    let again = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::Erase {
                profile_id: asha,
                actor: "dpo@brand.in".into(),
            },
        )
        .await
        .unwrap();
    assert!(again.detail["note"].is_string());
}

/// The normalizer publishes events without storing their rows (the merger stores each
/// one, attached): an erased person coming back that way is dropped too, with the raw
/// event, and nothing of them is re-created.
#[tokio::test]
async fn an_erased_person_published_without_a_row_is_dropped() {
    use IdentifierKind::*;
    let events = vec![
        event(
            1,
            &[(Email, "asha@mail.in"), (Phone, "+919812345678")],
            Some("Asha"),
        ),
        event(2, &[(Email, "ravi@mail.in")], Some("Ravi")),
    ];
    let (env, resolver) = setup(&events).await;
    erase_asha(&env, &resolver).await;

    // Published as the normalizer publishes it: no `normalized_event` row yet.
    let back = event(9, &[(Phone, "+91 98123 45678"), (CookieId, "c9")], None);
    let report = resolver.resolve(std::slice::from_ref(&back)).await.unwrap();
    assert_eq!(report.suppressed, 1, "{report:?}");
    assert_eq!(report.resolved, 0);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM normalized_event WHERE event_id = $1")
            .bind(back.event_id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(stored, 0);
    let phone: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM profile_identifier WHERE value = '+919812345678' OR value = 'c9'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(phone, 0, "the erased person's identifiers came back");
    assert_eq!(live_ids(&env).await.len(), 1);
}

/// The step reads the suppression list with the identifiers' owners and lets Postgres
/// hash `kind:value`: it must find what the erase stored (Rust's hash) for every kind,
/// for values beyond ASCII, and for identifiers resolution ignores as junk (which an
/// erase recorded before the blocklist named them still suppresses).
#[tokio::test]
async fn every_kind_of_suppressed_identifier_is_recognised() {
    use IdentifierKind::*;
    let erased = [
        id(Email, "zoë.ñandú@mail.in"),
        id(Phone, "+919812345678"),
        id(CustomerId, "segment:कस्टमर-7"),
        id(LoyaltyId, "LÖYAL-1"),
        id(PosCustomer, "store-1:ç-9"),
        id(DeviceId, "dev-é"),
        id(CookieId, "cookie-ü"),
        id(Email, "test@test.com"),
    ];
    assert!(Policy::default().usable(&erased[7..]).is_empty(), "junk");
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    for i in &erased {
        sqlx::query("INSERT INTO suppression (identifier_sha256, kind) VALUES ($1, $2)")
            .bind(identity::model::suppression_hash(i))
            .bind(i.kind.as_str())
            .execute(&env.db)
            .await
            .unwrap();
    }
    // Published without rows, each with one erased identifier and a fresh cookie; one
    // more event of someone else.
    let mut events: Vec<NormalizedEvent> = erased
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let mut e = event(n as u32 + 1, &[(CookieId, &format!("fresh-{n}"))], None);
            e.identifiers.push(i.clone());
            e
        })
        .collect();
    events.push(event(99, &[(Email, "ravi@mail.in")], None));
    let report = resolver.resolve(&events).await.unwrap();
    assert_eq!(report.suppressed, erased.len(), "{report:?}");
    assert_eq!(report.resolved, 1, "{report:?}");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM normalized_event")
            .fetch_one(&env.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(live_ids(&env).await.len(), 1);
}

const EMAIL: &str = "asha@mail.in";
const PHONE: &str = "+919812345678";

/// Asha (e-mail and phone, two events) and Ravi, resolved.
async fn setup_asha() -> (TestEnv, Resolver, Uuid) {
    use IdentifierKind::*;
    let env = TestEnv::new().await;
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    let events = vec![
        event(1, &[(Email, EMAIL), (Phone, PHONE)], None),
        event(2, &[(Phone, PHONE), (CookieId, "cookie-asha-1")], None),
        event(3, &[(Email, "ravi@mail.in")], None),
    ];
    identity::seed::store_events(&env.db, &events)
        .await
        .unwrap();
    resolver.resolve(&events).await.unwrap();
    let asha = profile_of(&env, EMAIL).await.expect("Asha has a profile");
    (env, resolver, asha)
}

async fn profile_of(env: &TestEnv, value: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT profile_id FROM profile_identifier WHERE value = $1")
        .bind(value)
        .fetch_optional(&env.db)
        .await
        .unwrap()
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.db).await.unwrap()
}

fn erase(profile_id: Uuid) -> MergeRequest {
    MergeRequest::Erase {
        profile_id,
        actor: "dpo@brand.in".into(),
    }
}

/// Nothing of Asha is readable: no profile, identifier, event or cached document.
async fn nothing_of_asha(env: &TestEnv, asha: Uuid) {
    let stray = env.stray_identifier_rows().await;
    assert!(
        stray.is_empty(),
        "identifier rows name no live profile: {stray:?}"
    );
    assert_eq!(profile_of(env, EMAIL).await, None);
    assert_eq!(profile_of(env, PHONE).await, None);
    assert_eq!(
        count(
            env,
            "SELECT count(*) FROM normalized_event WHERE identifiers::text LIKE '%asha@mail.in%' \
             OR identifiers::text LIKE '%919812345678%'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            env,
            "SELECT count(*) FROM identity_identifier WHERE value IN ('asha@mail.in', '+919812345678')"
        )
        .await,
        0
    );
    let cache = Customer360Cache::new(
        env.db.clone(),
        env.redis.clone(),
        env.prefix(),
        Duration::from_secs(60),
    );
    assert_eq!(cache.load(asha).await.unwrap(), None);
}

#[tokio::test]
async fn an_event_waiting_on_the_locks_while_the_person_is_erased_is_dropped() {
    use IdentifierKind::*;
    let (env, resolver, asha) = setup_asha().await;
    // The event carries Asha's e-mail and a new cookie whose lock sorts first: holding
    // that lock elsewhere parks the resolver before it reaches the e-mail's lock, and
    // the erase (which takes the e-mail's lock, not the cookie's) runs meanwhile.
    let email_key = identifier_lock(&id(Email, EMAIL));
    let cookie = (0..)
        .map(|n| format!("cookie-race-{n}"))
        .find(|c| identifier_lock(&id(CookieId, c)) < email_key)
        .unwrap();
    let racing = event(50, &[(Email, EMAIL), (CookieId, &cookie)], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&racing))
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(env.settings.database_url.as_str())
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(identifier_lock(&id(CookieId, &cookie)))
        .execute(&mut holder)
        .await
        .unwrap();
    let resolving = tokio::spawn({
        let resolver = resolver.clone();
        let racing = racing.clone();
        async move { resolver.resolve(std::slice::from_ref(&racing)).await }
    });
    eventually(20, "the resolver waiting on the cookie's lock", || async {
        let waiting = count(
            &env,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
        (waiting > 0).then_some(())
    })
    .await;

    let out = resolver
        .apply_request(Uuid::now_v7(), &erase(asha))
        .await
        .unwrap();
    assert_eq!(out.detail["erased_profile_id"], asha.to_string());
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let report = resolving.await.unwrap().unwrap();
    assert_eq!(report.suppressed, 1, "{report:?}");
    assert_eq!(report.resolved, 0);
    nothing_of_asha(&env, asha).await;
    assert_eq!(
        count(&env, "SELECT count(*) FROM customer_profile").await,
        1
    );
}

#[tokio::test]
async fn an_erase_racing_a_stream_of_events_leaves_nothing_of_the_person() {
    use IdentifierKind::*;
    let (env, resolver, asha) = setup_asha().await;
    let stream: Vec<NormalizedEvent> = (100..160)
        .map(|n| {
            let cookie = format!("cookie-stream-{n}");
            if n % 2 == 0 {
                event(n, &[(Email, EMAIL), (CookieId, &cookie)], None)
            } else {
                event(n, &[(Phone, PHONE), (CookieId, &cookie)], None)
            }
        })
        .collect();
    let feeding = tokio::spawn({
        let resolver = resolver.clone();
        let db = env.db.clone();
        async move {
            for ev in stream {
                identity::seed::store_events(&db, std::slice::from_ref(&ev))
                    .await
                    .unwrap();
                resolver.resolve(std::slice::from_ref(&ev)).await.unwrap();
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    resolver
        .apply_request(Uuid::now_v7(), &erase(asha))
        .await
        .unwrap();
    feeding.await.unwrap();
    nothing_of_asha(&env, asha).await;
    // Only Ravi is left, and no profile was made of the racing events' cookies.
    assert_eq!(
        count(&env, "SELECT count(*) FROM customer_profile").await,
        1
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM profile_identifier WHERE value LIKE 'cookie-stream-%'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_document_built_before_the_erase_cannot_be_cached_after_it() {
    let (env, resolver, asha) = setup_asha().await;
    let cache = Customer360Cache::new(
        env.db.clone(),
        env.redis.clone(),
        env.prefix(),
        Duration::from_secs(60),
    );
    // A read computes the document, then stalls before writing it back.
    let doc = storage::customer360::build(&env.db, asha)
        .await
        .unwrap()
        .unwrap();
    resolver
        .apply_request(Uuid::now_v7(), &erase(asha))
        .await
        .unwrap();
    assert!(
        !cache.store(&doc).await.unwrap(),
        "the tombstone refuses it"
    );
    // Later refreshes and invalidations keep the tombstone, so it keeps refusing.
    cache.refresh_many(&[asha]).await.unwrap();
    cache.invalidate(&[asha]).await.unwrap();
    assert!(!cache.store(&doc).await.unwrap());
    let held: Option<String> = redis::cmd("GET")
        .arg(cache_key(env.prefix(), asha))
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(held.as_deref(), Some("erased"));
    assert_eq!(cache.load(asha).await.unwrap(), None);
    // Other profiles are cached as before.
    let ravi = profile_of(&env, "ravi@mail.in").await.unwrap();
    let ravi_doc = storage::customer360::build(&env.db, ravi)
        .await
        .unwrap()
        .unwrap();
    assert!(cache.store(&ravi_doc).await.unwrap());
}

async fn raw_event(env: &TestEnv, id: Uuid, source_event_id: &str, payload: serde_json::Value) {
    sqlx::query(
        "INSERT INTO customer_raw_event (id, source, source_event_id, kind, payload) \
         VALUES ($1, 'segment', $2, 'identify', $3)",
    )
    .bind(id)
    .bind(source_event_id)
    .bind(payload)
    .execute(&env.db)
    .await
    .unwrap();
}

fn envelope(id: Uuid, payload: serde_json::Value) -> Envelope<serde_json::Value> {
    Envelope::new(id, "test", "identify", payload)
}

async fn dead_letter(env: &TestEnv, topic: Topic, error: &str, body: &str) {
    let () = redis::cmd("XADD")
        .arg(topic.dlq_key(env.prefix()))
        .arg("*")
        .arg("id")
        .arg("1-0")
        .arg("error")
        .arg(error)
        .arg("e")
        .arg(body)
        .query_async(&mut env.redis.clone())
        .await
        .map(|_: String| ())
        .unwrap();
}

/// The `field` of every entry of stream `key`.
async fn fields(env: &TestEnv, key: String, field: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| e.get::<String>(field).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn erasure_reaches_unlinked_raw_events_import_errors_streams_and_dead_letters() {
    use IdentifierKind::*;
    let (env, resolver, asha) = setup_asha().await;
    let ravi = profile_of(&env, "ravi@mail.in").await.unwrap();
    let [one, two, three] = [1u128, 2, 3].map(|n| Uuid::from_u128(0xA000_0000 + n));
    raw_event(
        &env,
        one,
        "s-1",
        serde_json::json!({"traits": {"email": EMAIL}}),
    )
    .await;
    raw_event(
        &env,
        three,
        "s-3",
        serde_json::json!({"traits": {"email": "ravi@mail.in"}}),
    )
    .await;
    // Never linked: a raw event whose normalisation failed, one whose normalised event
    // was never resolved, and someone else whose address merely contains Asha's.
    let failed = Uuid::now_v7();
    raw_event(
        &env,
        failed,
        "s-failed",
        serde_json::json!({"traits": {"email": "Asha@Mail.in"}}),
    )
    .await;
    let unresolved = event(70, &[(Phone, PHONE)], None);
    identity::seed::store_events(&env.db, std::slice::from_ref(&unresolved))
        .await
        .unwrap();
    raw_event(
        &env,
        unresolved.event_id,
        "s-70",
        serde_json::json!({"phone": "098123 45678"}),
    )
    .await;
    let joasha = Uuid::now_v7();
    raw_event(
        &env,
        joasha,
        "s-jo",
        serde_json::json!({"traits": {"email": "joasha@mail.in"}}),
    )
    .await;
    // A CSV import whose error texts name her, and one that does not.
    let import = Uuid::now_v7();
    sqlx::query("INSERT INTO csv_imports (id, kind, filename) VALUES ($1, 'customers', 'c.csv')")
        .bind(import)
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO csv_import_errors (import_id, line, reason) VALUES \
         ($1, 2, 'duplicate e-mail asha@mail.in'), ($1, 3, 'missing order_id')",
    )
    .bind(import)
    .execute(&env.db)
    .await
    .unwrap();

    // Her copies in Redis: on every topic, pending in a group, and dead-lettered.
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);
    let later = event(80, &[(Phone, PHONE)], None);
    let normalized = |ev: NormalizedEvent| serde_json::to_value(ev).unwrap();
    let entries = [
        (
            Topic::EventsRaw,
            one,
            serde_json::json!({"body": {"email": EMAIL}}),
        ),
        (Topic::EventsRaw, failed, serde_json::json!({})),
        (Topic::EventsRaw, three, serde_json::json!({})),
        (
            Topic::EventsNormalized,
            two,
            normalized(event(2, &[(Phone, PHONE)], None)),
        ),
        // A later event carrying her phone, known only by its identifiers.
        (
            Topic::EventsNormalized,
            later.event_id,
            normalized(later.clone()),
        ),
        (
            Topic::EventsNormalized,
            three,
            normalized(event(3, &[(Email, "ravi@mail.in")], None)),
        ),
        (
            Topic::PredictionsRequests,
            Uuid::now_v7(),
            serde_json::json!({"profile_id": asha}),
        ),
        (
            Topic::PredictionsRequests,
            Uuid::now_v7(),
            serde_json::json!({"profile_id": ravi}),
        ),
        (
            Topic::MergeRequests,
            Uuid::now_v7(),
            serde_json::to_value(MergeRequest::ManualMerge {
                profile_ids: vec![asha, ravi],
                actor: "analyst".into(),
            })
            .unwrap(),
        ),
    ];
    for (topic, id, payload) in entries {
        streams
            .publish(topic, &envelope(id, payload))
            .await
            .unwrap();
    }
    let group_key = Topic::EventsNormalized.key(env.prefix());
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&group_key)
        .arg("g")
        .arg("0")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("STREAMS")
        .arg(&group_key)
        .arg(">")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    dead_letter(
        &env,
        Topic::EventsRaw,
        "unreadable phone for asha@mail.in",
        "{}",
    )
    .await;
    dead_letter(
        &env,
        Topic::EventsRaw,
        &format!("event {failed} failed"),
        "{}",
    )
    .await;
    dead_letter(&env, Topic::EventsRaw, "bad timestamp", "{\"id\":\"x\"}").await;
    dead_letter(&env, Topic::EventsRaw, "bad e-mail joasha@mail.in", "{}").await;

    let out = resolver
        .apply_request(Uuid::now_v7(), &erase(asha))
        .await
        .unwrap();
    assert_eq!(out.detail["unlinked_events"], 2, "{}", out.detail);
    assert_eq!(out.detail["stream_entries"], 6, "{}", out.detail);
    assert_eq!(out.detail["dead_letters"], 2, "{}", out.detail);

    // Postgres: her unlinked raw events are gone, others' stay.
    let raw: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM customer_raw_event ORDER BY id")
        .fetch_all(&env.db)
        .await
        .unwrap();
    let mut expected = vec![three, joasha];
    expected.sort();
    assert_eq!(raw, expected);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM normalized_event WHERE profile_id IS NULL"
        )
        .await,
        0
    );
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM csv_import_errors ORDER BY line")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(
        reasons,
        [
            "erased: this row named an erased person",
            "missing order_id"
        ]
    );

    // Redis: only others' entries are left, and nothing of hers is pending.
    let left = |topic: Topic| fields(&env, topic.key(env.prefix()), "e");
    let raw_left = left(Topic::EventsRaw).await;
    assert_eq!(raw_left.len(), 1);
    assert!(raw_left[0].contains(&three.to_string()));
    let normalized_left = left(Topic::EventsNormalized).await;
    assert_eq!(normalized_left.len(), 1);
    assert!(normalized_left[0].contains("ravi@mail.in"));
    let predictions_left = left(Topic::PredictionsRequests).await;
    assert_eq!(predictions_left.len(), 1);
    assert!(predictions_left[0].contains(&ravi.to_string()));
    assert!(left(Topic::MergeRequests).await.is_empty());
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(&group_key)
        .arg("g")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(pending.count(), 1);
    let dlq = fields(&env, Topic::EventsRaw.dlq_key(env.prefix()), "error").await;
    assert_eq!(dlq, ["bad timestamp", "bad e-mail joasha@mail.in"]);
    let scrubbed = count(
        &env,
        "SELECT count(*) FROM erasure WHERE scrubbed_at IS NOT NULL",
    )
    .await;
    assert_eq!(scrubbed, 1);
    nothing_of_asha(&env, asha).await;
}

#[tokio::test]
async fn a_failed_scrub_is_finished_by_the_retried_request() {
    let (env, resolver, asha) = setup_asha().await;
    let streams = Streams::new(env.redis.clone(), env.prefix(), 10_000);
    // The topic key holds a string, so the scrub's stream walk fails after the commit.
    let key = Topic::PredictionsRequests.key(env.prefix());
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    let request = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_merge_requests (id, action, profile_ids, actor, published_at) \
         VALUES ($1, 'erase', $2, 'dpo', now())",
    )
    .bind(request)
    .bind(vec![asha])
    .execute(&env.db)
    .await
    .unwrap();
    let failed = resolver.apply_request(request, &erase(asha)).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM api_merge_requests WHERE done_at IS NULL"
        )
        .await,
        1,
        "an erase not yet scrubbed is not done"
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM erasure WHERE scrubbed_at IS NULL"
        )
        .await,
        1
    );
    // Redis recovers; a prediction request for her was published meanwhile.
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    streams
        .publish(
            Topic::PredictionsRequests,
            &envelope(Uuid::now_v7(), serde_json::json!({"profile_id": asha})),
        )
        .await
        .unwrap();
    let again = resolver.apply_request(request, &erase(asha)).await.unwrap();
    assert_eq!(again.detail["stream_entries"], 1, "{}", again.detail);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM api_merge_requests WHERE done_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM erasure WHERE scrubbed_at IS NOT NULL"
        )
        .await,
        1
    );
    nothing_of_asha(&env, asha).await;
}
