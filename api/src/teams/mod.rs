//! `/api/v1/teams` and `/api/v1/invites`: teams, members, roles and invitations.
//!
//! Rules: only members see a team (everyone else gets 404, so team ids leak nothing);
//! admins and owners manage members and invites; only owners delete the team, grant the
//! owner role or change an owner; the last owner can neither leave nor be demoted. Membership
//! changes and the team's deletion are recorded in the audit log (`crate::audit`).

mod invites;
mod role;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use role::Role;

use crate::audit::{self, Event, Origin};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::time::from_ms;
use crate::validate;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_team, list_teams))
        .routes(routes!(get_team, update_team, delete_team))
        .routes(routes!(list_members, add_member))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(transfer_ownership))
        .merge(invites::team_router())
}

pub(crate) fn invites_router() -> OpenApiRouter<AppState> {
    invites::accept_router()
}

/// The caller's role in `team_id`, or 404 when the caller is not a member (or the team does
/// not exist): other features call this to authorize team-scoped resources.
pub async fn member_role(db: &Db, team_id: &str, user_id: &str) -> ApiResult<Role> {
    let role: Option<(String,)> = sqlx::query_as("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    match role {
        Some((r,)) => Role::parse(&r),
        None => Err(ApiError::NotFound("team")),
    }
}

