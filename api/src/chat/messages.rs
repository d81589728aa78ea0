//! Messages in a channel: keyset history, idempotent posting, edits, deletes, threads,
//! reactions, pins, read markers, typing. Mentions (`@username` of a channel member) are
//! stored per message, counted against read markers and turned into notifications.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::realtime::TYPING_TTL;
use super::{Access, CURRENT_MEMBERS, ChannelKind, Notify, access, member_ids, publish, publish_to_members};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::notifications::{self, NewNotification};
use crate::pagination::Page;
use crate::state::AppState;
use crate::time::from_ms;

/// Longest message body, in characters.
const MAX_BODY: usize = 16_000;
/// Mentions honoured per message.
const MAX_MENTIONS: usize = 50;
/// Characters of a message quoted in a notification.
const EXCERPT: usize = 200;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages, post_message))
        .routes(routes!(update_message, delete_message))
        .routes(routes!(add_reaction, remove_reaction))
        .routes(routes!(pin_message, unpin_message))
        .routes(routes!(list_pins))
        .routes(routes!(mark_read))
        .routes(routes!(typing))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Reaction {
    emoji: String,
    count: usize,
    user_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Message {
    id: String,
    channel_id: String,
    /// Absent when the author's account is gone.
    author_id: Option<String>,
    author_name: Option<String>,
    /// Stored as sent; clients render it as text (never as HTML).
    body: String,
    /// The thread's first message, for replies.
    reply_to: Option<String>,
    reply_count: i64,
    /// The author's idempotency key, when given.
    client_msg_id: Option<String>,
    pinned_by: Option<String>,
    pinned_at: Option<DateTime<Utc>>,
    /// Ids of the mentioned users.
    mentions: Vec<String>,
    reactions: Vec<Reaction>,
    /// Uploaded files attached to the message (`/api/v1/files/{id}/download`).
    attachments: Vec<Attachment>,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub(crate) struct Attachment {
    file_id: String,
    name: String,
    content_type: String,
    size: i64,
}

/// Most files one message may carry.
const MAX_ATTACHMENTS: usize = 10;

#[derive(FromRow)]
struct MessageRow {
    id: String,
    channel_id: String,
    author_id: Option<String>,
    author_name: Option<String>,
    body: String,
    reply_to: Option<String>,
    client_msg_id: Option<String>,
    pinned_by: Option<String>,
    pinned_at: Option<i64>,
    reply_count: i64,
    created_at: i64,
    edited_at: Option<i64>,
}

const MESSAGE_SELECT: &str = "SELECT m.id, m.channel_id, m.author_id, u.display_name AS author_name, m.body, \
     m.reply_to, m.client_msg_id, m.pinned_by, m.pinned_at, \
     (SELECT COUNT(*) FROM chat_messages r WHERE r.reply_to = m.id AND r.deleted_at IS NULL) AS reply_count, \
     m.created_at, m.edited_at FROM chat_messages m LEFT JOIN users u ON u.id = m.author_id";

/// `$1, $2, ...` for `n` values starting at `$first`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Completes rows with their reactions and mentions (two queries for the whole page).
async fn complete(db: &Db, rows: Vec<MessageRow>) -> ApiResult<Vec<Message>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids = placeholders(1, rows.len());
    let sql = format!(
        "SELECT message_id, emoji, user_id FROM chat_reactions WHERE message_id IN ({ids}) ORDER BY created_at, user_id"
    );
    let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
    for r in &rows {
        q = q.bind(&r.id);
    }
    let mut reactions: BTreeMap<String, Vec<Reaction>> = BTreeMap::new();
    for (message_id, emoji, user_id) in q.fetch_all(db.pool()).await? {
        let list = reactions.entry(message_id).or_default();
        match list.iter_mut().find(|r| r.emoji == emoji) {
            Some(r) => {
                r.count += 1;
                r.user_ids.push(user_id);
            }
            None => list.push(Reaction {
                emoji,
                count: 1,
                user_ids: vec![user_id],
            }),
        }
    }
    let sql = format!("SELECT message_id, user_id FROM chat_mentions WHERE message_id IN ({ids}) ORDER BY user_id");
    let mut q = sqlx::query_as::<_, (String, String)>(&sql);
    for r in &rows {
        q = q.bind(&r.id);
    }
    let mut mentions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (message_id, user_id) in q.fetch_all(db.pool()).await? {
        mentions.entry(message_id).or_default().push(user_id);
    }
    let sql = format!(
        "SELECT a.message_id, f.id, f.name, f.content_type, f.size FROM chat_attachments a \
         JOIN files f ON f.id = a.file_id WHERE a.message_id IN ({ids}) ORDER BY a.position"
    );
    let mut q = sqlx::query_as::<_, (String, String, String, String, i64)>(&sql);
    for r in &rows {
        q = q.bind(&r.id);
    }
    let mut attachments: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
    for (message_id, file_id, name, content_type, size) in q.fetch_all(db.pool()).await? {
        attachments.entry(message_id).or_default().push(Attachment {
            file_id,
            name,
            content_type,
            size,
        });
    }
    Ok(rows
        .into_iter()
        .map(|r| Message {
            reactions: reactions.remove(&r.id).unwrap_or_default(),
            mentions: mentions.remove(&r.id).unwrap_or_default(),
            attachments: attachments.remove(&r.id).unwrap_or_default(),
            id: r.id,
            channel_id: r.channel_id,
            author_id: r.author_id,
            author_name: r.author_name,
            body: r.body,
            reply_to: r.reply_to,
            reply_count: r.reply_count,
            client_msg_id: r.client_msg_id,
            pinned_by: r.pinned_by,
            pinned_at: r.pinned_at.map(from_ms),
            created_at: from_ms(r.created_at),
            edited_at: r.edited_at.map(from_ms),
        })
        .collect())
}

/// Posts `body` as a system message (no author) and publishes it like any other message.
pub(super) async fn post_system(state: &AppState, channel_id: &str, body: &str) -> ApiResult<()> {
    let id = new_id();
    sqlx::query("INSERT INTO chat_messages (id, channel_id, body, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(channel_id)
        .bind(body)
        .bind(now_ms())
        .execute(state.db.pool())
        .await?;
    let message = load_message(&state.db, channel_id, &id).await?;
    publish_to_members(
        state,
        channel_id,
        "message.created",
        &json!({ "channel_id": channel_id, "message": message }),
    )
    .await?;
    Ok(())
}

/// A live (not deleted) message of `channel_id`.
async fn load_message(db: &Db, channel_id: &str, message_id: &str) -> ApiResult<Message> {
    let row: MessageRow = sqlx::query_as(&format!(
        "{MESSAGE_SELECT} WHERE m.id = $1 AND m.channel_id = $2 AND m.deleted_at IS NULL"
    ))
    .bind(message_id)
    .bind(channel_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(ApiError::NotFound("message"))?;
    complete(db, vec![row])
        .await?
        .pop()
        .ok_or(ApiError::NotFound("message"))
}

/// A message body: not blank, at most `MAX_BODY` characters, no control characters but
/// line breaks and tabs. Stored exactly as sent.
fn body(raw: &str) -> ApiResult<String> {
    if raw.trim().is_empty() {
        return Err(ApiError::field("body", "must not be empty"));
    }
    if raw.chars().count() > MAX_BODY {
        return Err(ApiError::field(
            "body",
            format!("must be at most {MAX_BODY} characters"),
        ));
    }
    if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::field("body", "must not contain control characters"));
    }
    Ok(raw.to_owned())
}

/// The distinct lower-cased usernames written as `@name` in `body`.
fn mentioned_usernames(body: &str) -> Vec<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let mut found: Vec<String> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in body.char_indices() {
        if c == '@' && !prev.is_some_and(|p| p.is_alphanumeric() || matches!(p, '_' | '.' | '-' | '@')) {
            let rest = &body[i + 1..];
            let end = rest.find(|ch: char| !is_name_char(ch)).unwrap_or(rest.len());
            // A sentence may end right after a mention: "thanks @bob."
            let name = rest[..end].trim_end_matches(['.', '-']).to_ascii_lowercase();
            if (3..=32).contains(&name.len()) && !found.contains(&name) {
                found.push(name);
                if found.len() == MAX_MENTIONS {
                    break;
                }
            }
        }
        prev = Some(c);
    }
    found
}

