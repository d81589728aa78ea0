use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};
use crate::projects::{create_project, create_task, crew};

#[tokio::test]
async fn manual_entries_and_the_single_running_timer() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let task = create_task(&app, &c.member, &c.project, json!({ "title": "work" })).await;
    let t = task["id"].as_str().unwrap();
    let entries = format!("/api/v1/tasks/{t}/time-entries");
    let (status, e) = app
        .post(
            &entries,
            Some(&c.member.access),
            json!({ "started_at": "2026-03-02T09:00:00Z", "ended_at": "2026-03-02T10:30:00Z", "note": "pairing" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    assert_eq!(
        (e["duration_seconds"].as_i64(), e["task_key"].as_str()),
        (Some(5400), Some("WEB-1"))
    );
    let (status, e2) = app
        .post(
            &entries,
            Some(&c.member.access),
            json!({ "started_at": "2026-03-03T08:00:00Z", "duration_minutes": 45 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{e2}");
    assert_eq!(e2["ended_at"], "2026-03-03T08:45:00Z");
    let (status, e3) = app
        .post(&entries, Some(&c.member.access), json!({ "duration_minutes": 30 }))
        .await;
    assert_eq!(
        (status, e3["duration_seconds"].as_i64()),
        (StatusCode::CREATED, Some(1800))
    );
    for bad in [
        json!({}),
        json!({ "started_at": "2026-03-02T10:00:00Z" }),
        json!({ "started_at": "2026-03-02T10:00:00Z", "ended_at": "2026-03-02T09:00:00Z" }),
        json!({ "started_at": "2026-03-01T00:00:00Z", "ended_at": "2026-03-09T00:00:00Z" }),
        json!({ "duration_minutes": 0 }),
        json!({ "started_at": "2026-03-02T10:00:00Z", "ended_at": "2026-03-02T11:00:00Z", "duration_minutes": 5 }),
        json!({ "started_at": "yesterday", "duration_minutes": 5 }),
    ] {
        let (status, body) = app.post(&entries, Some(&c.member.access), bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (_, list) = app.get(&entries, &c.guest.access).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);

    // Owners edit and delete their own entries; others may not.
    let e_path = format!("/api/v1/time-entries/{}", e["id"].as_str().unwrap());
    let (status, edited) = app
        .patch(
            &e_path,
            &c.member.access,
            json!({ "ended_at": "2026-03-02T11:00:00Z", "note": null }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["duration_seconds"], 7200);
    assert!(edited["note"].is_null());
    let (status, _) = app.patch(&e_path, &c.owner.access, json!({ "note": "mine now" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&e_path, &c.admin.access).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&e_path, &c.outsider.access).await.0, StatusCode::NOT_FOUND);
    let (status, _) = app
        .patch(&e_path, &c.member.access, json!({ "ended_at": "2026-03-02T08:00:00Z" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.delete(&e_path, &c.member.access).await.0, StatusCode::NO_CONTENT);

    // One running timer per user, even when two starts race.
    let timer = format!("/api/v1/tasks/{t}/timer");
    let (a, b) = tokio::join!(
        app.post(&timer, Some(&c.member.access), json!({ "note": "one" })),
        app.post(&timer, Some(&c.member.access), json!({ "note": "two" }))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "{} {}", a.1, b.1);
    let loser = if a.0 == StatusCode::CONFLICT { &a.1 } else { &b.1 };
    assert_eq!(error_code(loser), "timer_running");
    let (status, running) = app.get("/api/v1/timer", &c.member.access).await;
    assert_eq!(status, StatusCode::OK);
    assert!(running["ended_at"].is_null() && running["duration_seconds"].is_null());
    // Someone else's timer is independent.
    let (status, _) = app.post(&timer, Some(&c.owner.access), json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, stopped) = app
        .post("/api/v1/timer/stop", Some(&c.member.access), json!({ "note": "done" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert!(stopped["duration_seconds"].as_i64().unwrap() >= 1);
    assert_eq!(
        (stopped["note"].as_str(), stopped["id"].as_str()),
        (Some("done"), running["id"].as_str())
    );
    assert_eq!(
        app.post("/api/v1/timer/stop", Some(&c.member.access), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/timer", &c.member.access).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&timer, Some(&c.guest.access), json!({})).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn time_report_sums_match_the_entries() {
    let app = spawn_app().await;
    let c = crew(&app).await;
    let other = create_project(&app, &c.owner, &c.team, "OPS").await;
    let other_id = other["id"].as_str().unwrap();
    let web1 = create_task(&app, &c.member, &c.project, json!({ "title": "alpha" })).await;
    let web2 = create_task(&app, &c.member, &c.project, json!({ "title": "beta" })).await;
    let ops1 = create_task(&app, &c.member, other_id, json!({ "title": "gamma" })).await;
    // (who, task, start, minutes)
    let plan = [
        (&c.member, &web1, "2026-03-02T09:00:00Z", 90),
        (&c.member, &web2, "2026-03-02T13:00:00Z", 30),
        (&c.admin, &web1, "2026-03-02T23:30:00Z", 60),
        (&c.admin, &ops1, "2026-03-03T10:00:00Z", 15),
        (&c.owner, &ops1, "2026-03-04T10:00:00Z", 120),
        (&c.member, &web2, "2026-03-05T10:00:00Z", 10),
    ];
    let mut expected: BTreeMap<(&str, String), (i64, i64)> = BTreeMap::new();
    for (who, task, start, minutes) in plan {
        let (status, e) = app
            .post(
                &format!("/api/v1/tasks/{}/time-entries", task["id"].as_str().unwrap()),
                Some(&who.access),
                json!({ "started_at": start, "duration_minutes": minutes }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{e}");
        if start < "2026-03-05" {
            let keys = [
                ("day", start[..10].to_owned()),
                ("user", who.user_id.clone()),
                ("task", task["id"].as_str().unwrap().to_owned()),
                ("project", task["project_id"].as_str().unwrap().to_owned()),
            ];
            for key in keys {
                let sum = expected.entry(key).or_default();
                sum.0 += 1;
                sum.1 += minutes * 60;
            }
        }
    }
    // A running timer is not counted.
    app.post(
        &format!("/api/v1/tasks/{}/timer", web1["id"].as_str().unwrap()),
        Some(&c.member.access),
        json!({}),
    )
    .await;

    for group in ["day", "user", "task", "project"] {
        let (status, report) = app
            .get(
                &format!(
                    "/api/v1/reports/time?team_id={}&group_by={group}&from=2026-03-01&to=2026-03-04",
                    c.team
                ),
                &c.member.access,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let rows: BTreeMap<String, (i64, i64)> = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_owned(),
                    (r["entries"].as_i64().unwrap(), r["seconds"].as_i64().unwrap()),
                )
            })
            .collect();
        let want: BTreeMap<String, (i64, i64)> = expected
            .iter()
            .filter(|((g, _), _)| *g == group)
            .map(|((_, k), v)| (k.clone(), *v))
            .collect();
        assert_eq!(rows, want, "group_by={group}");
        assert_eq!(report["total_seconds"], (90 + 30 + 60 + 15 + 120) * 60);
        assert_eq!(report["total_entries"], 5);
    }
    let (_, by_user) = app
        .get(
            &format!("/api/v1/reports/time?team_id={}&group_by=user", c.team),
            &c.owner.access,
        )
        .await;
    let member_row = by_user["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == c.member.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (member_row["label"].as_str(), member_row["seconds"].as_i64()),
        (Some("member"), Some(130 * 60))
    );
    let (_, filtered) = app
        .get(
            &format!(
                "/api/v1/reports/time?team_id={}&project_id={other_id}&user_id={}",
                c.team, c.admin.user_id
            ),
            &c.owner.access,
        )
        .await;
    assert_eq!(
        (filtered["total_seconds"].as_i64(), filtered["total_entries"].as_i64()),
        (Some(900), Some(1))
    );

    // CSV carries the same rows.
    let res = app
        .client
        .get(app.url(&format!(
            "/api/v1/reports/time?team_id={}&group_by=task&format=csv",
            c.team
        )))
        .bearer_auth(&c.member.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "task,label,entries,seconds");
    let web2_line = lines.iter().find(|l| l.contains("WEB-2 beta")).unwrap();
    assert!(web2_line.ends_with(",2,2400"), "{web2_line}");
    let csv_total: i64 = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(csv_total, (90 + 30 + 60 + 15 + 120 + 10) * 60);

    let report = |token: String| {
        let path = format!("/api/v1/reports/time?team_id={}", c.team);
        let app = &app;
        async move { app.get(&path, &token).await }
    };
    assert_eq!(report(c.guest.access.clone()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(report(c.outsider.access.clone()).await.0, StatusCode::NOT_FOUND);
    let (status, body): (StatusCode, Value) = app
        .get(
            &format!("/api/v1/reports/time?team_id={}&group_by=week", c.team),
            &c.member.access,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
