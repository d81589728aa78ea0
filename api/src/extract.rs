//! Extractors: JSON/path/query with our error format, and the authenticated user.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use convene_auth::TokenError;

use crate::error::ApiError;
use crate::state::AppState;

/// `Json` whose rejections render as [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Path` whose rejections render as [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// `Query` whose rejections render as [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// The caller, authenticated by a bearer access token whose session is still live.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: String,
    pub session_id: String,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer(parts).ok_or(ApiError::Unauthorized("missing_token"))?;
        let claims = state
            .tokens
            .verify(token, chrono::Utc::now().timestamp())
            .map_err(|e| match e {
                TokenError::Expired => ApiError::Unauthorized("token_expired"),
                TokenError::Invalid => ApiError::Unauthorized("invalid_token"),
            })?;
        // Logout and refresh-token reuse revoke the session; its access tokens die with it.
        let live: Option<(String,)> = sqlx::query_as(
            "SELECT s.user_id FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL",
        )
        .bind(&claims.sid)
        .bind(&claims.sub)
        .fetch_optional(state.db.pool())
        .await?;
        match live {
            Some(_) => Ok(Self {
                user_id: claims.sub,
                session_id: claims.sid,
            }),
            None => Err(ApiError::Unauthorized("session_revoked")),
        }
    }
}

impl<S> OptionalFromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if bearer(parts).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

impl AuthUser {
    /// Authenticates a WebSocket upgrade. Browsers cannot set headers on WebSockets, so the
    /// access token may also come as `?access_token=`; spans carry the route only, so the query
    /// string never reaches the logs.
    pub(crate) async fn for_websocket(
        state: &AppState,
        request: axum::extract::Request,
        access_token: Option<&str>,
    ) -> Result<Self, ApiError> {
        let (mut parts, _) = request.into_parts();
        if let Some(token) = access_token {
            let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::Unauthorized("invalid_token"))?;
            parts.headers.insert(AUTHORIZATION, value);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await
    }
}

/// The peer address of the connection; used for rate limiting only, never logged.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        ))
    }
}
