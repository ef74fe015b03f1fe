//! The two evaluations of a rule agree: the compiled SQL (previews, full recomputes)
//! and the in-memory evaluator (live updates), on generated profiles written to a real
//! Postgres — both over the generated facts and over the facts read back by
//! `facts::load`. Values come from small grids so that ties (a threshold equal to a
//! fact, an event exactly at a window's edge) happen often.

use std::collections::{BTreeMap, BTreeSet};

use audiences::facts::{self, EventScope};
use audiences::sql;
use chrono::{DateTime, Duration, Utc};
use domain::api::profiles::ChurnBand;
use domain::audience::{
    Abandonment, AffinityCondition, Behaviour, CmpOp, Compare, ConsentChannel, EventFact,
    EventMatch, ProfileFacts, PropertyCondition, PropertyOp, Rule,
};
use domain::{Channel, EventType, IdentifierKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use test_support::TestEnv;
use uuid::Uuid;

const AUDIENCE_A: Uuid = Uuid::from_u128(0xA);
const AUDIENCE_B: Uuid = Uuid::from_u128(0xB);

fn as_of() -> DateTime<Utc> {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

fn pick<T: Clone + std::fmt::Debug + 'static>(values: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(values)
}

fn event_type() -> impl Strategy<Value = EventType> {
    pick(vec![
        EventType::CheckoutStarted,
        EventType::OrderPlaced,
        EventType::ProductViewed,
    ])
}

fn name() -> impl Strategy<Value = Option<String>> {
    pick(vec![None, Some("A".to_owned()), Some("B".to_owned())])
}

fn property_value() -> impl Strategy<Value = (String, Value)> {
    pick(vec![
        ("category".to_owned(), json!("shoes")),
        ("category".to_owned(), json!("tees")),
        ("price".to_owned(), json!(50)),
        ("price".to_owned(), json!(100)),
        ("price".to_owned(), json!(99.5)),
        ("price".to_owned(), json!("100")),
        ("flag".to_owned(), json!(true)),
        ("flag".to_owned(), json!(false)),
        ("flag".to_owned(), Value::Null),
    ])
}

/// Hours before `as_of`: window edges (1 h, 24 h, 7 d, 30 d) are on the grid.
fn hours_ago() -> impl Strategy<Value = i64> {
    pick(vec![
        0,
        1,
        2,
        3,
        24,
        25,
        48,
        24 * 7,
        24 * 7 + 1,
        24 * 30,
        24 * 31,
        -1,
    ])
}

fn event() -> impl Strategy<Value = EventFact> {
    (
        event_type(),
        name(),
        hours_ago(),
        proptest::collection::vec(property_value(), 0..3),
    )
        .prop_map(|(t, name, h, props)| EventFact {
            event_type: t,
            name,
            occurred_at: as_of() - Duration::hours(h),
            properties: props.into_iter().collect(),
        })
}

fn money() -> impl Strategy<Value = Decimal> {
    pick(vec![0i64, 5000, 9999, 10000, 30000, 100001]).prop_map(|c| Decimal::new(c, 2))
}

fn score() -> impl Strategy<Value = f64> {
    pick(vec![0.0, 0.25, 0.3, 0.5, 0.7, 1.0])
}

fn profile() -> impl Strategy<Value = ProfileFacts> {
    let kinds = proptest::collection::btree_set(
        pick(vec![
            IdentifierKind::Email,
            IdentifierKind::Phone,
            IdentifierKind::LoyaltyId,
        ]),
        0..3,
    );
    let traits = proptest::collection::vec(
        pick(vec![
            ("city", json!("Pune")),
            ("city", Value::Null),
            ("email_marketing", json!("subscribed")),
            ("email_marketing", json!("not_subscribed")),
            ("whatsapp_marketing", json!("subscribed")),
            ("whatsapp_marketing", json!(true)),
        ]),
        0..3,
    )
    .prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<String, Value>>()
    });
    let orders = (
        0i64..4,
        money(),
        proptest::option::of(
            pick(vec![0i64, 29, 30, 31, 90]).prop_map(|d| as_of() - Duration::days(d)),
        ),
        proptest::collection::btree_set(pick(vec!["shoes".to_owned(), "tees".to_owned()]), 0..3),
    );
    let channels = proptest::collection::btree_set(
        pick(vec![
            "web".to_owned(),
            "whatsapp".to_owned(),
            "pos".to_owned(),
        ]),
        0..3,
    );
    let affinity = proptest::collection::btree_map(
        pick(vec!["shoes".to_owned(), "tees".to_owned()]),
        pick(vec![0.0, 0.25, 0.5, 1.0]),
        0..3,
    );
    let predictions = (
        proptest::option::of((score(), pick(vec!["low", "medium", "high"]))),
        proptest::option::of(pick(vec![0.0, 500.0, 1000.0, 2500.5])),
        proptest::option::of(pick(vec!["vip".to_owned(), "dormant".to_owned()])),
    );
    let audiences = proptest::collection::btree_set(pick(vec![AUDIENCE_A, AUDIENCE_B]), 0..3);
    (
        kinds,
        traits,
        orders,
        channels,
        affinity,
        predictions,
        proptest::collection::vec(event(), 0..6),
        audiences,
    )
        .prop_map(
            |(
                kinds,
                traits,
                (count, spent, last, cats),
                channels,
                affinity,
                (churn, ltv, seg),
                events,
                audiences,
            )| {
                ProfileFacts {
                    identifier_kinds: kinds,
                    traits,
                    orders_count: count,
                    total_spent: spent,
                    last_order_at: last,
                    categories_bought: cats,
                    channels,
                    category_affinity: affinity,
                    segment: seg,
                    churn_score: churn.map(|(s, _)| s),
                    churn_label: churn.map(|(_, l)| l.to_owned()),
                    predicted_ltv: ltv,
                    events,
                    audiences,
                }
            },
        )
}

