//! `/api/v1/auth`: registration, login, refresh-token rotation, logout and the profile.

mod limiter;

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use convene_auth::{OpaqueToken, hash_password, hash_token, verify_password};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use limiter::LoginLimiter;

use crate::audit::{self, Event, Origin};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AuthUser, ClientIp};
use crate::state::AppState;
use crate::time::from_ms;
use crate::validate::{self, Email, Username};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(change_password))
        .routes(routes!(get_me, update_me))
}

/// A user's own profile.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct User {
    id: String,
    email: String,
    username: String,
    display_name: String,
    bio: Option<String>,
    location: Option<String>,
    timezone: Option<String>,
    avatar_url: Option<String>,
    company_name: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct UserRow {
    id: String,
    email: String,
    username: String,
    password_hash: String,
    display_name: String,
    bio: Option<String>,
    location: Option<String>,
    timezone: Option<String>,
    avatar_url: Option<String>,
    company_name: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            email: r.email,
            username: r.username,
            display_name: r.display_name,
            bio: r.bio,
            location: r.location,
            timezone: r.timezone,
            avatar_url: r.avatar_url,
            company_name: r.company_name,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        }
    }
}

const USER_COLUMNS: &str = "id, email, username, password_hash, display_name, bio, location, timezone, \
                            avatar_url, company_name, created_at, updated_at";

async fn load_user(state: &AppState, id: &str) -> ApiResult<UserRow> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(state.db.pool())
        .await?
        .ok_or(ApiError::NotFound("user"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    email: String,
    username: String,
    password: String,
    display_name: String,
}

/// Tokens for a signed-in session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuthResponse {
    /// Short-lived JWT for `Authorization: Bearer`.
    access_token: String,
    token_type: &'static str,
    /// Seconds until `access_token` expires.
    expires_in: i64,
    /// Single-use token for `POST /auth/token/refresh`.
    refresh_token: String,
    user: User,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Starts a new session (refresh-token family) for `user` and issues its first tokens.
async fn start_session(state: &AppState, user: UserRow) -> ApiResult<(String, AuthResponse)> {
    let session_id = new_id();
    sqlx::query("INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)")
        .bind(&session_id)
        .bind(&user.id)
        .bind(now_ms())
        .execute(state.db.pool())
        .await?;
    let tokens = issue_tokens(state, &session_id, user).await?;
    Ok((session_id, tokens))
}

async fn issue_tokens(state: &AppState, session_id: &str, user: UserRow) -> ApiResult<AuthResponse> {
    let now = now_ms();
    let refresh = OpaqueToken::generate();
    let ttl_ms = i64::try_from(state.config.refresh_token_ttl.as_millis()).unwrap_or(i64::MAX);
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
        .bind(refresh.hash())
        .bind(session_id)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .execute(state.db.pool())
        .await?;
    let access_token = state
        .tokens
        .issue(&user.id, session_id, now / 1000)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(AuthResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.tokens.ttl_secs(),
        refresh_token: refresh.into_string(),
        user: user.into(),
    })
}

