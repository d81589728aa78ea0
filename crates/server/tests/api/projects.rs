use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Cast, Session, TestApp, cast, error_code, spawn_app};

/// A [`Cast`] (its team and people read through the crew) and a project of its team with its
/// board.
pub(crate) struct Crew {
    cast: Cast,
    pub(crate) project: String,
    pub(crate) board: String,
    /// Backlog, To do, In progress, Done.
    pub(crate) columns: Vec<String>,
}

impl std::ops::Deref for Crew {
    type Target = Cast;

    fn deref(&self) -> &Cast {
        &self.cast
    }
}

pub(crate) async fn crew(app: &TestApp) -> Crew {
    let cast = cast(app).await;
    let project = create_project(app, &cast.owner, &cast.team, "WEB").await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let board = project["default_board_id"].as_str().unwrap().to_owned();
    let (status, view) = app.get(&format!("/api/v1/boards/{board}"), &cast.owner.access).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let columns = view["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    Crew {
        cast,
        project: project_id,
        board,
        columns,
    }
}

pub(crate) async fn create_project(app: &TestApp, who: &Session, team: &str, key: &str) -> Value {
    let (status, body) = app
        .post(
            "/api/v1/projects",
            Some(&who.access),
            json!({ "team_id": team, "name": format!("Project {key}"), "key": key }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

pub(crate) async fn create_task(app: &TestApp, who: &Session, project: &str, body: Value) -> Value {
    let (status, task) = app
        .post(&format!("/api/v1/projects/{project}/tasks"), Some(&who.access), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    task
}

pub(crate) async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn project_lifecycle_with_default_board() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let team = app.team(&alice, "Core").await;
    let (status, p) = app
        .post(
            "/api/v1/projects",
            Some(&alice.access),
            json!({ "team_id": team, "name": " Website ", "key": "web", "description": "The site",
                    "start_date": "2026-01-01", "end_date": "2026-03-31" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["name"].as_str(), p["key"].as_str(), p["status"].as_str()),
        (Some("Website"), Some("WEB"), Some("active"))
    );
    assert_eq!(p["start_date"], "2026-01-01");
    assert_eq!(p["archived"], false);
    let id = p["id"].as_str().unwrap();

    let board = p["default_board_id"].as_str().unwrap();
    let (_, view) = app.get(&format!("/api/v1/boards/{board}"), &alice.access).await;
    let names: Vec<_> = view["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["category"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("Backlog", "backlog"),
            ("To do", "todo"),
            ("In progress", "in_progress"),
            ("Done", "done")
        ]
    );

    // The key is unique within the team.
    let (status, body) = app
        .post(
            "/api/v1/projects",
            Some(&alice.access),
            json!({ "team_id": team, "name": "Other", "key": "WEB" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "key_taken"));
    for bad in [
        json!({ "team_id": team, "name": "X", "key": "1AB" }),
        json!({ "team_id": team, "name": "X", "key": "A" }),
        json!({ "team_id": team, "name": "", "key": "ABC" }),
        json!({ "team_id": team, "name": "X", "key": "ABC", "start_date": "2026-02-01", "end_date": "2026-01-01" }),
    ] {
        let (status, body) = app.post("/api/v1/projects", Some(&alice.access), bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/projects",
            Some(&alice.access),
            json!({ "team_id": team, "name": "X", "key": "ABC", "start_date": "not a date" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, p) = app
        .patch(
            &format!("/api/v1/projects/{id}"),
            &alice.access,
            json!({ "status": "paused", "description": null, "archived": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(
        (p["status"].as_str(), p["archived"].as_bool()),
        (Some("paused"), Some(true))
    );
    assert!(p["description"].is_null());
    let (_, list) = app.get("/api/v1/projects", &alice.access).await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "archived projects are hidden"
    );
    let (_, list) = app
        .get(
            &format!("/api/v1/projects?team_id={team}&include_archived=true"),
            &alice.access,
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    assert_eq!(
        app.delete(&format!("/api/v1/projects/{id}"), &alice.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/projects/{id}"), &alice.access).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn concurrent_creates_get_distinct_consecutive_keys() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let path = format!("/api/v1/projects/{}/tasks", c.project);
    let creates = (0..20).map(|n| {
        let who = if n % 2 == 0 { &c.owner } else { &c.member };
        app.post(&path, Some(&who.access), json!({ "title": format!("task {n}") }))
    });
    let results = futures_util::future::join_all(creates).await;
    let mut keys: Vec<String> = results
        .iter()
        .map(|(status, t)| {
            assert_eq!(*status, StatusCode::CREATED, "{t}");
            t["key"].as_str().unwrap().to_owned()
        })
        .collect();
    keys.sort_by_key(|k| k[4..].parse::<u32>().unwrap());
    let expected: Vec<String> = (1..=20).map(|n| format!("WEB-{n}")).collect();
    assert_eq!(keys, expected);
    // And they all landed in the backlog column, in a total order.
    let (_, view) = app.get(&format!("/api/v1/boards/{}", c.board), &c.owner.access).await;
    let backlog = view["columns"][0]["tasks"].as_array().unwrap();
    assert_eq!(backlog.len(), 20);
    let ranks: Vec<&str> = backlog.iter().map(|t| t["rank"].as_str().unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
}
