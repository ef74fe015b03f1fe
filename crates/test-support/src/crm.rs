//! Local fakes of the CRM and REST endpoints the destinations service talks to: real
//! HTTP servers (axum on `127.0.0.1:0`) that enforce each platform's documented
//! contract, so tests and the benchmark exercise the real client code end to end.
//!
//! Every fake can be switched to answer 503 (with `Retry-After`), to answer slowly, and
//! back; it counts what it received, so tests can prove nothing was lost or written
//! twice and that a rate limit was never exceeded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What every fake can be switched to.
#[derive(Debug, Default)]
struct Switches {
    unavailable: bool,
    delay: Duration,
}

/// The switches a test flips on a fake.
#[derive(Clone, Default)]
pub struct Switch(Arc<Mutex<Switches>>);

impl Switch {
    /// Answer every request 503 with `Retry-After: 1` until [`Switch::fix`].
    pub fn fail_with_503(&self) {
        self.0.lock().unwrap().unavailable = true;
    }

    /// Answer every request `delay` late — after handling it, so a client that gives
    /// up (or dies) meanwhile has had its write applied without hearing so.
    pub fn slow(&self, delay: Duration) {
        self.0.lock().unwrap().delay = delay;
    }

    /// Back to normal: answering at once and properly.
    pub fn fix(&self) {
        *self.0.lock().unwrap() = Switches::default();
    }
}

/// What every fake does before and after its handler, as the switch says: answers 503
/// (with `Retry-After: 1`) without handling the request while failing, else handles it
/// and holds the response for the switch's delay.
async fn switched(
    State(switch): State<Switch>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if switch.0.lock().unwrap().unavailable {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "service unavailable",
        )
            .into_response();
    }
    let response = next.run(request).await;
    let delay = switch.0.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

/// A listener on a spare port and its base URL.
async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a fake");
    let addr = listener.local_addr().expect("local addr");
    (listener, format!("http://{addr}"))
}

fn serve(listener: TcpListener, router: Router, switch: Switch) {
    let router = router.layer(axum::middleware::from_fn_with_state(switch, switched));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The most requests seen in any `window` (sliding, starting at a request).
fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

// ───────────────────────────── HubSpot ─────────────────────────────

/// A contact as the HubSpot fake holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSpotContact {
    /// HubSpot's id.
    pub id: String,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
}

/// The HubSpot fake's state.
#[derive(Debug, Default)]
pub struct HubSpotState {
    /// Contacts by the value of the unique property they were upserted by (lower case).
    pub contacts: BTreeMap<String, HubSpotContact>,
    /// Contact properties that exist.
    pub properties: BTreeSet<String>,
    /// How many times each property was created.
    pub property_creates: BTreeMap<String, usize>,
    /// Inputs received by batch upsert, in total (a resent input counts again).
    pub upsert_inputs: usize,
    /// Batch upsert requests accepted.
    pub upsert_requests: usize,
    /// Inputs received by batch update (by contact id), in total.
    pub update_inputs: usize,
    /// Largest batch received.
    pub largest_batch: usize,
    /// Merges done: (primary, merged) ids.
    pub merges: Vec<(String, String)>,
    /// GDPR deletions done (keys).
    pub gdpr_deleted: Vec<String>,
    /// Contacts archived (ids).
    pub archived: Vec<String>,
    /// Requests answered 429.
    pub throttled: usize,
    /// Arrival of every authenticated request.
    pub request_times: Vec<Instant>,
    /// Keys whose upsert is refused with a validation error (until removed).
    pub refuse_keys: BTreeSet<String>,
    next_id: u64,
}

