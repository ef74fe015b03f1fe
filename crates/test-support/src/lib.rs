//! Test fixtures: every test gets its own database and stream prefix on the machine's
//! real Postgres and Redis, so the suite runs in parallel and no test sees another's
//! rows or stream entries.
//!
//! [`TestEnv::new`] creates a database cloned from a migrated template (migrations run
//! once per schema version, not once per test), picks a random `STREAM_PREFIX`, and
//! builds [`config::Settings`] pointing at both. Dropping the env drops the database and
//! deletes the prefix's Redis keys. `TEST_DATABASE_URL` / `TEST_REDIS_URL` choose the
//! servers (defaults: `postgres://postgres@127.0.0.1:5432/postgres`,
//! `redis://127.0.0.1:6379`).
//!
//! [`crm`] holds real local fakes of HubSpot, Salesforce and a REST endpoint.
//! [`EmptyDatabase`] is a database with no migrations applied, for tests of the
//! migrations themselves; [`process`] runs the real binaries as child processes;
//! [`seed`] writes rows through the fleet's own writers; [`fuzz`] mutates real payloads
//! for property-based fuzzing; [`servers`] starts a Postgres and a Redis of a test's own,
//! which it may stop, kill and wipe; [`events`] builds normalised events on a fixed
//! clock.
//!
//! # Assumptions, running, testing
//!
//! Assumes the Postgres and Redis that `just test-services` reaches (a Postgres role that
//! may create databases). Tests: `cargo nextest run -p test-support`
//! (`tests/env_template.rs` checks `env.template` against the settings); every other
//! crate's tests exercise the fixtures.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context as _;
use config::Settings;
use service_kit::{CancellationToken, ServiceContext};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::net::TcpListener;

pub mod crm;
pub mod events;
pub mod fuzz;
pub mod process;
pub mod seed;
pub mod servers;
pub mod twilio;

/// The admin database URL tests create their databases through.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis URL tests use.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A random, unique stream prefix (`t-<uuid>:`).
pub fn random_prefix() -> String {
    format!("t-{}:", uuid::Uuid::new_v4().simple())
}

/// One test's isolated world: a migrated database, a stream prefix, settings for both.
pub struct TestEnv {
    /// Name of this test's database.
    pub db_name: String,
    /// Pool on this test's database.
    pub db: PgPool,
    /// Redis connection.
    pub redis: redis::aio::ConnectionManager,
    /// Settings pointing at this database and prefix, every service bound to port 0.
    pub settings: Settings,
    /// Cancelled when the env drops; services spawned through it stop then.
    pub shutdown: CancellationToken,
    /// The `(KEY, value)` pairs `settings` was built from, for child processes.
    vars: Vec<(String, String)>,
}

impl TestEnv {
    /// A fresh database and prefix with default settings.
    pub async fn new() -> Self {
        Self::with_settings(std::iter::empty()).await
    }

