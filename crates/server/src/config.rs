//! Configuration: flags, each with a `CONVENE_<FLAG>` environment twin, over an optional TOML
//! file (`--config`), over defaults. Command line and environment win over the file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use convene_auth::Secret;
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(name = "convene", version, about = "Self-hosted real-time collaboration server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

/// Every setting; `None` means "not given here".
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys in snake_case).
    #[arg(long, env = "CONVENE_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address of the HTTP server (API, WebSockets, web client).
    #[arg(long, env = "CONVENE_HTTP_ADDR", global = true)]
    pub http_addr: Option<SocketAddr>,
    /// Directory for the SQLite database, secrets and files.
    #[arg(long, env = "CONVENE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://...`; defaults to SQLite in the data directory.
    #[arg(long, env = "CONVENE_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Secret that signs tokens; generated into the data directory when not given.
    #[arg(long, env = "CONVENE_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Base URL clients use to reach this server (links, WebSocket URLs).
    #[arg(long, env = "CONVENE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Access-token lifetime in seconds (at most 900).
    #[arg(long, env = "CONVENE_ACCESS_TOKEN_TTL", global = true)]
    pub access_token_ttl: Option<u64>,
    /// Refresh-token lifetime in seconds.
    #[arg(long, env = "CONVENE_REFRESH_TOKEN_TTL", global = true)]
    pub refresh_token_ttl: Option<u64>,
    /// Room join-token lifetime in seconds.
    #[arg(long, env = "CONVENE_JOIN_TOKEN_TTL", global = true)]
    pub join_token_ttl: Option<u64>,
    /// Team-invite lifetime in seconds.
    #[arg(long, env = "CONVENE_INVITE_TTL", global = true)]
    pub invite_ttl: Option<u64>,
    /// Failed logins allowed per account per 15 minutes.
    #[arg(long, env = "CONVENE_LOGIN_FAILURES_PER_ACCOUNT", global = true)]
    pub login_failures_per_account: Option<u32>,
    /// Failed logins allowed per client IP per 15 minutes.
    #[arg(long, env = "CONVENE_LOGIN_FAILURES_PER_IP", global = true)]
    pub login_failures_per_ip: Option<u32>,
    /// Run the media plane (SFU and signaling); `--media=false` serves the API only.
    #[arg(long, env = "CONVENE_MEDIA", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub media: Option<bool>,
    /// UDP port of the first media worker (worker i uses port + i); 0 picks free ports.
    #[arg(long, env = "CONVENE_MEDIA_UDP_PORT", global = true)]
    pub media_udp_port: Option<u16>,
    /// ICE-TCP port of the first media worker (for clients whose UDP is blocked); 0 picks free
    /// ports. `--media-tcp=false` turns ICE-TCP off.
    #[arg(long, env = "CONVENE_MEDIA_TCP_PORT", global = true)]
    pub media_tcp_port: Option<u16>,
    #[arg(long, env = "CONVENE_MEDIA_TCP", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub media_tcp: Option<bool>,
    /// Address the media sockets bind to.
    #[arg(long, env = "CONVENE_MEDIA_BIND_IP", global = true)]
    pub media_bind_ip: Option<IpAddr>,
    /// Addresses announced to clients as ICE candidates (comma-separated); default: the bind
    /// address, or every interface address when bound to 0.0.0.0.
    #[arg(long, env = "CONVENE_ADVERTISE_IP", global = true, value_delimiter = ',')]
    pub advertise_ip: Option<Vec<IpAddr>>,
    /// Media worker threads (default: one per core).
    #[arg(long, env = "CONVENE_MEDIA_WORKERS", global = true)]
    pub media_workers: Option<usize>,
    /// Seconds a participant whose connection dropped is kept for `resume`.
    #[arg(long, env = "CONVENE_RESUME_GRACE", global = true)]
    pub resume_grace: Option<u64>,
    /// Run the embedded STUN/TURN relay; `--turn=false` turns it off.
    #[arg(long, env = "CONVENE_TURN", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub turn: Option<bool>,
    /// UDP and TCP address of the relay.
    #[arg(long, env = "CONVENE_TURN_ADDR", global = true)]
    pub turn_addr: Option<SocketAddr>,
    /// TURN over TLS (`turns:`) address; served when a certificate and key are given.
    #[arg(long, env = "CONVENE_TURN_TLS_ADDR", global = true)]
    pub turn_tls_addr: Option<SocketAddr>,
    #[arg(long, env = "CONVENE_TURN_TLS_CERT", global = true)]
    pub turn_tls_cert: Option<PathBuf>,
    #[arg(long, env = "CONVENE_TURN_TLS_KEY", global = true)]
    pub turn_tls_key: Option<PathBuf>,
    /// Shared secret of the REST credentials; generated into the data directory when not given.
    #[arg(long, env = "CONVENE_TURN_SECRET", global = true, hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// Address relay sockets bind to (default: the relay's listen address).
    #[arg(long, env = "CONVENE_TURN_RELAY_IP", global = true)]
    pub turn_relay_ip: Option<IpAddr>,
    /// Relay address announced to clients, behind NAT.
    #[arg(long, env = "CONVENE_TURN_PUBLIC_IP", global = true)]
    pub turn_public_ip: Option<IpAddr>,
    /// Host name or address put in the `turn:`/`stun:` URLs handed to clients (default: the
    /// host of `--public-url`).
    #[arg(long, env = "CONVENE_TURN_HOST", global = true)]
    pub turn_host: Option<String>,
    /// Relay port range, `FIRST-LAST`.
    #[arg(long, env = "CONVENE_TURN_RELAY_PORTS", global = true)]
    pub turn_relay_ports: Option<String>,
    /// Peer networks the relay may reach although they are loopback/private (comma-separated
    /// CIDRs); by default such peers are refused.
    #[arg(long, env = "CONVENE_TURN_ALLOW_PEERS", global = true, value_delimiter = ',')]
    pub turn_allow_peers: Option<Vec<String>>,
    /// Seconds TURN credentials handed to clients stay valid.
    #[arg(long, env = "CONVENE_TURN_CREDENTIAL_TTL", global = true)]
    pub turn_credential_ttl: Option<u64>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "CONVENE_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// SMTP server for e-mail digests: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host` (TLS). Without it digests are only logged.
    #[arg(long, env = "CONVENE_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of e-mail digests, such as `Convene <convene@example.com>`.
    #[arg(long, env = "CONVENE_SMTP_FROM", global = true)]
    pub smtp_from: Option<String>,
    /// Seconds between e-mail digests of mentions and DMs for offline users.
    #[arg(long, env = "CONVENE_EMAIL_DIGEST_INTERVAL", global = true)]
    pub email_digest_interval: Option<u64>,
    /// Loopback or private addresses webhooks may nevertheless reach (comma-separated IPs).
    #[arg(long, env = "CONVENE_WEBHOOK_ALLOW_IPS", global = true, value_delimiter = ',')]
    pub webhook_allow_ips: Option<Vec<IpAddr>>,
    /// Largest file upload in bytes; larger uploads get 413.
    #[arg(long, env = "CONVENE_MAX_UPLOAD_SIZE", global = true)]
    pub max_upload_size: Option<u64>,
    /// Bytes of files one team may store.
    #[arg(long, env = "CONVENE_TEAM_STORAGE_QUOTA", global = true)]
    pub team_storage_quota: Option<u64>,
    /// Seconds a REST request may take, body included (408 beyond); a file upload's body may
    /// take longer but must not stall for this long.
    #[arg(long, env = "CONVENE_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("--access-token-ttl must be between 1 and 900 seconds")]
    AccessTtl,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// `None`: read from, or generated into, `data_dir`.
    pub jwt_secret: Option<Secret>,
    pub public_url: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub join_token_ttl: Duration,
    pub invite_ttl: Duration,
    pub login_failures_per_account: u32,
    pub login_failures_per_ip: u32,
    pub log_format: LogFormat,
    pub media: Option<MediaConfig>,
    pub turn: Option<TurnSettings>,
    /// `None`: digests are logged, not mailed. The URL may carry credentials.
    pub smtp_url: Option<Secret>,
    pub smtp_from: String,
    pub email_digest_interval: Duration,
    pub webhook_allowed_ips: Vec<IpAddr>,
    pub max_upload_size: u64,
    pub team_storage_quota: u64,
    pub request_timeout: Duration,
}

