//! The one writer of normalised events, orders and products against the real Postgres:
//! several reports of one order in one batch are applied in batch order and converge
//! on the newest; refunds count once, also when they arrive before their order; seeds
//! built from events alone write the same rows, idempotently.

use chrono::{DateTime, Duration, Utc};
use domain::{
    Channel, EventType, NormalizedEvent, Order, OrderItem, OrderState, OrderStatus, OrderWrite,
    Product, Refund, Source,
};
use rust_decimal::Decimal;
use storage::normalized::{EventWrite, write_batch};
use test_support::TestEnv;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn event(event_type: EventType, at: DateTime<Utc>, order: Option<Order>) -> NormalizedEvent {
    NormalizedEvent {
        event_id: Uuid::now_v7(),
        occurred_at: at,
        received_at: at,
        source: Source::Shopify,
        integration_id: None,
        channel: Channel::Web,
        event_type,
        name: None,
        identifiers: Vec::new(),
        traits: serde_json::Map::new(),
        properties: serde_json::Map::new(),
        order,
    }
}

fn item(sku: &str, price: i64) -> OrderItem {
    OrderItem {
        sku: sku.into(),
        name: format!("{sku} name"),
        category: None,
        qty: 1,
        price: Decimal::new(price, 0),
    }
}

fn report(version: DateTime<Utc>, status: OrderStatus, items: Vec<OrderItem>) -> EventWrite {
    let total: Decimal = items.iter().map(|i| i.price).sum();
    let ev = event(EventType::OrderPlaced, version, None);
    EventWrite {
        event_id: ev.event_id,
        source: Source::Shopify,
        occurred_at: version,
        products: Product::of_items(&items, Some("INR")),
        order: Some(OrderWrite {
            external_order_id: "1001".into(),
            state: Some(OrderState {
                status,
                channel: Channel::Web,
                store: None,
                placed_at: t0(),
                currency: "INR".into(),
                total,
                items,
                version,
            }),
            refunds: Vec::new(),
            deleted: false,
        }),
        event: Some(ev),
    }
}

fn refund(id: &str, amount: i64) -> EventWrite {
    let ev = event(
        EventType::RefundIssued,
        t0() + Duration::hours(5),
        Some(Order {
            order_id: "1001".into(),
            total: Decimal::new(amount, 0),
            currency: "INR".into(),
            status: OrderStatus::PartiallyRefunded,
            store: None,
            items: Vec::new(),
        }),
    );
    EventWrite {
        event_id: ev.event_id,
        source: Source::Shopify,
        occurred_at: ev.occurred_at,
        products: Vec::new(),
        order: Some(OrderWrite {
            external_order_id: "1001".into(),
            state: None,
            refunds: vec![Refund {
                refund_id: id.into(),
                amount: Decimal::new(amount, 0),
            }],
            deleted: false,
        }),
        event: Some(ev),
    }
}

async fn order_row(env: &TestEnv) -> (Decimal, Decimal, String, i64) {
    sqlx::query_as(
        "SELECT o.total, o.refunded_total, o.status, \
                (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) \
         FROM orders o WHERE o.source = 'shopify' AND o.external_order_id = '1001'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn reports_of_one_order_in_one_batch_converge_on_the_newest() {
    let env = TestEnv::new().await;
    let newest = report(
        t0() + Duration::hours(2),
        OrderStatus::Paid,
        vec![item("A", 300), item("B", 200)],
    );
    let older = report(t0(), OrderStatus::Placed, vec![item("A", 300)]);
    // The refund first (before its order exists), then the newest state, an older one,
    // the same refund again.
    let mut batch = vec![
        refund("r-1", 100),
        newest.clone(),
        older,
        refund("r-1", 100),
    ];
    let new = write_batch(&env.db, &mut batch).await.unwrap();
    assert_eq!(new, 4, "every event row is new");

    let (total, refunded, status, lines) = order_row(&env).await;
    assert_eq!(total, Decimal::new(500, 0), "the newest report wins");
    assert_eq!(refunded, Decimal::new(100, 0), "the refund counts once");
    assert_eq!(status, "partially_refunded");
    assert_eq!(lines, 2, "the newest report's lines");
    // A refund event carries the order's status as stored after it.
    let last = batch[3].event.as_ref().unwrap().order.as_ref().unwrap();
    assert_eq!(last.status, OrderStatus::PartiallyRefunded);

    // Again, in another batch: nothing changes.
    let mut again = vec![newest];
    assert_eq!(write_batch(&env.db, &mut again).await.unwrap(), 0);
    assert_eq!(order_row(&env).await, (total, refunded, status, lines));
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(products, 2);
}

#[tokio::test]
async fn seeds_of_events_alone_write_orders_like_the_normalizer() {
    let env = TestEnv::new().await;
    let order = |total: i64| Order {
        order_id: "1001".into(),
        total: Decimal::new(total, 0),
        currency: "INR".into(),
        status: OrderStatus::Paid,
        store: None,
        items: vec![item("A", total)],
    };
    let placed = event(EventType::OrderPlaced, t0(), Some(order(500)));
    let refunded = event(
        EventType::RefundIssued,
        t0() + Duration::hours(1),
        Some(order(200)),
    );
    let writes = || {
        vec![
            EventWrite::of_event(refunded.clone()),
            EventWrite::of_event(placed.clone()),
        ]
    };
    assert_eq!(write_batch(&env.db, &mut writes()).await.unwrap(), 2);
    let (total, refunded_total, status, lines) = order_row(&env).await;
    assert_eq!(
        (total, refunded_total, status.as_str(), lines),
        (
            Decimal::new(500, 0),
            Decimal::new(200, 0),
            "partially_refunded",
            1
        ),
        "a refund seeded before its order is counted when the order arrives"
    );
    assert_eq!(
        write_batch(&env.db, &mut writes()).await.unwrap(),
        0,
        "seeding twice changes nothing"
    );
    assert_eq!(order_row(&env).await.1, Decimal::new(200, 0));

    let cancelled = event(
        EventType::OrderCancelled,
        t0() + Duration::hours(2),
        Some(order(500)),
    );
    write_batch(&env.db, &mut [EventWrite::of_event(cancelled)])
        .await
        .unwrap();
    // A late copy of the placement does not undo a seeded cancellation.
    write_batch(
        &env.db,
        &mut [EventWrite::of_event(event(
            EventType::OrderPlaced,
            t0() + Duration::hours(3),
            Some(order(500)),
        ))],
    )
    .await
    .unwrap();
    assert_eq!(order_row(&env).await.2, "cancelled");
}
