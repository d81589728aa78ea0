//! WHIP and WHEP against the real server: a webrtc-rs publisher over `POST /whip/{room}` is seen
//! by a WebSocket participant; a webrtc-rs viewer over `POST /whep/{room}` receives its packets
//! intact; `DELETE` ends both; bad requests get the REST error body and leave the room alone.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "../../../sfu/tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::Duration;

use convene_auth::{JoinGrant, JoinTokens, PublishSource, RoomGrants, Secret};
use futures_util::{SinkExt, StreamExt};
use helpers::{Session, TEST_SECRET, TestApp, spawn_app};
use reqwest::StatusCode;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use support::{AUDIO_SSRC, Client, OPUS_PT, VIDEO_SSRC, VP8_PT, check_payload, collect_rtp, local_track, payload};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;

const PACKETS: u32 = 300;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A team with a room (and a second room), members `users`, all from the REST API.
async fn rooms(app: &TestApp, users: &[&str]) -> (String, String, Vec<Session>) {
    let sessions: Vec<Session> = futures_util::future::join_all(users.iter().map(|u| app.register(u))).await;
    let team = app.team(&sessions[0], "T").await;
    for s in &sessions[1..] {
        app.add(&sessions[0], &team, s, "member").await;
    }
    let mut ids = Vec::new();
    for name in ["R", "Other"] {
        let (status, room) = app
            .post(
                "/api/v1/rooms",
                Some(&sessions[0].access),
                json!({ "name": name, "team_id": team }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{room}");
        ids.push(room["id"].as_str().unwrap().to_owned());
    }
    (ids.remove(0), ids.remove(0), sessions)
}

async fn join_token(app: &TestApp, room: &str, user: &Session) -> String {
    let (status, join) = app
        .post(&format!("/api/v1/rooms/{room}/join"), Some(&user.access), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{join}");
    join["token"].as_str().unwrap().to_owned()
}

/// A WebSocket participant in `room`.
async fn watcher(app: &TestApp, room: &str, user: &Session) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/signal", app.addr))
        .await
        .unwrap();
    let join = json!({ "type": "join", "id": "j", "token": join_token(app, room, user).await });
    ws.send(Message::Text(join.to_string().into())).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "joined");
    ws
}

/// Reads a team event stream (`/ws/events`) until each of `wanted` (type,
/// participant id) of the room's activity has been seen.
async fn room_activity(events: &mut Ws, mut wanted: HashSet<(&str, &str)>) {
    while !wanted.is_empty() {
        let frame = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .unwrap_or_else(|_| panic!("room activity in time; still missing {wanted:?}"))
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).unwrap();
            let (kind, who) = (v["type"].as_str(), v["data"]["participant_id"].as_str());
            wanted.retain(|&(k, p)| (Some(k), Some(p)) != (kind, who));
        }
    }
}

/// The next signaling message other than the SFU's subscriber offers, media state, speaker lists
/// and quality ratings.
async fn next(ws: &mut Ws) -> Value {
    next_within(ws, Duration::from_secs(15)).await
}

async fn next_within(ws: &mut Ws, limit: Duration) -> Value {
    loop {
        let frame = tokio::time::timeout(limit, ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).unwrap();
            // Offers, media state, speakers and quality ratings come whenever the media plane has
            // them; these tests follow the roster and the tracks.
            if !["offer", "media_state", "speakers", "connection_quality"].contains(&v["type"].as_str().unwrap_or("")) {
                return v;
            }
        }
    }
}

struct Created {
    status: StatusCode,
    location: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn post_sdp(app: &TestApp, path: &str, token: Option<&str>, content_type: &str, body: String) -> Created {
    let mut req = app
        .client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    Created {
        status: res.status(),
        location: header("location"),
        content_type: header("content-type"),
        body: "".to_owned(),
    }
    .with_body(res.text().await.unwrap())
}

impl Created {
    fn with_body(mut self, body: String) -> Self {
        self.body = body;
        self
    }

    /// The error code of a REST error body.
    fn code(&self) -> String {
        let v: Value = serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body));
        helpers::error_code(&v).to_owned()
    }
}

async fn delete(app: &TestApp, location: &str) -> StatusCode {
    app.client.delete(app.url(location)).send().await.unwrap().status()
}

