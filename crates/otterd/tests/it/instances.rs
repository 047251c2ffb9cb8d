//! Several `otterd` instances on one database (issue 9, "Scale path"): the first start is
//! race-free.

use std::path::Path;

use otter_core::Chip;
use reqwest::{Client, Method};
use serde_json::{json, Value};

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

/// Two real `otterd` processes on one PostgreSQL database serve one fleet: a product and release
/// made through one are what a device enrolled through the other is offered, and a device
/// deleted through one is refused by the other at once. Runs on PostgreSQL only: several
/// instances share a database only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_serve_one_fleet() {
    if backends::selected() != backends::TestDatabase::Postgres {
        eprintln!("not run on SQLite: several instances share a database only on PostgreSQL");
        return;
    }
    let (dir_a, dir_b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (a_data, b_data) = (dir_a.path().join("data"), dir_b.path().join("data"));
    let url = backends::postgres::fresh_database();
    // A logs everything it can (sqlx's statements too): the password must not be among it.
    let log_a = dir_a.path().join("log");
    let mut cmd_a = serve_on(&a_data, &url);
    cmd_a
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log_a).unwrap());
    let (mut child_a, url_a) = spawn_otterd(cmd_a).await;
    let (mut child_b, url_b) = spawn_otterd(serve_on(&b_data, &url)).await;
    assert!(!b_data.join("initial-admin-token").exists());
    let a = TestServer::attach(url_a, dir_a, &a_data);
    let mut b = TestServer::attach(url_b, dir_b, &a_data);
    b.admin = a.admin.clone();
    let (key, secret) = a.product("thermo", Chip::Esp32C3).await;
    let (s, rel) = a.publish(&key, "thermo", Chip::Esp32C3, "1.1.0").await;
    assert_eq!(s, 201, "{rel}");
    let (device_id, token) = b.enroll("thermo", &secret, "aa:bb").await;
    let checkin = json!({"version": "1.0.0", "security_counter": 0, "chip": "esp32c3",
        "image_sha256": "0000000000000000000000000000000000000000000000000000000000000000"});
    let (s, v) = b
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(rel["id"].is_string(), "{rel}");
    assert_eq!(v["update"]["release_id"], rel["id"], "{v}");
    // What B recorded, A shows.
    let (s, v) = a
        .call(
            Method::GET,
            &format!("/api/v1/devices/{device_id}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(
        (s, v["device"]["version"].as_str()),
        (200, Some("1.0.0")),
        "{v}"
    );
    let (s, _) = a
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{device_id}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = b
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin),
        )
        .await;
    assert_eq!(s, 401);
    child_a.kill().await.unwrap();
    child_b.kill().await.unwrap();
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(creds, _)| creds.split_once(':'))
        .map(|(_, pw)| pw.to_string())
        .unwrap();
    let log = std::fs::read_to_string(&log_a).unwrap();
    assert!(log.contains("SELECT"), "debug logging was on: {log}");
    assert!(!log.contains(&password), "the password is logged: {log}");
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
            "# url = \"postgres://otter:***@db/otter?sslmode=require&password=***\"  # environment"
        ),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// The device cap holds across instances (issue 9): sixty enrolments at once, half through each
/// of two real `otterd` processes on one PostgreSQL database, into a product capped at 7 (three
/// products in turn): exactly 7 are enrolled in each, the others refused with `device_limit`,
/// and the database holds 7 devices of each.
/// Runs on PostgreSQL only: several instances share a database only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_enrol_beyond_the_device_cap() {
    if backends::selected() != backends::TestDatabase::Postgres {
        eprintln!("not run on SQLite: several instances share a database only on PostgreSQL");
        return;
    }
    let (dir_a, dir_b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (a_data, b_data) = (dir_a.path().join("data"), dir_b.path().join("data"));
    let url = backends::postgres::fresh_database();
    let (mut child_a, url_a) = spawn_otterd(serve_on(&a_data, &url)).await;
    let (mut child_b, url_b) = spawn_otterd(serve_on(&b_data, &url)).await;
    let a = TestServer::attach(url_a.clone(), dir_a, &a_data);
    let http = Client::new();
    // Three products, one after the other: one race may happen to pass without the lock.
    for product in ["thermo", "lamp", "plug"] {
        let (_, secret) = a.product(product, Chip::Esp32C3).await;
        let (s, v) = a
            .call(
                Method::PATCH,
                &format!("/api/v1/products/{product}"),
                Some(&a.admin),
                Some(json!({"max_devices": 7, "enrollments_per_minute": null})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        // Every request waits for the others, so they reach both servers together.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(60));
        let mut tasks = Vec::new();
        for i in 0..60 {
            let server = if i % 2 == 0 { &url_a } else { &url_b }.clone();
            let (http, secret, start) = (http.clone(), secret.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let r = http
                    .post(format!("{server}/device/v1/enroll"))
                    .json(&json!({"product": product, "enrollment_secret": secret,
                        "hardware_id": format!("hw-{i}")}))
                    .send()
                    .await
                    .unwrap();
                into_json(r).await
            }));
        }
        let mut enrolled = 0;
        for t in tasks {
            let (s, v) = t.await.unwrap();
            match s {
                201 => enrolled += 1,
                403 => assert_eq!(v["error"], "device_limit", "{v}"),
                _ => panic!("{s}: {v}"),
            }
        }
        assert_eq!(enrolled, 7, "{product}");
        let (s, v) = a
            .call(
                Method::GET,
                &format!("/api/v1/devices?product={product}&limit=100"),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["devices"].as_array().unwrap().len(), 7, "{product}: {v}");
    }
    child_a.kill().await.unwrap();
    child_b.kill().await.unwrap();
}