/// The embedded relay's settings; `None` in [`Config`] when it is off.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub addr: SocketAddr,
    /// TLS address, certificate and key, when `turns:` is served.
    pub tls: Option<(SocketAddr, PathBuf, PathBuf)>,
    /// `None`: read from, or generated into, the data directory.
    pub secret: Option<Secret>,
    pub relay_ip: Option<IpAddr>,
    pub public_ip: Option<IpAddr>,
    pub host: Option<String>,
    pub relay_ports: RangeInclusive<u16>,
    pub allow_peers: Vec<IpNet>,
    pub credential_ttl: Duration,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 3478)),
            tls: None,
            secret: None,
            relay_ip: None,
            public_ip: None,
            host: None,
            relay_ports: 49152..=65535,
            allow_peers: Vec::new(),
            credential_ttl: Duration::from_secs(6 * 3600),
        }
    }
}

/// The media plane's settings; `None` in [`Config`] when media is off.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub udp_addr: SocketAddr,
    pub tcp_addr: Option<SocketAddr>,
    pub advertise_ips: Vec<IpAddr>,
    pub workers: usize,
    pub resume_grace: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            udp_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7882)),
            tcp_addr: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7881))),
            advertise_ips: Vec::new(),
            workers: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            resume_grace: Duration::from_secs(15),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            jwt_secret: None,
            public_url: None,
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            join_token_ttl: Duration::from_secs(600),
            invite_ttl: Duration::from_secs(7 * 24 * 3600),
            login_failures_per_account: 5,
            login_failures_per_ip: 20,
            log_format: LogFormat::Text,
            media: Some(MediaConfig::default()),
            turn: Some(TurnSettings::default()),
            smtp_url: None,
            smtp_from: "Convene <convene@localhost>".to_owned(),
            email_digest_interval: Duration::from_secs(300),
            webhook_allowed_ips: Vec::new(),
            max_upload_size: 100 * 1024 * 1024,
            team_storage_quota: 10 * 1024 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeArgs {
    /// Fields given here win; the others come from `lower`.
    fn over(self, lower: Self) -> Self {
        Self {
            config: self.config.or(lower.config),
            http_addr: self.http_addr.or(lower.http_addr),
            data_dir: self.data_dir.or(lower.data_dir),
            database_url: self.database_url.or(lower.database_url),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            public_url: self.public_url.or(lower.public_url),
            access_token_ttl: self.access_token_ttl.or(lower.access_token_ttl),
            refresh_token_ttl: self.refresh_token_ttl.or(lower.refresh_token_ttl),
            join_token_ttl: self.join_token_ttl.or(lower.join_token_ttl),
            invite_ttl: self.invite_ttl.or(lower.invite_ttl),
            login_failures_per_account: self.login_failures_per_account.or(lower.login_failures_per_account),
            login_failures_per_ip: self.login_failures_per_ip.or(lower.login_failures_per_ip),
            media: self.media.or(lower.media),
            media_udp_port: self.media_udp_port.or(lower.media_udp_port),
            media_tcp_port: self.media_tcp_port.or(lower.media_tcp_port),
            media_tcp: self.media_tcp.or(lower.media_tcp),
            media_bind_ip: self.media_bind_ip.or(lower.media_bind_ip),
            advertise_ip: self.advertise_ip.or(lower.advertise_ip),
            media_workers: self.media_workers.or(lower.media_workers),
            resume_grace: self.resume_grace.or(lower.resume_grace),
            turn: self.turn.or(lower.turn),
            turn_addr: self.turn_addr.or(lower.turn_addr),
            turn_tls_addr: self.turn_tls_addr.or(lower.turn_tls_addr),
            turn_tls_cert: self.turn_tls_cert.or(lower.turn_tls_cert),
            turn_tls_key: self.turn_tls_key.or(lower.turn_tls_key),
            turn_secret: self.turn_secret.or(lower.turn_secret),
            turn_relay_ip: self.turn_relay_ip.or(lower.turn_relay_ip),
            turn_public_ip: self.turn_public_ip.or(lower.turn_public_ip),
            turn_host: self.turn_host.or(lower.turn_host),
            turn_relay_ports: self.turn_relay_ports.or(lower.turn_relay_ports),
            turn_allow_peers: self.turn_allow_peers.or(lower.turn_allow_peers),
            turn_credential_ttl: self.turn_credential_ttl.or(lower.turn_credential_ttl),
            log_format: self.log_format.or(lower.log_format),
            smtp_url: self.smtp_url.or(lower.smtp_url),
            smtp_from: self.smtp_from.or(lower.smtp_from),
            email_digest_interval: self.email_digest_interval.or(lower.email_digest_interval),
            webhook_allow_ips: self.webhook_allow_ips.or(lower.webhook_allow_ips),
            max_upload_size: self.max_upload_size.or(lower.max_upload_size),
            team_storage_quota: self.team_storage_quota.or(lower.team_storage_quota),
            request_timeout: self.request_timeout.or(lower.request_timeout),
        }
    }

    /// Reads `--config` if given and resolves everything against the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let merged = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file: ServeArgs = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?;
                self.over(file)
            }
            None => self,
        };
        let d = Config::default();
        let turn = match merged.turn.unwrap_or(true) {
            true => Some(turn_settings(&merged)?),
            false => None,
        };
        let access_token_ttl = merged.access_token_ttl.map_or(d.access_token_ttl, Duration::from_secs);
        if access_token_ttl.is_zero() || access_token_ttl > Duration::from_secs(900) {
            return Err(ConfigError::AccessTtl);
        }
        Ok(Config {
            http_addr: merged.http_addr.unwrap_or(d.http_addr),
            data_dir: merged.data_dir.unwrap_or(d.data_dir),
            database_url: merged.database_url.filter(|u| !u.is_empty()),
            jwt_secret: merged.jwt_secret.filter(|s| !s.is_empty()).map(Secret::new),
            public_url: merged.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            access_token_ttl,
            refresh_token_ttl: merged
                .refresh_token_ttl
                .map_or(d.refresh_token_ttl, Duration::from_secs),
            join_token_ttl: merged.join_token_ttl.map_or(d.join_token_ttl, Duration::from_secs),
            invite_ttl: merged.invite_ttl.map_or(d.invite_ttl, Duration::from_secs),
            login_failures_per_account: merged
                .login_failures_per_account
                .unwrap_or(d.login_failures_per_account),
            login_failures_per_ip: merged.login_failures_per_ip.unwrap_or(d.login_failures_per_ip),
            log_format: merged.log_format.unwrap_or(d.log_format),
            turn,
            media: merged.media.unwrap_or(true).then(|| {
                let m = MediaConfig::default();
                MediaConfig {
                    udp_addr: SocketAddr::new(
                        merged.media_bind_ip.unwrap_or(m.udp_addr.ip()),
                        merged.media_udp_port.unwrap_or(m.udp_addr.port()),
                    ),
                    tcp_addr: merged.media_tcp.unwrap_or(true).then(|| {
                        SocketAddr::new(
                            merged.media_bind_ip.unwrap_or(m.udp_addr.ip()),
                            merged.media_tcp_port.unwrap_or(7881),
                        )
                    }),
                    advertise_ips: merged.advertise_ip.unwrap_or_default(),
                    workers: merged.media_workers.unwrap_or(m.workers).max(1),
                    resume_grace: merged.resume_grace.map_or(m.resume_grace, Duration::from_secs),
                }
            }),
            smtp_url: merged.smtp_url.filter(|u| !u.is_empty()).map(Secret::new),
            smtp_from: merged.smtp_from.unwrap_or(d.smtp_from),
            email_digest_interval: merged
                .email_digest_interval
                .filter(|s| *s > 0)
                .map_or(d.email_digest_interval, Duration::from_secs),
            webhook_allowed_ips: merged.webhook_allow_ips.unwrap_or_default(),
            max_upload_size: merged.max_upload_size.unwrap_or(d.max_upload_size),
            team_storage_quota: merged.team_storage_quota.unwrap_or(d.team_storage_quota),
            request_timeout: merged
                .request_timeout
                .filter(|s| *s > 0)
                .map_or(d.request_timeout, Duration::from_secs),
        })
    }
}

