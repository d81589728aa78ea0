//! API integration tests against the real server. The same suite runs on SQLite (default)
//! and on PostgreSQL (`CONVENE_TEST_POSTGRES_URL`; see scripts/test.sh).
#![allow(clippy::unwrap_used)]

mod analytics;
mod audit;
mod auth;
mod boards;
mod calendar;
mod chat;
mod errors;
mod events;
mod files;
mod gdpr;
mod helpers;
mod meetings;
mod notes;
mod notifications;
mod ops;
mod project_channel;
mod projects;
mod recordings;
mod rooms;
mod search;
mod signal;
mod sprints;
mod tasks;
mod teams;
mod timer;
mod timesheets;
mod web;
mod webhooks;
mod work_access;