/// A fake of the HubSpot CRM v3 API, following developers.hubspot.com:
/// "Authentication | Private apps" (`Authorization: Bearer <token>`, 401
/// `INVALID_AUTHENTICATION` otherwise); "CRM API | Contacts", batch upsert (at most 100
/// inputs, each with `idProperty` and `id`; unknown properties refused with
/// `PROPERTY_DOESNT_EXIST`; invalid e-mails refused with `VALIDATION_ERROR` for the
/// whole batch); "CRM API | Properties" (list, create; 409 when it exists); merge,
/// GDPR delete and batch archive; "API usage guidelines and limits" (a rolling window
/// of `max` requests per `interval`; the next answers 429 `RATE_LIMIT` with
/// `X-HubSpot-RateLimit-Max`, `-Remaining`, `-Interval-Milliseconds`).
#[derive(Clone)]
pub struct FakeHubSpot {
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The private-app token it accepts.
    pub token: String,
    /// Its state.
    pub state: Arc<Mutex<HubSpotState>>,
    /// Its switches.
    pub switch: Switch,
    limit: (usize, Duration),
}

impl FakeHubSpot {
    /// Starts a fake taking at most `max_requests` per `interval` (HubSpot's default
    /// for private apps: 100 per 10 s).
    pub async fn start(max_requests: usize, interval: Duration) -> Self {
        let state = HubSpotState {
            properties: ["email", "firstname", "lastname", "phone", "company"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            ..Default::default()
        };
        let (listener, url) = bind().await;
        let fake = Self {
            url,
            token: format!("pat-na1-{}", uuid::Uuid::new_v4().simple()),
            state: Arc::new(Mutex::new(state)),
            switch: Switch::default(),
            limit: (max_requests, interval),
        };
        let router = Router::new()
            .route("/crm/v3/objects/contacts/batch/upsert", post(hs_upsert))
            .route("/crm/v3/objects/contacts/batch/update", post(hs_update))
            .route("/crm/v3/objects/contacts/batch/archive", post(hs_archive))
            .route("/crm/v3/objects/contacts/merge", post(hs_merge))
            .route("/crm/v3/objects/contacts/gdpr-delete", post(hs_gdpr_delete))
            .route("/crm/v3/objects/contacts", get(hs_list))
            .route(
                "/crm/v3/properties/contacts",
                get(hs_properties).post(hs_create_property),
            )
            .with_state(fake.clone());
        serve(listener, router, fake.switch.clone());
        fake
    }

    /// Most requests seen in any window of `window`.
    pub fn max_requests_in(&self, window: Duration) -> usize {
        max_in_window(&self.state.lock().unwrap().request_times, window)
    }

    /// Checks the switch, the token and the rate limit; `Err` is the answer to give.
    async fn admit(&self, headers: &HeaderMap) -> Result<(), Response> {
        if bearer(headers) != Some(self.token.as_str()) {
            return Err(hs_error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found.",
            ));
        }
        let (max, interval) = self.limit;
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        let in_window = s
            .request_times
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < interval)
            .count();
        let policy = |remaining: usize| {
            [
                ("x-hubspot-ratelimit-max", max.to_string()),
                ("x-hubspot-ratelimit-remaining", remaining.to_string()),
                (
                    "x-hubspot-ratelimit-interval-milliseconds",
                    interval.as_millis().to_string(),
                ),
            ]
        };
        if in_window >= max {
            s.throttled += 1;
            let body = json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                              "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"});
            return Err(
                (StatusCode::TOO_MANY_REQUESTS, policy(0), axum::Json(body)).into_response()
            );
        }
        s.request_times.push(now);
        Ok(())
    }
}

fn hs_error(status: StatusCode, category: &str, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"status": "error", "message": message, "category": category,
                          "correlationId": uuid::Uuid::new_v4()}),
        ),
    )
        .into_response()
}

/// The `inputs` of a HubSpot batch request: JSON, present, at most 100; else the 400
/// `VALIDATION_ERROR` HubSpot answers.
fn batch_inputs(body: &[u8]) -> Result<Vec<Value>, Box<Response>> {
    let bad = |m: &str| Box::new(hs_error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m));
    let body: Value = serde_json::from_slice(body).map_err(|_| bad("Invalid input JSON"))?;
    let inputs = body["inputs"]
        .as_array()
        .cloned()
        .ok_or_else(|| bad("inputs is required"))?;
    if inputs.len() > 100 {
        return Err(bad("Batch input size exceeds the limit of 100"));
    }
    Ok(inputs)
}

