//! A step writes a profile from what it read while holding the profile's lock, never from
//! a read taken before: otherwise another replica's commit to that profile, made between
//! the read and the lock through an identifier the step does not hold, would be
//! overwritten (a lost update, `write` stores the whole profile row).

use domain::{Channel, IdentifierKind, NormalizedEvent};
use futures::FutureExt as _;
use test_support::TestEnv;
use test_support::events::event;

use super::Resolver;

/// The person's first event (email and phone), one through the email only (a first
/// name, at the till), one through the phone only (a last name).
fn events() -> [NormalizedEvent; 3] {
    let email = (IdentifierKind::Email, "asha@mail.in");
    let phone = (IdentifierKind::Phone, "+919812345678");
    [
        event(1).ids(&[email, phone]).build(),
        event(2)
            .ids(&[email])
            .channel(Channel::Pos)
            .with_trait("first_name", "Asha")
            .build(),
        event(3)
            .ids(&[phone])
            .with_trait("last_name", "Rao")
            .build(),
    ]
}

/// Every live profile as the resolver stores it (what a step reads and writes back).
async fn profiles(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ', id, first_event_id, last_event_id, name_keys, traits, state, \
                first_seen_at, last_seen_at, channels) \
         FROM customer_profile WHERE merged_into IS NULL ORDER BY id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap()
}

async fn resolver(env: &TestEnv) -> Resolver {
    Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_commit_to_the_profile_between_a_steps_owner_read_and_its_profile_lock_is_kept() {
    let [first, by_email, by_phone] = events();

    // Serially: the three events one after the other.
    let serial = TestEnv::new().await;
    let one = resolver(&serial).await;
    for e in [&first, &by_email, &by_phone] {
        one.resolve(std::slice::from_ref(e)).await.unwrap();
    }
    let expected = profiles(&serial).await;
    assert_eq!(expected.len(), 1, "{expected:?}");
    assert!(
        expected[0].contains("first_name") && expected[0].contains("last_name"),
        "{expected:?}"
    );

    // Racing: while the phone's step has read the profile's owner (holding the phone's
    // lock, not yet the profile's), a second replica resolves the email's event, which
    // changes the same profile, and commits.
    let env = TestEnv::new().await;
    let racing = resolver(&env).await;
    let other = resolver(&env).await;
    racing.resolve(std::slice::from_ref(&first)).await.unwrap();
    let email_event = by_email.clone();
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = committed.clone();
    *racing.pause.lock().unwrap() = Some(
        async move {
            let report = other.resolve(&[email_event]).await.unwrap();
            assert_eq!(report.resolved, 1);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        .boxed(),
    );
    let report = racing
        .resolve(std::slice::from_ref(&by_phone))
        .await
        .unwrap();
    assert_eq!(report.resolved, 1);
    assert!(
        committed.load(std::sync::atomic::Ordering::SeqCst),
        "the other replica's step ran inside the racing step"
    );

    assert_eq!(
        profiles(&env).await,
        expected,
        "the profile holds both steps' changes, as serially"
    );
}
