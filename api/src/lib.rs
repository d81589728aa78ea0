//! The REST API: one router per feature, merged under `/api/v1`, documented as OpenAPI 3.1.

mod analytics;
mod audit;
mod auth;
mod boards;
mod calendar;
mod chat;
pub mod db;
pub mod error;
pub mod events;
pub mod extract;
mod files;
mod gdpr;
mod jobs;
mod meetings;
mod notes;
mod notifications;
mod pagination;
mod projects;
pub mod recordings;
pub mod rooms;
mod search;
mod sprints;
mod state;
mod tasks;
pub mod teams;
mod time;
mod timer;
mod timesheets;
mod validate;
pub mod webhooks;

use axum::Router;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use db::{Backend, Db, DbError};
pub use error::ApiError;
pub use jobs::spawn_runner as spawn_job_runner;
pub use notifications::{Mailer, MailerError, spawn_digests};
pub use state::{ApiConfig, AppState};

/// Routes (method, route template) whose request body may take longer than
/// `ApiConfig::request_timeout`: file uploads, whose size and the client's link decide; each of
/// their chunks must arrive within it instead.
pub const LONG_BODY_ROUTES: &[(&str, &str)] = &[("POST", "/api/v1/files/upload")];

#[derive(OpenApi)]
#[openapi(
    info(title = "Convene API", description = "REST API of the Convene collaboration server."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts, sessions and the caller's profile"),
        (name = "teams", description = "Teams, members, roles and invitations"),
        (name = "rooms", description = "Video rooms, their live state and join tokens"),
        (name = "recordings", description = "Room recordings: start, stop, files per track with a manifest, downloads with ranges"),
        (name = "chat", description = "Channels, direct messages, messages, reactions, pins, read markers, typing and presence"),
        (name = "notifications", description = "A user's notifications and their read state"),
        (name = "projects", description = "A team's projects"),
        (name = "boards", description = "Kanban boards, their columns and moving tasks"),
        (name = "tasks", description = "Tasks, labels, subtasks, comments and relations"),
        (name = "sprints", description = "Sprints and their burndown"),
        (name = "time", description = "Time entries, timers and time reports"),
        (name = "analytics", description = "Team, project, personal and meeting dashboards computed from the source data"),
        (name = "meetings", description = "Scheduled meetings: a calendar event with its room"),
        (name = "webhooks", description = "Team webhooks for room activity, signed, retried, with a delivery log"),
        (name = "calendar", description = "Calendar events, recurrence, RSVPs, reminders and the iCalendar feed"),
        (name = "files", description = "Team files: uploads, downloads with ranges, quotas"),
        (name = "notes", description = "Markdown notes of teams and projects, with edit history"),
        (name = "search", description = "Ranked full-text search over what the caller may see"),
        (name = "gdpr", description = "Export of all the caller's data, and account deletion"),
        (name = "timer", description = "Focus sessions, pomodoro cycles, daily goals and focus stats"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// All API routes under `/api/v1`, and the OpenAPI document describing them.
pub fn router(state: AppState) -> (Router, OpenApiDoc) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1/auth", auth::router())
        .nest("/api/v1/teams", teams::router().merge(audit::team_router()))
        .nest("/api/v1/invites", teams::invites_router())
        .nest("/api/v1/rooms", rooms::router())
        .nest("/api/v1", recordings::router())
        .nest("/api/v1/chat", chat::router())
        .nest("/api/v1/notifications", notifications::router())
        .nest(
            "/api/v1/projects",
            projects::router()
                .merge(boards::project_router())
                .merge(tasks::project_router())
                .merge(sprints::project_router()),
        )
        .nest("/api/v1/boards", boards::router())
        .nest("/api/v1/columns", boards::columns_router())
        .nest("/api/v1/tasks", tasks::router())
        .nest("/api/v1/labels", tasks::labels_router())
        .nest("/api/v1/sprints", sprints::router())
        .nest("/api/v1/time-entries", timesheets::router())
        // Task time tracking (timesheets) and focus sessions (timer) share the prefix.
        .nest("/api/v1/timer", timesheets::timer_router().merge(timer::router()))
        .nest("/api/v1/reports", timesheets::reports_router())
        .nest("/api/v1/events", calendar::router())
        .nest("/api/v1/calendar", calendar::feed_router())
        .nest("/api/v1/webhooks", webhooks::router())
        .nest("/api/v1/meetings", meetings::router())
        .nest("/api/v1/analytics", analytics::router())
        .nest("/api/v1/files", files::router())
        .nest("/api/v1/notes", notes::router())
        .nest("/api/v1/search", search::router())
        .nest("/api/v1/me", gdpr::router().merge(audit::me_router()))
        .with_state(state.clone())
        .split_for_parts();
    let sockets = events::router().merge(chat::ws_router()).with_state(state);
    (router.merge(sockets), doc)
}
