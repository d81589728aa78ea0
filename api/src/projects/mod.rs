//! `/api/v1/projects`: a team's projects, each with a key prefix for readable task keys
//! (`WEB-42`), a status, optional dates and an archive flag.
//!
//! Rules: only team members see a project (everyone else gets 404); guests read; members
//! create, edit and archive; admins and owners delete. A new project gets a board with the
//! columns Backlog, To do, In progress and Done.

pub(crate) mod activity;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, Event, Origin};
use crate::boards;
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::Page;
use crate::state::AppState;
use crate::teams::{Role, member_role};
use crate::time::from_ms;
use crate::validate;
use activity::{Change, Diff, record};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project, delete_project))
        .merge(activity::project_router())
}

/// A closed set of values stored as text: serde names, `as_str` for binding, `parse` for rows.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub(crate) enum $name { $($variant),+ }

        #[allow(dead_code, reason = "some values are only written, others only read")]
        impl $name {
            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub(crate) fn parse(s: &str) -> $crate::error::ApiResult<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err($crate::error::ApiError::Internal(
                        format!("unknown {} in database: {other}", stringify!($name)),
                    )),
                }
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// Where a project stands.
    ProjectStatus { Planned = "planned", Active = "active", Paused = "paused", Completed = "completed", Cancelled = "cancelled" }
);

/// What the caller may do in a project: its team and the caller's role there.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) team_id: String,
    pub(crate) role: Role,
}

impl Access {
    /// Guests read; members and above change work items.
    pub(crate) fn require_write(&self) -> ApiResult<()> {
        if self.role >= Role::Member {
            Ok(())
        } else {
            Err(ApiError::Forbidden("guests have read-only access to projects"))
        }
    }

    /// Everyone in the project's team: the recipients of its real-time events.
    pub(crate) async fn audience(&self, db: &Db) -> ApiResult<Vec<String>> {
        team_member_ids(db, &self.team_id).await
    }
}

/// The caller's access to `project_id`, or 404 when the project does not exist or the caller
/// is not in its team.
pub(crate) async fn access(db: &Db, project_id: &str, user_id: &str) -> ApiResult<Access> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT p.team_id, m.role FROM projects p \
         JOIN team_members m ON m.team_id = p.team_id AND m.user_id = $2 WHERE p.id = $1",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?;
    let (team_id, role) = row.ok_or(ApiError::NotFound("project"))?;
    Ok(Access {
        team_id,
        role: Role::parse(&role)?,
    })
}

pub(crate) async fn team_member_ids(db: &Db, team_id: &str) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT user_id FROM team_members WHERE team_id = $1")
        .bind(team_id)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Publishes `data` as `kind` to every member of the team.
pub(crate) async fn publish(state: &AppState, team_id: &str, kind: &str, data: serde_json::Value) -> ApiResult<()> {
    let recipients = team_member_ids(&state.db, team_id).await?;
    state.events.publish(recipients.iter().map(String::as_str), kind, &data);
    Ok(())
}

/// Publishes a change to a task as `kind` to the team (like [`publish`]) and tells the
/// project's channel, where "{actor's name} {what}" is posted. The change is committed, so a
/// failure to post is logged, not returned.
pub(crate) async fn publish_task_change(
    state: &AppState,
    team_id: &str,
    project_id: &str,
    actor: &str,
    kind: &str,
    data: serde_json::Value,
    what: &str,
) -> ApiResult<()> {
    publish(state, team_id, kind, data.clone()).await?;
    let name: Option<(String,)> = sqlx::query_as("SELECT display_name FROM users WHERE id = $1")
        .bind(actor)
        .fetch_optional(state.db.pool())
        .await?;
    let name = name.map_or_else(|| "Someone".to_owned(), |(n,)| n);
    let text = format!("{name} {what}");
    if let Err(e) = crate::chat::project_news(state, project_id, kind, &data, &text).await {
        tracing::warn!(error = %e, "task change not posted to the project channel");
    }
    Ok(())
}

