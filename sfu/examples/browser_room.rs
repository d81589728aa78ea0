//! A throwaway signaling shim for checking the SFU against real browsers: plain HTTP endpoints
//! over the handle API, and the page in `tests/browser/room.html`. Not the product's signaling
//! (that is the `signaling` crate); `tests/browser/run.sh` drives three headless Chromium pages
//! through it.
//!
//! `cargo run -p convene-sfu --example browser_room -- 127.0.0.1:8090`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use convene_sfu::{
    ParticipantEvent, ParticipantHandle, ParticipantId, ParticipantInfo, RoomId, Sfu, SfuConfig, TrackSource,
};
use tokio::sync::{Mutex, mpsc};

const PAGE: &str = include_str!("../tests/browser/room.html");

struct Peer {
    handle: ParticipantHandle,
    offers: Arc<Mutex<mpsc::UnboundedReceiver<String>>>,
}

#[derive(Clone)]
struct App {
    sfu: Sfu,
    room: RoomId,
    peers: Arc<Mutex<HashMap<String, Peer>>>,
}

fn bad(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn peer(app: &App, name: &str) -> Option<(ParticipantHandle, Arc<Mutex<mpsc::UnboundedReceiver<String>>>)> {
    let peers = app.peers.lock().await;
    peers.get(name).map(|p| (p.handle.clone(), p.offers.clone()))
}

async fn join(State(app): State<App>, Path(name): Path<String>) -> Response {
    let id = match ParticipantId::parse(name.clone()) {
        Ok(id) => id,
        Err(e) => return bad(e),
    };
    let (handle, mut events, _) = match app.sfu.join(app.room.clone(), id, ParticipantInfo::new(&name)).await {
        Ok(j) => j,
        Err(e) => return bad(e),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            println!("[{name}] {event:?}");
            if let ParticipantEvent::SubscriberOffer { sdp, .. } = *event {
                let _ = tx.send(sdp);
            }
        }
    });
    app.peers.lock().await.insert(
        handle.participant().to_string(),
        Peer {
            handle,
            offers: Arc::new(Mutex::new(rx)),
        },
    );
    StatusCode::OK.into_response()
}

async fn publish(State(app): State<App>, Path(name): Path<String>, sdp: String) -> Response {
    let Some((handle, _)) = peer(&app, &name).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match handle.publisher_offer(sdp).await {
        Ok(answer) => answer.into_response(),
        Err(e) => bad(e),
    }
}

async fn track_info(State(app): State<App>, Path((name, mid, source)): Path<(String, String, String)>) -> Response {
    let Some((handle, _)) = peer(&app, &name).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let source: TrackSource = match source.parse() {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    match handle.set_track_info(mid, source, false).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => bad(e),
    }
}

async fn next_offer(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Some((_, offers)) = peer(&app, &name).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut offers = offers.lock().await;
    match tokio::time::timeout(Duration::from_secs(5), offers.recv()).await {
        Ok(Some(sdp)) => sdp.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn answer(State(app): State<App>, Path(name): Path<String>, sdp: String) -> Response {
    let Some((handle, _)) = peer(&app, &name).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match handle.subscriber_answer(sdp).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => bad(e),
    }
}

async fn leave(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Some(p) = app.peers.lock().await.remove(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match p.handle.leave().await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => bad(e),
    }
}

async fn stats(State(app): State<App>) -> Response {
    format!("{:?}", app.sfu.stats().await).into_response()
}

#[tokio::main]
async fn main() {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned())
        .parse()
        .unwrap();
    let sfu = Sfu::start(SfuConfig {
        udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tcp_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        advertise_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        workers: 1,
    })
    .unwrap();
    let app = App {
        sfu,
        room: RoomId::parse("browser-room").unwrap(),
        peers: Arc::default(),
    };
    let router = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/join/{name}", post(join))
        .route("/publish/{name}", post(publish))
        .route("/trackinfo/{name}/{mid}/{source}", post(track_info))
        .route("/offer/{name}", get(next_offer))
        .route("/answer/{name}", post(answer))
        .route("/leave/{name}", post(leave))
        .route("/stats", get(stats))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, router).await.unwrap();
}
