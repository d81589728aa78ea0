//! Each project's chat channel: task changes arrive on `/ws/chat/{id}` and are posted there as
//! system messages, besides the `/ws/events` pushes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::chat::{Ws, events, next_json};
use crate::helpers::{Session, TestApp, spawn_app};
use crate::projects::{Crew, create_task, crew, put};

async fn channel_stream(app: &TestApp, channel: &str, who: &Session) -> Ws {
    let url = format!("ws://{}/ws/chat/{channel}?access_token={}", app.addr, who.access);
    let mut ws = tokio_tungstenite::connect_async(url).await.expect("connects").0;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    ws
}

/// The next two frames: the change itself, then the system message that tells it.
async fn change_and_message(ws: &mut Ws, kind: &str) -> (Value, String) {
    let (change, message) = tokio::time::timeout(Duration::from_secs(10), async {
        (next_json(ws).await, next_json(ws).await)
    })
    .await
    .expect("frames in time");
    assert_eq!(change["type"], kind, "{change}");
    assert_eq!(message["type"], "message.created", "{message}");
    let m = &message["data"]["message"];
    assert!(m["author_id"].is_null(), "a system message has no author: {m}");
    (change, m["body"].as_str().unwrap().to_owned())
}

async fn project_channel(app: &TestApp, c: &Crew) -> String {
    let (status, project) = app
        .get(&format!("/api/v1/projects/{}", c.project), &c.member.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{project}");
    project["chat_channel_id"].as_str().expect("a channel").to_owned()
}

#[tokio::test]
async fn task_changes_reach_the_project_channel_live_and_as_messages() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let channel = project_channel(&app, &c).await;

    // Every team member sees the channel, guests included; outsiders do not.
    for who in [&c.owner, &c.admin, &c.member, &c.guest] {
        let (status, ch) = app.get(&format!("/api/v1/chat/channels/{channel}"), &who.access).await;
        assert_eq!(status, StatusCode::OK, "{}: {ch}", who.username);
    }
    let (status, _) = app
        .get(&format!("/api/v1/chat/channels/{channel}"), &c.outsider.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let url = format!("ws://{}/ws/chat/{channel}?access_token={}", app.addr, c.outsider.access);
    let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    let mut live = channel_stream(&app, &channel, &c.guest).await;
    let mut team_events = events(&app, &c.admin, "").await;

    let task = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "Ship it", "estimate": 3 }),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let (change, text) = change_and_message(&mut live, "task.created").await;
    assert_eq!(change["data"]["id"], id);
    assert_eq!(text, "member created WEB-1 \u{201c}Ship it\u{201d}");
    // The /ws/events push is still there.
    assert_eq!(
        crate::chat::next_of(&mut team_events, "task.created").await["data"]["id"],
        id
    );

    let (status, updated) = app
        .patch(
            &format!("/api/v1/tasks/{id}"),
            &c.admin.access,
            json!({ "title": "Ship it today", "priority": "high", "expected_version": task["version"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let (_, text) = change_and_message(&mut live, "task.updated").await;
    assert_eq!(text, "admin updated WEB-1 (title, priority)");

    let (status, moved) = put(
        &app,
        &format!("/api/v1/boards/{}/tasks/{id}/move", c.board),
        &c.member.access,
        json!({ "column_id": c.columns[3], "expected_version": updated["version"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let (change, text) = change_and_message(&mut live, "task.moved").await;
    assert_eq!(change["data"]["task"]["column_id"], c.columns[3].as_str());
    assert_eq!(text, "member moved WEB-1 to Done");

    let (status, comment) = app
        .post(
            &format!("/api/v1/tasks/{id}/comments"),
            Some(&c.owner.access),
            json!({ "body": "nice" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{comment}");
    let (_, text) = change_and_message(&mut live, "task.comment.created").await;
    assert_eq!(text, "owner commented on WEB-1");
    let comment_path = format!("/api/v1/tasks/{id}/comments/{}", comment["id"].as_str().unwrap());
    assert_eq!(
        app.patch(&comment_path, &c.owner.access, json!({ "body": "very nice" }))
            .await
            .0,
        StatusCode::OK
    );
    let (_, text) = change_and_message(&mut live, "task.comment.updated").await;
    assert_eq!(text, "owner edited a comment on WEB-1");
    assert_eq!(
        app.delete(&comment_path, &c.owner.access).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, text) = change_and_message(&mut live, "task.comment.deleted").await;
    assert_eq!(text, "owner deleted a comment on WEB-1");

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tasks/{id}"),
            Some(&c.member.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (change, text) = change_and_message(&mut live, "task.deleted").await;
    assert_eq!(change["data"]["id"], id);
    assert_eq!(text, "member deleted WEB-1 \u{201c}Ship it today\u{201d}");

    // Deleting a column moves its tasks, which the channel hears too.
    let parked = create_task(&app, &c.member, &c.project, json!({ "title": "Parked" })).await;
    change_and_message(&mut live, "task.created").await;
    let (status, _) = app
        .delete(
            &format!("/api/v1/columns/{}?move_to={}", c.columns[0], c.columns[1]),
            &c.admin.access,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (change, text) = change_and_message(&mut live, "task.moved").await;
    assert_eq!(change["data"]["task"]["id"], parked["id"]);
    assert_eq!(text, "admin moved WEB-2 to To do (column Backlog deleted)");

    // The messages stay in the channel's history, oldest first.
    let (status, history) = app
        .get(&format!("/api/v1/chat/channels/{channel}/messages"), &c.guest.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let bodies: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "member created WEB-1 \u{201c}Ship it\u{201d}",
            "admin updated WEB-1 (title, priority)",
            "member moved WEB-1 to Done",
            "owner commented on WEB-1",
            "owner edited a comment on WEB-1",
            "owner deleted a comment on WEB-1",
            "member deleted WEB-1 \u{201c}Ship it today\u{201d}",
            "member created WEB-2 \u{201c}Parked\u{201d}",
            "admin moved WEB-2 to To do (column Backlog deleted)",
        ]
    );
    // Another project has its own channel, which hears nothing of this one.
    let other = crate::projects::create_project(&app, &c.member, &c.team, "OPS").await;
    let other_channel = other["chat_channel_id"].as_str().unwrap();
    assert_ne!(other_channel, channel);
    let (_, quiet) = app
        .get(
            &format!("/api/v1/chat/channels/{other_channel}/messages"),
            &c.member.access,
        )
        .await;
    assert_eq!(quiet["items"], json!([]));
}
