//! The route table of `/api/v1`: every route, who may call it, and the OpenAPI document
//! built from the same declarations.
//!
//! A route is added with [`Builder::add`], which takes the minimum [`Access`] and a
//! `routes!(handler)` (the handler's `#[utoipa::path]` gives its method and path). One
//! call mounts the handler, wraps it in the role guard, documents the role
//! (`x-required-role`, the security schemes, the 401/403 answers) and records it in
//! [`Api::routes`]. There is no other way to add an API route, so the tests that walk
//! [`Api::routes`] — every role × every route, and the OpenAPI coverage check — see
//! every route the router serves.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use domain::api::{ApiErrorBody, ProfileSort, Role, SortOrder};
use domain::audience::Rule;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ContentBuilder, OpenApi, RefOr, Response, ResponseBuilder, Tag, extensions::Extensions,
};
use utoipa::{PartialSchema as _, ToSchema as _};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

pub use crate::auth::Access;
use crate::auth::{Guard, guard};
use crate::handlers::{
    audiences, auth as auth_h, automations, destinations, imports, integrations, merges, models,
    overview, profiles, streams, users,
};
use crate::state::AppState;

/// One route of the API and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    /// HTTP method.
    pub method: Method,
    /// Full path in OpenAPI form (`/api/v1/profiles/{id}`).
    pub path: String,
    /// Who may call it.
    pub access: Access,
}

/// The built API: its router (to nest at `/api/v1`), its OpenAPI document and its
/// route table.
pub struct Api {
    /// Router of every route, relative to `/api/v1`.
    pub router: Router,
    /// The OpenAPI document (also served at `/api/v1/openapi.json`).
    pub openapi: OpenApi,
    /// Every route with its access rule.
    pub routes: Vec<RouteAccess>,
}

/// Mount point of the API.
pub const BASE: &str = "/api/v1";

/// Collects routes; see the module documentation.
pub struct Builder {
    state: AppState,
    router: OpenApiRouter<AppState>,
    routes: Vec<RouteAccess>,
}

impl Builder {
    fn new(state: AppState) -> Self {
        Self {
            state,
            router: OpenApiRouter::new(),
            routes: Vec::new(),
        }
    }

    /// Adds the handlers of `method_router` with the access rule `access`, answering 408
    /// after `HTTP_REQUEST_TIMEOUT_SECS`.
    pub fn add(self, access: Access, method_router: UtoipaMethodRouter<AppState>) -> Self {
        let timeout = service_kit::HttpTimeouts::from_settings(&self.state.settings);
        self.add_untimed(
            access,
            method_router.map(|m| m.layer(timeout.request_layer())),
        )
    }

    /// [`Builder::add`] without the request timeout: for a route that streams a body
    /// larger than any timeout allows for (the CSV upload, up to `CSV_MAX_BYTES`).
    pub fn add_untimed(
        mut self,
        access: Access,
        method_router: UtoipaMethodRouter<AppState>,
    ) -> Self {
        let (schemas, mut paths, handlers) = method_router;
        for (path, item) in &mut paths.paths {
            for (method, op) in operations_mut(item) {
                document_access(op, access);
                self.routes.push(RouteAccess {
                    method,
                    path: format!("{BASE}{path}"),
                    access,
                });
            }
        }
        let guarded = handlers.route_layer(axum::middleware::from_fn_with_state(
            Guard {
                app: self.state.clone(),
                access,
            },
            guard,
        ));
        self.router = self.router.routes((schemas, paths, guarded));
        self
    }
}

fn operations_mut(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    let PathItem {
        get,
        put,
        post,
        delete,
        options,
        head,
        patch,
        trace,
        ..
    } = item;
    [
        (Method::GET, get),
        (Method::PUT, put),
        (Method::POST, post),
        (Method::DELETE, delete),
        (Method::OPTIONS, options),
        (Method::HEAD, head),
        (Method::PATCH, patch),
        (Method::TRACE, trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
    .collect()
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ApiErrorBody::schema()))
                    .build(),
            )
            .build(),
    )
}

