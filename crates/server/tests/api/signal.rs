//! `/ws/signal` without media: joining, the room's roster, resume, leave and bad input.
//! (Media through the same sessions is covered by the SFU's webrtc-rs tests and the browser
//! tests.)

use std::time::Duration;

use convene_auth::{JoinGrant, JoinTokens, PublishSource, RoomGrants, Secret};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Session, TEST_SECRET, TestApp, spawn_app};

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{}/ws/signal", app.addr))
        .await
        .expect("connects")
        .0
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message, skipping the subscriber offers the SFU sends on its own.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time");
        match frame.expect("socket open").expect("frame") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "offer" {
                    return v;
                }
            }
            Message::Close(frame) => return json!({ "type": "closed", "frame": format!("{frame:?}") }),
            _ => {}
        }
    }
}

/// A team with a room, and join tokens from the REST API.
pub(crate) async fn room(app: &TestApp, users: &[&str]) -> (String, Vec<Session>) {
    let sessions: Vec<Session> = futures_util::future::join_all(users.iter().map(|u| app.register(u))).await;
    let team = app.team(&sessions[0], "T").await;
    for s in &sessions[1..] {
        app.add(&sessions[0], &team, s, "member").await;
    }
    let (_, room) = app
        .post(
            "/api/v1/rooms",
            Some(&sessions[0].access),
            json!({ "name": "R", "team_id": team }),
        )
        .await;
    (room["id"].as_str().unwrap().to_owned(), sessions)
}

async fn join_token(app: &TestApp, room: &str, user: &Session) -> String {
    let (status, join) = app
        .post(&format!("/api/v1/rooms/{room}/join"), Some(&user.access), json!({}))
        .await;
    assert_eq!(status, 200, "{join}");
    join["token"].as_str().unwrap().to_owned()
}

