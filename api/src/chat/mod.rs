//! `/api/v1/chat`: team channels (public and private), direct messages (1:1 and small groups),
//! messages with threads, reactions, pins, mentions and read markers; typing and presence;
//! `WS /ws/chat/{channel_id}`, a live stream of one channel.
//!
//! Visibility: a public channel is visible to the team's members and admins (not guests, who
//! see only channels they were added to, and project channels); a private channel or a DM only
//! to its members. Everyone else gets 404, so ids leak nothing. Posting, reacting and read
//! markers need channel membership; anyone who sees a public channel may join it.
//!
//! Project channels: every project has a public channel (`project_channel`) where its task
//! changes are pushed to `/ws/chat/{id}` subscribers and posted as system messages (no author),
//! such as "Ann moved WEB-42 to Done" (`project_news`).
//!
//! Real-time: every change is published to the channel members' `/ws/events` streams (with
//! sequence numbers and resume) and to `/ws/chat/{channel_id}` subscribers, after it commits.

mod messages;
mod presence;
mod realtime;
mod ws;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use presence::{focus_changed, socket_closed, socket_opened};
pub(crate) use realtime::{Realtime, Status};
pub(crate) use ws::router as ws_router;

use crate::audit::{self, Event, Origin};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::Page;
use crate::state::AppState;
use crate::teams::{self, Role};
use crate::time::from_ms;
use crate::validate;

/// Members of a group DM, the caller included.
const MAX_DM_MEMBERS: usize = 8;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_channel, list_channels))
        .routes(routes!(get_channel, update_channel, delete_channel))
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(update_preferences))
        .merge(messages::router())
        .merge(presence::router())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChannelKind {
    Public,
    Private,
    Dm,
}

impl ChannelKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Dm => "dm",
        }
    }

    fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "dm" => Ok(Self::Dm),
            other => Err(ApiError::Internal(format!("unknown channel kind in database: {other}"))),
        }
    }
}

/// Which messages notify a member: every one, only those mentioning them, none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Notify {
    All,
    Mentions,
    None,
}

impl Notify {
    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Mentions => "mentions",
            Self::None => "none",
        }
    }

    fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "all" => Ok(Self::All),
            "mentions" => Ok(Self::Mentions),
            "none" => Ok(Self::None),
            other => Err(ApiError::Internal(format!("unknown notify level in database: {other}"))),
        }
    }
}

/// A channel as the caller sees it, with the caller's read state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Channel {
    id: String,
    /// Absent for direct messages.
    team_id: Option<String>,
    kind: ChannelKind,
    /// Absent for direct messages.
    name: Option<String>,
    topic: Option<String>,
    created_by: Option<String>,
    member_count: i64,
    /// Whether the caller is a member (non-members may read public channels).
    is_member: bool,
    /// The caller's notification level here (members only).
    notify: Option<Notify>,
    muted: bool,
    /// The newest message the caller has read.
    last_read_id: Option<String>,
    /// Messages from others after the read marker.
    unread_count: i64,
    /// Of those, the ones mentioning the caller.
    mention_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ChannelRow {
    id: String,
    team_id: Option<String>,
    kind: String,
    name: Option<String>,
    topic: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
    member_count: i64,
    notify: Option<String>,
    muted: Option<i64>,
    last_read_id: Option<String>,
    unread_count: i64,
    mention_count: i64,
}

impl TryFrom<ChannelRow> for Channel {
    type Error = ApiError;
    fn try_from(r: ChannelRow) -> ApiResult<Self> {
        Ok(Self {
            kind: ChannelKind::parse(&r.kind)?,
            is_member: r.notify.is_some(),
            notify: r.notify.as_deref().map(Notify::parse).transpose()?,
            muted: r.muted.unwrap_or(0) != 0,
            last_read_id: r.last_read_id.filter(|id| !id.is_empty()),
            id: r.id,
            team_id: r.team_id,
            name: r.name,
            topic: r.topic,
            created_by: r.created_by,
            member_count: r.member_count,
            unread_count: r.unread_count,
            mention_count: r.mention_count,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        })
    }
}

