//! The assembled server: `App::build(config)` binds and wires everything, `run_until_stopped`
//! serves until the shutdown future resolves. Tests build the same `App` on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router, middleware};
use convene_api::{ApiConfig, ApiError, AppState, Db, Mailer};
use convene_auth::IceConfig;
use convene_sfu::{Sfu, SfuConfig};
use convene_signaling::{Signaling, SignalingConfig};
use convene_turn::{LocalAddrs, TurnConfig, TurnServer};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::{Config, TurnSettings, load_or_create_secret};
use crate::telemetry::{Metrics, metrics_handler, track};

/// Default limit for request bodies (JSON); uploads get their own limits.
const BODY_LIMIT: usize = 1024 * 1024;

pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    media: Option<Arc<Signaling>>,
    turn: Option<Arc<TurnServer>>,
    digests: tokio::task::JoinHandle<()>,
    jobs: tokio::task::JoinHandle<()>,
}

/// Connects to the configured database (SQLite in the data dir by default) and migrates it.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    std::fs::create_dir_all(&config.data_dir)?;
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| Db::sqlite_url(&config.data_dir));
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    Ok(db)
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = open_database(&config).await?;
        let secret = match &config.jwt_secret {
            Some(s) => s.clone(),
            None => load_or_create_secret(&config.data_dir, "jwt_secret")?,
        };
        let listener = TcpListener::bind(config.http_addr).await?;
        let local = listener.local_addr()?;
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{local}"));
        let (turn, ice) = match &config.turn {
            Some(settings) => {
                let (server, ice) = start_turn(settings, &config.data_dir, &public_url).await?;
                (Some(server), ice)
            }
            None => (None, IceConfig::default()),
        };
        let api_config = ApiConfig {
            public_url,
            access_token_ttl_secs: secs(config.access_token_ttl),
            refresh_token_ttl: config.refresh_token_ttl,
            join_token_ttl_secs: secs(config.join_token_ttl),
            ice,
            invite_ttl: config.invite_ttl,
            login_failures_per_account: config.login_failures_per_account,
            login_failures_per_ip: config.login_failures_per_ip,
            login_window: Duration::from_secs(15 * 60),
            webhook_allowed_ips: config.webhook_allowed_ips.clone(),
            data_dir: config.data_dir.clone(),
            max_upload_size: config.max_upload_size,
            team_storage_quota: config.team_storage_quota,
            request_timeout: config.request_timeout,
        };
        let mut state = AppState::new(db.clone(), &secret, api_config);
        // Recordings the previous process did not finish were cut short (crash, kill -9).
        convene_api::recordings::mark_interrupted(&state).await?;
        let media = match &config.media {
            Some(media) => {
                let sfu = Sfu::start(SfuConfig {
                    udp_addr: media.udp_addr,
                    tcp_addr: media.tcp_addr,
                    advertise_ips: media.advertise_ips.clone(),
                    workers: media.workers,
                })?;
                let signaling = Signaling::new(
                    sfu.clone(),
                    &secret,
                    SignalingConfig {
                        resume_grace: media.resume_grace,
                        ice: state.config.ice.clone(),
                    },
                    state.shutdown.clone(),
                );
                signaling.report_room_events(convene_api::webhooks::room_event_sink(state.clone()));
                state = state.with_media(signaling.clone());
                if let Some(finished) = sfu.finished_recordings() {
                    tokio::spawn(persist_finished_recordings(state.clone(), finished));
                }
                Some(signaling)
            }
            None => None,
        };
        let metrics = Metrics::new(media.as_ref().map(|m| m.sfu().clone()), turn.clone());
        let media_routes = media.as_ref().map(|signaling| signaling.router()).unwrap_or_default();
        let router = routes(state.clone(), Arc::new(metrics), media_routes);
        let mailer = match &config.smtp_url {
            Some(url) => Mailer::smtp(url.expose(), &config.smtp_from)?,
            None => Mailer::Log,
        };
        let digests = convene_api::spawn_digests(state.clone(), mailer, config.email_digest_interval);
        let jobs = convene_api::spawn_job_runner(state.clone());
        Ok(Self {
            listener,
            router,
            state,
            media,
            turn,
            digests,
            jobs,
        })
    }

    /// The event bus, for publishing to users' real-time streams from outside a request.
    pub fn events(&self) -> Arc<convene_api::events::EventBus> {
        self.state.events.clone()
    }

    /// The relay's addresses, when it runs.
    pub fn turn_addrs(&self) -> Option<LocalAddrs> {
        self.turn.as_ref().map(|t| t.local_addrs())
    }

    /// The media workers' UDP addresses (empty when media is off).
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.media.as_ref().map(|m| m.sfu().udp_addrs()).unwrap_or_default()
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish and closes
    /// long-lived connections (WebSockets) with "going away".
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "listening");
        let stopping = self.state.shutdown.clone();
        // No Nagle: a WebSocket frame (a chat message, an SDP answer) must not wait for the
        // client's delayed ACK of the previous one (up to 40 ms on Linux).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY refused");
            }
        });
        axum::serve(
            listener,
            self.router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.cancel();
        })
        .await?;
        if let Some(media) = &self.media {
            // Files finalized and rows `finished` before the media plane goes.
            convene_api::recordings::stop_all(&self.state).await;
            media.sfu().shutdown().await;
        }
        if let Err(e) = self.digests.await {
            tracing::warn!(error = %e, "e-mail digest task failed");
        }
        if let Err(e) = self.jobs.await {
            tracing::warn!(error = %e, "job runner failed");
        }
        self.state.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Marks recordings the media plane finished by itself (their room emptied).
