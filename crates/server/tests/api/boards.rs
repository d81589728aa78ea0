use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, error_code, spawn_app};
use crate::projects::{Crew, create_task, crew, put};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn events(app: &TestApp, token: &str) -> Ws {
    let url = format!("ws://{}/ws/events?access_token={token}", app.addr);
    let mut ws = tokio_tungstenite::connect_async(url).await.expect("connects").0;
    assert_eq!(next_event(&mut ws).await["type"], "hello");
    ws
}

pub(crate) async fn next_event(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Each column's task ids, in board order.
async fn board_order(app: &TestApp, c: &Crew) -> Vec<Vec<String>> {
    let (status, view) = app.get(&format!("/api/v1/boards/{}", c.board), &c.owner.access).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|col| {
            let tasks = col["tasks"].as_array().unwrap();
            let ranks: Vec<&str> = tasks.iter().map(|t| t["rank"].as_str().unwrap()).collect();
            assert!(
                ranks.windows(2).all(|w| w[0] < w[1]),
                "ranks not strictly ordered: {ranks:?}"
            );
            tasks.iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
        })
        .collect()
}

fn move_path(c: &Crew, task: &str) -> String {
    format!("/api/v1/boards/{}/tasks/{task}/move", c.board)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn moves_place_tasks_and_stale_versions_conflict() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let mut tasks = Vec::new();
    for n in 0..3 {
        tasks.push(create_task(&app, &c.member, &c.project, json!({ "title": format!("t{n}") })).await);
    }
    let [a, b, t3] = [id(&tasks[0]), id(&tasks[1]), id(&tasks[2])];
    assert_eq!(board_order(&app, &c).await[0], [a.clone(), b.clone(), t3.clone()]);

    // To the end of "To do", then b before it, then t3 after b.
    let (status, moved) = put(
        &app,
        &move_path(&c, &a),
        &c.member.access,
        json!({ "column_id": c.columns[1], "expected_version": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(
        (moved["version"].as_i64(), moved["column_id"].as_str()),
        (Some(2), Some(c.columns[1].as_str()))
    );
    let (status, _) = put(
        &app,
        &move_path(&c, &b),
        &c.member.access,
        json!({ "column_id": c.columns[1], "before_id": a, "expected_version": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put(
        &app,
        &move_path(&c, &t3),
        &c.member.access,
        json!({ "column_id": c.columns[1], "after_id": b, "expected_version": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let order = board_order(&app, &c).await;
    assert!(order[0].is_empty());
    assert_eq!(order[1], [b.clone(), t3.clone(), a.clone()]);

    // Reordering within the column.
    let (status, _) = put(
        &app,
        &move_path(&c, &a),
        &c.member.access,
        json!({ "column_id": c.columns[1], "before_id": b, "expected_version": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(board_order(&app, &c).await[1], [a.clone(), b.clone(), t3.clone()]);

    // A stale version: 409 with the task as it is now.
    let (status, body) = put(
        &app,
        &move_path(&c, &a),
        &c.member.access,
        json!({ "column_id": c.columns[2], "expected_version": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "version_conflict");
    assert_eq!(
        (body["task"]["version"].as_i64(), body["task"]["id"].as_str()),
        (Some(3), Some(a.as_str()))
    );
    assert_eq!(body["task"]["column_id"], c.columns[1]);

    // Bad input is 4xx, never 500.
    for bad in [
        json!({ "column_id": "nope", "expected_version": 3 }),
        json!({ "column_id": c.columns[1], "after_id": a, "expected_version": 3 }),
        json!({ "column_id": c.columns[1], "after_id": "nope", "expected_version": 3 }),
        json!({ "column_id": c.columns[1], "after_id": b, "before_id": t3, "expected_version": 3 }),
        json!({ "column_id": c.columns[2], "after_id": b, "expected_version": 3 }),
    ] {
        let (status, body) = put(&app, &move_path(&c, &a), &c.member.access, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, _) = put(
        &app,
        &move_path(&c, &a),
        &c.member.access,
        json!({ "column_id": c.columns[1] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = put(
        &app,
        &format!("/api/v1/boards/nope/tasks/{a}/move"),
        &c.member.access,
        json!({ "column_id": c.columns[1], "expected_version": 3 }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_clients_moving_the_same_task_one_wins_one_conflicts() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let task = create_task(&app, &c.member, &c.project, json!({ "title": "contested" })).await;
    let task_id = id(&task);
    let path = move_path(&c, &task_id);
    for round in 0..10 {
        let version = round as i64 + 1;
        let first = put(
            &app,
            &path,
            &c.member.access,
            json!({ "column_id": c.columns[1 + round % 3], "expected_version": version }),
        );
        let second = put(
            &app,
            &path,
            &c.owner.access,
            json!({ "column_id": c.columns[(2 + round) % 4], "expected_version": version }),
        );
        let ((s1, b1), (s2, b2)) = tokio::join!(first, second);
        let mut statuses = [s1, s2];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{b1} {b2}");
        let (winner, loser) = if s1 == StatusCode::OK { (b1, b2) } else { (b2, b1) };
        assert_eq!(winner["version"].as_i64(), Some(version + 1));
        assert_eq!(loser["task"], winner, "the loser sees the winner's task");
    }
}

#[tokio::test]
async fn concurrent_moves_into_the_same_slot_all_land_in_a_total_order() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(id(&create_task(
            &app,
            &c.member,
            &c.project,
            json!({ "title": format!("c{n}") }),
        )
        .await));
    }
    // All eight go to the end of "Done" at once, so they compute the same key and collide.
    let moves = ids.iter().map(|t| {
        let path = move_path(&c, t);
        let body = json!({ "column_id": c.columns[3], "expected_version": 1 });
        let app = &app;
        let token = c.member.access.clone();
        async move { put(app, &path, &token, body).await }
    });
    for (status, body) in futures_util::future::join_all(moves).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let order = board_order(&app, &c).await;
    assert!(order[0].is_empty());
    let mut done = order[3].clone();
    done.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(done, all);
}

#[tokio::test]
async fn moves_reach_team_members_in_real_time() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let mut guest_ws = events(&app, &c.guest.access).await;
    let mut outsider_ws = events(&app, &c.outsider.access).await;
    let task = create_task(&app, &c.member, &c.project, json!({ "title": "watch me" })).await;
    let created = next_event(&mut guest_ws).await;
    assert_eq!(
        (created["type"].as_str(), created["data"]["id"].as_str()),
        (Some("task.created"), task["id"].as_str())
    );
    let (status, _) = put(
        &app,
        &move_path(&c, &id(&task)),
        &c.member.access,
        json!({ "column_id": c.columns[3], "expected_version": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let moved = next_event(&mut guest_ws).await;
    assert_eq!(moved["type"], "task.moved");
    assert_eq!(moved["data"]["task"]["column_id"], c.columns[3]);
    assert_eq!(moved["data"]["from_column_id"], c.columns[0]);
    let (status, _) = app
        .patch(
            &format!("/api/v1/tasks/{}", id(&task)),
            &c.member.access,
            json!({ "title": "renamed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let updated = next_event(&mut guest_ws).await;
    assert_eq!(
        (updated["type"].as_str(), updated["data"]["title"].as_str()),
        (Some("task.updated"), Some("renamed"))
    );
    app.delete(&format!("/api/v1/tasks/{}", id(&task)), &c.member.access)
        .await;
    let deleted = next_event(&mut guest_ws).await;
    assert_eq!(
        (deleted["type"].as_str(), deleted["data"]["id"].as_str()),
        (Some("task.deleted"), task["id"].as_str())
    );
    // The outsider's first event is one published to it afterwards: nothing of the team leaked.
    app.events
        .publish([c.outsider.user_id.as_str()], "test.sentinel", &json!({}));
    assert_eq!(next_event(&mut outsider_ws).await["type"], "test.sentinel");
}

#[tokio::test]
async fn columns_are_created_renamed_reordered_and_deleted_into_another() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let t1 = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "one", "column_id": c.columns[2] }),
    )
    .await;
    let t2 = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "two", "column_id": c.columns[2] }),
    )
    .await;
    let t0 = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "zero", "column_id": c.columns[1] }),
    )
    .await;
    let (status, review) = app
        .post(
            &format!("/api/v1/boards/{}/columns", c.board),
            Some(&c.member.access),
            json!({ "name": "Review", "category": "in_progress", "after_id": c.columns[2] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{review}");
    let review_id = id(&review);
    let names = |view: &Value| -> Vec<String> {
        view["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, view) = app.get(&format!("/api/v1/boards/{}", c.board), &c.member.access).await;
    assert_eq!(names(&view), ["Backlog", "To do", "In progress", "Review", "Done"]);

    let (status, col) = app
        .patch(
            &format!("/api/v1/columns/{review_id}"),
            &c.member.access,
            json!({ "name": "QA", "before_id": c.columns[0] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{col}");
    let (_, view) = app.get(&format!("/api/v1/boards/{}", c.board), &c.member.access).await;
    assert_eq!(names(&view), ["QA", "Backlog", "To do", "In progress", "Done"]);

    // Deleting "In progress" appends its tasks, in order, after the tasks of "To do".
    let (status, body) = app
        .delete(&format!("/api/v1/columns/{}", c.columns[2]), &c.member.access)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "move_to is required: {body}");
    let (status, body) = app
        .delete(
            &format!("/api/v1/columns/{}?move_to={}", c.columns[2], c.columns[2]),
            &c.member.access,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .delete(
            &format!("/api/v1/columns/{}?move_to={}", c.columns[2], c.columns[1]),
            &c.member.access,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, view) = app.get(&format!("/api/v1/boards/{}", c.board), &c.member.access).await;
    assert_eq!(names(&view), ["QA", "Backlog", "To do", "Done"]);
    let todo: Vec<_> = view["columns"][2]["tasks"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(todo, [id(&t0), id(&t1), id(&t2)]);
    let (_, moved) = app.get(&format!("/api/v1/tasks/{}", id(&t1)), &c.member.access).await;
    assert_eq!(moved["version"], 2, "moving a task bumps its version");

    // Another board for the project, and renaming it.
    let (status, board) = app
        .post(
            &format!("/api/v1/projects/{}/boards", c.project),
            Some(&c.member.access),
            json!({ "name": "Ops" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{board}");
    assert_eq!(board["columns"].as_array().unwrap().len(), 4);
    let (status, renamed) = app
        .patch(
            &format!("/api/v1/boards/{}", id(&board)),
            &c.member.access,
            json!({ "name": "Operations" }),
        )
        .await;
    assert_eq!((status, renamed["name"].as_str()), (StatusCode::OK, Some("Operations")));
    let (_, boards) = app
        .get(&format!("/api/v1/projects/{}/boards", c.project), &c.guest.access)
        .await;
    assert_eq!(boards.as_array().unwrap().len(), 2);
    // A task cannot be moved through another project's board or into another board's column.
    let (status, _) = put(
        &app,
        &format!("/api/v1/boards/{}/tasks/{}/move", id(&board), id(&t1)),
        &c.member.access,
        json!({ "column_id": c.columns[1], "expected_version": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// One random move: which task, to which column, and where among that column's tasks.
#[derive(Debug, Clone)]
struct RandomMove {
    task: usize,
    column: usize,
    /// A fraction of the target column's length, so any slot can be picked.
    slot: f64,
    /// Name the neighbour before (`after_id`) rather than the one after (`before_id`).
    anchor_before: bool,
}

fn random_moves(tasks: usize, columns: usize, n: usize) -> impl Strategy<Value = Vec<RandomMove>> {
    prop::collection::vec(
        (0..tasks, 0..columns, 0.0..=1.0f64, any::<bool>()).prop_map(|(task, column, slot, anchor_before)| {
            RandomMove {
                task,
                column,
                slot,
                anchor_before,
            }
        }),
        n,
    )
}

/// Applies the moves to the server and to a plain model, checking that each column's order
/// stays total (strictly increasing keys, every task exactly once) and equal to the model.
async fn run_moves(moves: Vec<RandomMove>, tasks: usize) -> Result<(), TestCaseError> {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let mut ids = Vec::new();
    let mut versions = Vec::new();
    for n in 0..tasks {
        let t = create_task(&app, &c.member, &c.project, json!({ "title": format!("p{n}") })).await;
        ids.push(id(&t));
        versions.push(1);
    }
    let mut model: Vec<Vec<usize>> = vec![(0..tasks).collect(), vec![], vec![], vec![]];
    for (step, m) in moves.iter().enumerate() {
        for col in &mut model {
            col.retain(|&t| t != m.task);
        }
        let target = &mut model[m.column];
        let slot = ((target.len() as f64) * m.slot).round() as usize;
        let mut body = json!({ "column_id": c.columns[m.column], "expected_version": versions[m.task] });
        if m.anchor_before && slot > 0 {
            body["after_id"] = json!(ids[target[slot - 1]]);
        } else if slot < target.len() {
            body["before_id"] = json!(ids[target[slot]]);
        } else if slot > 0 {
            body["after_id"] = json!(ids[target[slot - 1]]);
        }
        target.insert(slot, m.task);
        let (status, moved) = put(&app, &move_path(&c, &ids[m.task]), &c.member.access, body.clone()).await;
        prop_assert_eq!(status, StatusCode::OK, "step {} {}: {}", step, body, moved);
        versions[m.task] += 1;
        prop_assert_eq!(moved["version"].as_i64(), Some(versions[m.task]));
        if step % 100 == 99 || step + 1 == moves.len() {
            let expected: Vec<Vec<String>> = model
                .iter()
                .map(|col| col.iter().map(|&t| ids[t].clone()).collect())
                .collect();
            prop_assert_eq!(board_order(&app, &c).await, expected, "after step {}", step);
        }
    }
    Ok(())
}

#[test]
fn random_moves_keep_every_column_ordered_and_total() {
    // Each case starts a server and performs 1000 moves over HTTP, so few cases, no shrinking
    // beyond a handful of steps.
    let config = Config {
        cases: 2,
        max_shrink_iters: 4,
        ..Config::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(config);
    runner
        .run(&random_moves(12, 4, 1000), |moves| {
            runtime.block_on(run_moves(moves, 12))
        })
        .unwrap();
}
