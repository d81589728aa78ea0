//! Team invitations: single-use, expiring tokens, optionally bound to an e-mail address.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use convene_auth::{OpaqueToken, hash_token};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Role, Team, load_team, may_assign, member_role, require_manager};
use crate::audit::{self, Event, Origin};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AuthUser};
use crate::state::AppState;
use crate::time::from_ms;
use crate::validate::Email;

pub(super) fn team_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_invite, list_invites))
        .routes(routes!(revoke_invite))
}

pub(super) fn accept_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(accept_invite))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Invite {
    id: String,
    team_id: String,
    /// Only this address may accept, when set.
    email: Option<String>,
    role: Role,
    invited_by: Option<String>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

/// A new invite with its secret token: shown once, stored only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedInvite {
    #[serde(flatten)]
    invite: Invite,
    token: String,
    /// `POST` here (authenticated) to join the team.
    accept_url: String,
}

#[derive(FromRow)]
struct InviteRow {
    id: String,
    team_id: String,
    email: Option<String>,
    role: String,
    invited_by: Option<String>,
    expires_at: i64,
    created_at: i64,
}

impl TryFrom<InviteRow> for Invite {
    type Error = ApiError;
    fn try_from(r: InviteRow) -> ApiResult<Self> {
        Ok(Self {
            role: Role::parse(&r.role)?,
            id: r.id,
            team_id: r.team_id,
            email: r.email,
            invited_by: r.invited_by,
            expires_at: from_ms(r.expires_at),
            created_at: from_ms(r.created_at),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateInvite {
    email: Option<String>,
    role: Role,
}

/// Invite someone to the team (admins and owners; owners for the owner role).
#[utoipa::path(post, path = "/{team_id}/invites", tag = "teams", security(("bearer" = [])),
    request_body = CreateInvite,
    responses((status = 201, body = CreatedInvite), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn create_invite(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(team_id): AppPath<String>,
    AppJson(req): AppJson<CreateInvite>,
) -> ApiResult<(StatusCode, AppJson<CreatedInvite>)> {
    let actor = member_role(&state.db, &team_id, &auth.user_id).await?;
    may_assign(actor, None, req.role)?;
    let email = req.email.as_deref().map(Email::parse).transpose()?;
    let token = OpaqueToken::generate();
    let now = now_ms();
    let ttl = i64::try_from(state.config.invite_ttl.as_millis()).unwrap_or(i64::MAX);
    let row = InviteRow {
        id: new_id(),
        team_id,
        email: email.map(|e| e.as_str().to_owned()),
        role: req.role.as_str().to_owned(),
        invited_by: Some(auth.user_id.clone()),
        expires_at: now.saturating_add(ttl),
        created_at: now,
    };
    sqlx::query(
        "INSERT INTO team_invites (id, team_id, token_hash, email, role, invited_by, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.id)
    .bind(&row.team_id)
    .bind(token.hash())
    .bind(&row.email)
    .bind(&row.role)
    .bind(&row.invited_by)
    .bind(row.expires_at)
    .bind(row.created_at)
    .execute(state.db.pool())
    .await?;
    // Whether the invite names an address is kept, never the address.
    let event = Event::new("invite.created", Some(&auth.user_id), "invite", &row.id)
        .team(&row.team_id)
        .metadata(json!({ "role": row.role, "email_bound": row.email.is_some() }));
    audit::record(state.db.pool(), &origin, event).await?;
    let accept_url = format!("{}/api/v1/invites/{}/accept", state.config.public_url, token.as_str());
    Ok((
        StatusCode::CREATED,
        AppJson(CreatedInvite {
            invite: row.try_into()?,
            token: token.into_string(),
            accept_url,
        }),
    ))
}

/// Pending invites of the team (admins and owners).
#[utoipa::path(get, path = "/{team_id}/invites", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = Vec<Invite>), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn list_invites(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(team_id): AppPath<String>,
) -> ApiResult<AppJson<Vec<Invite>>> {
    require_manager(&state.db, &team_id, &auth.user_id).await?;
    let rows: Vec<InviteRow> = sqlx::query_as(
        "SELECT id, team_id, email, role, invited_by, expires_at, created_at FROM team_invites \
         WHERE team_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2 ORDER BY id",
    )
    .bind(&team_id)
    .bind(now_ms())
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(
        rows.into_iter().map(Invite::try_from).collect::<ApiResult<_>>()?,
    ))
}

/// Revoke a pending invite (admins and owners).
#[utoipa::path(delete, path = "/{team_id}/invites/{invite_id}", tag = "teams", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn revoke_invite(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath((team_id, invite_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    require_manager(&state.db, &team_id, &auth.user_id).await?;
    let done = sqlx::query(
        "UPDATE team_invites SET revoked_at = $1 WHERE id = $2 AND team_id = $3 \
         AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(&invite_id)
    .bind(&team_id)
    .execute(state.db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("invite"));
    }
    let event = Event::new("invite.revoked", Some(&auth.user_id), "invite", &invite_id).team(&team_id);
    audit::record(state.db.pool(), &origin, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(FromRow)]
struct PendingInvite {
    id: String,
    team_id: String,
    email: Option<String>,
    role: String,
    expires_at: i64,
    accepted_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// Join a team with an invite token. The token works once and expires.
#[utoipa::path(post, path = "/{token}/accept", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = Team), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 410, body = convene_proto::ErrorBody)))]
async fn accept_invite(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(token): AppPath<String>,
) -> ApiResult<AppJson<Team>> {
    let invite: PendingInvite = sqlx::query_as(
        "SELECT id, team_id, email, role, expires_at, accepted_at, revoked_at FROM team_invites WHERE token_hash = $1",
    )
    .bind(hash_token(&token))
    .fetch_optional(state.db.pool())
    .await?
    .ok_or(ApiError::NotFound("invite"))?;
    let now = now_ms();
    if invite.accepted_at.is_some() || invite.revoked_at.is_some() {
        return Err(ApiError::Gone("this invite has already been used or was revoked"));
    }
    if invite.expires_at <= now {
        return Err(ApiError::Gone("this invite has expired"));
    }
    if let Some(email) = &invite.email {
        let (mine,): (String,) = sqlx::query_as("SELECT email FROM users WHERE id = $1")
            .bind(&auth.user_id)
            .fetch_one(state.db.pool())
            .await?;
        if &mine != email {
            return Err(ApiError::Forbidden("this invite is for another e-mail address"));
        }
    }
    if member_role(&state.db, &invite.team_id, &auth.user_id).await.is_ok() {
        return Err(ApiError::conflict(
            "already_member",
            "you are already a member of this team",
        ));
    }
    let role = Role::parse(&invite.role)?;
    let mut tx = state.db.pool().begin().await?;
    // Claim the invite first: of two concurrent accepts only one succeeds.
    let claimed = sqlx::query(
        "UPDATE team_invites SET accepted_by = $1, accepted_at = $2 \
         WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(&auth.user_id)
    .bind(now)
    .bind(&invite.id)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() != 1 {
        return Err(ApiError::Gone("this invite has already been used or was revoked"));
    }
    sqlx::query("INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)")
        .bind(&invite.team_id)
        .bind(&auth.user_id)
        .bind(role.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let event = Event::new("invite.accepted", Some(&auth.user_id), "invite", &invite.id)
        .team(&invite.team_id)
        .metadata(json!({ "role": role }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    Ok(AppJson(load_team(&state.db, &invite.team_id, &auth.user_id).await?))
}
