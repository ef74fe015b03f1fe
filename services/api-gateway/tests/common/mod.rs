//! Shared fixtures of the api-gateway tests: a running gateway on a fresh database and
//! stream prefix, callers of each role (session cookie or API token), and rows seeded
//! the way the other services write them.

#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use domain::api::{CSRF_HEADER, CSRF_HEADER_VALUE, MergeRule, Role, SESSION_COOKIE};
use domain::{Channel, Identifier, IdentifierKind, NormalizedEvent, Source};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use sqlx::PgPool;
use storage::normalized::{self, EventWrite};
use test_support::TestEnv;
use uuid::Uuid;

/// The password of every seeded user.
pub const PASSWORD: &str = "correct horse battery staple";

/// A gateway under test.
pub struct Gateway {
    /// The env (database, prefix); dropping it stops the gateway.
    pub env: TestEnv,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client (no cookie store: cookies are sent explicitly).
    pub http: reqwest::Client,
}

/// How a caller authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// No credentials at all.
    Anonymous,
    /// A session cookie (state-changing requests also send the CSRF header).
    Cookie(String),
    /// A bearer API token.
    Bearer(String),
}

impl Gateway {
    /// Starts a gateway with default test settings.
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// Starts a gateway with extra settings.
    pub async fn start_with(settings: Vec<(&'static str, String)>) -> Self {
        let mut all = vec![
            ("LOGIN_ATTEMPTS_PER_MINUTE", "1000".to_owned()),
            ("LIVE_INTERVAL_MS", "100".to_owned()),
            ("DASHBOARD_DIR", "/nonexistent-dashboard".to_owned()),
        ];
        all.extend(settings);
        let env = TestEnv::with_settings(all).await;
        let base = env.spawn(api_gateway::run).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let gw = Self { env, base, http };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let url = format!("{}/healthz", self.base);
        test_support::eventually(10, "the gateway to answer", || {
            let http = self.http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
    }

    /// The database.
    pub fn db(&self) -> &PgPool {
        &self.env.db
    }

    /// `base + /api/v1 + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// A request to an API path with credentials.
    pub fn request(&self, method: Method, path: &str, who: &Credentials) -> RequestBuilder {
        let rb = self.http.request(method.clone(), self.url(path));
        authed(rb, &method, who)
    }

    /// GET an API path, returning status and JSON body (Null when empty or not JSON).
    pub async fn get(&self, path: &str, who: &Credentials) -> (u16, Value) {
        into_json(self.request(Method::GET, path, who).send().await.unwrap()).await
    }

    /// POST JSON to an API path.
    pub async fn post(&self, path: &str, who: &Credentials, body: Value) -> (u16, Value) {
        into_json(
            self.request(Method::POST, path, who)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// PATCH JSON to an API path.
    pub async fn patch(&self, path: &str, who: &Credentials, body: Value) -> (u16, Value) {
        into_json(
            self.request(Method::PATCH, path, who)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Creates a user of `role` with [`PASSWORD`].
    pub async fn user(&self, role: Role) -> storage::users::User {
        let email = format!("{}-{}@example.com", role, Uuid::new_v4().simple());
        storage::users::create_user(self.db(), &email, PASSWORD, role)
            .await
            .unwrap()
    }

    /// A fresh session cookie of a new user of `role`.
    pub async fn session(&self, role: Role) -> Credentials {
        let user = self.user(role).await;
        self.session_of(user.id).await
    }

    /// A fresh session cookie of an existing user.
    pub async fn session_of(&self, user_id: Uuid) -> Credentials {
        let (token, _) = storage::users::create_session(self.db(), user_id, Duration::hours(1))
            .await
            .unwrap();
        Credentials::Cookie(token)
    }

    /// A fresh API token of `role`.
    pub async fn token(&self, role: Role) -> Credentials {
        let (token, _) = storage::users::create_token(self.db(), "test", role, None)
            .await
            .unwrap();
        Credentials::Bearer(token)
    }

    /// The stream entries of a topic (bodies decoded), oldest first.
    pub async fn stream_entries(&self, topic: streams::Topic) -> Vec<Value> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(topic.key(self.env.prefix()))
            .arg("-")
            .arg("+")
            .query_async(&mut self.env.redis.clone())
            .await
            .unwrap();
        reply
            .ids
            .iter()
            .filter_map(|e| e.get::<String>(streams::BODY_FIELD))
            .map(|b| serde_json::from_str(&b).unwrap())
            .collect()
    }
}

/// Adds credentials (and, for cookie-authenticated changes, the CSRF header).
pub fn authed(rb: RequestBuilder, method: &Method, who: &Credentials) -> RequestBuilder {
    match who {
        Credentials::Anonymous => rb,
        Credentials::Bearer(t) => rb.bearer_auth(t),
        Credentials::Cookie(c) => {
            let rb = rb.header("cookie", format!("{SESSION_COOKIE}={c}"));
            if *method == Method::GET {
                rb
            } else {
                rb.header(CSRF_HEADER, CSRF_HEADER_VALUE)
            }
        }
    }
}

/// Status and JSON body of a response.
pub async fn into_json(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------
// Seeding, in the shape the normalizer, identity merger and ML write.
// ---------------------------------------------------------------------------------

/// A live profile with the given identifiers (`(kind, value)`, normalised) and facts.
pub struct ProfileSeed<'a> {
    /// Display name.
    pub name: Option<&'a str>,
    /// `(kind, value)` pairs the profile holds.
    pub identifiers: Vec<(&'a str, &'a str)>,
    /// Last seen.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Orders count.
    pub orders: i32,
    /// Lifetime value.
    pub ltv: &'a str,
    /// Channel names it was seen on.
    pub channels: Vec<&'a str>,
    /// When the profile row was created.
    pub created_at: DateTime<Utc>,
}

impl Default for ProfileSeed<'_> {
    fn default() -> Self {
        Self {
            name: None,
            identifiers: Vec::new(),
            last_seen_at: Some(Utc::now()),
            orders: 0,
            ltv: "0",
            channels: vec!["web"],
            created_at: Utc::now() - Duration::days(10),
        }
    }
}

/// Inserts a live profile and its identifier index rows.
pub async fn seed_profile(db: &PgPool, seed: ProfileSeed<'_>) -> Uuid {
    let id = Uuid::now_v7();
    let ids_json: Vec<Value> = seed
        .identifiers
        .iter()
        .map(|(k, v)| json!({"kind": k, "value": v}))
        .collect();
    sqlx::query(
        "INSERT INTO customer_profile (id, created_at, display_name, identifiers, first_seen_at, \
         last_seen_at, orders_count, total_spent, currency, channels, category_affinity, traits) \
         VALUES ($1, $2, $3, $4, $2, $5, $6, $7::numeric, 'INR', $8, '{\"Apparel\": 1.0}', \
                 '{\"city\": \"Pune\"}')",
    )
    .bind(id)
    .bind(seed.created_at)
    .bind(seed.name)
    .bind(Value::Array(ids_json))
    .bind(seed.last_seen_at)
    .bind(seed.orders)
    .bind(seed.ltv)
    .bind(
        seed.channels
            .iter()
            .map(|c| (*c).to_owned())
            .collect::<Vec<_>>(),
    )
    .execute(db)
    .await
    .unwrap();
    for (k, v) in seed.identifiers {
        sqlx::query(
            "INSERT INTO profile_identifier (kind, value, profile_id, source, first_seen_at, last_seen_at) \
             VALUES ($1, $2, $3, 'shopify', now() - interval '10 days', now())",
        )
        .bind(k)
        .bind(v)
        .bind(id)
        .execute(db)
        .await
        .unwrap();
    }
    id
}

/// Marks `absorbed` merged into `survivor` and logs the merge; returns the merge id.
pub async fn seed_merge(db: &PgPool, survivor: Uuid, absorbed: Uuid, rule: MergeRule) -> Uuid {
    sqlx::query("UPDATE customer_profile SET merged_into = $2, merged_at = now() WHERE id = $1")
        .bind(absorbed)
        .bind(survivor)
        .execute(db)
        .await
        .unwrap();
    seed_merge_log(db, survivor, absorbed, rule).await
}

/// Logs a merge without changing profiles.
pub async fn seed_merge_log(db: &PgPool, survivor: Uuid, absorbed: Uuid, rule: MergeRule) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO merge_history (id, survivor_id, absorbed_ids, rule, matched_identifiers) \
         VALUES ($1, $2, $3, $4, '[{\"kind\": \"email\", \"value\": \"a@b.com\"}]')",
    )
    .bind(id)
    .bind(survivor)
    .bind(vec![absorbed])
    .bind(rule.as_str())
    .execute(db)
    .await
    .unwrap();
    id
}

/// A pending review item proposing to merge `candidates`.
pub async fn seed_review(db: &PgPool, candidates: &[Uuid]) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO manual_merge_queue (id, reason, candidate_profile_ids, evidence) \
         VALUES ($1, 'too_many_profiles', $2, '{\"identifiers\": [\"phone:+919876543210\"]}')",
    )
    .bind(id)
    .bind(candidates)
    .execute(db)
    .await
    .unwrap();
    id
}

/// A normalised event of `profile`, written by the normalizer's writer and attributed
/// as the merger would.
pub async fn seed_event(
    db: &PgPool,
    profile: Uuid,
    event_type: &str,
    occurred_at: DateTime<Utc>,
) -> Uuid {
    let event = NormalizedEvent {
        event_id: Uuid::now_v7(),
        occurred_at,
        received_at: occurred_at,
        source: Source::Shopify,
        integration_id: None,
        channel: Channel::Web,
        event_type: event_type.parse().unwrap(),
        name: None,
        identifiers: vec![Identifier::parse(IdentifierKind::Email, "a@b.com", "IN").unwrap()],
        traits: serde_json::Map::new(),
        properties: [("sku".to_owned(), json!("TEE-1"))].into_iter().collect(),
        order: None,
    };
    let id = event.event_id;
    let mut writes = [EventWrite::of_event(event)];
    normalized::write_batch(db, &mut writes).await.unwrap();
    normalized::attribute_as_resolved(db, &writes, &[profile])
        .await
        .unwrap();
    id
}

/// An order of `profile` with one line (the order alone, without its event).
pub async fn seed_order(
    db: &PgPool,
    profile: Uuid,
    total: &str,
    category: &str,
    placed_at: DateTime<Utc>,
) -> Uuid {
    let external = format!("o-{}", Uuid::now_v7().simple());
    test_support::seed::attributed_order(
        db,
        profile,
        &external,
        total.parse().unwrap(),
        category,
        placed_at,
    )
    .await
    .unwrap()
}

/// A model version of `task` in `status`.
pub async fn seed_model(db: &PgPool, task: &str, status: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO model_version (id, task, algorithm, feature_set_version, metrics, artefact, status) \
         VALUES ($1, $2, 'lightgbm', 1, '{\"roc_auc\": 0.81}', 'model-text', $3)",
    )
    .bind(id)
    .bind(task)
    .bind(status)
    .execute(db)
    .await
    .unwrap();
    id
}

