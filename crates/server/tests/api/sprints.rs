use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_app};
use crate::projects::{Crew, create_task, crew, put};

fn today() -> String {
    chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string()
}

fn in_days(n: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(n))
        .format("%Y-%m-%d")
        .to_string()
}

async fn sprint(app: &TestApp, c: &Crew, name: &str) -> String {
    let (status, s) = app
        .post(
            &format!("/api/v1/projects/{}/sprints", c.project),
            Some(&c.member.access),
            json!({ "name": name, "start_date": today(), "end_date": in_days(13) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(s["status"], "planned");
    s["id"].as_str().unwrap().to_owned()
}

/// What the burndown must show now, computed from the sprint's tasks as the API lists them.
async fn expected_today(app: &TestApp, c: &Crew, sprint: &str) -> Value {
    let (_, page) = app
        .get(
            &format!("/api/v1/projects/{}/tasks?sprint_id={sprint}", c.project),
            &c.member.access,
        )
        .await;
    let tasks = page["items"].as_array().unwrap();
    let done = &c.columns[3];
    let open: Vec<&Value> = tasks.iter().filter(|t| &t["column_id"] != done).collect();
    let points = |ts: &[&Value]| ts.iter().map(|t| t["estimate"].as_i64().unwrap_or(0)).sum::<i64>();
    json!({
        "total_tasks": tasks.len(),
        "remaining_tasks": open.len(),
        "total_points": points(&tasks.iter().collect::<Vec<_>>()),
        "remaining_points": points(&open),
    })
}

async fn burndown_today(app: &TestApp, c: &Crew, sprint: &str) -> Value {
    let (status, b) = app
        .get(&format!("/api/v1/sprints/{sprint}/burndown"), &c.guest.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let day = b["days"].as_array().unwrap().last().expect("a day").clone();
    assert_eq!(day["date"], today());
    json!({
        "total_tasks": day["total_tasks"],
        "remaining_tasks": day["remaining_tasks"],
        "total_points": day["total_points"],
        "remaining_points": day["remaining_points"],
    })
}

#[tokio::test]
async fn sprint_lifecycle_burndown_and_completion() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let s1 = sprint(&app, &c, "Sprint 1").await;
    let s2 = sprint(&app, &c, "Sprint 2").await;
    let mut tasks = Vec::new();
    for (n, points) in [3, 5, 8].into_iter().enumerate() {
        let t = create_task(
            &app,
            &c.member,
            &c.project,
            json!({ "title": format!("s{n}"), "estimate": points }),
        )
        .await;
        tasks.push(t["id"].as_str().unwrap().to_owned());
    }
    let backlog = create_task(&app, &c.member, &c.project, json!({ "title": "later" })).await;
    let (status, s) = app
        .post(
            &format!("/api/v1/sprints/{s1}/tasks"),
            Some(&c.member.access),
            json!({ "task_ids": tasks }),
        )
        .await;
    assert_eq!((status, s["task_count"].as_i64()), (StatusCode::OK, Some(3)), "{s}");
    let (status, _) = app
        .post(
            &format!("/api/v1/sprints/{s1}/tasks"),
            Some(&c.member.access),
            json!({ "task_ids": ["nope"] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, b) = app
        .get(&format!("/api/v1/sprints/{s1}/burndown"), &c.guest.access)
        .await;
    assert_eq!(b["days"], json!([]), "no burndown before the start");
    let (status, started) = app
        .post(
            &format!("/api/v1/sprints/{s1}/start"),
            Some(&c.member.access),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, started["status"].as_str()),
        (StatusCode::OK, Some("active")),
        "{started}"
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/sprints/{s2}/start"),
            Some(&c.member.access),
            json!({}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "sprint_running"));
    let (status, body) = app
        .post(
            &format!("/api/v1/sprints/{s1}/start"),
            Some(&c.member.access),
            json!({}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_planned"));
    assert_eq!(
        burndown_today(&app, &c, &s1).await,
        json!({ "total_tasks": 3, "remaining_tasks": 3, "total_points": 16, "remaining_points": 16 })
    );

    // Every kind of change keeps today's point equal to what the tasks say.
    let (status, _) = put(
        &app,
        &format!("/api/v1/boards/{}/tasks/{}/move", c.board, tasks[0]),
        &c.member.access,
        json!({ "column_id": c.columns[3], "expected_version": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(burndown_today(&app, &c, &s1).await, expected_today(&app, &c, &s1).await);
    assert_eq!(burndown_today(&app, &c, &s1).await["remaining_points"], 13);
    app.patch(
        &format!("/api/v1/tasks/{}", tasks[1]),
        &c.member.access,
        json!({ "estimate": 2 }),
    )
    .await;
    assert_eq!(burndown_today(&app, &c, &s1).await, expected_today(&app, &c, &s1).await);
    app.patch(
        &format!("/api/v1/tasks/{}", backlog["id"].as_str().unwrap()),
        &c.member.access,
        json!({ "sprint_id": s1, "estimate": 1 }),
    )
    .await;
    assert_eq!(burndown_today(&app, &c, &s1).await, expected_today(&app, &c, &s1).await);
    let (status, _) = app
        .delete(&format!("/api/v1/sprints/{s1}/tasks/{}", tasks[2]), &c.member.access)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let now = burndown_today(&app, &c, &s1).await;
    assert_eq!(now, expected_today(&app, &c, &s1).await);
    assert_eq!(
        now,
        json!({ "total_tasks": 3, "remaining_tasks": 2, "total_points": 6, "remaining_points": 3 })
    );

    // Completion: the unfinished tasks go to the next sprint, the finished one stays.
    let (status, body) = app
        .post(
            &format!("/api/v1/sprints/{s1}/complete"),
            Some(&c.member.access),
            json!({ "move_unfinished_to": s1 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, done) = app
        .post(
            &format!("/api/v1/sprints/{s1}/complete"),
            Some(&c.member.access),
            json!({ "move_unfinished_to": s2 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["sprint"]["status"], "completed");
    let mut moved: Vec<&str> = done["moved_task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    moved.sort();
    let mut expected = vec![tasks[1].as_str(), backlog["id"].as_str().unwrap()];
    expected.sort();
    assert_eq!(moved, expected);
    let (_, t0) = app.get(&format!("/api/v1/tasks/{}", tasks[0]), &c.member.access).await;
    assert_eq!(t0["sprint_id"], s1.as_str());
    let (_, s2_now) = app.get(&format!("/api/v1/sprints/{s2}"), &c.member.access).await;
    assert_eq!(s2_now["task_count"], 2);
    let (status, body) = app
        .post(
            &format!("/api/v1/sprints/{s1}/complete"),
            Some(&c.member.access),
            json!({}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_active"));
    // The burndown keeps the final state.
    assert_eq!(burndown_today(&app, &c, &s1).await, now);

    // The next sprint completes into the backlog.
    app.post(
        &format!("/api/v1/sprints/{s2}/start"),
        Some(&c.member.access),
        json!({}),
    )
    .await;
    let (status, done) = app
        .post(
            &format!("/api/v1/sprints/{s2}/complete"),
            Some(&c.member.access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["moved_task_ids"].as_array().unwrap().len(), 2);
    let (_, page) = app
        .get(
            &format!("/api/v1/projects/{}/tasks?sprint_id=backlog", c.project),
            &c.member.access,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let (status, body) = app
        .post(
            &format!("/api/v1/sprints/{s2}/tasks"),
            Some(&c.member.access),
            json!({ "task_ids": [tasks[2]] }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "sprint_completed"));
}

#[tokio::test]
async fn sprint_editing_and_validation() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/{}/sprints", c.project),
            Some(&c.member.access),
            json!({ "name": "Bad", "start_date": in_days(3), "end_date": today() }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let s = sprint(&app, &c, "Sprint").await;
    let (status, edited) = app
        .patch(
            &format!("/api/v1/sprints/{s}"),
            &c.member.access,
            json!({ "name": "Sprint A", "goal": "Ship" }),
        )
        .await;
    assert_eq!((status, edited["goal"].as_str()), (StatusCode::OK, Some("Ship")));
    let (_, list) = app
        .get(&format!("/api/v1/projects/{}/sprints", c.project), &c.guest.access)
        .await;
    assert_eq!(list[0]["name"], "Sprint A");
    let t = create_task(&app, &c.member, &c.project, json!({ "title": "x", "sprint_id": s })).await;
    assert_eq!(
        app.delete(&format!("/api/v1/sprints/{s}"), &c.member.access).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, t) = app
        .get(
            &format!("/api/v1/tasks/{}", t["id"].as_str().unwrap()),
            &c.member.access,
        )
        .await;
    assert!(
        t["sprint_id"].is_null(),
        "a deleted sprint's tasks return to the backlog"
    );
}

/// The project overview's burndown, which must be the sprint's own burndown.
async fn overview_burndown(app: &TestApp, c: &Crew) -> Value {
    let (status, o) = app
        .get(
            &format!("/api/v1/analytics/projects/{}/overview", c.project),
            &c.member.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{o}");
    o["burndown"].clone()
}

async fn sprint_burndown(app: &TestApp, c: &Crew, sprint: &str) -> Value {
    let (status, b) = app
        .get(&format!("/api/v1/sprints/{sprint}/burndown"), &c.member.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn project_overview_shows_the_current_sprints_burndown() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    assert!(overview_burndown(&app, &c).await.is_null(), "no sprint yet");
    let s1 = sprint(&app, &c, "Sprint 1").await;
    let s2 = sprint(&app, &c, "Sprint 2").await;
    assert!(overview_burndown(&app, &c).await.is_null(), "no sprint has started");
    let mut tasks = Vec::new();
    for points in [2, 3] {
        let t = create_task(
            &app,
            &c.member,
            &c.project,
            json!({ "title": "t", "estimate": points, "sprint_id": s1 }),
        )
        .await;
        tasks.push(t);
    }
    let start = |s: String| {
        let app = &app;
        let token = c.member.access.clone();
        async move {
            let (status, body) = app
                .post(&format!("/api/v1/sprints/{s}/start"), Some(&token), json!({}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    start(s1.clone()).await;
    let b = overview_burndown(&app, &c).await;
    assert_eq!(b, sprint_burndown(&app, &c, &s1).await);
    assert_eq!(
        (b["sprint_id"].as_str(), b["status"].as_str()),
        (Some(s1.as_str()), Some("active"))
    );
    assert_eq!(burndown_today(&app, &c, &s1).await, expected_today(&app, &c, &s1).await);

    // A task done: the overview follows the sprint's series.
    let (status, _) = put(
        &app,
        &format!(
            "/api/v1/boards/{}/tasks/{}/move",
            c.board,
            tasks[1]["id"].as_str().unwrap()
        ),
        &c.member.access,
        json!({ "column_id": c.columns[3], "expected_version": tasks[1]["version"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let b = overview_burndown(&app, &c).await;
    assert_eq!(b, sprint_burndown(&app, &c, &s1).await);
    let today = b["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (today["total_points"].as_i64(), today["remaining_points"].as_i64()),
        (Some(5), Some(2))
    );

    // Completed, it is still the latest; the next one takes over when it starts.
    let (status, _) = app
        .post(
            &format!("/api/v1/sprints/{s1}/complete"),
            Some(&c.member.access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let b = overview_burndown(&app, &c).await;
    assert_eq!(
        (b["sprint_id"].as_str(), b["status"].as_str()),
        (Some(s1.as_str()), Some("completed"))
    );
    assert_eq!(b, sprint_burndown(&app, &c, &s1).await);
    start(s2.clone()).await;
    let b = overview_burndown(&app, &c).await;
    assert_eq!(b["sprint_id"], s2.as_str());
    assert_eq!(b, sprint_burndown(&app, &c, &s2).await);
}