pub(crate) async fn joined(app: &TestApp, room: &str, user: &Session) -> (Ws, Value) {
    let mut ws = connect(app).await;
    send(
        &mut ws,
        json!({ "type": "join", "id": "j", "token": join_token(app, room, user).await }),
    )
    .await;
    let joined = next(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (ws, joined)
}

#[tokio::test]
async fn join_roster_and_leave() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada", "bob"]).await;
    let (mut ada, first) = joined(&app, &room, &users[0]).await;
    assert_eq!(first["id"], "j");
    assert_eq!(first["room"], room.as_str());
    assert_eq!(first["participant"]["id"], users[0].user_id.as_str());
    assert!(first["others"].as_array().unwrap().is_empty());
    assert!(first["session_token"].as_str().is_some_and(|t| t.len() > 20));

    let (mut bob, second) = joined(&app, &room, &users[1]).await;
    assert_eq!(second["others"][0]["id"], users[0].user_id.as_str());
    assert_eq!(second["others"][0]["name"], "ada");
    let seen = next(&mut ada).await;
    assert_eq!(
        (seen["type"].as_str(), seen["participant"]["id"].as_str()),
        (Some("participant_joined"), Some(users[1].user_id.as_str()))
    );

    // The rooms API shows who is in the room.
    let (_, live) = app.get(&format!("/api/v1/rooms/{room}"), &users[0].access).await;
    assert_eq!(live["live"]["participants"].as_array().unwrap().len(), 2, "{live}");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("convene_media_participants 2"), "{metrics}");
    assert!(metrics.contains("convene_media_rooms 1"), "{metrics}");
    // Neither has offered: each holds its subscriber connection only.
    assert!(metrics.contains("convene_media_peer_connections 2"), "{metrics}");
    for counter in ["nacks_received", "nacks_sent", "retransmitted_packets"] {
        assert!(
            metrics.contains(&format!("convene_media_{counter}_total 0")),
            "{counter}: {metrics}"
        );
    }
    assert!(
        metrics.contains(r#"route="/ws/signal",status="101""#),
        "signaling requests are counted: {metrics}"
    );

    send(&mut bob, json!({ "type": "ping", "id": "p" })).await;
    assert_eq!(next(&mut bob).await, json!({ "type": "pong", "id": "p" }));
    send(&mut bob, json!({ "type": "leave", "id": "l" })).await;
    assert_eq!(next(&mut bob).await["type"], "ack");
    assert_eq!(next(&mut bob).await["type"], "removed");
    let left = next(&mut ada).await;
    assert_eq!(
        (left["type"].as_str(), left["participant_id"].as_str()),
        (Some("participant_left"), Some(users[1].user_id.as_str()))
    );
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_session_survives() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada"]).await;
    let mut ws = connect(&app).await;
    send(&mut ws, json!({ "type": "offer", "target": "publisher", "sdp": "v=0" })).await;
    assert_eq!(next(&mut ws).await["code"], "not_joined");
    send(&mut ws, json!({ "type": "join", "token": "garbage" })).await;
    assert_eq!(next(&mut ws).await["code"], "invalid_token");
    let tokens = JoinTokens::new(&Secret::new(TEST_SECRET));
    let grant = |grants: RoomGrants| JoinGrant {
        participant: users[0].user_id.clone(),
        name: "ada".into(),
        room: room.clone(),
        grants,
        max_participants: None,
    };
    let expired = tokens.issue(grant(RoomGrants::participant()), 1_000, 60).unwrap();
    send(&mut ws, json!({ "type": "join", "token": expired })).await;
    assert_eq!(next(&mut ws).await["code"], "token_expired");
    let forged = JoinTokens::new(&Secret::new("not ours"))
        .issue(grant(RoomGrants::participant()), now(), 60)
        .unwrap();
    send(&mut ws, json!({ "type": "join", "token": forged })).await;
    assert_eq!(next(&mut ws).await["code"], "invalid_token");

    // Audio only: publishing a camera is refused.
    let audio_only = RoomGrants {
        publish: vec![PublishSource::Audio],
        ..RoomGrants::participant()
    };
    send(
        &mut ws,
        json!({ "type": "join", "id": "j", "token": tokens.issue(grant(audio_only), now(), 60).unwrap() }),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "joined");

    let cases = [
        (Message::Text("not json".into()), "invalid_message"),
        (Message::Text(r#"{"type":"teleport"}"#.into()), "invalid_message"),
        (Message::Binary(vec![1, 2, 3].into()), "invalid_message"),
        (
            Message::Text(
                json!({ "type": "ping", "id": "x".repeat(200 * 1024) })
                    .to_string()
                    .into(),
            ),
            "message_too_large",
        ),
        (
            Message::Text(
                json!({ "type": "offer", "id": "o", "target": "publisher", "sdp": "v=0\r\ngarbage" })
                    .to_string()
                    .into(),
            ),
            "invalid_sdp",
        ),
        (
            Message::Text(
                json!({ "type": "answer", "id": "a", "target": "publisher", "sdp": "v=0" })
                    .to_string()
                    .into(),
            ),
            "invalid_target",
        ),
        (
            Message::Text(
                json!({ "type": "track_info", "id": "t", "mid": "0", "source": "camera" })
                    .to_string()
                    .into(),
            ),
            "not_allowed",
        ),
        (
            Message::Text(
                json!({ "type": "track_info", "id": "t", "mid": "0", "source": "hologram" })
                    .to_string()
                    .into(),
            ),
            "invalid_request",
        ),
        (
            Message::Text(
                json!({ "type": "subscribe", "id": "s", "track_id": "TR_999" })
                    .to_string()
                    .into(),
            ),
            "unknown_track",
        ),
        (
            Message::Text(
                json!({ "type": "track_settings", "id": "ts", "track_id": "TR_999", "width": 320, "height": 180 })
                    .to_string()
                    .into(),
            ),
            "unknown_track",
        ),
        (
            Message::Text(
                json!({ "type": "track_settings", "id": "ts", "track_id": "TR_1", "width": 320 })
                    .to_string()
                    .into(),
            ),
            "invalid_request",
        ),
        (
            Message::Text(
                json!({ "type": "track_settings", "id": "ts", "track_id": "TR_1", "width": 0, "height": 10 })
                    .to_string()
                    .into(),
            ),
            "invalid_request",
        ),
        (
            Message::Text(
                json!({ "type": "track_settings", "id": "ts", "track_id": "TR_1", "quality": "ultra" })
                    .to_string()
                    .into(),
            ),
            "invalid_request",
        ),
        (
            Message::Text(
                json!({ "type": "track_settings", "id": "ts", "track_id": "TR_1", "width": -5, "height": 10 })
                    .to_string()
                    .into(),
            ),
            "invalid_message",
        ),
        (
            Message::Text(
                json!({ "type": "join", "id": "again", "token": "x" })
                    .to_string()
                    .into(),
            ),
            "already_joined",
        ),
    ];
    for (frame, code) in cases {
        ws.send(frame).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    send(&mut ws, json!({ "type": "ping", "id": "still" })).await;
    assert_eq!(next(&mut ws).await["id"], "still", "the session goes on");
}

#[tokio::test]
async fn full_rooms_refuse_joins() {
    let app = spawn_app().await;
    let (_, users) = room(&app, &["ada", "bob"]).await;
    let (_, list) = app.get("/api/v1/teams", &users[0].access).await;
    let team = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, small) = app
        .post(
            "/api/v1/rooms",
            Some(&users[0].access),
            json!({ "name": "1:1", "team_id": team, "max_participants": 1 }),
        )
        .await;
    let small = small["id"].as_str().unwrap();
    let (_ada, _) = joined(&app, small, &users[0]).await;
    let mut bob = connect(&app).await;
    send(
        &mut bob,
        json!({ "type": "join", "token": join_token(&app, small, &users[1]).await }),
    )
    .await;
    assert_eq!(next(&mut bob).await["code"], "room_full");
}

#[tokio::test]
async fn resume_within_grace_then_expiry() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada", "bob"]).await;
    let (mut ada, _) = joined(&app, &room, &users[0]).await;
    let (bob, bob_joined) = joined(&app, &room, &users[1]).await;
    assert_eq!(next(&mut ada).await["type"], "participant_joined");
    let token = bob_joined["session_token"].as_str().unwrap().to_owned();

    // Bob's socket drops; he resumes and is still the same participant.
    drop(bob);
    let mut bob = connect(&app).await;
    send(&mut bob, json!({ "type": "resume", "id": "r", "session_token": token })).await;
    let resumed = next(&mut bob).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["others"][0]["id"], users[0].user_id.as_str());

    // Gone for longer than the grace period (2 s in tests): the others are told.
    drop(bob);
    let left = next(&mut ada).await;
    assert_eq!(
        (left["type"].as_str(), left["participant_id"].as_str()),
        (Some("participant_left"), Some(users[1].user_id.as_str()))
    );
    let mut late = connect(&app).await;
    send(&mut late, json!({ "type": "resume", "session_token": token })).await;
    assert_eq!(next(&mut late).await["code"], "session_expired");
}

