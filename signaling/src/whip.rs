//! WHIP (`POST /whip/{room}`, RFC 9725) and WHEP (`POST /whep/{room}`): one HTTP request with an
//! SDP offer creates a media session, `DELETE` on the returned `Location` ends it. Standard
//! clients (OBS, GStreamer `whipclientsink`, browser players) need nothing else.
//!
//! - A WHIP publisher joins the room as a participant with only a publisher connection: the
//!   WebSocket participants see it join and publish like anyone else.
//! - A WHEP viewer joins with only a subscriber connection built from its own offer: its
//!   receiving m-lines carry the room's tracks (or only `?participant=ID`'s).
//!
//! Browser clients on other origins may use both (CORS: any origin, since the bearer token and
//! not a cookie authorizes; `Location`, `Link` and `WWW-Authenticate` readable).
//!
//! Both are authorized by the room's join token as a bearer token (RFC 9725 §4.5). The session
//! URL holds 256 random bits and is the capability to end the session, so a client can still end
//! it after its join token expired. The server is ICE-lite and learns client addresses from
//! their connectivity checks, so trickle ICE (`PATCH`) is not needed and answered 405.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use convene_api::extract::{AppPath, AppQuery};
use convene_auth::{JoinClaims, OpaqueToken, PublishSource, TokenError, hash_token};
use convene_proto::{ErrorBody, ErrorDetail, IceServer};
use convene_sfu::{Events, ParticipantEvent, ParticipantHandle, ParticipantId, ParticipantInfo, RoomId, SfuError};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{Any, CorsLayer};

use crate::Signaling;
use crate::ws::grants;

/// Largest SDP offer accepted; browsers' offers are a few KiB, a hundred m-lines stay below.
const MAX_SDP: usize = 128 * 1024;
/// Time a new session has to get its media connection up before it is ended.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

struct HttpSession {
    kind: Kind,
    room: String,
    /// The participant, for room activity and quality reports (analytics, webhooks), as for
    /// WebSocket participants; `None` for a hidden one.
    reported: Option<String>,
    handle: ParticipantHandle,
    /// Cancelled when `DELETE` ends the session, so its watcher stops.
    ended: CancellationToken,
}

/// The WHIP/WHEP sessions, by the hash of their session id (as tokens are kept elsewhere).
struct Endpoints {
    signaling: Arc<Signaling>,
    sessions: Mutex<HashMap<String, HttpSession>>,
}

impl Endpoints {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, HttpSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn router(signaling: Arc<Signaling>) -> Router {
    let endpoints = Arc::new(Endpoints {
        signaling,
        sessions: Mutex::new(HashMap::new()),
    });
    // OPTIONS has handlers of its own so that the CORS layer (which answers preflights before
    // them) wraps it: the app's method-not-allowed fallback is outside this router's layers.
    let options = |allow: &'static str| move || async move { (StatusCode::NO_CONTENT, [(ALLOW, allow)]) };
    Router::new()
        .route("/whip/{room}", post(whip).options(options("POST, OPTIONS")))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(end_whip)
                .patch(no_trickle)
                .options(options("DELETE, PATCH, OPTIONS")),
        )
        .route("/whep/{room}", post(whep).options(options("POST, OPTIONS")))
        .route(
            "/whep/{room}/{session}",
            axum::routing::delete(end_whep)
                .patch(no_trickle)
                .options(options("DELETE, PATCH, OPTIONS")),
        )
        .layer(DefaultBodyLimit::max(MAX_SDP))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([AUTHORIZATION, CONTENT_TYPE])
                .expose_headers([LOCATION, LINK, WWW_AUTHENTICATE]),
        )
        .with_state(endpoints)
}

