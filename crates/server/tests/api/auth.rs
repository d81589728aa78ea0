use convene_auth::{AccessTokens, Secret};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TEST_SECRET, error_code, session_from, spawn_app, spawn_app_with};

#[tokio::test]
async fn register_login_and_profile() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, me) = app.get("/api/v1/auth/me", &alice.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert!(me.get("password_hash").is_none(), "hash must never leave the server");

    for login in ["alice", "ALICE@example.com"] {
        let (status, body) = app
            .post(
                "/api/v1/auth/login",
                None,
                json!({ "login": login, "password": "correct horse battery" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{login}: {body}");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_i64().unwrap() <= 900);
        let s = session_from(&body, "alice");
        assert_eq!(s.user_id, alice.user_id);
        assert_eq!(app.get("/api/v1/auth/me", &s.access).await.0, StatusCode::OK);
    }

    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "login": "alice", "password": "wrong password" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "login": "nobody", "password": "wrong password" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registration_validation_and_conflicts() {
    let app = spawn_app().await;
    app.register("alice").await;
    let base =
        json!({ "email": "new@example.com", "username": "newbie", "password": "long enough pw", "display_name": "N" });
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (with("email", json!("not-an-email")), "email"),
        (with("username", json!("a b")), "username"),
        (with("password", json!("short")), "password"),
        (with("display_name", json!("   ")), "display_name"),
    ] {
        let (status, res) = app.post("/api/v1/auth/register", None, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(error_code(&res), "validation_failed");
        assert!(res["error"]["fields"][field].is_string(), "{res}");
    }
    let (status, res) = app
        .post("/api/v1/auth/register", None, with("email", json!("Alice@Example.com")))
        .await;
    assert_eq!((status, error_code(&res)), (StatusCode::CONFLICT, "email_taken"));
    let (status, res) = app
        .post("/api/v1/auth/register", None, with("username", json!("ALICE")))
        .await;
    assert_eq!((status, error_code(&res)), (StatusCode::CONFLICT, "username_taken"));
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;

    let (status, first) = app
        .post(
            "/api/v1/auth/token/refresh",
            None,
            json!({ "refresh_token": alice.refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let rotated = session_from(&first, "alice");
    assert_ne!(rotated.refresh, alice.refresh);
    assert_eq!(app.get("/api/v1/auth/me", &rotated.access).await.0, StatusCode::OK);

    // The old token again: theft assumed, the whole session dies.
    let (status, body) = app
        .post(
            "/api/v1/auth/token/refresh",
            None,
            json!({ "refresh_token": alice.refresh }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "refresh_token_reused")
    );
    let (status, _) = app
        .post(
            "/api/v1/auth/token/refresh",
            None,
            json!({ "refresh_token": rotated.refresh }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the rotated token belongs to the revoked family"
    );
    let (status, body) = app.get("/api/v1/auth/me", &rotated.access).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "session_revoked")
    );

    // Other sessions of the same user are untouched.
    let (status, other) = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "login": "alice", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/auth/me", other["access_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::OK
    );

    let (status, _) = app
        .post(
            "/api/v1/auth/token/refresh",
            None,
            json!({ "refresh_token": "made-up" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, _) = app.post("/api/v1/auth/logout", Some(&alice.access), json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/auth/me", &alice.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .post(
            "/api/v1/auth/token/refresh",
            None,
            json!({ "refresh_token": alice.refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_and_foreign_access_tokens_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let claims = AccessTokens::new(&Secret::new(TEST_SECRET), 900)
        .verify(&alice.access, 0)
        .unwrap();
    let now = claims.iat;
    let expired = AccessTokens::new(&Secret::new(TEST_SECRET), 60)
        .issue(&claims.sub, &claims.sid, now - 120)
        .unwrap();
    let (status, body) = app.get("/api/v1/auth/me", &expired).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "token_expired"));
    let forged = AccessTokens::new(&Secret::new("another secret"), 900)
        .issue(&claims.sub, &claims.sid, now)
        .unwrap();
    let (status, body) = app.get("/api/v1/auth/me", &forged).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"));
}

#[tokio::test]
async fn profile_update_sets_clears_and_validates() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, me) = app
        .patch(
            "/api/v1/auth/me",
            &alice.access,
            json!({ "display_name": "Alice A.", "bio": "Builds things", "location": "Lyon", "timezone": "Europe/Paris",
                    "avatar_url": "https://example.com/a.png", "company_name": "Convene" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["display_name"], "Alice A.");
    assert_eq!(me["timezone"], "Europe/Paris");

    let (status, me) = app
        .patch("/api/v1/auth/me", &alice.access, json!({ "bio": null }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["bio"].is_null());
    assert_eq!(me["location"], "Lyon", "absent fields are kept");
    let (_, me) = app.get("/api/v1/auth/me", &alice.access).await;
    assert!(me["bio"].is_null() && me["company_name"] == "Convene", "{me}");

    for (body, field) in [
        (json!({ "avatar_url": "javascript:alert(1)" }), "avatar_url"),
        (json!({ "timezone": "not a zone" }), "timezone"),
        (json!({ "display_name": "" }), "display_name"),
    ] {
        let (status, res) = app.patch("/api/v1/auth/me", &alice.access, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res["error"]["fields"][field].is_string(), "{res}");
    }
    let (status, _) = app
        .patch("/api/v1/auth/me", &alice.access, json!({ "email": "x@y.io" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "email is not a profile field");
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_account() {
    let app = spawn_app_with(|c| c.login_failures_per_account = 3).await;
    app.register("alice").await;
    app.register("bob").await;
    let wrong = json!({ "login": "alice", "password": "not the password" });
    for _ in 0..3 {
        assert_eq!(
            app.post("/api/v1/auth/login", None, wrong.clone()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "login": "alice", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry));
    assert_eq!(error_code(&res.json().await.unwrap()), "rate_limited");
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "login": "bob", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "other accounts are unaffected");
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_ip() {
    let app = spawn_app_with(|c| c.login_failures_per_ip = 4).await;
    app.register("carol").await;
    for name in ["u1", "u2", "u3", "u4"] {
        let (status, _) = app
            .post(
                "/api/v1/auth/login",
                None,
                json!({ "login": name, "password": "whatever123" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "login": "carol", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
}
