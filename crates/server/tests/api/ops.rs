use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let team = app.team(&alice, "Core").await;
    app.get(&format!("/api/v1/teams/{team}"), &alice.access).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"convene_http_requests_total{method="GET",route="/api/v1/teams/{team_id}",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("convene_http_request_duration_seconds_bucket"));
    assert!(!text.contains(&team), "metrics must not carry ids");
}

#[tokio::test]
async fn openapi_describes_every_operation() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            let public = [
                "/api/v1/auth/register",
                "/api/v1/auth/login",
                "/api/v1/auth/token/refresh",
                "/api/v1/calendar/{feed}",
            ];
            assert_eq!(
                op.get("security").is_some(),
                !public.contains(&path.as_str()),
                "{method} {path} security"
            );
            if (method == "post" || method == "patch")
                && ![
                    "/logout",
                    "/accept",
                    "/join",
                    "/feed",
                    "/end",
                    "/resume",
                    "/export",
                    "/recordings",
                    "/stop",
                ]
                .iter()
                .any(|s| path.ends_with(s))
            {
                assert!(
                    op.get("requestBody").is_some(),
                    "{method} {path} has no request body schema"
                );
            }
        }
    }
    // Every route the server answers is documented: auth (7) + teams (13) + invites (1) + rooms (6)
    // + chat (22) + notifications (3) + work management (51: projects, activity, boards, tasks, sprints, time)
    // + events (8) + calendar feed (2) + webhooks (5) + meetings (4) + room moderation (6) + analytics (1)
    // + timer (13) + files (6) + notes (6) + search (1) + analytics (3) + gdpr (4) + recordings (6)
    // + audit log (2).
    assert_eq!(operations, 170, "{:?}", paths.keys().collect::<Vec<_>>());
}
