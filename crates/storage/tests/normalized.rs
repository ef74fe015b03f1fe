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
use storage::normalized::{EventWrite, write_batch, write_batch_leaving_events};
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

/// The line count and the row's physical place (`ctid`): a new place means Postgres
/// wrote another version of the row.
async fn order_version(env: &TestEnv) -> (i64, String) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM order_items i WHERE i.order_id = o.id), o.ctid::text \
         FROM orders o WHERE o.source = 'shopify' AND o.external_order_id = '1001'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_new_order_is_written_once_and_newer_reports_replace_its_lines() {
    let env = TestEnv::new().await;
    let first = report(t0(), OrderStatus::Paid, vec![item("A", 300)]);
    write_batch(&env.db, &mut [first]).await.unwrap();
    assert_eq!(
        order_version(&env).await,
        (1, "(0,1)".to_owned()),
        "a new order without refunds is one row version: no second write for its refunded total"
    );

    // A newer report in a later batch replaces the lines.
    let second = report(
        t0() + Duration::hours(1),
        OrderStatus::Paid,
        vec![item("A", 300), item("B", 200)],
    );
    write_batch(&env.db, &mut [second]).await.unwrap();
    assert_eq!(order_version(&env).await.0, 2);

    // Within one batch: the order inserted by one report, replaced by the next.
    let other = TestEnv::new().await;
    let mut batch = vec![
        report(
            t0(),
            OrderStatus::Placed,
            vec![item("A", 300), item("B", 200)],
        ),
        report(
            t0() + Duration::hours(1),
            OrderStatus::Paid,
            vec![item("C", 100)],
        ),
    ];
    write_batch(&other.db, &mut batch).await.unwrap();
    let (total, _, status, lines) = order_row(&other).await;
    assert_eq!(
        (total, status.as_str(), lines),
        (Decimal::new(100, 0), "paid", 1),
        "the second report's single line replaced the first report's two"
    );
}

/// A product view: a catalogue-only write of `sku` named `name`, seen at `at`.
fn view(sku: &str, name: &str, at: DateTime<Utc>) -> EventWrite {
    EventWrite {
        event_id: Uuid::now_v7(),
        source: Source::Segment,
        occurred_at: at,
        event: None,
        order: None,
        products: vec![Product {
            sku: sku.into(),
            name: name.into(),
            category: Some("kurta".into()),
            price: Some(Decimal::new(1299, 0)),
            currency: Some("INR".into()),
        }],
    }
}

