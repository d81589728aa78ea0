//! Recordings over REST: who may start, stop, see and download them; one per room; everyone in
//! the room is told; files only by the names the recording lists. (Media written into the files
//! is covered by the recorder's unit tests and web/tests/recording.js with Chromium.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::boards::{events, next_event};
use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};
use crate::signal::{Ws, joined, next, room, send};
use crate::webhooks::{SECRET, receiver, verify};

/// Messages until one of type `recording` (the order against other room news is not fixed).
async fn recording_message(ws: &mut Ws) -> Value {
    for _ in 0..10 {
        let m = next(ws).await;
        if m["type"] == "recording" {
            return m;
        }
    }
    panic!("no recording message");
}

async fn download(app: &TestApp, path: &str, token: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.url(path)).bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn hosts_record_members_watch_strangers_see_nothing() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada", "bob", "carol"]).await;
    let (ada, bob, cy) = (&users[0], &users[1], &users[2]);
    let eve = app.register("eve").await;
    let start = format!("/api/v1/rooms/{room}/recordings");

    // Nobody in the room yet: nothing to record.
    let (status, body) = app.post(&start, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "room_not_live");

    let (mut ada_ws, _) = joined(&app, &room, ada).await;
    let (mut bob_ws, _) = joined(&app, &room, bob).await;

    let (status, body) = app.post(&start, Some(&bob.access), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member who is not a host: {body}");
    let (status, body) = app.post(&start, Some(&eve.access), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a stranger: {body}");
    let (status, _) = app
        .post("/api/v1/rooms/nope/recordings", Some(&ada.access), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, rec) = app.post(&start, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    assert_eq!(rec["status"], "recording");
    let id = rec["id"].as_str().unwrap().to_owned();
    for ws in [&mut ada_ws, &mut bob_ws] {
        let m = recording_message(ws).await;
        assert_eq!(m, json!({ "type": "recording", "active": true, "recording_id": id }));
    }

    // One recording per room at a time.
    let (status, body) = app.post(&start, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "already_recording");

    // A joiner of a recorded room is told at once.
    let (mut cy_ws, _) = joined(&app, &room, cy).await;
    assert_eq!(recording_message(&mut cy_ws).await["recording_id"], id.as_str());

    // Members see it; strangers do not learn it exists.
    let (status, list) = app.get(&format!("/api/v1/recordings?room={room}"), &bob.access).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let (status, _) = app.get(&format!("/api/v1/recordings?room={room}"), &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("/api/v1/recordings/{id}"), &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get("/api/v1/recordings", &bob.access).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "room is required: {body}");

    // Only hosts stop it.
    let stop = format!("/api/v1/recordings/{id}/stop");
    let (status, _) = app.post(&stop, Some(&bob.access), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.post(&stop, Some(&eve.access), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, done) = app.post(&stop, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "finished");
    assert!(done["ended_at"].is_string());
    for ws in [&mut ada_ws, &mut bob_ws, &mut cy_ws] {
        let m = recording_message(ws).await;
        assert_eq!(m, json!({ "type": "recording", "active": false, "recording_id": id }));
    }
    let (status, body) = app.post(&stop, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "not_recording");

    // Nobody published media: the files are just the manifest.
    let (status, got) = app.get(&format!("/api/v1/recordings/{id}"), &bob.access).await;
    assert_eq!(status, StatusCode::OK);
    let files = got["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{got}");
    assert_eq!(files[0]["name"], "manifest.json");
    let size = files[0]["size"].as_u64().unwrap();
    assert!(size > 0);
    // It counts towards the team's storage quota.
    let (_, info) = app.get(&format!("/api/v1/rooms/{room}"), &ada.access).await;
    let usage = format!("/api/v1/files/usage?team_id={}", info["team_id"].as_str().unwrap());
    let (status, used) = app.get(&usage, &ada.access).await;
    assert_eq!(
        (status, used["used_bytes"].as_u64()),
        (StatusCode::OK, Some(size)),
        "{used}"
    );

    // A new recording may start once the first ended.
    let (status, second) = app.post(&start, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (status, _) = app
        .post(
            &format!("/api/v1/recordings/{}/stop", second["id"].as_str().unwrap()),
            Some(&ada.access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    drop((ada_ws, bob_ws, cy_ws));
}

#[tokio::test]
async fn a_team_at_its_storage_quota_cannot_start_a_recording() {
    let app = spawn_app_with(|c| c.team_storage_quota = 10).await;
    let (room, users) = room(&app, &["ada"]).await;
    let ada = &users[0];
    let (_, info) = app.get(&format!("/api/v1/rooms/{room}"), &ada.access).await;
    let team = info["team_id"].as_str().unwrap().to_owned();
    let (_ws, _) = joined(&app, &room, ada).await;
    let start = format!("/api/v1/rooms/{room}/recordings");
    // Under the quota: it may start (its size is known when it ends), and it then counts.
    let (status, rec) = app.post(&start, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    let stop = format!("/api/v1/recordings/{}/stop", rec["id"].as_str().unwrap());
    let (status, _) = app.post(&stop, Some(&ada.access), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, used) = app
        .get(&format!("/api/v1/files/usage?team_id={team}"), &ada.access)
        .await;
    assert!(used["used_bytes"].as_u64().unwrap() > 10, "{used}");
    // At the quota: refused, and nothing is recorded.
    let (status, body) = app.post(&start, Some(&ada.access), json!({})).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "quota_exceeded"),
        "{body}"
    );
    let (_, list) = app.get(&format!("/api/v1/recordings?room={room}"), &ada.access).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn downloads_honour_ranges_and_serve_only_listed_names() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada", "bob"]).await;
    let (ada, bob) = (&users[0], &users[1]);
    let eve = app.register("eve").await;
    let (_ws, _) = joined(&app, &room, ada).await;
    let (_, rec) = app
        .post(
            &format!("/api/v1/rooms/{room}/recordings"),
            Some(&ada.access),
            json!({}),
        )
        .await;
    let id = rec["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(&format!("/api/v1/recordings/{id}/stop"), Some(&ada.access), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/api/v1/recordings/{id}/files/manifest.json");

    let full = download(&app, &path, &bob.access, None).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let bytes = full.bytes().await.unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest["recording_id"], id.as_str());
    assert_eq!(manifest["room_id"], room.as_str());
    assert_eq!(manifest["tracks"], json!([]));

    let part = download(&app, &path, &bob.access, Some("bytes=2-11")).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 2-11/{}", bytes.len())
    );
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(2..12));
    let tail = download(&app, &path, &bob.access, Some("bytes=-5")).await;
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.unwrap(), bytes.slice(bytes.len() - 5..));
    let beyond = download(&app, &path, &bob.access, Some(&format!("bytes={}-", bytes.len() + 10))).await;
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        beyond.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{}", bytes.len())
    );

    // Strangers, unknown recordings, and names the recording does not list.
    assert_eq!(
        download(&app, &path, &eve.access, None).await.status(),
        StatusCode::NOT_FOUND
    );
    let other = "/api/v1/recordings/0190b8a2-0000-7000-8000-000000000000/files/manifest.json";
    assert_eq!(
        download(&app, other, &bob.access, None).await.status(),
        StatusCode::NOT_FOUND
    );
    for name in [
        "TR_1.webm",
        "..%2F..%2Fconvene.db",
        "..%2Fjwt_secret",
        "manifest.json.tmp",
        "%2Fetc%2Fpasswd",
    ] {
        let res = download(
            &app,
            &format!("/api/v1/recordings/{id}/files/{name}"),
            &bob.access,
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{name}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "not_found");
    }

    // Hosts delete it, and its files.
    let (status, _) = app.delete(&format!("/api/v1/recordings/{id}"), &bob.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.delete(&format!("/api/v1/recordings/{id}"), &ada.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        download(&app, &path, &ada.access, None).await.status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = app.get(&format!("/api/v1/recordings/{id}"), &ada.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_room_emptying_finishes_the_recording() {
    let app = spawn_app().await;
    let (room, users) = room(&app, &["ada"]).await;
    let ada = &users[0];
    let (mut ws, _) = joined(&app, &room, ada).await;
    let (_, rec) = app
        .post(
            &format!("/api/v1/rooms/{room}/recordings"),
            Some(&ada.access),
            json!({}),
        )
        .await;
    let id = rec["id"].as_str().unwrap().to_owned();
    assert_eq!(recording_message(&mut ws).await["active"], true);
    send(&mut ws, json!({ "type": "leave" })).await;
    // The recorder reports the end asynchronously and the REST client has no event to wait
    // on here, so poll with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, got) = app.get(&format!("/api/v1/recordings/{id}"), &ada.access).await;
        if got["status"] == "finished" {
            assert!(got["duration_ms"].as_i64().unwrap() >= 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleting the room deletes its recordings.
    let (status, _) = app.delete(&format!("/api/v1/rooms/{room}"), &ada.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/v1/recordings/{id}"), &ada.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn recording_news_reaches_event_streams_and_signed_webhooks() {
    let app = spawn_app_with(|c| c.webhook_allowed_ips = vec!["127.0.0.1".parse().unwrap()]).await;
    let (room, users) = room(&app, &["ada", "bob"]).await;
    let (ada, bob) = (&users[0], &users[1]);
    let (_, r) = app.get(&format!("/api/v1/rooms/{room}"), &ada.access).await;
    let team = r["team_id"].as_str().unwrap().to_owned();
    let (url, mut inbox) = receiver().await;
    let (status, hook) = app
        .post(
            "/api/v1/webhooks",
            Some(&ada.access),
            json!({ "team_id": team, "url": url, "secret": SECRET,
                    "event_types": ["recording_started", "recording_finished"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    // Bob is not in the room but may join it: his event stream hears of the recording.
    let mut bob_events = events(&app, &bob.access).await;
    let (_ws, _) = joined(&app, &room, ada).await;
    let (_, rec) = app
        .post(
            &format!("/api/v1/rooms/{room}/recordings"),
            Some(&ada.access),
            json!({}),
        )
        .await;
    let id = rec["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(&format!("/api/v1/recordings/{id}/stop"), Some(&ada.access), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), next_event(&mut bob_events))
            .await
            .expect("an event in time");
        let kind = e["type"].as_str().unwrap_or_default().to_owned();
        if kind.starts_with("room.recording_") {
            assert_eq!(e["data"]["recording_id"], id.as_str(), "{e}");
            assert_eq!(e["data"]["room_id"], room.as_str(), "{e}");
            seen.push(kind);
        }
    }
    assert_eq!(seen, ["room.recording_started", "room.recording_finished"]);

    // The receiver answers 500 once, so the first delivery is retried: collect until both
    // types arrived, each correctly signed.
    let mut types = std::collections::BTreeSet::new();
    while types.len() < 2 {
        let got = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("a delivery in time")
            .expect("receiver open");
        assert!(verify(SECRET, &got.timestamp, &got.body, &got.signature));
        let body: Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(body["data"]["recording_id"], id.as_str(), "{body}");
        types.insert(body["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["recording_finished", "recording_started"]
    );
}
