//! A real S3-compatible server for the tests: moto in server mode (PyPI `moto[server]`, which
//! scripts/setup.sh installs into the repository's .venv), started once per test process on a
//! free loopback port and stopped when the process ends. Each test server gets a bucket of its
//! own. `OTTER_TEST_BLOBS=s3` runs every in-process test server on it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use otterd::config::{Secret, Settings};

/// Whether this run keeps blobs on S3 (`OTTER_TEST_BLOBS=s3`; unset or `local`: local disk).
pub fn enabled() -> bool {
    match std::env::var("OTTER_TEST_BLOBS").as_deref() {
        Ok("s3") => true,
        Ok("local") | Ok("") | Err(_) => false,
        Ok(other) => panic!("OTTER_TEST_BLOBS={other:?}: use `s3` or `local`"),
    }
}

/// The endpoint of this process's S3 server, started on first use.
pub fn endpoint() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn moto_server() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    panic!(
        "the S3 test server is missing: {} does not exist; run `bash scripts/setup.sh` \
         (it installs moto[server] into .venv)",
        venv.display()
    );
}

fn start() -> String {
    let bin = moto_server();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // moto outlives no test process: a watchdog shell stops it once this process is gone
    // (a plain child would be orphaned, since statics are never dropped).
    let script = format!(
        "\"$0\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & moto=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $moto 2>/dev/null; do sleep 1; done; \
         kill $moto 2>/dev/null",
        parent = std::process::id()
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .arg(&bin)
        .stdin(Stdio::null())
        .spawn()
        .expect("sh runs");
    // Reaped when it ends (with moto), so no zombie is left while the tests run.
    std::thread::spawn(move || watchdog.wait());
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

/// Creates a fresh bucket and points `settings` at it.
pub async fn use_fresh_bucket(settings: &mut Settings) {
    let endpoint = endpoint();
    let bucket = format!("otter-{}", uuid::Uuid::new_v4().simple());
    // moto takes an unsigned CreateBucket.
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("the S3 server answers");
    assert!(
        r.status().is_success(),
        "creating bucket {bucket}: {}",
        r.status()
    );
    settings.blob_backend = "s3".into();
    settings.s3_bucket = Some(bucket);
    settings.s3_endpoint = Some(endpoint.to_string());
    settings.s3_region = "us-east-1".into();
    settings.s3_prefix = "fw".into();
    settings.s3_access_key_id = Some("testing".into());
    settings.s3_secret_access_key = Some(Secret("testing".into()));
    settings.s3_allow_http = true;
}
