use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn malformed_bodies_get_clear_4xx() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/auth/register");
    let send = |body: &'static str, ct: Option<&'static str>| {
        let mut req = app.client.post(&url).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let cases = [
        (
            "{\"email\":",
            Some("application/json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "{\"email\": 42}",
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "[]",
            Some("application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        ("{}", None, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (
            "{}",
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (body, ct, status, code) in cases {
        let res = send(body, ct).await.unwrap();
        assert_eq!(res.status(), status, "{body}");
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(error_code(&v), code, "{body}");
    }
}

#[tokio::test]
async fn unknown_fields_are_rejected() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "a@b.io", "username": "abc", "password": "long enough", "display_name": "A", "admin": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["message"].as_str().unwrap().contains("admin"), "{body}");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let big = format!(
        "{{\"login\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&res.json().await.unwrap()), "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_methods_and_missing_auth() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/api/v1/nothing-here")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&res.json().await.unwrap()), "not_found");

    let res = app.client.delete(app.url("/api/v1/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&res.json().await.unwrap()), "method_not_allowed");

    let res = app.client.get(app.url("/api/v1/teams")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&res.json().await.unwrap()), "missing_token");

    let res = app
        .client
        .get(app.url("/api/v1/teams"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = app.get("/api/v1/teams", "not-a-jwt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_token");
}

#[tokio::test]
async fn bad_query_and_path_values() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, body) = app.get("/api/v1/teams?limit=many", &alice.access).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    let (status, _) = app.get("/api/v1/teams/..%2F..%2Fetc", &alice.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