async fn hs_upsert(State(f): State<FakeHubSpot>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let inputs = match batch_inputs(&body) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let inputs = &inputs;
    let mut s = f.state.lock().unwrap();
    s.largest_batch = s.largest_batch.max(inputs.len());
    // Validate the whole batch first: HubSpot refuses it as a whole.
    for input in inputs {
        let (Some(prop), Some(id)) = (input["idProperty"].as_str(), input["id"].as_str()) else {
            return hs_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "idProperty and id are required",
            );
        };
        if prop == "email" && !id.contains('@') {
            return hs_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Property values were not valid: [{{\"isValid\":false,\"message\":\"{id} is not a valid email address\",\"name\":\"email\"}}]"
                ),
            );
        }
        if s.refuse_keys.contains(&id.to_lowercase()) {
            return hs_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Property values were not valid: {id} was refused by a validation rule"),
            );
        }
        for name in input["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !s.properties.contains(name) {
                return hs_error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    &format!("Property \"{name}\" does not exist (PROPERTY_DOESNT_EXIST)"),
                );
            }
        }
    }
    let mut results = Vec::new();
    for input in inputs {
        let prop = input["idProperty"].as_str().unwrap_or_default();
        let key = input["id"].as_str().unwrap_or_default().to_lowercase();
        s.upsert_inputs += 1;
        let is_new = !s.contacts.contains_key(&key);
        if is_new {
            s.next_id += 1;
            let id = (100_000 + s.next_id).to_string();
            s.contacts.insert(
                key.clone(),
                HubSpotContact {
                    id,
                    properties: BTreeMap::new(),
                },
            );
        }
        let contact = s.contacts.get_mut(&key).expect("inserted above");
        contact.properties.insert(prop.to_owned(), key.clone());
        for (k, v) in input["properties"].as_object().into_iter().flatten() {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            if k == prop {
                continue;
            }
            contact.properties.insert(k.clone(), v);
        }
        results.push(json!({"id": contact.id, "properties": contact.properties, "new": is_new}));
    }
    s.upsert_requests += 1;
    axum::Json(json!({"status": "COMPLETE", "results": results})).into_response()
}

/// Batch update by contact id: at most 100 inputs, each `{id, properties}`; an unknown
/// id fails alone (`OBJECT_NOT_FOUND`), and so does a change of the unique property to
/// a value another contact holds (`CONFLICT`) — answered 207 with `errors` naming the
/// ids, the other inputs applied.
async fn hs_update(State(f): State<FakeHubSpot>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let inputs = match batch_inputs(&body) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let mut s = f.state.lock().unwrap();
    s.largest_batch = s.largest_batch.max(inputs.len());
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in &inputs {
        let Some(id) = input["id"].as_str() else {
            return hs_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "id is required",
            );
        };
        let props = input["properties"].as_object().cloned().unwrap_or_default();
        if let Some(name) = props.keys().find(|n| !s.properties.contains(*n)) {
            return hs_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Property \"{name}\" does not exist (PROPERTY_DOESNT_EXIST)"),
            );
        }
        s.update_inputs += 1;
        let Some(old_key) = s
            .contacts
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(k, _)| k.clone())
        else {
            errors.push(json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": format!("Object not found. objectId: {id}"),
                               "context": {"ids": [id]}}));
            continue;
        };
        // Contacts are held by their e-mail: a new one moves the contact.
        let new_key = props
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_lowercase)
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| old_key.clone());
        if new_key != old_key
            && let Some(other) = s.contacts.get(&new_key)
        {
            errors.push(json!({"status": "error", "category": "CONFLICT",
                               "message": format!("Contact already exists. Existing ID: {}", other.id),
                               "context": {"ids": [id]}}));
            continue;
        }
        let mut contact = s.contacts.remove(&old_key).expect("found above");
        for (k, v) in props {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            contact.properties.insert(k, v);
        }
        contact.properties.insert("email".into(), new_key.clone());
        results.push(json!({"id": contact.id, "properties": contact.properties}));
        s.contacts.insert(new_key, contact);
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let body = json!({"status": "COMPLETE", "results": results, "errors": errors,
                      "numErrors": errors.len()});
    (status, axum::Json(body)).into_response()
}

