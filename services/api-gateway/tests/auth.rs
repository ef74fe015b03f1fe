//! Sign-in, sessions, CSRF, API tokens, the login limit, the first admin, and user and
//! token management, through the HTTP surface.

mod common;

use common::{Credentials, Gateway, PASSWORD, code};
use domain::api::{Role, SESSION_COOKIE};
use reqwest::Method;
use serde_json::json;

fn session_from(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{SESSION_COOKIE}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
        .filter(|v| !v.is_empty())
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_that_authenticates() {
    let gw = Gateway::start().await;
    let user = gw.user(Role::Analyst).await;
    let resp = gw
        .http
        .post(gw.url("/auth/login"))
        .json(&json!({"email": user.email.to_uppercase(), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie_header = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_header.contains(part), "{cookie_header}");
    }
    let token = session_from(&resp).unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["email"], user.email);
    assert_eq!(body["user"]["role"], "analyst");

    // Only the hash is stored.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM sessions")
        .fetch_one(gw.db())
        .await
        .unwrap();
    assert_eq!(stored, storage::users::token_sha256(&token));
    let who = Credentials::Cookie(token.clone());
    let (status, me) = gw.get("/auth/me", &who).await;
    assert_eq!(status, 200);
    assert_eq!(me["kind"], "user");
    assert_eq!(me["role"], "analyst");
    let last_login: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_login_at FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(gw.db())
            .await
            .unwrap();
    assert!(last_login.is_some());

    // Logout ends the session and clears the cookie.
    let resp = gw
        .request(Method::POST, "/auth/logout", &who)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, body) = gw.get("/auth/me", &who).await;
    assert_eq!(status, 401);
    assert_eq!(code(&body), "unauthorized");
}