/// The channel members among `usernames`, except `author`.
async fn resolve_mentions(
    conn: &mut sqlx::AnyConnection,
    channel_id: &str,
    author: &str,
    usernames: &[String],
) -> ApiResult<Vec<String>> {
    if usernames.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT u.id FROM users u WHERE u.id <> $2 AND u.username IN ({}) \
         AND u.id IN (SELECT m.user_id {CURRENT_MEMBERS}) ORDER BY u.id",
        placeholders(3, usernames.len())
    );
    let mut q = sqlx::query_as::<_, (String,)>(&sql).bind(channel_id).bind(author);
    for name in usernames {
        q = q.bind(name);
    }
    Ok(q.fetch_all(conn).await?.into_iter().map(|(id,)| id).collect())
}

fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(EXCERPT).collect();
    if body.chars().count() > EXCERPT {
        s.push('…');
    }
    s
}

/// Creates the notifications a message causes, on the message's transaction: mentions notify
/// members unless muted or set to `none`; other messages notify members set to `all` (the
/// default in DMs).
async fn notify_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    access: &Access,
    message_id: &str,
    author: &str,
    body: &str,
    mentioned: &[String],
    only_mentions: bool,
) -> ApiResult<Vec<notifications::Notification>> {
    let members: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT m.user_id, m.notify, m.muted {CURRENT_MEMBERS} AND m.user_id <> $2"
    ))
    .bind(&access.channel_id)
    .bind(author)
    .fetch_all(&mut **tx)
    .await?;
    let (author_name,): (String,) = sqlx::query_as("SELECT display_name FROM users WHERE id = $1")
        .bind(author)
        .fetch_one(&mut **tx)
        .await?;
    let mut created = Vec::new();
    for (user_id, notify, muted) in members {
        let notify = Notify::parse(&notify)?;
        if muted != 0 || notify == Notify::None {
            continue;
        }
        let mentioned = mentioned.contains(&user_id);
        let (reason, title) = if mentioned {
            ("mention", format!("{author_name} mentioned you in {}", access.label()))
        } else if only_mentions || notify != Notify::All {
            continue;
        } else if access.kind == ChannelKind::Dm {
            ("dm", format!("{author_name} sent you a direct message"))
        } else {
            ("message", format!("{author_name} posted in {}", access.label()))
        };
        created.push(
            notifications::insert(
                tx,
                NewNotification {
                    user_id: &user_id,
                    team_id: access.team_id.as_deref(),
                    kind: notifications::Kind::Info,
                    reason,
                    title,
                    message: excerpt(body),
                    channel_id: Some(&access.channel_id),
                    message_id: Some(message_id),
                },
            )
            .await?,
        );
    }
    Ok(created)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// Messages older than this id (the page's `next_cursor` continues backwards).
    before: Option<String>,
    /// Messages newer than this id (the page's `next_cursor` continues forwards).
    after: Option<String>,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// Only the replies to this thread's first message.
    thread: Option<String>,
}

