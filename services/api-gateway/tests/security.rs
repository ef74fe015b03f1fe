//! Abuse limits and browser protections, through the HTTP surface: sign-in throttling
//! per account and per client (the client behind a trusted proxy, never a forged
//! header), Secure session cookies, the security headers of the dashboard, the API and
//! the OpenAPI viewer, HSTS over HTTPS only, and live feeds that end when their
//! credential is revoked or expires.

mod common;

use std::time::Duration;

use common::{Credentials, Gateway, PASSWORD, code};
use domain::api::Role;
use reqwest::Method;
use serde_json::json;

/// A sign-in attempt for `email` with `password`, sent as if through a proxy that
/// forwarded it for `forwarded_for` (when given).
async fn login(
    gw: &Gateway,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut rb = gw
        .http
        .post(gw.url("/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(ip) = forwarded_for {
        rb = rb.header("x-forwarded-for", ip);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn one_account_is_throttled_whatever_address_the_guesses_come_from() {
    let gw = Gateway::start_with(vec![
        ("TRUSTED_PROXIES", "127.0.0.1".into()),
        ("LOGIN_ATTEMPTS_PER_ACCOUNT_PER_HOUR", "3".into()),
    ])
    .await;
    let victim = gw.user(Role::Admin).await;
    let other = gw.user(Role::Viewer).await;
    for n in 1..=3 {
        let ip = format!("203.0.113.{n}");
        let resp = login(&gw, &victim.email, "guess", Some(&ip)).await;
        assert_eq!(resp.status(), 401, "attempt {n} is only a wrong password");
    }
    // A fourth address, and the right password: the account has had its attempts.
    let resp = login(
        &gw,
        &victim.email.to_uppercase(),
        PASSWORD,
        Some("198.51.100.77"),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "Retry-After {wait}");
    let body = resp.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("account"),
        "{body}"
    );
    // The same address may still sign in to another account.
    let resp = login(&gw, &other.email, PASSWORD, Some("198.51.100.77")).await;
    assert_eq!(resp.status(), 200);
    // Unknown e-mails are throttled alike, so the answer reveals nothing.
    for _ in 0..3 {
        assert_eq!(
            login(&gw, "nobody@example.com", "x", Some("192.0.2.1"))
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        login(&gw, "nobody@example.com", "x", Some("192.0.2.2"))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn the_client_is_the_address_a_trusted_proxy_forwarded() {
    let gw = Gateway::start_with(vec![
        ("TRUSTED_PROXIES", "127.0.0.0/8".into()),
        ("LOGIN_ATTEMPTS_PER_MINUTE", "2".into()),
    ])
    .await;
    let user = gw.user(Role::Viewer).await;
    // The client put its own X-Forwarded-For first; the proxy appended the real one.
    for forged in ["1.1.1.1, 203.0.113.5", "2.2.2.2, 203.0.113.5"] {
        assert_eq!(
            login(&gw, &user.email, "wrong", Some(forged))
                .await
                .status(),
            401
        );
    }
    let resp = login(&gw, &user.email, PASSWORD, Some("3.3.3.3, 203.0.113.5")).await;
    assert_eq!(
        resp.status(),
        429,
        "the forged first entries changed nothing"
    );
    assert!(
        resp.json::<serde_json::Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address")
    );
    // Another client behind the same proxy is not held back by the first.
    let resp = login(&gw, &user.email, PASSWORD, Some("203.0.113.6")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let gw = Gateway::start_with(vec![("LOGIN_ATTEMPTS_PER_MINUTE", "2".into())]).await;
    let user = gw.user(Role::Viewer).await;
    for n in 1..=2 {
        let ip = format!("203.0.113.{n}");
        assert_eq!(
            login(&gw, &user.email, "wrong", Some(&ip)).await.status(),
            401
        );
    }
    let resp = login(&gw, &user.email, PASSWORD, Some("203.0.113.3")).await;
    assert_eq!(
        resp.status(),
        429,
        "a new X-Forwarded-For per attempt does not make a new client"
    );
}

fn set_cookie(resp: &reqwest::Response) -> String {
    resp.headers()["set-cookie"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn session_cookies_are_secure_unless_turned_off_for_plain_http() {
    let gw = Gateway::start().await;
    let user = gw.user(Role::Viewer).await;
    let resp = login(&gw, &user.email, PASSWORD, None).await;
    assert_eq!(resp.status(), 200);
    assert!(
        set_cookie(&resp).contains("; Secure"),
        "{}",
        set_cookie(&resp)
    );

    let local = Gateway::start_with(vec![
        ("COOKIE_SECURE", "false".into()),
        ("TRUSTED_PROXIES", "127.0.0.1".into()),
    ])
    .await;
    let user = local.user(Role::Viewer).await;
    let resp = login(&local, &user.email, PASSWORD, None).await;
    assert_eq!(resp.status(), 200);
    assert!(
        !set_cookie(&resp).contains("Secure"),
        "{}",
        set_cookie(&resp)
    );
    // Over HTTPS (the trusted proxy says so) the cookie is Secure all the same.
    let resp = local
        .http
        .post(local.url("/auth/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": user.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        set_cookie(&resp).contains("; Secure"),
        "{}",
        set_cookie(&resp)
    );
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<html>app shell</html>").unwrap();
    let gw = Gateway::start_with(vec![
        ("DASHBOARD_DIR", dir.path().display().to_string()),
        ("TRUSTED_PROXIES", "127.0.0.1".into()),
    ])
    .await;
    let admin = gw.token(Role::Admin).await;
    let page = gw
        .http
        .get(format!("{}/profiles", gw.base))
        .send()
        .await
        .unwrap();
    let api = gw
        .request(Method::GET, "/auth/me", &admin)
        .send()
        .await
        .unwrap();
    let api_error = gw.http.get(gw.url("/profiles")).send().await.unwrap();
    let viewer = gw
        .http
        .get(format!("{}/api/docs/", gw.base))
        .send()
        .await
        .unwrap();
    let ops = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(api.status(), 200);
    assert_eq!(api_error.status(), 401);
    assert_eq!(viewer.status(), 200);
    for (what, resp) in [
        ("dashboard", &page),
        ("API", &api),
        ("API error", &api_error),
        ("viewer", &viewer),
        ("ops", &ops),
    ] {
        assert_eq!(
            header(resp, "x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(header(resp, "x-frame-options"), Some("DENY"), "{what}");
        assert_eq!(
            header(resp, "referrer-policy"),
            Some("no-referrer"),
            "{what}"
        );
        let csp = header(resp, "content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(!csp.contains("'unsafe-eval'"), "{what}: {csp}");
        assert_eq!(
            header(resp, "strict-transport-security"),
            None,
            "{what}: no HSTS over plain HTTP"
        );
    }
    let dashboard_csp = header(&page, "content-security-policy").unwrap();
    assert!(dashboard_csp.contains("script-src 'self' 'wasm-unsafe-eval'"));
    assert!(!dashboard_csp.contains("script-src 'self' 'unsafe-inline'"));
    assert!(
        header(&api, "content-security-policy")
            .unwrap()
            .starts_with("default-src 'none'")
    );
    // The viewer's script is a file of its own, allowed by its policy.
    let viewer_html = viewer.text().await.unwrap();
    assert!(viewer_html.contains(r#"<script src="/api/docs/init.js"></script>"#));
    assert!(!viewer_html.contains("<script>"), "no inline script");
    let init = gw
        .http
        .get(format!("{}/api/docs/init.js", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    assert!(init.text().await.unwrap().contains("SwaggerUIBundle"));

    // HSTS when the trusted proxy says the client came over HTTPS.
    let https = gw
        .request(Method::GET, "/auth/me", &admin)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&https, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
}

#[tokio::test]
async fn an_untrusted_peer_saying_https_gets_no_hsts() {
    let gw = Gateway::start_with(vec![("HSTS_MAX_AGE_SECS", "600".into())]).await;
    let resp = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "strict-transport-security"), None);
    let trusting = Gateway::start_with(vec![
        ("HSTS_MAX_AGE_SECS", "600".into()),
        ("TRUSTED_PROXIES", "::1, 127.0.0.1".into()),
    ])
    .await;
    let resp = trusting
        .http
        .get(format!("{}/healthz", trusting.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "strict-transport-security"),
        Some("max-age=600; includeSubDomains")
    );
}

/// Opens the live streams feed as `who` and waits for its first event.
async fn open_live(gw: &Gateway, who: &Credentials) -> reqwest::Response {
    let mut resp = gw
        .request(Method::GET, "/streams/live", who)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the feed sends its first event")
        .unwrap();
    assert!(first.is_some(), "the feed is open");
    resp
}

/// Reads `resp` until it ends; `false` when it is still open after `within`.
async fn ends_within(resp: &mut reqwest::Response, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn live_feeds_end_when_their_credential_is_revoked_or_expires() {
    let gw = Gateway::start_with(vec![
        ("LIVE_SESSION_CHECK_MS", "200".into()),
        // Another gateway's revocation: this one only learns of it by asking.
        ("AUTH_CACHE_MS", "60000".into()),
    ])
    .await;
    let user = gw.user(Role::Viewer).await;
    let session = gw.session_of(user.id).await;
    let (token, token_row) = storage::users::create_token(gw.db(), "feed", Role::Viewer, None)
        .await
        .unwrap();
    let token = Credentials::Bearer(token);
    let keeper = gw.token(Role::Viewer).await;
    let mut by_session = open_live(&gw, &session).await;
    let mut by_token = open_live(&gw, &token).await;
    let mut kept = open_live(&gw, &keeper).await;

    // Revoked behind this gateway's back (SQL, ctl, another replica).
    let Credentials::Cookie(cookie) = &session else {
        unreachable!()
    };
    storage::users::delete_session(gw.db(), cookie)
        .await
        .unwrap();
    assert!(
        ends_within(&mut by_session, Duration::from_secs(20)).await,
        "the feed of a signed-out session ends"
    );
    storage::users::revoke_token(gw.db(), token_row.id)
        .await
        .unwrap();
    assert!(
        ends_within(&mut by_token, Duration::from_secs(20)).await,
        "the feed of a revoked token ends"
    );
    assert!(
        !ends_within(&mut kept, Duration::from_secs(1)).await,
        "a feed whose token is still valid stays open"
    );

    // A session that expires while its feed is open.
    let (short, _) = storage::users::create_session(gw.db(), user.id, chrono::Duration::seconds(2))
        .await
        .unwrap();
    let mut expiring = open_live(&gw, &Credentials::Cookie(short)).await;
    assert!(
        ends_within(&mut expiring, Duration::from_secs(20)).await,
        "the feed ends when its session expires"
    );

    // A user demoted below the route's role loses the feed too (viewer is the floor,
    // so disable instead).
    let session = gw.session_of(user.id).await;
    let mut disabled = open_live(&gw, &session).await;
    sqlx::query("UPDATE users SET disabled = true WHERE id = $1")
        .bind(user.id)
        .execute(gw.db())
        .await
        .unwrap();
    assert!(
        ends_within(&mut disabled, Duration::from_secs(20)).await,
        "the feed of a disabled user ends"
    );
}
