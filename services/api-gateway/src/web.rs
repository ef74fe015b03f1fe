//! Everything the gateway serves that is not the API: the built dashboard and the
//! OpenAPI viewer.
//!
//! - The dashboard's files come from `DASHBOARD_DIR`; a path that names no file and has
//!   no extension is a client-side route and gets `index.html`. Paths under `/api/`
//!   never fall back to the dashboard: they answer the API's JSON 404.
//! - `/api/docs/` is a small page that runs Swagger UI on `/api/v1/openapi.json`. Its
//!   assets are the npm package `swagger-ui-dist`, installed by the bootstrap into
//!   `OPENAPI_VIEWER_DIR` and served from disk at `/api/docs/assets/` (nothing is
//!   fetched from the internet, at build time or in the browser).

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use config::Settings;
use service_kit::ApiError;
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

/// The dashboard, the OpenAPI viewer and the `/api/` catch-all.
pub fn router(settings: &Settings) -> Router {
    let dashboard = PathBuf::from(&settings.api.dashboard_dir);
    Router::new()
        .route(
            "/api/docs",
            get(|| async { Redirect::permanent("/api/docs/") }),
        )
        .route("/api/docs/", get(viewer_page))
        .route("/api/docs/init.js", get(viewer_script))
        .nest_service(
            "/api/docs/assets",
            ServeDir::new(&settings.api.openapi_viewer_dir),
        )
        .fallback(serve_dashboard)
        .with_state(dashboard)
}

/// The viewer's policy: its own scripts only, and the inline styles Swagger UI sets.
const VIEWER_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; \
     form-action 'self'; frame-ancestors 'none'";

/// The viewer page. No inline script (the policy forbids it): `init.js` starts the
/// viewer, or says what is missing when the assets are not installed.
async fn viewer_page() -> impl IntoResponse {
    (
        [(header::CONTENT_SECURITY_POLICY, VIEWER_CSP)],
        Html(
            r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ConstIntel API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<noscript>The API viewer needs JavaScript. The raw document is at <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</noscript>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"##,
        ),
    )
}

/// Starts Swagger UI on the API's document; the assets are checked in the browser, so
/// a missing install says what to do instead of showing a blank page.
async fn viewer_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        r##"if (typeof SwaggerUIBundle === "undefined") {
  document.getElementById("swagger-ui").innerHTML =
    "<p>The viewer's files (npm package <code>swagger-ui-dist</code>) are not installed in " +
    "<code>OPENAPI_VIEWER_DIR</code>; run the bootstrap. The document itself is at " +
    "<a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a>.</p>";
} else {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    withCredentials: true,
    requestInterceptor: (req) => { req.headers["X-Requested-With"] = "constintel"; return req; },
  });
}
"##,
    )
}

/// Serves a dashboard file, `index.html` for client-side routes, or the API's 404.
async fn serve_dashboard(State(dir): State<PathBuf>, uri: Uri, req: Request) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::not_found(format!("no API route {path}")).into_response();
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the dashboard is read-only",
        )
        .into_response();
    }
    let index = dir.join("index.html");
    let looks_like_file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    let served = match ServeDir::new(&dir).oneshot(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    };
    if served.status() != StatusCode::NOT_FOUND || looks_like_file {
        return served;
    }
    let index_req = Request::builder()
        .uri("/index.html")
        .body(Body::empty())
        .expect("a static request");
    match ServeFile::new(&index).oneshot(index_req).await {
        Ok(resp) if resp.status().is_success() => {
            let mut resp = resp.map(Body::new);
            // Client-side routes must always get the current app shell.
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            resp
        }
        _ => (
            StatusCode::NOT_FOUND,
            "The dashboard is not built here (DASHBOARD_DIR has no index.html). The API is at /api/v1.",
        )
            .into_response(),
    }
}
