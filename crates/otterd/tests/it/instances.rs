//! Several `otterd` instances on one database (issue 9, "Scale path"): the first start is
//! race-free, and storage errors read the same on every backend.

use std::path::Path;

use otterd::db::{DbError, KeyRow, ProductRow};
use reqwest::Client;
use serde_json::Value;

use crate::backends;
use crate::harness::*;

/// `otterd serve` for `data_dir` on the database at `url`.
fn serve_on(data_dir: &Path, url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_otterd"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("OTTER_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    cmd
}

async fn list_tokens(url: &str, token: &str) -> (u16, Value) {
    let r = Client::new()
        .get(format!("{url}/api/v1/tokens"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    into_json(r).await
}

/// Two real `otterd` processes start at the same moment on one empty PostgreSQL database, three
/// times over: both come up (the migrations ran once), exactly one wrote an initial admin token,
/// the database holds exactly that one token, and both servers accept it. Runs on PostgreSQL
/// only: several instances share a database only there (SQLite is one server's own file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_starting_together_create_one_admin_token() {
    if backends::selected() != backends::TestDatabase::Postgres {
        eprintln!("not run on SQLite: several instances share a database only on PostgreSQL");
        return;
    }
    for round in 0..3 {
        let dir = tempfile::TempDir::new().unwrap();
        let url = backends::postgres::fresh_database();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let ((mut child_a, url_a), (mut child_b, url_b)) = tokio::join!(
            spawn_otterd(serve_on(&a, &url)),
            spawn_otterd(serve_on(&b, &url))
        );
        let written: Vec<String> = [&a, &b]
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("initial-admin-token")).ok())
            .map(|t| t.trim().to_string())
            .collect();
        assert_eq!(
            written.len(),
            1,
            "round {round}: one instance writes the token"
        );
        for d in [&a, &b] {
            let leftovers: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        }
        for server in [&url_a, &url_b] {
            let (s, v) = list_tokens(server, &written[0]).await;
            assert_eq!(s, 200, "round {round}: {v}");
            assert_eq!(
                v["tokens"].as_array().unwrap().len(),
                1,
                "round {round}: {v}"
            );
        }
        child_a.kill().await.unwrap();
        child_b.kill().await.unwrap();
    }
}

/// A unique violation names its constraint as `table(columns)`, the same on SQLite and on
/// PostgreSQL.
#[tokio::test]
async fn conflicts_name_their_constraint_on_every_backend() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let settings = otterd::config::Settings {
        data_dir: data.clone(),
        database_url: backends::database_url_for(&data),
        ..Default::default()
    };
    let state = otterd::open_state(settings).await.unwrap();
    let db = state.db;
    let p = ProductRow {
        id: 0,
        name: "thermo".into(),
        chip: "esp32".into(),
        description: String::new(),
        enrollment_secret_hash: "h".into(),
        created_at: 1,
        max_devices: None,
        enrollments_per_minute: Some(600),
        allowlist_required: true,
    };
    let created = db.create_product(&p).await.unwrap();
    assert!(created.allowlist_required);
    match db.create_product(&p).await {
        Err(DbError::Conflict(c)) => assert_eq!(c, "products(name)"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let key = KeyRow {
        product_id: created.id,
        key_id: "k1".into(),
        name: "release key".into(),
        public_key_pem: "pem".into(),
        created_at: 1,
    };
    db.add_key(&key).await.unwrap();
    match db.add_key(&key).await {
        Err(DbError::Conflict(c)) => assert_eq!(c, "product_keys(product_id, key_id)"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}
