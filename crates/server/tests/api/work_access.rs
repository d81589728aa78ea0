//! The authorization matrix of the work-management endpoints: every team-scoped operation
//! tried by an outsider, a guest, a member, an admin and an owner, each on fresh resources.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, spawn_app};
use crate::projects::{Crew, create_project, create_task, crew};

/// Who may do it; the expected outcome for [outsider, guest, member, admin, owner].
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Any team member, guests included.
    Read,
    /// Members, admins and owners.
    Write,
    /// Admins and owners.
    Manage,
    /// Only the author (the member created it).
    Author,
}

impl Rule {
    fn allows(self) -> [Option<bool>; 5] {
        // None: 404 (the resource is invisible); Some(false): 403; Some(true): success.
        match self {
            Self::Read => [None, Some(true), Some(true), Some(true), Some(true)],
            Self::Write => [None, Some(false), Some(true), Some(true), Some(true)],
            Self::Manage => [None, Some(false), Some(false), Some(true), Some(true)],
            Self::Author => [None, Some(false), Some(true), Some(false), Some(false)],
        }
    }
}

const OPS: &[(&str, Rule)] = &[
    ("create project", Rule::Write),
    ("list projects", Rule::Read),
    ("get project", Rule::Read),
    ("update project", Rule::Write),
    ("delete project", Rule::Manage),
    ("project activity", Rule::Read),
    ("task activity", Rule::Read),
    ("list boards", Rule::Read),
    ("create board", Rule::Write),
    ("get board", Rule::Read),
    ("update board", Rule::Write),
    ("create column", Rule::Write),
    ("update column", Rule::Write),
    ("delete column", Rule::Write),
    ("move task", Rule::Write),
    ("create task", Rule::Write),
    ("list tasks", Rule::Read),
    ("get task", Rule::Read),
    ("update task", Rule::Write),
    ("delete task", Rule::Write),
    ("create subtask", Rule::Write),
    ("update subtask", Rule::Write),
    ("delete subtask", Rule::Write),
    ("create relation", Rule::Write),
    ("delete relation", Rule::Write),
    ("list comments", Rule::Read),
    ("create comment", Rule::Write),
    ("update comment", Rule::Author),
    // The author, or a team admin or owner moderating.
    ("delete comment", Rule::Write),
    ("list labels", Rule::Read),
    ("create label", Rule::Write),
    ("update label", Rule::Write),
    ("delete label", Rule::Write),
    ("list sprints", Rule::Read),
    ("create sprint", Rule::Write),
    ("get sprint", Rule::Read),
    ("update sprint", Rule::Write),
    ("delete sprint", Rule::Write),
    ("add sprint tasks", Rule::Write),
    ("remove sprint task", Rule::Write),
    ("start sprint", Rule::Write),
    ("complete sprint", Rule::Write),
    ("burndown", Rule::Read),
    ("list time entries", Rule::Read),
    ("create time entry", Rule::Write),
    ("start timer", Rule::Write),
    ("update time entry", Rule::Author),
    ("delete time entry", Rule::Author),
    ("time report", Rule::Write),
];

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_owned()
}

async fn made(app: &TestApp, method: Method, path: &str, who: &Session, body: Value) -> Value {
    let (status, v) = app.call(method, path, Some(&who.access), Some(body)).await;
    assert!(status.is_success(), "fixture {path}: {status} {v}");
    v
}