async fn product_row(env: &TestEnv) -> (String, DateTime<Utc>, DateTime<Utc>, String) {
    sqlx::query_as(
        "SELECT name, first_seen_at, last_seen_at, ctid::text FROM products WHERE sku = 'K-1'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn many_views_of_one_product_in_a_batch_are_one_write_and_repeats_write_nothing() {
    let env = TestEnv::new().await;
    // Forty views of one product, out of time order; the latest one names it "Kurta v2".
    let mut batch: Vec<EventWrite> = (0..40)
        .map(|i| view("K-1", "Kurta", t0() + Duration::minutes((i * 7) % 40)))
        .collect();
    batch.push(view("K-1", "Kurta v2", t0() + Duration::minutes(45)));
    batch.push(view("K-1", "Kurta", t0() - Duration::minutes(5)));
    write_batch(&env.db, &mut batch).await.unwrap();
    let (name, first, last, place) = product_row(&env).await;
    assert_eq!(name, "Kurta v2", "the latest sighting's name");
    assert_eq!(first, t0() - Duration::minutes(5), "the earliest sighting");
    assert_eq!(last, t0() + Duration::minutes(45));
    assert_eq!(place, "(0,1)", "one row version for the whole batch");

    // The same batch again, and older sightings saying what the row says: no new version.
    write_batch(&env.db, &mut batch).await.unwrap();
    write_batch(&env.db, &mut [view("K-1", "Kurta v2", t0())])
        .await
        .unwrap();
    assert_eq!(product_row(&env).await, (name, first, last, place));

    // An older sighting with another name does not rename it; a newer one does.
    write_batch(&env.db, &mut [view("K-1", "Old name", t0())])
        .await
        .unwrap();
    assert_eq!(product_row(&env).await.0, "Kurta v2");
    write_batch(
        &env.db,
        &mut [view("K-1", "Kurta v3", t0() + Duration::hours(1))],
    )
    .await
    .unwrap();
    let (name, first_now, last_now, _) = product_row(&env).await;
    assert_eq!(
        (name.as_str(), first_now, last_now),
        ("Kurta v3", first, t0() + Duration::hours(1))
    );
}

#[tokio::test]
async fn order_lines_are_checked_against_orders_by_key_after_the_table_grew() {
    let env = TestEnv::new().await;
    let mut conn = env.db.acquire().await.unwrap();
    let order = |n: usize, at: DateTime<Utc>| {
        let mut w = report(at, OrderStatus::Paid, vec![item("A", 100), item("B", 200)]);
        w.order.as_mut().unwrap().external_order_id = format!("o-{n}");
        w
    };
    // This connection's foreign-key checks of order_items first run while orders is tiny.
    for n in 0..8 {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        storage::normalized::write(&mut tx, &mut [order(n, t0())])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    sqlx::query(
        "INSERT INTO orders (id, source, external_order_id, event_id, status, channel, placed_at, \
                             updated_at, currency, total, refunded_total) \
         SELECT gen_random_uuid(), 'shopify', 'bulk-' || g, gen_random_uuid(), 'paid', 'web', \
                now(), now(), 'INR', 1, 0 FROM generate_series(1, 50000) g",
    )
    .execute(&env.db)
    .await
    .unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let mut batch: Vec<EventWrite> = (100..120).map(|n| order(n, t0())).collect();
    storage::normalized::write(&mut tx, &mut batch)
        .await
        .unwrap();
    let scans: i64 = sqlx::query_scalar(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'orders'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        scans, 0,
        "no line of the batch scanned the whole orders table"
    );
}

/// `w` about order `id` instead of "1001".
fn for_order(mut w: EventWrite, id: &str) -> EventWrite {
    if let Some(o) = w.order.as_mut() {
        o.external_order_id = id.into();
    }
    if let Some(o) = w.event.as_mut().and_then(|e| e.order.as_mut()) {
        o.order_id = id.into();
    }
    w
}

#[tokio::test]
async fn a_refund_written_while_its_orders_first_report_commits_is_counted() {
    let env = TestEnv::new().await;
    // The normalizer's first report of the order, in a transaction that has written
    // everything but not committed yet (another consumer's batch, in flight).
    let mut report_tx = env.db.begin().await.unwrap();
    let mut first = [report(
        t0() + Duration::hours(1),
        OrderStatus::Paid,
        vec![item("A", 100), item("B", 50)],
    )];
    storage::normalized::write(&mut report_tx, &mut first)
        .await
        .unwrap();
    // Meanwhile a refund of that order is written by another consumer.
    let db = env.db.clone();
    let refunding =
        tokio::spawn(
            async move { write_batch_leaving_events(&db, &mut [refund("r-1", 30)]).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    report_tx.commit().await.unwrap();
    refunding.await.unwrap().unwrap();
    // Whichever committed first, the refund counts.
    let (total, refunded, status, lines) = order_row(&env).await;
    assert_eq!(
        (total, refunded, status.as_str(), lines),
        (
            Decimal::new(150, 0),
            Decimal::new(30, 0),
            "partially_refunded",
            2
        )
    );
}

#[tokio::test]
async fn concurrent_batches_over_the_same_orders_neither_deadlock_nor_count_twice() {
    let env = TestEnv::new().await;
    let ids: Vec<String> = (0..20).map(|i| format!("o{i:02}")).collect();
    let reports = |hours: i64, items: Vec<OrderItem>, reverse: bool| {
        let mut batch: Vec<EventWrite> = ids
            .iter()
            .map(|id| {
                for_order(
                    report(
                        t0() + Duration::hours(hours),
                        OrderStatus::Paid,
                        items.clone(),
                    ),
                    id,
                )
            })
            .collect();
        if reverse {
            batch.reverse();
        }
        batch
    };
    let refunds = |reverse: bool| {
        let mut batch: Vec<EventWrite> = ids
            .iter()
            .map(|id| for_order(refund(&format!("r-{id}"), 30), id))
            .collect();
        if reverse {
            batch.reverse();
        }
        batch
    };
    // Four batches in flight at once, sharing every order and product, in opposite
    // orders: two reports of each order, and each refund delivered twice.
    let mut batches = [
        reports(1, vec![item("A", 100)], false),
        reports(2, vec![item("B", 100), item("A", 50)], true),
        refunds(true),
        refunds(false),
    ];
    let [a, b, c, d] = &mut batches;
    let written = tokio::join!(
        write_batch_leaving_events(&env.db, a),
        write_batch_leaving_events(&env.db, b),
        write_batch_leaving_events(&env.db, c),
        write_batch_leaving_events(&env.db, d),
    );
    for result in [written.0, written.1, written.2, written.3] {
        result.unwrap();
    }
    let rows: Vec<(Decimal, Decimal, String, i64)> = sqlx::query_as(
        "SELECT o.total, o.refunded_total, o.status, \
                (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) \
         FROM orders o ORDER BY o.external_order_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), ids.len());
    for row in rows {
        assert_eq!(
            row,
            (
                Decimal::new(150, 0),
                Decimal::new(30, 0),
                "partially_refunded".to_owned(),
                2
            )
        );
    }
}

#[tokio::test]
async fn reports_of_an_order_with_refunds_keep_them_counted_across_batches() {
    let env = TestEnv::new().await;
    // The refund first, in a batch of its own (its order does not exist yet), then the
    // order's first report, then a newer report saying `paid`, each a batch of its own:
    // a report without a refund in its batch must still count the refunds known.
    write_batch_leaving_events(&env.db, &mut [refund("r-1", 30)])
        .await
        .unwrap();
    let expected = (
        Decimal::new(150, 0),
        Decimal::new(30, 0),
        "partially_refunded".to_owned(),
        2,
    );
    for hours in [1, 2] {
        let mut batch = [report(
            t0() + Duration::hours(hours),
            OrderStatus::Paid,
            vec![item("A", 100), item("B", 50)],
        )];
        write_batch_leaving_events(&env.db, &mut batch)
            .await
            .unwrap();
        assert_eq!(
            order_row(&env).await,
            expected,
            "after the report of hour {hours}"
        );
    }
    // Orders without refunds are left as their report wrote them.
    let mut other = [for_order(
        report(t0(), OrderStatus::Paid, vec![item("C", 70)]),
        "1002",
    )];
    write_batch_leaving_events(&env.db, &mut other)
        .await
        .unwrap();
    let (refunded, status): (Decimal, String) = sqlx::query_as(
        "SELECT refunded_total, status FROM orders WHERE external_order_id = '1002'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!((refunded, status.as_str()), (Decimal::ZERO, "paid"));
}
