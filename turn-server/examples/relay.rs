//! Standalone relay for benchmarks and manual testing:
//!
//! ```text
//! cargo run --release -p convene-turn --example relay -- \
//!     --listen 127.0.0.1:3478 --secret S --allow-peers 127.0.0.1/32 --ports 49401-49700
//! ```
//!
//! Runs until SIGINT or SIGTERM, then prints the relay metrics to stderr.

use std::process::ExitCode;

use convene_auth::Secret;
use convene_turn::{TurnConfig, TurnServer};

fn usage() -> ExitCode {
    eprintln!(
        "usage: relay --secret S [--listen ADDR] [--realm R] [--relay-ip IP] [--allow-peers CIDR,...] \
         [--ports LOW-HIGH] [--threads N] [--user-quota N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut config = TurnConfig::new(Secret::new(""));
    let mut threads = 1;
    let mut secret = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        let ok = match flag.as_str() {
            "--secret" => {
                secret = Some(Secret::new(value));
                true
            }
            "--listen" => value.parse().map(|a| config.listen = a).is_ok(),
            "--realm" => {
                config.realm = value;
                true
            }
            "--relay-ip" => value.parse().map(|ip| config.relay_ip = Some(ip)).is_ok(),
            "--allow-peers" => value
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(|nets| config.allow_peers = nets)
                .is_ok(),
            "--ports" => match value.split_once('-').map(|(l, h)| (l.parse(), h.parse())) {
                Some((Ok(low), Ok(high))) => {
                    config.relay_ports = low..=high;
                    true
                }
                _ => false,
            },
            "--threads" => value.parse().map(|n| threads = n).is_ok(),
            "--user-quota" => value.parse().map(|n| config.user_quota = n).is_ok(),
            _ => false,
        };
        if !ok {
            return usage();
        }
    }
    let Some(secret) = secret else { return usage() };
    config.secret = secret;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("cannot start the tokio runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let server = match TurnServer::start(config).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("listening on {:?}", server.local_addrs());
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("{:?}", server.metrics());
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
