//! Durable background work: calendar reminders and webhook deliveries live in the `jobs` table,
//! so they survive a restart. A runner claims due jobs with a lease (a crashed runner's jobs
//! become due again when the lease runs out), runs them, and retries failures with exponential
//! backoff up to each job's `max_attempts`. Enqueuing wakes the runner; otherwise it sleeps until
//! the next job is due.

use std::time::Duration;

use serde_json::Value;
use sqlx::FromRow;
use tokio::task::JoinHandle;

use crate::db::{new_id, now_ms};
use crate::error::ApiResult;
use crate::state::AppState;
use crate::{calendar, webhooks};

/// How long a claimed job is reserved for its runner.
const LEASE_MS: i64 = 60_000;
/// Jobs claimed per round.
const BATCH: i64 = 16;
/// The runner looks again at least this often (jobs enqueued by other nodes).
const IDLE_WAIT_MS: i64 = 30_000;
/// First retry delay; each further attempt waits four times longer.
const RETRY_BASE_MS: i64 = 2_000;
const RETRY_MAX_MS: i64 = 3_600_000;

/// What a job does; stored as its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    EventReminder,
    WebhookDelivery,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::EventReminder => "event_reminder",
            Self::WebhookDelivery => "webhook_delivery",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "event_reminder" => Some(Self::EventReminder),
            "webhook_delivery" => Some(Self::WebhookDelivery),
            _ => None,
        }
    }
}

pub(crate) struct NewJob {
    pub(crate) kind: Kind,
    pub(crate) payload: Value,
    /// Unix milliseconds.
    pub(crate) run_at: i64,
    /// At most one pending job per key: enqueuing again replaces it.
    pub(crate) dedupe_key: Option<String>,
    pub(crate) max_attempts: i64,
}

/// Stores a job and wakes the runner.
pub(crate) async fn enqueue(state: &AppState, job: NewJob) -> ApiResult<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, dedupe_key, run_at, max_attempts, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) \
         ON CONFLICT (dedupe_key) DO UPDATE SET payload = excluded.payload, run_at = excluded.run_at, \
           max_attempts = excluded.max_attempts, state = 'pending', attempts = 0, locked_until = 0, \
           last_error = NULL, updated_at = excluded.updated_at",
    )
    .bind(new_id())
    .bind(job.kind.as_str())
    .bind(job.payload.to_string())
    .bind(job.dedupe_key)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    state.jobs.notify_one();
    Ok(())
}

/// Drops pending jobs whose dedupe key starts with `prefix`.
pub(crate) async fn cancel(state: &AppState, prefix: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM jobs WHERE state = 'pending' AND dedupe_key LIKE $1")
        .bind(format!("{prefix}%"))
        .execute(state.db.pool())
        .await?;
    Ok(())
}

#[derive(FromRow)]
struct Claimed {
    id: String,
    kind: String,
    payload: String,
    attempts: i64,
    max_attempts: i64,
}

/// One run of a job: the attempt number (from 1) and whether no retry follows a failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub(crate) number: i64,
    pub(crate) last: bool,
}

/// Runs due jobs until the server shuts down.
pub fn spawn_runner(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !state.shutdown.is_cancelled() {
            let now = now_ms();
            let claimed = match claim(&state, now).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed");
                    Vec::new()
                }
            };
            let busy = !claimed.is_empty();
            for job in claimed {
                run(&state, job).await;
            }
            if busy {
                continue;
            }
            let wait = next_due(&state)
                .await
                .map_or(IDLE_WAIT_MS, |t| (t - now_ms()).clamp(0, IDLE_WAIT_MS));
            tokio::select! {
                () = state.jobs.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) => {}
                () = state.shutdown.cancelled() => return,
            }
        }
    })
}

async fn claim(state: &AppState, now: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    // The outer `locked_until` check makes concurrent runners (other nodes) skip rows another
    // runner claimed between the subquery and the update.
    sqlx::query_as(
        "UPDATE jobs SET locked_until = $1, attempts = attempts + 1, updated_at = $2 \
         WHERE state = 'pending' AND locked_until <= $2 AND id IN ( \
           SELECT id FROM jobs WHERE state = 'pending' AND run_at <= $2 AND locked_until <= $2 \
           ORDER BY run_at LIMIT $3) \
         RETURNING id, kind, payload, attempts, max_attempts",
    )
    .bind(now + LEASE_MS)
    .bind(now)
    .bind(BATCH)
    .fetch_all(state.db.pool())
    .await
}

async fn next_due(state: &AppState) -> Option<i64> {
    let row: Result<(Option<i64>,), _> = sqlx::query_as(
        "SELECT MIN(CASE WHEN locked_until > run_at THEN locked_until ELSE run_at END) FROM jobs \
         WHERE state = 'pending'",
    )
    .fetch_one(state.db.pool())
    .await;
    row.ok().and_then(|(t,)| t)
}

async fn run(state: &AppState, job: Claimed) {
    let attempt = Attempt {
        number: job.attempts,
        last: job.attempts >= job.max_attempts,
    };
    let outcome = match (Kind::parse(&job.kind), serde_json::from_str::<Value>(&job.payload)) {
        (Some(Kind::EventReminder), Ok(payload)) => calendar::fire_reminder(state, &payload).await,
        (Some(Kind::WebhookDelivery), Ok(payload)) => webhooks::deliver(state, &payload, attempt).await,
        (None, _) => Err(format!("unknown job kind {}", job.kind)),
        (_, Err(e)) => Err(format!("bad payload: {e}")),
    };
    let now = now_ms();
    let result = match outcome {
        Ok(()) => {
            sqlx::query("DELETE FROM jobs WHERE id = $1 AND locked_until > $2")
                .bind(&job.id)
                .bind(now)
                .execute(state.db.pool())
                .await
        }
        Err(error) if attempt.last => {
            tracing::warn!(job = %job.id, kind = %job.kind, error = %error, "job failed for good");
            sqlx::query("UPDATE jobs SET state = 'failed', last_error = $1, updated_at = $2 WHERE id = $3")
                .bind(&error)
                .bind(now)
                .bind(&job.id)
                .execute(state.db.pool())
                .await
        }
        Err(error) => {
            let exponent = u32::try_from(job.attempts.saturating_sub(1))
                .unwrap_or(u32::MAX)
                .min(10);
            let delay = RETRY_BASE_MS
                .saturating_mul(4_i64.saturating_pow(exponent))
                .min(RETRY_MAX_MS);
            tracing::info!(job = %job.id, kind = %job.kind, attempt = job.attempts, error = %error, "job will be retried");
            sqlx::query("UPDATE jobs SET run_at = $1, locked_until = 0, last_error = $2, updated_at = $3 WHERE id = $4")
                .bind(now + delay)
                .bind(&error)
                .bind(now)
                .bind(&job.id)
                .execute(state.db.pool())
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(job = %job.id, error = %e, "recording a job's outcome failed");
    }
}
