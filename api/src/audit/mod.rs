//! The security audit log: sign-ins (successful and failed), sign-outs, password changes,
//! refresh-token family revocations, role changes, member removals, invitations, ownership
//! transfers and deletions, each recorded as actor, action, target, team, metadata, IP, user
//! agent and time.
//!
//! Read by a team's owners and admins at `GET /api/v1/teams/{team_id}/audit-log` (members and
//! guests get 403, everyone else 404), and by each user for the events of their account that
//! belong to no team at `GET /api/v1/me/security-log`. Newest first, keyset pages, filters by
//! action and actor.
//!
//! Never recorded: passwords, tokens, e-mail addresses or other secrets. Deleting an account
//! sets its rows' actor to null and erases their IP and user agent (see `gdpr`).

use axum::extract::{FromRequestParts, State};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{new_id, now_ms};
use crate::error::ApiResult;
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser, ClientIp};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::teams;
use crate::time::from_ms;

/// Routes under `/api/v1/teams`.
pub(crate) fn team_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(team_audit_log))
}

/// Routes under `/api/v1/me`.
pub(crate) fn me_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(security_log))
}

/// Longest user agent kept; the rest is cut.
const MAX_USER_AGENT: usize = 256;

/// Where a request came from: the peer address and the `User-Agent` header.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    ip: Option<String>,
    user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Ok(Self {
            ip: ip.map(|ip| ip.to_string()),
            user_agent,
        })
    }
}

/// One security event to record.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    action: &'static str,
    target_type: &'static str,
    target_id: Option<String>,
    team_id: Option<String>,
    actor_id: Option<String>,
    metadata: Value,
}

impl Event {
    /// `actor` did `action` to the `target_type` `target_id`.
    pub(crate) fn new(action: &'static str, actor: Option<&str>, target_type: &'static str, target_id: &str) -> Self {
        Self {
            action,
            target_type,
            target_id: Some(target_id.to_owned()),
            team_id: None,
            actor_id: actor.map(str::to_owned),
            metadata: Value::Object(serde_json::Map::new()),
        }
    }

    /// A sign-in attempt on an account (`user`: null when no account has that login).
    pub(crate) fn account(action: &'static str, user: Option<&str>) -> Self {
        Self {
            target_id: user.map(str::to_owned),
            ..Self::new(action, user, "user", "")
        }
    }

    /// The team the event belongs to (shown in its audit log).
    pub(crate) fn team(mut self, team_id: &str) -> Self {
        self.team_id = Some(team_id.to_owned());
        self
    }

    /// Extra facts (never secrets or e-mail addresses).
    pub(crate) fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Appends `event` from `origin` on `conn` (the change's transaction where there is one).
pub(crate) async fn record<'c, E>(conn: E, origin: &Origin, event: Event) -> ApiResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO audit_log (id, team_id, actor_id, action, target_type, target_id, metadata, ip, user_agent, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id())
    .bind(event.team_id)
    .bind(event.actor_id)
    .bind(event.action)
    .bind(event.target_type)
    .bind(event.target_id)
    .bind(event.metadata.to_string())
    .bind(&origin.ip)
    .bind(&origin.user_agent)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets where `user_id`'s events came from (their IP and user agent), before the account
/// itself goes and the foreign key nulls the actor.
pub(crate) async fn anonymize<'c, E>(conn: E, user_id: &str) -> ApiResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("UPDATE audit_log SET ip = NULL, user_agent = NULL WHERE actor_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    id: String,
    /// Null for events of an account (sign-ins...).
    team_id: Option<String>,
    /// Who acted (null once the account is deleted, or for failed sign-ins of unknown accounts).
    actor_id: Option<String>,
    /// Such as `auth.login`, `auth.login_failed`, `member.role_changed`, `project.deleted`.
    action: String,
    /// `user`, `session`, `team`, `member`, `invite`, `project`, `task`, `room`, `file`, `channel`.
    target_type: String,
    target_id: Option<String>,
    #[schema(value_type = Object)]
    metadata: Value,
    ip: Option<String>,
    user_agent: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct AuditRow {
    id: String,
    team_id: Option<String>,
    actor_id: Option<String>,
    action: String,
    target_type: String,
    target_id: Option<String>,
    metadata: String,
    ip: Option<String>,
    user_agent: Option<String>,
    created_at: i64,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            team_id: r.team_id,
            actor_id: r.actor_id,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            metadata: serde_json::from_str(&r.metadata).unwrap_or(Value::Null),
            ip: r.ip,
            user_agent: r.user_agent,
            created_at: from_ms(r.created_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only this action (such as `member.removed`).
    action: Option<String>,
    /// Only events by this user.
    actor_id: Option<String>,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page (the oldest id seen).
    after: Option<String>,
}

/// Newest first, where `scope` (`team_id = $1` or `actor_id = $1 AND team_id IS NULL`) holds.
async fn entries(state: &AppState, scope: &str, value: &str, q: AuditQuery) -> ApiResult<Page<AuditEntry>> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    };
    let sql = format!(
        "SELECT id, team_id, actor_id, action, target_type, target_id, metadata, ip, user_agent, created_at \
         FROM audit_log WHERE {scope} AND ($2 = '' OR id < $2) AND ($3 = '' OR action = $3) \
         AND ($4 = '' OR actor_id = $4) ORDER BY id DESC LIMIT $5"
    );
    let rows: Vec<AuditRow> = sqlx::query_as(&sql)
        .bind(value)
        .bind(page.after())
        .bind(q.action.as_deref().unwrap_or(""))
        .bind(q.actor_id.as_deref().unwrap_or(""))
        .bind(page.limit() + 1)
        .fetch_all(state.db.pool())
        .await?;
    let items = rows.into_iter().map(AuditEntry::from).collect();
    Ok(Page::from_rows(items, page.limit(), |e: &AuditEntry| e.id.clone()))
}

/// The team's security events, newest first (owners and admins).
#[utoipa::path(get, path = "/{team_id}/audit-log", tag = "teams", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn team_audit_log(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(team_id): AppPath<String>,
    AppQuery(q): AppQuery<AuditQuery>,
) -> ApiResult<AppJson<Page<AuditEntry>>> {
    teams::require_manager(&state.db, &team_id, &auth.user_id).await?;
    Ok(AppJson(entries(&state, "team_id = $1", &team_id, q).await?))
}

/// The security events of the caller's account (sign-ins, sign-outs, password changes,
/// revoked sessions), newest first.
#[utoipa::path(get, path = "/security-log", tag = "auth", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>)))]
async fn security_log(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(mut q): AppQuery<AuditQuery>,
) -> ApiResult<AppJson<Page<AuditEntry>>> {
    // Only the caller's own events are in scope; an actor filter cannot widen it.
    q.actor_id = None;
    Ok(AppJson(
        entries(&state, "actor_id = $1 AND team_id IS NULL", &auth.user_id, q).await?,
    ))
}