fn turn_settings(args: &ServeArgs) -> Result<TurnSettings, ConfigError> {
    let d = TurnSettings::default();
    let addr = args.turn_addr.unwrap_or(d.addr);
    let tls = match (&args.turn_tls_cert, &args.turn_tls_key) {
        (Some(cert), Some(key)) => {
            let tls_addr = args.turn_tls_addr.unwrap_or(SocketAddr::new(addr.ip(), 5349));
            Some((tls_addr, cert.clone(), key.clone()))
        }
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(
                "--turn-tls-cert and --turn-tls-key go together".into(),
            ));
        }
    };
    let relay_ports = match &args.turn_relay_ports {
        None => d.relay_ports,
        Some(range) => {
            let parsed = range
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
                .filter(|(a, b)| a <= b && *a > 0);
            let (first, last) = parsed.ok_or_else(|| {
                ConfigError::Invalid(format!("--turn-relay-ports: expected FIRST-LAST, got {range:?}"))
            })?;
            first..=last
        }
    };
    let allow_peers = args
        .turn_allow_peers
        .iter()
        .flatten()
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            c.trim()
                .parse::<IpNet>()
                .map_err(|_| ConfigError::Invalid(format!("--turn-allow-peers: bad CIDR {c:?}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(TurnSettings {
        addr,
        tls,
        secret: args.turn_secret.clone().filter(|s| !s.is_empty()).map(Secret::new),
        relay_ip: args.turn_relay_ip,
        public_ip: args.turn_public_ip,
        host: args.turn_host.clone(),
        relay_ports,
        allow_peers,
        credential_ttl: args.turn_credential_ttl.map_or(d.credential_ttl, Duration::from_secs),
    })
}

