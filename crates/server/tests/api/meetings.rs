//! Meetings (event + room) and host moderation over REST and signaling.

use std::time::Duration;

use convene_auth::{JoinTokens, Secret};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::chat::Ws;
use crate::helpers::{Session, TEST_SECRET, TestApp, error_code, spawn_app};

/// The next JSON message of `ws` with a `type` in `types`, skipping others.
pub(crate) async fn next_of(ws: &mut Ws, types: &[&str]) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await.expect("socket open").expect("frame") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if types.contains(&v["type"].as_str().unwrap_or("")) {
                        return v;
                    }
                }
                Message::Close(_) => return json!({ "type": "closed" }),
                _ => {}
            }
        }
    })
    .await
    .expect("a message in time")
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub(crate) async fn signal(app: &TestApp, token: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/signal", app.addr))
        .await
        .unwrap();
    send(&mut ws, json!({ "type": "join", "id": "j", "token": token })).await;
    let reply = next_of(&mut ws, &["joined", "error"]).await;
    (ws, reply)
}

pub(crate) async fn join(app: &TestApp, room: &str, user: &Session) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/rooms/{room}/join"), Some(&user.access), json!({}))
        .await
}

/// Joins `room` as `user` (REST, then signaling with the grant); the signaling socket.
pub(crate) async fn in_room(app: &TestApp, room: &str, user: &Session) -> Ws {
    let (_, grant) = join(app, room, user).await;
    signal(app, grant["token"].as_str().unwrap()).await.0
}

/// A host and alice, a member of the host's team, with a meeting of that team.
pub(crate) struct Meeting {
    pub(crate) host: Session,
    pub(crate) alice: Session,
    pub(crate) team: String,
    pub(crate) id: String,
    pub(crate) room: String,
}

/// Sets up a [`Meeting`] titled `title`, on 2026-07-01 from 14:00 to 15:00 UTC.
pub(crate) async fn meeting(app: &TestApp, title: &str) -> Meeting {
    let host = app.register("host").await;
    let alice = app.register("alice").await;
    let team = app.team(&host, "T").await;
    app.add(&host, &team, &alice, "member").await;
    let (_, meeting) = app
        .post(
            "/api/v1/meetings",
            Some(&host.access),
            json!({ "title": title, "team_id": team,
                    "starts_at": "2026-07-01T14:00:00Z", "ends_at": "2026-07-01T15:00:00Z" }),
        )
        .await;
    let id_of = |field: &str| {
        meeting[field]
            .as_str()
            .unwrap_or_else(|| panic!("{meeting}"))
            .to_owned()
    };
    Meeting {
        id: id_of("id"),
        room: id_of("room_id"),
        host,
        alice,
        team,
    }
}

fn is_admin(join: &Value) -> bool {
    let tokens = JoinTokens::new(&Secret::new(TEST_SECRET));
    let now = chrono::Utc::now().timestamp();
    tokens
        .verify(join["token"].as_str().unwrap(), now)
        .unwrap()
        .grants
        .admin
}

