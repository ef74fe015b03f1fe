//! Users and API tokens (admins only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::api::{
    ApiErrorBody, ApiTokenView, CreateTokenRequest, CreateUserRequest, CreatedToken, Page,
    PageQuery, Role, UpdateUserRequest, UserView,
};
use service_kit::ApiError;
use storage::users::{ApiToken, User};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery, decode_cursor, map_page, page_limit, paginate};
use crate::handlers::{conflict, storage_error};
use crate::state::AppState;

/// The API view of a user row.
pub fn user_view(u: &User) -> UserView {
    UserView {
        id: u.id,
        email: u.email.clone(),
        role: u.role(),
        disabled: u.disabled,
        created_at: u.created_at,
        last_login_at: u.last_login_at,
    }
}

fn token_view(t: &ApiToken) -> ApiTokenView {
    ApiTokenView {
        id: t.id,
        name: t.name.clone(),
        prefix: t.prefix.clone(),
        role: t.role(),
        created_by: t.created_by,
        created_at: t.created_at,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
    }
}

/// Lists users, oldest first.
#[utoipa::path(
    get,
    path = "/users",
    tag = "auth",
    summary = "List users",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = Page<UserView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_users(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("users", q.cursor.as_deref())?;
    let rows = storage::users::list_users(&app.db, after, limit + 1)
        .await
        .map_err(storage_error)?;
    let page = paginate(rows, limit, "users", |u| (u.created_at, u.id));
    Ok(Json(map_page(page, |u| user_view(&u))))
}

/// Creates a user.
#[utoipa::path(
    post,
    path = "/users",
    tag = "auth",
    summary = "Create a user",
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "Malformed e-mail, short password or bad role (`bad_request`)", body = ApiErrorBody),
        (status = 409, description = "The e-mail is taken (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn create_user(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let user = storage::users::create_user(&app.db, &body.email, &body.password, body.role)
        .await
        .map_err(storage_error)?;
    tracing::info!(user = %user.email, role = %user.role(), "user created");
    Ok((StatusCode::CREATED, Json(user_view(&user))))
}

/// Changes a user's role, password or disabled flag.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "auth",
    summary = "Update a user",
    description = "Disabling a user or changing the password ends the user's sessions. \
                   The last enabled admin cannot be demoted or disabled.",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 400, description = "Short password or bad input (`bad_request`, `bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such user (`not_found`)", body = ApiErrorBody),
        (status = 409, description = "Would leave no enabled admin (`conflict`)", body = ApiErrorBody),
    )
)]
pub async fn update_user(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserView>, ApiError> {
    let current = storage::users::get_user(&app.db, id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    let loses_admin = current.role() == Role::Admin
        && !current.disabled
        && (body.role.is_some_and(|r| r != Role::Admin) || body.disabled == Some(true));
    if loses_admin {
        let other_admins: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled AND id <> $1",
        )
        .bind(id)
        .fetch_one(&app.db)
        .await?;
        if other_admins == 0 {
            return Err(conflict(
                "this is the last enabled admin; make another admin first",
            ));
        }
    }
    let hash = match body.password {
        Some(password) => {
            storage::users::validate_password(&password).map_err(storage_error)?;
            let hash =
                tokio::task::spawn_blocking(move || storage::users::hash_password(&password))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(storage_error)?;
            Some(hash)
        }
        None => None,
    };
    let user = storage::users::update_user(&app.db, id, body.role, body.disabled, hash.as_deref())
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    // A new role, a disabled account or a new password must apply to the next request.
    app.auth_cache.clear();
    Ok(Json(user_view(&user)))
}

/// Lists API tokens, oldest first (never the tokens themselves).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "auth",
    summary = "List API tokens",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tokens", body = Page<ApiTokenView>),
        (status = 400, description = "Bad cursor or limit (`bad_filter`, `bad_cursor`)", body = ApiErrorBody),
    )
)]
pub async fn list_tokens(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ApiTokenView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = decode_cursor("tokens", q.cursor.as_deref())?;
    let rows = storage::users::list_tokens(&app.db, after, limit + 1)
        .await
        .map_err(storage_error)?;
    let page = paginate(rows, limit, "tokens", |t| (t.created_at, t.id));
    Ok(Json(map_page(page, |t| token_view(&t))))
}

/// Creates an API token; the answer is the only time the token is shown.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "auth",
    summary = "Create an API token",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "Created; store the token now", body = CreatedToken),
        (status = 400, description = "Empty or long name, bad role (`bad_request`)", body = ApiErrorBody),
    )
)]
pub async fn create_token(
    State(app): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (token, row) =
        storage::users::create_token(&app.db, &body.name, body.role, caller.user_id())
            .await
            .map_err(storage_error)?;
    tracing::info!(token = %row.name, role = %row.role(), by = %caller.actor(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: token_view(&row),
        }),
    ))
}

/// Revokes an API token.
#[utoipa::path(
    delete,
    path = "/tokens/{id}",
    tag = "auth",
    summary = "Revoke an API token",
    params(("id" = Uuid, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 400, description = "Malformed id (`bad_path`)", body = ApiErrorBody),
        (status = 404, description = "No such token (`not_found`)", body = ApiErrorBody),
    )
)]
pub async fn revoke_token(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    storage::users::revoke_token(&app.db, id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| ApiError::not_found(format!("no API token {id}")))?;
    app.auth_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}