/// Writes the access rule into the operation: `x-required-role`, the security schemes
/// that satisfy it, a sentence in the description, and the 401/403/500 answers.
fn document_access(op: &mut Operation, access: Access) {
    let ext = op.extensions.get_or_insert_with(Extensions::default);
    ext.insert("x-required-role".into(), access.as_str().into());
    let rule = match access {
        Access::Public => "No authentication needed.".to_owned(),
        Access::Role(r) => format!(
            "Requires the `{r}` role or higher (session cookie, or `Authorization: Bearer` API token)."
        ),
    };
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{rule}"),
        _ => rule,
    });
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    let takes_input = json_body || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let responses = &mut op.responses.responses;
    responses.entry("500".into()).or_insert_with(|| {
        error_response("Internal error (`internal`); details are logged, never returned.")
    });
    // What the shared extractors answer (`extract.rs`), whatever the handler adds.
    if takes_input {
        responses.entry("400".into()).or_insert_with(|| {
            error_response(
                "Malformed parameters or body (`bad_request`, `bad_filter`, `bad_path`).",
            )
        });
    }
    if json_body {
        responses.entry("415".into()).or_insert_with(|| {
            error_response(
                "The body was not sent as `Content-Type: application/json` (`unsupported_media_type`).",
            )
        });
        responses.entry("413".into()).or_insert_with(|| {
            error_response("The body is larger than the API accepts (`payload_too_large`).")
        });
    }
    if let Access::Role(_) = access {
        op.security = Some(vec![
            SecurityRequirement::new("session", Vec::<String>::new()),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
        responses.entry("401".into()).or_insert_with(|| {
            error_response("No valid session or API token (`unauthorized`, `invalid_token`).")
        });
        responses.entry("403".into()).or_insert_with(|| {
            error_response(
                "The caller's role is too weak (`forbidden`), or a cookie-authenticated change lacks the CSRF header (`csrf`).",
            )
        });
    }
}

/// Builds the API over `state`.
pub fn build(state: AppState) -> Api {
    use Access::{Public, Role as R};
    // The upload streams files up to CSV_MAX_BYTES; every other body keeps axum's
    // default limit.
    let upload_limit = usize::try_from(state.settings.ingest.csv_max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let viewer = R(Role::Viewer);
    let analyst = R(Role::Analyst);
    let admin = R(Role::Admin);
    let b = Builder::new(state)
        // Authentication and accounts.
        .add(Public, routes!(auth_h::login))
        .add(viewer, routes!(auth_h::logout))
        .add(viewer, routes!(auth_h::me))
        .add(Public, routes!(openapi_json))
        .add(admin, routes!(users::list_users, users::create_user))
        .add(admin, routes!(users::update_user))
        .add(admin, routes!(users::list_tokens, users::create_token))
        .add(admin, routes!(users::revoke_token))
        // Overview.
        .add(viewer, routes!(overview::overview))
        // Profiles and Customer 360.
        .add(viewer, routes!(profiles::list_profiles))
        .add(viewer, routes!(profiles::get_profile))
        .add(viewer, routes!(profiles::timeline))
        .add(viewer, routes!(profiles::profile_merges))
        .add(viewer, routes!(profiles::profile_predictions))
        .add(admin, routes!(profiles::export_profile))
        .add(admin, routes!(profiles::erase_profile))
        .add(analyst, routes!(profiles::put_consent))
        // Merges and the review queue.
        .add(viewer, routes!(merges::merge_log))
        .add(analyst, routes!(merges::manual_merge))
        .add(viewer, routes!(merges::get_merge))
        .add(analyst, routes!(merges::unmerge))
        .add(viewer, routes!(merges::list_reviews))
        .add(viewer, routes!(merges::get_review))
        .add(analyst, routes!(merges::approve_review))
        .add(analyst, routes!(merges::reject_review))
        // Integrations.
        .add(viewer, routes!(integrations::list_sources))
        .add(viewer, routes!(integrations::list_integrations))
        .add(admin, routes!(integrations::create_integration))
        .add(viewer, routes!(integrations::get_integration))
        .add(admin, routes!(integrations::update_integration))
        .add(admin, routes!(integrations::reveal_secret))
        .add(admin, routes!(integrations::rotate_secret))
        .add(viewer, routes!(integrations::deliveries))
        .add(analyst, routes!(integrations::send_test_event))
        // CSV imports.
        .add(viewer, routes!(imports::list_imports))
        .add_untimed(
            analyst,
            routes!(imports::upload)
                .map(|m| m.layer(axum::extract::DefaultBodyLimit::max(upload_limit))),
        )
        .add(viewer, routes!(imports::get_import))
        .add(viewer, routes!(imports::import_errors))
        .add(viewer, routes!(imports::import_events))
        // Models and predictions.
        .add(viewer, routes!(models::list_models))
        .add(viewer, routes!(models::active_models))
        .add(viewer, routes!(models::get_model))
        .add(viewer, routes!(models::profile_recommendations))
        .add(viewer, routes!(models::similar_products))
        // Audiences.
        .add(viewer, routes!(audiences::list_audiences))
        .add(analyst, routes!(audiences::create_audience))
        .add(viewer, routes!(audiences::preview_audience))
        .add(viewer, routes!(audiences::get_audience))
        .add(analyst, routes!(audiences::update_audience))
        .add(analyst, routes!(audiences::delete_audience))
        .add(viewer, routes!(audiences::audience_members))
        .add(admin, routes!(audiences::export_audience))
        // Automations.
        .add(viewer, routes!(automations::list_automations))
        .add(analyst, routes!(automations::create_automation))
        .add(viewer, routes!(automations::all_sends))
        .add(analyst, routes!(automations::dry_run_spec))
        .add(viewer, routes!(automations::get_automation))
        .add(analyst, routes!(automations::update_automation))
        .add(analyst, routes!(automations::delete_automation))
        .add(analyst, routes!(automations::enable_automation))
        .add(analyst, routes!(automations::dry_run_automation))
        .add(viewer, routes!(automations::automation_runs))
        .add(viewer, routes!(automations::automation_sends))
        .add(viewer, routes!(automations::automation_results))
        // Destinations.
        .add(viewer, routes!(destinations::list_destinations))
        .add(admin, routes!(destinations::create_destination))
        .add(viewer, routes!(destinations::get_destination))
        .add(admin, routes!(destinations::update_destination))
        .add(analyst, routes!(destinations::test_destination))
        .add(analyst, routes!(destinations::sync_destination))
        .add(admin, routes!(destinations::replay_destination))
        .add(viewer, routes!(destinations::destination_deliveries))
        .add(viewer, routes!(destinations::destination_dead_letters))
        // Streams.
        .add(viewer, routes!(streams::overview))
        .add(viewer, routes!(streams::live))
        .add(viewer, routes!(streams::entries))
        .add(viewer, routes!(streams::dead_letters))
        .add(admin, routes!(streams::replay));

    let Builder {
        state,
        router,
        routes,
    } = b;
    let (router, mut openapi) = router
        .fallback(api_not_found)
        .with_state(state.clone())
        .split_for_parts();
    describe(&mut openapi);
    // Serialised once: the document depends only on the code.
    let mut served = serde_json::to_value(&openapi).expect("the OpenAPI document serialises");
    describe_event_streams(&mut served);
    let _ = state.openapi.set(bytes::Bytes::from(
        serde_json::to_vec(&served).expect("the OpenAPI document serialises"),
    ));
    Api {
        router,
        openapi,
        routes,
    }
}

/// Title, servers, security schemes, tags and shared schemas of the document.
fn describe(doc: &mut OpenApi) {
    doc.info.title = "ConstIntel API".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "REST API of ConstIntel, the customer data platform: Customer 360, profiles, merges \
         and the review queue, integrations, CSV imports, models and streams. Lists use \
         keyset pagination (`cursor`, `limit`); errors are `{\"error\": {\"code\", \"message\"}}`."
            .into(),
    );
    doc.info.license = None;
    doc.servers = Some(vec![utoipa::openapi::Server::new(BASE)]);
    let components = doc
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            domain::api::SESSION_COOKIE,
            "Session cookie set by `POST /auth/login`. State-changing requests must also send `X-Requested-With`.",
        ))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("API token created by an admin (`POST /tokens`)."))
                .build(),
        ),
    );
    // Schemas that no body names: the error body (added to responses by hand) and the
    // enums that only query parameters use (utoipa links parameters to them without
    // collecting them).
    for (name, schema) in [
        (ApiErrorBody::name(), ApiErrorBody::schema()),
        (ProfileSort::name(), ProfileSort::schema()),
        (SortOrder::name(), SortOrder::schema()),
        // Recursive (its groups refer to it by name): registered here for certain.
        (Rule::name(), Rule::schema()),
    ] {
        components.schemas.insert(name.into_owned(), schema);
    }
    // Paths are relative to the server (`/api/v1`); keep them so.
    let tags = [
        ("auth", "Sign-in, the current caller, users and API tokens"),
        ("overview", "KPIs of the Overview page"),
        ("profiles", "Profile search, Customer 360, timelines, GDPR"),
        ("merges", "Merge log, review queue and merge decisions"),
        ("integrations", "Configured sources, secrets, delivery logs"),
        ("imports", "CSV uploads and their progress"),
        ("models", "Model registry, predictions and recommendations"),
        (
            "audiences",
            "Saved rules over profiles: size preview, members, CSV export",
        ),
        (
            "automations",
            "Trigger, wait, conditions, actions with guardrails: kill switch, dry run, runs, sends, results",
        ),
        (
            "streams",
            "Redis Streams: lengths, lag, dead letters, live feed",
        ),
        (
            "destinations",
            "CRMs and REST endpoints kept in sync: status, delivery log, dead letters",
        ),
    ];
    doc.tags = Some(
        tags.into_iter()
            .map(|(name, description)| {
                let mut t = Tag::new(name);
                t.description = Some(description.into());
                t
            })
            .collect(),
    );
}

