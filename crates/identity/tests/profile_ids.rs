//! Time-ordered profile ids and the cut-over stored in the database (docs/identity.md,
//! "Profile ids"), on the real Postgres and Redis: profiles created before the cut-over
//! keep their hashed ids through late events, unmerges and rebuilds; profiles created
//! after it are named by the time ingest received their creating event; streaming, the
//! in-memory engine and a rebuild give the same ids.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::{IdentifierKind, MergeRequest, NormalizedEvent};
use identity::engine::Constraints;
use identity::memory::MemoryResolver;
use identity::model::{event_time_ms, hashed_profile_id, time_ordered_profile_id};
use identity::resolver::{Resolver, load_profile_ids};
use identity::{Observation, ProfileIds};
use test_support::TestEnv;
use test_support::events::{self, at};
use uuid::Uuid;

use IdentifierKind::*;

/// Event `n`, received by ingest at `received` (its id a UUIDv7 of that millisecond, as
/// ingest mints), occurring `minutes` after the fixtures' fixed time (unrelated to when
/// it arrived), carrying `ids`.
fn event(
    n: u8,
    received: DateTime<Utc>,
    minutes: i64,
    ids: &[(IdentifierKind, &str)],
) -> NormalizedEvent {
    let ms = u64::try_from(received.timestamp_millis()).unwrap();
    events::event(u32::from(n))
        .event_id(uuid::Builder::from_unix_timestamp_millis(ms, &[n; 10]).into_uuid())
        .occurred_at(at(minutes))
        .received_at(received)
        .ids(ids)
        .build()
}

async fn resolve(env: &TestEnv, resolver: &Resolver, events: &[NormalizedEvent]) {
    identity::seed::store_events(&env.db, events).await.unwrap();
    // One at a time, in the given order, as a merger meets them.
    for e in events {
        resolver.resolve(std::slice::from_ref(e)).await.unwrap();
    }
}

