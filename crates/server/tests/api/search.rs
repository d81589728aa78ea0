use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, error_code, spawn_app};

async fn search(app: &TestApp, who: &Session, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/v1/search?{query}"), &who.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

fn ids(hits: &[Value]) -> Vec<(String, String)> {
    hits.iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_owned(),
                h["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn finds_only_what_the_caller_may_see_and_follows_writes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let core = app.team(&alice, "Core").await;
    let other = app.team(&eve, "Other").await;
    app.add(&alice, &core, &bob, "guest").await;

    let (_, note) = app
        .post("/api/v1/notes", Some(&alice.access), json!({ "team_id": core, "title": "Launch checklist", "body": "Renew the <b>zebra</b> certificates before launch" }))
        .await;
    let note_id = note["id"].as_str().unwrap().to_owned();
    app.post(
        "/api/v1/notes",
        Some(&eve.access),
        json!({ "team_id": other, "title": "Secret zebra plan", "body": "zebra zebra" }),
    )
    .await;

    let (status, ch) = app
        .post(
            "/api/v1/chat/channels",
            Some(&alice.access),
            json!({ "team_id": core, "name": "general", "kind": "public" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    let channel = ch["id"].as_str().unwrap().to_owned();
    let (status, msg) = app
        .post(
            &format!("/api/v1/chat/channels/{channel}/messages"),
            Some(&alice.access),
            json!({ "body": "the zebra crossing is closed" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{msg}");
    let msg_id = msg["id"].as_str().unwrap().to_owned();

    // Alice sees her note and message, ranked, with safe snippets; never Eve's note.
    let hits = search(&app, &alice, "q=zebra").await;
    let found = ids(&hits);
    assert!(found.contains(&("note".into(), note_id.clone())), "{hits:?}");
    assert!(found.contains(&("message".into(), msg_id.clone())), "{hits:?}");
    assert_eq!(found.len(), 2, "{hits:?}");
    let note_hit = hits.iter().find(|h| h["kind"] == "note").unwrap();
    // Markup in the text never comes back live: SQLite escapes it, PostgreSQL's parser drops it.
    let snippet = note_hit["snippet"].as_str().unwrap();
    assert!(
        snippet.contains("<mark>zebra</mark>") && !snippet.contains("<b>"),
        "{note_hit}"
    );
    assert!(hits[0]["rank"].as_f64().unwrap() >= hits[1]["rank"].as_f64().unwrap());
    // Eve sees only her own.
    let hits = search(&app, &eve, "q=zebra").await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["team_id"], other.as_str());
    // A guest sees team notes but not public channels they were not added to (chat's rule).
    let found = ids(&search(&app, &bob, "q=zebra").await);
    assert_eq!(found, vec![("note".to_owned(), note_id.clone())]);

    // Filters, prefixes and the team scope.
    assert_eq!(
        ids(&search(&app, &alice, "q=zeb&types=message").await),
        vec![("message".to_owned(), msg_id.clone())]
    );
    assert_eq!(
        search(&app, &alice, "q=checklist+launch&types=note,file").await.len(),
        1
    );
    assert_eq!(search(&app, &alice, "q=core&types=team").await[0]["id"], core.as_str());
    let (status, _) = app
        .get(&format!("/api/v1/search?q=zebra&team={other}"), &alice.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Writes show up at once: edit, delete.
    app.patch(
        &format!("/api/v1/notes/{note_id}"),
        &alice.access,
        json!({ "body": "giraffe only" }),
    )
    .await;
    assert!(ids(&search(&app, &alice, "q=zebra&types=note").await).is_empty());
    assert_eq!(search(&app, &alice, "q=giraffe").await.len(), 1);
    let (status, _) = app
        .delete(
            &format!("/api/v1/chat/channels/{channel}/messages/{msg_id}"),
            &alice.access,
        )
        .await;
    assert!(status.is_success(), "{status}");
    assert!(search(&app, &alice, "q=zebra&types=message").await.is_empty());

    // Bad input: empty query, query syntax, unknown type.
    for q in ["q=", "q=%22*%28", "q=zebra&types=spaceship"] {
        let (status, body) = app.get(&format!("/api/v1/search?{q}"), &alice.access).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {body}");
        error_code(&body);
    }
    let (status, _) = app.get("/api/v1/search?q=zebra%20OR%20NEAR(x", &alice.access).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn private_channels_and_dms_are_searchable_by_their_members_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let team = app.team(&alice, "Core").await;
    app.add(&alice, &team, &bob, "member").await;
    app.add(&alice, &team, &carol, "admin").await;

    let (status, dm) = app
        .post(
            "/api/v1/chat/channels",
            Some(&alice.access),
            json!({ "kind": "dm", "members": [bob.user_id] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dm}");
    let (status, private) = app
        .post(
            "/api/v1/chat/channels",
            Some(&alice.access),
            json!({ "team_id": team, "name": "board", "kind": "private", "topic": "walrus budget" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{private}");
    for channel in [&dm, &private] {
        let (status, _) = app
            .post(
                &format!("/api/v1/chat/channels/{}/messages", channel["id"].as_str().unwrap()),
                Some(&alice.access),
                json!({ "body": "walrus sighting" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Alice: both messages and the private channel; Bob: the DM only; Carol (an admin, not a
    // member of either): nothing.
    assert_eq!(search(&app, &alice, "q=walrus").await.len(), 3);
    let bobs = search(&app, &bob, "q=walrus").await;
    assert_eq!(ids(&bobs).len(), 1);
    assert_eq!(bobs[0]["channel_id"], dm["id"]);
    assert!(bobs[0]["team_id"].is_null());
    assert!(search(&app, &carol, "q=walrus").await.is_empty());
}

#[tokio::test]
async fn tasks_and_projects_are_indexed_as_they_change() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let guest = app.register("guest").await;
    let eve = app.register("eve").await;
    let team = app.team(&alice, "Core").await;
    app.add(&alice, &team, &guest, "guest").await;
    let (status, project) = app
        .post(
            "/api/v1/projects",
            Some(&alice.access),
            json!({ "team_id": team, "name": "Osprey launch", "key": "OSP" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project_id = project["id"].as_str().unwrap().to_owned();
    let (status, task) = app
        .post(
            &format!("/api/v1/projects/{project_id}/tasks"),
            Some(&alice.access),
            json!({ "title": "Calibrate the osprey sensor", "description": "needs a ladder" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task_id = task["id"].as_str().unwrap().to_owned();

    let found = ids(&search(&app, &guest, "q=osprey").await);
    assert!(found.contains(&("task".to_owned(), task_id.clone())), "{found:?}");
    assert!(found.contains(&("project".to_owned(), project_id.clone())), "{found:?}");
    assert_eq!(
        ids(&search(&app, &alice, "q=ladder&types=task").await),
        vec![("task".to_owned(), task_id.clone())]
    );
    assert!(search(&app, &eve, "q=osprey").await.is_empty());

    let (status, _) = app
        .patch(
            &format!("/api/v1/tasks/{task_id}"),
            &alice.access,
            json!({ "title": "Calibrate the heron sensor" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(search(&app, &alice, "q=osprey&types=task").await.is_empty());
    assert_eq!(search(&app, &alice, "q=heron").await.len(), 1);

    // Deleting the project takes its tasks out of the index too.
    let (status, _) = app
        .delete(&format!("/api/v1/projects/{project_id}"), &alice.access)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(search(&app, &alice, "q=heron").await.is_empty());
    assert!(search(&app, &alice, "q=osprey").await.is_empty());
}