/// A prediction of `profile`.
pub async fn seed_prediction(
    db: &PgPool,
    profile: Uuid,
    model: Uuid,
    task: &str,
    score: Option<f64>,
    label: Option<&str>,
) {
    sqlx::query(
        "INSERT INTO predictions (profile_id, task, model_version_id, score, label) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (profile_id, task) DO UPDATE SET score = $4, label = $5",
    )
    .bind(profile)
    .bind(task)
    .bind(model)
    .bind(score)
    .bind(label)
    .execute(db)
    .await
    .unwrap();
}

/// A completed CSV import with one rejected row.
pub async fn seed_import(db: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO csv_imports (id, kind, filename, status, total_rows, imported_rows, error_rows, finished_at) \
         VALUES ($1, 'customers', 'seed.csv', 'completed', 2, 1, 1, now())",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO csv_import_errors (import_id, line, reason) VALUES ($1, 3, 'invalid e-mail')",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    id
}

/// A dead letter on `topic`'s dead-letter stream; returns its id.
pub async fn seed_dead_letter(gw: &Gateway, topic: streams::Topic) -> String {
    let body = json!({"v": 1, "id": Uuid::now_v7(), "source": "test", "kind": "k",
                      "received_at": Utc::now(), "payload": {}});
    redis::cmd("XADD")
        .arg(topic.dlq_key(gw.env.prefix()))
        .arg("*")
        .arg("id")
        .arg("1-1")
        .arg("topic")
        .arg(topic.name())
        .arg("group")
        .arg("g")
        .arg("consumer")
        .arg("c")
        .arg("error")
        .arg("boom")
        .arg("deliveries")
        .arg(5)
        .arg("failed_at")
        .arg(Utc::now().to_rfc3339())
        .arg(streams::BODY_FIELD)
        .arg(body.to_string())
        .query_async(&mut gw.env.redis.clone())
        .await
        .unwrap()
}
