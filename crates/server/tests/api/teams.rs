use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{cast, error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn create_list_get_update_delete() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, team) = app
        .post(
            "/api/v1/teams",
            Some(&alice.access),
            json!({ "name": " Design ", "description": "UI" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(team["name"], "Design");
    assert_eq!(team["role"], "owner");
    assert_eq!(team["member_count"], 1);
    let id = team["id"].as_str().unwrap();

    let (status, list) = app.get("/api/v1/teams", &alice.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["next_cursor"].is_null());

    let (status, t) = app
        .patch(
            &format!("/api/v1/teams/{id}"),
            &alice.access,
            json!({ "name": "Design Ops" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (t["name"].as_str(), t["description"].as_str()),
        (Some("Design Ops"), Some("UI"))
    );
    let (_, t) = app
        .patch(
            &format!("/api/v1/teams/{id}"),
            &alice.access,
            json!({ "description": null }),
        )
        .await;
    assert!(t["description"].is_null());

    let (status, members) = app.get(&format!("/api/v1/teams/{id}/members"), &alice.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(members["items"][0]["username"], "alice");
    assert_eq!(members["items"][0]["role"], "owner");

    assert_eq!(
        app.delete(&format!("/api/v1/teams/{id}"), &alice.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/teams/{id}"), &alice.access).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, res) = app
        .post("/api/v1/teams", Some(&alice.access), json!({ "name": "" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res["error"]["fields"]["name"].is_string());
}

#[tokio::test]
async fn keyset_pagination_of_teams() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for n in ["A", "B", "C"] {
        app.team(&alice, n).await;
    }
    let (_, first) = app.get("/api/v1/teams?limit=2", &alice.access).await;
    let names: Vec<_> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("A"), json!("B")]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/api/v1/teams?limit=2&after={cursor}"), &alice.access)
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["name"], "C");
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn outsiders_see_nothing() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let t = &c.team;
    let o = &c.outsider.access;
    for (status, body) in [
        app.get(&format!("/api/v1/teams/{t}"), o).await,
        app.get(&format!("/api/v1/teams/{t}/members"), o).await,
        app.patch(&format!("/api/v1/teams/{t}"), o, json!({ "name": "x" }))
            .await,
        app.delete(&format!("/api/v1/teams/{t}"), o).await,
        app.post(
            &format!("/api/v1/teams/{t}/invites"),
            Some(o),
            json!({ "role": "member" }),
        )
        .await,
        app.post(
            &format!("/api/v1/teams/{t}/members"),
            Some(o),
            json!({ "user_id": c.outsider.user_id, "role": "member" }),
        )
        .await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(error_code(&body), "not_found");
    }
    let (_, list) = app.get("/api/v1/teams", o).await;
    assert!(list["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn guests_and_members_read_but_do_not_manage() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let t = &c.team;
    for who in [&c.guest, &c.member] {
        let a = &who.access;
        let (status, team) = app.get(&format!("/api/v1/teams/{t}"), a).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(team["member_count"], 4);
        assert_eq!(
            app.get(&format!("/api/v1/teams/{t}/members"), a).await.0,
            StatusCode::OK
        );
        for (status, body) in [
            app.patch(&format!("/api/v1/teams/{t}"), a, json!({ "name": "x" }))
                .await,
            app.delete(&format!("/api/v1/teams/{t}"), a).await,
            app.post(
                &format!("/api/v1/teams/{t}/invites"),
                Some(a),
                json!({ "role": "guest" }),
            )
            .await,
            app.get(&format!("/api/v1/teams/{t}/invites"), a).await,
            app.post(
                &format!("/api/v1/teams/{t}/members"),
                Some(a),
                json!({ "user_id": c.outsider.user_id, "role": "guest" }),
            )
            .await,
            app.patch(
                &format!("/api/v1/teams/{t}/members/{}", c.guest.user_id),
                a,
                json!({ "role": "member" }),
            )
            .await,
            app.delete(&format!("/api/v1/teams/{t}/members/{}", c.admin.user_id), a)
                .await,
        ] {
            assert_eq!(status, StatusCode::FORBIDDEN, "{} got {body}", who.username);
            assert_eq!(error_code(&body), "forbidden");
        }
    }
}

#[tokio::test]
async fn admins_manage_members_but_not_owners() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let t = &c.team;
    let a = &c.admin.access;
    assert_eq!(
        app.patch(&format!("/api/v1/teams/{t}"), a, json!({ "name": "Renamed" }))
            .await
            .0,
        StatusCode::OK
    );
    let (status, m) = app
        .patch(
            &format!("/api/v1/teams/{t}/members/{}", c.guest.user_id),
            a,
            json!({ "role": "member" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["role"], "member");
    let (status, m) = app
        .post(
            &format!("/api/v1/teams/{t}/members"),
            Some(a),
            json!({ "login": "outsider@example.com", "role": "guest" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let (status, body) = app
        .post(
            &format!("/api/v1/teams/{t}/members"),
            Some(a),
            json!({ "login": "outsider", "role": "guest" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "already_member");
    let (status, _) = app
        .post(
            &format!("/api/v1/teams/{t}/members"),
            Some(a),
            json!({ "login": "ghost", "role": "guest" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.delete(&format!("/api/v1/teams/{t}/members/{}", c.outsider.user_id), a)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    for (status, body) in [
        app.delete(&format!("/api/v1/teams/{t}"), a).await,
        app.patch(
            &format!("/api/v1/teams/{t}/members/{}", c.member.user_id),
            a,
            json!({ "role": "owner" }),
        )
        .await,
        app.patch(
            &format!("/api/v1/teams/{t}/members/{}", c.owner.user_id),
            a,
            json!({ "role": "member" }),
        )
        .await,
        app.delete(&format!("/api/v1/teams/{t}/members/{}", c.owner.user_id), a)
            .await,
        app.post(
            &format!("/api/v1/teams/{t}/invites"),
            Some(a),
            json!({ "role": "owner" }),
        )
        .await,
    ] {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    assert_eq!(
        app.get(&format!("/api/v1/teams/{t}"), &c.owner.access).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn owners_grant_ownership_and_the_last_owner_stays() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let t = &c.team;
    let o = &c.owner.access;
    let me = &c.owner.user_id;
    let (status, body) = app.delete(&format!("/api/v1/teams/{t}/members/{me}"), o).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "last_owner");
    let (status, body) = app
        .patch(
            &format!("/api/v1/teams/{t}/members/{me}"),
            o,
            json!({ "role": "admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "last_owner");

    let (status, m) = app
        .patch(
            &format!("/api/v1/teams/{t}/members/{}", c.admin.user_id),
            o,
            json!({ "role": "owner" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["role"], "owner");
    // With a second owner, the first may step down and leave.
    assert_eq!(
        app.patch(
            &format!("/api/v1/teams/{t}/members/{me}"),
            o,
            json!({ "role": "member" })
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&format!("/api/v1/teams/{t}/members/{me}"), o).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get(&format!("/api/v1/teams/{t}"), o).await.0, StatusCode::NOT_FOUND);

    // Members leave on their own; the remaining owner deletes the team.
    let g = &c.guest;
    assert_eq!(
        app.delete(&format!("/api/v1/teams/{t}/members/{}", g.user_id), &g.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&format!("/api/v1/teams/{t}"), &c.admin.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/teams/{t}"), &c.member.access).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invites_are_single_use_and_bound() {
    let app = spawn_app().await;
    let c = cast(&app).await;
    let t = &c.team;
    let newcomer = app.register("newcomer").await;
    let late = app.register("late").await;

    let (status, invite) = app
        .post(
            &format!("/api/v1/teams/{t}/invites"),
            Some(&c.admin.access),
            json!({ "role": "member" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    let token = invite["token"].as_str().unwrap();
    assert!(
        invite["accept_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/invites/{token}/accept"))
    );
    let (_, pending) = app.get(&format!("/api/v1/teams/{t}/invites"), &c.admin.access).await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert!(pending[0].get("token").is_none(), "tokens are shown once");

    let accept = format!("/api/v1/invites/{token}/accept");
    let (status, team) = app.post(&accept, Some(&newcomer.access), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{team}");
    assert_eq!(team["role"], "member");
    let (status, body) = app.post(&accept, Some(&late.access), json!({})).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(error_code(&body), "gone");

    // Bound to an address.
    let (_, bound) = app
        .post(
            &format!("/api/v1/teams/{t}/invites"),
            Some(&c.owner.access),
            json!({ "role": "guest", "email": "Late@Example.com" }),
        )
        .await;
    let bound_accept = format!("/api/v1/invites/{}/accept", bound["token"].as_str().unwrap());
    assert_eq!(
        app.post(&bound_accept, Some(&c.outsider.access), json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, team) = app.post(&bound_accept, Some(&late.access), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(team["role"], "guest");

    // Already a member, revoked, unknown, unauthenticated.
    let (_, again) = app
        .post(
            &format!("/api/v1/teams/{t}/invites"),
            Some(&c.owner.access),
            json!({ "role": "member" }),
        )
        .await;
    let again_accept = format!("/api/v1/invites/{}/accept", again["token"].as_str().unwrap());
    let (status, body) = app.post(&again_accept, Some(&c.member.access), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "already_member");
    let id = again["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/api/v1/teams/{t}/invites/{id}"), &c.admin.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post(&again_accept, Some(&c.outsider.access), json!({})).await.0,
        StatusCode::GONE
    );
    assert_eq!(
        app.delete(&format!("/api/v1/teams/{t}/invites/{id}"), &c.admin.access)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(
            "/api/v1/invites/not-a-token/accept",
            Some(&c.outsider.access),
            json!({})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.post(&accept, None, json!({})).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .post(
            &format!("/api/v1/teams/{t}/invites"),
            Some(&c.owner.access),
            json!({ "role": "boss" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn expired_invites_are_gone() {
    let app = spawn_app_with(|c| c.invite_ttl = std::time::Duration::ZERO).await;
    let owner = app.register("owner").await;
    let other = app.register("other").await;
    let team = app.team(&owner, "T").await;
    let (_, invite) = app
        .post(
            &format!("/api/v1/teams/{team}/invites"),
            Some(&owner.access),
            json!({ "role": "member" }),
        )
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/invites/{}/accept", invite["token"].as_str().unwrap()),
            Some(&other.access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::GONE);
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
}
