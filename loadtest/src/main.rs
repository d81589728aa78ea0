//! `convene-loadtest`: runs one scenario against a running server, prints a table on stderr and
//! the JSON report on stdout (or into `--json FILE`).

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use convene_loadtest::convene::Api;
use convene_loadtest::janus::Janus;
use convene_loadtest::signal::Target;
use convene_loadtest::str0m_chat::Str0mChat;
use convene_loadtest::{search, sessions, sfu};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator: str0m WebRTC peers and WebSocket/REST clients on one thread"
)]
struct Cli {
    /// Convene's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Janus's HTTP API (`--target janus`).
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    janus_url: String,
    /// str0m's `chat` example (`--target str0m-chat`): where clients POST their offers.
    #[arg(long, default_value = "https://127.0.0.1:3000/")]
    chat_url: String,
    #[arg(long, value_enum, default_value_t = TargetKind::Convene)]
    target: TargetKind,
    /// The server's JWT secret: mint join tokens instead of registering an account per
    /// participant (the server verifies them as it does the REST API's).
    #[arg(long, env = "CONVENE_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// The target server's pid, for CPU and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The address the `sfu` scenario's peers bind to (Janus offers no loopback candidates:
    /// give it a local interface address).
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: std::net::IpAddr,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Convene,
    Janus,
    Str0mChat,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// R rooms × P publishers × S subscribers of synthetic Opus + VP8.
    Sfu {
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds between everyone being ready and measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[arg(long, default_value_t = 60.0)]
        ready_timeout: f64,
        /// Participants joining per second.
        #[arg(long, default_value_t = 50.0)]
        join_rate: f64,
        #[arg(long)]
        no_audio: bool,
        #[arg(long)]
        no_video: bool,
        /// Find the maximum load: steps from `--subscribers` up (see `--factor`), then a
        /// `--duration` window at 80 % of the maximum.
        #[arg(long)]
        search: bool,
        /// Search: subscribers per room grow by this factor per step.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Search: the last step at most.
        #[arg(long, default_value_t = 1000)]
        max_subscribers: usize,
        /// Search: seconds of measurement per step.
        #[arg(long, default_value_t = 5.0)]
        step_duration: f64,
        /// Search: seconds between steps.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// Search: a step whose p99 one-way delay exceeds this (ms) saturates.
        #[arg(long, default_value_t = 50.0)]
        max_p99_ms: f64,
    },
    /// Joins per second (token, signaling, ICE+DTLS), rising until a join fails.
    JoinStorm {
        #[arg(long, default_value_t = 5.0)]
        start: f64,
        #[arg(long, default_value_t = 5.0)]
        step: f64,
        #[arg(long, default_value_t = 3.0)]
        step_seconds: f64,
        #[arg(long, default_value_t = 200.0)]
        max_rate: f64,
        /// A join slower than this (ms) counts as failed.
        #[arg(long, default_value_t = 2000)]
        limit_ms: u64,
    },
    /// N idle joined `/ws/signal` sessions; RSS per session.
    Signaling {
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        #[arg(long, default_value_t = 10)]
        per_room: usize,
        #[arg(long, default_value_t = 3.0)]
        hold: f64,
    },
    /// One message to N `/ws/chat` sockets, repeated; fan-out latency.
    Chat {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        #[arg(long, default_value_t = 20)]
        users: usize,
        #[arg(long, default_value_t = 20)]
        messages: usize,
    },
    /// Authenticated GETs from C concurrent clients.
    Rest {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One thread drives every client: pin the process to a core with taskset.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let json = local.block_on(&runtime, run(&cli))?;
    let text = serde_json::to_string_pretty(&json)?;
    match &cli.json {
        Some(path) => std::fs::write(path, text + "\n")?,
        None => {
            use std::io::Write;
            writeln!(std::io::stdout(), "{text}")?;
        }
    }
    Ok(())
}

async fn run(cli: &Cli) -> Result<serde_json::Value> {
    let api = Api::new(&cli.url);
    let target = match cli.target {
        TargetKind::Convene => Target::Convene {
            api: api.clone(),
            jwt_secret: cli.jwt_secret.clone(),
        },
        TargetKind::Janus => Target::Janus(Janus::new(&cli.janus_url)),
        TargetKind::Str0mChat => Target::Str0mChat(Str0mChat::new(&cli.chat_url)?),
    };
    let secs = Duration::from_secs_f64;
    if cli.target != TargetKind::Convene && !matches!(cli.scenario, Scenario::Sfu { .. }) {
        bail!("only the sfu scenario runs against Janus and str0m's chat example");
    }
    Ok(match &cli.scenario {
        Scenario::Sfu {
            rooms,
            publishers,
            subscribers,
            duration,
            warmup,
            ready_timeout,
            join_rate,
            no_audio,
            no_video,
            search,
            factor,
            max_subscribers,
            step_duration,
            settle,
            max_p99_ms,
        } => {
            let params = sfu::SfuParams {
                target,
                rooms: *rooms,
                publishers: *publishers,
                subscribers: *subscribers,
                audio: !no_audio,
                video: !no_video,
                duration: secs(*duration),
                warmup: secs(*warmup),
                ready_timeout: secs(*ready_timeout),
                join_rate: *join_rate,
                server_pid: cli.server_pid,
                client_ip: cli.client_ip,
            };
            if *search {
                serde_json::to_value(
                    search::run(search::SearchParams {
                        sfu: params,
                        factor: *factor,
                        max_subscribers: *max_subscribers,
                        step_duration: secs(*step_duration),
                        settle: secs(*settle),
                        max_p99_ms: *max_p99_ms,
                    })
                    .await?,
                )?
            } else {
                let report = sfu::run(params).await?;
                report.print();
                serde_json::to_value(report)?
            }
        }
        Scenario::JoinStorm {
            start,
            step,
            step_seconds,
            max_rate,
            limit_ms,
        } => {
            let report = sessions::join_storm(
                &target,
                *start,
                *step,
                secs(*step_seconds),
                *max_rate,
                Duration::from_millis(*limit_ms),
            )
            .await?;
            report.print();
            serde_json::to_value(report)?
        }
        Scenario::Signaling {
            sessions: n,
            per_room,
            hold,
        } => {
            let report = sessions::signaling(
                &api,
                cli.jwt_secret.as_deref(),
                *n,
                *per_room,
                secs(*hold),
                cli.server_pid,
            )
            .await?;
            report.print();
            serde_json::to_value(report)?
        }
        Scenario::Chat {
            sockets,
            users,
            messages,
        } => {
            let report = sessions::chat(&api, *sockets, *users, *messages).await?;
            report.print();
            serde_json::to_value(report)?
        }
        Scenario::Rest { clients, duration } => {
            let report = sessions::rest(&api, *clients, secs(*duration), cli.server_pid).await?;
            report.print();
            serde_json::to_value(report)?
        }
    })
}
