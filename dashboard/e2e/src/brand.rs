//! The test brand, "Loom & Co", put in through the front door.
//!
//! Users and integrations are created through the API as an admin would; customer
//! events arrive as the platforms send them: Shopify webhooks signed with the
//! integration's secret, Twilio WhatsApp messages signed with the auth token over the
//! public URL, POS bills with the bearer token, Segment-compatible tracking calls with
//! the write key (signatures from `ingestion::signing`, the same helpers ingest
//! verifies with). What the dashboard then shows is whatever the pipeline made of them.
//!
//! The people:
//! - **Asha Rao**, the Customer 360 case: she orders on the web shop (e-mail only),
//!   writes on WhatsApp (phone only) — two profiles — then pays in store with both on
//!   the bill, which merges them.
//! - **Vikram Nair**, the review case: four profiles (web e-mail, WhatsApp phone, a
//!   store loyalty card, an app user id) that one identify call links at once — more
//!   than the merger joins on its own, so it becomes a review item.
//! - a handful of other shoppers, so KPIs and charts have something to show.

use anyhow::bail;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use domain::Source;
use domain::api::{
    CreateIntegrationRequest, CreateUserRequest, IntegrationSecret, ModelStatus, ModelVersionView,
    Page, ProfileRecommendations, ProfileSummary, ProfileView, Role, UserView,
};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fleet::{ADMIN_EMAIL, Fleet, PASSWORD, Session};

/// Sign-in names of the brand's dashboard users (all with [`PASSWORD`]).
#[derive(Debug, Clone, Serialize)]
pub struct Users {
    /// The bootstrap admin.
    pub admin: String,
    /// An analyst.
    pub analyst: String,
    /// A viewer.
    pub viewer: String,
    /// Their password.
    pub password: String,
}

/// Creates an analyst and a viewer through `POST /users`.
pub async fn users(admin: &Session) -> anyhow::Result<Users> {
    let mut made = Vec::new();
    for (email, role) in [
        ("analyst@loomandco.example", Role::Analyst),
        ("viewer@loomandco.example", Role::Viewer),
    ] {
        let user: UserView = admin
            .post(
                "/users",
                &CreateUserRequest {
                    email: email.to_owned(),
                    password: PASSWORD.to_owned(),
                    role,
                },
            )
            .await?;
        made.push(user.email);
    }
    Ok(Users {
        admin: ADMIN_EMAIL.to_owned(),
        analyst: made[0].clone(),
        viewer: made[1].clone(),
        password: PASSWORD.to_owned(),
    })
}

/// One integration and its secret.
#[derive(Debug, Clone, Serialize)]
pub struct Integration {
    /// Integration id (in its webhook path).
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Signing secret, auth token, write key or bearer token.
    #[serde(skip)]
    pub secret: String,
}

/// The brand's sources.
#[derive(Debug, Clone, Serialize)]
pub struct Integrations {
    /// The web shop.
    pub shopify: Integration,
    /// The WhatsApp number.
    pub twilio: Integration,
    /// The stores' tills.
    pub pos: Integration,
    /// The mobile app's tracking SDK.
    pub segment: Integration,
}

/// Creates the brand's integrations through `POST /integrations`.
pub async fn integrations(admin: &Session) -> anyhow::Result<Integrations> {
    let create = |kind: Source, name: &str, secret: Option<&str>| {
        let body = CreateIntegrationRequest {
            kind,
            name: name.to_owned(),
            secret: secret.map(str::to_owned),
        };
        async move {
            let made: IntegrationSecret = admin.post("/integrations", &body).await?;
            anyhow::Ok(Integration {
                id: made.integration.id,
                name: made.integration.name,
                secret: made.secret,
            })
        }
    };
    Ok(Integrations {
        // Shopify and Twilio bring their own secrets (the shop's signing secret, the
        // account's auth token); the others are generated.
        shopify: create(
            Source::Shopify,
            "Loom & Co web shop",
            Some("shpss_loom_and_co_signing_secret"),
        )
        .await?,
        twilio: create(
            Source::Twilio,
            "WhatsApp +1 415 523 8886",
            Some("twilio_auth_token_loom_and_co"),
        )
        .await?,
        pos: create(Source::Pos, "Store tills", None).await?,
        segment: create(Source::Segment, "Loom & Co app", None).await?,
    })
}