pub(crate) async fn require_manager(db: &Db, team_id: &str, user_id: &str) -> ApiResult<Role> {
    let role = member_role(db, team_id, user_id).await?;
    if role.can_manage() {
        Ok(role)
    } else {
        Err(ApiError::Forbidden("only team admins and owners may do this"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Team {
    id: String,
    name: String,
    description: Option<String>,
    /// The caller's role in this team.
    role: Role,
    member_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct TeamRow {
    id: String,
    name: String,
    description: Option<String>,
    role: String,
    member_count: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TeamRow> for Team {
    type Error = ApiError;
    fn try_from(r: TeamRow) -> ApiResult<Self> {
        Ok(Self {
            role: Role::parse(&r.role)?,
            id: r.id,
            name: r.name,
            description: r.description,
            member_count: r.member_count,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        })
    }
}

const TEAM_SELECT: &str = "SELECT t.id, t.name, t.description, m.role, \
     (SELECT COUNT(*) FROM team_members c WHERE c.team_id = t.id) AS member_count, \
     t.created_at, t.updated_at \
     FROM teams t JOIN team_members m ON m.team_id = t.id AND m.user_id = $1";

async fn load_team(db: &Db, team_id: &str, user_id: &str) -> ApiResult<Team> {
    sqlx::query_as::<_, TeamRow>(&format!("{TEAM_SELECT} WHERE t.id = $2"))
        .bind(user_id)
        .bind(team_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("team"))?
        .try_into()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTeam {
    name: String,
    description: Option<String>,
}

/// Create a team; the caller becomes its owner.
#[utoipa::path(post, path = "", tag = "teams", security(("bearer" = [])), request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_team(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateTeam>,
) -> ApiResult<(StatusCode, AppJson<Team>)> {
    let name = validate::name("name", &req.name, 100)?;
    let description = validate::text("description", req.description.as_deref(), 2000)?;
    let id = new_id();
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO teams (id, name, description, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&name)
    .bind(&description)
    .bind(&auth.user_id)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)")
        .bind(&id)
        .bind(&auth.user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        AppJson(load_team(&state.db, &id, &auth.user_id).await?),
    ))
}

/// The teams the caller belongs to, oldest first.
#[utoipa::path(get, path = "", tag = "teams", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<Team>)))]
async fn list_teams(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<Team>>> {
    let rows: Vec<TeamRow> = sqlx::query_as(&format!("{TEAM_SELECT} WHERE t.id > $2 ORDER BY t.id LIMIT $3"))
        .bind(&auth.user_id)
        .bind(page.after())
        .bind(page.limit() + 1)
        .fetch_all(state.db.pool())
        .await?;
    let teams = rows.into_iter().map(Team::try_from).collect::<ApiResult<Vec<_>>>()?;
    Ok(AppJson(Page::from_rows(teams, page.limit(), |t| t.id.clone())))
}

/// A team the caller belongs to.
#[utoipa::path(get, path = "/{team_id}", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = Team), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_team(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(team_id): AppPath<String>,
) -> ApiResult<AppJson<Team>> {
    Ok(AppJson(load_team(&state.db, &team_id, &auth.user_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTeam {
    name: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

/// Rename a team or change its description (admins and owners).
#[utoipa::path(patch, path = "/{team_id}", tag = "teams", security(("bearer" = [])), request_body = UpdateTeam,
    responses((status = 200, body = Team), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn update_team(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(team_id): AppPath<String>,
    AppJson(req): AppJson<UpdateTeam>,
) -> ApiResult<AppJson<Team>> {
    require_manager(&state.db, &team_id, &auth.user_id).await?;
    let current = load_team(&state.db, &team_id, &auth.user_id).await?;
    let name = match &req.name {
        Some(n) => validate::name("name", n, 100)?,
        None => current.name,
    };
    let description = match &req.description {
        Some(d) => validate::text("description", d.as_deref(), 2000)?,
        None => current.description,
    };
    sqlx::query("UPDATE teams SET name = $1, description = $2, updated_at = $3 WHERE id = $4")
        .bind(&name)
        .bind(&description)
        .bind(now_ms())
        .bind(&team_id)
        .execute(state.db.pool())
        .await?;
    Ok(AppJson(load_team(&state.db, &team_id, &auth.user_id).await?))
}

/// Delete a team and everything in it (owners only).
#[utoipa::path(delete, path = "/{team_id}", tag = "teams", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_team(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(team_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    if member_role(&state.db, &team_id, &auth.user_id).await? != Role::Owner {
        return Err(ApiError::Forbidden("only team owners may delete a team"));
    }
    let files = crate::files::team_file_ids(state.db.pool(), &team_id).await?;
    let mut tx = state.db.pool().begin().await?;
    let (name,): (String,) = sqlx::query_as("DELETE FROM teams WHERE id = $1 RETURNING name")
        .bind(&team_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("team"))?;
    let event = Event::new("team.deleted", Some(&auth.user_id), "team", &team_id)
        .team(&team_id)
        .metadata(json!({ "name": name }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    crate::files::remove_blobs(&state.config.data_dir, &files).await;
    tracing::info!(team_id = %team_id, "team deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Member {
    user_id: String,
    username: String,
    display_name: String,
    avatar_url: Option<String>,
    #[schema(value_type = Role)]
    role: String,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    joined_at: i64,
}

const MEMBER_SELECT: &str = "SELECT m.user_id, u.username, u.display_name, u.avatar_url, m.role, m.joined_at \
     FROM team_members m JOIN users u ON u.id = m.user_id";

async fn load_member(db: &Db, team_id: &str, user_id: &str) -> ApiResult<Member> {
    sqlx::query_as(&format!("{MEMBER_SELECT} WHERE m.team_id = $1 AND m.user_id = $2"))
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("member"))
}

/// The team's members (any member may look).
#[utoipa::path(get, path = "/{team_id}/members", tag = "teams", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<Member>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(team_id): AppPath<String>,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<Member>>> {
    member_role(&state.db, &team_id, &auth.user_id).await?;
    let rows: Vec<Member> = sqlx::query_as(&format!(
        "{MEMBER_SELECT} WHERE m.team_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3"
    ))
    .bind(&team_id)
    .bind(page.after())
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(Page::from_rows(rows, page.limit(), |m| m.user_id.clone())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddMember {
    /// The user's id; or give `login` instead.
    user_id: Option<String>,
    /// The user's e-mail address or username.
    login: Option<String>,
    role: Role,
}

/// Whether `actor` may give `target_role` to someone whose role is now `current`.
fn may_assign(actor: Role, current: Option<Role>, target_role: Role) -> ApiResult<()> {
    if !actor.can_manage() {
        return Err(ApiError::Forbidden("only team admins and owners may manage members"));
    }
    if (target_role == Role::Owner || current == Some(Role::Owner)) && actor != Role::Owner {
        return Err(ApiError::Forbidden("only owners may grant or change the owner role"));
    }
    Ok(())
}

/// Add a registered user to the team (admins and owners; owners for the owner role).
#[utoipa::path(post, path = "/{team_id}/members", tag = "teams", security(("bearer" = [])), request_body = AddMember,
    responses((status = 201, body = Member), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(team_id): AppPath<String>,
    AppJson(req): AppJson<AddMember>,
) -> ApiResult<(StatusCode, AppJson<Member>)> {
    let actor = member_role(&state.db, &team_id, &auth.user_id).await?;
    may_assign(actor, None, req.role)?;
    let user: Option<(String,)> = match (&req.user_id, &req.login) {
        (Some(id), None) => {
            sqlx::query_as("SELECT id FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(state.db.pool())
                .await?
        }
        (None, Some(login)) => {
            sqlx::query_as("SELECT id FROM users WHERE email = $1 OR username = $1")
                .bind(login.trim().to_lowercase())
                .fetch_optional(state.db.pool())
                .await?
        }
        _ => {
            return Err(ApiError::field("user_id", "give exactly one of user_id and login"));
        }
    };
    let (user_id,) = user.ok_or(ApiError::NotFound("user"))?;
    sqlx::query("INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)")
        .bind(&team_id)
        .bind(&user_id)
        .bind(req.role.as_str())
        .bind(now_ms())
        .execute(state.db.pool())
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict { .. } => ApiError::conflict("already_member", "the user is already a member"),
            other => other,
        })?;
    let event = Event::new("member.added", Some(&auth.user_id), "member", &user_id)
        .team(&team_id)
        .metadata(json!({ "role": req.role }));
    audit::record(state.db.pool(), &origin, event).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(load_member(&state.db, &team_id, &user_id).await?),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateMember {
    role: Role,
}

/// Applies `sql` (which must leave the team with an owner) unless it would remove the last one.
async fn change_unless_last_owner(
    db: &Db,
    sql: &str,
    team_id: &str,
    user_id: &str,
    role: Option<Role>,
) -> ApiResult<()> {
    // The owner count is checked in the same statement, so two owners demoting each other
    // at once cannot leave the team without one.
    let guard = " AND (role <> 'owner' OR (SELECT COUNT(*) FROM team_members o \
                 WHERE o.team_id = $1 AND o.role = 'owner') > 1)";
    let sql = format!("{sql}{guard} RETURNING user_id");
    let mut q = sqlx::query_as::<_, (String,)>(&sql).bind(team_id).bind(user_id);
    if let Some(r) = role {
        q = q.bind(r.as_str());
    }
    match q.fetch_optional(db.pool()).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::conflict("last_owner", "a team must keep at least one owner")),
    }
}

/// Change a member's role (admins and owners; owners for anything touching the owner role).
#[utoipa::path(patch, path = "/{team_id}/members/{user_id}", tag = "teams", security(("bearer" = [])),
    request_body = UpdateMember,
    responses((status = 200, body = Member), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn update_member(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath((team_id, user_id)): AppPath<(String, String)>,
    AppJson(req): AppJson<UpdateMember>,
) -> ApiResult<AppJson<Member>> {
    let actor = member_role(&state.db, &team_id, &auth.user_id).await?;
    let current = Role::parse(&load_member(&state.db, &team_id, &user_id).await?.role)?;
    may_assign(actor, Some(current), req.role)?;
    if current == Role::Owner && req.role != Role::Owner {
        change_unless_last_owner(
            &state.db,
            "UPDATE team_members SET role = $3 WHERE team_id = $1 AND user_id = $2",
            &team_id,
            &user_id,
            Some(req.role),
        )
        .await?;
    } else {
        sqlx::query("UPDATE team_members SET role = $1 WHERE team_id = $2 AND user_id = $3")
            .bind(req.role.as_str())
            .bind(&team_id)
            .bind(&user_id)
            .execute(state.db.pool())
            .await?;
    }
    if current != req.role {
        let event = Event::new("member.role_changed", Some(&auth.user_id), "member", &user_id)
            .team(&team_id)
            .metadata(json!({ "from": current, "to": req.role }));
        audit::record(state.db.pool(), &origin, event).await?;
    }
    Ok(AppJson(load_member(&state.db, &team_id, &user_id).await?))
}

/// Remove a member (admins and owners; owners to remove an owner), or leave the team
/// yourself (any member).
#[utoipa::path(delete, path = "/{team_id}/members/{user_id}", tag = "teams", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath((team_id, user_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let actor = member_role(&state.db, &team_id, &auth.user_id).await?;
    let current = Role::parse(&load_member(&state.db, &team_id, &user_id).await?.role)?;
    if user_id != auth.user_id {
        if !actor.can_manage() {
            return Err(ApiError::Forbidden("only team admins and owners may remove members"));
        }
        if current == Role::Owner && actor != Role::Owner {
            return Err(ApiError::Forbidden("only owners may remove an owner"));
        }
    }
    change_unless_last_owner(
        &state.db,
        "DELETE FROM team_members WHERE team_id = $1 AND user_id = $2",
        &team_id,
        &user_id,
        None,
    )
    .await?;
    let action = if user_id == auth.user_id {
        "member.left"
    } else {
        "member.removed"
    };
    let event = Event::new(action, Some(&auth.user_id), "member", &user_id)
        .team(&team_id)
        .metadata(json!({ "role": current }));
    audit::record(state.db.pool(), &origin, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferOwnership {
    /// The member who becomes an owner.
    user_id: String,
}

/// Hand the team over (owners): the member becomes an owner and the caller an admin, at once.
#[utoipa::path(post, path = "/{team_id}/transfer-ownership", tag = "teams", security(("bearer" = [])),
    request_body = TransferOwnership,
    responses((status = 200, body = Member, description = "the new owner"), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn transfer_ownership(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(team_id): AppPath<String>,
    AppJson(req): AppJson<TransferOwnership>,
) -> ApiResult<AppJson<Member>> {
    if member_role(&state.db, &team_id, &auth.user_id).await? != Role::Owner {
        return Err(ApiError::Forbidden("only owners may transfer ownership"));
    }
    if req.user_id == auth.user_id {
        return Err(ApiError::field("user_id", "name another member"));
    }
    let previous = Role::parse(&load_member(&state.db, &team_id, &req.user_id).await?.role)?;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE team_members SET role = 'owner' WHERE team_id = $1 AND user_id = $2")
        .bind(&team_id)
        .bind(&req.user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE team_members SET role = 'admin' WHERE team_id = $1 AND user_id = $2")
        .bind(&team_id)
        .bind(&auth.user_id)
        .execute(&mut *tx)
        .await?;
    let event = Event::new(
        "team.ownership_transferred",
        Some(&auth.user_id),
        "member",
        &req.user_id,
    )
    .team(&team_id)
    .metadata(json!({ "from_user_id": auth.user_id, "previous_role": previous }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    Ok(AppJson(load_member(&state.db, &team_id, &req.user_id).await?))
}
