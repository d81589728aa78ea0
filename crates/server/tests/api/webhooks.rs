//! Team webhooks: a receiver on 127.0.0.1 (allow-listed) gets signed room events, a failed
//! delivery is retried, the delivery log shows it, and the guards hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, error_code, spawn_app_with};

pub(crate) const SECRET: &str = "a-shared-secret-of-some-length";

pub(crate) struct Received {
    pub(crate) timestamp: String,
    pub(crate) signature: String,
    pub(crate) body: String,
}

/// A local receiver answering 500 to its first request and 204 afterwards.
pub(crate) async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let _ = tx.send(Received {
                    timestamp: header("convene-webhook-timestamp"),
                    signature: header("convene-webhook-signature"),
                    body,
                });
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

/// What a receiver does: recompute the signature over the timestamp and the raw body.
pub(crate) fn verify(secret: &str, timestamp: &str, body: &str, signature: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    signature == format!("v1={hex}")
}

async fn join_and_leave(app: &TestApp, room: &str, token: &str) {
    let (_, join) = app
        .post(&format!("/api/v1/rooms/{room}/join"), Some(token), json!({}))
        .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/signal", app.addr))
        .await
        .unwrap();
    let send = json!({ "type": "join", "id": "j", "token": join["token"] }).to_string();
    ws.send(Message::Text(send.into())).await.unwrap();
    loop {
        let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        if serde_json::from_str::<Value>(&t).unwrap()["type"] == "joined" {
            break;
        }
    }
    let leave = json!({ "type": "leave", "id": "l" }).to_string();
    ws.send(Message::Text(leave.into())).await.unwrap();
    // The server closes the socket once the participant has left.
    while let Some(Ok(frame)) = ws.next().await {
        if matches!(frame, Message::Close(_)) {
            break;
        }
    }
}

#[tokio::test]
async fn signed_room_events_reach_a_local_receiver_with_retries_and_a_log() {
    let app = spawn_app_with(|c| c.webhook_allowed_ips = vec!["127.0.0.1".parse().unwrap()]).await;
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let outsider = app.register("outsider").await;
    let team = app.team(&owner, "T").await;
    app.add(&owner, &team, &member, "member").await;
    let (url, mut inbox) = receiver().await;

    // Guards: admins only; public http(s) targets only unless allow-listed; valid types.
    let hook = |url: &str, types: Value| json!({ "team_id": team, "url": url, "event_types": types, "secret": SECRET });
    let all = json!([
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished"
    ]);
    let (status, body) = app
        .post("/api/v1/webhooks", Some(&member.access), hook(&url, all.clone()))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = app
        .post("/api/v1/webhooks", Some(&outsider.access), hook(&url, all.clone()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        "http://127.0.0.2/hook",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
        "ftp://example.com/x",
        "nope",
    ] {
        let (status, body) = app
            .post("/api/v1/webhooks", Some(&owner.access), hook(bad, all.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body["error"]["fields"]["url"].is_string(), "{body}");
    }
    let (status, _) = app
        .post("/api/v1/webhooks", Some(&owner.access), hook(&url, json!([])))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post(
            "/api/v1/webhooks",
            Some(&owner.access),
            hook(&url, json!(["room_exploded"])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, created) = app.post("/api/v1/webhooks", Some(&owner.access), hook(&url, all)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["secret"], SECRET, "the secret is shown once");
    let id = created["id"].as_str().unwrap();
    let (_, listed) = app
        .get(&format!("/api/v1/webhooks?team_id={team}"), &owner.access)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none());

    let (_, room) = app
        .post(
            "/api/v1/rooms",
            Some(&owner.access),
            json!({ "name": "R", "team_id": team }),
        )
        .await;
    let room_id = room["id"].as_str().unwrap();
    join_and_leave(&app, room_id, &member.access).await;

    // Four events; the first request got a 500 and is delivered again.
    let mut types = Vec::new();
    let mut first: Option<Received> = None;
    for _ in 0..5 {
        let got = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("a delivery in time")
            .unwrap();
        assert!(
            verify(SECRET, &got.timestamp, &got.body, &got.signature),
            "signature verifies"
        );
        let body: Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(body["team_id"], team.as_str());
        assert_eq!(body["data"]["room_id"], room_id);
        types.push(body["type"].as_str().unwrap().to_owned());
        first.get_or_insert(got);
    }
    let distinct: BTreeSet<&str> = types.iter().map(String::as_str).collect();
    assert_eq!(
        distinct,
        BTreeSet::from([
            "participant_joined",
            "participant_left",
            "room_finished",
            "room_started"
        ])
    );
    assert_eq!(
        types.iter().filter(|t| *t == &types[0]).count(),
        2,
        "the failed one is retried: {types:?}"
    );

    // A receiver rejects a tampered body, a wrong secret and a replayed timestamp.
    let first = first.unwrap();
    let tampered = first.body.replace(room_id, "another-room");
    assert!(!verify(SECRET, &first.timestamp, &tampered, &first.signature));
    assert!(!verify("wrong-secret", &first.timestamp, &first.body, &first.signature));
    assert!(!verify(SECRET, "1", &first.body, &first.signature));

    // The log: every delivery ends delivered; the retried one took two attempts. The runner
    // writes the outcome after the receiver has answered, and nothing announces it (no event
    // on /ws/events, the receiver cannot see past its response), so this polls with a deadline.
    let path = format!("/api/v1/webhooks/{id}/deliveries");
    let log = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (status, log) = app.get(&path, &owner.access).await;
            assert_eq!(status, StatusCode::OK);
            let items = log["items"].as_array().unwrap().clone();
            if items.len() == 4 && items.iter().all(|d| d["state"] == "delivered") {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("all deliveries complete");
    let attempts: Vec<i64> = log.iter().map(|d| d["attempts"].as_i64().unwrap()).collect();
    assert_eq!(attempts.iter().sum::<i64>(), 5, "{log:?}");
    assert!(log.iter().all(|d| d["status_code"] == 204));
    let (status, _) = app.get(&path, &member.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    assert_eq!(
        app.delete(&format!("/api/v1/webhooks/{id}"), &member.access).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete(&format!("/api/v1/webhooks/{id}"), &owner.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{id}"), &owner.access).await.0,
        StatusCode::NOT_FOUND
    );
}
