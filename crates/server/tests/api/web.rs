//! The embedded browser client: files at `/`, the JSON 404 for API paths, nothing else served.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::helpers::{error_code, spawn_app};

#[tokio::test]
async fn serves_the_client_and_keeps_api_errors_json() {
    let app = spawn_app().await;
    let index = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(index.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(index.text().await.unwrap().contains("/app.js"));

    let sdk = app.client.get(app.url("/convene.js")).send().await.unwrap();
    assert_eq!(sdk.status(), StatusCode::OK);
    assert_eq!(sdk.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
    let etag = sdk.headers()[ETAG].clone();
    let again = app
        .client
        .get(app.url("/convene.js"))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    for path in [
        "/api/v1/nothing-here",
        "/api",
        "/ws/nothing",
        "/missing.js",
        "/tests/run.sh",
        "/README.md",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(&res.json().await.unwrap()), "not_found", "{path}");
    }
    let res = app.client.post(app.url("/index.html")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
