//! The `convene` binary as an operator runs it: `migrate`, then `serve` configured through a
//! TOML file and `CONVENE_*` variables, stopped with SIGTERM. Uses PostgreSQL when
//! `CONVENE_TEST_POSTGRES_URL` is set, SQLite otherwise.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sqlx::{Connection, Executor};

const BIN: &str = env!("CARGO_BIN_EXE_convene");

async fn database_url() -> Option<String> {
    let base = std::env::var("CONVENE_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())?;
    let base = base.trim_end_matches('/');
    let name = format!("convene_cli_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres")).await.unwrap();
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    Some(format!("{base}/{name}"))
}

fn convene(dir: &std::path::Path, db: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONVENE_DATA_DIR", dir.join("data"))
        .env("CONVENE_LOG_FORMAT", "json")
        .env("CONVENE_MEDIA_UDP_PORT", "0")
        .env("CONVENE_MEDIA_TCP_PORT", "0")
        .env("CONVENE_TURN_ADDR", "127.0.0.1:0")
        .env("CONVENE_MEDIA_BIND_IP", "127.0.0.1");
    if let Some(url) = db {
        cmd.env("CONVENE_DATABASE_URL", url);
    }
    cmd
}

#[tokio::test]
async fn migrate_then_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url().await;

    let status = convene(dir.path(), db.as_deref()).arg("migrate").status().unwrap();
    assert!(status.success());
    if db.is_none() {
        assert!(dir.path().join("data/convene.db").exists());
    }

    // The file sets the address; the environment (data dir, log format) is layered on top.
    let config = dir.path().join("convene.toml");
    std::fs::write(&config, "http_addr = \"127.0.0.1:0\"\naccess_token_ttl = 600\n").unwrap();
    let mut child = convene(dir.path(), db.as_deref())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();
    let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        dir.path().join("data/jwt_secret").exists(),
        "secret generated into the data dir"
    );
    let reg: serde_json::Value = client
        .post(format!("http://{addr}/api/v1/auth/register"))
        .json(
            &serde_json::json!({"email": "a@b.io", "username": "abc", "password": "long enough", "display_name": "A"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reg["expires_in"], 600, "access_token_ttl from the TOML file");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
    // No secrets or passwords in the log.
    assert!(
        !rest
            .iter()
            .any(|l| l.contains("long enough") || l.contains("access_token"))
    );
}

#[test]
fn invalid_configuration_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = convene(dir.path(), None)
        .args(["serve", "--access-token-ttl", "3600"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("access-token-ttl"));
    let out = convene(dir.path(), None)
        .args(["serve", "--http-addr", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http-addr"));
}