fn rtp(pt: u8, ssrc: u32, n: u32, ts: u32, kind: RtpCodecKind) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker: true,
            payload_type: pt,
            sequence_number: (n as u16).wrapping_add(1000),
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: payload(kind, n).into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_websocket_participants_and_whep_viewer() {
    let app = spawn_app().await;
    let (room, _, users) = rooms(&app, &["ada", "bob", "cyd", "dee"]).await;
    // dee follows the team's events: room activity feeds analytics and webhooks.
    let url = format!("ws://{}/ws/events?access_token={}", app.addr, users[3].access);
    let mut activity = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let mut ada = watcher(&app, &room, &users[0]).await;

    // bob publishes Opus + VP8 over WHIP.
    let mut publisher = Client::new().await.unwrap();
    let audio = local_track(RtpCodecKind::Audio, AUDIO_SSRC, false);
    let video = local_track(RtpCodecKind::Video, VIDEO_SSRC, false);
    publisher.pc.add_track(audio.clone()).await.unwrap();
    publisher.pc.add_track(video.clone()).await.unwrap();
    let bob_token = join_token(&app, &room, &users[1]).await;
    let offer = publisher.offer().await.unwrap();
    let whip = post_sdp(
        &app,
        &format!("/whip/{room}"),
        Some(&bob_token),
        "application/sdp",
        offer,
    )
    .await;
    assert_eq!(whip.status, StatusCode::CREATED, "{}", whip.body);
    assert_eq!(whip.content_type.as_deref(), Some("application/sdp"));
    let whip_location = whip.location.clone().unwrap();
    assert!(whip_location.starts_with(&format!("/whip/{room}/")), "{whip_location}");
    publisher.accept_answer(whip.body).await.unwrap();
    publisher.wait_connected().await.unwrap();

    // ada sees bob join and publish both tracks.
    let joined = next(&mut ada).await;
    assert_eq!(
        (joined["type"].as_str(), joined["participant"]["id"].as_str()),
        (Some("participant_joined"), Some(users[1].user_id.as_str())),
        "{joined}"
    );
    let mut kinds = HashSet::new();
    while kinds.len() < 2 {
        let m = next(&mut ada).await;
        assert_eq!(m["type"], "track_published", "{m}");
        assert_eq!(m["track"]["participant_id"], users[1].user_id.as_str());
        kinds.insert(m["track"]["kind"].as_str().unwrap().to_owned());
    }

    // cyd watches over WHEP with one recvonly audio and one recvonly video m-line.
    let mut viewer = Client::new().await.unwrap();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        viewer
            .pc
            .add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    }
    let tracks = std::mem::replace(&mut viewer.tracks, tokio::sync::mpsc::unbounded_channel().1);
    let (mut received, _) = collect_rtp(tracks);
    let cyd_token = join_token(&app, &room, &users[2]).await;
    let offer = viewer.offer().await.unwrap();
    let whep = post_sdp(
        &app,
        &format!("/whep/{room}?participant={}", users[1].user_id),
        Some(&cyd_token),
        "application/sdp",
        offer,
    )
    .await;
    assert_eq!(whep.status, StatusCode::CREATED, "{}", whep.body);
    let whep_location = whep.location.clone().unwrap();
    assert!(whep_location.starts_with(&format!("/whep/{room}/")), "{whep_location}");
    viewer.accept_answer(whep.body).await.unwrap();
    viewer.wait_connected().await.unwrap();
    let seen = next(&mut ada).await;
    assert_eq!(seen["type"], "participant_joined", "{seen}");

    // A broken WHIP request meanwhile changes nothing for the others.
    let broken = post_sdp(
        &app,
        &format!("/whip/{room}"),
        Some(&join_token(&app, &room, &users[3]).await),
        "application/sdp",
        "v=0\r\nnot an offer".to_owned(),
    )
    .await;
    assert_eq!(
        (broken.status, broken.code()),
        (StatusCode::BAD_REQUEST, "invalid_sdp".to_owned())
    );

    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..PACKETS {
        tick.tick().await;
        audio
            .write_rtp(rtp(OPUS_PT, AUDIO_SSRC, n, n * 480, RtpCodecKind::Audio))
            .await
            .unwrap();
        video
            .write_rtp(rtp(VP8_PT, VIDEO_SSRC, n, n * 900, RtpCodecKind::Video))
            .await
            .unwrap();
    }
    let mut intact: [HashSet<u32>; 2] = Default::default();
    let mut corrupt = 0;
    while intact.iter().any(|s| (s.len() as u32) < PACKETS) {
        // Quiet for 2 s after sending stopped: whatever was lost stays lost.
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), received.recv()).await else {
            break;
        };
        match check_payload(r.kind, &r.payload) {
            Some(n) => {
                intact[usize::from(r.kind == RtpCodecKind::Video)].insert(n);
            }
            None => corrupt += 1,
        }
    }
    assert_eq!(corrupt, 0, "corrupted payloads");
    for (kind, got) in ["audio", "video"].iter().zip(&intact) {
        eprintln!("{kind}: {} of {PACKETS} intact", got.len());
        assert!(
            got.len() as u32 * 100 >= PACKETS * 99,
            "{kind}: {} of {PACKETS}",
            got.len()
        );
    }

    // DELETE ends the WHIP session: ada sees bob's tracks and bob go.
    assert_eq!(delete(&app, &whip_location).await, StatusCode::OK);
    let (mut unpublished, mut left) = (0, false);
    while unpublished < 2 || !left {
        let m = next(&mut ada).await;
        match m["type"].as_str() {
            Some("track_unpublished") => unpublished += 1,
            Some("participant_left") => {
                assert_eq!(m["participant_id"], users[1].user_id.as_str());
                left = true;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(delete(&app, &whip_location).await, StatusCode::NOT_FOUND);
    assert_eq!(delete(&app, &whep_location).await, StatusCode::OK);
    let left = next(&mut ada).await;
    assert_eq!(
        (left["type"].as_str(), left["participant_id"].as_str()),
        (Some("participant_left"), Some(users[2].user_id.as_str()))
    );
    let (_, live) = app.get(&format!("/api/v1/rooms/{room}"), &users[0].access).await;
    assert_eq!(live["live"]["participants"].as_array().unwrap().len(), 1, "{live}");

    // The WHIP publisher and the WHEP viewer count in the room's activity like anyone: joined,
    // left, and their attendance in the team's meeting minutes (recorded before the event).
    let (bob, cyd) = (users[1].user_id.as_str(), users[2].user_id.as_str());
    room_activity(
        &mut activity,
        HashSet::from([
            ("room.participant_joined", bob),
            ("room.participant_joined", cyd),
            ("room.participant_left", bob),
            ("room.participant_left", cyd),
        ]),
    )
    .await;
    let team = live["team_id"].as_str().unwrap();
    let (status, overview) = app
        .get(&format!("/api/v1/analytics/teams/{team}/overview"), &users[0].access)
        .await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    let minutes = |who: &str| {
        overview["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == who)
            .map_or(0.0, |m| m["meeting_minutes"].as_f64().unwrap())
    };
    assert!(minutes(bob) > 0.0 && minutes(cyd) > 0.0, "{overview}");
}

/// Path, bearer token, content type, body; the expected status and error code.
type BadRequest<'a> = (&'a str, Option<&'a str>, &'a str, String, StatusCode, &'a str);

#[tokio::test]
async fn bad_requests_get_errors_and_leave_the_room_alone() {
    let app = spawn_app().await;
    let (room, other_room, users) = rooms(&app, &["ada", "bob"]).await;
    let mut ada = watcher(&app, &room, &users[0]).await;
    let token = join_token(&app, &room, &users[1]).await;
    let tokens = JoinTokens::new(&Secret::new(TEST_SECRET));
    let issue_limited = |grants: RoomGrants, iat: i64, max_participants: Option<u32>| {
        tokens
            .issue(
                JoinGrant {
                    participant: users[1].user_id.clone(),
                    name: "bob".into(),
                    room: room.clone(),
                    grants,
                    max_participants,
                },
                iat,
                60,
            )
            .unwrap()
    };
    let issue = |grants: RoomGrants, iat: i64| issue_limited(grants, iat, None);
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let expired = issue(RoomGrants::participant(), 1_000);
    let no_publish = issue(
        RoomGrants {
            publish: vec![],
            ..RoomGrants::participant()
        },
        now,
    );
    let no_subscribe = issue(
        RoomGrants {
            subscribe: false,
            publish: vec![PublishSource::Audio],
            ..RoomGrants::participant()
        },
        now,
    );
    let wrong_room = join_token(&app, &other_room, &users[1]).await;
    // ada is in the room already.
    let full = issue_limited(RoomGrants::participant(), now, Some(1));
    let offer = || "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned();

    let whip = format!("/whip/{room}");
    let whep = format!("/whep/{room}");
    let whep_nobody = format!("/whep/{room}?participant=nobody");
    let cases: Vec<BadRequest<'_>> = vec![
        (
            &whip,
            None,
            "application/sdp",
            offer(),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            &whip,
            Some("garbage"),
            "application/sdp",
            offer(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            &whip,
            Some(&expired),
            "application/sdp",
            offer(),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            &whip,
            Some(&wrong_room),
            "application/sdp",
            offer(),
            StatusCode::FORBIDDEN,
            "wrong_room",
        ),
        (
            &whep,
            Some(&wrong_room),
            "application/sdp",
            offer(),
            StatusCode::FORBIDDEN,
            "wrong_room",
        ),
        (
            &whip,
            Some(&no_publish),
            "application/sdp",
            offer(),
            StatusCode::FORBIDDEN,
            "publish_not_allowed",
        ),
        (
            &whep,
            Some(&no_subscribe),
            "application/sdp",
            offer(),
            StatusCode::FORBIDDEN,
            "subscribe_not_allowed",
        ),
        (
            &whip,
            Some(&token),
            "application/json",
            "{}".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            &whep,
            Some(&token),
            "text/plain",
            offer(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            &whip,
            Some(&token),
            "application/sdp",
            "v=0\r\ngarbage".into(),
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            &whip,
            Some(&token),
            "application/sdp",
            offer(),
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            &whep,
            Some(&token),
            "application/sdp",
            "".into(),
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
        ),
        (
            &whip,
            Some(&token),
            "application/sdp",
            "a".repeat(200 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            &whep_nobody,
            Some(&token),
            "application/sdp",
            offer(),
            StatusCode::NOT_FOUND,
            "participant_not_found",
        ),
        (
            &whip,
            Some(&full),
            "application/sdp",
            offer(),
            StatusCode::CONFLICT,
            "room_full",
        ),
        (
            &whep,
            Some(&full),
            "application/sdp",
            offer(),
            StatusCode::CONFLICT,
            "room_full",
        ),
    ];
    for (path, token, content_type, body, status, code) in cases {
        let res = post_sdp(&app, path, token, content_type, body).await;
        assert_eq!(
            (res.status, res.code()),
            (status, code.to_owned()),
            "{path} {content_type}: {}",
            res.body
        );
    }

    let res = app
        .client
        .patch(app.url(&format!("/whip/{room}/whatever")))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=ice-ufrag:x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "DELETE");
    assert_eq!(
        delete(&app, &format!("/whip/{room}/whatever")).await,
        StatusCode::NOT_FOUND
    );

    // Nobody joined: ada's next message is the answer to her own ping.
    ada.send(Message::Text(json!({ "type": "ping", "id": "p" }).to_string().into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ada).await, json!({ "type": "pong", "id": "p" }));
    let (_, live) = app.get(&format!("/api/v1/rooms/{room}"), &users[0].access).await;
    assert_eq!(live["live"]["participants"].as_array().unwrap().len(), 1, "{live}");
}

/// A browser player on another origin: its CORS preflight is answered for POST with a bearer
/// token and an SDP body, and the answers (an error here) and their session headers are readable.
#[tokio::test]
async fn players_on_other_origins_get_cors_answers() {
    let app = spawn_app().await;
    let (room, _, users) = rooms(&app, &["ada"]).await;
    let token = join_token(&app, &room, &users[0]).await;
    let origin = "https://player.example";
    for kind in ["whip", "whep"] {
        let path = format!("/{kind}/{room}");
        let res = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(&path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{kind} preflight");
        let header = |res: &reqwest::Response, name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_ascii_lowercase())
                .unwrap_or_default()
        };
        assert_eq!(header(&res, "access-control-allow-origin"), "*");
        assert!(header(&res, "access-control-allow-methods").contains("post"), "{kind}");
        let allowed = header(&res, "access-control-allow-headers");
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        // The request itself: not an SDP offer, so 400, readable cross-origin.
        let res = app
            .client
            .post(app.url(&path))
            .header("origin", origin)
            .header("content-type", "application/sdp")
            .bearer_auth(&token)
            .body("not sdp")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{kind}");
        assert_eq!(header(&res, "access-control-allow-origin"), "*");
        let exposed = header(&res, "access-control-expose-headers");
        for name in ["location", "link", "www-authenticate"] {
            assert!(exposed.contains(name), "{kind}: {exposed}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_client_that_stops_without_delete_is_ended() {
    let app = spawn_app().await;
    let (room, _, users) = rooms(&app, &["ada", "bob"]).await;
    let mut ada = watcher(&app, &room, &users[0]).await;
    let mut publisher = Client::new().await.unwrap();
    publisher
        .pc
        .add_track(local_track(RtpCodecKind::Audio, AUDIO_SSRC, false))
        .await
        .unwrap();
    let token = join_token(&app, &room, &users[1]).await;
    let offer = publisher.offer().await.unwrap();
    let whip = post_sdp(&app, &format!("/whip/{room}"), Some(&token), "application/sdp", offer).await;
    assert_eq!(whip.status, StatusCode::CREATED, "{}", whip.body);
    publisher.accept_answer(whip.body).await.unwrap();
    publisher.wait_connected().await.unwrap();
    assert_eq!(next(&mut ada).await["type"], "participant_joined");
    assert_eq!(next(&mut ada).await["type"], "track_published");

    // The client stops without DELETE: after 10 s without a datagram from it the SFU reports
    // its connection down, and after the resume grace period (2 s in tests) the session ends.
    publisher.pc.close().await.unwrap();
    let started = std::time::Instant::now();
    let mut left = false;
    while !left {
        let m = next_within(&mut ada, Duration::from_secs(40)).await;
        left = m["type"] == "participant_left";
    }
    eprintln!("ended after {:?}", started.elapsed());
    assert_eq!(
        delete(&app, whip.location.as_deref().unwrap()).await,
        StatusCode::NOT_FOUND
    );
}
