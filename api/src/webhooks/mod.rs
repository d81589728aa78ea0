//! `/api/v1/webhooks`: a team's HTTP callbacks for room activity. Each event becomes a
//! delivery (logged, listed at `/webhooks/{id}/deliveries`) sent by a durable job and retried
//! with backoff. Requests carry `Convene-Webhook-Timestamp` and `Convene-Webhook-Signature:
//! v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, so receivers can check origin and
//! freshness. Targets that resolve to loopback, private, link-local or otherwise internal
//! addresses are refused (server-side request forgery) unless the address is allow-listed; the
//! checked address is the one connected to, so DNS cannot change it in between.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use convene_auth::OpaqueToken;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::FromRow;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analytics;
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::jobs::{self, Attempt, NewJob};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::teams::member_role;
use crate::time::from_ms;

/// Attempts per delivery: the first and five retries (2 s, 8 s, 32 s, ~2 min, ~8.5 min later).
const MAX_ATTEMPTS: i64 = 6;
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_WEBHOOKS_PER_TEAM: i64 = 20;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
}

/// What a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    RecordingStarted,
    RecordingFinished,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomStarted => "room_started",
            Self::RoomFinished => "room_finished",
            Self::ParticipantJoined => "participant_joined",
            Self::ParticipantLeft => "participant_left",
            Self::RecordingStarted => "recording_started",
            Self::RecordingFinished => "recording_finished",
        }
    }
}

/// Room activity reported by the media plane.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    pub kind: EventType,
    pub room_id: String,
    /// The participant, for participant events.
    pub participant: Option<String>,
    /// When it happened, unix milliseconds.
    pub at: i64,
}

/// A participant's connection over a few seconds, measured by the media plane; only meeting
/// analytics takes these in (summed per participant and session, not kept one by one).
#[derive(Debug, Clone)]
pub struct QualitySample {
    pub room_id: String,
    pub participant: String,
    /// When the window ended, unix milliseconds.
    pub at: i64,
    /// The span measured, milliseconds.
    pub window_ms: i64,
    /// Media bytes received from the participant.
    pub bytes_up: i64,
    /// Media bytes sent to the participant.
    pub bytes_down: i64,
    /// Mean packet loss over the window (worst direction), 0.0 ..= 1.0.
    pub loss: f64,
    /// Worst one-second loss in the window.
    pub max_loss: f64,
    /// Mean round-trip time, when measured.
    pub rtt_ms: Option<i64>,
}

#[derive(Debug)]
enum Intake {
    Activity(RoomEvent),
    Quality(QualitySample),
}

/// Where the media plane reports room activity; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct RoomEventSink(mpsc::UnboundedSender<Intake>);

impl RoomEventSink {
    pub fn report(&self, event: RoomEvent) {
        // Closed only when the server is stopping.
        let _ = self.0.send(Intake::Activity(event));
    }

    pub fn report_quality(&self, sample: QualitySample) {
        let _ = self.0.send(Intake::Quality(sample));
    }
}

/// Takes in reported room activity, in order: records it for meeting analytics and turns it into
/// deliveries for the room's team's webhooks. Quality samples only feed analytics.
pub fn room_event_sink(state: AppState) -> RoomEventSink {
    let (tx, mut rx) = mpsc::unbounded_channel::<Intake>();
    tokio::spawn(async move {
        while let Some(intake) = rx.recv().await {
            let event = match intake {
                Intake::Activity(event) => event,
                Intake::Quality(sample) => {
                    if let Err(e) = analytics::record_quality(&state, &sample).await {
                        tracing::warn!(error = %e, "recording connection quality failed");
                    }
                    continue;
                }
            };
            let team: Result<Option<(String,)>, _> = sqlx::query_as("SELECT team_id FROM rooms WHERE id = $1")
                .bind(&event.room_id)
                .fetch_optional(state.db.pool())
                .await;
            let Ok(Some((team_id,))) = team else { continue };
            if let Err(e) = analytics::record(&state, &event).await {
                tracing::warn!(error = %e, "recording room activity failed");
            }
            let data = json!({ "room_id": event.room_id, "participant_id": event.participant });
            if let Err(e) = publish_live(&state, &team_id, &event, &data).await {
                tracing::warn!(error = %e, "publishing room activity failed");
            }
            if let Err(e) = emit(&state, &team_id, event.kind, data).await {
                tracing::warn!(error = %e, "queueing webhook deliveries failed");
            }
        }
    });
    RoomEventSink(tx)
}

