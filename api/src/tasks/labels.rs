//! `/api/v1/labels`: colored labels shared by all projects of a team. Members list them;
//! members and above create, edit and delete them.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::projects;
use crate::state::AppState;
use crate::teams::{Role, member_role};
use crate::validate;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_labels, create_label))
        .routes(routes!(update_label, delete_label))
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Label {
    id: String,
    team_id: String,
    name: String,
    /// `#rrggbb`.
    color: String,
}

/// A `#rrggbb` color, stored lower-case.
fn color(raw: &str) -> ApiResult<String> {
    let c = raw.trim().to_ascii_lowercase();
    if c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|d| d.is_ascii_hexdigit()) {
        Ok(c)
    } else {
        Err(ApiError::field("color", "must be a #rrggbb color"))
    }
}

fn conflict(e: sqlx::Error) -> ApiError {
    match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::conflict("label_exists", "the team already has a label of that name"),
        other => other,
    }
}

/// The label and the caller's role in its team (404 for outsiders and unknown labels).
async fn label_access(db: &Db, label_id: &str, user_id: &str) -> ApiResult<(Label, Role)> {
    let label: Label = sqlx::query_as("SELECT id, team_id, name, color FROM labels WHERE id = $1")
        .bind(label_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("label"))?;
    let role = member_role(db, &label.team_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("label"))?;
    Ok((label, role))
}

fn require_member(role: Role) -> ApiResult<()> {
    if role >= Role::Member {
        Ok(())
    } else {
        Err(ApiError::Forbidden("guests cannot change labels"))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelQuery {
    team_id: String,
}

/// A team's labels by name.
#[utoipa::path(get, path = "", tag = "tasks", security(("bearer" = [])), params(LabelQuery),
    responses((status = 200, body = Vec<Label>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_labels(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<LabelQuery>,
) -> ApiResult<AppJson<Vec<Label>>> {
    member_role(&state.db, &q.team_id, &auth.user_id).await?;
    let labels = sqlx::query_as("SELECT id, team_id, name, color FROM labels WHERE team_id = $1 ORDER BY name, id")
        .bind(&q.team_id)
        .fetch_all(state.db.pool())
        .await?;
    Ok(AppJson(labels))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateLabel {
    team_id: String,
    name: String,
    /// `#rrggbb`.
    color: String,
}

/// Create a team label (members and above).
#[utoipa::path(post, path = "", tag = "tasks", security(("bearer" = [])), request_body = CreateLabel,
    responses((status = 201, body = Label), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn create_label(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateLabel>,
) -> ApiResult<(StatusCode, AppJson<Label>)> {
    require_member(member_role(&state.db, &req.team_id, &auth.user_id).await?)?;
    let label = Label {
        id: new_id(),
        team_id: req.team_id,
        name: validate::name("name", &req.name, 50)?,
        color: color(&req.color)?,
    };
    sqlx::query("INSERT INTO labels (id, team_id, name, color, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&label.id)
        .bind(&label.team_id)
        .bind(&label.name)
        .bind(&label.color)
        .bind(now_ms())
        .execute(state.db.pool())
        .await
        .map_err(conflict)?;
    projects::publish(&state, &label.team_id, "label.created", json!(label)).await?;
    Ok((StatusCode::CREATED, AppJson(label)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateLabel {
    name: Option<String>,
    color: Option<String>,
}

/// Rename or recolor a label (members and above).
#[utoipa::path(patch, path = "/{label_id}", tag = "tasks", security(("bearer" = [])), request_body = UpdateLabel,
    responses((status = 200, body = Label), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn update_label(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(label_id): AppPath<String>,
    AppJson(req): AppJson<UpdateLabel>,
) -> ApiResult<AppJson<Label>> {
    let (mut label, role) = label_access(&state.db, &label_id, &auth.user_id).await?;
    require_member(role)?;
    if let Some(n) = &req.name {
        label.name = validate::name("name", n, 50)?;
    }
    if let Some(c) = &req.color {
        label.color = color(c)?;
    }
    sqlx::query("UPDATE labels SET name = $1, color = $2 WHERE id = $3")
        .bind(&label.name)
        .bind(&label.color)
        .bind(&label_id)
        .execute(state.db.pool())
        .await
        .map_err(conflict)?;
    projects::publish(&state, &label.team_id, "label.updated", json!(label)).await?;
    Ok(AppJson(label))
}

/// Delete a label; tasks lose it (members and above).
#[utoipa::path(delete, path = "/{label_id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_label(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(label_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (label, role) = label_access(&state.db, &label_id, &auth.user_id).await?;
    require_member(role)?;
    sqlx::query("DELETE FROM labels WHERE id = $1")
        .bind(&label_id)
        .execute(state.db.pool())
        .await?;
    projects::publish(&state, &label.team_id, "label.deleted", json!({ "id": label_id })).await?;
    Ok(StatusCode::NO_CONTENT)
}