/// The server-sent-event feeds: each one's path and, per event name, the schema of the
/// event's JSON `data`.
fn event_streams() -> [(&'static str, Vec<(&'static str, String)>); 2] {
    use domain::api::{CsvImportView, StreamEntry, StreamsOverview, import_events, live_events};
    [
        (
            "/streams/live",
            vec![
                (live_events::STATS, StreamsOverview::name().into_owned()),
                (live_events::ENTRY, StreamEntry::name().into_owned()),
            ],
        ),
        (
            "/imports/{id}/events",
            vec![
                (import_events::PROGRESS, CsvImportView::name().into_owned()),
                (import_events::DONE, CsvImportView::name().into_owned()),
            ],
        ),
    ]
}

/// Describes each event of the server-sent-event feeds the way OpenAPI 3.2 does (and
/// tools read 3.1 documents): the `text/event-stream` schema is that of one event, an
/// object with its `event` name and its `data`, a JSON string whose `contentSchema` is
/// the payload's schema. utoipa has no words for `contentSchema`, so this edits the
/// serialised document.
fn describe_event_streams(doc: &mut serde_json::Value) {
    use serde_json::json;
    for (path, events) in event_streams() {
        let variants: Vec<serde_json::Value> = events
            .iter()
            .map(|(event, schema)| {
                json!({
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"const": event},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": format!("#/components/schemas/{schema}")}
                        },
                        "id": {"type": "string"},
                        "retry": {"type": "integer"}
                    }
                })
            })
            .collect();
        let content = doc
            .pointer_mut(&format!(
                "/paths/{}/get/responses/200/content/text~1event-stream",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .unwrap_or_else(|| panic!("{path} documents a text/event-stream answer"));
        content["schema"] = json!({ "oneOf": variants });
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "auth",
    summary = "The OpenAPI 3.1 document of this API",
    responses((status = 200, description = "The document", content_type = "application/json"))
)]
pub async fn openapi_json(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.get().cloned().unwrap_or_default(),
    )
}

async fn api_not_found(uri: axum::http::Uri) -> service_kit::ApiError {
    service_kit::ApiError::not_found(format!("no API route {}", uri.path()))
}