fn op() -> impl Strategy<Value = CmpOp> {
    pick(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Gt,
        CmpOp::Gte,
        CmpOp::Lt,
        CmpOp::Lte,
    ])
}

fn event_match() -> impl Strategy<Value = EventMatch> {
    let condition = prop_oneof![
        (
            pick(vec!["category", "flag", "price"]),
            pick(vec![PropertyOp::Eq, PropertyOp::Ne]),
            pick(vec![
                json!("shoes"),
                json!("100"),
                json!(true),
                json!(false)
            ])
        )
            .prop_map(|(k, op, v)| PropertyCondition {
                key: k.into(),
                op,
                value: Some(v)
            }),
        pick(vec!["category", "flag", "price"]).prop_map(|k| PropertyCondition {
            key: k.into(),
            op: PropertyOp::Exists,
            value: None
        }),
        (
            pick(vec!["price", "category"]),
            pick(vec![
                PropertyOp::Gt,
                PropertyOp::Gte,
                PropertyOp::Lt,
                PropertyOp::Lte
            ]),
            pick(vec![json!(50), json!(99.5), json!(100)])
        )
            .prop_map(|(k, op, v)| PropertyCondition {
                key: k.into(),
                op,
                value: Some(v)
            }),
    ];
    (
        event_type(),
        name(),
        proptest::collection::vec(condition, 0..2),
    )
        .prop_map(|(t, name, conditions)| EventMatch {
            event_type: t,
            name,
            conditions,
        })
}