/// Tells everyone who may join the room (team members; guests only when invited) on their
/// `/ws/events` stream, so room lists can show who is in a meeting.
pub(crate) async fn publish_live(state: &AppState, team_id: &str, event: &RoomEvent, data: &Value) -> ApiResult<()> {
    let kind = match event.kind {
        EventType::RoomStarted => "room.started",
        EventType::RoomFinished => "room.finished",
        EventType::ParticipantJoined => "room.participant_joined",
        EventType::ParticipantLeft => "room.participant_left",
        EventType::RecordingStarted => "room.recording_started",
        EventType::RecordingFinished => "room.recording_finished",
    };
    let audience: Vec<(String,)> = sqlx::query_as(
        "SELECT m.user_id FROM team_members m WHERE m.team_id = $1 AND (m.role <> 'guest' \
         OR EXISTS (SELECT 1 FROM room_guests g WHERE g.room_id = $2 AND g.user_id = m.user_id))",
    )
    .bind(team_id)
    .bind(&event.room_id)
    .fetch_all(state.db.pool())
    .await?;
    state.events.publish(audience.iter().map(|(u,)| u.as_str()), kind, data);
    Ok(())
}

/// Queues a delivery of `kind` to every webhook of `team_id` subscribed to it.
pub(crate) async fn emit(state: &AppState, team_id: &str, kind: EventType, data: Value) -> ApiResult<()> {
    let hooks: Vec<(String, String)> = sqlx::query_as("SELECT id, event_types FROM webhooks WHERE team_id = $1")
        .bind(team_id)
        .fetch_all(state.db.pool())
        .await?;
    for (hook_id, types) in hooks {
        if !types.split(',').any(|t| t == kind.as_str()) {
            continue;
        }
        let id = new_id();
        let now = now_ms();
        let payload = json!({
            "id": id, "type": kind.as_str(), "team_id": team_id, "created_at": from_ms(now), "data": data,
        });
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_type, payload, state, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5)",
        )
        .bind(&id)
        .bind(&hook_id)
        .bind(kind.as_str())
        .bind(payload.to_string())
        .bind(now)
        .execute(state.db.pool())
        .await?;
        jobs::enqueue(
            state,
            NewJob {
                kind: jobs::Kind::WebhookDelivery,
                payload: json!({ "delivery_id": id }),
                run_at: now,
                dedupe_key: None,
                max_attempts: MAX_ATTEMPTS,
            },
        )
        .await?;
    }
    Ok(())
}

/// `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"`.
fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// Addresses a webhook must not reach unless allow-listed.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT (RFC 6598).
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
            }
        },
    }
}

/// The URL's host and the address to connect to, checked against the internal ranges.
async fn target(url: &str, allowed: &[IpAddr]) -> Result<(reqwest::Url, String, SocketAddr), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a URL".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must be an http(s) URL without credentials".to_owned());
    }
    let host = parsed.host_str().ok_or("has no host")?.to_owned();
    let port = parsed.port_or_known_default().ok_or("has no port")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|_| "does not resolve".to_owned())?
        .collect();
    let addr = *addrs.first().ok_or("does not resolve")?;
    if addrs.iter().any(|a| is_internal(a.ip()) && !allowed.contains(&a.ip())) {
        return Err("resolves to a loopback, private or internal address".to_owned());
    }
    Ok((parsed, bare, addr))
}