#[tokio::test]
async fn meetings_create_their_room_and_only_attendees_and_members_join() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let organizer = app.register("organizer").await;
    let colleague = app.register("colleague").await;
    let invited = app.register("invited").await;
    let uninvited = app.register("uninvited").await;
    let outsider = app.register("outsider").await;
    let team = app.team(&owner, "T").await;
    app.add(&owner, &team, &organizer, "member").await;
    app.add(&owner, &team, &colleague, "member").await;
    app.add(&owner, &team, &invited, "guest").await;
    app.add(&owner, &team, &uninvited, "guest").await;

    let (status, meeting) = app
        .post(
            "/api/v1/meetings",
            Some(&organizer.access),
            json!({
                "title": "Design review", "team_id": team, "attendees": [invited.user_id],
                "starts_at": "2026-07-01T14:00:00Z", "ends_at": "2026-07-01T15:00:00Z",
                "rrule": "FREQ=WEEKLY;COUNT=3", "reminders": [15]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{meeting}");
    assert_eq!(meeting["event_type"], "meeting");
    let id = meeting["id"].as_str().unwrap();
    let room = meeting["room_id"].as_str().unwrap();
    let (status, got) = app.get(&format!("/api/v1/rooms/{room}"), &organizer.access).await;
    assert_eq!((status, got["name"].as_str()), (StatusCode::OK, Some("Design review")));

    let (status, list) = app
        .get(
            "/api/v1/meetings?from=2026-07-01T00:00:00Z&to=2026-08-01T00:00:00Z",
            &invited.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(list.as_array().unwrap().iter().all(|o| o["room_id"] == room));
    let (_, list) = app
        .get(
            "/api/v1/meetings?from=2026-07-01T00:00:00Z&to=2026-08-01T00:00:00Z",
            &outsider.access,
        )
        .await;
    assert!(list.as_array().unwrap().is_empty());

    // The organizer hosts; team admins host; colleagues and attending guests join; others not.
    let (status, body) = join(&app, room, &organizer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(is_admin(&body));
    assert!(is_admin(&join(&app, room, &owner).await.1));
    let (status, body) = join(&app, room, &colleague).await;
    assert!(status == StatusCode::OK && !is_admin(&body), "{body}");
    let (status, body) = join(&app, room, &invited).await;
    assert!(status == StatusCode::OK && !is_admin(&body), "{body}");
    assert_eq!(join(&app, room, &uninvited).await.0, StatusCode::NOT_FOUND);
    assert_eq!(join(&app, room, &outsider).await.0, StatusCode::NOT_FOUND);
    let (_, rooms) = app.get("/api/v1/rooms", &invited.access).await;
    assert_eq!(
        rooms["items"].as_array().unwrap().len(),
        1,
        "attending guests see the room"
    );

    // Bad input.
    let base = json!({ "title": "X", "starts_at": "2026-07-01T14:00:00Z", "ends_at": "2026-07-01T15:00:00Z" });
    let (status, body) = app
        .post("/api/v1/meetings", Some(&organizer.access), base.clone())
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
    let mut typed = base.clone();
    typed["team_id"] = json!(team);
    typed["event_type"] = json!("deadline");
    let (status, _) = app.post("/api/v1/meetings", Some(&organizer.access), typed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut guest_made = base.clone();
    guest_made["team_id"] = json!(team);
    let (status, _) = app.post("/api/v1/meetings", Some(&invited.access), guest_made).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .get(
            "/api/v1/meetings?from=2026-07-02T00:00:00Z&to=2026-07-01T00:00:00Z",
            &organizer.access,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Cancelling: organizer or admins; the room goes with it.
    assert_eq!(
        app.get(&format!("/api/v1/meetings/{id}"), &outsider.access).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v1/meetings/{id}"), &invited.access).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete(&format!("/api/v1/meetings/{id}"), &organizer.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/rooms/{room}"), &organizer.access).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/meetings/{id}"), &organizer.access).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn hosts_run_the_lobby_lock_and_moderate_participants() {
    let app = spawn_app().await;
    let host = app.register("host").await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let team = app.team(&host, "T").await;
    app.add(&host, &team, &alice, "member").await;
    app.add(&host, &team, &bob, "member").await;
    let (_, meeting) = app
        .post(
            "/api/v1/meetings",
            Some(&host.access),
            json!({ "title": "Town hall", "team_id": team, "lobby": true,
                    "starts_at": "2026-07-01T14:00:00Z", "ends_at": "2026-07-01T15:00:00Z" }),
        )
        .await;
    let room = meeting["room_id"].as_str().unwrap().to_owned();
    let path = |rest: &str| format!("/api/v1/rooms/{room}{rest}");

    // Lobby: the host walks in; alice and bob wait; alice is admitted (and told), bob denied.
    let (mut events, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/events?access_token={}", app.addr, alice.access))
            .await
            .unwrap();
    let (status, host_join) = join(&app, &room, &host).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = join(&app, &room, &alice).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("waiting"))
    );
    assert_eq!(join(&app, &room, &bob).await.0, StatusCode::ACCEPTED);
    let (status, lobby) = app.get(&path("/lobby"), &host.access).await;
    assert_eq!(status, StatusCode::OK);
    let waiting: Vec<&str> = lobby
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, ["alice", "bob"]);
    assert_eq!(app.get(&path("/lobby"), &alice.access).await.0, StatusCode::FORBIDDEN);
    let decide = |user: &str, admit: bool| {
        let url = path(&format!("/lobby/{user}"));
        let (app, token) = (&app, host.access.clone());
        async move {
            app.call(Method::PUT, &url, Some(&token), Some(json!({ "admit": admit })))
                .await
        }
    };
    assert_eq!(decide(&alice.user_id, true).await.0, StatusCode::NO_CONTENT);
    let admitted = next_of(&mut events, &["lobby.admitted"]).await;
    assert_eq!(admitted["data"]["room_id"], room.as_str());
    assert_eq!(decide(&bob.user_id, false).await.0, StatusCode::NO_CONTENT);
    assert_eq!(decide("nobody", true).await.0, StatusCode::NOT_FOUND);
    let (status, alice_join) = join(&app, &room, &alice).await;
    assert_eq!(status, StatusCode::OK, "{alice_join}");
    assert_eq!(join(&app, &room, &bob).await.0, StatusCode::FORBIDDEN);

    // Lock: non-hosts cannot; once locked, even a token issued earlier is refused by signaling.
    let (status, _) = app
        .patch(&path("/moderation"), &alice.access, json!({ "locked": true }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, locked) = app
        .patch(&path("/moderation"), &host.access, json!({ "locked": true }))
        .await;
    assert_eq!((status, locked["locked"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = join(&app, &room, &alice).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "room_locked"));
    let (_, refused) = signal(&app, alice_join["token"].as_str().unwrap()).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("room_locked"))
    );
    assert_eq!(
        join(&app, &room, &host).await.0,
        StatusCode::OK,
        "hosts enter locked rooms"
    );
    let (_, unlocked) = app
        .patch(
            &path("/moderation"),
            &host.access,
            json!({ "locked": false, "lobby": false }),
        )
        .await;
    assert_eq!(
        (unlocked["locked"].as_bool(), unlocked["lobby"].as_bool()),
        (Some(false), Some(false))
    );

    // In the session: a non-host cannot moderate, over signaling or REST.
    let (mut host_ws, joined) = signal(&app, host_join["token"].as_str().unwrap()).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let (mut alice_ws, joined) = signal(&app, alice_join["token"].as_str().unwrap()).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    send(
        &mut alice_ws,
        json!({ "type": "remove_participant", "id": "r", "participant_id": host.user_id }),
    )
    .await;
    let denied = next_of(&mut alice_ws, &["error"]).await;
    assert_eq!(denied["code"], "forbidden");
    send(&mut alice_ws, json!({ "type": "end_room", "id": "e" })).await;
    assert_eq!(next_of(&mut alice_ws, &["error"]).await["code"], "forbidden");
    let remove_host = path(&format!("/participants/{}", host.user_id));
    assert_eq!(app.delete(&remove_host, &alice.access).await.0, StatusCode::FORBIDDEN);
    let mute = path(&format!("/participants/{}/mute", alice.user_id));
    let (status, _) = app.post(&mute, Some(&alice.access), json!({ "track_id": "t" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post(&mute, Some(&host.access), json!({ "track_id": "no-such-track" }))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    send(
        &mut host_ws,
        json!({ "type": "mute_participant", "id": "m", "participant_id": alice.user_id, "track_id": "nope" }),
    )
    .await;
    assert_eq!(next_of(&mut host_ws, &["error"]).await["code"], "not_found");
    assert_eq!(
        app.post(&path("/end"), Some(&alice.access), json!({})).await.0,
        StatusCode::FORBIDDEN
    );

    // The host removes alice over REST: her client is told why and the roster updates.
    let remove_alice = path(&format!("/participants/{}", alice.user_id));
    assert_eq!(app.delete(&remove_alice, &host.access).await.0, StatusCode::NO_CONTENT);
    let removed = next_of(&mut alice_ws, &["removed"]).await;
    assert_eq!(removed["reason"], "removed_by_host");
    let left = next_of(&mut host_ws, &["participant_left"]).await;
    assert_eq!(left["participant_id"], alice.user_id.as_str());
    assert_eq!(app.delete(&remove_alice, &host.access).await.0, StatusCode::NOT_FOUND);

    // Removal over signaling, then ending the meeting for everyone.
    let (_, again) = join(&app, &room, &alice).await;
    let (mut alice_ws, _) = signal(&app, again["token"].as_str().unwrap()).await;
    next_of(&mut host_ws, &["participant_joined"]).await;
    send(
        &mut host_ws,
        json!({ "type": "remove_participant", "id": "r", "participant_id": alice.user_id }),
    )
    .await;
    assert_eq!(next_of(&mut host_ws, &["ack"]).await["id"], "r");
    assert_eq!(next_of(&mut alice_ws, &["removed"]).await["reason"], "removed_by_host");

    let (_, again) = join(&app, &room, &alice).await;
    let (mut alice_ws, _) = signal(&app, again["token"].as_str().unwrap()).await;
    next_of(&mut host_ws, &["participant_joined"]).await;
    assert_eq!(
        app.post(&path("/end"), Some(&host.access), json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(next_of(&mut alice_ws, &["removed"]).await["type"], "removed");
    assert_eq!(next_of(&mut host_ws, &["removed"]).await["type"], "removed");
    let (_, live) = app.get(&path(""), &host.access).await;
    assert!(live["live"]["participants"].as_array().unwrap().is_empty(), "{live}");
}

/// A publisher over real WebRTC (str0m on a local UDP socket), driven on its own thread until
/// dropped: enough for the SFU to announce the track.
struct Publisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes a microphone track on `ws`'s session.
async fn publish_audio(ws: &mut Ws) -> Publisher {
    publish_audio_with(ws, false).await
}

/// Publishes a microphone track on `ws`'s session; with `talk`, sends an Opus frame every 20 ms
/// at -20 dBov (RFC 6464 audio level) once connected.
async fn publish_audio_with(ws: &mut Ws, talk: bool) -> Publisher {
    use std::time::Instant;
    use str0m::change::SdpAnswer;
    use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Input, Output, Rtc};

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    send(
        ws,
        json!({ "type": "track_info", "mid": mid.to_string(), "source": "microphone" }),
    )
    .await;
    send(
        ws,
        json!({ "type": "offer", "id": "o", "target": "publisher", "sdp": offer.to_sdp_string() }),
    )
    .await;
    let answer = next_of(ws, &["answer"]).await;
    let answer = SdpAnswer::from_sdp_string(answer["sdp"].as_str().unwrap()).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0; 2000];
        let (mut next_frame, mut frames) = (Instant::now(), 0u64);
        while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let talking = talk && rtc.is_connected();
            if !talking {
                // Frames are timed from the moment the connection is up.
                next_frame = Instant::now();
            } else if Instant::now() >= next_frame {
                if let Some(writer) = rtc.writer(mid) {
                    let pt = writer.payload_params().next().unwrap().pt();
                    let at = MediaTime::new(frames * 960, Frequency::FORTY_EIGHT_KHZ);
                    let _ = writer
                        .audio_level(-20, true)
                        .write(pt, Instant::now(), at, vec![0xF8u8; 80]);
                }
                frames += 1;
                next_frame += Duration::from_millis(20);
                continue;
            }
            let timeout = match rtc.poll_output() {
                Ok(Output::Timeout(t)) => t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                    continue;
                }
                Ok(Output::Event(_)) => continue,
                Err(_) => return,
            };
            let wait = timeout
                .min(if talking { next_frame } else { timeout })
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            if wait.is_zero() {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
                continue;
            }
            socket.set_read_timeout(Some(wait)).unwrap();
            let input = match socket.recv_from(&mut buf) {
                Ok((n, source)) => match buf[..n].try_into() {
                    Ok(contents) => Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: socket.local_addr().unwrap(),
                            contents,
                        },
                    ),
                    Err(_) => continue,
                },
                Err(_) => Input::Timeout(Instant::now()),
            };
            let _ = rtc.handle_input(input);
        }
    });
    Publisher {
        stop,
        thread: Some(thread),
    }
}

