//! Headless Chromium makes a call between two peer connections restricted to relay
//! candidates (`iceTransportPolicy: 'relay'`) through the real driver, over UDP and over TCP,
//! and decodes the video.
//!
//! Needs Chromium (`apt-get install -y chromium`), Node.js and `npm ci` (or `npm install`) in
//! `turn-server/tests/browser`; hence ignored by default. Run it with
//! `cargo test -p convene-turn --test browser_relay -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use convene_auth::{Secret, turn_credentials};
use convene_turn::{TurnConfig, TurnServer};
use tokio::process::Command;

async fn call_through(transport: &str) -> String {
    let secret = Secret::new("browser-secret");
    let mut config = TurnConfig::new(secret.clone());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.relay_ports = 42_000..=42_999;
    // Both browsers' relayed addresses are on 127.0.0.1, the relay's own address.
    config.allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
    let server = TurnServer::start(config).await.unwrap();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let credentials = turn_credentials(&secret, "browser", now, 600);
    let ice_servers = format!(
        r#"[{{"urls":"turn:{}?transport={transport}","username":"{}","credential":"{}"}}]"#,
        server.local_addrs().udp,
        credentials.username,
        credentials.credential
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first (needs Node.js); Chromium comes from `apt-get install -y chromium`",
        dir.display()
    );
    let output = Command::new("node")
        .arg("relay.js")
        .current_dir(&dir)
        .env("ICE_SERVERS", ice_servers)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("the browser call finishes within 90 s")
        .expect("`node` on PATH");
    let result = String::from_utf8_lossy(&output.stdout).to_string();
    let metrics = server.metrics();
    server.shutdown().await;
    assert!(
        output.status.success(),
        "call through TURN/{transport} failed: {result}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        metrics.relayed_packets_to_peers > 50 && metrics.relayed_packets_to_clients > 50,
        "{metrics:?}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in turn-server/tests/browser"]
async fn chromium_calls_through_the_relay_over_udp() {
    let result = call_through("udp").await;
    assert!(result.contains(r#""localType":"relay""#), "{result}");
    assert!(result.contains(r#""relayProtocol":"udp""#), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in turn-server/tests/browser"]
async fn chromium_calls_through_the_relay_over_tcp() {
    let result = call_through("tcp").await;
    assert!(result.contains(r#""localType":"relay""#), "{result}");
    assert!(result.contains(r#""relayProtocol":"tcp""#), "{result}");
}