/// Sends events to ingest the way each platform does.
pub struct Sender<'a> {
    fleet: &'a Fleet,
    sources: &'a Integrations,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl<'a> Sender<'a> {
    /// A sender for `fleet`'s ingest with `sources`' secrets.
    pub fn new(fleet: &'a Fleet, sources: &'a Integrations) -> Self {
        Self { fleet, sources }
    }

    async fn expect_ok(what: &str, resp: reqwest::Response) -> anyhow::Result<()> {
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "{what} answered {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// A Shopify webhook (`topic` such as `orders/create`), signed.
    pub async fn shopify(&self, topic: &str, webhook_id: &str, body: &Value) -> anyhow::Result<()> {
        let s = &self.sources.shopify;
        let body = serde_json::to_vec(body)?;
        let resp = self
            .fleet
            .http
            .post(format!("{}/webhooks/shopify/{}", self.fleet.ingest, s.id))
            .header("content-type", "application/json")
            .header("x-shopify-topic", topic)
            .header("x-shopify-webhook-id", webhook_id)
            .header("x-shopify-shop-domain", "loom-and-co.myshopify.com")
            .header(
                "x-shopify-hmac-sha256",
                ingestion::signing::sign_shopify(&s.secret, &body),
            )
            .body(body)
            .send()
            .await?;
        Self::expect_ok(&format!("Shopify {topic}"), resp).await
    }

    /// An inbound WhatsApp message through Twilio, signed over the public URL.
    pub async fn whatsapp(
        &self,
        sid: &str,
        phone_e164: &str,
        profile_name: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let s = &self.sources.twilio;
        let url = format!("{}/webhooks/twilio/{}", self.fleet.ingest, s.id);
        let params: Vec<(String, String)> = [
            ("MessageSid", sid),
            ("SmsMessageSid", sid),
            ("AccountSid", "ACloomandco00000000000000000000000"),
            ("From", &format!("whatsapp:{phone_e164}")),
            ("To", "whatsapp:+14155238886"),
            ("WaId", phone_e164.trim_start_matches('+')),
            ("ProfileName", profile_name),
            ("Body", text),
            ("NumMedia", "0"),
            ("MessageType", "text"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        self.twilio_post(&url, &params, "Twilio message").await
    }

    /// POSTs Twilio's form parameters to `url`, signed with the integration's auth
    /// token over that URL as Twilio does.
    async fn twilio_post(
        &self,
        url: &str,
        params: &[(String, String)],
        what: &str,
    ) -> anyhow::Result<()> {
        let signature = ingestion::signing::sign_twilio(&self.sources.twilio.secret, url, params);
        let resp = self
            .fleet
            .http
            .post(url)
            .header("x-twilio-signature", signature)
            .form(params)
            .send()
            .await?;
        Self::expect_ok(what, resp).await
    }

    /// A Twilio status callback of an outbound WhatsApp message to `phone_e164`, signed
    /// over the public status URL.
    pub async fn whatsapp_status(
        &self,
        sid: &str,
        phone_e164: &str,
        status: &str,
    ) -> anyhow::Result<()> {
        let s = &self.sources.twilio;
        let url = format!("{}/webhooks/twilio/{}/status", self.fleet.ingest, s.id);
        let params: Vec<(String, String)> = [
            ("MessageSid", sid),
            ("SmsSid", sid),
            ("AccountSid", "ACloomandco00000000000000000000000"),
            ("From", "whatsapp:+14155238886"),
            ("To", &format!("whatsapp:{phone_e164}")),
            ("MessageStatus", status),
            ("SmsStatus", status),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        self.twilio_post(&url, &params, "Twilio status callback")
            .await
    }

    /// A POS bill with the tills' bearer token.
    pub async fn pos_bill(&self, bill: &Value) -> anyhow::Result<()> {
        let s = &self.sources.pos;
        let resp = self
            .fleet
            .http
            .post(format!("{}/pos/{}/bills", self.fleet.ingest, s.id))
            .bearer_auth(&s.secret)
            .json(bill)
            .send()
            .await?;
        Self::expect_ok("POS bill", resp).await
    }

    /// A Segment-compatible tracking call (`identify`, `track`, ...) with the write key.
    pub async fn tracking(&self, call: &str, body: &Value) -> anyhow::Result<()> {
        let s = &self.sources.segment;
        let resp = self
            .fleet
            .http
            .post(format!("{}/v1/{call}", self.fleet.ingest))
            .basic_auth(&s.secret, Some(""))
            .json(body)
            .send()
            .await?;
        Self::expect_ok(&format!("tracking {call}"), resp).await
    }
}

/// A Shopify `orders/create` body.
#[allow(clippy::too_many_arguments)]
fn shopify_order(
    order_id: u64,
    number: u32,
    placed: DateTime<Utc>,
    customer_id: u64,
    email: &str,
    first: &str,
    last: &str,
    lines: &[(&str, &str, &str, u32, &str)],
) -> Value {
    let total: f64 = lines
        .iter()
        .map(|(_, _, _, qty, price)| *qty as f64 * price.parse::<f64>().unwrap_or(0.0))
        .sum();
    json!({
        "id": order_id,
        "name": format!("#{number}"),
        "order_number": number,
        "email": email,
        "contact_email": email,
        "created_at": rfc3339(placed),
        "processed_at": rfc3339(placed),
        "updated_at": rfc3339(placed),
        "currency": "INR",
        "presentment_currency": "INR",
        "financial_status": "paid",
        "source_name": "web",
        "total_price": format!("{total:.2}"),
        "subtotal_price": format!("{total:.2}"),
        "customer": {
            "id": customer_id,
            "email": email,
            "first_name": first,
            "last_name": last,
            "phone": null,
            "created_at": rfc3339(placed - Duration::days(30)),
            "updated_at": rfc3339(placed),
        },
        "line_items": lines.iter().enumerate().map(|(i, (sku, name, category, qty, price))| json!({
            "id": order_id * 10 + i as u64,
            "sku": sku,
            "name": name,
            "title": name,
            "product_type": category,
            "quantity": qty,
            "price": price,
            "vendor": "Loom & Co",
        })).collect::<Vec<_>>(),
    })
}

/// A POS bill.
fn pos_bill(
    store: &str,
    bill_no: &str,
    billed: DateTime<Utc>,
    customer: Value,
    lines: &[(&str, &str, &str, u32, &str)],
) -> Value {
    let total: f64 = lines
        .iter()
        .map(|(_, _, _, qty, price)| *qty as f64 * price.parse::<f64>().unwrap_or(0.0))
        .sum();
    json!({
        "store": store,
        "bill_no": bill_no,
        "billed_at": rfc3339(billed),
        "currency": "INR",
        "customer": customer,
        "lines": lines.iter().map(|(sku, name, category, qty, price)| json!({
            "sku": sku, "name": name, "category": category, "qty": qty, "price": price,
        })).collect::<Vec<_>>(),
        "totals": { "total": format!("{total:.2}") },
        "payment": "upi",
    })
}

/// What the browser specs need to know about the seeded brand.
#[derive(Debug, Clone, Serialize)]
pub struct Seed {
    /// Dashboard users.
    pub users: Users,
    /// Integrations (without secrets).
    pub integrations: Integrations,
    /// Asha's phone as a person would type it.
    pub star_phone_typed: String,
    /// Asha's display name, as the profile shows it.
    pub star_name: String,
    /// Asha's e-mail.
    pub star_email: String,
}

/// Asha's phone as she types it.
pub const STAR_PHONE_TYPED: &str = "+91 98450 31277";

/// Asha: web order (e-mail), WhatsApp (phone), then a store bill with both.
///
/// The merger orders events by when they happened; a WhatsApp message carries no time of
/// its own (it happened when it arrived), so the bill is dated after it: only then are
/// there two profiles for the bill to merge.
pub async fn star_customer(send: &Sender<'_>, now: DateTime<Utc>) -> anyhow::Result<()> {
    send.shopify(
        "orders/create",
        "e2e-asha-order-1",
        &shopify_order(
            5_500_001,
            1001,
            now - Duration::days(6),
            8_800_001,
            "asha.rao@example.in",
            "Asha",
            "Rao",
            &[
                (
                    "KURTA-LIN-IND-M",
                    "Linen Kurta Indigo M",
                    "Kurtas",
                    1,
                    "1499.00",
                ),
                ("DUP-SLK-RUST", "Silk Dupatta Rust", "Dupattas", 1, "899.00"),
            ],
        ),
    )
    .await?;
    send.whatsapp(
        "SMe2easha0000000000000000000000001",
        "+919845031277",
        "Asha",
        "Hi! Is the rust silk dupatta available in the Indiranagar store?",
    )
    .await?;
    // The brand's answer: an outbound message whose status callbacks come back.
    for status in ["sent", "delivered", "read"] {
        send.whatsapp_status(
            "SMe2easha0000000000000000000000002",
            "+919845031277",
            status,
        )
        .await?;
    }
    send.pos_bill(&pos_bill(
        "BLR-01",
        "B-2026-0001",
        // A moment after the message arrived (ingest stamps it with its own clock).
        Utc::now() + Duration::seconds(1),
        json!({"phone": "98450 31277", "email": "asha.rao@example.in", "loyalty_id": "LOY-44100", "name": "Asha Rao"}),
        &[
            ("DUP-SLK-RUST", "Silk Dupatta Rust", "Dupattas", 1, "899.00"),
            ("SOCKS-3P", "Cotton Socks (3 pack)", "Accessories", 2, "249.00"),
        ],
    ))
    .await?;
    Ok(())
}

/// Vikram: four profiles, then one identify call that links them all. The identify call
/// carries no timestamp (it happened when it arrived), so it comes after the WhatsApp
/// message in the merger's order and finds all four profiles.
pub async fn review_case(send: &Sender<'_>, now: DateTime<Utc>) -> anyhow::Result<()> {
    send.shopify(
        "orders/create",
        "e2e-vikram-order-1",
        &shopify_order(
            5_500_101,
            1101,
            now - Duration::days(9),
            8_800_101,
            "vikram.nair@example.in",
            "Vikram",
            "Nair",
            &[(
                "SHIRT-OXF-WHT-L",
                "Oxford Shirt White L",
                "Shirts",
                1,
                "1299.00",
            )],
        ),
    )
    .await?;
    send.whatsapp(
        "SMe2evikram00000000000000000000001",
        "+919900011122",
        "Vikram",
        "Do you have the oxford shirt in blue?",
    )
    .await?;
    send.pos_bill(&pos_bill(
        "BLR-02",
        "B-2026-0101",
        now - Duration::days(5),
        json!({"loyalty_id": "LOY-77881", "name": "Vikram N"}),
        &[(
            "BELT-LTH-BRN",
            "Leather Belt Brown",
            "Accessories",
            1,
            "799.00",
        )],
    ))
    .await?;
    send.tracking(
        "identify",
        &json!({"userId": "vik-42", "messageId": "e2e-vikram-app-1", "timestamp": rfc3339(now - Duration::days(4)), "traits": {"firstName": "Vikram"}}),
    )
    .await?;
    // The app learns everything at once: this links the four profiles above.
    send.tracking(
        "identify",
        &json!({
            "userId": "vik-42",
            "messageId": "e2e-vikram-app-2",
            "traits": {
                "email": "vikram.nair@example.in",
                "phone": "99000 11122",
                "loyaltyId": "LOY-77881",
                "firstName": "Vikram",
                "lastName": "Nair"
            }
        }),
    )
    .await?;
    Ok(())
}

/// Other shoppers, so the overview's KPIs and charts have some substance.
pub async fn shoppers(send: &Sender<'_>, now: DateTime<Utc>) -> anyhow::Result<()> {
    let people = [
        (
            "Meera",
            "Iyer",
            "meera.iyer@example.in",
            "Kurtas",
            "KURTA-COT-MUS-S",
            "Cotton Kurta Mustard S",
            "1199.00",
        ),
        (
            "Rohan",
            "Das",
            "rohan.das@example.in",
            "Shirts",
            "SHIRT-LIN-SKY-M",
            "Linen Shirt Sky M",
            "1599.00",
        ),
        (
            "Fatima",
            "Sheikh",
            "fatima.sheikh@example.in",
            "Dupattas",
            "DUP-CHI-IVR",
            "Chikankari Dupatta Ivory",
            "1099.00",
        ),
        (
            "Karan",
            "Mehta",
            "karan.mehta@example.in",
            "Trousers",
            "TRS-CHN-KHK-32",
            "Chinos Khaki 32",
            "1399.00",
        ),
        (
            "Divya",
            "Pillai",
            "divya.pillai@example.in",
            "Kurtas",
            "KURTA-LIN-IND-S",
            "Linen Kurta Indigo S",
            "1499.00",
        ),
        (
            "Arjun",
            "Kapoor",
            "arjun.kapoor@example.in",
            "Accessories",
            "BAG-JUT-NAT",
            "Jute Tote Natural",
            "499.00",
        ),
    ];
    for (i, (first, last, email, category, sku, name, price)) in people.into_iter().enumerate() {
        let n = i as u64;
        send.shopify(
            "orders/create",
            &format!("e2e-shopper-{i}"),
            &shopify_order(
                5_600_000 + n,
                1200 + i as u32,
                now - Duration::days(1 + (i as i64 * 3) % 20) - Duration::hours(i as i64 * 5),
                8_900_000 + n,
                email,
                first,
                last,
                &[(sku, name, category, 1 + (i as u32 % 2), price)],
            ),
        )
        .await?;
    }
    for i in 0..4u32 {
        send.pos_bill(&pos_bill(
            if i % 2 == 0 { "BLR-01" } else { "BLR-02" },
            &format!("B-2026-05{i:02}"),
            now - Duration::days(i64::from(i) * 2 + 1),
            json!({"phone": format!("98450 1{i:04}"), "name": format!("Walk-in {}", i + 1)}),
            &[(
                "TEE-COT-BLK-M",
                "Cotton Tee Black M",
                "T-shirts",
                1 + i,
                "599.00",
            )],
        ))
        .await?;
    }
    for i in 0..5u32 {
        send.tracking(
            "track",
            &json!({
                "anonymousId": format!("e2e-visitor-{i}"),
                "messageId": format!("e2e-view-{i}"),
                "event": "Product Viewed",
                "timestamp": rfc3339(now - Duration::hours(i64::from(i) * 7)),
                "properties": {"sku": "KURTA-LIN-IND-M", "name": "Linen Kurta Indigo M", "category": "Kurtas", "price": 1499}
            }),
        )
        .await?;
    }
    Ok(())
}

/// Creates users and integrations and sends every person's events.
pub async fn everything(fleet: &Fleet) -> anyhow::Result<Seed> {
    let admin = fleet.admin().await?;
    let users = users(&admin).await?;
    let sources = integrations(&admin).await?;
    let send = Sender::new(fleet, &sources);
    let now = Utc::now();
    star_customer(&send, now).await?;
    review_case(&send, now).await?;
    shoppers(&send, now).await?;
    Ok(Seed {
        users,
        integrations: sources.clone(),
        star_phone_typed: STAR_PHONE_TYPED.to_owned(),
        star_name: "Asha Rao".to_owned(),
        star_email: "asha.rao@example.in".to_owned(),
    })
}

/// Users and integrations only (for the tests that need no customer data).
pub async fn accounts(fleet: &Fleet) -> anyhow::Result<Seed> {
    let admin = fleet.admin().await?;
    let users = users(&admin).await?;
    let sources = integrations(&admin).await?;
    Ok(Seed {
        users,
        integrations: sources,
        star_phone_typed: STAR_PHONE_TYPED.to_owned(),
        star_name: "Asha Rao".to_owned(),
        star_email: "asha.rao@example.in".to_owned(),
    })
}

/// Loads a generated brand (`ctl demo`: the scenario simulator's people over `months`,
/// sent through the same front door, then the models trained and every profile scored)
/// into `fleet`. Runs the `ctl` binary the workspace builds (`cargo build -p ctl`).
pub async fn generated(fleet: &Fleet, customers: usize, months: u32) -> anyhow::Result<()> {
    let ctl = crate::fleet::repo_root().join("target/debug/ctl");
    if !ctl.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p ctl` (`dashboard/e2e/run` does)",
            ctl.display()
        );
    }
    let s = &fleet.env.settings;
    let out = tokio::process::Command::new(&ctl)
        .arg("demo")
        .args(["--customers", &customers.to_string()])
        .args(["--months", &months.to_string()])
        // A seed whose small brand has enough buyers for every model to train.
        .args(["--seed", "11"])
        .args(["--whatsapp-days", "120"])
        .args(["--ingest-url", &fleet.ingest])
        .args(["--api-url", &fleet.gateway])
        .args(["--drain-timeout", "240"])
        .arg("--force")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &s.database_url)
        .env("REDIS_URL", &s.redis_url)
        .env("STREAM_PREFIX", &s.stream_prefix)
        .envs(
            fleet
                .env
                .process_vars()
                .into_iter()
                .filter(|(k, _)| k == "INTEGRATION_SECRETS_KEY"),
        )
        .env("PUBLIC_BASE_URL", &fleet.ingest)
        .env("LOG_FORMAT", "pretty")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "ctl demo failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What the pipeline has made so far, for the message of a test that waited in vain:
/// rows per stage and the dead letters' reasons.
pub async fn pipeline_report(fleet: &Fleet) -> String {
    let db = &fleet.env.db;
    let mut lines = Vec::new();
    for (what, sql) in [
        ("raw events", "SELECT count(*) FROM customer_raw_event"),
        (
            "unpublished raw events",
            "SELECT count(*) FROM raw_event_outbox_events",
        ),
        ("normalized events", "SELECT count(*) FROM normalized_event"),
        (
            "events attached to a profile",
            "SELECT count(*) FROM normalized_event WHERE profile_id IS NOT NULL",
        ),
        (
            "live profiles",
            "SELECT count(*) FROM customer_profile WHERE merged_into IS NULL",
        ),
        ("identifiers", "SELECT count(*) FROM profile_identifier"),
        ("merges", "SELECT count(*) FROM merge_history"),
        ("review items", "SELECT count(*) FROM manual_merge_queue"),
        ("orders", "SELECT count(*) FROM orders"),
    ] {
        let n: Result<i64, _> = sqlx_count(db, sql).await;
        lines.push(format!(
            "{what}: {}",
            n.map_or_else(|e| format!("? ({e})"), |n| n.to_string())
        ));
    }
    let mut redis = fleet.env.redis.clone();
    for topic in [
        "events.raw",
        "events.normalized",
        "profiles.merge_requests",
        "predictions.requests",
        "profiles.changes",
    ] {
        let key = format!("{}{topic}.dlq", fleet.env.prefix());
        let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(3)
            .query_async(&mut redis)
            .await
            .unwrap_or_default();
        for (id, fields) in dead {
            let error = fields
                .iter()
                .filter(|(k, _)| k != "e")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            lines.push(format!("dead letter on {topic} {id}: {error}"));
        }
    }
    lines.join("; ")
}

async fn sqlx_count(db: &sqlx::PgPool, sql: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql).fetch_one(db).await
}

/// Waits (through the API) until the pipeline has merged Asha's web, WhatsApp and POS
/// identities into one profile, and returns it.
pub async fn wait_for_star(
    fleet: &Fleet,
    admin: &Session,
    secs: u64,
) -> anyhow::Result<ProfileSummary> {
    let path = format!(
        "/profiles?{}",
        serde_urlencoded::to_string([("q", STAR_PHONE_TYPED)])?
    );
    let mut last = None;
    for _ in 0..secs * 4 {
        match admin.get::<Page<ProfileSummary>>(&path).await {
            Ok(page) => {
                if let Some(p) = page.items.into_iter().find(|p| {
                    let kinds: Vec<&str> = p.identifiers.iter().map(|i| i.kind.as_str()).collect();
                    kinds.contains(&"email") && kinds.contains(&"phone")
                }) {
                    return Ok(p);
                }
                last = Some("no profile with both her e-mail and phone yet".to_owned());
            }
            Err(e) => last = Some(format!("{e:#}")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    bail!(
        "after {secs}s the pipeline had not merged Asha's web, WhatsApp and POS identities: {} [{}]",
        last.unwrap_or_default(),
        pipeline_report(fleet).await
    )
}

/// Waits (through the API) until a pending review item exists.
pub async fn wait_for_review(fleet: &Fleet, admin: &Session, secs: u64) -> anyhow::Result<Uuid> {
    let mut last = None;
    for _ in 0..secs * 4 {
        match admin
            .get::<Page<domain::api::ReviewItem>>("/reviews?status=pending")
            .await
        {
            Ok(page) => {
                if let Some(item) = page.items.first() {
                    return Ok(item.id);
                }
                last = Some("the queue is empty".to_owned());
            }
            Err(e) => last = Some(format!("{e:#}")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    bail!(
        "after {secs}s no review item was raised for Vikram's four profiles: {} [{}]",
        last.unwrap_or_default(),
        pipeline_report(fleet).await
    )
}

/// Waits (through the API) until the `recommend` model has scored `profile` and the
/// Customer 360 document the dashboard reads (`GET /profiles/{id}`) lists its
/// recommended products; returns how many. The recommendations land after the
/// profile's first document, so a spec that looked at once could see an empty card.
/// Fails at once, with the registry's reason, when the recommendation model trained
/// with the brand was not activated (nothing would ever score her).
pub async fn wait_for_recommendations(
    fleet: &Fleet,
    admin: &Session,
    profile: Uuid,
    secs: u64,
) -> anyhow::Result<usize> {
    let mut last = None;
    for _ in 0..secs * 4 {
        match admin
            .get::<ProfileView>(&format!("/profiles/{profile}"))
            .await
        {
            Ok(v) if !v.profile.recommendations.is_empty() => {
                return Ok(v.profile.recommendations.len());
            }
            Ok(_) => last = Some("her Customer 360 lists no recommendations yet".to_owned()),
            Err(e) => last = Some(format!("{e:#}")),
        }
        let models: Page<ModelVersionView> = admin.get("/models?task=recommend").await?;
        if !models.items.is_empty() && models.items.iter().all(|m| m.status != ModelStatus::Active)
        {
            bail!(
                "the recommendation model trained with the brand was not activated, so \
                 nothing scores {profile}: {}",
                models
                    .items
                    .iter()
                    .map(|m| format!(
                        "{} {}: {} (metrics {})",
                        m.id,
                        m.status,
                        m.status_reason.as_deref().unwrap_or("no reason"),
                        m.metrics
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // What the model side says, so the message tells scoring apart from the document.
    let scored = match admin
        .get::<ProfileRecommendations>(&format!("/profiles/{profile}/recommendations"))
        .await
    {
        Ok(r) => format!(
            "GET /profiles/{profile}/recommendations: {} products, model {:?}, scored at {:?}",
            r.items.len(),
            r.model_version_id,
            r.scored_at
        ),
        Err(e) => format!("{e:#}"),
    };
    bail!(
        "after {secs}s the Customer 360 of {profile} showed no recommended products: {} \
         ({scored}) [{}]",
        last.unwrap_or_default(),
        pipeline_report(fleet).await
    )
}