/// Why a WHIP/WHEP request failed; rendered as the REST error body.
#[derive(Debug)]
enum HttpError {
    Unauthorized(&'static str, &'static str),
    Forbidden(&'static str, &'static str),
    UnsupportedMediaType,
    PayloadTooLarge,
    BadRequest(&'static str, String),
    NotFound(&'static str, &'static str),
    Conflict(&'static str, String),
    MethodNotAllowed,
    Unavailable,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            HttpError::Unauthorized(code, m) => (StatusCode::UNAUTHORIZED, code, m.to_owned()),
            HttpError::Forbidden(code, m) => (StatusCode::FORBIDDEN, code, m.to_owned()),
            HttpError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be an SDP offer (Content-Type: application/sdp)".to_owned(),
            ),
            HttpError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("SDP offers are limited to {MAX_SDP} bytes"),
            ),
            HttpError::BadRequest(code, m) => (StatusCode::BAD_REQUEST, code, m),
            HttpError::NotFound(code, m) => (StatusCode::NOT_FOUND, code, m.to_owned()),
            HttpError::Conflict(code, m) => (StatusCode::CONFLICT, code, m),
            HttpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "trickle ICE and ICE restarts are not supported: the server is ICE-lite".to_owned(),
            ),
            HttpError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the media server is not available".to_owned(),
            ),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                fields: Default::default(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        match status {
            // RFC 6750 §3.
            StatusCode::UNAUTHORIZED => {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // RFC 9110 §15.5.6: a 405 lists what the resource does allow.
            StatusCode::METHOD_NOT_ALLOWED => {
                response.headers_mut().insert(ALLOW, HeaderValue::from_static("DELETE"));
            }
            _ => {}
        }
        response
    }
}

fn now_secs() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// Checks the bearer join token against the room in the path.
fn authorize(signaling: &Signaling, headers: &HeaderMap, room: &str) -> Result<JoinClaims, HttpError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()))
        .ok_or(HttpError::Unauthorized(
            "missing_token",
            "send the room's join token as `Authorization: Bearer <token>`",
        ))?;
    let claims = signaling.join_tokens.verify(token, now_secs()).map_err(|e| match e {
        TokenError::Expired => HttpError::Unauthorized("token_expired", "the join token has expired; get a new one"),
        TokenError::Invalid => HttpError::Unauthorized("invalid_token", "the join token is not valid"),
    })?;
    if claims.room != room {
        return Err(HttpError::Forbidden("wrong_room", "the join token is for another room"));
    }
    Ok(claims)
}

/// The SDP offer in the body, after the content type and size checks.
fn offer(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<String, HttpError> {
    // RFC 9725 §4.2: the offer is `application/sdp` (parameters such as charset are tolerated).
    let is_sdp = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return Err(HttpError::UnsupportedMediaType);
    }
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::PayloadTooLarge
        } else {
            HttpError::BadRequest("invalid_body", "the request body could not be read".to_owned())
        }
    })?;
    match String::from_utf8(body.to_vec()) {
        Ok(sdp) if !sdp.trim().is_empty() => Ok(sdp),
        _ => Err(HttpError::BadRequest(
            "invalid_sdp",
            "the body is not an SDP offer".to_owned(),
        )),
    }
}

fn sfu_error(e: SfuError) -> HttpError {
    match e {
        SfuError::InvalidSdp(detail) => {
            HttpError::BadRequest("invalid_sdp", format!("the SDP offer was refused: {detail}"))
        }
        SfuError::DuplicateParticipant => HttpError::Conflict(
            "already_in_room",
            "this identity is already in the room; end its other session first".to_owned(),
        ),
        SfuError::NotAllowed => HttpError::Forbidden("not_allowed", "the join token does not allow this"),
        SfuError::UnknownParticipant => HttpError::NotFound("participant_not_found", "no such participant in the room"),
        SfuError::InvalidId => HttpError::BadRequest("invalid_request", "invalid room or participant id".to_owned()),
        _ => HttpError::Unavailable,
    }
}

/// Refuses a join that would exceed the token's participant limit.
async fn check_capacity(signaling: &Signaling, claims: &JoinClaims, room: &RoomId) -> Result<(), HttpError> {
    let Some(max) = claims.max_participants else {
        return Ok(());
    };
    let present = signaling
        .sfu
        .room_snapshot(room)
        .await
        .map_or(0, |s| s.participants.len());
    if present >= usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(HttpError::Conflict(
            "room_full",
            format!("the room admits {max} participants"),
        ));
    }
    Ok(())
}