#[derive(FromRow)]
struct DeliveryJob {
    payload: String,
    url: String,
    secret: String,
}

/// The job behind a delivery: one POST; non-2xx or a network error is retried.
pub(crate) async fn deliver(state: &AppState, payload: &Value, attempt: Attempt) -> Result<(), String> {
    let id = payload["delivery_id"].as_str().ok_or("no delivery_id")?;
    let row: Option<DeliveryJob> = sqlx::query_as(
        "SELECT d.payload, w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(|e| e.to_string())?;
    // The webhook was deleted: nothing left to deliver.
    let Some(job) = row else { return Ok(()) };
    let outcome = send(state, &job).await;
    let (delivery_state, status, error) = match &outcome {
        Ok(status) => ("delivered", Some(i64::from(*status)), None),
        Err((status, e)) if attempt.last => ("failed", status.map(i64::from), Some(e.clone())),
        Err((status, e)) => ("pending", status.map(i64::from), Some(e.clone())),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = $2, status_code = $3, last_error = $4, \
         delivered_at = $5 WHERE id = $6",
    )
    .bind(delivery_state)
    .bind(attempt.number)
    .bind(status)
    .bind(&error)
    .bind(outcome.is_ok().then(now_ms))
    .bind(id)
    .execute(state.db.pool())
    .await
    .map_err(|e| e.to_string())?;
    outcome.map(|_| ()).map_err(|(_, e)| e)
}

async fn send(state: &AppState, job: &DeliveryJob) -> Result<u16, (Option<u16>, String)> {
    let (url, host, addr) = target(&job.url, &state.config.webhook_allowed_ips)
        .await
        .map_err(|e| (None, format!("target {e}")))?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .resolve(&host, addr)
        .build()
        .map_err(|e| (None, e.to_string()))?;
    let timestamp = now_ms() / 1000;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "Convene-Webhooks/1")
        .header("convene-webhook-timestamp", timestamp.to_string())
        .header(
            "convene-webhook-signature",
            signature(&job.secret, timestamp, &job.payload),
        )
        .body(job.payload.clone())
        .send()
        .await
        .map_err(|e| (None, format!("request failed: {}", e.without_url())))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("receiver answered {status}")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Webhook {
    id: String,
    team_id: String,
    url: String,
    event_types: Vec<EventType>,
    /// Only in the response that creates the webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct WebhookRow {
    id: String,
    team_id: String,
    url: String,
    event_types: String,
    created_at: i64,
}

fn parse_type(s: &str) -> Option<EventType> {
    serde_json::from_value(Value::String(s.to_owned())).ok()
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Self {
            id: r.id,
            team_id: r.team_id,
            url: r.url,
            event_types: r.event_types.split(',').filter_map(parse_type).collect(),
            secret: None,
            created_at: from_ms(r.created_at),
        }
    }
}

const WEBHOOK_COLUMNS: &str = "id, team_id, url, event_types, created_at";

async fn require_admin(state: &AppState, team_id: &str, user_id: &str) -> ApiResult<()> {
    if member_role(&state.db, team_id, user_id).await?.can_manage() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only team admins and owners manage webhooks"))
    }
}

