use convene_auth::{JoinTokens, PublishSource, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TEST_SECRET, cast, error_code, spawn_app};

#[tokio::test]
async fn rooms_lifecycle_and_join_tokens() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let (team, owner, member, guest, outsider) = (c.team, c.owner, c.member, c.guest, c.outsider);

    let (status, room) = app
        .post(
            "/api/v1/rooms",
            Some(&member.access),
            json!({ "name": "Standup", "team_id": team, "max_participants": 8 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["empty_timeout_s"], 300);
    let id = room["id"].as_str().unwrap();

    let (status, list) = app.get(&format!("/api/v1/rooms?team_id={team}"), &owner.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = app.get("/api/v1/rooms", &guest.access).await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "guests see only rooms they are invited to"
    );
    let (_, list) = app.get("/api/v1/rooms", &outsider.access).await;
    assert!(list["items"].as_array().unwrap().is_empty());

    let (status, got) = app.get(&format!("/api/v1/rooms/{id}"), &owner.access).await;
    assert_eq!(status, StatusCode::OK);
    assert!(got["live"]["participants"].as_array().is_some());

    // Joining: the creator is a host; the token names the room and the user.
    let (status, join) = app
        .post(&format!("/api/v1/rooms/{id}/join"), Some(&member.access), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{join}");
    assert!(join["ws_url"].as_str().unwrap().starts_with("ws://127.0.0.1:"));
    assert!(join["ws_url"].as_str().unwrap().ends_with("/ws/signal"));
    let tokens = JoinTokens::new(&Secret::new(TEST_SECRET));
    let now = chrono_now();
    let claims = tokens.verify(join["token"].as_str().unwrap(), now).unwrap();
    assert_eq!(
        (claims.room.as_str(), claims.sub.as_str(), claims.name.as_str()),
        (id, member.user_id.as_str(), "member")
    );
    assert!(claims.grants.admin && claims.grants.may_publish(PublishSource::Screen));
    assert_eq!(claims.max_participants, Some(8));
    assert!(claims.exp - now <= 600);

    // The owner is a host too (team admin); a plain member of someone else's room is not.
    let (_, join) = app
        .post(&format!("/api/v1/rooms/{id}/join"), Some(&owner.access), json!({}))
        .await;
    assert!(
        tokens
            .verify(join["token"].as_str().unwrap(), now)
            .unwrap()
            .grants
            .admin
    );

    // Guests: 404 until invited by a host.
    assert_eq!(
        app.post(&format!("/api/v1/rooms/{id}/join"), Some(&guest.access), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("/api/v1/rooms/{id}/join"), Some(&outsider.access), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/rooms/{id}/guests"),
            Some(&member.access),
            json!({ "user_id": outsider.user_id }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "only team guests can be invited: {body}"
    );
    let (status, _) = app
        .post(
            &format!("/api/v1/rooms/{id}/guests"),
            Some(&member.access),
            json!({ "user_id": guest.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, join) = app
        .post(&format!("/api/v1/rooms/{id}/join"), Some(&guest.access), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !tokens
            .verify(join["token"].as_str().unwrap(), now)
            .unwrap()
            .grants
            .admin
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/rooms/{id}/guests"),
            Some(&guest.access),
            json!({ "user_id": guest.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Deleting: hosts only.
    let path = format!("/api/v1/rooms/{id}");
    let (status, body) = app.delete(&path, &guest.access).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    app.assert_deleted_only_by(&path, &[(&outsider, StatusCode::NOT_FOUND)], &owner, &member)
        .await;
}

#[tokio::test]
async fn room_creation_rules() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let guest = app.register("guest").await;
    let outsider = app.register("outsider").await;
    let team = app.team(&owner, "T").await;
    app.add(&owner, &team, &guest, "guest").await;
    let body = json!({ "name": "R", "team_id": team });
    assert_eq!(
        app.post("/api/v1/rooms", Some(&guest.access), body.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post("/api/v1/rooms", Some(&outsider.access), body).await.0,
        StatusCode::NOT_FOUND
    );
    for (bad, field) in [
        (json!({ "name": "", "team_id": team }), "name"),
        (
            json!({ "name": "R", "team_id": team, "max_participants": 0 }),
            "max_participants",
        ),
        (
            json!({ "name": "R", "team_id": team, "empty_timeout_s": -1 }),
            "empty_timeout_s",
        ),
    ] {
        let (status, res) = app.post("/api/v1/rooms", Some(&owner.access), bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res["error"]["fields"][field].is_string(), "{res}");
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn meeting_chat_belongs_to_those_who_joined() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let team = app.team(&owner, "T").await;
    app.add(&owner, &team, &member, "member").await;
    let (_, room) = app
        .post(
            "/api/v1/rooms",
            Some(&owner.access),
            json!({ "name": "Standup", "team_id": team }),
        )
        .await;
    let id = room["id"].as_str().unwrap();

    let (_, join) = app
        .post(&format!("/api/v1/rooms/{id}/join"), Some(&owner.access), json!({}))
        .await;
    let channel = join["chat_channel_id"].as_str().unwrap().to_owned();
    let messages = format!("/api/v1/chat/channels/{channel}/messages");
    let (status, posted) = app
        .post(&messages, Some(&owner.access), json!({ "body": "agenda: demo" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    assert_eq!(
        app.get(&messages, &member.access).await.0,
        StatusCode::NOT_FOUND,
        "not in the meeting yet"
    );

    let (_, join) = app
        .post(&format!("/api/v1/rooms/{id}/join"), Some(&member.access), json!({}))
        .await;
    assert_eq!(
        join["chat_channel_id"].as_str(),
        Some(channel.as_str()),
        "one chat per room"
    );
    let (status, page) = app.get(&messages, &member.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["body"], "agenda: demo");

    assert_eq!(
        app.delete(&format!("/api/v1/rooms/{id}"), &owner.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&messages, &owner.access).await.0,
        StatusCode::NOT_FOUND,
        "the chat goes with the room"
    );
}

#[tokio::test]
async fn join_hands_out_the_embedded_relay() {
    let app = spawn_app().await;
    let owner = app.register("owner").await;
    let team = app.team(&owner, "T").await;
    let (_, room) = app
        .post(
            "/api/v1/rooms",
            Some(&owner.access),
            json!({ "name": "R", "team_id": team }),
        )
        .await;
    let (_, join) = app
        .post(
            &format!("/api/v1/rooms/{}/join", room["id"].as_str().unwrap()),
            Some(&owner.access),
            json!({}),
        )
        .await;
    let servers = join["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{join}");
    let stun = servers[0]["urls"][0].as_str().unwrap();
    assert!(stun.starts_with("stun:127.0.0.1:"), "{stun}");
    let turn_urls: Vec<&str> = servers[1]["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        turn_urls[0].starts_with("turn:127.0.0.1:") && turn_urls[0].ends_with("?transport=udp"),
        "{turn_urls:?}"
    );
    assert!(turn_urls[1].ends_with("?transport=tcp"), "{turn_urls:?}");
    let username = servers[1]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, owner.user_id);
    assert!(expiry.parse::<i64>().unwrap() > chrono_now());
    assert_eq!(
        servers[1]["credential"].as_str().unwrap(),
        convene_auth::turn_password(&Secret::new(crate::helpers::TEST_TURN_SECRET), username)
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("convene_turn_allocations 0"), "{metrics}");
}