async fn hs_archive(State(f): State<FakeHubSpot>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let ids: Vec<String> = match batch_inputs(&body) {
        Ok(inputs) => inputs
            .iter()
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect(),
        Err(r) => return *r,
    };
    let mut s = f.state.lock().unwrap();
    s.contacts.retain(|_, c| !ids.contains(&c.id));
    s.archived.extend(ids);
    StatusCode::NO_CONTENT.into_response()
}

async fn hs_merge(
    State(f): State<FakeHubSpot>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let (Some(primary), Some(merged)) = (
        body["primaryObjectId"].as_str(),
        body["objectIdToMerge"].as_str(),
    ) else {
        return hs_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "primaryObjectId and objectIdToMerge are required",
        );
    };
    let mut s = f.state.lock().unwrap();
    if !s.contacts.values().any(|c| c.id == primary) || !s.contacts.values().any(|c| c.id == merged)
    {
        return hs_error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Object not found",
        );
    }
    s.contacts.retain(|_, c| c.id != merged);
    s.merges.push((primary.to_owned(), merged.to_owned()));
    axum::Json(json!({"id": primary})).into_response()
}

async fn hs_gdpr_delete(
    State(f): State<FakeHubSpot>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let Some(key) = body["objectId"].as_str() else {
        return hs_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "objectId is required",
        );
    };
    let key = key.to_lowercase();
    let mut s = f.state.lock().unwrap();
    if s.contacts.remove(&key).is_none() {
        return hs_error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Object not found",
        );
    }
    s.gdpr_deleted.push(key);
    StatusCode::NO_CONTENT.into_response()
}

async fn hs_list(State(f): State<FakeHubSpot>, headers: HeaderMap) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    axum::Json(json!({"results": []})).into_response()
}

async fn hs_properties(State(f): State<FakeHubSpot>, headers: HeaderMap) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let s = f.state.lock().unwrap();
    let results: Vec<Value> = s
        .properties
        .iter()
        .map(|p| json!({"name": p, "type": "string"}))
        .collect();
    axum::Json(json!({ "results": results })).into_response()
}

async fn hs_create_property(
    State(f): State<FakeHubSpot>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let (Some(name), Some(_), Some(_), Some(_)) = (
        body["name"].as_str(),
        body["label"].as_str(),
        body["type"].as_str(),
        body["groupName"].as_str(),
    ) else {
        return hs_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "name, label, type and groupName are required",
        );
    };
    let mut s = f.state.lock().unwrap();
    if !s.properties.insert(name.to_owned()) {
        return hs_error(
            StatusCode::CONFLICT,
            "OBJECT_ALREADY_EXISTS",
            "Property already exists",
        );
    }
    *s.property_creates.entry(name.to_owned()).or_default() += 1;
    (StatusCode::CREATED, axum::Json(json!({"name": name}))).into_response()
}

// ─────────────────────────── Salesforce ────────────────────────────

/// The Salesforce fake's state.
#[derive(Debug, Default)]
pub struct SalesforceState {
    /// Records by external id: (Salesforce id, fields).
    pub records: BTreeMap<String, (String, BTreeMap<String, Value>)>,
    /// Tokens issued.
    pub tokens_issued: usize,
    /// Requests answered `INVALID_SESSION_ID`.
    pub expired_answers: usize,
    /// Records received by upsert, in total.
    pub upsert_records: usize,
    /// Largest collection received.
    pub largest_batch: usize,
    /// External ids whose upsert fails with a validation error (until removed).
    pub refuse_keys: BTreeSet<String>,
    /// Ids deleted.
    pub deleted: Vec<String>,
    /// Arrival of every request with a valid token.
    pub request_times: Vec<Instant>,
    valid: BTreeSet<String>,
    next_id: u64,
}

