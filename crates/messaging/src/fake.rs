//! A local fake of Twilio's Messages API: a real HTTP server (axum) for tests, the
//! benchmark and the demo fleet (`ctl fake-twilio`). It is a fake: nothing reaches
//! WhatsApp.
//!
//! What it enforces, after Twilio's documentation:
//! - "Messages resource → Create a Message resource": `POST
//!   /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded; `To` required
//!   (`whatsapp:+E164`, else error 21211), `From` (`whatsapp:+E164`) or
//!   `MessagingServiceSid` (`MG…`) required (21603), `Body` or `ContentSid` required
//!   (21602); `ContentSid` `HX…` with `ContentVariables` a JSON object (21656);
//!   answers 201 with the Message resource (`sid` `SM` + 32 hex, `status` `queued`).
//! - "API Requests → Authentication": HTTP Basic with the account SID and auth token,
//!   else 401 with error 20003; another account's path is 404 (20404).
//! - "API Responses → Errors" body `{code, message, more_info, status}`; "Error 20429
//!   Too Many Requests" (429 with `Retry-After`) and 5xx on request
//!   ([`FakeTwilio::fail_next`]).
//! - "WhatsApp → Conversational messaging → 24-hour window" and "Error 63016": a
//!   free-form `Body` without `ContentSid` to someone who has not written in the last
//!   24 hours ([`FakeTwilio::open_window`]) is accepted and then fails: its status
//!   callback reports `failed` with `ErrorCode` 63016, as Twilio does.
//! - "Messages → Outbound Message Status in Status Callbacks": each status (`sent`,
//!   `delivered`, `read`, or `failed`) is POSTed form-encoded to `StatusCallback`,
//!   signed as "Webhooks security → Validating signatures from Twilio" describes
//!   (`X-Twilio-Signature`: base64 HMAC-SHA1, keyed by the auth token, of the URL and
//!   the sorted parameters).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The account SID of the fake the dev fleet runs (`ctl up` without a Twilio account).
pub const DEV_ACCOUNT_SID: &str = "ACdev00000000000000000000000000000";
/// The auth token of that fake (it signs status callbacks with it; the demo's Twilio
/// integration uses it as its secret).
pub const DEV_AUTH_TOKEN: &str = "constintel-dev-fake-twilio-token";
/// The WhatsApp sender of the dev fleet (Twilio's sandbox number).
pub const DEV_FROM: &str = "whatsapp:+14155238886";
/// Where the dev fleet's fake listens.
pub const DEV_BIND: &str = "127.0.0.1:9180";

/// One message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMessage {
    /// Its SID (`SM…`).
    pub sid: String,
    /// Every form parameter as sent.
    pub form: Vec<(String, String)>,
    /// Its latest status.
    pub status: String,
    /// Its error code (63016 outside the window).
    pub error_code: Option<String>,
    /// When its create request arrived.
    pub received_at: Instant,
}

impl FakeMessage {
    /// The value of a form parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    messages: Vec<FakeMessage>,
    failures: VecDeque<u16>,
    windows: HashMap<String, Instant>,
    delay: Duration,
    statuses: Vec<String>,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    inner: std::sync::Mutex<Inner>,
    requests: AtomicUsize,
    arrived: Notify,
    http: reqwest::Client,
}

/// The running fake; see the module documentation.
#[derive(Clone)]
pub struct FakeTwilio {
    /// Base URL to use as `TWILIO_API_BASE` (`http://127.0.0.1:PORT`).
    pub base: String,
    shared: Arc<Shared>,
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"code": code, "message": message,
               "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
               "status": status.as_u16()})
        .to_string(),
    )
        .into_response()
}

fn e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn whatsapp_address(s: &str) -> bool {
    s.strip_prefix("whatsapp:").is_some_and(e164)
}

impl FakeTwilio {
    /// Starts the fake on `127.0.0.1:0` for one account.
    pub async fn start(account_sid: &str, auth_token: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, account_sid, auth_token).await
    }

    /// Serves the fake on `listener` (in a background task) for one account.
    pub async fn serve(
        listener: TcpListener,
        account_sid: &str,
        auth_token: &str,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            inner: std::sync::Mutex::new(Inner {
                statuses: vec!["sent".into(), "delivered".into(), "read".into()],
                ..Inner::default()
            }),
            requests: AtomicUsize::new(0),
            arrived: Notify::new(),
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(create))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}"),
            shared,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `phone` (`+E164`) wrote to the business now: the 24-hour window is
    /// open for it.
    pub fn open_window(&self, phone: &str) {
        self.inner()
            .windows
            .insert(phone.to_owned(), Instant::now());
    }

    /// The next `n` create requests (after auth) answer `status` (429 or 5xx) with
    /// Twilio's error body.
    pub fn fail_next(&self, status: u16, n: usize) {
        let mut i = self.inner();
        for _ in 0..n {
            i.failures.push_back(status);
        }
    }

    /// Each create request waits this long before it is answered (after it counted).
    pub fn delay_answers(&self, d: Duration) {
        self.inner().delay = d;
    }

    /// The statuses reported to `StatusCallback` after acceptance (default sent,
    /// delivered, read).
    pub fn set_statuses(&self, statuses: &[&str]) {
        self.inner().statuses = statuses.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.inner().messages.clone()
    }

    /// Create requests received so far, answered or not (authenticated or not).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` create requests arrived, for at most `timeout`.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            if self.requests() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests() >= n;
            }
        }
    }
}