fn ids(claims: &JoinClaims) -> Result<(RoomId, ParticipantId), HttpError> {
    match (
        RoomId::parse(claims.room.clone()),
        ParticipantId::parse(claims.sub.clone()),
    ) {
        (Ok(room), Ok(participant)) => Ok((room, participant)),
        _ => Err(HttpError::Unauthorized(
            "invalid_token",
            "the join token names no valid room",
        )),
    }
}

fn info(claims: &JoinClaims) -> ParticipantInfo {
    ParticipantInfo {
        name: claims.name.clone(),
        grants: grants(&claims.grants),
        auto_subscribe: false,
    }
}

/// `POST /whip/{room}`: publish into the room.
async fn whip(
    State(endpoints): State<Arc<Endpoints>>,
    AppPath(room): AppPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let signaling = &endpoints.signaling;
    let claims = authorize(signaling, &headers, &room)?;
    if ![PublishSource::Audio, PublishSource::Video]
        .into_iter()
        .any(|s| claims.grants.may_publish(s))
    {
        return Err(HttpError::Forbidden(
            "publish_not_allowed",
            "the join token does not allow publishing",
        ));
    }
    let sdp = offer(&headers, body)?;
    let (room_id, participant) = ids(&claims)?;
    let _serialized = signaling.join_lock.lock().await;
    check_capacity(signaling, &claims, &room_id).await?;
    let (handle, events, answer) = signaling
        .sfu
        .join_publisher(room_id, participant, info(&claims), sdp)
        .await
        .map_err(sfu_error)?;
    Ok(created(&endpoints, Kind::Whip, &claims, handle, events, answer))
}

/// `POST /whep/{room}[?participant=ID]`: watch the room (or one participant in it).
async fn whep(
    State(endpoints): State<Arc<Endpoints>>,
    AppPath(room): AppPath<String>,
    AppQuery(query): AppQuery<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let signaling = &endpoints.signaling;
    let claims = authorize(signaling, &headers, &room)?;
    if !claims.grants.subscribe {
        return Err(HttpError::Forbidden(
            "subscribe_not_allowed",
            "the join token does not allow subscribing",
        ));
    }
    let from = match query.get("participant") {
        Some(p) => Some(
            ParticipantId::parse(p.clone())
                .map_err(|_| HttpError::NotFound("participant_not_found", "no such participant in the room"))?,
        ),
        None => None,
    };
    let sdp = offer(&headers, body)?;
    let (room_id, participant) = ids(&claims)?;
    let _serialized = signaling.join_lock.lock().await;
    check_capacity(signaling, &claims, &room_id).await?;
    let (handle, events, answer) = signaling
        .sfu
        .join_viewer(room_id, participant, info(&claims), sdp, from)
        .await
        .map_err(sfu_error)?;
    Ok(created(&endpoints, Kind::Whep, &claims, handle, events, answer))
}

/// Registers a new session and answers 201 with its URL and the SDP answer (RFC 9725 §4.2).
fn created(
    endpoints: &Arc<Endpoints>,
    kind: Kind,
    claims: &JoinClaims,
    handle: ParticipantHandle,
    events: Events,
    answer: String,
) -> Response {
    let id = OpaqueToken::generate();
    let key = id.hash();
    let ended = CancellationToken::new();
    let location = format!("/{}/{}/{}", kind.as_str(), claims.room, id.as_str());
    let reported = (!claims.grants.hidden).then(|| claims.sub.clone());
    endpoints.sessions().insert(
        key.clone(),
        HttpSession {
            kind,
            room: claims.room.clone(),
            reported: reported.clone(),
            handle,
            ended: ended.clone(),
        },
    );
    tracing::info!(kind = kind.as_str(), room = %claims.room, participant = %claims.sub, "session started");
    if let Some(participant) = &reported {
        endpoints.signaling.report_joined(&claims.room, participant);
    }
    let room = claims.room.clone();
    tokio::spawn(watch(endpoints.clone(), key, events, ended, room, reported));

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    // The room id came from a token we signed; an id unfit for a header cannot be addressed.
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, v);
    }
    for link in ice_links(&endpoints.signaling.config.ice.servers_for(&claims.sub, now_secs())) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(LINK, v);
        }
    }
    (StatusCode::CREATED, headers, answer).into_response()
}

