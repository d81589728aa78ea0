use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{core_team, error_code, spawn_app};

#[tokio::test]
async fn overviews_are_computed_from_the_source_data() {
    let app = spawn_app().await;
    let (team, [alice, bob, guest, eve]) = core_team(&app).await;

    let (_, s) = app
        .post(
            "/api/v1/timer/sessions/start",
            Some(&bob.access),
            json!({ "focus_type": "custom", "planned_minutes": 30, "team_id": team }),
        )
        .await;
    let (_, stopped) = app
        .post(
            &format!("/api/v1/timer/sessions/{}/stop", s["id"].as_str().unwrap()),
            Some(&bob.access),
            json!({}),
        )
        .await;
    let (_, ch) = app
        .post(
            "/api/v1/chat/channels",
            Some(&alice.access),
            json!({ "team_id": team, "name": "general", "kind": "public", "members": [bob.user_id] }),
        )
        .await;
    let channel = ch["id"].as_str().unwrap();
    for body in ["one", "two"] {
        let (status, _) = app
            .post(
                &format!("/api/v1/chat/channels/{channel}/messages"),
                Some(&bob.access),
                json!({ "body": body }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    app.post(
        "/api/v1/notes",
        Some(&alice.access),
        json!({ "team_id": team, "title": "n" }),
    )
    .await;

    let (status, o) = app
        .get(&format!("/api/v1/analytics/teams/{team}/overview"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(
        (
            o["messages"].as_i64(),
            o["notes"].as_i64(),
            o["focus_sessions"].as_i64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(o["days"].as_array().unwrap().len(), 30);
    let members = o["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let b = members.iter().find(|m| m["username"] == "bob").unwrap();
    assert_eq!(
        (b["messages"].as_i64(), b["focus_sessions"].as_i64()),
        (Some(2), Some(1))
    );
    let a = members.iter().find(|m| m["username"] == "alice").unwrap();
    assert_eq!(a["notes_written"], 1);
    let total_day_messages: i64 = o["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["messages"].as_i64().unwrap())
        .sum();
    assert_eq!(total_day_messages, 2);

    let (status, body) = app
        .get(&format!("/api/v1/analytics/teams/{team}/overview"), &guest.access)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = app
        .get(&format!("/api/v1/analytics/teams/{team}/overview"), &eve.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .get(
            &format!("/api/v1/analytics/teams/{team}/overview?from=yesterday"),
            &bob.access,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let day = &stopped["started_at"].as_str().unwrap()[..10];
    let (status, me) = app
        .get(&format!("/api/v1/analytics/users/me?from={day}&to={day}"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (me["focus_sessions"].as_i64(), me["completed_sessions"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(me["days"][0]["day"], day);
    let (_, me) = app.get("/api/v1/analytics/users/me", &bob.access).await;
    assert_eq!(me["messages"], 2);
    let (_, me) = app.get("/api/v1/analytics/users/me", &eve.access).await;
    assert_eq!(
        (me["messages"].as_i64(), me["focus_sessions"].as_i64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn project_overview_counts_tasks_completions_and_overdue_work() {
    use crate::projects::{create_task, crew, put};
    let app = crate::helpers::spawn_app().await;
    let c = crew(&app).await;
    let late = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "late", "priority": "high", "due_date": "2020-01-01" }),
    )
    .await;
    let done = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "done", "priority": "low", "due_date": "2020-01-01" }),
    )
    .await;
    create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "fresh", "priority": "high" }),
    )
    .await;
    let (status, moved) = put(
        &app,
        &format!("/api/v1/boards/{}/tasks/{}/move", c.board, done["id"].as_str().unwrap()),
        &c.member.access,
        json!({ "column_id": c.columns[3], "expected_version": done["version"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");

    let path = format!("/api/v1/analytics/projects/{}/overview", c.project);
    let (status, o) = app.get(&path, &c.member.access).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["tasks"], 3);
    let counts: Vec<i64> = o["by_column"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tasks"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [2, 0, 0, 1]);
    assert_eq!(
        o["by_priority"],
        json!([{ "priority": "high", "tasks": 2 }, { "priority": "low", "tasks": 1 }])
    );
    // The done task is not overdue however late it was.
    assert_eq!(o["overdue"], 1);
    let weeks = o["completed_per_week"].as_array().unwrap();
    assert_eq!(weeks.len(), 8);
    assert_eq!(weeks.last().unwrap()["completed"], 1);
    assert!(o["average_cycle_hours"].as_f64().unwrap() >= 0.0);
    assert!(late["id"].is_string());

    // The team overview counts the same tasks per member.
    let (_, team) = app
        .get(&format!("/api/v1/analytics/teams/{}/overview", c.team), &c.owner.access)
        .await;
    assert_eq!(
        (team["tasks_created"].as_i64(), team["tasks_completed"].as_i64()),
        (Some(3), Some(1))
    );
    let member = team["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["username"] == "member")
        .unwrap();
    assert_eq!(
        (member["tasks_created"].as_i64(), member["tasks_completed"].as_i64()),
        (Some(3), Some(1))
    );

    let (status, _) = app.get(&path, &c.guest.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get(&path, &c.outsider.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&format!("{path}?weeks=0"), &c.member.access).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
    );
}

#[tokio::test]
async fn the_dashboard_page_is_served_with_the_web_client() {
    let app = crate::helpers::spawn_app().await;
    for (path, needle) in [
        ("/dashboard/index.html", "dashboard.js"),
        ("/dashboard/", "dashboard.js"),
        ("/dashboard/dashboard.js", "/analytics/users/me"),
        ("/dashboard/charts.js", "export function barChart"),
        ("/dashboard/charts.js", "export function burndownChart"),
        ("/dashboard/dashboard.js", "meeting_minutes"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(res.text().await.unwrap().contains(needle), "{path}");
    }
}

/// The member of `overview` with `user_id`.
fn member<'a>(overview: &'a serde_json::Value, user_id: &str) -> &'a serde_json::Value {
    overview["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == user_id)
        .unwrap()
}

#[tokio::test]
async fn team_overview_counts_meeting_minutes_from_real_attendance() {
    use crate::meetings::{in_room, meeting, next_of, send};

    let app = spawn_app().await;
    let m = meeting(&app, "Sync").await;
    let (host, alice, team, id, room) = (m.host, m.alice, m.team, m.id, m.room);
    let bob = app.register("bob").await;
    app.add(&host, &team, &bob, "member").await;
    // Bob watches the room's activity: it is published after the attendance is recorded.
    let mut bob_events = crate::chat::events(&app, &bob, "").await;

    let before = std::time::Instant::now();
    let mut host_ws = in_room(&app, &room, &host).await;
    let mut alice_ws = in_room(&app, &room, &alice).await;
    next_of(&mut host_ws, &["participant_joined"]).await;
    send(&mut alice_ws, json!({ "type": "leave", "id": "l" })).await;
    next_of(&mut host_ws, &["participant_left"]).await;
    send(&mut host_ws, json!({ "type": "leave", "id": "l" })).await;
    let mut left = Vec::new();
    while left.len() < 2 {
        let e = crate::chat::next_of(&mut bob_events, "room.participant_left").await;
        left.push(e["data"]["participant_id"].as_str().unwrap().to_owned());
    }
    #[allow(clippy::cast_precision_loss)]
    let wall_minutes = before.elapsed().as_millis() as f64 / 60_000.0;
    left.sort();
    let mut expected = vec![host.user_id.clone(), alice.user_id.clone()];
    expected.sort();
    assert_eq!(left, expected);

    let (status, o) = app
        .get(&format!("/api/v1/analytics/teams/{team}/overview"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{o}");
    let minutes = |who: &str| member(&o, who)["meeting_minutes"].as_f64().unwrap();
    let (h, a) = (minutes(&host.user_id), minutes(&alice.user_id));
    assert!(h > 0.0 && h <= wall_minutes, "host {h} of {wall_minutes}");
    assert!(a > 0.0 && a <= h, "alice left first: {a} vs {h}");
    assert!(minutes(&bob.user_id).abs() < f64::EPSILON);
    let total = o["meeting_minutes"].as_f64().unwrap();
    assert!((total - (h + a)).abs() < 1e-9, "{total} vs {h} + {a}");

    // The meeting's own report counts the same attendance.
    let (status, report) = app.get(&format!("/api/v1/analytics/meetings/{id}"), &host.access).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let reported = report["participant_minutes"].as_f64().unwrap();
    assert!((total - reported).abs() < 1e-9, "{total} vs {reported}");

    // Days without meetings count none.
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let yesterday = day(chrono::Utc::now().date_naive() - chrono::Duration::days(1));
    let (_, past) = app
        .get(
            &format!("/api/v1/analytics/teams/{team}/overview?from={yesterday}&to={yesterday}"),
            &bob.access,
        )
        .await;
    assert!(past["meeting_minutes"].as_f64().unwrap().abs() < f64::EPSILON, "{past}");
}