/// The webhook if the caller administers its team.
async fn owned(state: &AppState, id: &str, user_id: &str) -> ApiResult<WebhookRow> {
    let row: WebhookRow = sqlx::query_as(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"))
        .bind(id)
        .fetch_optional(state.db.pool())
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    member_role(&state.db, &row.team_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("webhook"))?;
    require_admin(state, &row.team_id, user_id).await?;
    Ok(row)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    team_id: String,
    /// http(s) URL on a public address.
    url: String,
    /// At least one.
    event_types: Vec<EventType>,
    /// Signing secret (16-200 characters); generated when absent.
    secret: Option<String>,
}

/// Register a webhook for a team (team admins).
#[utoipa::path(post, path = "", tag = "webhooks", security(("bearer" = [])), request_body = CreateWebhook,
    responses((status = 201, body = Webhook), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateWebhook>,
) -> ApiResult<(StatusCode, AppJson<Webhook>)> {
    require_admin(&state, &req.team_id, &auth.user_id).await?;
    if req.url.len() > 2048 {
        return Err(ApiError::field("url", "must be at most 2048 characters"));
    }
    target(&req.url, &state.config.webhook_allowed_ips)
        .await
        .map_err(|e| ApiError::field("url", e))?;
    let mut types = req.event_types.clone();
    types.sort_by_key(|t| t.as_str());
    types.dedup();
    if types.is_empty() {
        return Err(ApiError::field("event_types", "name at least one event type"));
    }
    let secret = match req.secret {
        Some(s) if (16..=200).contains(&s.chars().count()) => s,
        Some(_) => return Err(ApiError::field("secret", "must be 16-200 characters")),
        None => OpaqueToken::generate().into_string(),
    };
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhooks WHERE team_id = $1")
        .bind(&req.team_id)
        .fetch_one(state.db.pool())
        .await?;
    if count >= MAX_WEBHOOKS_PER_TEAM {
        return Err(ApiError::conflict("limit_reached", "a team has at most 20 webhooks"));
    }
    let now = now_ms();
    let row = WebhookRow {
        id: new_id(),
        team_id: req.team_id,
        url: req.url,
        event_types: types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","),
        created_at: now,
    };
    sqlx::query(
        "INSERT INTO webhooks (id, team_id, url, secret, event_types, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&row.id)
    .bind(&row.team_id)
    .bind(&row.url)
    .bind(&secret)
    .bind(&row.event_types)
    .bind(&auth.user_id)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    let mut hook = Webhook::from(row);
    hook.secret = Some(secret);
    Ok((StatusCode::CREATED, AppJson(hook)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListWebhooks {
    team_id: String,
}

/// A team's webhooks (team admins).
#[utoipa::path(get, path = "", tag = "webhooks", security(("bearer" = [])), params(ListWebhooks),
    responses((status = 200, body = Vec<Webhook>), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn list_webhooks(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListWebhooks>,
) -> ApiResult<AppJson<Vec<Webhook>>> {
    require_admin(&state, &q.team_id, &auth.user_id).await?;
    let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE team_id = $1 ORDER BY id"
    ))
    .bind(&q.team_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(rows.into_iter().map(Webhook::from).collect()))
}

/// One webhook (team admins).
#[utoipa::path(get, path = "/{webhook_id}", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Webhook), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Webhook>> {
    Ok(AppJson(owned(&state, &id, &auth.user_id).await?.into()))
}

/// Remove a webhook; pending deliveries are dropped (team admins).
#[utoipa::path(delete, path = "/{webhook_id}", tag = "webhooks", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    owned(&state, &id, &auth.user_id).await?;
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(&id)
        .execute(state.db.pool())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Delivery {
    id: String,
    #[schema(value_type = EventType)]
    event_type: String,
    /// `pending` (queued or retrying), `delivered` or `failed` (retries exhausted).
    state: String,
    attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    status_code: Option<i64>,
    last_error: Option<String>,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    created_at: i64,
}

/// A webhook's delivery log, oldest first (team admins).
#[utoipa::path(get, path = "/{webhook_id}/deliveries", tag = "webhooks", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<Delivery>), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<Delivery>>> {
    owned(&state, &id, &auth.user_id).await?;
    let rows: Vec<Delivery> = sqlx::query_as(
        "SELECT id, event_type, state, attempts, status_code, last_error, created_at FROM webhook_deliveries \
         WHERE webhook_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(&id)
    .bind(page.after())
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(Page::from_rows(rows, page.limit(), |d| d.id.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let s = signature("secret", 1_700_000_000, "{}");
        assert!(s.starts_with("v1=") && s.len() == 67);
        assert_ne!(s, signature("secret", 1_700_000_001, "{}"));
        assert_ne!(s, signature("secret", 1_700_000_000, "{ }"));
    }
}