/// Reads the secret named `name` from the data directory, or generates and stores it
/// (mode 0600) on first start.
pub fn load_or_create_secret(data_dir: &Path, name: &str) -> Result<Secret, ConfigError> {
    let err = |source| ConfigError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Secret::new(s.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let secret = Secret::generate();
    write_private(&path, secret.expose()).map_err(err)?;
    Ok(secret)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_and_env_win_over_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "http_addr = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/from-file\"\n")?;
        let cli = Cli::try_parse_from([
            "convene",
            "serve",
            "--config",
            file.to_str().unwrap_or_default(),
            "--data-dir",
            "/tmp/from-cli",
        ])?;
        assert!(matches!(cli.command, Some(Command::Serve)));
        let config = cli.serve.resolve()?;
        assert_eq!(config.http_addr, "127.0.0.1:9000".parse()?);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-cli"));
        Ok(())
    }

    #[test]
    fn unknown_file_keys_and_long_ttls_are_rejected() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "http_adr = \"127.0.0.1:9000\"\n")?;
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
        let args = ServeArgs {
            access_token_ttl: Some(3600),
            ..Default::default()
        };
        assert!(matches!(args.resolve(), Err(ConfigError::AccessTtl)));
        Ok(())
    }

    #[test]
    fn smtp_credentials_never_show_in_debug() -> Result<(), Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from([
            "convene",
            "--smtp-url",
            "smtp://mailer:hunter2@mail.example.com:587?tls=required",
            "--email-digest-interval",
            "60",
        ])?;
        let config = cli.serve.resolve()?;
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.email_digest_interval, Duration::from_secs(60));
        assert_eq!(config.smtp_from, Config::default().smtp_from);
        Ok(())
    }

    #[test]
    fn secret_is_generated_once_and_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let a = load_or_create_secret(dir.path(), "jwt_secret")?;
        let b = load_or_create_secret(dir.path(), "jwt_secret")?;
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("jwt_secret"))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }
}
