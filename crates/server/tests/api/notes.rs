use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{core_team, error_code, spawn_app};

#[tokio::test]
async fn notes_with_history_and_roles() {
    let app = spawn_app().await;
    let (team, [alice, bob, guest, eve]) = core_team(&app).await;

    let (status, n) = app
        .post(
            "/api/v1/notes",
            Some(&bob.access),
            json!({ "team_id": team, "project_id": "p1", "title": " Plan ", "body": "# v1" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{n}");
    assert_eq!((n["title"].as_str(), n["version"].as_i64()), (Some("Plan"), Some(1)));
    let id = n["id"].as_str().unwrap();
    let path = format!("/api/v1/notes/{id}");

    let (status, body) = app
        .post(
            "/api/v1/notes",
            Some(&guest.access),
            json!({ "team_id": team, "title": "x" }),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = app
        .post(
            "/api/v1/notes",
            Some(&eve.access),
            json!({ "team_id": team, "title": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            "/api/v1/notes",
            Some(&bob.access),
            json!({ "team_id": team, "title": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post(
            "/api/v1/notes",
            Some(&bob.access),
            json!({ "team_id": team, "title": "t", "colour": "red" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    for v in 2..=4 {
        let (status, n) = app
            .patch(
                &path,
                &alice.access,
                json!({ "body": format!("# v{v}"), "base_version": v - 1 }),
            )
            .await;
        assert_eq!((status, n["version"].as_i64()), (StatusCode::OK, Some(v)), "{n}");
    }
    // An edit based on an old version is refused rather than lost.
    let (status, body) = app
        .patch(&path, &bob.access, json!({ "body": "stale", "base_version": 2 }))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "version_conflict"));
    let (status, _) = app.patch(&path, &guest.access, json!({ "body": "no" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, versions) = app.get(&format!("{path}/versions"), &guest.access).await;
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(
        (versions[0]["version"].as_i64(), versions[0]["body"].as_str()),
        (Some(3), Some("# v3"))
    );
    assert_eq!(
        (versions[2]["version"].as_i64(), versions[2]["body"].as_str()),
        (Some(1), Some("# v1"))
    );
    assert_eq!(versions[2]["edited_by"], bob.user_id.as_str());
    let (status, _) = app.get(&format!("{path}/versions"), &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, list) = app
        .get(&format!("/api/v1/notes?team_id={team}&project_id=p1"), &guest.access)
        .await;
    assert_eq!(list["items"][0]["body"], "# v4");
    let (_, list) = app
        .get(&format!("/api/v1/notes?team_id={team}&project_id=p2"), &guest.access)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (status, _) = app.get(&path, &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = app.delete(&path, &guest.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.delete(&path, &bob.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&path, &alice.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_recent_versions_are_kept() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let team = app.team(&alice, "Core").await;
    let (_, n) = app
        .post(
            "/api/v1/notes",
            Some(&alice.access),
            json!({ "team_id": team, "title": "t" }),
        )
        .await;
    let path = format!("/api/v1/notes/{}", n["id"].as_str().unwrap());
    for i in 0..25 {
        app.patch(&path, &alice.access, json!({ "body": i.to_string() })).await;
    }
    let (_, versions) = app.get(&format!("{path}/versions"), &alice.access).await;
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 20);
    assert_eq!(versions[0]["version"], 25);
    assert_eq!(versions[19]["version"], 6);
}
