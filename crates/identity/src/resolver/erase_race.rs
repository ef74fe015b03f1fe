//! An erase racing a merger step on the same person. The step's event carries one of the
//! person's identifiers (the email, by which it links to their profile) and one nobody
//! holds yet (a device). Whatever the interleaving, once both are done no identifier row
//! names a profile that does not exist, and none of the person's identifiers (nor the
//! device the step brought) is attached to anyone: the step either ran first and was
//! erased with the person, or came after and was dropped as suppressed.
//!
//! Each race runs without a foreign key `profile_identifier.profile_id → customer_profile`
//! (the schema has none since migration `20261215200000`, issue 19) and with it (added
//! back in the test database): the advisory-lock protocol (`locks.rs`) is what keeps the
//! invariant, not the key.
//!
//! The interleavings are forced with the resolver's test pause: a step paused after
//! reading its identifiers' owners while the erase starts (and waits on the email's lock),
//! and an erase paused holding its locks while the step starts (and waits on the same
//! lock). Which of the erase's locks it holds while it waits depends on the order of the
//! keys; both orders are run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{Identifier, IdentifierKind, MergeRequest, NormalizedEvent};
use futures::FutureExt as _;
use sqlx::PgPool;
use test_support::TestEnv;
use test_support::events::{event, id};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::locks::{identifier_lock, profile_lock};
use super::{ResolveReport, Resolver};
use crate::model::suppression_hash;

const PHONE: &str = "+919812345678";
const DEVICE: &str = "asha-tablet";

/// Event `n` carrying `ids`.
fn carrying(n: u32, ids: &[Identifier]) -> NormalizedEvent {
    event(n).identifiers(ids.iter().cloned()).build()
}

async fn resolver(env: &TestEnv) -> Resolver {
    Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap()
}

/// The person: an email whose lock sorts before (`email_first`) or after their profile's,
/// so that an erase waiting on the email holds the profile's lock or not yet. Returns the
/// email and the profile id their first event creates.
fn person(resolver: &Resolver, email_first: bool) -> (Identifier, Uuid) {
    let profile = resolver.engine().ids.profile_id(event(1).build().event_id);
    let email = (0..)
        .map(|i| id(IdentifierKind::Email, &format!("asha{i}@mail.in")))
        .find(|e| (identifier_lock(e) < profile_lock(profile)) == email_first)
        .unwrap();
    (email, profile)
}

/// Adds the foreign key the schema dropped, or leaves it out, as the race wants it.
async fn foreign_key(db: &PgPool, present: bool) {
    sqlx::query(
        "ALTER TABLE profile_identifier DROP CONSTRAINT IF EXISTS profile_identifier_profile_id_fkey",
    )
    .execute(db)
    .await
    .unwrap();
    if present {
        sqlx::query(
            "ALTER TABLE profile_identifier ADD CONSTRAINT profile_identifier_profile_id_fkey \
             FOREIGN KEY (profile_id) REFERENCES customer_profile (id)",
        )
        .execute(db)
        .await
        .unwrap();
    }
}

/// Waits until some session of this test's database waits on an advisory lock, or
/// `task` has finished (a broken protocol lets it through).
async fn until_waiting<T>(env_db: &PgPool, db_name: &str, task: &JoinHandle<T>) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        .bind(db_name)
        .fetch_one(env_db)
        .await
        .unwrap();
        if waiting > 0 || task.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the racing transaction neither waited on a lock nor finished");
}

fn erase(profile_id: Uuid) -> MergeRequest {
    MergeRequest::Erase {
        profile_id,
        actor: "dpo@brand.in".into(),
    }
}

/// What must hold after the erase and the step, whichever came first (`step_first`: the
/// step committed the device to the person before the erase, which then erased it too).
async fn assert_erased(env: &TestEnv, later: &Resolver, email: &Identifier, step_first: bool) {
    let stray = env.stray_identifier_rows().await;
    assert!(
        stray.is_empty(),
        "identifier rows name a missing profile: {stray:?}"
    );
    let device = id(IdentifierKind::DeviceId, DEVICE);
    let theirs = [
        email.clone(),
        id(IdentifierKind::Phone, PHONE),
        device.clone(),
    ];
    for table in ["profile_identifier", "identity_identifier"] {
        let left: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT t.kind, t.value FROM {table} t \
             JOIN unnest($1::text[], $2::text[]) AS u(kind, value) USING (kind, value)"
        ))
        .bind(theirs.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>())
        .bind(theirs.iter().map(|i| i.value.clone()).collect::<Vec<_>>())
        .fetch_all(&env.db)
        .await
        .unwrap();
        assert!(left.is_empty(), "{table} still holds {left:?}");
    }
    let (profiles, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM customer_profile), (SELECT count(*) FROM normalized_event)",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(
        (profiles, events),
        (0, 0),
        "no profile or event of the person is left"
    );
    // Suppressed: the email and phone, and the device if the step had attached it.
    let suppressed: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT identifier_sha256 FROM suppression ORDER BY 1")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let mut expected: Vec<Vec<u8>> = theirs[..if step_first { 3 } else { 2 }]
        .iter()
        .map(suppression_hash)
        .collect();
    expected.sort();
    assert_eq!(suppressed, expected, "what the person held is suppressed");
    // And it holds: a later event through the email is dropped, nothing re-created.
    let report = later
        .resolve(&[carrying(3, std::slice::from_ref(email))])
        .await
        .unwrap();
    assert_eq!((report.resolved, report.suppressed), (0, 1), "{report:?}");
    let profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_profile")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(profiles, 0, "the later event re-created the person");
}