/// RFC 9725 §4.6: STUN/TURN servers as `Link` headers, the form WHIP/WHEP clients configure
/// their ICE agents from.
fn ice_links(servers: &[IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{user}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

/// Follows a session's media events: it ends when its client never connects or stays
/// disconnected for the resume grace period (a client that vanished without `DELETE`), or when
/// the SFU removes it (room closed).
async fn watch(
    endpoints: Arc<Endpoints>,
    key: String,
    mut events: Events,
    ended: CancellationToken,
    room: String,
    reported: Option<String>,
) {
    let grace = endpoints.signaling.config.resume_grace;
    let mut deadline = Some(tokio::time::Instant::now() + CONNECT_TIMEOUT);
    let stale = loop {
        let expiry = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = ended.cancelled() => return,
            event = events.recv() => match event.map(|e| *e) {
                Some(ParticipantEvent::MediaConnection { connected: true, .. }) => deadline = None,
                Some(ParticipantEvent::MediaConnection { connected: false, .. }) => {
                    deadline = Some(tokio::time::Instant::now() + grace);
                }
                Some(ParticipantEvent::Error { code, .. }) => tracing::warn!(code, "media session error"),
                Some(ParticipantEvent::QualityReport(report)) => {
                    if let Some(participant) = &reported {
                        endpoints.signaling.report_quality(&room, participant, &report);
                    }
                }
                Some(ParticipantEvent::Removed { .. }) | None => break false,
                Some(_) => {}
            },
            () = expiry => break true,
        }
    };
    let Some(session) = endpoints.sessions().remove(&key) else {
        return;
    };
    tracing::info!(kind = session.kind.as_str(), room = %session.room, stale, "session ended");
    // Not stale: the SFU removed it (its room closed), nothing to leave.
    session.finish(&endpoints, stale).await;
}

impl HttpSession {
    /// Leaves the room if `leave` and reports the participant gone (with its last quality window).
    async fn finish(self, endpoints: &Endpoints, leave: bool) {
        // The participant may already be gone with its room.
        let last = if leave {
            self.handle.leave().await.ok().flatten()
        } else {
            None
        };
        if let Some(participant) = &self.reported {
            if let Some(report) = last {
                endpoints.signaling.report_quality(&self.room, participant, &report);
            }
            endpoints.signaling.report_left(&self.room, participant).await;
        }
    }
}

async fn end(endpoints: &Endpoints, kind: Kind, room: &str, id: &str) -> Result<StatusCode, HttpError> {
    let key = hash_token(id);
    let session = {
        let mut sessions = endpoints.sessions();
        match sessions.get(&key) {
            Some(s) if s.kind == kind && s.room == room => sessions.remove(&key),
            _ => None,
        }
    }
    .ok_or(HttpError::NotFound("session_not_found", "no such session"))?;
    session.ended.cancel();
    tracing::info!(kind = kind.as_str(), room = %session.room, "session ended by the client");
    session.finish(endpoints, true).await;
    Ok(StatusCode::OK)
}

/// `DELETE /whip/{room}/{session}` (RFC 9725 §4.3).
async fn end_whip(
    State(endpoints): State<Arc<Endpoints>>,
    AppPath((room, id)): AppPath<(String, String)>,
) -> Result<StatusCode, HttpError> {
    end(&endpoints, Kind::Whip, &room, &id).await
}

/// `DELETE /whep/{room}/{session}`.
async fn end_whep(
    State(endpoints): State<Arc<Endpoints>>,
    AppPath((room, id)): AppPath<(String, String)>,
) -> Result<StatusCode, HttpError> {
    end(&endpoints, Kind::Whep, &room, &id).await
}

/// `PATCH` on a session (trickle ICE, ICE restart; RFC 9725 §4.3.1): not supported by an
/// ICE-lite server that learns addresses from checks.
async fn no_trickle() -> HttpError {
    HttpError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into()],
                username: Some("1700000000:ada".into()),
                credential: Some("c2VjcmV0".into()),
            },
        ]);
        assert_eq!(
            links,
            [
                "<stun:stun.example.net>; rel=\"ice-server\"",
                "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"1700000000:ada\"; \
                 credential=\"c2VjcmV0\"; credential-type=\"password\"",
            ]
        );
    }
}
