//! A whole fleet for one browser test, and a signed-in API client for seeding it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use domain::api::{CSRF_HEADER, CSRF_HEADER_VALUE, LoginRequest, SESSION_COOKIE};
use serde::Serialize;
use serde::de::DeserializeOwned;
use test_support::TestEnv;
use tokio::net::TcpListener;

/// E-mail of the admin the gateway creates at start-up.
pub const ADMIN_EMAIL: &str = "admin@loomandco.example";

/// Password of every user of the test brand.
pub const PASSWORD: &str = "loom-and-co-e2e-2026";

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The built dashboard the gateway serves (`dashboard/dist`).
pub fn dashboard_dir() -> PathBuf {
    repo_root().join("dashboard/dist")
}

/// Every service of the fleet, running in this process.
pub struct Fleet {
    /// Database, stream prefix and settings; dropping it stops the services and drops
    /// the database and the prefix's keys.
    pub env: TestEnv,
    /// Base URL of the api-gateway (and the dashboard).
    pub gateway: String,
    /// Base URL of ingest (also its `PUBLIC_BASE_URL`, which Twilio signatures use).
    pub ingest: String,
    /// HTTP client for seeding.
    pub http: reqwest::Client,
}

impl Fleet {
    /// Starts the fleet on a fresh database and stream prefix. Fails with what to do
    /// when the dashboard has not been built.
    pub async fn start() -> anyhow::Result<Self> {
        let dist = dashboard_dir();
        if !dist.join("pkg/dashboard_bg.wasm").is_file() {
            bail!(
                "the dashboard is not built ({} is missing): run `just build-dashboard` first",
                dist.join("pkg/dashboard_bg.wasm").display()
            );
        }
        // Ingest's address must be known before its settings are: Twilio signatures
        // cover the public URL, which is ingest's own address here.
        let ingest_listener = TcpListener::bind("127.0.0.1:0").await?;
        let ingest = format!("http://{}", ingest_listener.local_addr()?);
        let env = TestEnv::with_settings([
            ("DASHBOARD_DIR", dist.display().to_string()),
            ("ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
            ("PUBLIC_BASE_URL", ingest.clone()),
            ("LOGIN_ATTEMPTS_PER_MINUTE", "1000".to_owned()),
            ("LIVE_INTERVAL_MS", "300".to_owned()),
            ("OUTBOX_RELAY_AFTER_SECS", "1".to_owned()),
        ])
        .await;
        let ctx = env.context();
        tokio::spawn(async move {
            if let Err(e) = ingest::run(ctx, ingest_listener).await {
                tracing::error!(error = format!("{e:#}"), "ingest failed");
            }
        });
        env.spawn(normalizer::run).await;
        env.spawn(identity_merger::run).await;
        env.spawn(ml_inference::run).await;
        env.spawn(automations::run).await;
        let gateway = env.spawn(api_gateway::run).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let fleet = Self {
            env,
            gateway,
            ingest,
            http,
        };
        for base in [&fleet.gateway, &fleet.ingest] {
            fleet.wait_ready(base).await?;
        }
        Ok(fleet)
    }

    async fn wait_ready(&self, base: &str) -> anyhow::Result<()> {
        let url = format!("{base}/readyz");
        for _ in 0..200 {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{url} did not become ready")
    }

    /// Signs in through `POST /api/v1/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<Session> {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/login", self.gateway))
            .json(&LoginRequest {
                email: email.to_owned(),
                password: password.to_owned(),
            })
            .send()
            .await?;
        let status = resp.status();
        let cookie = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                c.strip_prefix(&format!("{SESSION_COOKIE}="))
                    .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
            });
        match cookie {
            Some(cookie) if status.is_success() => Ok(Session {
                http: self.http.clone(),
                api: format!("{}/api/v1", self.gateway),
                cookie,
            }),
            _ => bail!(
                "logging in as {email} answered {status}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }

    /// Signs in as the bootstrap admin.
    pub async fn admin(&self) -> anyhow::Result<Session> {
        self.login(ADMIN_EMAIL, PASSWORD).await
    }
}

/// A signed-in API client (session cookie, CSRF header on changes).
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    api: String,
    cookie: String,
}

impl Session {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .header("cookie", format!("{SESSION_COOKIE}={}", self.cookie));
        if method == reqwest::Method::GET {
            rb
        } else {
            rb.header(CSRF_HEADER, CSRF_HEADER_VALUE)
        }
    }

    async fn decode<T: DeserializeOwned>(
        what: String,
        resp: reqwest::Response,
    ) -> anyhow::Result<T> {
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{what} answered {status}: {text}");
        }
        serde_json::from_str(if text.is_empty() { "null" } else { &text })
            .with_context(|| format!("{what}: unexpected answer {text}"))
    }

    /// `GET /api/v1{path}`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.request(reqwest::Method::GET, path).send().await?;
        Self::decode(format!("GET {path}"), resp).await
    }

    /// `POST /api/v1{path}` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await?;
        Self::decode(format!("POST {path}"), resp).await
    }
}