/// The step, paused after reading that the email belongs to the person, lets the erase
/// start; the erase waits on the email's lock the step holds. The step then tries the
/// profile's lock: free (the erase waits before it), the step commits the device to the
/// profile and the erase, finding what the profile holds changed under its locks, starts
/// again and erases the device too; or held by the erase, the step rolls back, waits,
/// and finds the email suppressed.
async fn step_paused_then_erase(fk: bool, email_first: bool) {
    let env = TestEnv::new().await;
    foreign_key(&env.db, fk).await;
    let stepping = resolver(&env).await;
    let erasing = resolver(&env).await;
    let (email, profile) = person(&stepping, email_first);
    let first = carrying(1, &[email.clone(), id(IdentifierKind::Phone, PHONE)]);
    stepping
        .resolve(std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(
        storage::customer360::resolve(&env.db, profile)
            .await
            .unwrap(),
        Some(profile)
    );

    let erase_task: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::default();
    let slot = erase_task.clone();
    let (db, db_name) = (env.db.clone(), env.db_name.clone());
    *stepping.pause.lock().unwrap() = Some(
        async move {
            let task = tokio::spawn(async move {
                erasing
                    .apply_request(Uuid::now_v7(), &erase(profile))
                    .await
                    .unwrap();
            });
            until_waiting(&db, &db_name, &task).await;
            *slot.lock().unwrap() = Some(task);
        }
        .boxed(),
    );
    let second = carrying(2, &[email.clone(), id(IdentifierKind::DeviceId, DEVICE)]);
    let report = stepping
        .resolve(std::slice::from_ref(&second))
        .await
        .unwrap();
    let task = erase_task.lock().unwrap().take();
    task.expect("the step paused and started the erase")
        .await
        .unwrap();
    assert_erased(&env, &stepping, &email, email_first).await;
    assert_eq!(
        (report.resolved, report.suppressed),
        if email_first { (1, 0) } else { (0, 1) },
        "the step came {} the erase: {report:?}",
        if email_first { "before" } else { "after" }
    );
}

/// The erase, paused holding its locks, lets the step start; the step waits on the
/// email's lock, then finds the email suppressed and drops its event.
async fn erase_paused_then_step(fk: bool, email_first: bool) {
    let env = TestEnv::new().await;
    foreign_key(&env.db, fk).await;
    let erasing = resolver(&env).await;
    let stepping = resolver(&env).await;
    let (email, profile) = person(&erasing, email_first);
    let first = carrying(1, &[email.clone(), id(IdentifierKind::Phone, PHONE)]);
    erasing.resolve(std::slice::from_ref(&first)).await.unwrap();

    let step_task: Arc<Mutex<Option<JoinHandle<ResolveReport>>>> = Arc::default();
    let slot = step_task.clone();
    let (db, db_name) = (env.db.clone(), env.db_name.clone());
    let second = carrying(2, &[email.clone(), id(IdentifierKind::DeviceId, DEVICE)]);
    *erasing.pause.lock().unwrap() = Some(
        async move {
            let task = tokio::spawn(async move { stepping.resolve(&[second]).await.unwrap() });
            until_waiting(&db, &db_name, &task).await;
            *slot.lock().unwrap() = Some(task);
        }
        .boxed(),
    );
    erasing
        .apply_request(Uuid::now_v7(), &erase(profile))
        .await
        .unwrap();
    let task = step_task.lock().unwrap().take();
    let report = task
        .expect("the erase paused and started the step")
        .await
        .unwrap();
    assert_erased(&env, &erasing, &email, false).await;
    assert_eq!(
        (report.resolved, report.suppressed),
        (0, 1),
        "the step came after the erase: {report:?}"
    );
}

#[tokio::test]
async fn a_step_paused_before_its_profile_lock_and_an_erase_with_the_foreign_key() {
    step_paused_then_erase(true, true).await;
    step_paused_then_erase(true, false).await;
}

#[tokio::test]
async fn a_step_paused_before_its_profile_lock_and_an_erase_without_the_foreign_key() {
    step_paused_then_erase(false, true).await;
    step_paused_then_erase(false, false).await;
}

#[tokio::test]
async fn an_erase_paused_under_its_locks_and_a_step_with_the_foreign_key() {
    erase_paused_then_step(true, true).await;
    erase_paused_then_step(true, false).await;
}

#[tokio::test]
async fn an_erase_paused_under_its_locks_and_a_step_without_the_foreign_key() {
    erase_paused_then_step(false, true).await;
    erase_paused_then_step(false, false).await;
}