/// A fake of the Salesforce REST API, following developer.salesforce.com: "OAuth 2.0
/// Client Credentials Flow" (`POST /services/oauth2/token`, form-encoded
/// `grant_type=client_credentials`, `client_id`, `client_secret`; 400 `invalid_client`
/// otherwise); "sObject Collections" upsert by external id (`PATCH
/// /services/data/vXX.X/composite/sobjects/{object}/{field}`, at most 200 records,
/// `attributes.type` required, `allOrNone=false` → per-record `{id, success, errors,
/// created}`; `LastName` required on Contact: `REQUIRED_FIELD_MISSING`) and delete;
/// "Status Codes and Error Responses" (401 `INVALID_SESSION_ID` for an unknown or
/// expired token; [`FakeSalesforce::expire_tokens`] expires every token issued).
#[derive(Clone)]
pub struct FakeSalesforce {
    /// Base URL: login URL and instance URL alike.
    pub url: String,
    /// The connected app's consumer key.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Its state.
    pub state: Arc<Mutex<SalesforceState>>,
    /// Its switches.
    pub switch: Switch,
}

impl FakeSalesforce {
    /// Starts a fake.
    pub async fn start() -> Self {
        let (listener, url) = bind().await;
        let fake = Self {
            url,
            client_id: format!("3MVG{}", uuid::Uuid::new_v4().simple()),
            client_secret: uuid::Uuid::new_v4().simple().to_string(),
            state: Arc::default(),
            switch: Switch::default(),
        };
        let router = Router::new()
            .route("/services/oauth2/token", post(sf_token))
            .route(
                "/services/data/{version}/composite/sobjects/{object}/{field}",
                patch(sf_upsert),
            )
            .route(
                "/services/data/{version}/composite/sobjects",
                delete(sf_delete_many),
            )
            .route(
                "/services/data/{version}/sobjects/{object}/{field}/{value}",
                delete(sf_delete_one),
            )
            .route(
                "/services/data/{version}/sobjects/{object}",
                get(sf_describe),
            )
            .with_state(fake.clone());
        serve(listener, router, fake.switch.clone());
        fake
    }

    /// Expires every token issued so far (the next call gets `INVALID_SESSION_ID`).
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().valid.clear();
    }

    /// Most requests seen in any window of `window`.
    pub fn max_requests_in(&self, window: Duration) -> usize {
        max_in_window(&self.state.lock().unwrap().request_times, window)
    }

    async fn admit(&self, headers: &HeaderMap) -> Result<(), Response> {
        let mut s = self.state.lock().unwrap();
        if !bearer(headers).is_some_and(|t| s.valid.contains(t)) {
            s.expired_answers += 1;
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])),
            )
                .into_response());
        }
        s.request_times.push(Instant::now());
        Ok(())
    }
}

async fn sf_token(State(f): State<FakeSalesforce>, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded_pairs(&body);
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unsupported_grant_type", "error_description": "grant type not supported"}))).into_response();
    }
    if form.get("client_id") != Some(&f.client_id)
        || form.get("client_secret") != Some(&f.client_secret)
    {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_client", "error_description": "invalid client credentials"}))).into_response();
    }
    let token = format!("00D!{}", uuid::Uuid::new_v4().simple());
    let mut s = f.state.lock().unwrap();
    s.valid.insert(token.clone());
    s.tokens_issued += 1;
    axum::Json(
        json!({"access_token": token, "instance_url": f.url, "token_type": "Bearer",
                      "issued_at": chrono::Utc::now().timestamp_millis().to_string()}),
    )
    .into_response()
}

/// Form fields of an `application/x-www-form-urlencoded` body.
fn serde_urlencoded_pairs(body: &[u8]) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn sf_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!([{"message": message, "errorCode": code}])),
    )
        .into_response()
}

