//! The real driver on 127.0.0.1 against coturn's own client tools (Debian package `coturn`):
//! `turnutils_uclient` relaying to a `turnutils_peer`, and `turnutils_stunclient`.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use convene_auth::{Secret, turn_password};
use convene_turn::{TurnConfig, TurnServer};
use tokio::process::{Child, Command};

const SECRET: &str = "integration-secret";

/// The path of a coturn tool, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`{name}` not found on PATH: install the Debian package `coturn` (apt-get install -y coturn)")
        })
}

fn config(allow_loopback: bool) -> TurnConfig {
    let mut config = TurnConfig::new(Secret::new(SECRET));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.relay_ports = 41_000..=41_999;
    config.realm = "convene.test".into();
    if allow_loopback {
        config.allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
    }
    config
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `turnutils_peer` echoing on a free loopback port; killed when dropped.
struct Peer {
    port: u16,
    _child: Child,
}

async fn start_peer() -> Peer {
    let port = free_udp_port();
    let child = Command::new(tool("turnutils_peer"))
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // turnutils_peer announces nothing when it is ready; its socket being bound is the only
    // signal, so probe for it (our own bind on the port fails) at a short interval.
    for _ in 0..200 {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return Peer { port, _child: child };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("turnutils_peer did not bind 127.0.0.1:{port}");
}

struct Outcome {
    code: Option<i32>,
    output: String,
}

impl Outcome {
    /// From uclient's summary: "Total lost packets N (x%)".
    fn lost_packets(&self) -> Option<u64> {
        let rest = self.output.split("Total lost packets ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }

    fn sent_and_received(&self) -> Option<(u64, u64)> {
        let after = |key: &str| -> Option<u64> {
            let rest = self.output.rsplit(key).next()?;
            rest.trim_start_matches([' ', '=', ':'])
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some((after("tot_send_msgs=")?, after("tot_recv_msgs=")?))
    }
}

async fn uclient(server: SocketAddr, args: &[&str]) -> Outcome {
    let mut command = Command::new(tool("turnutils_uclient"));
    command.args(args).args(["-p", &server.port().to_string(), "127.0.0.1"]);
    let output = tokio::time::timeout(Duration::from_secs(90), command.kill_on_drop(true).output())
        .await
        .expect("turnutils_uclient finished within 90 s")
        .unwrap();
    let output_text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Outcome {
        code: output.status.code(),
        output: output_text,
    }
}

/// uclient with REST credentials for `user` relaying `messages` messages per client to the peer.
async fn relay_run(server: SocketAddr, peer: u16, secret: &str, extra: &[&str]) -> Outcome {
    let peer = peer.to_string();
    let mut args = vec![
        "-W",
        secret,
        "-u",
        "alice",
        "-e",
        "127.0.0.1",
        "-r",
        &peer,
        "-n",
        "100",
        "-m",
        "4",
        "-l",
        "170",
    ];
    args.extend_from_slice(extra);
    uclient(server, &args).await
}

/// Exit 0, every one of the 4 clients' 100 messages echoed back, none lost.
fn assert_clean_run(outcome: &Outcome) {
    assert_eq!(outcome.code, Some(0), "uclient failed:\n{}", outcome.output);
    assert_eq!(
        outcome.lost_packets(),
        Some(0),
        "uclient lost packets:\n{}",
        outcome.output
    );
    assert_eq!(outcome.sent_and_received(), Some((400, 400)), "{}", outcome.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_udp_without_loss_when_loopback_is_allowed() {
    let server = TurnServer::start(config(true)).await.unwrap();
    let peer = start_peer().await;
    let outcome = relay_run(server.local_addrs().udp, peer.port, SECRET, &[]).await;
    assert_clean_run(&outcome);
    let metrics = server.metrics();
    assert!(metrics.allocations_total >= 4, "{metrics:?}");
    assert!(
        metrics.relayed_packets_to_peers >= 400 && metrics.relayed_packets_to_clients >= 400,
        "{metrics:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_tcp_without_loss_when_loopback_is_allowed() {
    let server = TurnServer::start(config(true)).await.unwrap();
    let peer = start_peer().await;
    let outcome = relay_run(server.local_addrs().tcp, peer.port, SECRET, &["-t"]).await;
    assert_clean_run(&outcome);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_tls_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("`openssl` on PATH to make a test certificate (apt-get install -y openssl)");
    assert!(status.success());
    let mut config = config(true);
    config.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let server = TurnServer::start(config).await.unwrap();
    let peer = start_peer().await;
    let outcome = relay_run(server.local_addrs().tls.unwrap(), peer.port, SECRET, &["-t", "-S"]).await;
    assert_clean_run(&outcome);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peers_are_forbidden_by_default() {
    let server = TurnServer::start(config(false)).await.unwrap();
    let peer = start_peer().await;
    for transport in [&[][..], &["-t"][..]] {
        let outcome = relay_run(server.local_addrs().udp, peer.port, SECRET, transport).await;
        assert_eq!(outcome.code, Some(255), "expected 403 refusal:\n{}", outcome.output);
        assert!(outcome.output.contains("403"), "{}", outcome.output);
    }
    let metrics = server.metrics();
    assert!(metrics.peers_denied > 0, "{metrics:?}");
    assert_eq!(metrics.relayed_packets_to_peers, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused() {
    let server = TurnServer::start(config(true)).await.unwrap();
    let peer = start_peer().await;
    let outcome = relay_run(server.local_addrs().udp, peer.port, "not-the-secret", &[]).await;
    assert_eq!(outcome.code, Some(255), "{}", outcome.output);
    let metrics = server.metrics();
    assert!(metrics.auth_failures > 0, "{metrics:?}");
    assert_eq!((metrics.allocations_total, metrics.relayed_packets_to_peers), (0, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_username_is_refused() {
    let server = TurnServer::start(config(true)).await.unwrap();
    let peer = start_peer().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let username = format!("{}:alice", now - 60);
    let password = turn_password(&Secret::new(SECRET), &username);
    let peer_port = peer.port.to_string();
    let outcome = uclient(
        server.local_addrs().udp,
        &[
            "-u",
            &username,
            "-w",
            &password,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-n",
            "10",
            "-m",
            "1",
        ],
    )
    .await;
    assert_eq!(outcome.code, Some(255), "{}", outcome.output);
    let metrics = server.metrics();
    assert!(metrics.auth_failures > 0, "{metrics:?}");
    assert_eq!(metrics.allocations_total, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stunclient_gets_the_reflexive_address() {
    let server = TurnServer::start(config(false)).await.unwrap();
    let output = Command::new(tool("turnutils_stunclient"))
        .args([
            "-p",
            &server.local_addrs().udp.port().to_string(),
            "-L",
            "127.0.0.1",
            "127.0.0.1",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let reflexive = text
        .split("UDP reflexive addr: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next());
    let reflexive: SocketAddr = reflexive
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no reflexive address in:\n{text}"));
    assert_eq!(reflexive.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(reflexive.port(), 0);
    server.shutdown().await;
}

/// `-y`: the clients relay to each other's relayed addresses, i.e. the relay's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_clients_talk_to_each_other_through_their_relays() {
    let server = TurnServer::start(config(true)).await.unwrap();
    let outcome = uclient(
        server.local_addrs().udp,
        &["-y", "-W", SECRET, "-u", "alice", "-n", "100", "-m", "4"],
    )
    .await;
    assert_clean_run(&outcome);
    server.shutdown().await;
}