/// A stored `YYYY-MM-DD` date.
pub(crate) fn parse_date(raw: Option<String>) -> ApiResult<Option<NaiveDate>> {
    raw.map(|d| {
        NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| ApiError::Internal(format!("bad date in database: {d}")))
    })
    .transpose()
}

/// What an update with `archived` stores as `archived_at` (ms), given the current one: archiving
/// keeps the first time, `false` clears it, absent keeps it.
pub(crate) fn archived_at(archived: Option<bool>, current: Option<DateTime<Utc>>, now: i64) -> Option<i64> {
    match archived {
        Some(true) => Some(current.map_or(now, |t| t.timestamp_millis())),
        Some(false) => None,
        None => current.map(|t| t.timestamp_millis()),
    }
}

pub(crate) fn date_text(d: Option<NaiveDate>) -> Option<String> {
    d.map(|d| d.format("%Y-%m-%d").to_string())
}

/// 2-10 characters of `A-Z 0-9`, starting with a letter; stored upper-case.
fn key_prefix(raw: &str) -> ApiResult<String> {
    let k = raw.trim().to_ascii_uppercase();
    let valid = (2..=10).contains(&k.len())
        && k.starts_with(|c: char| c.is_ascii_uppercase())
        && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if valid {
        Ok(k)
    } else {
        Err(ApiError::field(
            "key",
            "must be 2-10 characters of A-Z and 0-9, starting with a letter",
        ))
    }
}

