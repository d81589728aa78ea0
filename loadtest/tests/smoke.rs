//! Keeps the load generator working: the real Convene `App` on 127.0.0.1:0 (SQLite in a temp
//! dir), one room with one publisher and two subscribers through the REST API and `/ws/signal`,
//! a couple of seconds of stamped Opus + VP8; nothing may be lost. No timing assertions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use convene::{App, Config, MediaConfig};
use convene_auth::Secret;
use convene_loadtest::convene::Api;
use convene_loadtest::sfu::{SfuParams, run};
use convene_loadtest::signal::Target;

#[test]
fn one_publisher_two_subscribers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(format!("sqlite://{}?mode=rwc", dir.path().join("smoke.db").display())),
        jwt_secret: Some(Secret::new("smoke-secret")),
        media: Some(MediaConfig {
            udp_addr: "127.0.0.1:0".parse().unwrap(),
            tcp_addr: None,
            advertise_ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            workers: 1,
            resume_grace: Duration::from_secs(2),
        }),
        turn: None,
        ..Config::default()
    };
    // The server on its own runtime, as it would run in its own process.
    let server = tokio::runtime::Runtime::new().unwrap();
    let app = server.block_on(App::build(config)).unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    server.spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    // The clients as the load generator runs them: one current thread.
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let params = SfuParams {
        target: Target::Convene {
            api: Api::new(&format!("http://{addr}")),
            jwt_secret: None,
        },
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        audio: true,
        video: true,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        ready_timeout: Duration::from_secs(60),
        join_rate: 20.0,
        server_pid: None,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let report = tokio::task::LocalSet::new().block_on(&clients, run(params)).unwrap();
    let _ = stop.send(());

    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.ready, report.participants), (3, 3), "{report:?}");
    // Two seconds of 50 audio + ~130 video packets/s to two subscribers.
    assert!(report.expected_packets > 300, "{report:?}");
    assert!(report.video_expected > 0 && report.video_expected < report.expected_packets);
    assert_eq!(report.delivered_packets, report.expected_packets, "{report:?}");
    assert_eq!(report.delay_ms.count as u64, report.delivered_packets);
    assert_eq!(report.join_media_ms.count, 3);
}