/// Create an account and sign in.
#[utoipa::path(post, path = "/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = AuthResponse), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    AppJson(req): AppJson<RegisterRequest>,
) -> ApiResult<(StatusCode, AppJson<AuthResponse>)> {
    let email = Email::parse(&req.email)?;
    let username = Username::parse(&req.username)?;
    let password = validate::password(&req.password)?.to_owned();
    let display_name = validate::name("display_name", &req.display_name, 100)?;
    let taken: Option<(String, String)> =
        sqlx::query_as("SELECT email, username FROM users WHERE email = $1 OR username = $2")
            .bind(email.as_str())
            .bind(username.as_str())
            .fetch_optional(state.db.pool())
            .await?;
    if let Some((e, _)) = taken {
        let field = if e == email.as_str() { "email" } else { "username" };
        return Err(ApiError::conflict(
            if field == "email" {
                "email_taken"
            } else {
                "username_taken"
            },
            format!("that {field} is already registered"),
        ));
    }
    let password_hash = blocking(move || hash_password(&password))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = now_ms();
    let user = UserRow {
        id: new_id(),
        email: email.as_str().to_owned(),
        username: username.as_str().to_owned(),
        password_hash,
        display_name,
        bio: None,
        location: None,
        timezone: None,
        avatar_url: None,
        company_name: None,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO users (id, email, username, password_hash, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.username)
    .bind(&user.password_hash)
    .bind(&user.display_name)
    .bind(now)
    .bind(now)
    .execute(state.db.pool())
    .await
    .map_err(|e| match ApiError::from(e) {
        // Lost a race with a concurrent registration of the same name.
        ApiError::Conflict { .. } => ApiError::conflict("already_registered", "email or username already registered"),
        other => other,
    })?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((StatusCode::CREATED, AppJson(start_session(&state, user).await?.1)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// E-mail address or username.
    login: String,
    password: String,
}

/// A hash to verify against when the account does not exist, so that response time does
/// not reveal which logins are registered.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("not the password").unwrap_or_default())
}

/// Sign in with e-mail or username and password.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = convene_proto::ErrorBody),
              (status = 429, body = convene_proto::ErrorBody, description = "too many failures; see Retry-After")))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    origin: Origin,
    AppJson(req): AppJson<LoginRequest>,
) -> ApiResult<AppJson<AuthResponse>> {
    let login = req.login.trim().to_lowercase();
    if login.is_empty() || login.len() > 254 || req.password.len() > 1024 {
        return Err(ApiError::Unauthorized("invalid_credentials"));
    }
    state
        .login_limiter
        .check(&login, ip, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let user = sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1 OR username = $1"
    ))
    .bind(&login)
    .fetch_optional(state.db.pool())
    .await?;
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
    let password = req.password;
    let matches = blocking(move || verify_password(&password, &hash).unwrap_or(false)).await?;
    match user {
        Some(user) if matches => {
            state.login_limiter.record_success(&login);
            let user_id = user.id.clone();
            let (session_id, tokens) = start_session(&state, user).await?;
            let event = Event::new("auth.login", Some(&user_id), "session", &session_id);
            audit::record(state.db.pool(), &origin, event).await?;
            Ok(AppJson(tokens))
        }
        user => {
            state.login_limiter.record_failure(&login, ip, Instant::now());
            // The login name itself is not kept: it may be an e-mail address.
            let event = Event::account("auth.login_failed", user.as_ref().map(|u| u.id.as_str()));
            audit::record(state.db.pool(), &origin, event).await?;
            Err(ApiError::Unauthorized("invalid_credentials"))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

#[derive(FromRow)]
struct RefreshRow {
    session_id: String,
    user_id: String,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

async fn revoke_session(state: &AppState, session_id: &str) -> ApiResult<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(session_id)
        .execute(state.db.pool())
        .await?;
    Ok(())
}

/// Revokes the session (refresh-token family) of a reused refresh token, on the record.
async fn revoke_reused(state: &AppState, origin: &Origin, row: &RefreshRow) -> ApiResult<()> {
    revoke_session(state, &row.session_id).await?;
    let event = Event::new("auth.session_revoked", Some(&row.user_id), "session", &row.session_id)
        .metadata(serde_json::json!({ "reason": "refresh_token_reused" }));
    audit::record(state.db.pool(), origin, event).await
}

/// Exchange a refresh token for new tokens. Each refresh token works once: presenting a used
/// one is taken as theft and revokes the whole session.
#[utoipa::path(post, path = "/token/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = convene_proto::ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    origin: Origin,
    AppJson(req): AppJson<RefreshRequest>,
) -> ApiResult<AppJson<AuthResponse>> {
    let token_hash = hash_token(&req.refresh_token);
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT r.session_id, s.user_id, r.expires_at, r.used_at, s.revoked_at \
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.token_hash = $1",
    )
    .bind(&token_hash)
    .fetch_optional(state.db.pool())
    .await?;
    let row = row.ok_or(ApiError::Unauthorized("invalid_refresh_token"))?;
    if row.revoked_at.is_some() {
        return Err(ApiError::Unauthorized("session_revoked"));
    }
    let now = now_ms();
    if row.used_at.is_some() {
        tracing::warn!(session_id = %row.session_id, "refresh token reused; revoking session");
        revoke_reused(&state, &origin, &row).await?;
        return Err(ApiError::Unauthorized("refresh_token_reused"));
    }
    if row.expires_at <= now {
        return Err(ApiError::Unauthorized("refresh_token_expired"));
    }
    // Claim the token atomically: of two concurrent refreshes only one wins, and the loser
    // is treated as reuse.
    let claimed = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
        .bind(now)
        .bind(&token_hash)
        .execute(state.db.pool())
        .await?;
    if claimed.rows_affected() != 1 {
        revoke_reused(&state, &origin, &row).await?;
        return Err(ApiError::Unauthorized("refresh_token_reused"));
    }
    let user = load_user(&state, &row.user_id).await?;
    Ok(AppJson(issue_tokens(&state, &row.session_id, user).await?))
}