fn authorised(s: &Shared, headers: &HeaderMap) -> bool {
    let expected = STANDARD.encode(format!("{}:{}", s.account_sid, s.auth_token));
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|got| got.trim() == expected)
}

async fn create(
    State(s): State<Arc<Shared>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let received_at = Instant::now();
    s.requests.fetch_add(1, Ordering::SeqCst);
    s.arrived.notify_waiters();
    if !authorised(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if sid != s.account_sid {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    let (delay, failure) = {
        let mut i = s
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (i.delay, i.failures.pop_front())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = failure {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = if status == 429 {
            error(code, 20429, "Too Many Requests")
        } else {
            error(code, 20500, "Internal Server Error")
        };
        if status == 429 {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        return r;
    }
    let form: Vec<(String, String)> = match serde_urlencoded::from_str(&body) {
        Ok(f) => f,
        Err(_) => return error(StatusCode::BAD_REQUEST, 21602, "Malformed form body"),
    };
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let Some(to) = get("To").filter(|t| whatsapp_address(t)) else {
        return error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
    };
    match (get("From"), get("MessagingServiceSid")) {
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                21603,
                "A 'From' phone number is required",
            );
        }
        (Some(from), _) if !whatsapp_address(from) => {
            return error(StatusCode::BAD_REQUEST, 21910, "Invalid From and To pair");
        }
        (_, Some(mg)) if !(mg.starts_with("MG") && mg.len() == 34) => {
            return error(
                StatusCode::BAD_REQUEST,
                21701,
                "The Messaging Service Sid is invalid",
            );
        }
        _ => {}
    }
    let content = get("ContentSid");
    if get("Body").is_none() && content.is_none() {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required");
    }
    if let Some(c) = content {
        let ok_sid = c.len() == 34 && c.starts_with("HX");
        let ok_vars = get("ContentVariables")
            .is_none_or(|v| serde_json::from_str::<Value>(v).is_ok_and(|v| v.is_object()));
        if !ok_sid || !ok_vars {
            return error(
                StatusCode::BAD_REQUEST,
                21656,
                "The ContentVariables Parameter is invalid",
            );
        }
    }
    let phone = to.trim_start_matches("whatsapp:").to_owned();
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let (statuses, error_code) = {
        let i = s
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = i
            .windows
            .get(&phone)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(24 * 3600));
        if content.is_none() && !open {
            (vec!["failed".to_owned()], Some("63016".to_owned()))
        } else {
            (i.statuses.clone(), None)
        }
    };
    let message = FakeMessage {
        sid: sid.clone(),
        form: form.clone(),
        status: "queued".into(),
        error_code: None,
        received_at,
    };
    s.inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .messages
        .push(message);
    if let Some(callback) = get("StatusCallback").map(str::to_owned) {
        let from = get("From").unwrap_or_default().to_owned();
        tokio::spawn(callbacks(
            s.clone(),
            callback,
            sid.clone(),
            to.to_owned(),
            from,
            statuses,
            error_code,
        ));
    }
    let answer = json!({
        "sid": sid, "account_sid": s.account_sid, "status": "queued", "to": to,
        "from": get("From"), "messaging_service_sid": get("MessagingServiceSid"),
        "body": get("Body"), "direction": "outbound-api", "error_code": null,
        "error_message": null, "num_segments": "1",
        "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", s.account_sid),
    });
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

async fn callbacks(
    s: Arc<Shared>,
    url: String,
    sid: String,
    to: String,
    from: String,
    statuses: Vec<String>,
    error_code: Option<String>,
) {
    for status in statuses {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut params = vec![
            ("AccountSid".to_owned(), s.account_sid.clone()),
            ("MessageSid".to_owned(), sid.clone()),
            ("SmsSid".to_owned(), sid.clone()),
            ("MessageStatus".to_owned(), status.clone()),
            ("SmsStatus".to_owned(), status.clone()),
            ("To".to_owned(), to.clone()),
            ("From".to_owned(), from.clone()),
            ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
        ];
        if let Some(code) = &error_code {
            params.push(("ErrorCode".to_owned(), code.clone()));
        }
        {
            let mut i = s
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(m) = i.messages.iter_mut().find(|m| m.sid == sid) {
                m.status = status.clone();
                m.error_code = error_code.clone();
            }
        }
        let signature = ingestion::signing::sign_twilio(&s.auth_token, &url, &params);
        let sent = s
            .http
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "the fake's status callback failed");
        }
    }
}
