//! Kanban boards of a project: ordered columns holding ordered tasks, and the move endpoint.
//!
//! `/api/v1/projects/{project_id}/boards`, `/api/v1/boards/{board_id}` (with its columns and
//! their tasks, in order), `/api/v1/boards/{board_id}/columns`, `/api/v1/columns/{column_id}`
//! and `PUT /api/v1/boards/{board_id}/tasks/{task_id}/move`.
//!
//! Order is kept with fractional keys ([`rank`]) unique per column (per board for columns): a
//! move rewrites one row. A move carries the version the client last saw; the row is updated
//! only if it still has that version (one conditional `UPDATE`), so of two clients moving the
//! same task at once exactly one wins and the other gets 409 with the current task.

pub(crate) mod rank;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Any, FromRow, Transaction};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::projects::activity::{Change, Diff, record, record_on_pool};
use crate::projects::{self, Access, text_enum};
use crate::sprints;
use crate::state::AppState;
use crate::tasks::{self, Task, TaskError};
use crate::time::from_ms;
use crate::validate;

/// Routes under `/api/v1/projects`.
pub(crate) fn project_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_boards, create_board))
}

/// Routes under `/api/v1/boards`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_board, update_board))
        .routes(routes!(create_column))
        .routes(routes!(move_task))
}

/// Routes under `/api/v1/columns`.
pub(crate) fn columns_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(update_column, delete_column))
}

text_enum!(
    /// What a column means for progress: sprints and burndown count tasks in `done` columns
    /// as finished.
    Category { Backlog = "backlog", Todo = "todo", InProgress = "in_progress", Done = "done" }
);

const DEFAULT_COLUMNS: [(&str, Category); 4] = [
    ("Backlog", Category::Backlog),
    ("To do", Category::Todo),
    ("In progress", Category::InProgress),
    ("Done", Category::Done),
];

/// Creates a board with the default columns inside `tx`; returns its id.
pub(crate) async fn insert_default_board(
    tx: &mut Transaction<'static, Any>,
    project_id: &str,
    name: &str,
    now: i64,
) -> ApiResult<String> {
    let board_id = new_id();
    sqlx::query("INSERT INTO boards (id, project_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(&board_id)
        .bind(project_id)
        .bind(name)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let mut key = rank::between(None, None);
    for (column, category) in DEFAULT_COLUMNS {
        sqlx::query(
            "INSERT INTO board_columns (id, board_id, name, category, rank, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(new_id())
        .bind(&board_id)
        .bind(column)
        .bind(category.as_str())
        .bind(&key)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        key = rank::between(Some(&key), None);
    }
    Ok(board_id)
}

/// An ordered set: tasks ordered within a column, or columns within a board.
#[derive(Clone, Copy)]
pub(crate) enum Ordered {
    Tasks,
    Columns,
}

impl Ordered {
    fn table_and_scope(self) -> (&'static str, &'static str) {
        match self {
            Self::Tasks => ("tasks", "column_id"),
            Self::Columns => ("board_columns", "board_id"),
        }
    }
}

/// The key for placing `item` in `scope` right after `after_id`, right before `before_id`,
/// or (neither given) at the end. The item itself is ignored as a neighbour, so moving
/// within its own scope works.
pub(crate) async fn slot(
    db: &Db,
    set: Ordered,
    scope: &str,
    item: &str,
    before_id: Option<&str>,
    after_id: Option<&str>,
) -> ApiResult<String> {
    let (table, scope_col) = set.table_and_scope();
    let anchor = |field: &'static str, id: &str| {
        let sql = format!("SELECT rank FROM {table} WHERE id = $1 AND {scope_col} = $2");
        let id = id.to_owned();
        async move {
            if id == item {
                return Err(ApiError::field(field, "must be another item than the one placed"));
            }
            let row: Option<(String,)> = sqlx::query_as(&sql)
                .bind(&id)
                .bind(scope)
                .fetch_optional(db.pool())
                .await?;
            row.map(|(r,)| r)
                .ok_or_else(|| ApiError::field(field, "is not in the target column"))
        }
    };
    let neighbour = |cmp: &str, agg: &str, key: Option<&str>| {
        let sql = match key {
            Some(_) => format!("SELECT {agg}(rank) FROM {table} WHERE {scope_col} = $1 AND id <> $2 AND rank {cmp} $3"),
            None => format!("SELECT {agg}(rank) FROM {table} WHERE {scope_col} = $1 AND id <> $2"),
        };
        let key = key.map(str::to_owned);
        async move {
            let mut q = sqlx::query_as::<_, (Option<String>,)>(&sql).bind(scope).bind(item);
            if let Some(k) = key {
                q = q.bind(k);
            }
            Ok::<_, ApiError>(q.fetch_one(db.pool()).await?.0)
        }
    };
    let (low, high) = match (before_id, after_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                "before_id",
                "give at most one of before_id and after_id",
            ));
        }
        (None, Some(a)) => {
            let a = anchor("after_id", a).await?;
            let next = neighbour(">", "MIN", Some(&a)).await?;
            (Some(a), next)
        }
        (Some(b), None) => {
            let b = anchor("before_id", b).await?;
            let prev = neighbour("<", "MAX", Some(&b)).await?;
            (prev, Some(b))
        }
        (None, None) => (neighbour("", "MAX", None).await?, None),
    };
    Ok(rank::between(low.as_deref(), high.as_deref()))
}