#[tokio::test]
async fn wrong_passwords_unknown_users_and_disabled_users_are_refused_alike() {
    let gw = Gateway::start().await;
    let user = gw.user(Role::Viewer).await;
    let disabled = gw.user(Role::Viewer).await;
    storage::users::update_user(gw.db(), disabled.id, None, Some(true), None)
        .await
        .unwrap();
    for (email, password) in [
        (user.email.as_str(), "wrong password here"),
        ("nobody@example.com", PASSWORD),
        (disabled.email.as_str(), PASSWORD),
        ("not-an-email", PASSWORD),
    ] {
        let (status, body) = gw
            .post(
                "/auth/login",
                &Credentials::Anonymous,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, 401, "{email}");
        assert_eq!(code(&body), "invalid_credentials");
        assert_eq!(body["error"]["message"], "wrong e-mail or password");
    }
    let (status, body) = gw
        .post("/auth/login", &Credentials::Anonymous, json!({"email": 3}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_request");
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(gw.db())
        .await
        .unwrap();
    assert_eq!(none, 0, "no session for a failed login");
}

#[tokio::test]
async fn expired_sessions_and_disabled_users_lose_access() {
    // The expiry is changed in Postgres behind the gateway's back: check every request.
    let gw = Gateway::start_with(vec![("AUTH_CACHE_MS", "0".into())]).await;
    let user = gw.user(Role::Viewer).await;
    let who = gw.session_of(user.id).await;
    assert_eq!(gw.get("/auth/me", &who).await.0, 200);
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(gw.db())
        .await
        .unwrap();
    assert_eq!(gw.get("/auth/me", &who).await.0, 401);

    let fresh = gw.session_of(user.id).await;
    assert_eq!(gw.get("/auth/me", &fresh).await.0, 200);
    let admin = gw.token(Role::Admin).await;
    let (status, _) = gw
        .patch(
            &format!("/users/{}", user.id),
            &admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        gw.get("/auth/me", &fresh).await.0,
        401,
        "disabling ends sessions"
    );
}

#[tokio::test]
async fn cookie_changes_need_the_csrf_header_and_a_friendly_origin() {
    let gw = Gateway::start().await;
    let Credentials::Cookie(cookie) = gw.session(Role::Admin).await else {
        unreachable!()
    };
    let body = json!({"name": "ci", "role": "viewer"});
    let post = || {
        gw.http
            .post(gw.url("/tokens"))
            .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
            .json(&body)
    };
    let resp = post().send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(code(&resp.json().await.unwrap()), "csrf");

    let resp = post()
        .header("x-requested-with", "constintel")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "a foreign origin is refused");

    let own = gw.base.clone();
    let resp = post()
        .header("x-requested-with", "constintel")
        .header("origin", own)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Reads need no header, and bearer tokens are not subject to it.
    let reader = gw
        .http
        .get(gw.url("/tokens"))
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 200);
    let token = gw.token(Role::Admin).await;
    let (status, _) = gw.post("/tokens", &token, body.clone()).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn api_tokens_are_shown_once_stored_hashed_and_revocable() {
    let gw = Gateway::start().await;
    let admin = gw.token(Role::Admin).await;
    let (status, created) = gw
        .post(
            "/tokens",
            &admin,
            json!({"name": "warehouse sync", "role": "analyst"}),
        )
        .await;
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ci_tok_"));
    assert!(token.starts_with(created["info"]["prefix"].as_str().unwrap()));
    let id = created["info"]["id"].as_str().unwrap().to_owned();

    let machine = Credentials::Bearer(token.clone());
    let (status, me) = gw.get("/auth/me", &machine).await;
    assert_eq!(status, 200);
    assert_eq!(me["kind"], "token");
    assert_eq!(me["role"], "analyst");
    assert_eq!(me["name"], "warehouse sync");

    let (_, list) = gw.get("/tokens", &admin).await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(listed.get("token").is_none(), "lists never show the token");
    assert!(!list.to_string().contains(&token));
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE prefix = $1 AND token_sha256 = $2",
    )
    .bind(listed["prefix"].as_str().unwrap())
    .bind(storage::users::token_sha256(&token))
    .fetch_one(gw.db())
    .await
    .unwrap();
    assert_eq!(stored, 1);

    let resp = gw
        .request(Method::DELETE, &format!("/tokens/{id}"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, body) = gw.get("/auth/me", &machine).await;
    assert_eq!(status, 401);
    assert_eq!(code(&body), "invalid_token");

    let (status, body) = gw
        .get("/auth/me", &Credentials::Bearer("ci_tok_nonsense".into()))
        .await;
    assert_eq!(status, 401);
    assert_eq!(code(&body), "invalid_token");
    let resp = gw
        .http
        .get(gw.url("/auth/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = gw
        .request(
            Method::DELETE,
            &format!("/tokens/{}", uuid::Uuid::now_v7()),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (status, body) = gw
        .post("/tokens", &admin, json!({"name": " ", "role": "viewer"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = gw
        .post("/tokens", &admin, json!({"name": "x", "role": "root"}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn login_attempts_are_limited_per_address() {
    let gw = Gateway::start_with(vec![("LOGIN_ATTEMPTS_PER_MINUTE", "3".into())]).await;
    let user = gw.user(Role::Viewer).await;
    let attempt = || {
        gw.post(
            "/auth/login",
            &Credentials::Anonymous,
            json!({"email": user.email, "password": "not the password"}),
        )
    };
    for _ in 0..3 {
        assert_eq!(attempt().await.0, 401);
    }
    let resp = gw
        .http
        .post(gw.url("/auth/login"))
        .json(&json!({"email": user.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "even the right password waits");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(code(&resp.json().await.unwrap()), "rate_limited");
}

#[tokio::test]
async fn the_first_admin_comes_from_settings_once() {
    let gw = Gateway::start_with(vec![
        ("ADMIN_EMAIL", "Boss@Example.com".into()),
        ("ADMIN_PASSWORD", "a long enough password".into()),
    ])
    .await;
    let (status, body) = gw
        .post(
            "/auth/login",
            &Credentials::Anonymous,
            json!({"email": "boss@example.com", "password": "a long enough password"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "admin");
    // A second start with users present creates nobody.
    let again = storage::users::ensure_first_admin(gw.db(), "other@example.com", PASSWORD)
        .await
        .unwrap();
    assert!(again.is_none());
}

#[tokio::test]
async fn admins_manage_users_but_not_the_last_admin() {
    let gw = Gateway::start().await;
    let me = gw.user(Role::Admin).await;
    let admin = gw.session_of(me.id).await;
    let (status, created) = gw
        .post(
            "/users",
            &admin,
            json!({"email": "New.Analyst@Example.com", "password": PASSWORD, "role": "analyst"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(created["email"], "new.analyst@example.com");
    let (status, body) = gw
        .post(
            "/users",
            &admin,
            json!({"email": "new.analyst@example.com", "password": PASSWORD, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(code(&body), "conflict");
    for bad in [
        json!({"email": "x@example.com", "password": "short", "role": "viewer"}),
        json!({"email": "nope", "password": PASSWORD, "role": "viewer"}),
        json!({"email": "y@example.com", "password": PASSWORD, "role": "owner"}),
    ] {
        let (status, body) = gw.post("/users", &admin, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let id = created["id"].as_str().unwrap();
    let (status, updated) = gw
        .patch(
            &format!("/users/{id}"),
            &admin,
            json!({"role": "viewer", "password": "another long password"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["role"], "viewer");
    let (status, body) = gw
        .post(
            "/auth/login",
            &Credentials::Anonymous,
            json!({"email": "new.analyst@example.com", "password": "another long password"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = gw
        .patch(
            &format!("/users/{}", me.id),
            &admin,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409, "the last admin stays: {body}");
    let (status, _) = gw
        .patch(
            &format!("/users/{}", uuid::Uuid::now_v7()),
            &admin,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = gw.patch("/users/not-a-uuid", &admin, json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_path");

    // Pages: keyset over every user.
    for _ in 0..3 {
        gw.user(Role::Viewer).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/users?limit=2&cursor={c}"),
            None => "/users?limit=2".to_owned(),
        };
        let (status, page) = gw.get(&path, &admin).await;
        assert_eq!(status, 200);
        for u in page["items"].as_array().unwrap() {
            seen.push(u["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(gw.db())
        .await
        .unwrap();
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len() as i64, total);
    assert_eq!(seen.len() as i64, total, "no user twice");
    let (status, body) = gw.get("/users?cursor=garbage", &admin).await;
    assert_eq!(status, 400);
    assert_eq!(code(&body), "bad_cursor");
    let (status, _) = gw.get("/users?limit=0", &admin).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn verified_credentials_are_remembered_but_revocations_here_apply_at_once() {
    let gw = Gateway::start_with(vec![("AUTH_CACHE_MS", "600000".into())]).await;
    let admin = gw.token(Role::Admin).await;
    let (_, created) = gw
        .post("/tokens", &admin, json!({"name": "m", "role": "viewer"}))
        .await;
    let machine = Credentials::Bearer(created["token"].as_str().unwrap().to_owned());
    assert_eq!(gw.get("/auth/me", &machine).await.0, 200);
    // Revoked behind the gateway's back: the remembered verification still holds...
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE name = 'm'")
        .execute(gw.db())
        .await
        .unwrap();
    assert_eq!(gw.get("/auth/me", &machine).await.0, 200);
    // ...but a revocation through the gateway applies to the very next request.
    let id = created["info"]["id"].as_str().unwrap();
    let resp = gw
        .request(Method::DELETE, &format!("/tokens/{id}"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(gw.get("/auth/me", &machine).await.0, 401);
}
