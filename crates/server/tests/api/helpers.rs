//! Starts the real `App` on 127.0.0.1:0 with a fresh database per test: a SQLite file in a
//! temporary directory, or, when `CONVENE_TEST_POSTGRES_URL` names a PostgreSQL server
//! (`postgres://user@host:port`), a new database on it.

use std::net::SocketAddr;

use convene::{App, Config, MediaConfig, TurnSettings};
use convene_auth::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;

pub(crate) const TEST_SECRET: &str = "test-secret-not-for-production";
pub(crate) const TEST_TURN_SECRET: &str = "test-turn-secret";

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) events: std::sync::Arc<convene_api::events::EventBus>,
    /// The database this app runs on, to start another app on it (a restart).
    pub(crate) database_url: String,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

pub(crate) struct Session {
    pub(crate) user_id: String,
    pub(crate) access: String,
    pub(crate) refresh: String,
    pub(crate) username: String,
}

pub(crate) async fn fresh_database(dir: &std::path::Path) -> String {
    match std::env::var("CONVENE_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let base = base.trim_end_matches('/');
            let name = format!("convene_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
                .await
                .expect("connect to PostgreSQL");
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create test database");
            format!("{base}/{name}")
        }
        _ => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub(crate) async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = fresh_database(dir.path()).await;
    let mut config = Config {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(database_url.clone()),
        jwt_secret: Some(Secret::new(TEST_SECRET)),
        media: Some(MediaConfig {
            udp_addr: "127.0.0.1:0".parse().expect("addr"),
            tcp_addr: Some("127.0.0.1:0".parse().expect("addr")),
            advertise_ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            workers: 1,
            resume_grace: std::time::Duration::from_secs(2),
        }),
        turn: Some(TurnSettings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            secret: Some(Secret::new(TEST_TURN_SECRET)),
            ..TurnSettings::default()
        }),
        ..Config::default()
    };
    adjust(&mut config);
    let database_url = config.database_url.clone().unwrap_or(database_url);
    let app = App::build(config).await.expect("app builds");
    let addr = app.local_addr();
    let events = app.events();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        events,
        database_url,
        _dir: dir,
        stop: Some(stop),
    }
}

impl TestApp {
    /// Begins a graceful shutdown, as SIGTERM would.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `body` as JSON (if any) with an optional bearer token; returns status and JSON
    /// body (`Value::Null` when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub(crate) async fn register(&self, username: &str) -> Session {
        let email = format!("{username}@example.com");
        let (status, body) = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({ "email": email, "username": username, "password": "correct horse battery", "display_name": username }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        session_from(&body, username)
    }

    /// Creates a team owned by `owner` and returns its id.
    pub(crate) async fn team(&self, owner: &Session, name: &str) -> String {
        let (status, body) = self
            .post("/api/v1/teams", Some(&owner.access), json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("team id").to_owned()
    }

    /// Deletes `path` as each of `refused` (answered with the status given), then as `by` (204);
    /// after that, `reader` gets a 404 for it.
    pub(crate) async fn assert_deleted_only_by(
        &self,
        path: &str,
        refused: &[(&Session, StatusCode)],
        by: &Session,
        reader: &Session,
    ) {
        for (who, status) in refused {
            assert_eq!(
                self.delete(path, &who.access).await.0,
                *status,
                "{} deletes {path}",
                who.username
            );
        }
        assert_eq!(
            self.delete(path, &by.access).await.0,
            StatusCode::NO_CONTENT,
            "delete {path}"
        );
        assert_eq!(
            self.get(path, &reader.access).await.0,
            StatusCode::NOT_FOUND,
            "{path} after delete"
        );
    }

    /// Adds `user` to `team` with `role`, acting as `by`.
    pub(crate) async fn add(&self, by: &Session, team: &str, user: &Session, role: &str) {
        let (status, body) = self
            .post(
                &format!("/api/v1/teams/{team}/members"),
                Some(&by.access),
                json!({ "user_id": user.user_id, "role": role }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

/// A team with one user of every role, plus an outsider.
pub(crate) struct Cast {
    pub(crate) team: String,
    pub(crate) owner: Session,
    pub(crate) admin: Session,
    pub(crate) member: Session,
    pub(crate) guest: Session,
    pub(crate) outsider: Session,
}

pub(crate) async fn cast(app: &TestApp) -> Cast {
    let owner = app.register("owner").await;
    let admin = app.register("admin").await;
    let member = app.register("member").await;
    let guest = app.register("guest").await;
    let outsider = app.register("outsider").await;
    let team = app.team(&owner, "Platform").await;
    app.add(&owner, &team, &admin, "admin").await;
    app.add(&owner, &team, &member, "member").await;
    app.add(&owner, &team, &guest, "guest").await;
    Cast {
        team,
        owner,
        admin,
        member,
        guest,
        outsider,
    }
}

/// The team "Core" and `[alice, bob, guest, eve]`: alice owns it, bob is a member and guest a
/// guest; eve is in no team.
pub(crate) async fn core_team(app: &TestApp) -> (String, [Session; 4]) {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let guest = app.register("guest").await;
    let eve = app.register("eve").await;
    let team = app.team(&alice, "Core").await;
    app.add(&alice, &team, &bob, "member").await;
    app.add(&alice, &team, &guest, "guest").await;
    (team, [alice, bob, guest, eve])
}

pub(crate) fn session_from(body: &Value, username: &str) -> Session {
    Session {
        user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
        access: body["access_token"].as_str().expect("access token").to_owned(),
        refresh: body["refresh_token"].as_str().expect("refresh token").to_owned(),
        username: username.to_owned(),
    }
}

/// Asserts the error envelope and returns its code.
pub(crate) fn error_code(body: &Value) -> &str {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message missing: {body}"
    );
    code
}
