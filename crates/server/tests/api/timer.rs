use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, error_code, spawn_app};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn events(app: &TestApp, token: &str) -> Ws {
    let url = format!("ws://{}/ws/events?access_token={token}", app.addr);
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    assert_eq!(next_event(&mut ws).await["type"], "hello");
    ws
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next event of `kind`, skipping others (presence and the like).
async fn event_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let e = next_event(ws).await;
        if e["kind"] == kind || e["type"] == kind {
            return e;
        }
    }
}

async fn start(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/timer/sessions/start", Some(token), body).await
}

#[tokio::test]
async fn one_open_session_and_its_transitions() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, s) = start(
        &app,
        &alice.access,
        json!({ "focus_type": "custom", "planned_minutes": 50 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(
        (s["status"].as_str(), s["phase"].as_str()),
        (Some("running"), Some("work"))
    );
    assert!(s["ends_at"].is_string() && s["server_time"].is_string());
    let id = s["id"].as_str().unwrap();

    let (status, body) = start(
        &app,
        &alice.access,
        json!({ "focus_type": "deep_work", "planned_minutes": 90 }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "session_open"));

    let (_, cur) = app.get("/api/v1/timer/sessions/current", &alice.access).await;
    assert_eq!(cur["session"]["id"], id);

    let base = format!("/api/v1/timer/sessions/{id}");
    let (status, p) = app
        .post(
            &format!("{base}/pause"),
            Some(&alice.access),
            json!({ "reason": "call" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "paused");
    assert!(p["ends_at"].is_null());
    assert_eq!(p["interruptions"], 1);
    let (status, body) = app.post(&format!("{base}/pause"), Some(&alice.access), json!({})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_running"));
    // While paused, focus time stands still.
    let (_, again) = app.get(&base, &alice.access).await;
    assert_eq!(again["focus_ms"], p["focus_ms"]);

    let (status, r) = app
        .call(Method::POST, &format!("{base}/resume"), Some(&alice.access), None)
        .await;
    assert_eq!((status, r["status"].as_str()), (StatusCode::OK, Some("running")));
    let (status, body) = app
        .call(Method::POST, &format!("{base}/resume"), Some(&alice.access), None)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_paused"));

    let (status, i) = app
        .post(
            &format!("{base}/interruptions"),
            Some(&alice.access),
            json!({ "reason": "slack" }),
        )
        .await;
    assert_eq!((status, i["interruptions"].as_i64()), (StatusCode::CREATED, Some(2)));

    let (status, done) = app
        .post(
            &format!("{base}/stop"),
            Some(&alice.access),
            json!({ "notes": "wrote the spec" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // 50 planned minutes were not reached.
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["notes"], "wrote the spec");
    assert!(done["ended_at"].is_string());
    let (status, body) = app.post(&format!("{base}/stop"), Some(&alice.access), json!({})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "session_ended"));
    let (status, body) = app
        .post(&format!("{base}/interruptions"), Some(&alice.access), json!({}))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "session_ended"));

    let (status, n) = app.patch(&base, &alice.access, json!({ "notes": null })).await;
    assert_eq!((status, n["notes"].clone()), (StatusCode::OK, Value::Null));

    // Now a new one may start.
    let (status, _) = start(&app, &alice.access, json!({ "focus_type": "pomodoro" })).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn pomodoro_defaults_and_bad_input() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (_, cur) = app.get("/api/v1/timer/sessions/current", &alice.access).await;
    assert_eq!(
        (cur["session"].clone(), cur["next_pomodoro_phase"].as_str()),
        (Value::Null, Some("work"))
    );
    let (status, s) = start(&app, &alice.access, json!({ "focus_type": "pomodoro" })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (s["phase"].as_str(), s["planned_minutes"].as_i64()),
        (Some("work"), Some(25))
    );
    let id = s["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/v1/timer/sessions/{id}/stop"),
        Some(&alice.access),
        json!({ "cancel": true }),
    )
    .await;
    // An abandoned work session is followed by work again.
    let (_, cur) = app.get("/api/v1/timer/sessions/current", &alice.access).await;
    assert_eq!(cur["next_pomodoro_phase"], "work");
    let (status, s) = start(
        &app,
        &alice.access,
        json!({ "focus_type": "pomodoro", "phase": "long_break" }),
    )
    .await;
    assert_eq!((status, s["planned_minutes"].as_i64()), (StatusCode::CREATED, Some(15)));

    let bob = app.register("bob").await;
    for (body, code) in [
        (json!({ "focus_type": "custom" }), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({ "focus_type": "custom", "planned_minutes": 0 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "focus_type": "deep_work", "planned_minutes": 481 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "focus_type": "custom", "planned_minutes": 5, "phase": "short_break" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "focus_type": "nap", "planned_minutes": 5 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // The server's clock is the only one: a client cannot say when it started.
        (
            json!({ "focus_type": "custom", "planned_minutes": 5, "started_at": "2020-01-01T00:00:00Z" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "focus_type": "custom", "planned_minutes": 5, "team_id": "nope" }),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, err) = start(&app, &bob.access, body.clone()).await;
        assert_eq!(status, code, "{body}: {err}");
        error_code(&err);
    }
    // Someone else's session does not exist for bob.
    let (status, _) = app.get(&format!("/api/v1/timer/sessions/{id}"), &bob.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            &format!("/api/v1/timer/sessions/{id}/pause"),
            Some(&bob.access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/v1/timer/stats?from=2026-02-30", &bob.access).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .get("/api/v1/timer/stats?from=2026-01-01&to=2025-01-01", &bob.access)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get("/api/v1/timer/stats?tz_offset_minutes=9999", &bob.access).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .call(Method::GET, "/api/v1/timer/sessions/current", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn stats_equal_the_sessions_and_goals() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, s) = start(
            &app,
            &alice.access,
            json!({ "focus_type": "custom", "planned_minutes": 30 }),
        )
        .await;
        let id = s["id"].as_str().unwrap().to_owned();
        app.post(
            &format!("/api/v1/timer/sessions/{id}/pause"),
            Some(&alice.access),
            json!({}),
        )
        .await;
        app.post(
            &format!("/api/v1/timer/sessions/{id}/stop"),
            Some(&alice.access),
            json!({}),
        )
        .await;
        ids.push(id);
    }
    let (_, list) = app.get("/api/v1/timer/sessions", &alice.access).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let day = &items[0]["started_at"].as_str().unwrap()[..10];
    let total: i64 = items
        .iter()
        .filter(|s| s["started_at"].as_str().unwrap().starts_with(day))
        .map(|s| s["focus_ms"].as_i64().unwrap())
        .sum();
    let counted = items
        .iter()
        .filter(|s| s["started_at"].as_str().unwrap().starts_with(day))
        .count();

    let (status, goal) = app
        .call(
            Method::PUT,
            &format!("/api/v1/timer/goals/{day}"),
            Some(&alice.access),
            Some(json!({ "target_minutes": 120 })),
        )
        .await;
    assert_eq!((status, goal["target_minutes"].as_i64()), (StatusCode::OK, Some(120)));
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/timer/goals/tomorrow",
            Some(&alice.access),
            Some(json!({ "target_minutes": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/v1/timer/goals/{day}"),
            Some(&alice.access),
            Some(json!({ "target_minutes": 1441 })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, goals) = app
        .get(&format!("/api/v1/timer/goals?from={day}&to={day}"), &alice.access)
        .await;
    assert_eq!(goals, json!([{ "day": day, "target_minutes": 120 }]));

    let (status, stats) = app
        .get(&format!("/api/v1/timer/stats?from={day}&to={day}"), &alice.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let d = &stats[0];
    assert_eq!(d["day"], day);
    assert_eq!(d["focus_ms"].as_i64(), Some(total));
    assert_eq!(d["sessions"].as_i64(), Some(i64::try_from(counted).unwrap()));
    assert_eq!(d["completed_sessions"], 0);
    assert_eq!(d["interruptions"].as_i64(), Some(i64::try_from(counted).unwrap()));
    assert_eq!(d["goal_minutes"], 120);
    assert_eq!(d["goal_met"], false);
    // Another user's stats stay empty.
    let bob = app.register("bob").await;
    let (_, stats) = app
        .get(&format!("/api/v1/timer/stats?from={day}&to={day}"), &bob.access)
        .await;
    assert_eq!(stats[0]["sessions"], 0);
}

#[tokio::test]
async fn other_devices_and_teammates_see_focus() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let team = app.team(&alice, "Core").await;
    app.add(&alice, &team, &bob, "guest").await;
    let mut alice_phone = events(&app, &alice.access).await;
    let mut bob_ws = events(&app, &bob.access).await;

    let (_, s) = start(
        &app,
        &alice.access,
        json!({ "focus_type": "deep_work", "planned_minutes": 90, "team_id": team }),
    )
    .await;
    let e = event_of(&mut alice_phone, "timer.started").await;
    assert_eq!(e["data"]["session"]["id"], s["id"]);
    let e = event_of(&mut bob_ws, "focus.changed").await;
    assert_eq!(
        (e["data"]["user_id"].as_str(), e["data"]["focusing"].as_bool()),
        (Some(alice.user_id.as_str()), Some(true))
    );

    let (status, list) = app
        .get(&format!("/api/v1/timer/focusing?team_id={team}"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["user_id"], alice.user_id.as_str());
    let (status, _) = app
        .get(&format!("/api/v1/timer/focusing?team_id={team}"), &eve.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let id = s["id"].as_str().unwrap();
    app.post(
        &format!("/api/v1/timer/sessions/{id}/pause"),
        Some(&alice.access),
        json!({}),
    )
    .await;
    assert_eq!(
        event_of(&mut alice_phone, "timer.paused").await["data"]["session"]["status"],
        "paused"
    );
    assert_eq!(event_of(&mut bob_ws, "focus.changed").await["data"]["focusing"], false);
    let (_, list) = app
        .get(&format!("/api/v1/timer/focusing?team_id={team}"), &bob.access)
        .await;
    assert_eq!(list, json!([]));
}

/// The next `presence.changed` of `user_id`, skipping everything else.
async fn presence_of(ws: &mut Ws, user_id: &str) -> String {
    loop {
        let e = event_of(ws, "presence.changed").await;
        if e["data"]["user_id"] == user_id {
            return e["data"]["status"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test]
async fn team_presence_shows_focusing_while_a_work_session_runs() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let team = app.team(&alice, "Core").await;
    app.add(&alice, &team, &bob, "member").await;
    let mut bob_ws = events(&app, &bob.access).await;
    let mut eve_ws = events(&app, &eve.access).await;
    let _alice_ws = events(&app, &alice.access).await;
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "online");
    let presence = |who: &str| {
        let app = &app;
        let token = bob.access.clone();
        let who = who.to_owned();
        async move {
            let (status, all) = app.get("/api/v1/chat/presence", &token).await;
            assert_eq!(status, StatusCode::OK, "{all}");
            all.as_array()
                .unwrap()
                .iter()
                .find(|p| p["user_id"] == who.as_str())
                .map(|p| p["status"].as_str().unwrap().to_owned())
                .unwrap()
        }
    };

    let (status, s) = start(
        &app,
        &alice.access,
        json!({ "focus_type": "deep_work", "planned_minutes": 50 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "focusing");
    assert_eq!(presence(&alice.user_id).await, "focusing");
    let base = format!("/api/v1/timer/sessions/{}", s["id"].as_str().unwrap());

    // Idle does not hide focus; a pause does, a resume brings it back, a stop ends it.
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/chat/presence",
            Some(&alice.access),
            Some(json!({ "status": "idle" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "focusing");
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/chat/presence",
            Some(&alice.access),
            Some(json!({ "status": "online" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "focusing");
    assert_eq!(
        app.post(&format!("{base}/pause"), Some(&alice.access), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "online");
    assert_eq!(presence(&alice.user_id).await, "online");
    assert_eq!(
        app.post(&format!("{base}/resume"), Some(&alice.access), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "focusing");
    assert_eq!(
        app.post(&format!("{base}/stop"), Some(&alice.access), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(presence_of(&mut bob_ws, &alice.user_id).await, "online");
    assert_eq!(presence(&alice.user_id).await, "online");

    // Nobody outside alice's teams heard any of it: eve's next event is her own.
    let (status, _) = start(
        &app,
        &eve.access,
        json!({ "focus_type": "custom", "planned_minutes": 5 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let first = next_event(&mut eve_ws).await;
    assert_eq!(
        first["type"], "timer.started",
        "eve saw nothing of alice before: {first}"
    );
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/chat/presence",
            Some(&eve.access),
            Some(json!({ "status": "focusing" })),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
}