fn leaf() -> impl Strategy<Value = Rule> {
    prop_oneof![
        pick(vec![IdentifierKind::Email, IdentifierKind::Phone]).prop_map(Rule::HasIdentifier),
        Just(Rule::WhatsappCapable),
        pick(vec!["city".to_owned(), "email_marketing".to_owned()]).prop_map(Rule::HasTrait),
        pick(vec![ConsentChannel::Email, ConsentChannel::Whatsapp]).prop_map(Rule::Consent),
        (op(), 0i64..4).prop_map(|(op, value)| Rule::OrdersCount(Compare { op, value })),
        (op(), money()).prop_map(|(op, value)| Rule::TotalSpent(Compare { op, value })),
        (op(), money()).prop_map(|(op, value)| Rule::AverageOrder(Compare { op, value })),
        (
            pick(vec![CmpOp::Gt, CmpOp::Gte, CmpOp::Lt, CmpOp::Lte]),
            pick(vec![0u32, 30, 31])
        )
            .prop_map(|(op, value)| Rule::LastOrderDaysAgo(Compare { op, value })),
        pick(vec![
            "shoes".to_owned(),
            "tees".to_owned(),
            "hats".to_owned()
        ])
        .prop_map(Rule::BoughtCategory),
        pick(vec![Channel::Web, Channel::Whatsapp, Channel::Store]).prop_map(Rule::UsedChannel),
        (
            pick(vec!["shoes".to_owned(), "hats".to_owned()]),
            pick(vec![0.0, 0.25, 0.6])
        )
            .prop_map(
                |(category, at_least)| Rule::CategoryAffinity(AffinityCondition {
                    category,
                    at_least
                })
            ),
        pick(vec!["vip".to_owned(), "dormant".to_owned()]).prop_map(Rule::Segment),
        (op(), score()).prop_map(|(op, value)| Rule::ChurnScore(Compare { op, value })),
        pick(ChurnBand::ALL.to_vec()).prop_map(Rule::ChurnLabel),
        (op(), pick(vec![0.0, 1000.0, 2500.5]))
            .prop_map(|(op, value)| Rule::PredictedLtv(Compare { op, value })),
        (event_match(), 1u32..3, pick(vec![1u32, 7, 30])).prop_map(
            |(event, at_least, within_days)| {
                Rule::Did(Behaviour {
                    event,
                    at_least,
                    within_days,
                })
            }
        ),
        (
            event_match(),
            pick(vec![1u32, 7, 30]),
            event_match(),
            pick(vec![1u32, 2, 24])
        )
            .prop_map(
                |(event, within_days, without, within_hours)| Rule::DidWithout(Abandonment {
                    event,
                    within_days,
                    without,
                    within_hours,
                })
            ),
        pick(vec![AUDIENCE_A, AUDIENCE_B]).prop_map(Rule::InAudience),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Rule::All),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Rule::Any),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

async fn setup(db: &PgPool) {
    for (id, name) in [(AUDIENCE_A, "A"), (AUDIENCE_B, "B")] {
        sqlx::query(
            "INSERT INTO audiences (id, name, rule) VALUES ($1, $2, '\"whatsapp_capable\"')",
        )
        .bind(id)
        .bind(name)
        .execute(db)
        .await
        .unwrap();
    }
    for task in ["churn", "ltv", "segment"] {
        sqlx::query(
            "INSERT INTO model_version (id, task, algorithm, feature_set_version, artefact) \
             VALUES ($1, $2, 'test', 1, '')",
        )
        .bind(Uuid::from_u128(task.len() as u128 + 100))
        .bind(task)
        .execute(db)
        .await
        .unwrap();
    }
}

/// Writes the profiles (and one merged-away tombstone that would match anything) as
/// the fleet's tables hold them.
async fn write(db: &PgPool, profiles: &[(Uuid, ProfileFacts)]) {
    sqlx::query(
        "TRUNCATE customer_profile, orders, order_items, normalized_event, predictions, \
         audience_membership CASCADE",
    )
    .execute(db)
    .await
    .unwrap();
    for (id, f) in profiles {
        let identifiers: Vec<Value> = f
            .identifier_kinds
            .iter()
            .map(|k| json!({"kind": k.as_str(), "value": format!("{k}-{id}")}))
            .collect();
        sqlx::query(
            "INSERT INTO customer_profile (id, identifiers, traits, orders_count, total_spent, \
             last_order_at, channels, category_affinity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(Json(&identifiers))
        .bind(Json(&f.traits))
        .bind(f.orders_count as i32)
        .bind(f.total_spent)
        .bind(f.last_order_at)
        .bind(f.channels.iter().cloned().collect::<Vec<_>>())
        .bind(Json(&f.category_affinity))
        .execute(db)
        .await
        .unwrap();
        for (n, category) in f.categories_bought.iter().enumerate() {
            let order = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO orders (id, source, external_order_id, profile_id, event_id, status, \
                 channel, placed_at, currency, total) \
                 VALUES ($1, 'shopify', $2, $3, $1, 'paid', 'web', now(), 'INR', 1)",
            )
            .bind(order)
            .bind(format!("{id}-{n}"))
            .bind(id)
            .execute(db)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, name, category, qty, price) \
                 VALUES ($1, 1, 'SKU', 'Thing', $2, 1, 1)",
            )
            .bind(order)
            .bind(category)
            .execute(db)
            .await
            .unwrap();
        }
        let predictions = [
            ("churn", f.churn_score, f.churn_label.clone()),
            ("ltv", f.predicted_ltv, None),
            ("segment", None, f.segment.clone()),
        ];
        for (task, score, label) in predictions {
            if score.is_none() && label.is_none() {
                continue;
            }
            sqlx::query(
                "INSERT INTO predictions (profile_id, task, model_version_id, score, label) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(task)
            .bind(Uuid::from_u128(task.len() as u128 + 100))
            .bind(score)
            .bind(label)
            .execute(db)
            .await
            .unwrap();
        }
        for e in &f.events {
            sqlx::query(
                "INSERT INTO normalized_event (event_id, occurred_at, received_at, source, channel, \
                 type, name, properties, profile_id) VALUES ($1, $2, $2, 'segment', 'web', $3, $4, $5, $6)",
            )
            .bind(Uuid::new_v4())
            .bind(e.occurred_at)
            .bind(e.event_type.as_str())
            .bind(&e.name)
            .bind(Json(&e.properties))
            .bind(id)
            .execute(db)
            .await
            .unwrap();
        }
        for a in &f.audiences {
            sqlx::query(
                "INSERT INTO audience_membership (audience_id, profile_id, current, entered_at) \
                 VALUES ($1, $2, TRUE, now())",
            )
            .bind(a)
            .bind(id)
            .execute(db)
            .await
            .unwrap();
        }
    }
    // A merged-away tombstone holding everything: never a member.
    if let Some((survivor, _)) = profiles.first() {
        sqlx::query(
            "INSERT INTO customer_profile (id, merged_into, identifiers, traits, orders_count, \
             total_spent, channels) VALUES ($1, $2, '[{\"kind\":\"email\",\"value\":\"x\"}]', \
             '{\"city\":\"Pune\"}', 3, 100, '{web,whatsapp,pos}')",
        )
        .bind(Uuid::from_u128(u128::MAX))
        .bind(survivor)
        .execute(db)
        .await
        .unwrap();
    }
}

