use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};
use crate::projects::{create_task, crew};

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn task_fields_labels_and_filters() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let (status, bug) = app
        .post(
            "/api/v1/labels",
            Some(&c.member.access),
            json!({ "team_id": c.team, "name": "bug", "color": "#FF0000" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bug}");
    assert_eq!(bug["color"], "#ff0000");
    let (status, body) = app
        .post(
            "/api/v1/labels",
            Some(&c.member.access),
            json!({ "team_id": c.team, "name": "bug", "color": "#00ff00" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "label_exists"));
    let (status, _) = app
        .post(
            "/api/v1/labels",
            Some(&c.member.access),
            json!({ "team_id": c.team, "name": "x", "color": "red" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let bug_id = bug["id"].as_str().unwrap();

    let t1 = create_task(
        &app,
        &c.member,
        &c.project,
        json!({
            "title": "Fix login", "description": "# Steps\n1. open _the_ page", "priority": "urgent",
            "assignee_ids": [c.member.user_id, c.guest.user_id], "label_ids": [bug_id],
            "start_date": "2026-05-01", "due_date": "2026-05-10", "estimate": 5
        }),
    )
    .await;
    assert_eq!(t1["key"], "WEB-1");
    assert_eq!(t1["priority"], "urgent");
    assert_eq!(t1["assignee_ids"].as_array().unwrap().len(), 2);
    assert_eq!(t1["label_ids"], json!([bug_id]));
    assert_eq!(
        (t1["due_date"].as_str(), t1["estimate"].as_i64()),
        (Some("2026-05-10"), Some(5))
    );
    assert_eq!(t1["column_id"], c.columns[0]);
    let t2 = create_task(
        &app,
        &c.owner,
        &c.project,
        json!({ "title": "Write docs 100%", "column_id": c.columns[1], "due_date": "2026-06-01" }),
    )
    .await;
    assert_eq!(
        (t2["key"].as_str(), t2["priority"].as_str()),
        (Some("WEB-2"), Some("medium"))
    );

    for bad in [
        json!({ "title": "" }),
        json!({ "title": "x", "priority": "critical" }),
        json!({ "title": "x", "assignee_ids": [c.outsider.user_id] }),
        json!({ "title": "x", "label_ids": ["nope"] }),
        json!({ "title": "x", "column_id": "nope" }),
        json!({ "title": "x", "estimate": -1 }),
        json!({ "title": "x", "start_date": "2026-05-02", "due_date": "2026-05-01" }),
        json!({ "title": "x", "sprint_id": "nope" }),
        json!({ "title": "x", "unknown": 1 }),
    ] {
        let (status, body) = app
            .post(
                &format!("/api/v1/projects/{}/tasks", c.project),
                Some(&c.member.access),
                bad,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }

    let list = |query: String| {
        let app = &app;
        let token = c.guest.access.clone();
        let path = format!("/api/v1/projects/{}/tasks?{query}", c.project);
        async move {
            let (status, page) = app.get(&path, &token).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            ids(&page)
        }
    };
    assert_eq!(list(String::new()).await, ["WEB-1", "WEB-2"]);
    assert_eq!(list(format!("assignee_id={}", c.guest.user_id)).await, ["WEB-1"]);
    assert_eq!(list(format!("label_id={bug_id}")).await, ["WEB-1"]);
    assert_eq!(list(format!("column_id={}", c.columns[1])).await, ["WEB-2"]);
    assert_eq!(list("priority=urgent".into()).await, ["WEB-1"]);
    assert_eq!(list("due_from=2026-05-11".into()).await, ["WEB-2"]);
    assert_eq!(list("due_to=2026-05-10".into()).await, ["WEB-1"]);
    assert_eq!(list("q=LOGIN".into()).await, ["WEB-1"]);
    assert_eq!(list("q=steps".into()).await, ["WEB-1"]);
    assert_eq!(list("q=100%25".into()).await, ["WEB-2"]);
    assert_eq!(list("q=%25".into()).await, ["WEB-2"], "% is matched literally");
    assert_eq!(list("sprint_id=backlog".into()).await, ["WEB-1", "WEB-2"]);
    let (_, first) = app
        .get(
            &format!("/api/v1/projects/{}/tasks?limit=1", c.project),
            &c.guest.access,
        )
        .await;
    assert_eq!(ids(&first), ["WEB-1"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert_eq!(list(format!("limit=1&after={cursor}")).await, ["WEB-2"]);
    let (status, _) = app
        .get(
            &format!("/api/v1/projects/{}/tasks?priority=huge", c.project),
            &c.guest.access,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Edits: replace assignees, clear the due date, archive; a stale expected_version is 409.
    let t1_id = t1["id"].as_str().unwrap();
    let (status, t) = app
        .patch(
            &format!("/api/v1/tasks/{t1_id}"),
            &c.member.access,
            json!({ "assignee_ids": [c.admin.user_id], "due_date": null, "priority": "low", "expected_version": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["assignee_ids"], json!([c.admin.user_id]));
    assert!(t["due_date"].is_null());
    assert_eq!((t["version"].as_i64(), t["estimate"].as_i64()), (Some(2), Some(5)));
    let (status, body) = app
        .patch(
            &format!("/api/v1/tasks/{t1_id}"),
            &c.member.access,
            json!({ "title": "late", "expected_version": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["task"]["title"], "Fix login");
    let (status, t) = app
        .patch(
            &format!("/api/v1/tasks/{t1_id}"),
            &c.member.access,
            json!({ "archived": true }),
        )
        .await;
    assert_eq!((status, t["archived"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(list(String::new()).await, ["WEB-2"]);
    assert_eq!(list("include_archived=true".into()).await, ["WEB-1", "WEB-2"]);
    let (_, board) = app.get(&format!("/api/v1/boards/{}", c.board), &c.member.access).await;
    assert!(
        board["columns"][0]["tasks"].as_array().unwrap().is_empty(),
        "archived tasks leave the board"
    );

    // Deleting a label takes it off its tasks.
    assert_eq!(
        app.delete(&format!("/api/v1/labels/{bug_id}"), &c.member.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, t) = app.get(&format!("/api/v1/tasks/{t1_id}"), &c.member.access).await;
    assert_eq!(t["label_ids"], json!([]));
    let (_, labels) = app
        .get(&format!("/api/v1/labels?team_id={}", c.team), &c.guest.access)
        .await;
    assert_eq!(labels, json!([]));
}

#[tokio::test]
async fn subtasks_comments_and_relations() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let a = create_task(&app, &c.member, &c.project, json!({ "title": "API" })).await;
    let b = create_task(&app, &c.member, &c.project, json!({ "title": "UI" })).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let (status, sub) = app
        .post(
            &format!("/api/v1/tasks/{a_id}/subtasks"),
            Some(&c.member.access),
            json!({ "title": "schema" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    assert_eq!(sub["done"], false);
    let sub_id = sub["id"].as_str().unwrap();
    let (status, sub) = app
        .patch(
            &format!("/api/v1/tasks/{a_id}/subtasks/{sub_id}"),
            &c.member.access,
            json!({ "done": true }),
        )
        .await;
    assert_eq!((status, sub["done"].as_bool()), (StatusCode::OK, Some(true)));
    // A subtask is reached only through its own task.
    let (status, _) = app
        .patch(
            &format!("/api/v1/tasks/{b_id}/subtasks/{sub_id}"),
            &c.member.access,
            json!({ "done": false }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, rel) = app
        .post(
            &format!("/api/v1/tasks/{b_id}/relations"),
            Some(&c.member.access),
            json!({ "kind": "blocked_by", "task_id": a_id }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rel}");
    assert_eq!(rel["relations"][0]["kind"], "blocked_by");
    assert_eq!(rel["relations"][0]["task_key"], "WEB-1");
    let (status, body) = app
        .post(
            &format!("/api/v1/tasks/{a_id}/relations"),
            Some(&c.member.access),
            json!({ "kind": "blocks", "task_id": b_id }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "already_related"));
    let (status, _) = app
        .post(
            &format!("/api/v1/tasks/{a_id}/relations"),
            Some(&c.member.access),
            json!({ "kind": "relates_to", "task_id": a_id }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, detail) = app.get(&format!("/api/v1/tasks/{a_id}"), &c.guest.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["subtasks"][0]["title"], "schema");
    assert_eq!(detail["relations"][0]["kind"], "blocks");
    assert_eq!(detail["relations"][0]["task_id"], b_id);
    let rel_id = detail["relations"][0]["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/api/v1/tasks/{a_id}/relations/{rel_id}"), &c.member.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, detail) = app.get(&format!("/api/v1/tasks/{b_id}"), &c.guest.access).await;
    assert_eq!(detail["relations"], json!([]));
    assert_eq!(
        app.delete(&format!("/api/v1/tasks/{a_id}/subtasks/{sub_id}"), &c.member.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    let (status, comment) = app
        .post(
            &format!("/api/v1/tasks/{a_id}/comments"),
            Some(&c.member.access),
            json!({ "body": "Looks **good**, @Guest and @outsider? ping @member." }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{comment}");
    // Only team members are mentioned.
    assert_eq!(comment["mentions"], json!([c.guest.user_id, c.member.user_id]));
    let comment_id = comment["id"].as_str().unwrap();
    let path = format!("/api/v1/tasks/{a_id}/comments/{comment_id}");
    let (status, _) = app.patch(&path, &c.owner.access, json!({ "body": "hijack" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only the author edits");
    let (status, edited) = app
        .patch(&path, &c.member.access, json!({ "body": "Looks great" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(edited["edited_at"].is_string());
    let (status, _) = app.patch(&path, &c.member.access, json!({ "body": "  " })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, comments) = app
        .get(&format!("/api/v1/tasks/{a_id}/comments"), &c.guest.access)
        .await;
    assert_eq!(comments["items"][0]["body"], "Looks great");
    assert_eq!(
        comments["items"][0]["mentions"],
        json!([]),
        "an edit re-reads the mentions"
    );
    assert_eq!(app.delete(&path, &c.guest.access).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.delete(&path, &c.admin.access).await.0,
        StatusCode::NO_CONTENT,
        "admins moderate"
    );
    assert_eq!(app.delete(&path, &c.member.access).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nul_characters_are_never_a_server_error() {
    // PostgreSQL cannot store NUL in text; SQLite can. Either way the client hears 2xx or 4xx.
    let app = spawn_app().await;
    let c = crew(&app).await;
    let a = &c.owner.access;
    let p = &c.project;
    for (status, body) in [
        app.get("/api/v1/tasks/a%00b", a).await,
        app.get(&format!("/api/v1/projects/{p}/tasks?q=a%00b"), a).await,
        app.post(
            &format!("/api/v1/projects/{p}/tasks"),
            Some(a),
            json!({ "title": "x", "description": "a\u{0}b" }),
        )
        .await,
        app.post(
            &format!("/api/v1/projects/{p}/sprints"),
            Some(a),
            json!({ "name": "s", "goal": "\u{0}", "start_date": "2026-01-01", "end_date": "2026-01-02" }),
        )
        .await,
    ] {
        assert!(status.is_success() || status.is_client_error(), "{status} {body}");
    }
}

#[tokio::test]
async fn the_activity_feed_records_every_change() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let task = create_task(&app, &c.member, &c.project, json!({ "title": "Plan" })).await;
    let t = task["id"].as_str().unwrap();
    app.patch(
        &format!("/api/v1/tasks/{t}"),
        &c.member.access,
        json!({ "title": "Plan v2", "priority": "high", "assignee_ids": [c.admin.user_id] }),
    )
    .await;
    let (status, _) = crate::projects::put(
        &app,
        &format!("/api/v1/boards/{}/tasks/{t}/move", c.board),
        &c.owner.access,
        json!({ "column_id": c.columns[2], "expected_version": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.post(
        &format!("/api/v1/tasks/{t}/comments"),
        Some(&c.admin.access),
        json!({ "body": "on it" }),
    )
    .await;
    app.post(
        &format!("/api/v1/tasks/{t}/subtasks"),
        Some(&c.admin.access),
        json!({ "title": "step" }),
    )
    .await;

    let (status, feed) = app.get(&format!("/api/v1/tasks/{t}/activity"), &c.guest.access).await;
    assert_eq!(status, StatusCode::OK, "{feed}");
    let entries: Vec<(String, String, String, String)> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("verb"), s("entity"), s("field"), s("new_value"))
        })
        .collect();
    let expected = [
        ("created", "subtask", "title", "step"),
        ("created", "comment", "body", "on it"),
        ("moved", "task", "column_id", c.columns[2].as_str()),
        ("updated", "task", "assignee_ids", c.admin.user_id.as_str()),
        ("updated", "task", "priority", "high"),
        ("updated", "task", "title", "Plan v2"),
        ("created", "task", "", ""),
    ];
    let mut got = entries.clone();
    // Changes of one request share a timestamp; compare them as a set per request.
    got[3..6].sort();
    let mut want: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned(), (*d).to_owned()))
        .collect();
    want[3..6].sort();
    assert_eq!(got, want);
    let first = &feed["items"][2];
    assert_eq!(
        (first["actor_id"].as_str(), first["old_value"].as_str()),
        (Some(c.owner.user_id.as_str()), Some(c.columns[0].as_str()))
    );

    // Newest first in keyset pages; the project feed has the project's own history too, and a
    // deleted task keeps its history there.
    let (_, page) = app
        .get(&format!("/api/v1/tasks/{t}/activity?limit=2"), &c.member.access)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = app
        .get(
            &format!("/api/v1/tasks/{t}/activity?limit=2&after={cursor}"),
            &c.member.access,
        )
        .await;
    assert_eq!(next["items"][0], feed["items"][2]);
    assert_eq!(
        app.delete(&format!("/api/v1/tasks/{t}"), &c.member.access).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, project_feed) = app
        .get(
            &format!("/api/v1/projects/{}/activity?limit=200", c.project),
            &c.member.access,
        )
        .await;
    let items = project_feed["items"].as_array().unwrap();
    assert_eq!(
        (items[0]["verb"].as_str(), items[0]["task_id"].as_str()),
        (Some("deleted"), Some(t))
    );
    let last = items.last().unwrap();
    assert_eq!(
        (last["verb"].as_str(), last["entity"].as_str()),
        (Some("created"), Some("project"))
    );
    assert_eq!(
        app.get(&format!("/api/v1/projects/{}/activity", c.project), &c.outsider.access)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn assignment_and_mentions_notify_the_people_concerned() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let reasons = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    let task = create_task(
        &app,
        &c.member,
        &c.project,
        json!({ "title": "Ship it", "assignee_ids": [c.admin.user_id, c.member.user_id] }),
    )
    .await;
    let (_, admin_inbox) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    assert_eq!(reasons(&admin_inbox), ["assigned"], "{admin_inbox}");
    assert!(admin_inbox["items"][0]["title"].as_str().unwrap().contains("Ship it"));
    let (_, own) = app.get("/api/v1/notifications", &c.member.access).await;
    assert!(reasons(&own).is_empty(), "assigning yourself notifies nobody: {own}");

    // Adding an assignee later notifies only the newcomer.
    let id = task["id"].as_str().unwrap();
    let assignees = json!([c.admin.user_id, c.member.user_id, c.owner.user_id]);
    let (status, _) = app
        .patch(
            &format!("/api/v1/tasks/{id}"),
            &c.member.access,
            json!({ "assignee_ids": assignees }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, owner_inbox) = app.get("/api/v1/notifications", &c.owner.access).await;
    assert_eq!(reasons(&owner_inbox), ["assigned"]);
    let (_, admin_inbox) = app.get("/api/v1/notifications", &c.admin.access).await;
    assert_eq!(
        reasons(&admin_inbox),
        ["assigned"],
        "no second notice for an existing assignee"
    );

    let (status, _) = app
        .post(
            &format!("/api/v1/tasks/{id}/comments"),
            Some(&c.admin.access),
            json!({ "body": "@owner can you review?" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, owner_inbox) = app.get("/api/v1/notifications", &c.owner.access).await;
    assert_eq!(
        reasons(&owner_inbox),
        ["mention", "assigned"],
        "newest first: {owner_inbox}"
    );
    assert_eq!(owner_inbox["items"][0]["message"], "@owner can you review?");
}