#[tokio::test]
async fn a_second_join_replaces_the_first_and_deleting_the_room_ends_it() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada"]).await;
    let (mut tab1, _) = joined(&app, &room, &users[0]).await;
    let (mut tab2, _) = joined(&app, &room, &users[0]).await;
    let removed = next(&mut tab1).await;
    assert_eq!(
        (removed["type"].as_str(), removed["reason"].as_str()),
        (Some("removed"), Some("joined_elsewhere"))
    );

    assert_eq!(
        app.delete(&format!("/api/v1/rooms/{room}"), &users[0].access).await.0,
        204
    );
    let removed = next(&mut tab2).await;
    assert_eq!(
        (removed["type"].as_str(), removed["reason"].as_str()),
        (Some("removed"), Some("room_closed")),
        "{removed}"
    );
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The next `/ws/events` event whose type starts with `prefix`.
async fn next_event(ws: &mut Ws, prefix: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"].as_str().is_some_and(|t| t.starts_with(prefix)) {
            return v;
        }
    }
}

#[tokio::test]
async fn room_activity_reaches_who_may_join_on_the_event_stream() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada", "bob"]).await;
    let guest = app.register("guest").await;
    let (_, teams) = app.get("/api/v1/teams", &users[0].access).await;
    let team = teams["items"][0]["id"].as_str().unwrap().to_owned();
    app.add(&users[0], &team, &guest, "guest").await;
    let stream = |s: &Session| format!("ws://{}/ws/events?access_token={}", app.addr, s.access);
    let mut bob_events = tokio_tungstenite::connect_async(stream(&users[1])).await.unwrap().0;
    let mut guest_events = tokio_tungstenite::connect_async(stream(&guest)).await.unwrap().0;
    assert_eq!(next(&mut bob_events).await["type"], "hello");
    assert_eq!(next(&mut guest_events).await["type"], "hello");

    let (_ada, _) = joined(&app, &room, &users[0]).await;
    let started = next_event(&mut bob_events, "room.").await;
    assert_eq!(
        (started["type"].as_str(), started["data"]["room_id"].as_str()),
        (Some("room.started"), Some(room.as_str()))
    );
    let joined_event = next_event(&mut bob_events, "room.").await;
    assert_eq!(joined_event["type"], "room.participant_joined");
    assert_eq!(joined_event["data"]["participant_id"], users[0].user_id.as_str());

    // The uninvited guest heard nothing of it: the next thing on its stream is this marker
    // (teammates' presence, announced as their streams open, may come first).
    app.events.publish([guest.user_id.as_str()], "test.marker", &json!({}));
    let after = loop {
        let e = next(&mut guest_events).await;
        if e["type"] != "presence.changed" {
            break e;
        }
    };
    assert_eq!(after["type"], "test.marker");
}