async fn sf_upsert(
    State(f): State<FakeSalesforce>,
    Path((_version, object, field)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "malformed JSON",
        );
    };
    let Some(records) = body["records"].as_array() else {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "records is required",
        );
    };
    if records.len() > 200 {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit exceeded: more than 200 records",
        );
    }
    let mut s = f.state.lock().unwrap();
    s.largest_batch = s.largest_batch.max(records.len());
    let mut out = Vec::new();
    for r in records {
        s.upsert_records += 1;
        let fail = |code: &str, msg: &str, fields: Vec<&str>| json!({"success": false, "errors": [{"statusCode": code, "message": msg, "fields": fields}]});
        if r["attributes"]["type"].as_str() != Some(object.as_str()) {
            out.push(fail(
                "INVALID_TYPE",
                "attributes.type must name the object",
                vec![],
            ));
            continue;
        }
        let Some(key) = r[&field].as_str().map(str::to_owned) else {
            out.push(fail(
                "MISSING_ARGUMENT",
                &format!("{field} not specified"),
                vec![field.as_str()],
            ));
            continue;
        };
        if s.refuse_keys.contains(&key) {
            out.push(fail(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "Refused by a validation rule",
                vec![],
            ));
            continue;
        }
        let exists = s.records.contains_key(&key);
        let last_name = r["LastName"].as_str().filter(|v| !v.is_empty()).is_some()
            || (exists && r.get("LastName").is_none());
        if object == "Contact" && !last_name {
            out.push(fail(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [LastName]",
                vec!["LastName"],
            ));
            continue;
        }
        if !exists {
            s.next_id += 1;
            let id = format!("003{:015}", s.next_id);
            s.records.insert(key.clone(), (id, BTreeMap::new()));
        }
        let rec = s.records.get_mut(&key).expect("inserted above");
        for (k, v) in r.as_object().into_iter().flatten() {
            if k != "attributes" {
                rec.1.insert(k.clone(), v.clone());
            }
        }
        out.push(json!({"id": rec.0, "success": true, "errors": [], "created": !exists}));
    }
    axum::Json(Value::Array(out)).into_response()
}

async fn sf_delete_many(
    State(f): State<FakeSalesforce>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let ids: Vec<String> = q
        .get("ids")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    if ids.len() > 200 {
        return sf_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "more than 200 ids",
        );
    }
    let mut s = f.state.lock().unwrap();
    let mut out = Vec::new();
    for id in ids {
        let before = s.records.len();
        s.records.retain(|_, r| r.0 != id);
        if s.records.len() < before {
            s.deleted.push(id.clone());
            out.push(json!({"id": id, "success": true, "errors": []}));
        } else {
            out.push(json!({"id": id, "success": false, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}]}));
        }
    }
    axum::Json(Value::Array(out)).into_response()
}

async fn sf_delete_one(
    State(f): State<FakeSalesforce>,
    Path((_version, _object, _field, value)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    let mut s = f.state.lock().unwrap();
    match s.records.remove(&value) {
        Some((id, _)) => {
            s.deleted.push(id);
            StatusCode::NO_CONTENT.into_response()
        }
        None => sf_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        ),
    }
}

