use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::chat::{cast, channel, events, join, next_of, say};
use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn mentions_and_direct_messages_notify_live_and_are_marked_read() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.admin, &c.admin).await;
    let mut ws = events(&app, &c.admin, "").await;

    say(&app, &general, &c.member, "no mention, no notification").await;
    let mention = say(&app, &general, &c.member, "@admin please review").await;
    let pushed = next_of(&mut ws, "notification.created").await;
    assert_eq!(pushed["data"]["reason"], "mention");
    assert_eq!(pushed["data"]["title"], "member mentioned you in #general");
    assert_eq!(pushed["data"]["message"], "@admin please review");
    assert_eq!(pushed["data"]["message_id"], mention["id"]);
    assert_eq!(pushed["data"]["team_id"], c.team.as_str());
    assert_eq!(
        (pushed["data"]["kind"].as_str(), pushed["data"]["is_read"].as_bool()),
        (Some("info"), Some(false))
    );

    let dm = app
        .post(
            "/api/v1/chat/channels",
            Some(&c.member.access),
            json!({ "kind": "dm", "members": [c.admin.user_id] }),
        )
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    say(&app, &dm, &c.member, "a private word").await;
    let pushed = next_of(&mut ws, "notification.created").await;
    assert_eq!(pushed["data"]["reason"], "dm");
    assert_eq!(pushed["data"]["title"], "member sent you a direct message");

    let (status, list) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["reason"], "dm", "newest first");
    let (_, page) = app.get("/api/v1/notifications?limit=1", &c.admin.access).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app
        .get(
            &format!("/api/v1/notifications?limit=1&after={cursor}"),
            &c.admin.access,
        )
        .await;
    assert_eq!(page["items"][0]["reason"], "mention");
    assert!(page["next_cursor"].is_null());

    // One read: pushed to the user's clients; others cannot touch it.
    let id = items[0]["id"].as_str().unwrap();
    let path = format!("/api/v1/notifications/{id}");
    assert_eq!(
        app.patch(&path, &c.member.access, json!({ "is_read": true })).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, n) = app.patch(&path, &c.admin.access, json!({ "is_read": true })).await;
    assert_eq!(status, StatusCode::OK);
    assert!(n["is_read"].as_bool().unwrap() && n["read_at"].is_string());
    let read = next_of(&mut ws, "notification.read").await;
    assert_eq!(read["data"]["ids"], json!([id]));
    let (status, body) = app.patch(&path, &c.admin.access, json!({ "is_read": "yes" })).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
    let (_, list) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // All read.
    let (status, res) = app
        .call(Method::PUT, "/api/v1/notifications/read", Some(&c.admin.access), None)
        .await;
    assert_eq!((status, res["updated"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, list) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (_, all) = app.get("/api/v1/notifications", &c.admin.access).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (status, _) = app.get("/api/v1/notifications?unread=maybe", &c.admin.access).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.call(Method::GET, "/api/v1/notifications", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn reading_a_channel_reads_its_notifications() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.admin, &c.admin).await;
    say(&app, &general, &c.member, "@admin one").await;
    say(&app, &general, &c.member, "@admin two").await;
    let (_, list) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    app.post(
        &format!("/api/v1/chat/channels/{general}/read"),
        Some(&c.admin.access),
        json!({}),
    )
    .await;
    let (_, list) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    assert!(list["items"].as_array().unwrap().is_empty());

    // Deleting a message takes its notification along.
    let m = say(&app, &general, &c.member, "@admin three").await;
    app.delete(
        &format!("/api/v1/chat/channels/{general}/messages/{}", m["id"].as_str().unwrap()),
        &c.member.access,
    )
    .await;
    let (_, list) = app.get("/api/v1/notifications", &c.admin.access).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn channel_preferences_choose_what_notifies() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.admin, &c.admin).await;
    let prefs = format!("/api/v1/chat/channels/{general}/preferences");
    let count = || async {
        app.get("/api/v1/notifications", &c.admin.access).await.1["items"]
            .as_array()
            .unwrap()
            .len()
    };

    // Default in channels: mentions only.
    say(&app, &general, &c.member, "chatter").await;
    assert_eq!(count().await, 0);
    let (status, ch) = app.patch(&prefs, &c.admin.access, json!({ "notify": "all" })).await;
    assert_eq!((status, ch["notify"].as_str()), (StatusCode::OK, Some("all")));
    say(&app, &general, &c.member, "more chatter").await;
    assert_eq!(count().await, 1);
    let (_, ch) = app.patch(&prefs, &c.admin.access, json!({ "muted": true })).await;
    assert_eq!(
        (ch["notify"].as_str(), ch["muted"].as_bool()),
        (Some("all"), Some(true))
    );
    say(&app, &general, &c.member, "@admin muted").await;
    assert_eq!(count().await, 1);
    app.patch(&prefs, &c.admin.access, json!({ "muted": false, "notify": "none" }))
        .await;
    say(&app, &general, &c.member, "@admin none").await;
    assert_eq!(count().await, 1);
    app.patch(&prefs, &c.admin.access, json!({ "notify": "mentions" }))
        .await;
    say(&app, &general, &c.member, "@admin yes").await;
    assert_eq!(count().await, 2);

    // An edit that adds a mention notifies the newly mentioned.
    let m = say(&app, &general, &c.member, "someone should look").await;
    let path = format!("/api/v1/chat/channels/{general}/messages/{}", m["id"].as_str().unwrap());
    app.patch(&path, &c.member.access, json!({ "body": "@admin should look" }))
        .await;
    app.patch(&path, &c.member.access, json!({ "body": "@admin should look!" }))
        .await;
    assert_eq!(count().await, 3);

    let (status, _) = app.patch(&prefs, &c.admin.access, json!({ "notify": "loud" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.patch(&prefs, &c.owner.access, json!({ "muted": true })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not a member");
    let (status, _) = app.patch(&prefs, &c.outsider.access, json!({ "muted": true })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