async fn persist_finished_recordings(
    state: AppState,
    mut finished: tokio::sync::mpsc::UnboundedReceiver<convene_sfu::RecordingFinished>,
) {
    while let Some(f) = finished.recv().await {
        let ended = convene_api::rooms::RecordingEnded {
            recording_id: f.recording_id,
            duration_ms: f.duration_ms,
            error: f.error,
        };
        if let Err(e) = convene_api::recordings::finished(&state, ended).await {
            tracing::warn!(error = %e, "persisting a finished recording failed");
        }
    }
}

/// Every route of the process, under one set of layers (body limit, timeout, compression,
/// tracing, metrics); `media` holds `/ws/signal` and WHIP/WHEP when the media plane runs.
fn routes(state: AppState, metrics: Arc<Metrics>, media: Router) -> Router {
    let (api, openapi) = convene_api::router(state.clone());
    let openapi = Arc::new(openapi);
    let ops = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz).with_state(state.db.clone()))
        .route("/metrics", get(metrics_handler).with_state(metrics.clone()))
        .route(
            "/api/openapi.json",
            get(move || async move { Json(openapi.as_ref().clone()) }),
        );
    Router::new()
        .merge(ops)
        .merge(api)
        .merge(media)
        .fallback(crate::web::serve)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(metrics, track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // Route template only: raw paths can carry tokens (invite links).
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("http", method = %req.method(), route = %route)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(
            state.config.request_timeout,
            request_timeout,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Every request but those in `LONG_BODY_ROUTES` gets `timeout`, body included: 408 with the REST
/// error body beyond.
async fn request_timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    let long = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|route| convene_api::LONG_BODY_ROUTES.contains(&(req.method().as_str(), route.as_str())));
    if long {
        return next.run(req).await;
    }
    tokio::time::timeout(timeout, next.run(req))
        .await
        .unwrap_or_else(|_| ApiError::RequestTimeout.into_response())
}

/// Starts the embedded relay and describes it for clients: STUN and TURN (UDP, TCP, and TLS
/// when configured) URLs on the host clients reach this server at, with REST credentials.
async fn start_turn(
    settings: &TurnSettings,
    data_dir: &Path,
    public_url: &str,
) -> anyhow::Result<(Arc<TurnServer>, IceConfig)> {
    let secret = match &settings.secret {
        Some(s) => s.clone(),
        None => load_or_create_secret(data_dir, "turn_secret")?,
    };
    let mut turn = TurnConfig::new(secret.clone());
    turn.listen = settings.addr;
    if let Some((addr, cert, key)) = &settings.tls {
        turn.tls_listen = Some(*addr);
        turn.tls_cert = Some(cert.clone());
        turn.tls_key = Some(key.clone());
    }
    turn.relay_ip = settings.relay_ip;
    turn.relay_public_ip = settings.public_ip;
    turn.relay_ports = settings.relay_ports.clone();
    turn.allow_peers = settings.allow_peers.clone();
    let server = TurnServer::start(turn).await?;
    let addrs = server.local_addrs();
    let host = settings.host.clone().unwrap_or_else(|| url_host(public_url));
    let port = addrs.udp.port();
    let mut turn_urls = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{}?transport=tcp", addrs.tcp.port()),
    ];
    if let Some(tls) = addrs.tls {
        turn_urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
    }
    tracing::info!(udp = %addrs.udp, tcp = %addrs.tcp, "TURN relay started");
    let ice = IceConfig {
        stun_urls: vec![format!("stun:{host}:{port}")],
        turn_urls,
        turn_secret: Some(secret),
        credential_ttl_secs: secs(settings.credential_ttl),
    };
    Ok((Arc::new(server), ice))
}

/// The host part of `scheme://host[:port][/...]` (IPv6 hosts keep their brackets).
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
        None => authority.split(':').next().unwrap_or(authority).to_owned(),
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

async fn readyz(State(db): State<Db>) -> (StatusCode, Json<serde_json::Value>) {
    match db.ping().await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "database unavailable" })),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn hosts_of_public_urls() {
        assert_eq!(url_host("https://meet.example.com"), "meet.example.com");
        assert_eq!(url_host("http://127.0.0.1:8080/x"), "127.0.0.1");
        assert_eq!(url_host("http://[::1]:8080"), "[::1]");
    }
}