/// A page of a channel's messages, oldest first within the page. Without a cursor: the
/// newest messages, and `next_cursor` pages backwards (`before`); with `after`, forwards.
#[utoipa::path(get, path = "/channels/{channel_id}/messages", tag = "chat", security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, body = Page<Message>), (status = 400, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn list_messages(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppQuery(q): AppQuery<HistoryQuery>,
) -> ApiResult<AppJson<Page<Message>>> {
    access(&state.db, &channel_id, &auth.user_id).await?;
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let mut sql = format!("{MESSAGE_SELECT} WHERE m.channel_id = $1 AND m.deleted_at IS NULL");
    let mut binds = vec![channel_id];
    if let Some(thread) = q.thread {
        binds.push(thread);
        sql.push_str(&format!(" AND m.reply_to = ${}", binds.len()));
    }
    let backwards = match (q.before, q.after) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give at most one of `before` and `after`".into())),
        (Some(before), None) => {
            binds.push(before);
            sql.push_str(&format!(" AND m.id < ${}", binds.len()));
            true
        }
        (None, Some(after)) => {
            binds.push(after);
            sql.push_str(&format!(" AND m.id > ${}", binds.len()));
            false
        }
        (None, None) => true,
    };
    let order = if backwards { "DESC" } else { "ASC" };
    sql.push_str(&format!(" ORDER BY m.id {order} LIMIT ${}", binds.len() + 1));
    let mut query = sqlx::query_as::<_, MessageRow>(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.bind(limit + 1).fetch_all(state.db.pool()).await?;
    let mut page = Page::from_rows(complete(&state.db, rows).await?, limit, |m| m.id.clone());
    if backwards {
        page.items.reverse();
    }
    Ok(AppJson(page))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostMessage {
    body: String,
    /// A message of this channel to reply to; replies to a reply join the same thread.
    reply_to: Option<String>,
    /// A key unique per author and channel (1-64 printable characters): repeating a POST
    /// with the same key returns the first message (200) instead of posting it twice.
    client_msg_id: Option<String>,
    /// Ids of uploaded files (at most 10): files of the channel's team, or, in direct messages,
    /// files the author uploaded.
    #[serde(default)]
    attachments: Vec<String>,
}

/// Checks that the author may attach each file here; returns them deduplicated, in order.
async fn attachable(db: &Db, access: &Access, author: &str, files: &[String]) -> ApiResult<Vec<String>> {
    if files.len() > MAX_ATTACHMENTS {
        return Err(ApiError::field(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} files"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for file in files {
        if out.contains(file) {
            continue;
        }
        let found: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT team_id, uploaded_by FROM files WHERE id = $1")
                .bind(file)
                .fetch_optional(db.pool())
                .await?;
        let allowed = match (found, &access.team_id) {
            (Some((team, _)), Some(channel_team)) => &team == channel_team,
            (Some((_, uploader)), None) => uploader.as_deref() == Some(author),
            (None, _) => false,
        };
        if !allowed {
            return Err(ApiError::field(
                "attachments",
                format!("no file {file} that can be attached here"),
            ));
        }
        out.push(file.clone());
    }
    Ok(out)
}

/// Post a message (channel members). Answered only once the message is committed: 201, or
/// 200 with the original when `client_msg_id` was already used.
#[utoipa::path(post, path = "/channels/{channel_id}/messages", tag = "chat", security(("bearer" = [])),
    request_body = PostMessage,
    responses((status = 201, body = Message), (status = 200, description = "the message posted earlier with this client_msg_id", body = Message),
              (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody), (status = 429, body = convene_proto::ErrorBody)))]