/// End the caller's session: its refresh token and access tokens stop working at once.
#[utoipa::path(post, path = "/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = convene_proto::ErrorBody)))]
async fn logout(State(state): State<AppState>, auth: AuthUser, origin: Origin) -> ApiResult<StatusCode> {
    revoke_session(&state, &auth.session_id).await?;
    let event = Event::new("auth.logout", Some(&auth.user_id), "session", &auth.session_id);
    audit::record(state.db.pool(), &origin, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Change the caller's password. Every other session of the account is signed out; the
/// caller's stays.
#[utoipa::path(post, path = "/password", tag = "auth", security(("bearer" = [])), request_body = ChangePassword,
    responses((status = 204), (status = 401, body = convene_proto::ErrorBody),
              (status = 403, body = convene_proto::ErrorBody, description = "the current password does not match"),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppJson(req): AppJson<ChangePassword>,
) -> ApiResult<StatusCode> {
    let new_password = validate::password(&req.new_password)
        .map_err(|_| ApiError::field("new_password", "must be 8-128 characters"))?
        .to_owned();
    let user = load_user(&state, &auth.user_id).await?;
    let (current, hash) = (req.current_password, user.password_hash);
    let matches = current.len() <= 1024 && blocking(move || verify_password(&current, &hash).unwrap_or(false)).await?;
    if !matches {
        return Err(ApiError::Forbidden("the current password does not match"));
    }
    let new_hash = blocking(move || hash_password(&new_password))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(&new_hash)
        .bind(now)
        .bind(&auth.user_id)
        .execute(&mut *tx)
        .await?;
    let others =
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(&auth.user_id)
            .bind(&auth.session_id)
            .execute(&mut *tx)
            .await?;
    let event = Event::new("auth.password_changed", Some(&auth.user_id), "user", &auth.user_id)
        .metadata(serde_json::json!({ "sessions_revoked": others.rows_affected() }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's profile.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = convene_proto::ErrorBody)))]
async fn get_me(State(state): State<AppState>, auth: AuthUser) -> ApiResult<AppJson<User>> {
    Ok(AppJson(load_user(&state, &auth.user_id).await?.into()))
}

/// Profile changes: absent fields stay, `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateMe {
    display_name: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    bio: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    location: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    avatar_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    company_name: Option<Option<String>>,
}

/// Update the caller's profile.
#[utoipa::path(patch, path = "/me", tag = "auth", security(("bearer" = [])), request_body = UpdateMe,
    responses((status = 200, body = User), (status = 401, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn update_me(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<UpdateMe>,
) -> ApiResult<AppJson<User>> {
    let mut user = load_user(&state, &auth.user_id).await?;
    if let Some(name) = &req.display_name {
        user.display_name = validate::name("display_name", name, 100)?;
    }
    if let Some(v) = &req.bio {
        user.bio = validate::text("bio", v.as_deref(), 2000)?;
    }
    if let Some(v) = &req.location {
        user.location = validate::text("location", v.as_deref(), 200)?;
    }
    if let Some(v) = &req.timezone {
        user.timezone = validate::timezone(v.as_deref())?;
    }
    if let Some(v) = &req.avatar_url {
        user.avatar_url = validate::url("avatar_url", v.as_deref())?;
    }
    if let Some(v) = &req.company_name {
        user.company_name = validate::text("company_name", v.as_deref(), 200)?;
    }
    user.updated_at = now_ms();
    sqlx::query(
        "UPDATE users SET display_name = $1, bio = $2, location = $3, timezone = $4, avatar_url = $5, \
         company_name = $6, updated_at = $7 WHERE id = $8",
    )
    .bind(&user.display_name)
    .bind(&user.bio)
    .bind(&user.location)
    .bind(&user.timezone)
    .bind(&user.avatar_url)
    .bind(&user.company_name)
    .bind(user.updated_at)
    .bind(&user.id)
    .execute(state.db.pool())
    .await?;
    Ok(AppJson(user.into()))
}