#[tokio::test]
async fn a_host_force_mutes_a_published_track() {
    let app = spawn_app().await;
    let Meeting { host, alice, room, .. } = meeting(&app, "Sync").await;
    let mut host_ws = in_room(&app, &room, &host).await;
    let mut alice_ws = in_room(&app, &room, &alice).await;

    let _publisher = publish_audio(&mut alice_ws).await;
    let published = next_of(&mut host_ws, &["track_published"]).await;
    let track = published["track"].clone();
    assert_eq!(
        (track["source"].as_str(), track["muted"].as_bool()),
        (Some("microphone"), Some(false))
    );
    let track_id = track["id"].as_str().unwrap();

    let mute = format!("/api/v1/rooms/{room}/participants/{}/mute", alice.user_id);
    let (status, body) = app
        .post(&mute, Some(&host.access), json!({ "track_id": track_id }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let updated = next_of(&mut host_ws, &["track_updated"]).await;
    assert_eq!(
        (updated["track"]["id"].as_str(), updated["track"]["muted"].as_bool()),
        (Some(track_id), Some(true))
    );
    let (_, live) = app.get(&format!("/api/v1/rooms/{room}"), &host.access).await;
    let alice_live = live["live"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == alice.user_id.as_str())
        .unwrap();
    assert_eq!(alice_live["tracks"][0]["muted"], true, "{live}");
}

#[tokio::test]
async fn meeting_analytics_show_sessions_attendance_and_peak() {
    let app = spawn_app().await;
    let Meeting {
        host, alice, id, room, ..
    } = meeting(&app, "Retro").await;
    let outsider = app.register("outsider").await;
    // Room activity reaches /ws/events after it is recorded.
    let mut activity = crate::chat::events(&app, &host, "").await;
    let mut host_ws = in_room(&app, &room, &host).await;
    let mut alice_ws = in_room(&app, &room, &alice).await;
    next_of(&mut host_ws, &["participant_joined"]).await;
    send(&mut alice_ws, json!({ "type": "leave", "id": "l" })).await;
    next_of(&mut host_ws, &["participant_left"]).await;
    send(&mut host_ws, json!({ "type": "leave", "id": "l" })).await;
    next_of(&mut host_ws, &["removed"]).await;

    // Room events are recorded off the request path: wait until the room has finished.
    let finished = next_of(&mut activity, &["room.finished"]).await;
    assert_eq!(finished["data"]["room_id"], room);
    let path = format!("/api/v1/analytics/meetings/{id}");
    let (status, stats) = app.get(&path, &host.access).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["sessions"][0]["ended_at"].is_string(), "{stats}");
    assert_eq!(stats["room_id"], room);
    assert_eq!(stats["unique_participants"], 2);
    let session = &stats["sessions"][0];
    assert_eq!(session["peak_concurrency"], 2);
    let names: Vec<&str> = session["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["host", "alice"]);
    assert!(
        session["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["left_at"].is_string())
    );

    assert_eq!(app.get(&path, &alice.access).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.get(&path, &outsider.access).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_talker_is_announced_rated_and_summed_in_the_meeting_analytics() {
    let app = spawn_app().await;
    let Meeting {
        host, alice, id, room, ..
    } = meeting(&app, "Standup").await;
    let mut host_ws = in_room(&app, &room, &host).await;
    let mut alice_ws = in_room(&app, &room, &alice).await;
    let publisher = publish_audio_with(&mut alice_ws, true).await;

    // Alice talks at -20 dBov: the host hears she speaks, and how her connection is.
    let speakers = next_of(&mut host_ws, &["speakers"]).await;
    assert_eq!(
        speakers["speakers"][0]["participant"],
        alice.user_id.as_str(),
        "{speakers}"
    );
    assert!(speakers["speakers"][0]["level"].as_f64().unwrap() > 0.5, "{speakers}");
    let rated = loop {
        let m = next_of(&mut host_ws, &["connection_quality"]).await;
        let updates = m["updates"].as_array().unwrap();
        if let Some(u) = updates.iter().find(|u| u["participant"] == alice.user_id.as_str()) {
            break u.clone();
        }
    };
    assert!(
        ["excellent", "good", "poor", "lost"].contains(&rated["quality"].as_str().unwrap()),
        "{rated}"
    );
    for field in ["loss", "jitter_ms", "bitrate_kbps"] {
        assert!(rated[field].is_number(), "{field} in {rated}");
    }
    let (_, live) = app.get(&format!("/api/v1/rooms/{room}"), &host.access).await;
    let alice_live = live["live"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == alice.user_id.as_str())
        .unwrap();
    assert!(alice_live["connection_quality"]["quality"].is_string(), "{live}");

    // The SFU sums a participant's connection every 5 s; the sample is stored off the media path,
    // so poll (no event announces the write) until the analytics show it.
    let path = format!("/api/v1/analytics/meetings/{id}");
    let stats = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (status, stats) = app.get(&path, &host.access).await;
            assert_eq!(status, StatusCode::OK, "{stats}");
            if stats["participant_quality"].as_array().is_some_and(|a| !a.is_empty()) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a quality sample is recorded");
    drop(publisher);
    let mine = &stats["participant_quality"][0];
    assert_eq!(mine["participant_id"], alice.user_id.as_str(), "{stats}");
    assert_eq!(mine["display_name"], "alice");
    assert!(mine["measured_minutes"].as_f64().unwrap() >= 4.0 / 60.0, "{stats}");
    // 80-byte Opus frames every 20 ms are 32 kbit/s of payload.
    let up = mine["mean_bitrate_up_kbps"].as_f64().unwrap();
    assert!((20.0..80.0).contains(&up), "{stats}");
    assert!(mine["mean_loss"].as_f64().unwrap() < 0.02, "{stats}");
    assert_eq!(stats["quality"]["mean_bitrate_up_kbps"], mine["mean_bitrate_up_kbps"]);
    // The host has no media connection: nothing of it was measured.
    assert_eq!(stats["participant_quality"].as_array().unwrap().len(), 1, "{stats}");
}