async fn sf_describe(
    State(f): State<FakeSalesforce>,
    Path((_v, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = f.admit(&headers).await {
        return r;
    }
    axum::Json(json!({"objectDescribe": {"name": object}})).into_response()
}

// ────────────────────────────── REST ───────────────────────────────

/// The REST fake's state.
#[derive(Debug, Default)]
pub struct RestState {
    /// Records by key: their latest fields.
    pub records: BTreeMap<String, Value>,
    /// Upserts received, in total (a resent record counts again).
    pub upserts: usize,
    /// Deleted keys (erasures marked).
    pub deleted: Vec<(String, bool)>,
    /// Merges: (merged-away key, survivor key).
    pub merges: Vec<(String, Option<String>)>,
    /// Requests refused for a bad or missing signature/token.
    pub refused: usize,
    /// Batches accepted.
    pub batches: usize,
    /// Largest batch received.
    pub largest_batch: usize,
    /// Keys refused per record (until removed).
    pub refuse_keys: BTreeSet<String>,
}

/// How the REST fake authenticates requests.
#[derive(Clone)]
pub enum RestAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `X-ConstIntel-Signature: sha256=<hex HMAC-SHA256("<timestamp>.<body>")>` with
    /// `X-ConstIntel-Timestamp` within five minutes.
    Hmac(String),
}

/// A fake of a brand's REST endpoint taking the payload of docs/destinations.md
/// ("REST payload"): checks the bearer token or the HMAC-SHA256 signature (constant
/// time) and refuses (401) anything else.
#[derive(Clone)]
pub struct FakeRest {
    /// Base URL; batches go to `{url}/constintel`.
    pub url: String,
    /// How it authenticates.
    pub auth: RestAuth,
    /// Its state.
    pub state: Arc<Mutex<RestState>>,
    /// Its switches.
    pub switch: Switch,
}

impl FakeRest {
    /// Starts a fake authenticating with `auth`.
    pub async fn start(auth: RestAuth) -> Self {
        let (listener, url) = bind().await;
        let fake = Self {
            url,
            auth,
            state: Arc::default(),
            switch: Switch::default(),
        };
        let router = Router::new()
            .route("/constintel", post(rest_batch))
            .with_state(fake.clone());
        serve(listener, router, fake.switch.clone());
        fake
    }

    /// The endpoint URL a destination posts to.
    pub fn endpoint(&self) -> String {
        format!("{}/constintel", self.url)
    }

    fn authentic(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        use hmac::Mac as _;
        match &self.auth {
            RestAuth::Bearer(t) => bearer(headers) == Some(t.as_str()),
            RestAuth::Hmac(secret) => {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                let (Some(ts), Some(sig)) = (
                    header("x-constintel-timestamp"),
                    header("x-constintel-signature"),
                ) else {
                    return false;
                };
                let Ok(t) = ts.parse::<i64>() else {
                    return false;
                };
                if (chrono::Utc::now().timestamp() - t).abs() > 300 {
                    return false;
                }
                let Some(hex_sig) = sig.strip_prefix("sha256=") else {
                    return false;
                };
                let Ok(given) = hex::decode(hex_sig) else {
                    return false;
                };
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
                mac.update(ts.as_bytes());
                mac.update(b".");
                mac.update(body);
                mac.verify_slice(&given).is_ok()
            }
        }
    }
}

async fn rest_batch(State(f): State<FakeRest>, headers: HeaderMap, body: Bytes) -> Response {
    if !f.authentic(&headers, &body) {
        f.state.lock().unwrap().refused += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed JSON").into_response();
    };
    let Some(records) = body["records"].as_array() else {
        return (StatusCode::BAD_REQUEST, "records is required").into_response();
    };
    let mut s = f.state.lock().unwrap();
    s.batches += 1;
    s.largest_batch = s.largest_batch.max(records.len());
    let mut rejected = Vec::new();
    for r in records {
        let key = r["key"].as_str().unwrap_or_default().to_owned();
        if s.refuse_keys.contains(&key) {
            rejected.push(json!({"key": key, "error": "refused by the receiving system"}));
            continue;
        }
        match r["op"].as_str() {
            Some("upsert") => {
                s.upserts += 1;
                s.records.insert(key, r["fields"].clone());
            }
            Some("delete") => {
                s.records.remove(&key);
                s.deleted.push((key, r["erase"].as_bool().unwrap_or(false)));
            }
            Some("merge") => {
                s.records.remove(&key);
                s.merges.push((key, r["into"].as_str().map(str::to_owned)));
            }
            _ => rejected.push(json!({"key": key, "error": "unknown op"})),
        }
    }
    axum::Json(json!({ "rejected": rejected })).into_response()
}