    /// A fresh database and prefix, with extra settings (`("KEY", "value")`).
    pub async fn with_settings(
        overrides: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Self {
        Self::try_new(overrides.into_iter().collect())
            .await
            .expect("creating the test environment (is Postgres on 127.0.0.1:5432 and Redis on 6379 running?)")
    }

    async fn try_new(overrides: Vec<(&'static str, String)>) -> anyhow::Result<Self> {
        let admin_url = admin_database_url();
        let template = ensure_template(&admin_url).await?;
        let db_name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await?;
        create_from_template(&mut admin, &db_name, &template).await?;
        admin.close().await?;

        let database_url = database_url_for(&admin_url, &db_name)?;
        let mut pairs: Vec<(&str, String)> = vec![
            ("DATABASE_URL", database_url),
            ("REDIS_URL", redis_url()),
            ("STREAM_PREFIX", random_prefix()),
            ("DATABASE_MAX_CONNECTIONS", "8".into()),
            ("STREAM_CLAIM_IDLE_MS", "1000".into()),
            ("API_GATEWAY_BIND", "127.0.0.1:0".into()),
            ("INGEST_BIND", "127.0.0.1:0".into()),
            ("NORMALIZER_BIND", "127.0.0.1:0".into()),
            ("IDENTITY_MERGER_BIND", "127.0.0.1:0".into()),
            ("ML_INFERENCE_BIND", "127.0.0.1:0".into()),
            ("AUTOMATIONS_BIND", "127.0.0.1:0".into()),
            ("DESTINATIONS_BIND", "127.0.0.1:0".into()),
            // Integration secrets are sealed at rest: every env has a key of its own.
            (
                "INTEGRATION_SECRETS_KEY",
                storage::secrets::SecretsKey::generate().1,
            ),
        ];
        pairs.extend(overrides);
        let vars = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let settings = Settings::from_pairs(pairs)?;
        let db = storage::connect_with_timeouts(
            &settings.database_url,
            settings.database_max_connections,
            service_kit::query_timeouts(&settings),
        )
        .await?;
        let redis = service_kit::connect_redis(&settings.redis_url).await?;
        Ok(Self {
            db_name,
            db,
            redis,
            settings,
            shutdown: CancellationToken::new(),
            vars,
        })
    }

    /// Identifier-index rows (`profile_identifier`: kind, value, profile) that name no
    /// live profile: a missing one (no foreign key refuses it, the resolver's locks keep
    /// it out) or a tombstone. Empty after every resolver write.
    pub async fn stray_identifier_rows(&self) -> Vec<(String, String, uuid::Uuid)> {
        sqlx::query_as(
            "SELECT pi.kind, pi.value, pi.profile_id FROM profile_identifier pi \
             LEFT JOIN customer_profile p ON p.id = pi.profile_id \
             WHERE p.id IS NULL OR p.merged_into IS NOT NULL ORDER BY 1, 2",
        )
        .fetch_all(&self.db)
        .await
        .expect("reading the identifier index")
    }

    /// The stream prefix of this env.
    pub fn prefix(&self) -> &str {
        &self.settings.stream_prefix
    }

    /// The bodies of every entry on the stream `key` (e.g. `Topic::EventsRaw.key(prefix)`
    /// or a dead-letter key), oldest first: parsed JSON, the raw text when it is not
    /// JSON, `Null` for an entry without a body field.
    pub async fn stream_bodies(&self, key: &str) -> Vec<serde_json::Value> {
        let mut conn = self.redis.clone();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("XRANGE of a test stream");
        entries
            .into_iter()
            .map(|(_, fields)| {
                fields
                    .into_iter()
                    .find(|(k, _)| k == streams::BODY_FIELD)
                    .map(|(_, v)| serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v)))
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect()
    }

    /// The envelope ids on `events.raw`, in stream order.
    pub async fn raw_stream_ids(&self) -> Vec<uuid::Uuid> {
        self.stream_bodies(&streams::Topic::EventsRaw.key(self.prefix()))
            .await
            .iter()
            .map(|env| {
                env["id"]
                    .as_str()
                    .expect("an envelope id")
                    .parse()
                    .expect("a uuid")
            })
            .collect()
    }

    /// The key this env's integration secrets are sealed with.
    pub fn secrets_key(&self) -> storage::secrets::SecretsKey {
        service_kit::secrets_key(&self.settings).expect("every test env has a secrets key")
    }

    /// A [`ServiceContext`] on this env (sharing its pool, Redis and shutdown token).
    pub fn context(&self) -> ServiceContext {
        ServiceContext {
            settings: self.settings.clone(),
            db: self.db.clone(),
            redis: self.redis.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Starts a service the way its binary does — `run(context, listener)` — on a port
    /// chosen by the OS, and returns its base URL (`http://127.0.0.1:PORT`). The service
    /// stops when this env drops or its shutdown token is cancelled.
    pub async fn spawn<F, Fut>(&self, run: F) -> String
    where
        F: FnOnce(ServiceContext, TcpListener) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let fut = run(self.context(), listener);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::error!(error = format!("{e:#}"), "spawned service failed");
            }
        });
        format!("http://{addr}")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Waits, so the database is gone before the test process exits.
        drop_database_blocking(
            self.db_name.clone(),
            Some(self.settings.stream_prefix.clone()),
        );
    }
}

/// A database with nothing in it (no migrations applied), dropped with the value.
pub struct EmptyDatabase {
    /// The database's name.
    pub name: String,
    /// URL of the database.
    pub url: String,
}

