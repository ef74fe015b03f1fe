//! Rows other services would have written, for tests of their readers: seeded through
//! the same writers the fleet uses (`storage::normalized`), attributed to a profile as
//! the identity merger would.

use chrono::{DateTime, Utc};
use domain::{Channel, OrderItem, OrderState, OrderStatus, OrderWrite, Source};
use rust_decimal::Decimal;
use sqlx::PgPool;
use storage::normalized::{self, EventWrite};
use uuid::Uuid;

/// A paid Shopify web order `external_order_id` of `profile` with one line (`TEE-1`,
/// "Tee", `category`, the whole `total`), without its event; returns the order's id.
pub async fn attributed_order(
    db: &PgPool,
    profile: Uuid,
    external_order_id: &str,
    total: Decimal,
    category: &str,
    placed_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let mut writes = [EventWrite {
        event_id: Uuid::now_v7(),
        source: Source::Shopify,
        occurred_at: placed_at,
        event: None,
        order: Some(OrderWrite {
            external_order_id: external_order_id.to_owned(),
            state: Some(OrderState {
                status: OrderStatus::Paid,
                channel: Channel::Web,
                store: None,
                placed_at,
                currency: "INR".into(),
                total,
                items: vec![OrderItem {
                    sku: "TEE-1".into(),
                    name: "Tee".into(),
                    category: Some(category.into()),
                    qty: 1,
                    price: total,
                }],
                version: placed_at,
            }),
            refunds: Vec::new(),
            deleted: false,
        }),
        products: Vec::new(),
    }];
    normalized::write_batch(db, &mut writes).await?;
    normalized::attribute_as_resolved(db, &writes, &[profile]).await?;
    sqlx::query_scalar("SELECT id FROM orders WHERE source = 'shopify' AND external_order_id = $1")
        .bind(external_order_id)
        .fetch_one(db)
        .await
}

/// `n` live profiles as the identity merger writes them, each with an e-mail
/// `{tag}{i}@example.com` (seen `n - i` seconds ago), a name `Asha{i} Rao{i}` and `i % 7`
/// orders of 499 INR; their ids in order.
pub async fn profiles_with_email(db: &PgPool, tag: &str, n: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let emails: Vec<String> = (0..n).map(|i| format!("{tag}{i}@example.com")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("Asha{i} Rao{i}")).collect();
    let orders: Vec<i32> = (0..n).map(|i| (i % 7) as i32).collect();
    sqlx::query(
        "INSERT INTO customer_profile (id, display_name, orders_count, total_spent, currency) \
         SELECT id, name, o, o * 499, 'INR' FROM unnest($1::uuid[], $2::text[], $3::int[]) AS u(id, name, o)",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&orders)
    .execute(db)
    .await
    .expect("seeding profiles");
    sqlx::query(
        "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
         SELECT 'email', e, id, 'shopify', now() - make_interval(secs => n), \
                now() - make_interval(secs => n) \
         FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(id, e, n)",
    )
    .bind(&ids)
    .bind(&emails)
    .execute(db)
    .await
    .expect("seeding e-mails");
    ids
}