/// Performs `op` as `who` on fresh resources (made by the owner, or by the member where the
/// operation is the author's).
async fn attempt(app: &TestApp, c: &Crew, who: &Session, op: &str) -> (StatusCode, Value) {
    let (p, board, t) = (&c.project, &c.board, &c.team);
    let owner = &c.owner;
    let task = || async { id(&create_task(app, owner, p, json!({ "title": "fixture" })).await) };
    let sprint = || async {
        id(&made(
            app,
            Method::POST,
            &format!("/api/v1/projects/{p}/sprints"),
            owner,
            json!({ "name": "S", "start_date": "2026-01-01", "end_date": "2026-01-14" }),
        )
        .await)
    };
    let a = who.access.as_str();
    match op {
        "create project" => {
            let key = format!(
                "K{}",
                who.username
                    .to_uppercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            );
            app.post(
                "/api/v1/projects",
                Some(a),
                json!({ "team_id": t, "name": "P", "key": key }),
            )
            .await
        }
        "list projects" => app.get(&format!("/api/v1/projects?team_id={t}"), a).await,
        "get project" => app.get(&format!("/api/v1/projects/{p}"), a).await,
        "update project" => {
            app.patch(&format!("/api/v1/projects/{p}"), a, json!({ "status": "active" }))
                .await
        }
        "delete project" => {
            let key = format!("D{}", uuid::Uuid::new_v4().simple().to_string()[..6].to_uppercase());
            let doomed = id(&create_project(app, owner, t, &key).await);
            app.delete(&format!("/api/v1/projects/{doomed}"), a).await
        }
        "project activity" => app.get(&format!("/api/v1/projects/{p}/activity"), a).await,
        "task activity" => app.get(&format!("/api/v1/tasks/{}/activity", task().await), a).await,
        "list boards" => app.get(&format!("/api/v1/projects/{p}/boards"), a).await,
        "create board" => {
            app.post(&format!("/api/v1/projects/{p}/boards"), Some(a), json!({ "name": "B" }))
                .await
        }
        "get board" => app.get(&format!("/api/v1/boards/{board}"), a).await,
        "update board" => {
            app.patch(&format!("/api/v1/boards/{board}"), a, json!({ "name": "Board" }))
                .await
        }
        "create column" => {
            app.post(
                &format!("/api/v1/boards/{board}/columns"),
                Some(a),
                json!({ "name": "C" }),
            )
            .await
        }
        "update column" => {
            app.patch(
                &format!("/api/v1/columns/{}", c.columns[1]),
                a,
                json!({ "name": "To do" }),
            )
            .await
        }
        "delete column" => {
            let col = made(
                app,
                Method::POST,
                &format!("/api/v1/boards/{board}/columns"),
                owner,
                json!({ "name": "X" }),
            )
            .await;
            app.delete(&format!("/api/v1/columns/{}?move_to={}", id(&col), c.columns[0]), a)
                .await
        }
        "move task" => {
            let task = task().await;
            let body = json!({ "column_id": c.columns[2], "expected_version": 1 });
            app.call(
                Method::PUT,
                &format!("/api/v1/boards/{board}/tasks/{task}/move"),
                Some(a),
                Some(body),
            )
            .await
        }
        "create task" => {
            app.post(&format!("/api/v1/projects/{p}/tasks"), Some(a), json!({ "title": "T" }))
                .await
        }
        "list tasks" => app.get(&format!("/api/v1/projects/{p}/tasks"), a).await,
        "get task" => app.get(&format!("/api/v1/tasks/{}", task().await), a).await,
        "update task" => {
            app.patch(
                &format!("/api/v1/tasks/{}", task().await),
                a,
                json!({ "priority": "high" }),
            )
            .await
        }
        "delete task" => app.delete(&format!("/api/v1/tasks/{}", task().await), a).await,
        "create subtask" => {
            app.post(
                &format!("/api/v1/tasks/{}/subtasks", task().await),
                Some(a),
                json!({ "title": "s" }),
            )
            .await
        }
        "update subtask" | "delete subtask" => {
            let task = task().await;
            let sub = made(
                app,
                Method::POST,
                &format!("/api/v1/tasks/{task}/subtasks"),
                owner,
                json!({ "title": "s" }),
            )
            .await;
            let path = format!("/api/v1/tasks/{task}/subtasks/{}", id(&sub));
            if op == "update subtask" {
                app.patch(&path, a, json!({ "done": true })).await
            } else {
                app.delete(&path, a).await
            }
        }
        "create relation" => {
            let (x, y) = (task().await, task().await);
            app.post(
                &format!("/api/v1/tasks/{x}/relations"),
                Some(a),
                json!({ "kind": "blocks", "task_id": y }),
            )
            .await
        }
        "delete relation" => {
            let (x, y) = (task().await, task().await);
            let d = made(
                app,
                Method::POST,
                &format!("/api/v1/tasks/{x}/relations"),
                owner,
                json!({ "kind": "relates_to", "task_id": y }),
            )
            .await;
            let rel = d["relations"][0]["id"].as_str().unwrap().to_owned();
            app.delete(&format!("/api/v1/tasks/{x}/relations/{rel}"), a).await
        }
        "list comments" => app.get(&format!("/api/v1/tasks/{}/comments", task().await), a).await,
        "create comment" => {
            app.post(
                &format!("/api/v1/tasks/{}/comments", task().await),
                Some(a),
                json!({ "body": "hi" }),
            )
            .await
        }
        "update comment" | "delete comment" => {
            let task = task().await;
            let cm = made(
                app,
                Method::POST,
                &format!("/api/v1/tasks/{task}/comments"),
                &c.member,
                json!({ "body": "hi" }),
            )
            .await;
            let path = format!("/api/v1/tasks/{task}/comments/{}", id(&cm));
            if op == "update comment" {
                app.patch(&path, a, json!({ "body": "edited" })).await
            } else {
                app.delete(&path, a).await
            }
        }
        "list labels" => app.get(&format!("/api/v1/labels?team_id={t}"), a).await,
        "create label" => {
            let name = format!("by {}", who.username);
            app.post(
                "/api/v1/labels",
                Some(a),
                json!({ "team_id": t, "name": name, "color": "#123456" }),
            )
            .await
        }
        "update label" | "delete label" => {
            let name = uuid::Uuid::new_v4().simple().to_string();
            let l = made(
                app,
                Method::POST,
                "/api/v1/labels",
                owner,
                json!({ "team_id": t, "name": name, "color": "#abcdef" }),
            )
            .await;
            let path = format!("/api/v1/labels/{}", id(&l));
            if op == "update label" {
                app.patch(&path, a, json!({ "color": "#000000" })).await
            } else {
                app.delete(&path, a).await
            }
        }
        "list sprints" => app.get(&format!("/api/v1/projects/{p}/sprints"), a).await,
        "create sprint" => {
            let body = json!({ "name": "S", "start_date": "2026-01-01", "end_date": "2026-01-14" });
            app.post(&format!("/api/v1/projects/{p}/sprints"), Some(a), body).await
        }
        "get sprint" => app.get(&format!("/api/v1/sprints/{}", sprint().await), a).await,
        "update sprint" => {
            app.patch(
                &format!("/api/v1/sprints/{}", sprint().await),
                a,
                json!({ "goal": "g" }),
            )
            .await
        }
        "delete sprint" => app.delete(&format!("/api/v1/sprints/{}", sprint().await), a).await,
        "add sprint tasks" => {
            let body = json!({ "task_ids": [task().await] });
            app.post(&format!("/api/v1/sprints/{}/tasks", sprint().await), Some(a), body)
                .await
        }
        "remove sprint task" => {
            let (s, task) = (sprint().await, task().await);
            made(
                app,
                Method::POST,
                &format!("/api/v1/sprints/{s}/tasks"),
                owner,
                json!({ "task_ids": [task] }),
            )
            .await;
            app.delete(&format!("/api/v1/sprints/{s}/tasks/{task}"), a).await
        }
        "start sprint" | "complete sprint" => {
            let s = sprint().await;
            let result = if op == "start sprint" {
                app.post(&format!("/api/v1/sprints/{s}/start"), Some(a), json!({}))
                    .await
            } else {
                made(
                    app,
                    Method::POST,
                    &format!("/api/v1/sprints/{s}/start"),
                    owner,
                    json!({}),
                )
                .await;
                app.post(&format!("/api/v1/sprints/{s}/complete"), Some(a), json!({}))
                    .await
            };
            // Leave no sprint running for the next attempt.
            app.post(&format!("/api/v1/sprints/{s}/complete"), Some(&owner.access), json!({}))
                .await;
            result
        }
        "burndown" => {
            app.get(&format!("/api/v1/sprints/{}/burndown", sprint().await), a)
                .await
        }
        "list time entries" => {
            app.get(&format!("/api/v1/tasks/{}/time-entries", task().await), a)
                .await
        }
        "create time entry" => {
            let body = json!({ "duration_minutes": 5 });
            app.post(&format!("/api/v1/tasks/{}/time-entries", task().await), Some(a), body)
                .await
        }
        "start timer" => {
            app.post(&format!("/api/v1/tasks/{}/timer", task().await), Some(a), json!({}))
                .await
        }
        "update time entry" | "delete time entry" => {
            let task = task().await;
            let e = made(
                app,
                Method::POST,
                &format!("/api/v1/tasks/{task}/time-entries"),
                &c.member,
                json!({ "duration_minutes": 5 }),
            )
            .await;
            let path = format!("/api/v1/time-entries/{}", id(&e));
            if op == "update time entry" {
                app.patch(&path, a, json!({ "note": "n" })).await
            } else {
                app.delete(&path, a).await
            }
        }
        "time report" => app.get(&format!("/api/v1/reports/time?team_id={t}"), a).await,
        other => panic!("unknown operation {other}"),
    }
}

#[tokio::test]
async fn every_endpoint_by_every_role() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let mut failures = Vec::new();
    for &(op, rule) in OPS {
        let roles = [&c.outsider, &c.guest, &c.member, &c.admin, &c.owner];
        for (who, allowed) in roles.into_iter().zip(rule.allows()) {
            let (status, body) = attempt(&app, &c, who, op).await;
            let ok = match allowed {
                None => status == StatusCode::NOT_FOUND,
                Some(false) => status == StatusCode::FORBIDDEN,
                Some(true) => status.is_success(),
            };
            if !ok {
                failures.push(format!("{op} as {}: {status} {body}", who.username));
            }
            if !status.is_success() {
                assert!(body["error"]["code"].is_string(), "{op}: error body {body}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
