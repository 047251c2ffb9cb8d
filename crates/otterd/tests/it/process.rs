//! The real `otterd` process: admin recovery on its host (issue 8, item 7), private file modes
//! (item 15) and refusal log lines (item 20).

use std::time::Duration;

use otter_core::Chip;
use reqwest::Client;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::harness::*;

/// Starts `otterd serve` with stderr going to `log` (a file, as under a service manager).
async fn start(data: &std::path::Path, log: &std::path::Path) -> (Child, String) {
    let mut cmd = otterd_serve(data);
    cmd.env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap());
    spawn_otterd(cmd).await
}

/// Starts the real binary, reads its first admin token and creates the product "thermo" (esp32);
/// returns the child, the URL, the token and the product's creation answer (with its secret).
async fn start_with_product(
    data: &std::path::Path,
    log: &std::path::Path,
) -> (Child, String, String, Value) {
    let (child, url) = start(data, log).await;
    let admin = std::fs::read_to_string(data.join("initial-admin-token")).unwrap();
    let admin = admin.trim().to_string();
    let (s, v) = call(
        &Client::new(),
        &url,
        &admin,
        "POST",
        "/api/v1/products",
        json!({"name": "thermo", "chip": "esp32"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    (child, url, admin, v)
}

async fn call(
    http: &Client,
    url: &str,
    token: &str,
    m: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .request(m.parse().unwrap(), format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    into_json(r).await
}

#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked() {
    let srv = spawn().await;
    let (s, v) = srv
        .call(
            reqwest::Method::GET,
            "/api/v1/tokens",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let first = v["tokens"][0]["id"].as_str().unwrap().to_string();
    let (s, v) = srv
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{first}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "conflict");
    assert!(
        v["message"].as_str().unwrap().contains("last active admin"),
        "{v}"
    );
    // With a second admin, the first can go; then the second is the last one.
    let second = srv.token("admin", &[]).await;
    let (s, _) = srv
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{first}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (_, v) = srv
        .call(reqwest::Method::GET, "/api/v1/whoami", Some(&second), None)
        .await;
    assert_eq!(v["role"], "admin");
    let (_, v) = srv
        .call(reqwest::Method::GET, "/api/v1/tokens", Some(&second), None)
        .await;
    let second_id = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["revoked"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = srv
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{second_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(s, 409);
}

/// The checks of the database file's bytes and of a wrong data directory run on SQLite only
/// (with PostgreSQL the data directory holds no database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_token_recovers_a_running_server_offline() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = start(&data, &dir.path().join("log")).await;
    // Lose the only admin token.
    std::fs::remove_file(data.join("initial-admin-token")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otterd"));
    cmd.args(["admin", "create-token", "--name", "recovered", "--data-dir"])
        .arg(&data);
    with_database(&mut cmd, &data);
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("ott_"), "{token}");
    // The running server takes it at once.
    let http = Client::new();
    let (s, v) = call(&http, &url, &token, "GET", "/api/v1/whoami", json!(null)).await;
    assert_eq!(
        (s, v["role"].as_str(), v["name"].as_str()),
        (200, Some("admin"), Some("recovered"))
    );
    let (s, _) = call(
        &http,
        &url,
        &token,
        "POST",
        "/api/v1/products",
        json!({"name": "p", "chip": "esp32"}),
    )
    .await;
    assert_eq!(s, 201);
    child.kill().await.unwrap();
    if !crate::backends::sqlite_only("the database file and its data directory") {
        return;
    }
    // Stored hashed, like every token.
    let db = std::fs::read(data.join("otter.db")).unwrap();
    let wal = std::fs::read(data.join("otter.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }
    // A wrong data directory is an error, not a new empty database.
    let out = Command::new(env!("CARGO_BIN_EXE_otterd"))
        .args(["admin", "create-token", "--name", "x", "--data-dir"])
        .arg(dir.path().join("nope"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
    assert!(!dir.path().join("nope").exists());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_is_private_and_loose_modes_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    // Put a release in, so there is a blob.
    let (mut child, url, admin, _) = start_with_product(&data, &log).await;
    let admin = admin.as_str();
    let http = Client::new();
    let key = otter_core::keys::PrivateKey::generate();
    let (s, _) = call(
        &http,
        &url,
        admin,
        "POST",
        "/api/v1/products/thermo/keys",
        json!({"public_key_pem": key.public_key().to_pem()}),
    )
    .await;
    assert_eq!(s, 201);
    let r = http
        .post(format!("{url}/api/v1/products/thermo/releases"))
        .bearer_auth(admin)
        .body(bundle(&key, "thermo", Chip::Esp32, "1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let sqlite = crate::backends::selected() == crate::backends::TestDatabase::Sqlite;
    let mut files = vec!["initial-admin-token"];
    if sqlite {
        files.extend(["otter.db", "otter.db-wal", "otter.db-shm"]);
    }
    for f in files {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let images: Vec<_> = std::fs::read_dir(data.join("blobs/images"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(images.len(), 1);
    for e in &images {
        assert_eq!(mode(&e.path()), 0o600, "{:?}", e.path());
    }
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("readable by other users"), "{text}");
    // Loosened by someone: the next start says so, and how to fix it.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let loose = if sqlite {
        "otter.db"
    } else {
        "initial-admin-token"
    };
    std::fs::set_permissions(data.join(loose), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut child, _) = start(&data, &log).await;
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("readable by other users"), "{text}");
    assert!(
        text.contains(&format!("{loose} (0644)")) && text.contains("chmod -R go-rwx"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_and_checkins_are_logged_with_their_reason_and_no_colour() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    let (mut child, url, admin, v) = start_with_product(&data, &log).await;
    let admin = admin.as_str();
    let http = Client::new();
    let secret = v["enrollment_secret"].as_str().unwrap().to_string();
    // A refused upload: garbage instead of a bundle.
    let r = http
        .post(format!("{url}/api/v1/products/thermo/releases"))
        .bearer_auth(admin)
        .body(vec![0x55u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // A refused check-in, with an escape sequence in what the device sent.
    let (s, v) = call(
        &http,
        &url,
        "",
        "POST",
        "/device/v1/enroll",
        json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": "aa"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let device = v["device_token"].as_str().unwrap().to_string();
    let (s, _) = call(&http, &url, &device, "POST", "/device/v1/checkin", json!({"version": "1.0.0", "security_counter": 0, "image_sha256": "zz", "chip": "esp32\u{1b}[31m"})).await;
    assert_eq!(s, 400);
    // A refused enrolment with a wrong secret.
    let (s, _) = call(&http, &url, "", "POST", "/device/v1/enroll", json!({"product": "thermo", "enrollment_secret": "ote_wrong-secret-value", "hardware_id": "bb"})).await;
    assert_eq!(s, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    let upload = refused
        .iter()
        .find(|l| l.contains("/api/v1/products/{product}/releases"))
        .unwrap_or_else(|| panic!("no line for the upload:\n{text}"));
    assert!(
        upload.contains("422") && upload.contains("bad_release") && upload.contains("INFO"),
        "{upload}"
    );
    let checkin = refused
        .iter()
        .find(|l| l.contains("/device/v1/checkin"))
        .unwrap_or_else(|| panic!("no line for the check-in:\n{text}"));
    assert!(
        checkin.contains("400") && checkin.contains("reason="),
        "{checkin}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("/device/v1/enroll") && l.contains("401")),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "an ESC byte in the log:\n{text:?}"
    );
    for secret in [
        admin,
        secret.as_str(),
        device.as_str(),
        "ote_wrong-secret-value",
    ] {
        assert!(!text.contains(secret), "a secret in the log");
    }
}
