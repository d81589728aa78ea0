//! The security audit log: every recorded event type, who may read a team's log, the caller's
//! own security log, pagination and filters.

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, cast, error_code, session_from, spawn_app_with};

const AGENT: &str = "audit-test/1.0 (a browser)";
const PASSWORD: &str = "correct horse battery";

/// Signs in as `login` with `password`, sending a user agent; returns status and body.
async fn login(app: &TestApp, login: &str, password: &str) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", AGENT)
        .json(&json!({ "login": login, "password": password }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

async fn security_log(app: &TestApp, who: &Session, query: &str) -> Value {
    let (status, page) = app.get(&format!("/api/v1/me/security-log{query}"), &who.access).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

async fn audit_log(app: &TestApp, team: &str, who: &Session, query: &str) -> Value {
    let (status, page) = app
        .get(&format!("/api/v1/teams/{team}/audit-log{query}"), &who.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

fn actions(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

/// The one entry of `action` in `page`.
fn entry<'a>(page: &'a Value, action: &str) -> &'a Value {
    let found: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .collect();
    assert_eq!(found.len(), 1, "{action} in {page}");
    found[0]
}

#[tokio::test]
async fn account_events_are_recorded_and_shown_to_their_user() {
    let mut db = None;
    let app = spawn_app_with(|c| db = c.database_url.clone()).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let (status, body) = login(&app, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = session_from(&body, "alice");
    assert_eq!(
        login(&app, "alice@example.com", "wrong password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "nobody@example.com", "wrong password").await.0,
        StatusCode::UNAUTHORIZED
    );

    // A refresh token presented twice revokes its session.
    let refresh = json!({ "refresh_token": second.refresh });
    assert_eq!(
        app.post("/api/v1/auth/token/refresh", None, refresh.clone()).await.0,
        StatusCode::OK
    );
    let (status, body) = app.post("/api/v1/auth/token/refresh", None, refresh).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "refresh_token_reused")
    );

    // A password change needs the current password and signs out the other sessions.
    let (_, third) = login(&app, "alice", PASSWORD).await;
    let third = session_from(&third, "alice");
    let change = |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
    let (status, body) = app
        .post(
            "/api/v1/auth/password",
            Some(&alice.access),
            change("nope nope", "a new passphrase"),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = app
        .post("/api/v1/auth/password", Some(&alice.access), change(PASSWORD, "short"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/auth/password",
            Some(&alice.access),
            change(PASSWORD, "a new passphrase"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        app.get("/api/v1/auth/me", &third.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/api/v1/auth/me", &alice.access).await.0, StatusCode::OK);
    assert_eq!(login(&app, "alice", PASSWORD).await.0, StatusCode::UNAUTHORIZED);

    let (status, _) = app.post("/api/v1/auth/logout", Some(&alice.access), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = login(&app, "alice", "a new passphrase").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = session_from(&body, "alice");

    // Newest first; failed sign-ins of unknown accounts and other users' events are not here.
    let log = security_log(&app, &alice, "").await;
    assert_eq!(
        actions(&log),
        [
            "auth.login",
            "auth.logout",
            "auth.login_failed",
            "auth.password_changed",
            "auth.login",
            "auth.session_revoked",
            "auth.login_failed",
            "auth.login",
        ]
    );
    for e in log["items"].as_array().unwrap() {
        assert_eq!(e["actor_id"], alice.user_id.as_str(), "{e}");
        assert!(e["team_id"].is_null(), "{e}");
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        assert!(e["created_at"].is_string(), "{e}");
    }
    let first_login = &log["items"][7];
    assert_eq!(first_login["user_agent"], AGENT);
    assert_eq!(first_login["target_type"], "session");
    let revoked = entry(&log, "auth.session_revoked");
    assert_eq!(revoked["metadata"]["reason"], "refresh_token_reused");
    assert_eq!(revoked["target_id"], first_login["target_id"]);
    assert_eq!(entry(&log, "auth.password_changed")["metadata"]["sessions_revoked"], 1);
    let failed = &log["items"][6];
    assert_eq!(
        (failed["target_type"].as_str(), failed["target_id"].as_str()),
        (Some("user"), Some(alice.user_id.as_str()))
    );
    assert!(actions(&security_log(&app, &bob, "").await).is_empty());

    // Pages and the action filter; an actor filter cannot reach others' events.
    let first = security_log(&app, &alice, "?limit=3").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = security_log(&app, &alice, &format!("?after={cursor}")).await;
    let mut paged = actions(&first);
    paged.extend(actions(&rest));
    assert_eq!(paged, actions(&log));
    assert!(rest["next_cursor"].is_null());
    assert_eq!(
        actions(&security_log(&app, &alice, "?action=auth.login").await).len(),
        3
    );
    let (status, _) = app
        .get(
            &format!("/api/v1/me/security-log?actor_id={}", alice.user_id),
            &bob.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(actions(&security_log(&app, &bob, &format!("?actor_id={}", alice.user_id)).await).is_empty());

    // The unknown account's failed sign-in is kept without an actor, and nothing keeps a
    // password or a login name.
    let db = db.unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db).await.unwrap();
    let anonymous: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT actor_id, target_id FROM audit_log WHERE action = 'auth.login_failed' AND actor_id IS NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(anonymous, [(None, None)]);
    for secret in [
        PASSWORD,
        "a new passphrase",
        "wrong password",
        "nobody@example.com",
        "alice@example.com",
    ] {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE metadata LIKE $1 OR user_agent LIKE $1")
                .bind(format!("%{secret}%"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{secret}");
    }
}

async fn upload(app: &TestApp, who: &Session, team: &str) -> String {
    let form = Form::new().part("file", Part::bytes(b"hello".to_vec()).file_name("a.txt"));
    let res = app
        .client
        .post(app.url(&format!("/api/v1/files/upload?team_id={team}")))
        .bearer_auth(&who.access)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Creates something with `POST path` as `who` and returns its id.
async fn create(app: &TestApp, who: &Session, path: &str, body: Value) -> String {
    let (status, created) = app.post(path, Some(&who.access), body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn deleted(app: &TestApp, who: &Session, path: &str) {
    let (status, body) = app.delete(path, &who.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
}

#[tokio::test]
async fn team_events_are_recorded_for_owners_and_admins() {
    let mut db = None;
    let app = spawn_app_with(|c| db = c.database_url.clone()).await;
    let c = cast(&app).await;
    let (team, owner, admin, member, guest, outsider) = (c.team, c.owner, c.admin, c.member, c.guest, c.outsider);

    // Who may read the log: owners and admins; members and guests 403; outsiders 404; no token 401.
    for (who, expected) in [
        (&owner, StatusCode::OK),
        (&admin, StatusCode::OK),
        (&member, StatusCode::FORBIDDEN),
        (&guest, StatusCode::FORBIDDEN),
        (&outsider, StatusCode::NOT_FOUND),
    ] {
        let (status, body) = app.get(&format!("/api/v1/teams/{team}/audit-log"), &who.access).await;
        assert_eq!(status, expected, "{}: {body}", who.username);
    }
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/teams/{team}/audit-log"),
            None,
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "missing_token"));

    // Roles, invitations, removal and leaving.
    let role = |r: &str| json!({ "role": r });
    let path = format!("/api/v1/teams/{team}/members/{}", member.user_id);
    assert_eq!(app.patch(&path, &owner.access, role("admin")).await.0, StatusCode::OK);
    assert_eq!(app.patch(&path, &owner.access, role("member")).await.0, StatusCode::OK);
    let (status, invite) = app
        .post(
            &format!("/api/v1/teams/{team}/invites"),
            Some(&admin.access),
            json!({ "role": "member", "email": "outsider@example.com" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    let (status, body) = app
        .post(
            &format!("/api/v1/invites/{}/accept", invite["token"].as_str().unwrap()),
            Some(&outsider.access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    deleted(
        &app,
        &admin,
        &format!("/api/v1/teams/{team}/members/{}", outsider.user_id),
    )
    .await;
    let (_, unused) = app
        .post(
            &format!("/api/v1/teams/{team}/invites"),
            Some(&owner.access),
            json!({ "role": "guest" }),
        )
        .await;
    let unused = unused["id"].as_str().unwrap().to_owned();
    deleted(&app, &admin, &format!("/api/v1/teams/{team}/invites/{unused}")).await;
    deleted(&app, &guest, &format!("/api/v1/teams/{team}/members/{}", guest.user_id)).await;

    // Deletions of a project, a task, a room, a file and a channel.
    let project = create(
        &app,
        &member,
        "/api/v1/projects",
        json!({ "team_id": team, "name": "Web", "key": "WEB" }),
    )
    .await;
    let task = create(
        &app,
        &member,
        &format!("/api/v1/projects/{project}/tasks"),
        json!({ "title": "Fix it" }),
    )
    .await;
    deleted(&app, &member, &format!("/api/v1/tasks/{task}")).await;
    deleted(&app, &admin, &format!("/api/v1/projects/{project}")).await;
    let room = create(
        &app,
        &member,
        "/api/v1/rooms",
        json!({ "team_id": team, "name": "Standup" }),
    )
    .await;
    deleted(&app, &member, &format!("/api/v1/rooms/{room}")).await;
    let file = upload(&app, &member, &team).await;
    deleted(&app, &admin, &format!("/api/v1/files/{file}")).await;
    let channel = create(
        &app,
        &member,
        "/api/v1/chat/channels",
        json!({ "kind": "public", "team_id": team, "name": "random" }),
    )
    .await;
    deleted(&app, &member, &format!("/api/v1/chat/channels/{channel}")).await;
    // A team event and a meeting the member organized, removed by an admin.
    let times = json!({ "starts_at": "2026-06-01T09:00:00Z", "ends_at": "2026-06-01T10:00:00Z" });
    let mut body = json!({ "team_id": team, "title": "Planning" });
    body.as_object_mut().unwrap().extend(times.as_object().unwrap().clone());
    let event = create(&app, &member, "/api/v1/events", body.clone()).await;
    deleted(&app, &admin, &format!("/api/v1/events/{event}")).await;
    body["title"] = json!("Review");
    let meeting = create(&app, &member, "/api/v1/meetings", body).await;
    deleted(&app, &admin, &format!("/api/v1/meetings/{meeting}")).await;

    let log = audit_log(&app, &team, &owner, "").await;
    assert_eq!(audit_log(&app, &team, &admin, "").await["items"], log["items"]);
    let (status, body) = app
        .get(&format!("/api/v1/teams/{team}/audit-log"), &member.access)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    // Having left, the guest is an outsider.
    let (status, body) = app.get(&format!("/api/v1/teams/{team}/audit-log"), &guest.access).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    assert_eq!(
        actions(&log),
        [
            "meeting.cancelled",
            "event.deleted",
            "channel.deleted",
            "file.deleted",
            "room.deleted",
            "project.deleted",
            "task.deleted",
            "member.left",
            "invite.revoked",
            "invite.created",
            "member.removed",
            "invite.accepted",
            "invite.created",
            "member.role_changed",
            "member.role_changed",
            "member.added",
            "member.added",
            "member.added",
        ]
    );
    for e in log["items"].as_array().unwrap() {
        assert_eq!(e["team_id"], team.as_str(), "{e}");
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
    }
    let by_action = |a: &str| entry(&log, a).clone();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items[13]["metadata"], json!({ "from": "admin", "to": "member" }));
    let promoted = &items[14];
    assert_eq!(promoted["metadata"], json!({ "from": "member", "to": "admin" }));
    assert_eq!(promoted["actor_id"], owner.user_id.as_str());
    assert_eq!(promoted["target_id"], member.user_id.as_str());
    let revoked = by_action("invite.revoked");
    assert_eq!(
        (&revoked["actor_id"], &revoked["target_id"]),
        (&json!(admin.user_id), &json!(unused))
    );
    let created = &items[12];
    assert_eq!(created["action"], "invite.created");
    assert_eq!(created["metadata"], json!({ "role": "member", "email_bound": true }));
    assert_eq!(created["actor_id"], admin.user_id.as_str());
    let accepted = by_action("invite.accepted");
    assert_eq!(
        (&accepted["actor_id"], &accepted["target_id"]),
        (&json!(outsider.user_id), &created["target_id"])
    );
    let removed = by_action("member.removed");
    assert_eq!(
        (&removed["actor_id"], &removed["target_id"]),
        (&json!(admin.user_id), &json!(outsider.user_id))
    );
    assert_eq!(by_action("member.left")["actor_id"], guest.user_id.as_str());
    let task_gone = by_action("task.deleted");
    assert_eq!(task_gone["target_id"], task.as_str());
    assert_eq!(task_gone["metadata"]["key"], "WEB-1");
    assert_eq!(task_gone["metadata"]["title"], "Fix it");
    assert_eq!(by_action("project.deleted")["metadata"]["name"], "Web");
    assert_eq!(by_action("project.deleted")["actor_id"], admin.user_id.as_str());
    assert_eq!(by_action("room.deleted")["target_id"], room.as_str());
    assert_eq!(by_action("file.deleted")["metadata"]["name"], "a.txt");
    assert_eq!(by_action("channel.deleted")["metadata"]["name"], "random");
    assert_eq!(
        (
            &by_action("event.deleted")["target_id"],
            &by_action("event.deleted")["metadata"]["title"]
        ),
        (&json!(event), &json!("Planning"))
    );
    let cancelled = by_action("meeting.cancelled");
    assert_eq!(
        (&cancelled["target_id"], &cancelled["actor_id"]),
        (&json!(meeting), &json!(admin.user_id))
    );
    assert!(cancelled["metadata"]["room_id"].is_string(), "{cancelled}");

    // Filters by action and by actor.
    let only = audit_log(&app, &team, &owner, "?action=member.role_changed").await;
    assert_eq!(actions(&only), ["member.role_changed", "member.role_changed"]);
    let by_member = audit_log(&app, &team, &owner, &format!("?actor_id={}", member.user_id)).await;
    assert_eq!(actions(&by_member), ["channel.deleted", "room.deleted", "task.deleted"]);

    // Ownership moves in one step; the team's deletion is recorded although the team is gone.
    let (status, new_owner) = app
        .post(
            &format!("/api/v1/teams/{team}/transfer-ownership"),
            Some(&admin.access),
            json!({ "user_id": member.user_id }),
        )
        .await;
    assert_eq!((status, error_code(&new_owner)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, new_owner) = app
        .post(
            &format!("/api/v1/teams/{team}/transfer-ownership"),
            Some(&owner.access),
            json!({ "user_id": admin.user_id }),
        )
        .await;
    assert_eq!(
        (status, new_owner["role"].as_str()),
        (StatusCode::OK, Some("owner")),
        "{new_owner}"
    );
    let (_, me) = app.get(&format!("/api/v1/teams/{team}"), &owner.access).await;
    assert_eq!(me["role"], "admin");
    let log = audit_log(&app, &team, &owner, "?action=team.ownership_transferred").await;
    let transfer = entry(&log, "team.ownership_transferred");
    assert_eq!(transfer["actor_id"], owner.user_id.as_str());
    assert_eq!(transfer["target_id"], admin.user_id.as_str());
    assert_eq!(
        transfer["metadata"],
        json!({ "from_user_id": owner.user_id, "previous_role": "admin" })
    );
    deleted(&app, &admin, &format!("/api/v1/teams/{team}")).await;
    assert_eq!(
        app.get(&format!("/api/v1/teams/{team}/audit-log"), &admin.access)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.unwrap()).await.unwrap();
    let gone: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor_id, target_id, metadata FROM audit_log WHERE action = 'team.deleted' AND team_id = $1",
    )
    .bind(&team)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        gone,
        [(
            admin.user_id.clone(),
            team.clone(),
            json!({ "name": "Platform" }).to_string()
        )]
    );
    let (kept,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE team_id = $1")
        .bind(&team)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 20, "the team's history outlives it");
}
