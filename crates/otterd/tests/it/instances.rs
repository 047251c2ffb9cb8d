//! Several `otterd` instances on one database (issue 9, "Scale path"): the first start is
//! race-free.

use std::path::Path;

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

/// The real binary with a database URL it cannot use: an unknown scheme is refused with the
/// accepted forms, an unreachable PostgreSQL says why at once, and neither error nor
/// `config show --sources` shows the password.
#[tokio::test]
async fn a_bad_database_url_is_refused_and_its_password_never_shown() {
    let dir = tempfile::TempDir::new().unwrap();
    let otterd = |args: &[&str], url: &str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_otterd"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("OTTER_DATABASE_URL", url)
            .env("RUST_LOG", "debug")
            .env("RUST_BACKTRACE", "0");
        cmd
    };
    let serve = ["serve", "--listen", "127.0.0.1:0"];
    let out = otterd(&serve, "mysql://otter:s3cret@db/otter")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sqlite://PATH")
            && err.contains("postgres://")
            && err.contains("otter:***@db"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // Port 1 on loopback: nothing listens there.
    let started = std::time::Instant::now();
    let out = otterd(&serve, "postgres://otter:s3cret@127.0.0.1:1/otter")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("postgres://otter:***@127.0.0.1:1/otter") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let out = otterd(
        &["config", "show", "--sources"],
        "postgres://otter:s3cret@db/otter?sslmode=require&password=s3cret",
    )
    .output()
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains(
            "database_url = \"postgres://otter:***@db/otter?sslmode=require&password=***\"  # environment"
        ),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}
