use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::chat::{Binary, channel, dm, events, join, next_of, say};
use crate::helpers::{cast, error_code, spawn_app};

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

    let dm = dm(&app, &c.member, &c.admin).await;
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

async fn receive(inbox: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), inbox.recv())
        .await
        .expect("a digest arrives")
        .unwrap()
}

/// An SMTP server on 127.0.0.1 that hands every message it accepts to the test.
async fn smtp_sink() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(buf) = data.as_mut() {
                        if line == "." {
                            let _ = tx.send(data.take().unwrap());
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            buf.push_str(line.strip_prefix('.').unwrap_or(&line));
                            buf.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 end with .\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn offline_users_get_mentions_and_dms_in_email_digests() {
    let (smtp, mut inbox) = smtp_sink().await;
    let app = crate::helpers::spawn_app_with(|c| {
        c.smtp_url = Some(convene_auth::Secret::new(format!("smtp://{smtp}")));
        c.smtp_from = "Convene <convene@example.com>".to_owned();
        c.email_digest_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let c = cast(&app).await;
    let general = channel(&app, &c.member, &c.team, "general", "public").await;
    join(&app, &general, &c.admin, &c.admin).await;

    // Offline: the mention is mailed.
    say(&app, &general, &c.member, "@admin offline ping").await;
    let mail = receive(&mut inbox).await;
    assert!(mail.contains("To: admin <admin@example.com>"), "{mail}");
    assert!(mail.contains("From: Convene <convene@example.com>"), "{mail}");
    assert!(mail.contains("Subject: 1 new notification on Convene"), "{mail}");
    assert!(mail.contains("member mentioned you in #general") && mail.contains("@admin offline ping"));

    // Online: nothing is mailed; what is read meanwhile never is; the rest goes out in one
    // digest once the user is offline.
    let mut watcher = events(&app, &c.member, "").await;
    let mut ws = events(&app, &c.admin, "").await;
    say(&app, &general, &c.member, "@admin first online").await;
    say(&app, &general, &c.member, "@admin second online").await;
    let dm = dm(&app, &c.member, &c.admin).await;
    say(&app, &dm, &c.member, "just between us").await;
    let (_, unread) = app.get("/api/v1/notifications?unread=true", &c.admin.access).await;
    let first = unread["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["message"] == "@admin first online")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(
        &format!("/api/v1/notifications/{first}"),
        &c.admin.access,
        json!({ "is_read": true }),
    )
    .await;
    ws.close(None).await.unwrap();
    loop {
        let e = next_of(&mut watcher, "presence.changed").await;
        if e["data"]["user_id"] == c.admin.user_id.as_str() && e["data"]["status"] == "offline" {
            break;
        }
    }
    let mail = receive(&mut inbox).await;
    assert!(mail.contains("Subject: 2 new notifications on Convene"), "{mail}");
    assert!(mail.contains("@admin second online") && mail.contains("member sent you a direct message"));
    assert!(
        !mail.contains("first online") && !mail.contains("offline ping"),
        "{mail}"
    );
}

#[tokio::test]
async fn without_smtp_digests_are_logged_without_addresses_or_text() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = crate::helpers::fresh_database(dir.path()).await;
    let server = Binary::start(dir.path(), &database_url, &[("CONVENE_EMAIL_DIGEST_INTERVAL", "1")]);
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, team) = server
        .call(Method::POST, "/api/v1/teams", Some(&alice), json!({ "name": "T" }))
        .await;
    let team = team["id"].as_str().unwrap();
    server
        .call(
            Method::POST,
            &format!("/api/v1/teams/{team}/members"),
            Some(&alice),
            json!({ "user_id": bob_id, "role": "member" }),
        )
        .await;
    let (_, ch) = server
        .call(
            Method::POST,
            "/api/v1/chat/channels",
            Some(&alice),
            json!({ "kind": "public", "team_id": team, "name": "general" }),
        )
        .await;
    let ch = ch["id"].as_str().unwrap();
    server
        .call(
            Method::POST,
            &format!("/api/v1/chat/channels/{ch}/members"),
            Some(&bob),
            json!({ "user_id": bob_id }),
        )
        .await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/v1/chat/channels/{ch}/messages"),
            Some(&alice),
            json!({ "body": "@bob confidential-ping" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (server, lines) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        loop {
            let line = server
                .log
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("digest logged");
            let done = line.contains("e-mail digest");
            lines.push(line);
            if done {
                return (server, lines);
            }
        }
    })
    .await
    .unwrap();
    let digest: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(digest["fields"]["user_id"], bob_id.as_str());
    assert_eq!(digest["fields"]["count"], 1);
    for line in &lines {
        assert!(
            !line.contains("confidential") && !line.contains("@example.com") && !line.contains("correct horse"),
            "{line}"
        );
    }
    server.kill();
}

#[tokio::test]
async fn reminders_reach_offline_users_by_email() {
    let (smtp, mut inbox) = smtp_sink().await;
    let app = crate::helpers::spawn_app_with(|c| {
        c.smtp_url = Some(convene_auth::Secret::new(format!("smtp://{smtp}")));
        c.email_digest_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let alice = app.register("alice").await;
    let team = app.team(&alice, "T").await;
    // A one-minute reminder for an event a minute and two seconds away: due in two seconds.
    let starts = chrono::Utc::now() + chrono::Duration::seconds(62);
    let (status, body) = app
        .post(
            "/api/v1/events",
            Some(&alice.access),
            json!({
                "title": "Quarterly review", "team_id": team, "reminders": [1],
                "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::Duration::minutes(30)).to_rfc3339()
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mail = receive(&mut inbox).await;
    assert!(mail.contains("To: alice <alice@example.com>"), "{mail}");
    assert!(mail.contains("Quarterly review"), "{mail}");
}
