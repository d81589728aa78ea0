//! The tokio driver on its own: framing on TCP, Binding on UDP and TCP, start-up checks.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use convene_auth::Secret;
use convene_turn::{StartError, TurnConfig, TurnServer};
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{BINDING, Message, MessageClass, MessageWrite, MessageWriteVec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn config() -> TurnConfig {
    let mut config = TurnConfig::new(Secret::new("driver-secret"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.relay_ports = 43_000..=43_999;
    config
}

fn binding_request() -> Vec<u8> {
    Message::builder_request(BINDING, MessageWriteVec::new()).finish()
}

fn mapped(response: &[u8]) -> std::net::SocketAddr {
    let m = Message::from_bytes(response).unwrap();
    assert_eq!(m.class(), MessageClass::Success);
    m.attribute::<XorMappedAddress>().unwrap().addr(m.transaction_id())
}

#[tokio::test]
async fn udp_binding_reflects_the_source_address() {
    let server = TurnServer::start(config()).await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&binding_request(), server.local_addrs().udp)
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapped(&buf[..len]), client.local_addr().unwrap());
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_frames_back_to_back_and_garbage_closes_the_connection() {
    let server = TurnServer::start(config()).await.unwrap();
    assert_eq!(server.local_addrs().tcp.port(), server.local_addrs().udp.port());
    let mut stream = TcpStream::connect(server.local_addrs().tcp).await.unwrap();
    // Two requests in one write: the framing splits them.
    let mut two = binding_request();
    two.extend_from_slice(&binding_request());
    stream.write_all(&two).await.unwrap();
    for _ in 0..2 {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).await.unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[2], header[3]]))];
        stream.read_exact(&mut body).await.unwrap();
        let response = [&header[..], &body].concat();
        assert_eq!(mapped(&response), stream.local_addr().unwrap());
    }
    // Not STUN, not ChannelData: the server hangs up.
    stream.write_all(&[0x80; 16]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn unusable_configurations_are_refused() {
    let mut unspecified = config();
    unspecified.listen = "0.0.0.0:0".parse().unwrap();
    assert!(matches!(
        TurnServer::start(unspecified).await,
        Err(StartError::Config(_))
    ));

    let mut advertised = config();
    advertised.listen = "0.0.0.0:0".parse().unwrap();
    advertised.relay_public_ip = Some("203.0.113.9".parse().unwrap());
    TurnServer::start(advertised).await.unwrap().shutdown().await;

    let mut tls_without_cert = config();
    tls_without_cert.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    assert!(matches!(
        TurnServer::start(tls_without_cert).await,
        Err(StartError::Config(_))
    ));

    let mut missing_cert = config();
    missing_cert.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    missing_cert.tls_cert = Some("/nonexistent/cert.pem".into());
    missing_cert.tls_key = Some("/nonexistent/key.pem".into());
    assert!(matches!(TurnServer::start(missing_cert).await, Err(StartError::Tls(_))));
}

#[tokio::test]
async fn shutdown_waits_for_the_udp_thread_and_frees_the_port() {
    let server = TurnServer::start(config()).await.unwrap();
    let udp = server.local_addrs().udp;
    // Serving: a Binding request is answered on the UDP plane.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&binding_request(), udp).await.unwrap();
    let mut buf = [0u8; 1500];
    tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    server.shutdown().await;
    // Once shutdown returns the UDP thread is gone and with it the listening socket.
    std::net::UdpSocket::bind(udp).unwrap();
}