/// `$1` is the caller.
const CHANNEL_SELECT: &str = "SELECT c.id, c.team_id, c.kind, c.name, c.topic, c.created_by, c.created_at, \
     c.updated_at, (SELECT COUNT(*) FROM chat_members a WHERE a.channel_id = c.id) AS member_count, \
     m.notify, m.muted, m.last_read_id, \
     (SELECT COUNT(*) FROM chat_messages x WHERE x.channel_id = c.id AND x.id > m.last_read_id \
        AND x.deleted_at IS NULL AND (x.author_id IS NULL OR x.author_id <> $1)) AS unread_count, \
     (SELECT COUNT(*) FROM chat_mentions n JOIN chat_messages x ON x.id = n.message_id \
        WHERE n.user_id = $1 AND x.channel_id = c.id AND x.id > m.last_read_id AND x.deleted_at IS NULL) \
        AS mention_count \
     FROM chat_channels c LEFT JOIN chat_members m ON m.channel_id = c.id AND m.user_id = $1";

async fn load_channel(db: &Db, channel_id: &str, user_id: &str) -> ApiResult<Channel> {
    sqlx::query_as::<_, ChannelRow>(&format!("{CHANNEL_SELECT} WHERE c.id = $2"))
        .bind(user_id)
        .bind(channel_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("channel"))?
        .try_into()
}

/// What the caller may do in a channel they can see.
pub(crate) struct Access {
    channel_id: String,
    team_id: Option<String>,
    kind: ChannelKind,
    name: Option<String>,
    created_by: Option<String>,
    /// The caller's team role (`None` in DMs).
    role: Option<Role>,
    member: bool,
}

impl Access {
    /// Posting, reacting, pinning and read markers are for members.
    fn require_member(&self) -> ApiResult<()> {
        if self.member {
            Ok(())
        } else {
            Err(ApiError::Forbidden("join the channel first"))
        }
    }

    /// Team admins and owners moderate team channels.
    fn is_team_admin(&self) -> bool {
        self.role.is_some_and(Role::can_manage)
    }

    /// The channel's creator and team admins rename, delete and remove members.
    fn can_manage(&self, user_id: &str) -> bool {
        self.kind != ChannelKind::Dm && (self.is_team_admin() || self.created_by.as_deref() == Some(user_id))
    }

    /// How the channel is named in notifications.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("#{name}"),
            None => "a direct message".to_owned(),
        }
    }
}

/// The caller's access to `channel_id`, or 404 when they may not see it.
pub(crate) async fn access(db: &Db, channel_id: &str, user_id: &str) -> ApiResult<Access> {
    #[derive(FromRow)]
    struct Row {
        team_id: Option<String>,
        kind: String,
        name: Option<String>,
        created_by: Option<String>,
        project_id: Option<String>,
        member: Option<String>,
    }
    let row: Row = sqlx::query_as(
        "SELECT c.team_id, c.kind, c.name, c.created_by, c.project_id, m.user_id AS member FROM chat_channels c \
         LEFT JOIN chat_members m ON m.channel_id = c.id AND m.user_id = $2 WHERE c.id = $1",
    )
    .bind(channel_id)
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(ApiError::NotFound("channel"))?;
    let kind = ChannelKind::parse(&row.kind)?;
    let member = row.member.is_some();
    let role = match &row.team_id {
        Some(team) => Some(teams::member_role(db, team, user_id).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("channel"),
            other => other,
        })?),
        None => None,
    };
    // Guests read projects, so they see project channels too.
    let visible = member
        || (kind == ChannelKind::Public && role.is_some_and(|r| r >= Role::Member))
        || (row.project_id.is_some() && role.is_some());
    if !visible {
        return Err(ApiError::NotFound("channel"));
    }
    Ok(Access {
        channel_id: channel_id.to_owned(),
        team_id: row.team_id,
        kind,
        name: row.name,
        created_by: row.created_by,
        role,
        member,
    })
}