fn check_dates(start: Option<NaiveDate>, end: Option<NaiveDate>) -> ApiResult<()> {
    match (start, end) {
        (Some(s), Some(e)) if e < s => Err(ApiError::field("end_date", "must not be before start_date")),
        _ => Ok(()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Project {
    id: String,
    team_id: String,
    name: String,
    description: Option<String>,
    /// Prefix of the project's task keys, such as `WEB` in `WEB-42`.
    key: String,
    status: ProjectStatus,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    archived: bool,
    archived_at: Option<DateTime<Utc>>,
    /// The board created with the project.
    default_board_id: Option<String>,
    /// The project's chat channel, where its task changes are posted (absent for projects
    /// older than project channels until their first change).
    chat_channel_id: Option<String>,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ProjectRow {
    id: String,
    team_id: String,
    name: String,
    description: Option<String>,
    key_prefix: String,
    status: String,
    start_date: Option<String>,
    end_date: Option<String>,
    archived_at: Option<i64>,
    default_board_id: Option<String>,
    chat_channel_id: Option<String>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ProjectRow> for Project {
    type Error = ApiError;
    fn try_from(r: ProjectRow) -> ApiResult<Self> {
        Ok(Self {
            status: ProjectStatus::parse(&r.status)?,
            start_date: parse_date(r.start_date)?,
            end_date: parse_date(r.end_date)?,
            archived: r.archived_at.is_some(),
            archived_at: r.archived_at.map(from_ms),
            id: r.id,
            team_id: r.team_id,
            name: r.name,
            description: r.description,
            key: r.key_prefix,
            default_board_id: r.default_board_id,
            chat_channel_id: r.chat_channel_id,
            created_by: r.created_by,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        })
    }
}

const PROJECT_SELECT: &str = "SELECT p.id, p.team_id, p.name, p.description, p.key_prefix, p.status, \
     p.start_date, p.end_date, p.archived_at, \
     (SELECT MIN(b.id) FROM boards b WHERE b.project_id = p.id) AS default_board_id, \
     (SELECT c.id FROM chat_channels c WHERE c.project_id = p.id) AS chat_channel_id, \
     p.created_by, p.created_at, p.updated_at \
     FROM projects p JOIN team_members m ON m.team_id = p.team_id AND m.user_id = $1";

async fn load_project(db: &Db, project_id: &str, user_id: &str) -> ApiResult<Project> {
    sqlx::query_as::<_, ProjectRow>(&format!("{PROJECT_SELECT} WHERE p.id = $2"))
        .bind(user_id)
        .bind(project_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("project"))?
        .try_into()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProject {
    team_id: String,
    name: String,
    description: Option<String>,
    /// Task key prefix: 2-10 characters of A-Z and 0-9, starting with a letter.
    key: String,
    status: Option<ProjectStatus>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
}

/// Create a project in a team (members and above), with a default board.
#[utoipa::path(post, path = "", tag = "projects", security(("bearer" = [])), request_body = CreateProject,
    responses((status = 201, body = Project), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn create_project(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateProject>,
) -> ApiResult<(StatusCode, AppJson<Project>)> {
    let role = member_role(&state.db, &req.team_id, &auth.user_id).await?;
    if role < Role::Member {
        return Err(ApiError::Forbidden("guests cannot create projects"));
    }
    let name = validate::name("name", &req.name, 100)?;
    let description = validate::text("description", req.description.as_deref(), 10_000)?;
    let key = key_prefix(&req.key)?;
    check_dates(req.start_date, req.end_date)?;
    let id = new_id();
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO projects (id, team_id, name, description, key_prefix, status, start_date, end_date, \
         created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
    )
    .bind(&id)
    .bind(&req.team_id)
    .bind(&name)
    .bind(&description)
    .bind(&key)
    .bind(req.status.unwrap_or(ProjectStatus::Active).as_str())
    .bind(date_text(req.start_date))
    .bind(date_text(req.end_date))
    .bind(&auth.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::conflict("key_taken", "another project of the team uses this key"),
        other => other,
    })?;
    boards::insert_default_board(&mut tx, &id, "Board", now).await?;
    crate::chat::project_channel(&mut tx, &id).await?;
    record(&mut tx, &id, &auth.user_id, &[Change::new("created", "project", &id)]).await?;
    tx.commit().await?;
    let project = load_project(&state.db, &id, &auth.user_id).await?;
    publish(&state, &req.team_id, "project.created", json!(project)).await?;
    Ok((StatusCode::CREATED, AppJson(project)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectQuery {
    /// Only this team's projects.
    team_id: Option<String>,
    /// Include archived projects (default false).
    #[serde(default)]
    include_archived: bool,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// The projects of the caller's teams (or of one of them), oldest first.
#[utoipa::path(get, path = "", tag = "projects", security(("bearer" = [])), params(ProjectQuery),
    responses((status = 200, body = Page<Project>)))]
async fn list_projects(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ProjectQuery>,
) -> ApiResult<AppJson<Page<Project>>> {
    if let Some(team) = &q.team_id {
        member_role(&state.db, team, &auth.user_id).await?;
    }
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let mut sql = format!("{PROJECT_SELECT} WHERE p.id > $2");
    if q.team_id.is_some() {
        sql.push_str(" AND p.team_id = $4");
    }
    if !q.include_archived {
        sql.push_str(" AND p.archived_at IS NULL");
    }
    sql.push_str(" ORDER BY p.id LIMIT $3");
    let mut query = sqlx::query_as::<_, ProjectRow>(&sql)
        .bind(&auth.user_id)
        .bind(q.after.as_deref().unwrap_or(""))
        .bind(limit + 1);
    if let Some(team) = &q.team_id {
        query = query.bind(team);
    }
    let rows = query.fetch_all(state.db.pool()).await?;
    let projects = rows.into_iter().map(Project::try_from).collect::<ApiResult<Vec<_>>>()?;
    Ok(AppJson(Page::from_rows(projects, limit, |p| p.id.clone())))
}

/// A project of one of the caller's teams.
#[utoipa::path(get, path = "/{project_id}", tag = "projects", security(("bearer" = [])),
    responses((status = 200, body = Project), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_project(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
) -> ApiResult<AppJson<Project>> {
    Ok(AppJson(load_project(&state.db, &project_id, &auth.user_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateProject {
    name: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// A new key prefix; existing task numbers keep their numbers under it.
    key: Option<String>,
    status: Option<ProjectStatus>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    start_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    end_date: Option<Option<NaiveDate>>,
    /// Archive (true) or restore (false).
    archived: Option<bool>,
}

/// Edit, archive or restore a project (members and above).
#[utoipa::path(patch, path = "/{project_id}", tag = "projects", security(("bearer" = [])), request_body = UpdateProject,
    responses((status = 200, body = Project), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn update_project(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppJson(req): AppJson<UpdateProject>,
) -> ApiResult<AppJson<Project>> {
    let access = access(&state.db, &project_id, &auth.user_id).await?;
    access.require_write()?;
    let current = load_project(&state.db, &project_id, &auth.user_id).await?;
    let name = match &req.name {
        Some(n) => validate::name("name", n, 100)?,
        None => current.name.clone(),
    };
    let description = match &req.description {
        Some(d) => validate::text("description", d.as_deref(), 10_000)?,
        None => current.description.clone(),
    };
    let key = match &req.key {
        Some(k) => key_prefix(k)?,
        None => current.key.clone(),
    };
    let start_date = req.start_date.unwrap_or(current.start_date);
    let end_date = req.end_date.unwrap_or(current.end_date);
    check_dates(start_date, end_date)?;
    let now = now_ms();
    let archived_at = archived_at(req.archived, current.archived_at, now);
    let status = req.status.unwrap_or(current.status);
    let mut diff = Diff::new(Change::new("updated", "project", &project_id));
    diff.field("name", Some(current.name), Some(name.clone()));
    diff.field("description", current.description, description.clone());
    diff.field("key", Some(current.key), Some(key.clone()));
    let status_text = |s: ProjectStatus| Some(s.as_str().to_owned());
    diff.field("status", status_text(current.status), status_text(status));
    diff.field("start_date", date_text(current.start_date), date_text(start_date));
    diff.field("end_date", date_text(current.end_date), date_text(end_date));
    let archived = |a: bool| Some(a.to_string());
    diff.field("archived", archived(current.archived), archived(archived_at.is_some()));
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "UPDATE projects SET name = $1, description = $2, key_prefix = $3, status = $4, start_date = $5, \
         end_date = $6, archived_at = $7, updated_at = $8 WHERE id = $9",
    )
    .bind(&name)
    .bind(&description)
    .bind(&key)
    .bind(status.as_str())
    .bind(date_text(start_date))
    .bind(date_text(end_date))
    .bind(archived_at)
    .bind(now)
    .bind(&project_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::conflict("key_taken", "another project of the team uses this key"),
        other => other,
    })?;
    record(&mut tx, &project_id, &auth.user_id, &diff.changes).await?;
    tx.commit().await?;
    let project = load_project(&state.db, &project_id, &auth.user_id).await?;
    publish(&state, &access.team_id, "project.updated", json!(project)).await?;
    Ok(AppJson(project))
}

/// Delete a project with its boards, tasks and sprints (team admins and owners).
#[utoipa::path(delete, path = "/{project_id}", tag = "projects", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_project(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(project_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let access = access(&state.db, &project_id, &auth.user_id).await?;
    if !access.role.can_manage() {
        return Err(ApiError::Forbidden("only team admins and owners may delete a project"));
    }
    let mut tx = state.db.pool().begin().await?;
    let (name,): (String,) = sqlx::query_as("DELETE FROM projects WHERE id = $1 RETURNING name")
        .bind(&project_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    let event = Event::new("project.deleted", Some(&auth.user_id), "project", &project_id)
        .team(&access.team_id)
        .metadata(json!({ "name": name }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    tracing::info!(project_id = %project_id, "project deleted");
    publish(&state, &access.team_id, "project.deleted", json!({ "id": project_id })).await?;
    Ok(StatusCode::NO_CONTENT)
}