impl EmptyDatabase {
    /// Creates a new, empty database on the test server.
    pub async fn create() -> Self {
        let admin_url = admin_database_url();
        let name = format!("test_empty_{}", uuid::Uuid::new_v4().simple());
        let created = async {
            let mut admin = PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("CREATE DATABASE {}", storage::quote_ident(&name)))
                .execute(&mut admin)
                .await?;
            admin.close().await?;
            database_url_for(&admin_url, &name)
        }
        .await;
        let url =
            created.expect("creating an empty database (is Postgres on 127.0.0.1:5432 running?)");
        Self { name, url }
    }
}

impl Drop for EmptyDatabase {
    fn drop(&mut self) {
        drop_database_blocking(self.name.clone(), None);
    }
}

/// Drops database `db_name` and, if given, the Redis keys under `prefix`, from a helper
/// thread with its own runtime (Drop cannot be async); returns when both are gone.
fn drop_database_blocking(db_name: String, prefix: Option<String>) {
    let cleanup = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime");
        rt.block_on(async move {
            if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
                let drop_db = format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    storage::quote_ident(&db_name)
                );
                let _ = sqlx::query(&drop_db).execute(&mut admin).await;
            }
            if let Some(prefix) = prefix {
                let _ = delete_prefix(&prefix).await;
            }
        });
    });
    let _ = cleanup.join();
}

/// Deletes every Redis key starting with `prefix`.
pub async fn delete_prefix(prefix: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!prefix.is_empty(), "refusing to delete an empty prefix");
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{}*", escape_glob(prefix));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in keys.chunks(500) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}

fn escape_glob(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}

fn database_url_for(admin_url: &str, db_name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(admin_url).context("TEST_DATABASE_URL")?;
    url.set_path(db_name);
    Ok(url.to_string())
}

/// The template database for the current migrations, created and migrated once.
/// Its name carries a hash of the migrations, so a new migration gets a new template.
async fn ensure_template(admin_url: &str) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for m in storage::MIGRATOR.iter() {
        hasher.update(m.version.to_le_bytes());
        hasher.update(&*m.checksum);
    }
    let name = format!("test_template_{}", &hex::encode(hasher.finalize())[..16]);

    let mut admin = PgConnection::connect(admin_url).await?;
    // Serialise template creation across parallel test processes.
    sqlx::query("SELECT pg_advisory_lock(727272)")
        .execute(&mut admin)
        .await?;
    let result = async {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
        if !exists {
            let quoted = storage::quote_ident(&name);
            sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {quoted}"))
                .execute(&mut admin)
                .await?;
            let opts = PgConnectOptions::from_str(&database_url_for(admin_url, &name)?)?;
            let mut conn = PgConnection::connect_with(&opts).await?;
            storage::MIGRATOR.run(&mut conn).await?;
            conn.close().await?;
            sqlx::query(&format!("ALTER DATABASE {quoted} WITH is_template TRUE"))
                .execute(&mut admin)
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(727272)")
        .execute(&mut admin)
        .await?;
    result?;
    Ok(name)
}

async fn create_from_template(
    admin: &mut PgConnection,
    db_name: &str,
    template: &str,
) -> anyhow::Result<()> {
    let statement = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        storage::quote_ident(db_name),
        storage::quote_ident(template)
    );
    // Postgres refuses to copy a template another session is copying at that moment
    // (55006); parallel tests retry briefly.
    for attempt in 0..50 {
        match sqlx::query(&statement).execute(&mut *admin).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55006") && attempt < 49 =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50 + attempt * 10)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `secs` seconds
/// with `what` in the message. For waiting on asynchronous pipelines in tests.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn envs_are_isolated_and_migrated() {
        let a = TestEnv::new().await;
        let b = TestEnv::new().await;
        assert_ne!(a.db_name, b.db_name);
        assert_ne!(a.prefix(), b.prefix());
        let gin: Option<String> = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'customer_profile' \
             AND indexname = 'customer_profile_identifiers_gin'",
        )
        .fetch_optional(&a.db)
        .await
        .unwrap();
        assert!(gin.unwrap().contains("USING gin"));
        let name = a.db_name.clone();
        drop(a);
        let mut admin = PgConnection::connect(&admin_database_url()).await.unwrap();
        let still: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert!(!still, "dropping the env drops its database");
    }
}