/// `FROM`/`WHERE` of the members of channel `$1` (as `m`) who may still see it: in team
/// channels, those still in the team.
const CURRENT_MEMBERS: &str = "FROM chat_members m JOIN chat_channels c ON c.id = m.channel_id \
     WHERE m.channel_id = $1 AND (c.team_id IS NULL OR EXISTS \
     (SELECT 1 FROM team_members t WHERE t.team_id = c.team_id AND t.user_id = m.user_id))";

/// Whether `user_id` is online, idle or offline.
pub(crate) fn presence_of(state: &AppState, user_id: &str) -> Status {
    state.chat.status(user_id)
}

/// The channel's members: who receives its events on `/ws/events`.
async fn member_ids(db: &Db, channel_id: &str) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT m.user_id {CURRENT_MEMBERS}"))
        .bind(channel_id)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Publishes a committed change to `recipients`' event streams and the channel's live stream.
fn publish(state: &AppState, channel_id: &str, recipients: &[String], kind: &str, data: &serde_json::Value) {
    state.events.publish(recipients.iter().map(String::as_str), kind, data);
    state.chat.to_channel(channel_id, kind, data);
}

/// Publishes to the channel's current members.
async fn publish_to_members(state: &AppState, channel_id: &str, kind: &str, data: &serde_json::Value) -> ApiResult<()> {
    let members = member_ids(&state.db, channel_id).await?;
    publish(state, channel_id, &members, kind, data);
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateChannel {
    kind: ChannelKind,
    /// Required for public and private channels; absent for DMs.
    team_id: Option<String>,
    /// Required for public and private channels; absent for DMs.
    name: Option<String>,
    topic: Option<String>,
    /// Users to add besides the caller: team members for channels; for a DM the other
    /// participants (1 to 7), each sharing a team with the caller.
    #[serde(default)]
    members: Vec<String>,
}

/// Create a channel in a team (members and admins; not guests), or open a direct message.
/// A DM with the same participants is returned (200) instead of created again.
#[utoipa::path(post, path = "/channels", tag = "chat", security(("bearer" = [])), request_body = CreateChannel,
    responses((status = 201, body = Channel), (status = 200, description = "the existing DM", body = Channel),
              (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_channel(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateChannel>,
) -> ApiResult<(StatusCode, AppJson<Channel>)> {
    match req.kind {
        ChannelKind::Dm => create_dm(&state, &auth, req).await,
        ChannelKind::Public | ChannelKind::Private => create_team_channel(&state, &auth, req).await,
    }
}

async fn create_team_channel(
    state: &AppState,
    auth: &AuthUser,
    req: CreateChannel,
) -> ApiResult<(StatusCode, AppJson<Channel>)> {
    let team_id = req
        .team_id
        .ok_or_else(|| ApiError::field("team_id", "is required for team channels"))?;
    let name = validate::name("name", req.name.as_deref().unwrap_or(""), 80)?;
    let topic = validate::text("topic", req.topic.as_deref(), 250)?;
    let role = teams::member_role(&state.db, &team_id, &auth.user_id).await?;
    if role < Role::Member {
        return Err(ApiError::Forbidden("guests may not create channels"));
    }
    let mut members = vec![auth.user_id.clone()];
    for user in req.members {
        if !members.contains(&user) {
            teams::member_role(&state.db, &team_id, &user)
                .await
                .map_err(|_| ApiError::NotFound("user"))?;
            members.push(user);
        }
    }
    let id = new_id();
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO chat_channels (id, team_id, kind, name, topic, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(&team_id)
    .bind(req.kind.as_str())
    .bind(&name)
    .bind(&topic)
    .bind(&auth.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::conflict("name_taken", "the team already has a channel of this name"),
        other => other,
    })?;
    for user in &members {
        insert_member(&mut tx, &id, user, Notify::Mentions, now).await?;
    }
    tx.commit().await?;
    let channel = load_channel(&state.db, &id, &auth.user_id).await?;
    publish(state, &id, &members, "channel.created", &json!({ "channel_id": id }));
    Ok((StatusCode::CREATED, AppJson(channel)))
}

/// The chat channel of a room (created on first use), with `user_id` as a member: everyone who
/// joins the meeting can read and write its chat. Returns the channel id.
pub(crate) async fn room_channel(state: &AppState, room_id: &str, team_id: &str, user_id: &str) -> ApiResult<String> {
    let now = now_ms();
    // Concurrent first joins race to create it; the unique room_id index keeps one.
    sqlx::query(
        "INSERT INTO chat_channels (id, team_id, kind, name, room_id, created_at, updated_at) \
         VALUES ($1, $2, 'private', $3, $4, $5, $5) ON CONFLICT DO NOTHING",
    )
    .bind(new_id())
    .bind(team_id)
    .bind(format!("meeting-{room_id}"))
    .bind(room_id)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    let (channel_id,): (String,) = sqlx::query_as("SELECT id FROM chat_channels WHERE room_id = $1")
        .bind(room_id)
        .fetch_one(state.db.pool())
        .await?;
    let added = sqlx::query(
        "INSERT INTO chat_members (channel_id, user_id, joined_at, notify) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&channel_id)
    .bind(user_id)
    .bind(now)
    .bind(Notify::Mentions.as_str())
    .execute(state.db.pool())
    .await?;
    if added.rows_affected() == 1 {
        publish_to_members(
            state,
            &channel_id,
            "channel.member_added",
            &json!({ "channel_id": channel_id, "user_id": user_id }),
        )
        .await?;
    }
    Ok(channel_id)
}

/// The chat channel of a project, created on first use (with the project, or for projects
/// older than project channels on their first change): a public channel of its team.
pub(crate) async fn project_channel(conn: &mut sqlx::AnyConnection, project_id: &str) -> ApiResult<String> {
    let now = now_ms();
    // The name carries the project id: channel names are unique per team, and a user's channel
    // may already be called after the project.
    sqlx::query(
        "INSERT INTO chat_channels (id, team_id, kind, name, project_id, created_at, updated_at) \
         SELECT $1, team_id, 'public', $2, id, $3, $3 FROM projects WHERE id = $4 ON CONFLICT DO NOTHING",
    )
    .bind(new_id())
    .bind(format!("project-{project_id}"))
    .bind(now)
    .bind(project_id)
    .execute(&mut *conn)
    .await?;
    let (channel_id,): (String,) = sqlx::query_as("SELECT id FROM chat_channels WHERE project_id = $1")
        .bind(project_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(channel_id)
}

/// Tells the project's channel about a change: `data` goes to its `/ws/chat` subscribers as
/// `kind`, and `text` is posted as a system message.
pub(crate) async fn project_news(
    state: &AppState,
    project_id: &str,
    kind: &str,
    data: &serde_json::Value,
    text: &str,
) -> ApiResult<()> {
    let channel_id = project_channel(&mut *state.db.pool().acquire().await?, project_id).await?;
    state.chat.to_channel(&channel_id, kind, data);
    messages::post_system(state, &channel_id, text).await
}

async fn insert_member(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    channel_id: &str,
    user_id: &str,
    notify: Notify,
    now: i64,
) -> ApiResult<()> {
    sqlx::query("INSERT INTO chat_members (channel_id, user_id, joined_at, notify) VALUES ($1, $2, $3, $4)")
        .bind(channel_id)
        .bind(user_id)
        .bind(now)
        .bind(notify.as_str())
        .execute(&mut **tx)
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict { .. } => ApiError::conflict("already_member", "the user is already a member"),
            other => other,
        })?;
    Ok(())
}

async fn create_dm(state: &AppState, auth: &AuthUser, req: CreateChannel) -> ApiResult<(StatusCode, AppJson<Channel>)> {
    if req.team_id.is_some() || req.name.is_some() || req.topic.is_some() {
        return Err(ApiError::field("kind", "direct messages have no team, name or topic"));
    }
    let mut members: Vec<String> = req.members;
    members.push(auth.user_id.clone());
    members.sort();
    members.dedup();
    if !(2..=MAX_DM_MEMBERS).contains(&members.len()) {
        return Err(ApiError::field(
            "members",
            format!("a direct message has 1 to {} other participants", MAX_DM_MEMBERS - 1),
        ));
    }
    for user in members.iter().filter(|u| **u != auth.user_id) {
        // Only people who share a team can be messaged, so DMs cannot be used to reach anyone.
        let shared: Option<(String,)> = sqlx::query_as(
            "SELECT a.team_id FROM team_members a JOIN team_members b ON b.team_id = a.team_id \
             WHERE a.user_id = $1 AND b.user_id = $2 LIMIT 1",
        )
        .bind(&auth.user_id)
        .bind(user)
        .fetch_optional(state.db.pool())
        .await?;
        if shared.is_none() {
            return Err(ApiError::NotFound("user"));
        }
    }
    let key = members.join(",");
    let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM chat_channels WHERE dm_key = $1")
        .bind(&key)
        .fetch_optional(state.db.pool())
        .await?;
    if let Some((id,)) = existing {
        return Ok((
            StatusCode::OK,
            AppJson(load_channel(&state.db, &id, &auth.user_id).await?),
        ));
    }
    let id = new_id();
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO chat_channels (id, kind, dm_key, created_by, created_at, updated_at) \
         VALUES ($1, 'dm', $2, $3, $4, $4)",
    )
    .bind(&id)
    .bind(&key)
    .bind(&auth.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        // Someone opened the same DM at the same moment: theirs is the one.
        return match ApiError::from(e) {
            ApiError::Conflict { .. } => {
                drop(tx);
                let (id,): (String,) = sqlx::query_as("SELECT id FROM chat_channels WHERE dm_key = $1")
                    .bind(&key)
                    .fetch_one(state.db.pool())
                    .await?;
                Ok((
                    StatusCode::OK,
                    AppJson(load_channel(&state.db, &id, &auth.user_id).await?),
                ))
            }
            other => Err(other),
        };
    }
    for user in &members {
        insert_member(&mut tx, &id, user, Notify::All, now).await?;
    }
    tx.commit().await?;
    publish(state, &id, &members, "channel.created", &json!({ "channel_id": id }));
    Ok((
        StatusCode::CREATED,
        AppJson(load_channel(&state.db, &id, &auth.user_id).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelQuery {
    /// The team's channels the caller can see (public ones and their private ones); without
    /// it, every channel and DM the caller is a member of.
    team_id: Option<String>,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// Channels visible to the caller, with unread and mention counts, oldest first.
#[utoipa::path(get, path = "/channels", tag = "chat", security(("bearer" = [])), params(ChannelQuery),
    responses((status = 200, body = Page<Channel>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_channels(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ChannelQuery>,
) -> ApiResult<AppJson<Page<Channel>>> {
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let after = q.after.as_deref().unwrap_or("");
    let rows: Vec<ChannelRow> = match &q.team_id {
        Some(team_id) => {
            let role = teams::member_role(&state.db, team_id, &auth.user_id).await?;
            let sees_public = i64::from(role >= Role::Member);
            sqlx::query_as(&format!(
                "{CHANNEL_SELECT} WHERE c.team_id = $2 AND (m.user_id IS NOT NULL OR (c.kind = 'public' AND $3 = 1)) \
                 AND c.id > $4 ORDER BY c.id LIMIT $5"
            ))
            .bind(&auth.user_id)
            .bind(team_id)
            .bind(sees_public)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(state.db.pool())
            .await?
        }
        None => {
            sqlx::query_as(&format!(
                "{CHANNEL_SELECT} WHERE m.user_id IS NOT NULL AND (c.team_id IS NULL OR EXISTS \
                 (SELECT 1 FROM team_members t WHERE t.team_id = c.team_id AND t.user_id = $1)) \
                 AND c.id > $2 ORDER BY c.id LIMIT $3"
            ))
            .bind(&auth.user_id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(state.db.pool())
            .await?
        }
    };
    let channels = rows.into_iter().map(Channel::try_from).collect::<ApiResult<Vec<_>>>()?;
    Ok(AppJson(Page::from_rows(channels, limit, |c| c.id.clone())))
}

/// A channel the caller can see.
#[utoipa::path(get, path = "/channels/{channel_id}", tag = "chat", security(("bearer" = [])),
    responses((status = 200, body = Channel), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_channel(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
) -> ApiResult<AppJson<Channel>> {
    access(&state.db, &channel_id, &auth.user_id).await?;
    Ok(AppJson(load_channel(&state.db, &channel_id, &auth.user_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateChannel {
    name: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    topic: Option<Option<String>>,
}

/// Rename a channel or change its topic (its creator and team admins; not DMs).
#[utoipa::path(patch, path = "/channels/{channel_id}", tag = "chat", security(("bearer" = [])),
    request_body = UpdateChannel,
    responses((status = 200, body = Channel), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn update_channel(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppJson(req): AppJson<UpdateChannel>,
) -> ApiResult<AppJson<Channel>> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    if !access.can_manage(&auth.user_id) {
        return Err(ApiError::Forbidden(
            "only the channel's creator and team admins may change it",
        ));
    }
    let current = load_channel(&state.db, &channel_id, &auth.user_id).await?;
    let name = match &req.name {
        Some(n) => Some(validate::name("name", n, 80)?),
        None => current.name,
    };
    let topic = match &req.topic {
        Some(t) => validate::text("topic", t.as_deref(), 250)?,
        None => current.topic,
    };
    sqlx::query("UPDATE chat_channels SET name = $1, topic = $2, updated_at = $3 WHERE id = $4")
        .bind(&name)
        .bind(&topic)
        .bind(now_ms())
        .bind(&channel_id)
        .execute(state.db.pool())
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict { .. } => {
                ApiError::conflict("name_taken", "the team already has a channel of this name")
            }
            other => other,
        })?;
    publish_to_members(
        &state,
        &channel_id,
        "channel.updated",
        &json!({ "channel_id": channel_id, "name": name, "topic": topic }),
    )
    .await?;
    Ok(AppJson(load_channel(&state.db, &channel_id, &auth.user_id).await?))
}

/// Delete a channel and its messages (its creator and team admins; not DMs).
#[utoipa::path(delete, path = "/channels/{channel_id}", tag = "chat", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_channel(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(channel_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    if !access.can_manage(&auth.user_id) {
        return Err(ApiError::Forbidden(
            "only the channel's creator and team admins may delete it",
        ));
    }
    let members = member_ids(&state.db, &channel_id).await?;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("DELETE FROM chat_channels WHERE id = $1")
        .bind(&channel_id)
        .execute(&mut *tx)
        .await?;
    // `can_manage` excludes DMs, so the channel has a team.
    if let Some(team_id) = &access.team_id {
        let event = Event::new("channel.deleted", Some(&auth.user_id), "channel", &channel_id)
            .team(team_id)
            .metadata(json!({ "name": access.name }));
        audit::record(&mut *tx, &origin, event).await?;
    }
    tx.commit().await?;
    tracing::info!(channel_id = %channel_id, "channel deleted");
    publish(
        &state,
        &channel_id,
        &members,
        "channel.deleted",
        &json!({ "channel_id": channel_id }),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct ChannelMember {
    user_id: String,
    username: String,
    display_name: String,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    joined_at: i64,
}

const MEMBER_SELECT: &str = "SELECT m.user_id, u.username, u.display_name, m.joined_at \
     FROM chat_members m JOIN users u ON u.id = m.user_id";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberQuery {
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// The channel's members.
#[utoipa::path(get, path = "/channels/{channel_id}/members", tag = "chat", security(("bearer" = [])),
    params(MemberQuery),
    responses((status = 200, body = Page<ChannelMember>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppQuery(q): AppQuery<MemberQuery>,
) -> ApiResult<AppJson<Page<ChannelMember>>> {
    access(&state.db, &channel_id, &auth.user_id).await?;
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let rows: Vec<ChannelMember> = sqlx::query_as(&format!(
        "{MEMBER_SELECT} WHERE m.channel_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3"
    ))
    .bind(&channel_id)
    .bind(q.after.as_deref().unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(Page::from_rows(rows, limit, |m| m.user_id.clone())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddMember {
    /// A member of the channel's team; the caller's own id joins a public channel.
    user_id: String,
}

/// Join a public channel, or add a team member to a channel (its members and team admins;
/// not guests). DM participants are fixed.
#[utoipa::path(post, path = "/channels/{channel_id}/members", tag = "chat", security(("bearer" = [])),
    request_body = AddMember,
    responses((status = 201, body = ChannelMember), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppJson(req): AppJson<AddMember>,
) -> ApiResult<(StatusCode, AppJson<ChannelMember>)> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    let team_id = match (&access.kind, &access.team_id) {
        (ChannelKind::Dm, _) | (_, None) => return Err(ApiError::Forbidden("direct message participants are fixed")),
        (_, Some(team)) => team.clone(),
    };
    if req.user_id != auth.user_id {
        let may_invite = access.is_team_admin() || (access.member && access.role.is_some_and(|r| r >= Role::Member));
        if !may_invite {
            return Err(ApiError::Forbidden(
                "only channel members and team admins may add people",
            ));
        }
        teams::member_role(&state.db, &team_id, &req.user_id)
            .await
            .map_err(|_| ApiError::NotFound("user"))?;
    }
    let mut tx = state.db.pool().begin().await?;
    insert_member(&mut tx, &channel_id, &req.user_id, Notify::Mentions, now_ms()).await?;
    tx.commit().await?;
    let member: ChannelMember = sqlx::query_as(&format!("{MEMBER_SELECT} WHERE m.channel_id = $1 AND m.user_id = $2"))
        .bind(&channel_id)
        .bind(&req.user_id)
        .fetch_one(state.db.pool())
        .await?;
    publish_to_members(
        &state,
        &channel_id,
        "channel.member_added",
        &json!({ "channel_id": channel_id, "user_id": req.user_id, "by": auth.user_id }),
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(member)))
}

/// Leave a channel, or remove someone from it (its creator and team admins). DM
/// participants are fixed.
#[utoipa::path(delete, path = "/channels/{channel_id}/members/{user_id}", tag = "chat", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((channel_id, user_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let access = access(&state.db, &channel_id, &auth.user_id).await?;
    if access.kind == ChannelKind::Dm {
        return Err(ApiError::Forbidden("direct message participants are fixed"));
    }
    if user_id != auth.user_id && !access.can_manage(&auth.user_id) {
        return Err(ApiError::Forbidden(
            "only the channel's creator and team admins may remove members",
        ));
    }
    let members = member_ids(&state.db, &channel_id).await?;
    let removed = sqlx::query("DELETE FROM chat_members WHERE channel_id = $1 AND user_id = $2")
        .bind(&channel_id)
        .bind(&user_id)
        .execute(state.db.pool())
        .await?;
    if removed.rows_affected() == 0 {
        return Err(ApiError::NotFound("member"));
    }
    publish(
        &state,
        &channel_id,
        &members,
        "channel.member_removed",
        &json!({ "channel_id": channel_id, "user_id": user_id, "by": auth.user_id }),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Preferences {
    notify: Option<Notify>,
    muted: Option<bool>,
}

/// The caller's notification preference for a channel they are a member of.
#[utoipa::path(patch, path = "/channels/{channel_id}/preferences", tag = "chat", security(("bearer" = [])),
    request_body = Preferences,
    responses((status = 200, body = Channel), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn update_preferences(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(channel_id): AppPath<String>,
    AppJson(req): AppJson<Preferences>,
) -> ApiResult<AppJson<Channel>> {
    access(&state.db, &channel_id, &auth.user_id).await?.require_member()?;
    let current = load_channel(&state.db, &channel_id, &auth.user_id).await?;
    let notify = req.notify.or(current.notify).unwrap_or(Notify::Mentions);
    let muted = req.muted.unwrap_or(current.muted);
    sqlx::query("UPDATE chat_members SET notify = $1, muted = $2 WHERE channel_id = $3 AND user_id = $4")
        .bind(notify.as_str())
        .bind(i64::from(muted))
        .bind(&channel_id)
        .bind(&auth.user_id)
        .execute(state.db.pool())
        .await?;
    Ok(AppJson(load_channel(&state.db, &channel_id, &auth.user_id).await?))
}
