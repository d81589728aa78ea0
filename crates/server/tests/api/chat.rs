use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{Session, TestApp, cast, error_code, spawn_app};

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `POST /api/v1/chat/channels` as `by`.
async fn create_channel(app: &TestApp, by: &Session, body: Value) -> (StatusCode, Value) {
    app.post("/api/v1/chat/channels", Some(&by.access), body).await
}

/// Creates a team channel as `by` and returns its id.
pub(crate) async fn channel(app: &TestApp, by: &Session, team: &str, name: &str, kind: &str) -> String {
    let (status, body) = create_channel(app, by, json!({ "kind": kind, "team_id": team, "name": name })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Adds `user` to `channel`, acting as `by`: the answer.
async fn add_member(app: &TestApp, channel: &str, user: &Session, by: &Session) -> (StatusCode, Value) {
    let body = json!({ "user_id": user.user_id });
    app.post(
        &format!("/api/v1/chat/channels/{channel}/members"),
        Some(&by.access),
        body,
    )
    .await
}

/// Adds `user` to `channel`, acting as `by`.
pub(crate) async fn join(app: &TestApp, channel: &str, user: &Session, by: &Session) {
    let (status, body) = add_member(app, channel, user, by).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The id of the direct-message channel of `from` with `to` (opened, or the one they have).
pub(crate) async fn dm(app: &TestApp, from: &Session, to: &Session) -> String {
    let (_, body) = create_channel(app, from, json!({ "kind": "dm", "members": [to.user_id] })).await;
    body["id"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

/// Posts `body` as `by` and returns the message.
pub(crate) async fn say(app: &TestApp, channel: &str, by: &Session, body: &str) -> Value {
    let (status, msg) = app
        .post(
            &format!("/api/v1/chat/channels/{channel}/messages"),
            Some(&by.access),
            json!({ "body": body }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{msg}");
    msg
}

pub(crate) async fn events(app: &TestApp, who: &Session, query: &str) -> Ws {
    let url = format!("ws://{}/ws/events?access_token={}{query}", app.addr, who.access);
    let mut ws = tokio_tungstenite::connect_async(url).await.expect("connects").0;
    let hello = next_json(&mut ws).await;
    assert!(
        hello["type"] == "hello" || hello["type"] == "resync_required",
        "{hello}"
    );
    ws
}

pub(crate) async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next event of type `kind`, skipping others (such as presence changes).
pub(crate) async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn channels_are_created_listed_changed_and_deleted_by_the_right_people() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    let secret = channel(&app, &c.member, &c.team, "secret", "private").await;

    let (status, ch) = app
        .get(&format!("/api/v1/chat/channels/{general}"), &c.admin.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (ch["kind"].as_str(), ch["name"].as_str(), ch["is_member"].as_bool()),
        (Some("public"), Some("general"), Some(false))
    );
    assert_eq!(ch["member_count"], 1);

    // Members and admins see public channels; private ones only their members; guests and
    // outsiders nothing.
    let list = |who: &Session| {
        let path = format!("/api/v1/chat/channels?team_id={}", c.team);
        let token = who.access.clone();
        let app = &app;
        async move { app.get(&path, &token).await }
    };
    let (_, mine) = list(&c.member).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    let (_, admins) = list(&c.admin).await;
    assert_eq!(admins["items"].as_array().unwrap().len(), 1);
    let (_, guests) = list(&c.guest).await;
    assert!(guests["items"].as_array().unwrap().is_empty());
    assert_eq!(list(&c.outsider).await.0, StatusCode::NOT_FOUND);
    for (who, id) in [
        (&c.admin, &secret),
        (&c.guest, &general),
        (&c.outsider, &general),
        (&c.outsider, &secret),
    ] {
        let (status, body) = app.get(&format!("/api/v1/chat/channels/{id}"), &who.access).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{} {id}", who.username);
        assert_eq!(error_code(&body), "not_found");
    }

    // Bad input.
    let public = |name: &str| json!({ "kind": "public", "team_id": c.team, "name": name });
    let (status, body) = create_channel(&app, &c.guest, public("mine")).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = create_channel(&app, &c.member, public("general")).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "name_taken"));
    let (status, body) = create_channel(&app, &c.member, public(" ")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["name"].is_string());
    let (status, body) = create_channel(&app, &c.member, json!({ "kind": "public", "name": "x" })).await;
    assert!(body["error"]["fields"]["team_id"].is_string(), "{status} {body}");
    let (status, body) = create_channel(
        &app,
        &c.member,
        json!({ "kind": "club", "team_id": c.team, "name": "x" }),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
    let (status, _) = app
        .get(
            &format!("/api/v1/chat/channels?team_id={}&bogus=1", c.team),
            &c.member.access,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The creator and admins change and delete; other members do not.
    join(&app, &general, &c.owner, &c.owner).await;
    let path = format!("/api/v1/chat/channels/{general}");
    let (status, _) = app.patch(&path, &c.owner.access, json!({ "topic": "hi" })).await;
    assert_eq!(status, StatusCode::OK, "owner is a team admin");
    let other = app.register("other").await;
    app.add(&c.owner, &c.team, &other, "member").await;
    join(&app, &general, &other, &other).await;
    let (status, _) = app.patch(&path, &other.access, json!({ "topic": "mine" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, ch) = app
        .patch(&path, &c.member.access, json!({ "name": "lobby", "topic": null }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((ch["name"].as_str(), ch["topic"].as_str()), (Some("lobby"), None));
    assert_eq!(app.delete(&path, &other.access).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&path, &c.admin.access).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &c.member.access).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn membership_join_add_leave_and_remove() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    let secret = channel(&app, &c.member, &c.team, "secret", "private").await;
    let members = |id: &str| format!("/api/v1/chat/channels/{id}/members");

    // Anyone who sees a public channel joins it; guests see only what they are added to.
    join(&app, &general, &c.admin, &c.admin).await;
    let (status, _) = add_member(&app, &general, &c.guest, &c.guest).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = add_member(&app, &secret, &c.admin, &c.admin).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "private channels are invisible to non-members"
    );
    join(&app, &secret, &c.guest, &c.member).await;
    let (status, ch) = app
        .get(&format!("/api/v1/chat/channels/{secret}"), &c.guest.access)
        .await;
    assert_eq!((status, ch["is_member"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, body) = add_member(&app, &secret, &c.guest, &c.member).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "already_member"));
    // Guests do not add people; nobody adds outsiders.
    let (status, _) = add_member(&app, &secret, &c.admin, &c.guest).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = add_member(&app, &secret, &c.outsider, &c.member).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, list) = app.get(&members(&secret), &c.guest.access).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].clone())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&json!("guest")) && names.contains(&json!("member")));

    // Members leave; only the creator and admins remove others.
    let (status, _) = app
        .delete(&format!("{}/{}", members(&general), c.member.user_id), &c.admin.access)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "admins remove");
    let (status, _) = app
        .delete(&format!("{}/{}", members(&secret), c.member.user_id), &c.guest.access)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .delete(&format!("{}/{}", members(&secret), c.guest.user_id), &c.guest.access)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/chat/channels/{secret}"), &c.guest.access)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = app
        .delete(&format!("{}/{}", members(&secret), c.guest.user_id), &c.member.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn direct_messages_are_found_again_and_private() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let dm = |by: &Session, with: Vec<&str>| {
        let body = json!({ "kind": "dm", "members": with });
        let token = by.access.clone();
        let app = &app;
        async move { app.post("/api/v1/chat/channels", Some(&token), body).await }
    };
    let (status, first) = dm(&c.member, vec![&c.admin.user_id]).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!((first["kind"].as_str(), first["team_id"].as_str()), (Some("dm"), None));
    assert_eq!(first["notify"], "all");
    let (status, again) = dm(&c.admin, vec![&c.member.user_id]).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]));
    let (status, group) = dm(&c.member, vec![&c.admin.user_id, &c.guest.user_id]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(group["member_count"], 3);
    assert_ne!(group["id"], first["id"]);

    // Only people sharing a team; 1 to 7 others; no team, name or member changes.
    assert_eq!(dm(&c.member, vec![&c.outsider.user_id]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(dm(&c.member, vec![]).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        dm(&c.member, vec![&c.member.user_id]).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, _) = create_channel(
        &app,
        &c.member,
        json!({ "kind": "dm", "members": [c.admin.user_id], "name": "x" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let id = first["id"].as_str().unwrap();
    let (status, _) = add_member(&app, id, &c.owner, &c.member).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.delete(
            &format!("/api/v1/chat/channels/{id}/members/{}", c.member.user_id),
            &c.member.access
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete(&format!("/api/v1/chat/channels/{id}"), &c.member.access)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Others, team owners included, cannot see it.
    say(&app, id, &c.member, "psst").await;
    for who in [&c.owner, &c.outsider, &c.guest] {
        assert_eq!(
            app.get(&format!("/api/v1/chat/channels/{id}/messages"), &who.access)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
    }
    let (_, mine) = app.get("/api/v1/chat/channels", &c.admin.access).await;
    let kinds: Vec<_> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("dm"), json!("dm")]);
    assert_eq!(mine["items"][0]["unread_count"], 1);
}

#[tokio::test]
async fn history_pages_with_keyset_cursors_both_ways() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    for i in 1..=5 {
        say(&app, &general, &c.member, &format!("m{i}")).await;
    }
    let path = format!("/api/v1/chat/channels/{general}/messages");
    // Non-members of a public channel read it.
    let (status, latest) = app.get(&format!("{path}?limit=2"), &c.admin.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&latest), ["m4", "m5"]);
    let cursor = latest["next_cursor"].as_str().unwrap();
    let (_, older) = app
        .get(&format!("{path}?limit=2&before={cursor}"), &c.admin.access)
        .await;
    assert_eq!(ids(&older), ["m2", "m3"]);
    let cursor = older["next_cursor"].as_str().unwrap();
    let (_, oldest) = app
        .get(&format!("{path}?limit=2&before={cursor}"), &c.admin.access)
        .await;
    assert_eq!(ids(&oldest), ["m1"]);
    assert!(oldest["next_cursor"].is_null());

    let first = oldest["items"][0]["id"].as_str().unwrap();
    let (_, newer) = app.get(&format!("{path}?limit=3&after={first}"), &c.admin.access).await;
    assert_eq!(ids(&newer), ["m2", "m3", "m4"]);
    let cursor = newer["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(&format!("{path}?limit=3&after={cursor}"), &c.admin.access)
        .await;
    assert_eq!(ids(&rest), ["m5"]);
    assert!(rest["next_cursor"].is_null());

    let (status, body) = app
        .get(&format!("{path}?before={first}&after={first}"), &c.admin.access)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (status, _) = app.get(&format!("{path}?limit=ten"), &c.admin.access).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn posting_is_for_members_validated_and_idempotent() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    let path = format!("/api/v1/chat/channels/{general}/messages");

    let (status, body) = app.post(&path, Some(&c.admin.access), json!({ "body": "hi" })).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    for who in [&c.guest, &c.outsider] {
        assert_eq!(
            app.post(&path, Some(&who.access), json!({ "body": "hi" })).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let long = "x".repeat(16_001);
    for bad in [
        json!({ "body": "  " }),
        json!({ "body": long }),
        json!({ "body": "a\u{0}b" }),
    ] {
        let (status, body) = app.post(&path, Some(&c.member.access), bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body["error"]["fields"]["body"].is_string(), "{body}");
    }
    let (status, _) = app
        .post(&path, Some(&c.member.access), json!({ "body": "x", "html": true }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.call(Method::POST, &path, Some(&c.member.access), None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Stored as sent; a retried POST with the same client_msg_id returns the original.
    let sent = json!({ "body": "<b>hi</b> ", "client_msg_id": "k-1" });
    let (status, first) = app.post(&path, Some(&c.member.access), sent.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["body"], "<b>hi</b> ");
    let (status, again) = app.post(&path, Some(&c.member.access), sent).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]));
    let (_, page) = app.get(&path, &c.member.access).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (status, _) = app
        .post(
            &path,
            Some(&c.member.access),
            json!({ "body": "x", "client_msg_id": "has space" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Deleted: the key stays used.
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("{path}/{id}"), &c.member.access).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = app
        .post(
            &path,
            Some(&c.member.access),
            json!({ "body": "again", "client_msg_id": "k-1" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "message_deleted"));
}

#[tokio::test]
async fn messages_have_threads_edits_deletes_reactions_and_pins() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.guest, &c.member).await;
    join(&app, &general, &c.admin, &c.admin).await;
    let path = format!("/api/v1/chat/channels/{general}/messages");

    let root = say(&app, &general, &c.member, "question?").await;
    let root_id = root["id"].as_str().unwrap();
    let (status, reply) = app
        .post(
            &path,
            Some(&c.guest.access),
            json!({ "body": "answer", "reply_to": root_id }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reply["reply_to"], root["id"]);
    // Replying to a reply stays in the same thread.
    let (_, nested) = app
        .post(
            &path,
            Some(&c.admin.access),
            json!({ "body": "+1", "reply_to": reply["id"] }),
        )
        .await;
    assert_eq!(nested["reply_to"], root["id"]);
    let (status, body) = app
        .post(&path, Some(&c.admin.access), json!({ "body": "x", "reply_to": "nope" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["reply_to"].is_string());
    let (_, thread) = app.get(&format!("{path}?thread={root_id}"), &c.member.access).await;
    assert_eq!(ids(&thread), ["answer", "+1"]);
    let (_, all) = app.get(&path, &c.member.access).await;
    assert_eq!(all["items"][0]["reply_count"], 2);

    // Edits: the author only.
    let reply_path = format!("{path}/{}", reply["id"].as_str().unwrap());
    let (status, _) = app
        .patch(&reply_path, &c.admin.access, json!({ "body": "hijack" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, edited) = app
        .patch(&reply_path, &c.guest.access, json!({ "body": "better answer" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited["body"], "better answer");
    assert!(edited["edited_at"].is_string());
    let (status, _) = app.patch(&reply_path, &c.guest.access, json!({ "body": "" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Reactions: idempotent, per user.
    let react = |who: &Session, emoji: &str, method: Method| {
        let p = format!("{path}/{root_id}/reactions/{emoji}");
        let token = who.access.clone();
        let app = &app;
        async move { app.call(method, &p, Some(&token), None).await.0 }
    };
    assert_eq!(react(&c.guest, "👍", Method::PUT).await, StatusCode::NO_CONTENT);
    assert_eq!(react(&c.guest, "👍", Method::PUT).await, StatusCode::NO_CONTENT);
    assert_eq!(react(&c.admin, "👍", Method::PUT).await, StatusCode::NO_CONTENT);
    assert_eq!(react(&c.admin, ":tada:", Method::PUT).await, StatusCode::NO_CONTENT);
    assert_eq!(react(&c.admin, ":tada:", Method::DELETE).await, StatusCode::NO_CONTENT);
    assert_eq!(
        react(&c.owner, "👍", Method::PUT).await,
        StatusCode::FORBIDDEN,
        "not a member"
    );
    assert_eq!(react(&c.outsider, "👍", Method::PUT).await, StatusCode::NOT_FOUND);
    assert_eq!(
        react(&c.admin, &"x".repeat(65), Method::PUT).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, page) = app.get(&path, &c.member.access).await;
    let reactions = &page["items"][0]["reactions"];
    assert_eq!(reactions.as_array().unwrap().len(), 1, "{reactions}");
    assert_eq!(
        (reactions[0]["emoji"].as_str(), reactions[0]["count"].as_u64()),
        (Some("👍"), Some(2))
    );

    // Pins.
    let pin = format!("{path}/{root_id}/pin");
    let (status, pinned) = app.call(Method::PUT, &pin, Some(&c.guest.access), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pinned["pinned_by"].as_str(), Some(c.guest.user_id.as_str()));
    let (_, pins) = app
        .get(&format!("/api/v1/chat/channels/{general}/pins"), &c.admin.access)
        .await;
    assert_eq!(ids(&pins), ["question?"]);
    let (status, unpinned) = app.delete(&pin, &c.admin.access).await;
    assert_eq!((status, unpinned["pinned_at"].is_null()), (StatusCode::OK, true));
    let (_, pins) = app
        .get(&format!("/api/v1/chat/channels/{general}/pins"), &c.admin.access)
        .await;
    assert!(pins["items"].as_array().unwrap().is_empty());

    // Deletes: the author, or a team admin; not other members.
    let nested_path = format!("{path}/{}", nested["id"].as_str().unwrap());
    assert_eq!(app.delete(&nested_path, &c.guest.access).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.delete(&nested_path, &c.admin.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&reply_path, &c.owner.access).await.0,
        StatusCode::NO_CONTENT,
        "team owner"
    );
    assert_eq!(app.delete(&reply_path, &c.guest.access).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.patch(&reply_path, &c.guest.access, json!({ "body": "x" })).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, all) = app.get(&path, &c.member.access).await;
    assert_eq!(ids(&all), ["question?"]);
    assert_eq!(all["items"][0]["reply_count"], 0);
}

#[tokio::test]
async fn unread_and_mention_counts_follow_read_markers() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.admin, &c.admin).await;
    let get = |who: &Session| {
        let p = format!("/api/v1/chat/channels/{general}");
        let token = who.access.clone();
        let app = &app;
        async move { app.get(&p, &token).await.1 }
    };
    let counts = |ch: &Value| {
        (
            ch["unread_count"].as_i64().unwrap(),
            ch["mention_count"].as_i64().unwrap(),
        )
    };

    let a = say(&app, &general, &c.member, "hello all").await;
    say(&app, &general, &c.member, "@admin can you look? cc @outsider @nobody").await;
    let last = say(&app, &general, &c.member, "thanks").await;
    assert_eq!(counts(&get(&c.admin).await), (3, 1));
    assert_eq!(counts(&get(&c.member).await), (0, 0), "own messages are read");

    let read = format!("/api/v1/chat/channels/{general}/read");
    let (status, state) = app
        .post(&read, Some(&c.admin.access), json!({ "message_id": a["id"] }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (state["unread_count"].as_i64(), state["mention_count"].as_i64()),
        (Some(2), Some(1))
    );
    let (_, state) = app
        .post(&read, Some(&c.admin.access), json!({ "message_id": last["id"] }))
        .await;
    assert_eq!(counts(&state), (0, 0));
    // The marker never moves back.
    let (_, state) = app
        .post(&read, Some(&c.admin.access), json!({ "message_id": a["id"] }))
        .await;
    assert_eq!(state["last_read_id"], last["id"]);
    say(&app, &general, &c.admin, "sure").await;
    assert_eq!(counts(&get(&c.member).await), (1, 0));
    let (_, state) = app.post(&read, Some(&c.member.access), json!({})).await;
    assert_eq!(counts(&state), (0, 0));
    let (status, _) = app
        .post(&read, Some(&c.member.access), json!({ "message_id": "nope" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.post(&read, Some(&c.owner.access), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not a member");

    // Only channel members are mentioned.
    let (_, page) = app
        .get(&format!("/api/v1/chat/channels/{general}/messages"), &c.admin.access)
        .await;
    assert_eq!(page["items"][1]["mentions"], json!([c.admin.user_id]));
}

#[tokio::test]
async fn two_clients_see_each_others_messages_edits_and_deletes_in_order() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.admin, &c.admin).await;
    let mut ws_member = events(&app, &c.member, "").await;
    let mut ws_admin = events(&app, &c.admin, "").await;
    let mut ws_outsider = events(&app, &c.outsider, "").await;

    let one = say(&app, &general, &c.member, "one").await;
    let two = say(&app, &general, &c.admin, "two").await;
    for ws in [&mut ws_member, &mut ws_admin] {
        let e1 = next_of(ws, "message.created").await;
        let e2 = next_of(ws, "message.created").await;
        assert_eq!(e1["data"]["message"]["id"], one["id"]);
        assert_eq!(e2["data"]["message"]["id"], two["id"]);
        assert_eq!(e2["data"]["channel_id"], general.as_str());
        assert!(e2["seq"].as_u64() > e1["seq"].as_u64());
    }
    let path = format!(
        "/api/v1/chat/channels/{general}/messages/{}",
        one["id"].as_str().unwrap()
    );
    app.patch(&path, &c.member.access, json!({ "body": "one!" })).await;
    app.call(
        Method::PUT,
        &format!("{path}/reactions/ok"),
        Some(&c.admin.access),
        None,
    )
    .await;
    app.delete(&path, &c.member.access).await;
    for ws in [&mut ws_member, &mut ws_admin] {
        let edit = next_of(ws, "message.updated").await;
        assert_eq!(edit["data"]["message"]["body"], "one!");
        let reaction = next_json(ws).await;
        assert_eq!(
            (reaction["type"].as_str(), reaction["data"]["emoji"].as_str()),
            (Some("reaction.added"), Some("ok"))
        );
        let gone = next_json(ws).await;
        assert_eq!(gone["type"], "message.deleted");
        assert_eq!(gone["data"]["message_id"], one["id"]);
    }

    // Typing reaches the others, not the typist.
    let typing = format!("/api/v1/chat/channels/{general}/typing");
    let (status, _) = app.call(Method::PUT, &typing, Some(&c.admin.access), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let t = next_of(&mut ws_member, "typing").await;
    assert_eq!(t["data"]["user_id"].as_str(), Some(c.admin.user_id.as_str()));
    assert!(t["data"]["expires_at"].is_string());
    // Read markers reach the reader's other clients.
    app.post(
        &format!("/api/v1/chat/channels/{general}/read"),
        Some(&c.admin.access),
        json!({}),
    )
    .await;
    let r = next_json(&mut ws_admin).await;
    assert_eq!(
        (r["type"].as_str(), r["data"]["unread_count"].as_i64()),
        (Some("read.updated"), Some(0))
    );

    // Outsiders got nothing about the channel: the next thing they see is their own test event.
    app.events
        .publish([c.outsider.user_id.as_str()], "test.marker", &json!({}));
    assert_eq!(next_json(&mut ws_outsider).await["type"], "test.marker");
}

#[tokio::test]
async fn resume_after_a_disconnect_delivers_missed_messages_once() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let dm = dm(&app, &c.member, &c.admin).await;
    let url = format!("ws://{}/ws/events?access_token={}", app.addr, c.admin.access);
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let epoch = next_json(&mut ws).await["epoch"].as_str().unwrap().to_owned();
    say(&app, &dm, &c.member, "before").await;
    let seen = next_of(&mut ws, "message.created").await;
    let last_seq = seen["seq"].as_u64().unwrap();
    ws.close(None).await.unwrap();
    drop(ws);

    say(&app, &dm, &c.member, "missed 1").await;
    say(&app, &dm, &c.member, "missed 2").await;
    let mut ws = events(&app, &c.admin, &format!("&last_seq={last_seq}&epoch={epoch}")).await;
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    while got.len() < 2 {
        let e = next_json(&mut ws).await;
        seqs.push(e["seq"].as_u64().unwrap());
        if e["type"] == "message.created" {
            got.push(e["data"]["message"]["body"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got, ["missed 1", "missed 2"]);
    let expected: Vec<u64> = (last_seq + 1..=last_seq + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "consecutive, no repeats");
    say(&app, &dm, &c.member, "live").await;
    let live = next_of(&mut ws, "message.created").await;
    assert_eq!(live["data"]["message"]["body"], "live");
    assert!(live["seq"].as_u64().unwrap() > *seqs.last().unwrap());
}

#[tokio::test]
async fn channel_socket_streams_one_channel_to_those_who_may_see_it() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let secret = channel(&app, &c.member, &c.team, "secret", "private").await;
    join(&app, &secret, &c.guest, &c.member).await;
    let url = |who: &Session| format!("ws://{}/ws/chat/{secret}?access_token={}", app.addr, who.access);
    for who in [&c.admin, &c.outsider] {
        let err = tokio_tungstenite::connect_async(url(who)).await.unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    }
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat/{secret}", app.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    let mut ws = tokio_tungstenite::connect_async(url(&c.guest)).await.unwrap().0;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    say(&app, &secret, &c.member, "for the room").await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "message.created");
    assert_eq!(e["data"]["message"]["body"], "for the room");

    // Removal ends the stream.
    app.delete(
        &format!("/api/v1/chat/channels/{secret}/members/{}", c.guest.user_id),
        &c.member.access,
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "channel.member_removed");
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::from(4004)),
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test]
async fn presence_follows_event_streams() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let mut watcher = events(&app, &c.member, "").await;
    let set_presence = |status: &str| {
        let body = json!({ "status": status });
        app.call(Method::PUT, "/api/v1/chat/presence", Some(&c.admin.access), Some(body))
    };
    let (status, body) = set_presence("idle").await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_connected"));

    let mut ws = events(&app, &c.admin, "").await;
    let on = next_of(&mut watcher, "presence.changed").await;
    assert_eq!(
        (on["data"]["user_id"].as_str(), on["data"]["status"].as_str()),
        (Some(c.admin.user_id.as_str()), Some("online"))
    );
    let (status, _) = set_presence("idle").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        next_of(&mut watcher, "presence.changed").await["data"]["status"],
        "idle"
    );
    let (_, all) = app.get("/api/v1/chat/presence", &c.member.access).await;
    let of = |id: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|p| p["user_id"] == id)
            .map(|p| p["status"].clone())
    };
    assert_eq!(of(&c.admin.user_id), Some(json!("idle")));
    assert_eq!(of(&c.member.user_id), Some(json!("online")));
    assert_eq!(of(&c.owner.user_id), Some(json!("offline")));
    assert_eq!(of(&c.outsider.user_id), None, "no shared team");

    ws.close(None).await.unwrap();
    assert_eq!(
        next_of(&mut watcher, "presence.changed").await["data"]["status"],
        "offline"
    );
    let (status, _) = set_presence("away").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn message_rate_is_limited_per_user() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    let path = format!("/api/v1/chat/channels/{general}/messages");
    let mut limited = None;
    for i in 0..40 {
        let (status, body) = app
            .post(&path, Some(&c.member.access), json!({ "body": format!("{i}") }))
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, error_code(&body).to_owned()));
            break;
        }
        assert_eq!(status, StatusCode::CREATED);
    }
    let (i, code) = limited.expect("limited");
    assert!(i >= 30, "burst of 30 allowed, limited at {i}");
    assert_eq!(code, "rate_limited");
}

#[tokio::test]
async fn leaving_the_team_ends_access_to_its_channels() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let secret = channel(&app, &c.member, &c.team, "secret", "private").await;
    join(&app, &secret, &c.admin, &c.member).await;
    let mut ws = events(&app, &c.admin, "").await;
    let (status, _) = app
        .delete(
            &format!("/api/v1/teams/{}/members/{}", c.team, c.admin.user_id),
            &c.owner.access,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let m = say(&app, &secret, &c.member, "@admin still there?").await;
    assert_eq!(m["mentions"], json!([]));
    app.events
        .publish([c.admin.user_id.as_str()], "test.marker", &json!({}));
    assert_eq!(
        next_json(&mut ws).await["type"],
        "test.marker",
        "no channel events after leaving"
    );
    assert_eq!(
        app.get(&format!("/api/v1/chat/channels/{secret}"), &c.admin.access)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, mine) = app.get("/api/v1/chat/channels", &c.admin.access).await;
    assert!(mine["items"].as_array().unwrap().is_empty());
    let (_, list) = app.get("/api/v1/notifications", &c.admin.access).await;
    assert!(list["items"].as_array().unwrap().is_empty());
}

/// The real binary, run on `dir`/`database_url` with `env` on top, and its log lines.
pub(crate) struct Binary {
    child: std::process::Child,
    pub(crate) addr: String,
    pub(crate) log: std::sync::mpsc::Receiver<String>,
    client: reqwest::Client,
}

impl Binary {
    pub(crate) fn start(dir: &std::path::Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_convene"))
            .env_clear()
            .env("CONVENE_DATA_DIR", dir)
            .env("CONVENE_DATABASE_URL", database_url)
            .env("CONVENE_HTTP_ADDR", "127.0.0.1:0")
            .env("CONVENE_JWT_SECRET", crate::helpers::TEST_SECRET)
            .env("CONVENE_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("server exited before listening").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "listening" {
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            addr,
            log,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.addr))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    /// Registers `username` and returns (user id, access token).
    pub(crate) async fn register(&self, username: &str) -> (String, String) {
        let (status, reg) = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                json!({ "email": format!("{username}@example.com"), "username": username,
                        "password": "correct horse battery", "display_name": username }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        (
            reg["user"]["id"].as_str().unwrap().to_owned(),
            reg["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// SIGKILL.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crate::helpers::fresh_database(dir.path()).await;
    let server = Binary::start(dir.path(), &database_url, &[]);
    let (_, token) = server.register("killer").await;
    let (_, team) = server
        .call(Method::POST, "/api/v1/teams", Some(&token), json!({ "name": "T" }))
        .await;
    let (_, ch) = server
        .call(
            Method::POST,
            "/api/v1/chat/channels",
            Some(&token),
            json!({ "kind": "public", "team_id": team["id"], "name": "general" }),
        )
        .await;
    let path = format!("/api/v1/chat/channels/{}/messages", ch["id"].as_str().unwrap());

    // Post continuously; kill -9 the server in the middle of it.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let poster = {
        let (client, url, token) = (
            server.client.clone(),
            format!("http://{}{path}", server.addr),
            token.clone(),
        );
        tokio::spawn(async move {
            for i in 0..25 {
                let res = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "body": format!("m{i}"), "client_msg_id": format!("c{i}") }))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let m: Value = r.json().await.unwrap();
                        let _ = acked_tx.send(m["id"].as_str().unwrap().to_owned());
                    }
                    _ => return,
                }
            }
        })
    };
    let mut acked = Vec::new();
    while acked.len() < 10 {
        acked.push(acked_rx.recv().await.expect("messages acknowledged"));
    }
    server.kill();
    poster.await.unwrap();
    while let Ok(id) = acked_rx.try_recv() {
        acked.push(id);
    }

    let server = Binary::start(dir.path(), &database_url, &[]);
    let (status, page) = server
        .call(Method::GET, &format!("{path}?limit=200"), Some(&token), Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    let stored: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in &acked {
        assert!(stored.contains(&id.as_str()), "acknowledged {id} lost");
    }
    server.kill();
}

#[tokio::test]
async fn messages_carry_attachments_of_the_channels_team() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let team = app.team(&alice, "Core").await;
    let other_team = app.team(&bob, "Elsewhere").await;
    app.add(&alice, &team, &bob, "member").await;
    let general = channel(&app, &alice, &team, "general", "public").await;
    let (status, file) = crate::files::upload(
        &app,
        &alice.access,
        &format!("team_id={team}"),
        "plan.txt",
        b"the plan".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let file_id = file["id"].as_str().unwrap();
    let messages = format!("/api/v1/chat/channels/{general}/messages");

    let (status, posted) = app
        .post(
            &messages,
            Some(&alice.access),
            json!({ "body": "see attached", "attachments": [file_id] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    assert_eq!(posted["attachments"][0]["file_id"], file_id);
    assert_eq!(posted["attachments"][0]["name"], "plan.txt");
    assert_eq!(posted["attachments"][0]["size"], 8);
    let (_, page) = app.get(&messages, &bob.access).await;
    assert_eq!(page["items"][0]["attachments"][0]["file_id"], file_id, "{page}");
    let res = app
        .client
        .get(app.url(&format!("/api/v1/files/{file_id}/download")))
        .bearer_auth(&bob.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.text().await.unwrap(),
        "the plan",
        "members download what is attached"
    );

    // Another team's file, an unknown id and too many files are refused, and nothing is posted.
    let (_, foreign) = crate::files::upload(
        &app,
        &bob.access,
        &format!("team_id={other_team}"),
        "x.txt",
        b"x".to_vec(),
    )
    .await;
    for attachments in [
        json!([foreign["id"]]),
        json!(["no-such-file"]),
        json!(vec![file_id; 11]),
    ] {
        let (status, body) = app
            .post(
                &messages,
                Some(&alice.access),
                json!({ "body": "nope", "attachments": attachments }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["fields"]["attachments"].is_string());
    }
    let (_, page) = app.get(&messages, &bob.access).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}
