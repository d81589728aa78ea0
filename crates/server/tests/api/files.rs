use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{TestApp, core_team, error_code, spawn_app, spawn_app_with};

pub(crate) async fn upload(app: &TestApp, token: &str, query: &str, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let form = Form::new().part(
        "file",
        Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str("text/html")
            .unwrap(),
    );
    let res = app
        .client
        .post(app.url(&format!("/api/v1/files/upload?{query}")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

#[tokio::test]
async fn upload_list_download_delete() {
    let app = spawn_app().await;
    let (team, [alice, bob, guest, eve]) = core_team(&app).await;
    let p1 = crate::projects::create_project(&app, &alice, &team, "DOC").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ops = crate::projects::create_project(&app, &alice, &team, "OPS").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = crate::projects::create_task(&app, &alice, &ops, serde_json::json!({ "title": "Report" })).await;
    let t9 = task["id"].as_str().unwrap().to_owned();

    // Attaching to a project or task of another team, or to none, is refused.
    for (query, field) in [("project_id=nope", "project_id"), ("task_id=nope", "task_id")] {
        let (status, body) = upload(
            &app,
            &alice.access,
            &format!("team_id={team}&{query}"),
            "a.txt",
            b"a".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["fields"][field].is_string(), "{body}");
    }

    // The client's name loses its path; the claimed content type is ignored for the bytes'.
    let (status, f) = upload(
        &app,
        &alice.access,
        &format!("team_id={team}&project_id={p1}"),
        "../../etc/pic.png",
        PNG.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    assert_eq!(f["name"], "pic.png");
    assert_eq!(f["content_type"], "image/png");
    assert_eq!(f["size"].as_u64(), Some(PNG.len() as u64));
    assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
    let id = f["id"].as_str().unwrap();

    let text = "0123456789abcdefghij".repeat(5);
    let (status, t) = upload(
        &app,
        &bob.access,
        &format!("team_id={team}&task_id={t9}"),
        "notes \"q\".txt",
        text.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["content_type"], "text/plain; charset=utf-8");
    let tid = t["id"].as_str().unwrap();

    let (status, body) = upload(&app, &guest.access, &format!("team_id={team}"), "x.txt", b"x".to_vec()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = upload(&app, &eve.access, &format!("team_id={team}"), "x.txt", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, list) = app.get(&format!("/api/v1/files?team_id={team}"), &guest.access).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, list) = app
        .get(&format!("/api/v1/files?team_id={team}&project_id={p1}"), &guest.access)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = app
        .get(&format!("/api/v1/files?team_id={team}&task_id={t9}"), &guest.access)
        .await;
    assert_eq!(list["items"][0]["id"], tid);
    let (status, _) = app.get(&format!("/api/v1/files?team_id={team}"), &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, usage) = app
        .get(&format!("/api/v1/files/usage?team_id={team}"), &bob.access)
        .await;
    assert_eq!(usage["used_bytes"].as_u64(), Some((PNG.len() + text.len()) as u64));

    // File names are searchable at once, by team members only.
    let (_, hits) = app.get("/api/v1/search?q=pic&types=file", &guest.access).await;
    assert_eq!(hits["items"][0]["id"], id);
    let (_, hits) = app.get("/api/v1/search?q=pic&types=file", &eve.access).await;
    assert_eq!(hits["items"].as_array().unwrap().len(), 0);

    // Whole, ranged, suffix, open-ended, unsatisfiable.
    let url = app.url(&format!("/api/v1/files/{tid}/download"));
    let res = app.client.get(&url).bearer_auth(&guest.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(
        res.headers()[CONTENT_DISPOSITION],
        "attachment; filename=\"notes _q_.txt\"; filename*=UTF-8''notes%20%22q%22.txt"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.text().await.unwrap(), text);
    for (range, status, expect, content_range) in [
        (
            "bytes=10-19",
            StatusCode::PARTIAL_CONTENT,
            &text[10..20],
            "bytes 10-19/100",
        ),
        ("bytes=-5", StatusCode::PARTIAL_CONTENT, &text[95..], "bytes 95-99/100"),
        ("bytes=98-", StatusCode::PARTIAL_CONTENT, &text[98..], "bytes 98-99/100"),
    ] {
        let res = app
            .client
            .get(&url)
            .bearer_auth(&bob.access)
            .header(RANGE, range)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{range}");
        assert_eq!(res.headers()[CONTENT_RANGE], content_range);
        assert_eq!(res.text().await.unwrap(), expect);
    }
    let res = app
        .client
        .get(&url)
        .bearer_auth(&bob.access)
        .header(RANGE, "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes */100");
    let res = app.client.get(&url).bearer_auth(&eve.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Bob may not delete Alice's file; Alice (owner) may delete Bob's.
    let (status, _) = app.delete(&format!("/api/v1/files/{id}"), &bob.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.delete(&format!("/api/v1/files/{id}"), &eve.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.delete(&format!("/api/v1/files/{tid}"), &alice.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/v1/files/{tid}"), &alice.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, meta) = app.get(&format!("/api/v1/files/{id}"), &guest.access).await;
    assert_eq!((status, meta["name"].as_str()), (StatusCode::OK, Some("pic.png")));
}

#[tokio::test]
async fn size_limit_and_quota() {
    let mut data_dir = None;
    let app = spawn_app_with(|c| {
        c.max_upload_size = 1000;
        c.team_storage_quota = 2500;
        data_dir = Some(c.data_dir.clone());
    })
    .await;
    let alice = app.register("alice").await;
    let team = app.team(&alice, "Core").await;
    let q = format!("team_id={team}");
    let (status, _) = upload(&app, &alice.access, &q, "a.bin", vec![7; 1000]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = upload(&app, &alice.access, &q, "b.bin", vec![7; 1001]).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (status, _) = upload(&app, &alice.access, &q, "c.bin", vec![7; 1000]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = upload(&app, &alice.access, &q, "d.bin", vec![7; 501]).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "quota_exceeded"));
    let (_, usage) = app.get(&format!("/api/v1/files/usage?{q}"), &alice.access).await;
    assert_eq!(usage["used_bytes"], 2000);
    // Refused uploads leave nothing on disk; stored ones are named by id only.
    let files_dir = data_dir.unwrap().join("files");
    assert_eq!(std::fs::read_dir(&files_dir).unwrap().count(), 2);

    // Bad requests are 4xx JSON.
    let res = app
        .client
        .post(app.url(&format!("/api/v1/files/upload?{q}")))
        .bearer_auth(&alice.access)
        .body("not multipart")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let form = Form::new().text("other", "x");
    let res = app
        .client
        .post(app.url(&format!("/api/v1/files/upload?{q}")))
        .bearer_auth(&alice.access)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = upload(&app, &alice.access, "", "x", vec![1]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Deleting the team deletes its files' contents too.
    let (status, _) = app.delete(&format!("/api/v1/teams/{team}"), &alice.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(std::fs::read_dir(&files_dir).unwrap().count(), 0);
}

/// Sends `head` and then `parts` of a body over a raw connection, `gap` apart (a slow client),
/// and reads the whole response: (status, JSON body or `Null`).
async fn slow_request(app: &TestApp, head: String, parts: &[Vec<u8>], gap: std::time::Duration) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    for part in parts {
        tokio::time::sleep(gap).await;
        conn.write_all(part).await.unwrap();
    }
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn uploads_may_outlast_the_request_timeout_but_not_stall() {
    let timeout = std::time::Duration::from_millis(800);
    let app = spawn_app_with(|c| c.request_timeout = timeout).await;
    let alice = app.register("alice").await;
    let team = app.team(&alice, "Core").await;
    let head = |path: &str, content_type: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n",
            app.addr, alice.access
        )
    };
    // A JSON request whose body never completes: 408 with the error body once the timeout passed.
    let (status, body) = slow_request(
        &app,
        head("/api/v1/teams", "application/json", 100),
        &[b"{".to_vec()],
        timeout / 8,
    )
    .await;
    assert_eq!((status, error_code(&body)), (408, "request_timeout"));

    // An upload sent in 5 parts over 5 x 300 ms (twice the timeout), never idle that long: stored.
    let boundary = "convene-slow-upload";
    let content = vec![42u8; 5000];
    let mut multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    multipart.extend_from_slice(&content);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let parts: Vec<Vec<u8>> = multipart
        .chunks(multipart.len().div_ceil(5))
        .map(<[u8]>::to_vec)
        .collect();
    let path = format!("/api/v1/files/upload?team_id={team}");
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let gap = std::time::Duration::from_millis(300);
    let (status, file) = slow_request(&app, head(&path, &content_type, multipart.len()), &parts, gap).await;
    assert_eq!(status, 201, "{file}");
    assert_eq!(file["size"], 5000);

    // An upload that stalls longer than the timeout: 408, and nothing stored.
    let (status, body) = slow_request(&app, head(&path, &content_type, multipart.len()), &parts[..2], gap).await;
    assert_eq!((status, error_code(&body)), (408, "request_timeout"));
    let (_, usage) = app
        .get(&format!("/api/v1/files/usage?team_id={team}"), &alice.access)
        .await;
    assert_eq!(usage["used_bytes"], 5000);
}
