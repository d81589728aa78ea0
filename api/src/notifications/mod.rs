//! `/api/v1/notifications`: a user's notifications (mentions, direct messages, channel
//! activity), newest first, with read state, pushed live as `notification.created` and
//! `notification.read` events. Other features create them with [`insert`] inside their own
//! transaction and announce them with [`publish_created`] after it commits. Mentions and DMs
//! of offline users are also mailed, batched into digests ([`spawn_digests`]).

mod email;

pub use email::{Mailer, MailerError, spawn_digests};

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, FromRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::Page;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_all_read))
        .routes(routes!(update_notification))
}

/// How a client should present a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Info,
    Warning,
    Error,
    Success,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Success => "success",
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub(crate) struct Notification {
    id: String,
    /// The recipient.
    user_id: String,
    team_id: Option<String>,
    /// `info`, `warning`, `error` or `success`.
    #[schema(value_type = Kind)]
    kind: String,
    /// Why it exists: `mention`, `dm` or `message`.
    reason: String,
    title: String,
    message: String,
    channel_id: Option<String>,
    message_id: Option<String>,
    #[sqlx(skip)]
    is_read: bool,
    #[schema(value_type = Option<DateTime<Utc>>)]
    #[serde(serialize_with = "serialize_opt_ms")]
    read_at: Option<i64>,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    created_at: i64,
}

fn serialize_opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&ms.map(crate::time::from_ms), s)
}

impl Notification {
    fn with_read_flag(mut self) -> Self {
        self.is_read = self.read_at.is_some();
        self
    }
}

const SELECT: &str = "SELECT id, user_id, team_id, kind, reason, title, message, channel_id, message_id, \
                      read_at, created_at FROM notifications";

/// A notification to create.
pub(crate) struct NewNotification<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) team_id: Option<&'a str>,
    pub(crate) kind: Kind,
    pub(crate) reason: &'a str,
    pub(crate) title: String,
    pub(crate) message: String,
    pub(crate) channel_id: Option<&'a str>,
    pub(crate) message_id: Option<&'a str>,
}

/// Stores a notification on `conn` (the caller's transaction); publish it after commit.
pub(crate) async fn insert(conn: &mut AnyConnection, n: NewNotification<'_>) -> ApiResult<Notification> {
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO notifications (id, user_id, team_id, kind, reason, title, message, channel_id, message_id, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(n.user_id)
    .bind(n.team_id)
    .bind(n.kind.as_str())
    .bind(n.reason)
    .bind(&n.title)
    .bind(&n.message)
    .bind(n.channel_id)
    .bind(n.message_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(Notification {
        id,
        user_id: n.user_id.to_owned(),
        team_id: n.team_id.map(str::to_owned),
        kind: n.kind.as_str().to_owned(),
        reason: n.reason.to_owned(),
        title: n.title,
        message: n.message,
        channel_id: n.channel_id.map(str::to_owned),
        message_id: n.message_id.map(str::to_owned),
        is_read: false,
        read_at: None,
        created_at: now,
    })
}

/// Pushes `notification.created` to the recipient's event stream.
pub(crate) fn publish_created(state: &AppState, n: &Notification) {
    state
        .events
        .publish([n.user_id.as_str()], "notification.created", &json!(n));
}

/// Marks `user`'s unread notifications about `channel_id` up to `message_id` read, as reading
/// the channel does, and tells the user's other clients.
pub(crate) async fn mark_channel_read(
    state: &AppState,
    user_id: &str,
    channel_id: &str,
    message_id: &str,
) -> ApiResult<()> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "UPDATE notifications SET read_at = $1 WHERE user_id = $2 AND channel_id = $3 AND message_id <= $4 \
         AND read_at IS NULL RETURNING id",
    )
    .bind(now_ms())
    .bind(user_id)
    .bind(channel_id)
    .bind(message_id)
    .fetch_all(state.db.pool())
    .await?;
    publish_read(state, user_id, ids);
    Ok(())
}

fn publish_read(state: &AppState, user_id: &str, ids: Vec<(String,)>) {
    if !ids.is_empty() {
        let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
        state
            .events
            .publish([user_id], "notification.read", &json!({ "ids": ids }));
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only unread notifications.
    unread: Option<bool>,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page (pages go from newest to oldest).
    after: Option<String>,
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "", tag = "notifications", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Page<Notification>), (status = 400, body = convene_proto::ErrorBody)))]
async fn list_notifications(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<AppJson<Page<Notification>>> {
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let unread_only = if q.unread.unwrap_or(false) {
        " AND read_at IS NULL"
    } else {
        ""
    };
    let rows: Vec<Notification> = sqlx::query_as(&format!(
        "{SELECT} WHERE user_id = $1 AND ($2 = '' OR id < $2){unread_only} ORDER BY id DESC LIMIT $3"
    ))
    .bind(&auth.user_id)
    .bind(q.after.as_deref().unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(state.db.pool())
    .await?;
    let rows = rows.into_iter().map(Notification::with_read_flag).collect();
    Ok(AppJson(Page::from_rows(rows, limit, |n| n.id.clone())))
}

async fn load(db: &Db, id: &str, user_id: &str) -> ApiResult<Notification> {
    sqlx::query_as::<_, Notification>(&format!("{SELECT} WHERE id = $1 AND user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?
        .map(Notification::with_read_flag)
        .ok_or(ApiError::NotFound("notification"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateNotification {
    /// `true` marks it read, `false` unread again.
    is_read: bool,
}

/// Mark one of the caller's notifications read (or unread).
#[utoipa::path(patch, path = "/{notification_id}", tag = "notifications", security(("bearer" = [])),
    request_body = UpdateNotification,
    responses((status = 200, body = Notification), (status = 404, body = convene_proto::ErrorBody)))]
async fn update_notification(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<UpdateNotification>,
) -> ApiResult<AppJson<Notification>> {
    let before = load(&state.db, &id, &auth.user_id).await?;
    if before.is_read != req.is_read {
        let read_at = req.is_read.then(now_ms);
        sqlx::query("UPDATE notifications SET read_at = $1 WHERE id = $2 AND user_id = $3")
            .bind(read_at)
            .bind(&id)
            .bind(&auth.user_id)
            .execute(state.db.pool())
            .await?;
        let kind = if req.is_read {
            "notification.read"
        } else {
            "notification.unread"
        };
        state
            .events
            .publish([auth.user_id.as_str()], kind, &json!({ "ids": [id] }));
    }
    Ok(AppJson(load(&state.db, &id, &auth.user_id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MarkedRead {
    /// How many notifications changed from unread to read.
    updated: usize,
}

/// Mark all the caller's notifications read.
#[utoipa::path(put, path = "/read", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = MarkedRead)))]
async fn mark_all_read(State(state): State<AppState>, auth: AuthUser) -> ApiResult<AppJson<MarkedRead>> {
    let ids: Vec<(String,)> =
        sqlx::query_as("UPDATE notifications SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL RETURNING id")
            .bind(now_ms())
            .bind(&auth.user_id)
            .fetch_all(state.db.pool())
            .await?;
    let updated = ids.len();
    publish_read(&state, &auth.user_id, ids);
    Ok(AppJson(MarkedRead { updated }))
}