/// How often a placement is tried when other writers keep taking the same key meanwhile (each
/// round, one of the contenders wins).
pub(crate) const PLACEMENT_ATTEMPTS: usize = 16;

/// The error of a placement's last attempt: a key still taken means "busy, retry".
pub(crate) fn placement_failed(e: ApiError) -> ApiError {
    if is_key_collision(&e) {
        ApiError::conflict("position_contended", "others are placing items at this position; retry")
    } else {
        e
    }
}

/// Whether `e` is the unique violation of a concurrently taken ordering key.
pub(crate) fn is_key_collision(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Conflict {
            code: "already_exists",
            ..
        }
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Board {
    id: String,
    project_id: String,
    name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct BoardRow {
    id: String,
    project_id: String,
    name: String,
    created_at: i64,
    updated_at: i64,
}

impl From<BoardRow> for Board {
    fn from(r: BoardRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Column {
    id: String,
    board_id: String,
    name: String,
    category: Category,
    /// Ordering key within the board.
    rank: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ColumnRow {
    id: String,
    board_id: String,
    name: String,
    category: String,
    rank: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ColumnRow> for Column {
    type Error = ApiError;
    fn try_from(r: ColumnRow) -> ApiResult<Self> {
        Ok(Self {
            category: Category::parse(&r.category)?,
            id: r.id,
            board_id: r.board_id,
            name: r.name,
            rank: r.rank,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        })
    }
}

/// A column with its tasks in board order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnWithTasks {
    #[serde(flatten)]
    column: Column,
    tasks: Vec<Task>,
}

/// A board with its columns in order, each with its (unarchived) tasks in order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BoardView {
    #[serde(flatten)]
    board: Board,
    columns: Vec<ColumnWithTasks>,
}

const COLUMN_SELECT: &str = "SELECT id, board_id, name, category, rank, created_at, updated_at FROM board_columns";

/// The board's project access for the caller (404 for outsiders and unknown boards).
async fn board_access(db: &Db, board_id: &str, user_id: &str) -> ApiResult<(Board, Access)> {
    let row: Option<BoardRow> =
        sqlx::query_as("SELECT id, project_id, name, created_at, updated_at FROM boards WHERE id = $1")
            .bind(board_id)
            .fetch_optional(db.pool())
            .await?;
    let board = Board::from(row.ok_or(ApiError::NotFound("board"))?);
    let access = projects::access(db, &board.project_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("board"))?;
    Ok((board, access))
}

async fn load_column(db: &Db, column_id: &str) -> ApiResult<Column> {
    sqlx::query_as::<_, ColumnRow>(&format!("{COLUMN_SELECT} WHERE id = $1"))
        .bind(column_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("column"))?
        .try_into()
}

/// The column and the caller's access to its project (404 for outsiders and unknown columns).
async fn column_access(db: &Db, column_id: &str, user_id: &str) -> ApiResult<(Column, Board, Access)> {
    let column = load_column(db, column_id).await?;
    let (board, access) = board_access(db, &column.board_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("column"))?;
    Ok((column, board, access))
}

async fn load_board_view(db: &Db, board: Board) -> ApiResult<BoardView> {
    let rows: Vec<ColumnRow> = sqlx::query_as(&format!("{COLUMN_SELECT} WHERE board_id = $1 ORDER BY rank"))
        .bind(&board.id)
        .fetch_all(db.pool())
        .await?;
    let mut tasks = tasks::board_tasks(db, &board.id).await?;
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let column = Column::try_from(row)?;
        let (mine, rest): (Vec<Task>, Vec<Task>) = tasks.into_iter().partition(|t| t.column_id == column.id);
        tasks = rest;
        columns.push(ColumnWithTasks { column, tasks: mine });
    }
    Ok(BoardView { board, columns })
}

/// The project's boards, oldest first.
#[utoipa::path(get, path = "/{project_id}/boards", tag = "boards", security(("bearer" = [])),
    responses((status = 200, body = Vec<Board>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_boards(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
) -> ApiResult<AppJson<Vec<Board>>> {
    projects::access(&state.db, &project_id, &auth.user_id).await?;
    let rows: Vec<BoardRow> = sqlx::query_as(
        "SELECT id, project_id, name, created_at, updated_at FROM boards WHERE project_id = $1 ORDER BY id",
    )
    .bind(&project_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(rows.into_iter().map(Board::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BoardName {
    name: String,
}

/// Add a board (with the default columns) to a project (members and above).
#[utoipa::path(post, path = "/{project_id}/boards", tag = "boards", security(("bearer" = [])), request_body = BoardName,
    responses((status = 201, body = BoardView), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_board(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppJson(req): AppJson<BoardName>,
) -> ApiResult<(StatusCode, AppJson<BoardView>)> {
    let access = projects::access(&state.db, &project_id, &auth.user_id).await?;
    access.require_write()?;
    let name = validate::name("name", &req.name, 100)?;
    let mut tx = state.db.pool().begin().await?;
    let id = insert_default_board(&mut tx, &project_id, &name, now_ms()).await?;
    let change = Change::new("created", "board", &id).field("name", None, Some(name));
    record(&mut tx, &project_id, &auth.user_id, &[change]).await?;
    tx.commit().await?;
    let (board, _) = board_access(&state.db, &id, &auth.user_id).await?;
    let view = load_board_view(&state.db, board).await?;
    projects::publish(&state, &access.team_id, "board.created", json!(view)).await?;
    Ok((StatusCode::CREATED, AppJson(view)))
}

/// A board with its columns and their tasks, in order.
#[utoipa::path(get, path = "/{board_id}", tag = "boards", security(("bearer" = [])),
    responses((status = 200, body = BoardView), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_board(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(board_id): AppPath<String>,
) -> ApiResult<AppJson<BoardView>> {
    let (board, _) = board_access(&state.db, &board_id, &auth.user_id).await?;
    Ok(AppJson(load_board_view(&state.db, board).await?))
}

/// Rename a board (members and above).
#[utoipa::path(patch, path = "/{board_id}", tag = "boards", security(("bearer" = [])), request_body = BoardName,
    responses((status = 200, body = Board), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_board(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(board_id): AppPath<String>,
    AppJson(req): AppJson<BoardName>,
) -> ApiResult<AppJson<Board>> {
    let (current, access) = board_access(&state.db, &board_id, &auth.user_id).await?;
    access.require_write()?;
    let name = validate::name("name", &req.name, 100)?;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("UPDATE boards SET name = $1, updated_at = $2 WHERE id = $3")
        .bind(&name)
        .bind(now_ms())
        .bind(&board_id)
        .execute(&mut *tx)
        .await?;
    let mut diff = Diff::new(Change::new("updated", "board", &board_id));
    diff.field("name", Some(current.name), Some(name));
    record(&mut tx, &current.project_id, &auth.user_id, &diff.changes).await?;
    tx.commit().await?;
    let (board, _) = board_access(&state.db, &board_id, &auth.user_id).await?;
    projects::publish(&state, &access.team_id, "board.updated", json!(board)).await?;
    Ok(AppJson(board))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateColumn {
    name: String,
    /// Defaults to `todo`.
    category: Option<Category>,
    /// Place right before this column; default: at the end.
    before_id: Option<String>,
    /// Place right after this column.
    after_id: Option<String>,
}

/// Add a column to a board (members and above).
#[utoipa::path(post, path = "/{board_id}/columns", tag = "boards", security(("bearer" = [])), request_body = CreateColumn,
    responses((status = 201, body = Column), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_column(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(board_id): AppPath<String>,
    AppJson(req): AppJson<CreateColumn>,
) -> ApiResult<(StatusCode, AppJson<Column>)> {
    let (board, access) = board_access(&state.db, &board_id, &auth.user_id).await?;
    access.require_write()?;
    let name = validate::name("name", &req.name, 100)?;
    let id = new_id();
    let now = now_ms();
    let mut attempt = 0;
    loop {
        let key = slot(
            &state.db,
            Ordered::Columns,
            &board_id,
            &id,
            req.before_id.as_deref(),
            req.after_id.as_deref(),
        )
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO board_columns (id, board_id, name, category, rank, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(&board_id)
        .bind(&name)
        .bind(req.category.unwrap_or(Category::Todo).as_str())
        .bind(&key)
        .bind(now)
        .execute(state.db.pool())
        .await
        .map_err(ApiError::from);
        match inserted {
            Err(e) if is_key_collision(&e) && attempt + 1 < PLACEMENT_ATTEMPTS => attempt += 1,
            other => {
                other.map_err(placement_failed)?;
                break;
            }
        };
    }
    let column = load_column(&state.db, &id).await?;
    let change = Change::new("created", "column", &id).field("name", None, Some(column.name.clone()));
    record_on_pool(&state.db, &board.project_id, &auth.user_id, &[change]).await?;
    projects::publish(&state, &access.team_id, "column.created", json!(column)).await?;
    Ok((StatusCode::CREATED, AppJson(column)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateColumn {
    name: Option<String>,
    category: Option<Category>,
    /// Reorder: place right before this column of the board.
    before_id: Option<String>,
    /// Reorder: place right after this column of the board.
    after_id: Option<String>,
}

/// Rename, recategorise or reorder a column (members and above).
#[utoipa::path(patch, path = "/{column_id}", tag = "boards", security(("bearer" = [])), request_body = UpdateColumn,
    responses((status = 200, body = Column), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_column(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(column_id): AppPath<String>,
    AppJson(req): AppJson<UpdateColumn>,
) -> ApiResult<AppJson<Column>> {
    let (current, board, access) = column_access(&state.db, &column_id, &auth.user_id).await?;
    access.require_write()?;
    let name = match &req.name {
        Some(n) => validate::name("name", n, 100)?,
        None => current.name.clone(),
    };
    let category = req.category.unwrap_or(current.category);
    let reorder = req.before_id.is_some() || req.after_id.is_some();
    let mut attempt = 0;
    loop {
        let key = if reorder {
            slot(
                &state.db,
                Ordered::Columns,
                &board.id,
                &column_id,
                req.before_id.as_deref(),
                req.after_id.as_deref(),
            )
            .await?
        } else {
            current.rank.clone()
        };
        let updated =
            sqlx::query("UPDATE board_columns SET name = $1, category = $2, rank = $3, updated_at = $4 WHERE id = $5")
                .bind(&name)
                .bind(category.as_str())
                .bind(&key)
                .bind(now_ms())
                .bind(&column_id)
                .execute(state.db.pool())
                .await
                .map_err(ApiError::from);
        match updated {
            Err(e) if is_key_collision(&e) && attempt + 1 < PLACEMENT_ATTEMPTS => attempt += 1,
            other => {
                other.map_err(placement_failed)?;
                break;
            }
        };
    }
    let column = load_column(&state.db, &column_id).await?;
    let mut diff = Diff::new(Change::new("updated", "column", &column_id));
    diff.field("name", Some(current.name.clone()), Some(column.name.clone()));
    let text = |c: Category| Some(c.as_str().to_owned());
    diff.field("category", text(current.category), text(category));
    diff.field("rank", Some(current.rank.clone()), Some(column.rank.clone()));
    record_on_pool(&state.db, &board.project_id, &auth.user_id, &diff.changes).await?;
    if category != current.category {
        // Tasks in the column may have become finished or unfinished.
        sprints::refresh_for_column(&state.db, &column_id).await?;
    }
    projects::publish(&state, &access.team_id, "column.updated", json!(column)).await?;
    Ok(AppJson(column))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteColumnQuery {
    /// Another column of the same board that receives the tasks (appended in their order).
    move_to: String,
}

/// Delete a column, moving its tasks to another column of the board (members and above).
#[utoipa::path(delete, path = "/{column_id}", tag = "boards", security(("bearer" = [])), params(DeleteColumnQuery),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn delete_column(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(column_id): AppPath<String>,
    AppQuery(q): AppQuery<DeleteColumnQuery>,
) -> ApiResult<StatusCode> {
    let (column, board, access) = column_access(&state.db, &column_id, &auth.user_id).await?;
    access.require_write()?;
    let target = load_column(&state.db, &q.move_to)
        .await
        .ok()
        .filter(|t| t.board_id == column.board_id && t.id != column.id)
        .ok_or_else(|| ApiError::field("move_to", "must be another column of the same board"))?;
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    // Writing first takes SQLite's write lock up front, so the reads below see a stable column.
    sqlx::query("UPDATE board_columns SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&target.id)
        .execute(&mut *tx)
        .await?;
    let (last,): (Option<String>,) = sqlx::query_as("SELECT MAX(rank) FROM tasks WHERE column_id = $1")
        .bind(&target.id)
        .fetch_one(&mut *tx)
        .await?;
    let moving: Vec<(String,)> = sqlx::query_as("SELECT id FROM tasks WHERE column_id = $1 ORDER BY rank")
        .bind(&column_id)
        .fetch_all(&mut *tx)
        .await?;
    let mut key = last;
    let mut changes = vec![Change::new("deleted", "column", &column_id).field("name", Some(column.name.clone()), None)];
    for (task_id,) in &moving {
        changes.push(Change::on_task("moved", "task", task_id, task_id).field(
            "column_id",
            Some(column_id.clone()),
            Some(target.id.clone()),
        ));
        let next = rank::between(key.as_deref(), None);
        sqlx::query("UPDATE tasks SET column_id = $1, rank = $2, version = version + 1, updated_at = $3 WHERE id = $4")
            .bind(&target.id)
            .bind(&next)
            .bind(now)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        key = Some(next);
    }
    sqlx::query("DELETE FROM board_columns WHERE id = $1")
        .bind(&column_id)
        .execute(&mut *tx)
        .await?;
    record(&mut tx, &board.project_id, &auth.user_id, &changes).await?;
    tx.commit().await?;
    if column.category != target.category {
        sprints::refresh_for_column(&state.db, &target.id).await?;
    }
    for (task_id,) in &moving {
        let task = tasks::load_task(&state.db, task_id).await?;
        let what = format!(
            "moved {} to {} (column {} deleted)",
            task.key(),
            target.name,
            column.name
        );
        let data = json!({ "task": task, "from_column_id": column_id });
        projects::publish_task_change(
            &state,
            &access.team_id,
            &board.project_id,
            &auth.user_id,
            "task.moved",
            data,
            &what,
        )
        .await?;
    }
    let audience = access.audience(&state.db).await?;
    let data = json!({ "id": column_id, "board_id": column.board_id, "moved_to": target.id });
    state
        .events
        .publish(audience.iter().map(String::as_str), "column.deleted", &data);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveTask {
    /// The target column (of this board).
    column_id: String,
    /// Place right before this task of the target column.
    before_id: Option<String>,
    /// Place right after this task of the target column. With neither, the task goes last.
    after_id: Option<String>,
    /// The task's `version` as the client last saw it.
    expected_version: i64,
}

/// Move a task to a position in a column of the board (members and above). A stale
/// `expected_version` gets 409 with the current task.
#[utoipa::path(put, path = "/{board_id}/tasks/{task_id}/move", tag = "boards", security(("bearer" = [])),
    request_body = MoveTask,
    responses((status = 200, body = Task), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = tasks::VersionConflict),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn move_task(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((board_id, task_id)): AppPath<(String, String)>,
    AppJson(req): AppJson<MoveTask>,
) -> Result<AppJson<Task>, TaskError> {
    let (task, access) = tasks::task_access(&state.db, &task_id, &auth.user_id).await?;
    let (board, _) = board_access(&state.db, &board_id, &auth.user_id).await?;
    if board.project_id != task.project_id {
        return Err(ApiError::NotFound("task").into());
    }
    access.require_write()?;
    let target = load_column(&state.db, &req.column_id)
        .await
        .ok()
        .filter(|c| c.board_id == board.id)
        .ok_or_else(|| ApiError::field("column_id", "is not a column of this board"))?;
    if task.version != req.expected_version {
        return Err(TaskError::Stale(Box::new(task)));
    }
    let mut attempt = 0;
    let moved = loop {
        let key = slot(
            &state.db,
            Ordered::Tasks,
            &target.id,
            &task_id,
            req.before_id.as_deref(),
            req.after_id.as_deref(),
        )
        .await?;
        let change = if target.id == task.column_id {
            Change::on_task("moved", "task", &task_id, &task_id).field(
                "rank",
                Some(task.rank.clone()),
                Some(key.clone()),
            )
        } else {
            Change::on_task("moved", "task", &task_id, &task_id).field(
                "column_id",
                Some(task.column_id.clone()),
                Some(target.id.clone()),
            )
        };
        match apply_move(&state.db, &task, &target.id, &key, &auth.user_id, change).await {
            Err(e) if is_key_collision(&e) && attempt + 1 < PLACEMENT_ATTEMPTS => attempt += 1,
            other => break other.map_err(placement_failed)?,
        }
    };
    let current = tasks::load_task(&state.db, &task_id).await?;
    if !moved {
        return Err(TaskError::Stale(Box::new(current)));
    }
    if let Some(sprint_id) = &current.sprint_id {
        sprints::record_snapshot(&state.db, sprint_id).await?;
    }
    let what = format!("moved {} to {}", current.key(), target.name);
    let data = json!({ "task": current, "from_column_id": task.column_id });
    projects::publish_task_change(
        &state,
        &access.team_id,
        &task.project_id,
        &auth.user_id,
        "task.moved",
        data,
        &what,
    )
    .await?;
    Ok(AppJson(current))
}

/// Moves `task` (if it still has the version it was read at) to `key` in `column_id`, and
/// records the move, in one transaction. Returns false when the version was stale.
async fn apply_move(db: &Db, task: &Task, column_id: &str, key: &str, actor: &str, change: Change) -> ApiResult<bool> {
    let mut tx = db.pool().begin().await?;
    let result = sqlx::query(
        "UPDATE tasks SET column_id = $1, rank = $2, version = version + 1, updated_at = $3 \
         WHERE id = $4 AND version = $5",
    )
    .bind(column_id)
    .bind(key)
    .bind(now_ms())
    .bind(&task.id)
    .bind(task.version)
    .execute(&mut *tx)
    .await?;
    if result.rows_affected() == 0 {
        return Ok(false);
    }
    record(&mut tx, &task.project_id, actor, &[change]).await?;
    tx.commit().await?;
    Ok(true)
}
