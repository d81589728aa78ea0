use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use convene_auth::{AccessTokens, IceConfig, JoinTokens, Secret};

use tokio_util::sync::CancellationToken;

use crate::auth::LoginLimiter;
use crate::chat;
use crate::db::Db;
use crate::events::EventBus;
use crate::rooms::MediaRooms;

/// Settings the API needs, resolved by the binary from flags, env and file.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base URL clients reach this server at (invite links, later WebSocket URLs).
    pub public_url: String,
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl: Duration,
    pub join_token_ttl_secs: i64,
    /// STUN/TURN servers handed to clients joining rooms.
    pub ice: IceConfig,
    pub invite_ttl: Duration,
    /// Failed logins allowed per account, then per client IP, within `login_window`.
    pub login_failures_per_account: u32,
    pub login_failures_per_ip: u32,
    pub login_window: Duration,
    /// Addresses webhooks may reach although they are loopback or private (tests, intranets).
    pub webhook_allowed_ips: Vec<std::net::IpAddr>,
    /// Where uploaded files and export archives are stored (by id, never by a user's name).
    pub data_dir: PathBuf,
    /// Largest upload in bytes.
    pub max_upload_size: u64,
    /// Bytes of files one team may store.
    pub team_storage_quota: u64,
    /// How long a request may take; an upload's body may take longer, but no chunk may take this
    /// long to arrive.
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub tokens: AccessTokens,
    pub join_tokens: JoinTokens,
    /// The media plane, when it runs in this process.
    pub media: Option<Arc<dyn MediaRooms>>,
    pub config: Arc<ApiConfig>,
    pub events: Arc<EventBus>,
    /// Cancelled when the server begins shutting down; long-lived connections end on it.
    pub shutdown: CancellationToken,
    pub(crate) login_limiter: Arc<LoginLimiter>,
    /// Chat's in-memory state: channel streams, typing, message rate limits, presence.
    pub(crate) chat: Arc<chat::Realtime>,
    /// Wakes the durable job runner when a job is enqueued.
    pub(crate) jobs: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(db: Db, secret: &Secret, config: ApiConfig) -> Self {
        let login_limiter = Arc::new(LoginLimiter::new(
            config.login_failures_per_account,
            config.login_failures_per_ip,
            config.login_window,
        ));
        Self {
            db,
            tokens: AccessTokens::new(secret, config.access_token_ttl_secs),
            join_tokens: JoinTokens::new(secret),
            media: None,
            config: Arc::new(config),
            events: Arc::new(EventBus::default()),
            shutdown: CancellationToken::new(),
            login_limiter,
            chat: Arc::default(),
            jobs: Arc::default(),
        }
    }

    /// Connects the rooms API to the media plane.
    pub fn with_media(mut self, media: Arc<dyn MediaRooms>) -> Self {
        self.media = Some(media);
        self
    }
}