async fn post_message(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppJson(req): AppJson<PostMessage>,
) -> ApiResult<(StatusCode, AppJson<Message>)> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    access.require_member()?;
    let body = body(&req.body)?;
    if let Some(key) = &req.client_msg_id {
        if key.is_empty() || key.len() > 64 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::field(
                "client_msg_id",
                "must be 1-64 printable ASCII characters",
            ));
        }
        if let Some(existing) = by_client_id(&state.db, &channel_id, &auth.user_id, key).await? {
            return Ok((StatusCode::OK, AppJson(existing)));
        }
    }
    let reply_to = match &req.reply_to {
        Some(parent) => Some(thread_root(&state.db, &channel_id, parent).await?),
        None => None,
    };
    let attachments = attachable(&state.db, &access, &auth.user_id, &req.attachments).await?;
    state
        .chat
        .take_message(&auth.user_id, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;

    let id = new_id();
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO chat_messages (id, channel_id, author_id, body, reply_to, client_msg_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&channel_id)
    .bind(&auth.user_id)
    .bind(&body)
    .bind(&reply_to)
    .bind(&req.client_msg_id)
    .bind(now)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        // The same client_msg_id raced in on another connection: answer with that message.
        return match (ApiError::from(e), &req.client_msg_id) {
            (ApiError::Conflict { .. }, Some(key)) => {
                drop(tx);
                by_client_id(&state.db, &channel_id, &auth.user_id, key)
                    .await?
                    .map(|m| (StatusCode::OK, AppJson(m)))
                    .ok_or_else(|| ApiError::Internal("client_msg_id conflict without a message".into()))
            }
            (other, _) => Err(other),
        };
    }
    for (position, file) in attachments.iter().enumerate() {
        sqlx::query("INSERT INTO chat_attachments (message_id, file_id, position) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(file)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
    }
    let mentioned = resolve_mentions(&mut tx, &channel_id, &auth.user_id, &mentioned_usernames(&body)).await?;
    for user in &mentioned {
        sqlx::query("INSERT INTO chat_mentions (message_id, user_id) VALUES ($1, $2)")
            .bind(&id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
    }
    // Your own message is read.
    sqlx::query("UPDATE chat_members SET last_read_id = $1 WHERE channel_id = $2 AND user_id = $3")
        .bind(&id)
        .bind(&channel_id)
        .bind(&auth.user_id)
        .execute(&mut *tx)
        .await?;
    let created = notify_members(&mut tx, &access, &id, &auth.user_id, &body, &mentioned, false).await?;
    tx.commit().await?;

    let message = load_message(&state.db, &channel_id, &id).await?;
    state.chat.stop_typing(&channel_id, &auth.user_id);
    publish_to_members(
        &state,
        &channel_id,
        "message.created",
        &json!({ "channel_id": channel_id, "message": message }),
    )
    .await?;
    for n in &created {
        notifications::publish_created(&state, n);
    }
    Ok((StatusCode::CREATED, AppJson(message)))
}

async fn by_client_id(db: &Db, channel_id: &str, author: &str, key: &str) -> ApiResult<Option<Message>> {
    let found: Option<(String, Option<i64>)> = sqlx::query_as(
        "SELECT id, deleted_at FROM chat_messages WHERE channel_id = $1 AND author_id = $2 AND client_msg_id = $3",
    )
    .bind(channel_id)
    .bind(author)
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    match found {
        None => Ok(None),
        Some((_, Some(_))) => Err(ApiError::conflict(
            "message_deleted",
            "the message posted with this client_msg_id was deleted",
        )),
        Some((id, None)) => load_message(db, channel_id, &id).await.map(Some),
    }
}

/// The first message of the thread `parent` belongs to (threads are one level deep).
async fn thread_root(db: &Db, channel_id: &str, parent: &str) -> ApiResult<String> {
    let found: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, reply_to FROM chat_messages WHERE id = $1 AND channel_id = $2 AND deleted_at IS NULL",
    )
    .bind(parent)
    .bind(channel_id)
    .fetch_optional(db.pool())
    .await?;
    match found {
        Some((id, root)) => Ok(root.unwrap_or(id)),
        None => Err(ApiError::field("reply_to", "is not a message of this channel")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateMessage {
    body: String,
}

/// Edit a message (its author). Newly mentioned members are notified.
#[utoipa::path(patch, path = "/channels/{channel_id}/messages/{message_id}", tag = "chat", security(("bearer" = [])),
    request_body = UpdateMessage,
    responses((status = 200, body = Message), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_message(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, message_id)): AppPath<(String, String)>,
    AppJson(req): AppJson<UpdateMessage>,
) -> ApiResult<AppJson<Message>> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    let current = load_message(&state.db, &channel_id, &message_id).await?;
    if current.author_id.as_deref() != Some(auth.user_id.as_str()) {
        return Err(ApiError::Forbidden("only the author may edit a message"));
    }
    let body = body(&req.body)?;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE chat_messages SET body = $1, edited_at = $2 WHERE id = $3")
        .bind(&body)
        .bind(now_ms())
        .bind(&message_id)
        .execute(&mut *tx)
        .await?;
    let mentioned = resolve_mentions(&mut tx, &channel_id, &auth.user_id, &mentioned_usernames(&body)).await?;
    sqlx::query("DELETE FROM chat_mentions WHERE message_id = $1")
        .bind(&message_id)
        .execute(&mut *tx)
        .await?;
    for user in &mentioned {
        sqlx::query("INSERT INTO chat_mentions (message_id, user_id) VALUES ($1, $2)")
            .bind(&message_id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
    }
    let before: HashSet<&String> = current.mentions.iter().collect();
    let added: Vec<String> = mentioned.iter().filter(|u| !before.contains(u)).cloned().collect();
    let created = notify_members(&mut tx, &access, &message_id, &auth.user_id, &body, &added, true).await?;
    tx.commit().await?;
    let message = load_message(&state.db, &channel_id, &message_id).await?;
    publish_to_members(
        &state,
        &channel_id,
        "message.updated",
        &json!({ "channel_id": channel_id, "message": message }),
    )
    .await?;
    for n in &created {
        notifications::publish_created(&state, n);
    }
    Ok(AppJson(message))
}

/// Delete a message (its author, or an admin of the channel's team). Its reactions, mentions
/// and notifications go with it; replies stay.
#[utoipa::path(delete, path = "/channels/{channel_id}/messages/{message_id}", tag = "chat", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_message(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, message_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    let current = load_message(&state.db, &channel_id, &message_id).await?;
    if current.author_id.as_deref() != Some(auth.user_id.as_str()) && !access.is_team_admin() {
        return Err(ApiError::Forbidden(
            "only the author and team admins may delete a message",
        ));
    }
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "UPDATE chat_messages SET body = '', deleted_at = $1, pinned_by = NULL, pinned_at = NULL WHERE id = $2",
    )
    .bind(now_ms())
    .bind(&message_id)
    .execute(&mut *tx)
    .await?;
    for table in ["chat_reactions", "chat_mentions", "notifications"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE message_id = $1"))
            .bind(&message_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    publish_to_members(
        &state,
        &channel_id,
        "message.deleted",
        &json!({ "channel_id": channel_id, "message_id": message_id, "reply_to": current.reply_to }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An emoji or shortcode: 1-64 characters, no spaces, slashes or control characters.
fn emoji(raw: &str) -> ApiResult<&str> {
    let n = raw.chars().count();
    if (1..=64).contains(&n) && !raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        Ok(raw)
    } else {
        Err(ApiError::field("emoji", "must be 1-64 characters without spaces"))
    }
}

/// Member access to a live message of the channel.
async fn member_message(state: &AppState, auth: &AuthUser, channel_id: &str, message_id: &str) -> ApiResult<Message> {
    access(&state.db, channel_id, &auth.user_id).await?.require_member()?;
    load_message(&state.db, channel_id, message_id).await
}

/// The emoji of a reaction of a channel member to a live message of the channel (checked).
async fn reaction_emoji<'a>(
    state: &AppState,
    auth: &AuthUser,
    channel_id: &str,
    message_id: &str,
    raw: &'a str,
) -> ApiResult<&'a str> {
    let emoji = emoji(raw)?;
    member_message(state, auth, channel_id, message_id).await?;
    Ok(emoji)
}

/// Tells the channel's members of a reaction added or taken back (`kind`).
async fn publish_reaction(
    state: &AppState,
    auth: &AuthUser,
    channel_id: &str,
    message_id: &str,
    emoji: &str,
    kind: &str,
) -> ApiResult<()> {
    let data = json!({ "channel_id": channel_id, "message_id": message_id, "user_id": auth.user_id, "emoji": emoji });
    publish_to_members(state, channel_id, kind, &data).await
}

/// React to a message (channel members). Idempotent.
#[utoipa::path(put, path = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", tag = "chat",
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn add_reaction(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, message_id, raw)): AppPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let emoji = reaction_emoji(&state, &auth, &channel_id, &message_id, &raw).await?;
    let added = sqlx::query(
        "INSERT INTO chat_reactions (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&message_id)
    .bind(&auth.user_id)
    .bind(emoji)
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    if added.rows_affected() > 0 {
        publish_reaction(&state, &auth, &channel_id, &message_id, emoji, "reaction.added").await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Take back a reaction. Idempotent.
#[utoipa::path(delete, path = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", tag = "chat",
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn remove_reaction(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, message_id, raw)): AppPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let emoji = reaction_emoji(&state, &auth, &channel_id, &message_id, &raw).await?;
    let removed = sqlx::query("DELETE FROM chat_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3")
        .bind(&message_id)
        .bind(&auth.user_id)
        .bind(emoji)
        .execute(state.db.pool())
        .await?;
    if removed.rows_affected() > 0 {
        publish_reaction(&state, &auth, &channel_id, &message_id, emoji, "reaction.removed").await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Pin a message to its channel (channel members). Idempotent.
#[utoipa::path(put, path = "/channels/{channel_id}/messages/{message_id}/pin", tag = "chat", security(("bearer" = [])),
    responses((status = 200, body = Message), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn pin_message(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, message_id)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Message>> {
    set_pin(&state, &auth, &channel_id, &message_id, true).await
}

/// Unpin a message (channel members). Idempotent.
#[utoipa::path(delete, path = "/channels/{channel_id}/messages/{message_id}/pin", tag = "chat", security(("bearer" = [])),
    responses((status = 200, body = Message), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn unpin_message(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, message_id)): AppPath<(String, String)>,
) -> ApiResult<AppJson<Message>> {
    set_pin(&state, &auth, &channel_id, &message_id, false).await
}

async fn set_pin(
    state: &AppState,
    auth: &AuthUser,
    channel_id: &str,
    message_id: &str,
    pinned: bool,
) -> ApiResult<AppJson<Message>> {
    member_message(state, auth, channel_id, message_id).await?;
    let changed = if pinned {
        sqlx::query("UPDATE chat_messages SET pinned_by = $1, pinned_at = $2 WHERE id = $3 AND pinned_at IS NULL")
            .bind(&auth.user_id)
            .bind(now_ms())
            .bind(message_id)
            .execute(state.db.pool())
            .await?
    } else {
        sqlx::query(
            "UPDATE chat_messages SET pinned_by = NULL, pinned_at = NULL WHERE id = $1 AND pinned_at IS NOT NULL",
        )
        .bind(message_id)
        .execute(state.db.pool())
        .await?
    };
    let message = load_message(&state.db, channel_id, message_id).await?;
    if changed.rows_affected() > 0 {
        let kind = if pinned { "message.pinned" } else { "message.unpinned" };
        publish_to_members(
            state,
            channel_id,
            kind,
            &json!({ "channel_id": channel_id, "message_id": message_id, "by": auth.user_id }),
        )
        .await?;
    }
    Ok(AppJson(message))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinQuery {
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// The channel's pinned messages, oldest first.
#[utoipa::path(get, path = "/channels/{channel_id}/pins", tag = "chat", security(("bearer" = [])), params(PinQuery),
    responses((status = 200, body = Page<Message>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_pins(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppQuery(q): AppQuery<PinQuery>,
) -> ApiResult<AppJson<Page<Message>>> {
    access(&state.db, &channel_id, &auth.user_id).await?;
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "{MESSAGE_SELECT} WHERE m.channel_id = $1 AND m.deleted_at IS NULL AND m.pinned_at IS NOT NULL \
         AND m.id > $2 ORDER BY m.id LIMIT $3"
    ))
    .bind(&channel_id)
    .bind(q.after.as_deref().unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(Page::from_rows(complete(&state.db, rows).await?, limit, |m| {
        m.id.clone()
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarkRead {
    /// The newest message read; absent: everything up to now. The marker never moves back.
    message_id: Option<String>,
}

/// The caller's read state in a channel.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct ReadState {
    channel_id: String,
    last_read_id: String,
    unread_count: i64,
    mention_count: i64,
}

/// Move the caller's read marker (channel members). Notifications about the messages read
/// are marked read too; the caller's other clients get `read.updated`.
#[utoipa::path(post, path = "/channels/{channel_id}/read", tag = "chat", security(("bearer" = [])),
    request_body = MarkRead,
    responses((status = 200, body = ReadState), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppJson(req): AppJson<MarkRead>,
) -> ApiResult<AppJson<ReadState>> {
    access(&state.db, &channel_id, &auth.user_id).await?.require_member()?;
    let marker = match &req.message_id {
        Some(id) => {
            let found: Option<(String,)> =
                sqlx::query_as("SELECT id FROM chat_messages WHERE id = $1 AND channel_id = $2")
                    .bind(id)
                    .bind(&channel_id)
                    .fetch_optional(state.db.pool())
                    .await?;
            found
                .ok_or_else(|| ApiError::field("message_id", "is not a message of this channel"))?
                .0
        }
        None => {
            let newest: Option<(String,)> =
                sqlx::query_as("SELECT id FROM chat_messages WHERE channel_id = $1 ORDER BY id DESC LIMIT 1")
                    .bind(&channel_id)
                    .fetch_optional(state.db.pool())
                    .await?;
            newest.map(|(id,)| id).unwrap_or_default()
        }
    };
    sqlx::query(
        "UPDATE chat_members SET last_read_id = $1 WHERE channel_id = $2 AND user_id = $3 AND last_read_id < $1",
    )
    .bind(&marker)
    .bind(&channel_id)
    .bind(&auth.user_id)
    .execute(state.db.pool())
    .await?;
    let read: ReadState = sqlx::query_as(
        "SELECT m.channel_id, m.last_read_id, \
         (SELECT COUNT(*) FROM chat_messages x WHERE x.channel_id = m.channel_id AND x.id > m.last_read_id \
            AND x.deleted_at IS NULL AND (x.author_id IS NULL OR x.author_id <> m.user_id)) AS unread_count, \
         (SELECT COUNT(*) FROM chat_mentions n JOIN chat_messages x ON x.id = n.message_id WHERE n.user_id = m.user_id \
            AND x.channel_id = m.channel_id AND x.id > m.last_read_id AND x.deleted_at IS NULL) AS mention_count \
         FROM chat_members m WHERE m.channel_id = $1 AND m.user_id = $2",
    )
    .bind(&channel_id)
    .bind(&auth.user_id)
    .fetch_one(state.db.pool())
    .await?;
    notifications::mark_channel_read(&state, &auth.user_id, &channel_id, &read.last_read_id).await?;
    state
        .events
        .publish([auth.user_id.as_str()], "read.updated", &json!(read));
    Ok(AppJson(read))
}

/// Tell the channel the caller is typing (channel members). Other members get `typing` with
/// `expires_at` (5 s later); clients drop the indicator then, or when the typist's message
/// arrives. Call again every few seconds while typing; repeats within 2 s are not forwarded.
#[utoipa::path(put, path = "/channels/{channel_id}/typing", tag = "chat", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn typing(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    access(&state.db, &channel_id, &auth.user_id).await?.require_member()?;
    if state.chat.typing(&channel_id, &auth.user_id, Instant::now()) {
        let expires_at = from_ms(now_ms() + i64::try_from(TYPING_TTL.as_millis()).unwrap_or(5000));
        let others: Vec<String> = member_ids(&state.db, &channel_id)
            .await?
            .into_iter()
            .filter(|u| *u != auth.user_id)
            .collect();
        publish(
            &state,
            &channel_id,
            &others,
            "typing",
            &json!({ "channel_id": channel_id, "user_id": auth.user_id, "expires_at": expires_at }),
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_parsed_from_text() {
        assert_eq!(
            mentioned_usernames("hi @Bob and @carol_1, thanks @bob. mail x@example.com @ab @dave-"),
            ["bob", "carol_1", "dave"]
        );
        assert!(mentioned_usernames("no mentions here").is_empty());
    }

    #[test]
    fn bodies_are_validated_not_rewritten() {
        assert_eq!(body("  <b>hi</b>\n").ok().as_deref(), Some("  <b>hi</b>\n"));
        assert!(body("   ").is_err());
        assert!(body("bell\u{7}").is_err());
        assert!(body(&"x".repeat(MAX_BODY + 1)).is_err());
    }
}
