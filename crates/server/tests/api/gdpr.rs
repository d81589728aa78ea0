use std::io::Read;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Session, TestApp, error_code, spawn_app_with};

async fn app_and_db() -> (TestApp, String) {
    let mut url = None;
    let app = spawn_app_with(|c| url = c.database_url.clone()).await;
    (app, url.unwrap())
}

async fn upload(app: &TestApp, who: &Session, team: &str, name: &str, bytes: &[u8]) -> Value {
    let form = Form::new().part("file", Part::bytes(bytes.to_vec()).file_name(name.to_owned()));
    let res = app
        .client
        .post(app.url(&format!("/api/v1/files/upload?team_id={team}")))
        .bearer_auth(&who.access)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

/// A shared team with a channel where both users wrote, a note and a file each.
async fn history(app: &TestApp, alice: &Session, bob: &Session) -> (String, String) {
    let team = app.team(alice, "Core").await;
    app.add(alice, &team, bob, "member").await;
    let (_, ch) = app
        .post(
            "/api/v1/chat/channels",
            Some(&alice.access),
            json!({ "team_id": team, "name": "general", "kind": "public", "members": [bob.user_id] }),
        )
        .await;
    let channel = ch["id"].as_str().unwrap().to_owned();
    for (who, body) in [(alice, "alice says hi @bob"), (bob, "bob private thoughts")] {
        let (status, _) = app
            .post(
                &format!("/api/v1/chat/channels/{channel}/messages"),
                Some(&who.access),
                json!({ "body": body }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    app.post(
        "/api/v1/notes",
        Some(&alice.access),
        json!({ "team_id": team, "title": "alice note", "body": "a" }),
    )
    .await;
    app.post(
        "/api/v1/notes",
        Some(&bob.access),
        json!({ "team_id": team, "title": "bob note", "body": "b" }),
    )
    .await;
    let (status, project) = app
        .post(
            "/api/v1/projects",
            Some(&alice.access),
            json!({ "team_id": team, "name": "Web", "key": "WEB" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    for (who, title) in [(alice, "alice task"), (bob, "bob task")] {
        let (status, task) = app
            .post(
                &format!("/api/v1/projects/{}/tasks", project["id"].as_str().unwrap()),
                Some(&who.access),
                json!({ "title": title, "assignee_ids": [who.user_id] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let task = task["id"].as_str().unwrap();
        let (status, _) = app
            .post(
                &format!("/api/v1/tasks/{task}/comments"),
                Some(&who.access),
                json!({ "body": format!("{title} comment") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = app
            .post(
                &format!("/api/v1/tasks/{task}/time-entries"),
                Some(&who.access),
                json!({ "duration_minutes": 30, "note": format!("{title} time") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    upload(app, alice, &team, "alice.txt", b"alice file content").await;
    upload(app, bob, &team, "bob.txt", b"bob file content").await;
    let (_, s) = app
        .post(
            "/api/v1/timer/sessions/start",
            Some(&alice.access),
            json!({ "focus_type": "deep_work", "planned_minutes": 60 }),
        )
        .await;
    app.post(
        &format!("/api/v1/timer/sessions/{}/stop", s["id"].as_str().unwrap()),
        Some(&alice.access),
        json!({}),
    )
    .await;
    (team, channel)
}

#[tokio::test]
async fn export_holds_the_users_data_and_nothing_of_others() {
    let (app, _) = app_and_db().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    history(&app, &alice, &bob).await;

    let url = format!("ws://{}/ws/events?access_token={}", app.addr, alice.access);
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let (status, job) = app.post("/api/v1/me/export", Some(&alice.access), json!(null)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    // Bob cannot see Alice's export.
    let (status, _) = app.get(&format!("/api/v1/me/exports/{id}"), &bob.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Wait for the job's event, not for time.
    loop {
        let Message::Text(t) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        let e: Value = serde_json::from_str(&t).unwrap();
        if e["type"] == "export.ready" {
            assert_eq!(e["data"]["id"], id);
            break;
        }
        assert_ne!(e["type"], "export.failed", "{e}");
    }
    let (_, job) = app.get(&format!("/api/v1/me/exports/{id}"), &alice.access).await;
    assert_eq!(
        (job["status"].as_str(), job["progress"].as_i64()),
        (Some("ready"), Some(100))
    );
    let res = app
        .client
        .get(app.url(&format!("/api/v1/me/exports/{id}/download")))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/zip");
    let bytes = res.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut data = String::new();
    zip.by_name("data.json").unwrap().read_to_string(&mut data).unwrap();
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["profile"][0]["email"], "alice@example.com");
    assert!(data["profile"][0].get("password_hash").is_none());
    assert_eq!(data["messages"].as_array().unwrap().len(), 1);
    assert_eq!(data["notes"][0]["title"], "alice note");
    assert_eq!(data["focus_sessions"].as_array().unwrap().len(), 1);
    assert_eq!(data["files"].as_array().unwrap().len(), 1);
    // Her audit entries (adding bob to the team), none of bob's.
    let audit = data["security_log"].as_array().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (&audit[0]["action"], &audit[0]["target_id"]),
        (&json!("member.added"), &json!(bob.user_id))
    );
    assert_eq!(data["tasks_created"][0]["title"], "alice task");
    assert_eq!(data["task_assignments"].as_array().unwrap().len(), 1);
    assert_eq!(data["task_comments"][0]["body"], "alice task comment");
    assert_eq!(data["time_entries"][0]["note"], "alice task time");
    let text = data.to_string();
    for other in [
        "bob private thoughts",
        "bob note",
        "bob.txt",
        "bob@example.com",
        "bob task",
    ] {
        assert!(!text.contains(other), "{other} leaked into the export");
    }
    let file_id = data["files"][0]["id"].as_str().unwrap();
    let mut content = String::new();
    zip.by_name(&format!("files/{file_id}-alice.txt"))
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "alice file content");
    assert_eq!(zip.len(), 2);
}

/// Every text column of every table, with the rows that contain `needle`.
async fn rows_containing(database_url: &str, needle: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let sqlite = database_url.starts_with("sqlite:");
    let columns_sql = if sqlite {
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'search_fts%' AND m.name NOT LIKE '_sqlx%' AND m.name NOT LIKE 'sqlite_%'"
    } else {
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%' AND data_type = 'text'"
    };
    let columns = sqlx::query(columns_sql).fetch_all(&pool).await.unwrap();
    let mut found = Vec::new();
    for c in columns {
        let (table, column): (String, String) = (c.get(0), c.get(1));
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE CAST({column} AS TEXT) LIKE $1");
        let n: i64 = sqlx::query(&sql)
            .bind(format!("%{needle}%"))
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

#[tokio::test]
async fn deletion_erases_personal_data_and_keeps_others_content() {
    let (app, db) = app_and_db().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (team, channel) = history(&app, &alice, &bob).await;
    let solo = app.team(&bob, "Solo").await;
    assert_eq!(rows_containing(&db, "bob@example.com").await, ["users.email"]);
    // Bob's sign-ins are in the audit log with where they came from.
    for password in ["not his password", "correct horse battery"] {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("user-agent", "bobs-browser/7")
            .json(&json!({ "login": "bob", "password": password }))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(rows_containing(&db, "bobs-browser").await, ["audit_log.user_agent"]);

    // Wrong password, then a sole owner of a team with members: refused.
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            "/api/v1/me",
            Some(&bob.access),
            Some(json!({ "password": "wrong" })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            "/api/v1/me",
            Some(&alice.access),
            Some(json!({ "password": "correct horse battery" })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "sole_owner"));
    assert!(body["error"]["message"].as_str().unwrap().contains("Core"));

    let bob_hash: String = {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db).await.unwrap();
        sqlx::query("SELECT password_hash FROM users WHERE username = 'bob'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0)
    };
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            "/api/v1/me",
            Some(&bob.access),
            Some(json!({ "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Every token is dead; nothing holds bob's address or password hash.
    let (status, _) = app.get("/api/v1/auth/me", &bob.access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/v1/auth/token/refresh",
            None,
            json!({ "refresh_token": bob.refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(rows_containing(&db, "bob@example.com").await.is_empty());
    assert!(rows_containing(&db, &bob_hash).await.is_empty());
    // His audit entries stay, without an actor, IP or user agent; the deletion is on record.
    assert!(rows_containing(&db, "bobs-browser").await.is_empty());
    let pool = sqlx::AnyPool::connect(&db).await.unwrap();
    let audit: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT action, actor_id, ip FROM audit_log WHERE action LIKE 'auth.%' OR action = 'account.deleted' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            ("auth.login_failed".to_owned(), None, None),
            ("auth.login".to_owned(), None, None),
            ("account.deleted".to_owned(), None, None),
        ]
    );

    // Bob's solo team is gone, the shared one keeps his message without an author.
    let (status, _) = app.get(&format!("/api/v1/teams/{solo}"), &alice.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, members) = app.get(&format!("/api/v1/teams/{team}/members"), &alice.access).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    let (_, msgs) = app
        .get(&format!("/api/v1/chat/channels/{channel}/messages"), &alice.access)
        .await;
    let msgs = msgs["items"].as_array().unwrap();
    let theirs = msgs.iter().find(|m| m["body"] == "bob private thoughts").unwrap();
    assert!(theirs["author_id"].is_null(), "{theirs}");
    let (_, files) = app.get(&format!("/api/v1/files?team_id={team}"), &alice.access).await;
    let bobs = files["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "bob.txt")
        .unwrap();
    assert!(bobs["uploaded_by"].is_null());
    // Bob can no longer sign in.
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "login": "bob", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