/// Every event's profile.
async fn assignment(env: &TestEnv) -> BTreeMap<Uuid, Uuid> {
    sqlx::query_as::<_, (Uuid, Uuid)>("SELECT event_id, profile_id FROM normalized_event")
        .fetch_all(&env.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Every profile row and where it points (`None`: live).
async fn profiles(env: &TestEnv) -> BTreeMap<Uuid, Option<Uuid>> {
    sqlx::query_as::<_, (Uuid, Option<Uuid>)>("SELECT id, merged_into FROM customer_profile")
        .fetch_all(&env.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn a_database_created_empty_names_every_profile_by_time() {
    let env = TestEnv::new().await;
    let ids = load_profile_ids(&env.db).await.unwrap();
    assert_eq!(ids, ProfileIds::TIME_ORDERED);
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    let e = event(1, Utc::now(), 0, &[(Email, "asha@mail.in")]);
    resolve(&env, &resolver, std::slice::from_ref(&e)).await;
    let p = assignment(&env).await[&e.event_id];
    assert_eq!(Some(p), time_ordered_profile_id(e.event_id));
    assert_eq!(p.get_version_num(), 7);
    assert_eq!(event_time_ms(p), event_time_ms(e.event_id));
}

#[tokio::test]
async fn profiles_from_before_the_cut_over_keep_their_ids_and_new_ones_are_time_ordered() {
    let env = TestEnv::new().await;
    // The database before the migration: every profile had the hashed id.
    sqlx::query("UPDATE profile_id_scheme SET time_ordered_from = 'infinity'")
        .execute(&env.db)
        .await
        .unwrap();
    let before = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    assert_eq!(before.engine().ids, ProfileIds::HASHED);
    let now = Utc::now();
    let day = Duration::days(1);
    let old = vec![
        event(
            1,
            now - day,
            0,
            &[(Email, "asha@mail.in"), (CookieId, "c1")],
        ),
        event(2, now - day, 10, &[(Phone, "+919812345678")]),
        // Minted by an ingest whose clock ran 5 s ahead of the database's.
        event(
            3,
            now + Duration::seconds(5),
            20,
            &[(Email, "meera@mail.in")],
        ),
        event(4, now - day, 30, &[(CookieId, "c2")]),
    ];
    resolve(&env, &before, &old).await;

    // The migration, run on a database that has profiles.
    sqlx::raw_sql("DROP TABLE profile_id_scheme")
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::raw_sql(include_str!(
        "../../../migrations/20261211300000_profile_id_scheme.sql"
    ))
    .execute(&env.db)
    .await
    .unwrap();
    let ids = load_profile_ids(&env.db).await.unwrap();
    let ahead = event_time_ms(old[2].event_id).unwrap() as i64;
    assert!(
        (ahead + 1..=ahead + 2).contains(&ids.cut_over_ms()),
        "never before the newest event id stored: {} against {ahead}",
        ids.cut_over_ms()
    );
    let resolver = Resolver::new(env.db.clone(), env.redis.clone(), &env.settings)
        .await
        .unwrap();
    assert_eq!(
        resolver.engine().ids,
        ids,
        "the resolver reads the cut-over"
    );

    let t = Utc.timestamp_millis_opt(ids.cut_over_ms()).unwrap() + Duration::seconds(1);
    let ms = Duration::milliseconds(1);
    let new = vec![
        // Asha again: joins her old profile.
        event(
            5,
            t,
            40,
            &[(Email, "asha@mail.in"), (Phone, "+919845012345")],
        ),
        // A new person.
        event(6, t + ms, 50, &[(Email, "kabir@mail.in")]),
        // Received after the cut-over, occurred before event 4 and shares its cookie: in
        // time order it creates that person's profile (a replay renames it).
        event(
            7,
            t + ms * 2,
            25,
            &[(CookieId, "c2"), (Email, "kiran@mail.in")],
        ),
    ];
    resolve(&env, &resolver, &new).await;

    let a = assignment(&env).await;
    let [e1, e2, e3, e4] = [0, 1, 2, 3].map(|i| old[i].event_id);
    let [e5, e6, e7] = [0, 1, 2].map(|i| new[i].event_id);
    for (e, creator) in [(e1, e1), (e5, e1), (e2, e2), (e3, e3)] {
        assert_eq!(
            a[&e],
            hashed_profile_id(creator),
            "an old profile keeps its id"
        );
    }
    let kabir = a[&e6];
    assert_eq!(Some(kabir), time_ordered_profile_id(e6));
    assert_eq!(event_time_ms(kabir), Some(t.timestamp_millis() as u64 + 1));
    let kiran = time_ordered_profile_id(e7).unwrap();
    assert_eq!((a[&e4], a[&e7]), (kiran, kiran));
    let stored = profiles(&env).await;
    assert_eq!(
        stored[&hashed_profile_id(e4)],
        Some(kiran),
        "the renamed profile points at the new one"
    );
    assert!(
        kabir < kiran,
        "new profiles sort by when their events arrived"
    );

    // Canonical order in memory, with the same scheme, names them alike.
    let mut all = old.clone();
    all.extend(new.iter().cloned());
    let expected = MemoryResolver::rebuild(
        resolver.engine().clone(),
        Constraints::default(),
        all.iter().map(Observation::of).collect(),
    );
    let in_memory: BTreeMap<Uuid, Uuid> = expected
        .assignment()
        .iter()
        .map(|(e, p)| (*e, *p))
        .collect();
    assert_eq!(a, in_memory);

    // An unmerge restores an old and a new profile under their ids.
    let ravi = hashed_profile_id(e2);
    let merged = resolver
        .apply_request(
            Uuid::now_v7(),
            &MergeRequest::ManualMerge {
                profile_ids: vec![ravi, kabir],
                actor: "analyst@brand.in".into(),
            },
        )
        .await
        .unwrap();
    let merge_id: Uuid = merged.detail["merge_ids"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(assignment(&env).await[&e6], ravi);
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
    assert_eq!(
        assignment(&env).await,
        a,
        "unmerge(merge(x)) = x, ids included"
    );

    // A rebuild restores every id: nothing moves, nothing retires.
    let stored = profiles(&env).await;
    let report = resolver.rebuild().await.unwrap();
    assert_eq!(
        (
            report.moved_events,
            report.retired_profiles,
            report.repointed_tombstones
        ),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!(assignment(&env).await, a);
    assert_eq!(profiles(&env).await, stored);
}