#[test]
fn compiled_sql_and_the_in_memory_evaluator_agree() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(TestEnv::new());
    rt.block_on(setup(&env.db));
    let cases = std::env::var("AUDIENCE_AGREEMENT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(profile(), 1..7),
        proptest::collection::vec(rule(), 1..6),
    );
    let outcome = runner.run(&strategy, |(facts, rules)| {
        rt.block_on(check(&env.db, facts, rules))
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

async fn check(
    db: &PgPool,
    facts: Vec<ProfileFacts>,
    rules: Vec<Rule>,
) -> Result<(), TestCaseError> {
    let profiles: Vec<(Uuid, ProfileFacts)> = facts
        .into_iter()
        .enumerate()
        .map(|(n, f)| (Uuid::from_u128(n as u128 + 1), f))
        .collect();
    write(db, &profiles).await;
    let scope = EventScope {
        types: rules.iter().flat_map(Rule::event_types).collect(),
        lookback_days: rules.iter().map(Rule::lookback_days).max().unwrap_or(0),
    };
    let mut loaded = BTreeMap::new();
    let mut conn = db.acquire().await.unwrap();
    for (id, _) in &profiles {
        let f = facts::load(&mut conn, *id, &scope, as_of()).await.unwrap();
        loaded.insert(*id, f.expect("a live profile loads"));
    }
    let tombstone = facts::load(&mut conn, Uuid::from_u128(u128::MAX), &scope, as_of())
        .await
        .unwrap();
    prop_assert!(tombstone.is_none(), "a merged-away profile has no facts");
    for rule in &rules {
        prop_assert!(
            rule.validate().is_ok(),
            "generated rules are valid: {rule:?}"
        );
        let by_sql: BTreeSet<Uuid> = sql::members(rule, as_of())
            .build_query_scalar()
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let in_memory: BTreeSet<Uuid> = profiles
            .iter()
            .filter(|(_, f)| rule.evaluate(f, as_of()))
            .map(|(id, _)| *id)
            .collect();
        let from_loaded: BTreeSet<Uuid> = loaded
            .iter()
            .filter(|(_, f)| rule.evaluate(f, as_of()))
            .map(|(id, _)| *id)
            .collect();
        prop_assert_eq!(&by_sql, &in_memory, "SQL vs generated facts for {:?}", rule);
        prop_assert_eq!(
            &from_loaded,
            &in_memory,
            "loaded vs generated facts for {:?}",
            rule
        );
    }
    Ok(())
}
