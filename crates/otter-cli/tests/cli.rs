//! End-to-end: the real `otter` binary drives a real `otterd` process (free port, temporary data
//! directory), and an HTTP client plays the device. `scripts/test.sh` builds both binaries first;
//! `OTTERD_BIN` may point at another build.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};

use assert_cmd::Command;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// A running otterd that is killed when dropped.
struct Server {
    child: Child,
    url: String,
    admin: String,
    dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn otterd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OTTERD_BIN") {
        return p.into();
    }
    let otter = assert_cmd::cargo::cargo_bin("otter");
    let p = otter.with_file_name(format!("otterd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

fn start_server() -> Server {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let mut child = Process::new(otterd_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        // Followed GitHub repositories are polled here, never on the internet (nothing listens).
        .env("OTTER_GITHUB_API_URL", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("otterd runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("otterd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let admin = std::fs::read_to_string(data.join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_string();
    Server {
        child,
        url,
        admin,
        dir,
    }
}

impl Server {
    /// `otter` with this server and a token, working in the temporary directory.
    fn otter(&self, token: &str) -> Command {
        let mut c = Command::cargo_bin("otter").unwrap();
        c.current_dir(self.dir.path())
            .env("OTTER_SERVER", &self.url)
            .env("OTTER_TOKEN", token)
            .env_remove("RUST_LOG");
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `otter --json ARGS` and returns the JSON on stdout; asserts success.
    fn json(&self, token: &str, args: &[&str]) -> Value {
        let out = self.otter(token).arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "otter {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `otter --json ARGS`, expects `exit`, returns the JSON error from stderr.
    fn fails(&self, token: &str, args: &[&str], exit: i32) -> Value {
        let out = self.otter(token).arg("--json").args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(exit),
            "otter {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "nothing on stdout after an error");
        serde_json::from_slice(&out.stderr).unwrap()
    }

    fn releases(&self) -> Vec<Value> {
        self.json(&self.admin, &["release", "list"])["releases"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Sets up product `thermo` (esp32c3) with a registered key; returns the enrolment secret.
fn product_with_key(s: &Server) -> String {
    s.json(&s.admin, &["keygen", "--out", "release.key"]);
    let created = s.json(
        &s.admin,
        &["product", "create", "thermo", "--chip", "esp32c3"],
    );
    assert_eq!(created["product"]["chip"], "esp32c3");
    s.json(
        &s.admin,
        &[
            "product",
            "key",
            "add",
            "thermo",
            "--pub",
            "release.pub.pem",
        ],
    );
    created["enrollment_secret"].as_str().unwrap().to_string()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn synth(s: &Server, chip: &str, version: &str, out: &str) {
    s.json(
        &s.admin,
        &[
            "dev",
            "synth-image",
            "--chip",
            chip,
            "--version",
            version,
            "--size",
            "50000",
            "--out",
            out,
        ],
    );
}

#[test]
fn keygen_writes_a_private_key_only_the_owner_reads_and_never_overwrites() {
    let dir = TempDir::new().unwrap();
    let run = || {
        let mut c = Command::cargo_bin("otter").unwrap();
        c.current_dir(dir.path());
        c
    };
    run().args(["keygen", "--out", "ci.key"]).assert().success();
    let private = std::fs::read_to_string(dir.path().join("ci.key")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    let public = std::fs::read_to_string(dir.path().join("ci.pub.pem")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ci.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = run().args(["keygen", "--out", "ci.key"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ci.key")).unwrap(),
        private,
        "the key was not touched"
    );
    run()
        .args(["keygen", "--out", "ci.key", "--force"])
        .assert()
        .success();
    assert_ne!(
        std::fs::read_to_string(dir.path().join("ci.key")).unwrap(),
        private
    );
}

#[test]
fn openssl_reads_the_key_files() {
    let Ok(_) = Process::new("openssl").arg("version").output() else {
        panic!("openssl is needed for this interop test (Debian package openssl)");
    };
    let dir = TempDir::new().unwrap();
    Command::cargo_bin("otter")
        .unwrap()
        .current_dir(dir.path())
        .args(["keygen", "--out", "k.key"])
        .assert()
        .success();
    let derived = Process::new("openssl")
        .args(["pkey", "-in", "k.key", "-pubout"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(derived.status.success());
    assert_eq!(
        String::from_utf8(derived.stdout).unwrap(),
        std::fs::read_to_string(dir.path().join("k.pub.pem")).unwrap()
    );
}

#[test]
fn sign_push_list_and_a_device_updates() {
    let s = start_server();
    let secret = product_with_key(&s);
    let publisher = s.json(
        &s.admin,
        &[
            "token",
            "create",
            "--role",
            "publisher",
            "--product",
            "thermo",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    synth(&s, "esp32c3", "1.1.0", "fw.bin");

    let info = s.json(&s.admin, &["inspect", "fw.bin"]);
    assert_eq!(info["chip"], "esp32c3");
    assert_eq!(info["app"]["version"], "1.1.0");
    let image = std::fs::read(s.path("fw.bin")).unwrap();
    assert_eq!(info["sha256"], hex::encode(Sha256::digest(&image)));

    // CI: the publisher token signs and pushes in one step.
    let pushed = s.json(
        &publisher,
        &[
            "release",
            "push",
            "fw.bin",
            "--product",
            "thermo",
            "--channel",
            "stable",
            "--key",
            "release.key",
            "--security-counter",
            "2",
        ],
    );
    assert_eq!(pushed["version"], "1.1.0");
    assert_eq!(pushed["security_counter"], 2);
    assert_eq!(pushed["project_name"], "otter-synth");
    let release_id = pushed["id"].as_str().unwrap().to_string();

    // The same release signed offline, then pushed to beta as a release.otter.
    let signed = s.json(
        &s.admin,
        &[
            "sign",
            "fw.bin",
            "--key",
            "release.key",
            "--product",
            "thermo",
            "--out",
            "r.otter",
        ],
    );
    assert_eq!(signed["manifest"]["version"], "1.1.0");
    let verified = s.json(&s.admin, &["verify", "r.otter", "--pub", "release.pub.pem"]);
    assert_eq!(verified["valid"], true);
    let beta = s.json(
        &publisher,
        &["release", "push", "r.otter", "--channel", "beta"],
    );
    assert_eq!(beta["channel"], "beta");
    assert_eq!(beta["sha256"], pushed["sha256"]);
    let listed = s.releases();
    assert_eq!(listed.len(), 2);
    let shown = s.json(&s.admin, &["release", "show", &release_id]);
    assert_eq!(shown["sha256"], pushed["sha256"]);

    // A device enrols, checks in, downloads (whole and by Range), reports.
    let http = reqwest::blocking::Client::new();
    let enrolled: Value = http
        .post(format!("{}/device/v1/enroll", s.url))
        .json(&json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": "24:6f:28:aa:bb:cc"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let device_token = enrolled["device_token"].as_str().unwrap();
    let checkin: Value = http
        .post(format!("{}/device/v1/checkin", s.url))
        .bearer_auth(device_token)
        .json(&json!({"version": "1.0.0", "security_counter": 0, "image_sha256": "00".repeat(32), "chip": "esp32c3"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let update = &checkin["update"];
    assert_eq!(update["release_id"], release_id.as_str());
    let url = format!("{}{}", s.url, update["download_url"].as_str().unwrap());
    let whole = http.get(&url).bearer_auth(device_token).send().unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().unwrap().to_vec(), image);
    let part = http
        .get(&url)
        .bearer_auth(device_token)
        .header("Range", "bytes=1000-")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().unwrap().to_vec(), image[1000..].to_vec());
    for (state, extra) in [
        ("downloading", json!({"progress_bytes": 1000})),
        ("downloaded", json!({})),
        ("success", json!({})),
    ] {
        let mut body = json!({"release_id": release_id, "state": state});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = http
            .post(format!("{}/device/v1/status", s.url))
            .bearer_auth(device_token)
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "status {state}: {}", r.status());
    }

    let devices = s.json(&s.admin, &["device", "list"]);
    let device_id = devices["devices"][0]["id"].as_str().unwrap().to_string();
    let detail = s.json(&s.admin, &["device", "show", &device_id]);
    let states: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    for st in ["downloading", "downloaded", "success"] {
        assert!(states.contains(&st), "{states:?}");
    }
    // Human output works too (a table with the device).
    s.otter(&s.admin)
        .args(["device", "list"])
        .assert()
        .success()
        .stdout(predicates::str::contains("24:6f:28:aa:bb:cc"));
}

#[test]
fn refusals_are_clear_and_store_nothing() {
    let s = start_server();
    product_with_key(&s);
    s.json(
        &s.admin,
        &["product", "create", "other", "--chip", "esp32c3"],
    );
    s.json(
        &s.admin,
        &["product", "key", "add", "other", "--pub", "release.pub.pem"],
    );
    let token = |role: &str, product: Option<&str>| {
        let mut args = vec!["token", "create", "--role", role];
        if let Some(p) = product {
            args.extend(["--product", p]);
        }
        s.json(&s.admin, &args)["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let publisher = token("publisher", Some("thermo"));
    let viewer = token("viewer", None);
    synth(&s, "esp32c3", "2.0.0", "fw.bin");
    synth(&s, "esp32", "2.0.0", "esp32.bin");
    s.json(&s.admin, &["keygen", "--out", "stranger.key"]);
    let push = |key: &str, file: &str, product: &str| {
        vec![
            "release".to_string(),
            "push".into(),
            file.into(),
            "--product".into(),
            product.into(),
            "--key".into(),
            key.into(),
        ]
    };

    // A key the product does not know.
    let e = s.fails(
        &s.admin,
        &args(&push("stranger.key", "fw.bin", "thermo")),
        1,
    );
    assert_eq!(e["error"], "bad_release");
    assert!(e["message"].as_str().unwrap().contains("key"), "{e}");
    // An image for another chip.
    let e = s.fails(
        &s.admin,
        &args(&push("release.key", "esp32.bin", "thermo")),
        1,
    );
    assert_eq!(e["error"], "bad_release");
    assert!(e["message"].as_str().unwrap().contains("esp32"), "{e}");
    // A publisher pushing to a product not in its token; a viewer pushing at all.
    let e = s.fails(
        &publisher,
        &args(&push("release.key", "fw.bin", "other")),
        4,
    );
    assert_eq!(e["error"], "forbidden");
    let e = s.fails(&viewer, &args(&push("release.key", "fw.bin", "thermo")), 4);
    assert_eq!(e["error"], "forbidden");
    // A bad token, and no server at all.
    let e = s.fails("ott_not-a-real-token", &["release", "list"], 4);
    assert_eq!(e["error"], "unauthorized");
    let out = Command::cargo_bin("otter")
        .unwrap()
        .args([
            "--json",
            "release",
            "list",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "ott_x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // A firmware image pushed without a key is refused before anything is sent.
    let e = s.fails(
        &s.admin,
        &["release", "push", "fw.bin", "--product", "thermo"],
        2,
    );
    assert!(e["message"].as_str().unwrap().contains("--key"), "{e}");
    // A file that is not firmware.
    std::fs::write(s.path("notes.txt"), "hello").unwrap();
    let e = s.fails(
        &s.admin,
        &args(&push("release.key", "notes.txt", "thermo")),
        2,
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not a valid firmware image"),
        "{e}"
    );
    // --version that disagrees with the image.
    let mut v = push("release.key", "fw.bin", "thermo");
    v.extend(["--version".to_string(), "9.9.9".into()]);
    let e = s.fails(&s.admin, &args(&v), 2);
    assert!(e["message"].as_str().unwrap().contains("2.0.0"), "{e}");

    assert!(s.releases().is_empty(), "nothing was stored");
}

#[test]
fn verify_refuses_tampering_untrusted_keys_and_expiry() {
    let dir = TempDir::new().unwrap();
    let otter = || {
        let mut c = Command::cargo_bin("otter").unwrap();
        c.current_dir(dir.path());
        c
    };
    otter()
        .args(["keygen", "--out", "a.key"])
        .assert()
        .success();
    otter()
        .args(["keygen", "--out", "b.key"])
        .assert()
        .success();
    otter()
        .args([
            "dev",
            "synth-image",
            "--chip",
            "esp8266",
            "--version",
            "x",
            "--out",
            "fw.bin",
        ])
        .assert()
        .success();
    // ESP8266 images carry no version: --version is required.
    otter()
        .args([
            "sign",
            "fw.bin",
            "--key",
            "a.key",
            "--product",
            "p",
            "--out",
            "r.otter",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--version"));
    otter()
        .args([
            "sign",
            "fw.bin",
            "--key",
            "a.key",
            "--key",
            "b.key",
            "--product",
            "p",
            "--version",
            "3.1.0",
            "--out",
            "r.otter",
        ])
        .assert()
        .success();
    otter()
        .args([
            "verify",
            "r.otter",
            "--pub",
            "a.pub.pem",
            "--pub",
            "b.pub.pem",
            "--threshold",
            "2",
        ])
        .assert()
        .success();
    otter()
        .args([
            "verify",
            "r.otter",
            "--pub",
            "a.pub.pem",
            "--threshold",
            "2",
        ])
        .assert()
        .code(1);

    // Untrusted key.
    otter()
        .args(["keygen", "--out", "c.key"])
        .assert()
        .success();
    otter()
        .args(["verify", "r.otter", "--pub", "c.pub.pem"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("no signature by a trusted key"));

    // One image byte changed.
    let mut bytes = std::fs::read(dir.path().join("r.otter")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join("bad.otter"), &bytes).unwrap();
    otter()
        .args(["verify", "bad.otter", "--pub", "a.pub.pem"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("does NOT verify"));

    // An expiry in the past cannot be signed at all.
    otter()
        .args([
            "sign",
            "fw.bin",
            "--key",
            "a.key",
            "--product",
            "p",
            "--version",
            "3.1.0",
            "--expires-at",
            "1000",
            "--out",
            "old.otter",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "expiry must be after the creation time",
        ));
    // Expired: valid for one second, checked two seconds later.
    otter()
        .args([
            "sign",
            "fw.bin",
            "--key",
            "a.key",
            "--product",
            "p",
            "--version",
            "3.1.0",
            "--expires-in",
            "1s",
            "--out",
            "old.otter",
        ])
        .assert()
        .success();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    otter()
        .args(["verify", "old.otter", "--pub", "a.pub.pem"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("expired"));

    // inspect shows a bundle's manifest and signers without keys.
    let out = otter()
        .args(["--json", "inspect", "r.otter"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["version"], "3.1.0");
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(v["image"]["chip"], "esp8266");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::cargo_bin("otter")
        .unwrap()
        .args(["release", "push"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::cargo_bin("otter")
        .unwrap()
        .args(["inspect", "/nonexistent/fw.bin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fw.bin"));
}

// ---------- issue 8: real firmware, broken pipes, and what a newcomer met ----------

/// The real firmware corpus: `OTTER_FIRMWARE_DIR`, else `../shared/firmware` beside the
/// repository (CI has it); `None` only when the folder is really absent.
fn firmware_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OTTER_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/firmware")
        });
    dir.is_dir().then_some(dir)
}

/// An ESP-IDF image whose `esp_app_desc_t.version` is empty, as every MicroPython build has.
fn write_unversioned_image(path: &std::path::Path, chip: otter_core::Chip, seed: u64) {
    let bytes = otter_core::image::synth::build(&otter_core::image::synth::SynthApp {
        chip,
        version: String::new(),
        payload_len: 40_000,
        seed,
        ..Default::default()
    });
    assert_eq!(
        otter_core::image::parse(&bytes)
            .unwrap()
            .app
            .unwrap()
            .version,
        ""
    );
    std::fs::write(path, bytes).unwrap();
}

fn checkin(s: &Server, device_token: &str, version: &str, image: &[u8], chip: &str) -> Value {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/device/v1/checkin", s.url))
        .bearer_auth(device_token)
        .json(&json!({"version": version, "security_counter": 0,
            "image_sha256": hex::encode(Sha256::digest(image)), "chip": chip}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "check-in with version {version:?}");
    r.json().unwrap()
}

fn enroll(s: &Server, product: &str, secret: &str, hardware_id: &str) -> String {
    let v: Value = reqwest::blocking::Client::new()
        .post(format!("{}/device/v1/enroll", s.url))
        .json(&json!({"product": product, "enrollment_secret": secret, "hardware_id": hardware_id}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["device_token"].as_str().unwrap().to_string()
}

#[test]
fn images_without_a_built_in_version_are_signed_with_version_and_their_devices_check_in() {
    let s = start_server();
    let secret = product_with_key(&s);
    write_unversioned_image(&s.path("old.bin"), otter_core::Chip::Esp32C3, 1);
    write_unversioned_image(&s.path("new.bin"), otter_core::Chip::Esp32C3, 2);

    // Without --version: a clear request for one, never an empty value in the message.
    for cmd in [
        vec![
            "sign",
            "new.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
        ],
        vec![
            "release",
            "push",
            "new.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
        ],
    ] {
        let e = s.fails(&s.admin, &cmd, 2);
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("--version"), "{msg}");
        assert!(msg.contains("empty"), "{msg}");
        assert!(!msg.contains("as  or"), "{msg}");
    }
    let signed = s.json(
        &s.admin,
        &[
            "sign",
            "new.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
            "--version",
            "1.20.1",
            "--out",
            "new.otter",
        ],
    );
    assert_eq!(signed["manifest"]["version"], "1.20.1");
    let pushed = s.json(
        &s.admin,
        &[
            "release",
            "push",
            "new.bin",
            "--version",
            "1.20.1",
            "--product",
            "thermo",
            "--key",
            "release.key",
        ],
    );
    assert_eq!(pushed["version"], "1.20.1");

    // A device running the old unversioned image checks in, is offered 1.20.1, and after the
    // update is recognised by its image hash: nothing more is offered.
    let token = enroll(&s, "thermo", &secret, "24:6f:28:00:00:01");
    let old = std::fs::read(s.path("old.bin")).unwrap();
    let new = std::fs::read(s.path("new.bin")).unwrap();
    let offer = checkin(&s, &token, "", &old, "esp32c3");
    assert_eq!(offer["update"]["version"], "1.20.1");
    let after = checkin(&s, &token, "", &new, "esp32c3");
    assert!(after["update"].is_null(), "{after}");
    s.otter(&s.admin)
        .args(["device", "list"])
        .assert()
        .success()
        .stdout(predicates::str::contains("unknown"));
    let id = s.json(&s.admin, &["device", "list"])["devices"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.otter(&s.admin)
        .args(["device", "show", &id])
        .assert()
        .success()
        .stdout(predicates::str::is_match(r"version\s+unknown").unwrap());

    // An image with a version of its own and a different --version: refused, naming both.
    synth(&s, "esp32c3", "2.0.0", "v2.bin");
    let e = s.fails(
        &s.admin,
        &[
            "sign",
            "v2.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
            "--version",
            "2.0.1",
        ],
        2,
    );
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("sign it as 2.0.0"), "{msg}");
    assert!(msg.contains("2.0.1"), "{msg}");
}

#[test]
fn real_micropython_pair_is_pushed_with_version_and_its_device_updates() {
    let Some(dir) = firmware_dir() else {
        eprintln!("../shared/firmware is absent: the real MicroPython pair was not tried (the synthetic test covers the same path)");
        return;
    };
    let pair = dir.join("p2-esp32-mpy-st7789-patch");
    let s = start_server();
    s.json(&s.admin, &["keygen", "--out", "release.key"]);
    let secret = s.json(&s.admin, &["product", "create", "mpy", "--chip", "esp32"])
        ["enrollment_secret"]
        .as_str()
        .unwrap()
        .to_string();
    s.json(
        &s.admin,
        &["product", "key", "add", "mpy", "--pub", "release.pub.pem"],
    );
    let new_bin = pair.join("new.bin");
    let pushed = s.json(
        &s.admin,
        &[
            "release",
            "push",
            new_bin.to_str().unwrap(),
            "--version",
            "1.20.1",
            "--product",
            "mpy",
            "--key",
            "release.key",
        ],
    );
    assert_eq!(pushed["version"], "1.20.1", "{}", new_bin.display());
    let token = enroll(&s, "mpy", &secret, "24:6f:28:00:00:02");
    let old = std::fs::read(pair.join("old.bin")).unwrap();
    let new = std::fs::read(&new_bin).unwrap();
    assert_eq!(
        checkin(&s, &token, "", &old, "esp32")["update"]["version"],
        "1.20.1"
    );
    assert!(checkin(&s, &token, "", &new, "esp32")["update"].is_null());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = TempDir::new().unwrap();
    write_unversioned_image(&dir.path().join("fw.bin"), otter_core::Chip::Esp32, 3);
    let otter = assert_cmd::cargo::cargo_bin("otter");
    for json in [false, true] {
        // The shell waits until the reader below has closed the pipe, then runs otter.
        let mut child = Process::new("sh")
            .arg("-c")
            .arg(r#"sleep 0.3; exec "$0" "$@""#)
            .arg(&otter)
            .args(json.then_some("--json"))
            .args(["inspect", "fw.bin"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
    }
}

#[test]
fn inspect_reads_esp8266_flash_sizes_with_the_esp8266_table() {
    let dir = TempDir::new().unwrap();
    let mut img = otter_core::image::synth::build(&otter_core::image::synth::SynthApp {
        chip: otter_core::Chip::Esp8266,
        ..Default::default()
    });
    img[3] = 0x50 | (img[3] & 0x0F); // esptool: 2MB-c1 (the ESP32 table would say 32MB)
    std::fs::write(dir.path().join("fw.bin"), &img).unwrap();
    let out = Command::cargo_bin("otter")
        .unwrap()
        .current_dir(dir.path())
        .args(["--json", "inspect", "fw.bin"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["flash"]["size"], "2MB-c1");
    assert_eq!(v["flash"]["size_bytes"], 2 * 1024 * 1024);
    assert_eq!(v["flash"]["freq"], "40m");
    Command::cargo_bin("otter")
        .unwrap()
        .current_dir(dir.path())
        .args(["inspect", "fw.bin"])
        .assert()
        .success()
        .stdout(predicates::str::contains("2MB-c1"))
        .stdout(predicates::str::contains("checksum"));
    if let Some(corpus) = firmware_dir() {
        let p5 = corpus.join("p5-esp8266-mpy-release/new.bin");
        let out = Command::cargo_bin("otter")
            .unwrap()
            .args(["--json", "inspect", p5.to_str().unwrap()])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["flash"]["size"], "512KB", "{}", p5.display());
        assert_eq!(v["segments"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn pushing_a_file_that_is_not_firmware_says_so_before_asking_for_a_key() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("pic.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let out = Command::cargo_bin("otter")
        .unwrap()
        .current_dir(dir.path())
        .args(["release", "push", "pic.png", "--product", "thermo"])
        .env("OTTER_SERVER", "http://127.0.0.1:9")
        .env("OTTER_TOKEN", "ott_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pic.png is not a valid firmware image"),
        "{err}"
    );
    assert!(!err.contains("is a firmware image"), "{err}");
    assert!(!err.contains("--key"), "{err}");
}

#[test]
fn server_url_mistakes_are_named() {
    let s = start_server();
    // https:// against otterd's plain HTTP.
    let https = s.url.replacen("http://", "https://", 1);
    let e = s.fails(&s.admin, &["release", "list", "--server", &https], 3);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("does not speak TLS"), "{msg}");
    assert!(msg.contains(&s.url), "names the http:// URL to use: {msg}");
    assert!(!msg.contains("InvalidContentType"), "{msg}");
    // An API path in the server URL: refused before sending, naming the base URL.
    let with_api = format!("{}/api/v1", s.url);
    let e = s.fails(&s.admin, &["release", "list", "--server", &with_api], 2);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&with_api) && msg.contains(&format!("({})", s.url)),
        "{msg}"
    );
    // Another path: the server knows no such route; the message names the URL asked.
    let prefixed = format!("{}/otter", s.url);
    let e = s.fails(&s.admin, &["release", "list", "--server", &prefixed], 1);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{prefixed}/api/v1/releases")),
        "{msg}"
    );
    assert!(msg.contains("base URL"), "{msg}");
}

#[test]
fn the_no_key_hint_is_a_command_that_works() {
    let s = start_server();
    s.json(&s.admin, &["keygen", "--out", "release.key"]);
    s.json(
        &s.admin,
        &["product", "create", "nokey", "--chip", "esp32c3"],
    );
    synth(&s, "esp32c3", "1.0.0", "fw.bin");
    let push = [
        "release",
        "push",
        "fw.bin",
        "--product",
        "nokey",
        "--key",
        "release.key",
    ];
    let e = s.fails(&s.admin, &push, 1);
    let msg = e["message"].as_str().unwrap();
    let hint = "otter product key add nokey --pub release.pub.pem";
    assert!(msg.contains(hint), "{msg}");
    // Running the hint as written makes the push work.
    let hint_args: Vec<&str> = hint.split(' ').skip(1).collect();
    s.json(&s.admin, &hint_args);
    s.json(&s.admin, &push);
}

#[test]
fn release_show_gives_every_time_in_iso_8601() {
    let s = start_server();
    product_with_key(&s);
    synth(&s, "esp32c3", "1.0.0", "fw.bin");
    let pushed = s.json(
        &s.admin,
        &[
            "release",
            "push",
            "fw.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
            "--expires-in",
            "90d",
        ],
    );
    let id = pushed["id"].as_str().unwrap();
    let out = s
        .otter(&s.admin)
        .args(["release", "show", id])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for key in ["created_at", "expires_at", "published_at"] {
        let re = format!(r"(?m)^{key}\s+\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ$");
        assert!(
            predicates::prelude::Predicate::eval(
                &predicates::str::is_match(re.as_str()).unwrap(),
                text.as_str()
            ),
            "{key} is not ISO 8601 UTC:\n{text}"
        );
    }
    // JSON keeps the API's fields as they are (docs/api.md).
    assert!(s.json(&s.admin, &["release", "show", id])["created_at"].is_i64());
}

#[test]
fn offline_commands_do_not_offer_server_options() {
    for cmd in [
        &["keygen"][..],
        &["inspect"],
        &["sign"],
        &["verify"],
        &["dev", "synth-image"],
    ] {
        let out = Command::cargo_bin("otter")
            .unwrap()
            .args(cmd)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(
            !help.contains("--server") && !help.contains("--token"),
            "{cmd:?}: {help}"
        );
    }
    for cmd in [&["release", "push"][..], &["device", "list"], &["whoami"]] {
        let out = Command::cargo_bin("otter")
            .unwrap()
            .args(cmd)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--server") && help.contains("--token"),
            "{cmd:?}: {help}"
        );
    }
}

/// Issue 8, item 18: a security counter below the channel's highest is refused before any
/// image byte is sent (the channel's releases are fetched and checked first), unless
/// `--allow-lower-counter` says it is meant, and then a warning says what it does.
#[test]
fn push_refuses_a_counter_below_the_channels_highest_unless_allowed() {
    let s = start_server();
    product_with_key(&s);
    synth(&s, "esp32c3", "5.0.0", "five.bin");
    synth(&s, "esp32c3", "5.1.0", "five-one.bin");
    let push = |file: &str, counter: &str| {
        vec![
            "release".to_string(),
            "push".into(),
            file.into(),
            "--product".into(),
            "thermo".into(),
            "--key".into(),
            "release.key".into(),
            "--security-counter".into(),
            counter.into(),
        ]
    };
    s.json(&s.admin, &args(&push("five.bin", "5")));
    let e = s.fails(&s.admin, &args(&push("five-one.bin", "2")), 1);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("security counter 2 is lower than 5 of release 5.0.0")
            && msg.contains("--allow-lower-counter"),
        "{msg}"
    );
    assert_eq!(s.releases().len(), 1, "nothing was published");

    let mut allowed = push("five-one.bin", "2");
    allowed.push("--allow-lower-counter".into());
    let out = s.otter(&s.admin).args(args(&allowed)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: security counter 2 is lower than 5"),
        "{stderr}"
    );
    assert_eq!(s.releases().len(), 2);
}

fn enroll_thermo(s: &Server, secret: &str, hw: &str) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/device/v1/enroll", s.url))
        .json(&json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": hw}))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Issue 8, item 6: the enrolment bounds from the CLI.
#[test]
fn product_update_allowlist_and_allow_reenroll_bound_enrolment() {
    let s = start_server();
    let secret = product_with_key(&s);
    let p = s.json(&s.admin, &["product", "show", "thermo"]);
    assert_eq!(
        (
            p["max_devices"].clone(),
            p["enrollments_per_minute"].clone()
        ),
        (Value::Null, json!(600))
    );
    let p = s.json(
        &s.admin,
        &[
            "product",
            "update",
            "thermo",
            "--max-devices",
            "3",
            "--enrollments-per-minute",
            "none",
        ],
    );
    assert_eq!(
        (
            p["max_devices"].clone(),
            p["enrollments_per_minute"].clone()
        ),
        (json!(3), Value::Null)
    );
    let e = s.fails(
        &s.admin,
        &["product", "update", "thermo", "--max-devices", "lots"],
        2,
    );
    assert!(e["message"].as_str().unwrap().contains("none"), "{e}");
    s.fails(&s.admin, &["product", "update", "thermo"], 2);

    std::fs::write(
        s.path("factory.csv"),
        "serial,hardware_id\n1,aa:01\n2,aa:02\n",
    )
    .unwrap();
    std::fs::write(
        s.path("bad.csv"),
        "serial,hardware_id\n3,aa:03\n4,\"aa:04\n",
    )
    .unwrap();
    let v = s.json(
        &s.admin,
        &["product", "allowlist", "import", "thermo", "factory.csv"],
    );
    assert_eq!(v["added"], 2);
    let e = s.fails(
        &s.admin,
        &["product", "allowlist", "import", "thermo", "bad.csv"],
        1,
    );
    assert!(
        e["message"].as_str().unwrap().contains("nothing imported"),
        "{e}"
    );
    let v = s.json(&s.admin, &["product", "allowlist", "list", "thermo"]);
    assert_eq!(v["hardware_ids"], json!(["aa:01", "aa:02"]));
    s.json(
        &s.admin,
        &["product", "update", "thermo", "--allowlist", "on"],
    );
    assert_eq!(
        enroll_thermo(&s, &secret, "zz:99").0,
        403,
        "not on the list"
    );
    let (st, first) = enroll_thermo(&s, &secret, "aa:01");
    assert_eq!(st, 201);
    assert_eq!(enroll_thermo(&s, &secret, "aa:01").0, 409);
    s.json(
        &s.admin,
        &[
            "device",
            "allow-reenroll",
            "aa:01",
            "--product",
            "thermo",
            "--valid-for",
            "10m",
        ],
    );
    let (st, again) = enroll_thermo(&s, &secret, "aa:01");
    assert_eq!((st, &again["device_id"]), (201, &first["device_id"]));
    assert_eq!(enroll_thermo(&s, &secret, "aa:01").0, 409, "once");
    s.json(
        &s.admin,
        &["product", "allowlist", "remove", "thermo", "aa:02"],
    );
    assert_eq!(enroll_thermo(&s, &secret, "aa:02").0, 403);
    let e = s.fails(
        &s.admin,
        &["device", "allow-reenroll", "aa:02", "--product", "thermo"],
        1,
    );
    assert_eq!(e["error"], "not_found");
}

/// Issue 8, item 14: list commands fetch every page, or stop at --limit.
#[test]
fn list_commands_follow_pages() {
    let s = start_server();
    let secret = product_with_key(&s);
    for i in 0..5 {
        assert_eq!(enroll_thermo(&s, &secret, &format!("hw-{i}")).0, 201);
        s.json(
            &s.admin,
            &[
                "token",
                "create",
                "--role",
                "viewer",
                "--name",
                &format!("v{i}"),
            ],
        );
    }
    let paged = |args: &[&str]| {
        let out = s
            .otter(&s.admin)
            .env("OTTER_PAGE_SIZE", "2")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let hardware_ids = |v: &Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["hardware_id"].as_str().unwrap().to_string())
            .collect()
    };
    let paged_ids = hardware_ids(&paged(&["device", "list"]));
    let whole = hardware_ids(&s.json(&s.admin, &["device", "list"]));
    assert_eq!(paged_ids, whole, "the same list, in its order");
    let mut sorted = paged_ids.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["hw-0", "hw-1", "hw-2", "hw-3", "hw-4"],
        "each device once"
    );
    assert_eq!(
        paged(&["token", "list"])["tokens"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let some = paged(&["device", "list", "--limit", "3"]);
    assert_eq!(some["devices"].as_array().unwrap().len(), 3);
    assert!(some["next"].is_string(), "{some}");
    // Human output: a table of every device.
    let out = s
        .otter(&s.admin)
        .env("OTTER_PAGE_SIZE", "2")
        .args(["device", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
}

/// Issue 12: `otter completions SHELL` prints a script that knows the commands; bash parses it.
#[test]
fn completions_for_bash_zsh_and_fish_name_the_commands() {
    let dir = TempDir::new().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        for json in [false, true] {
            let mut c = Command::cargo_bin("otter").unwrap();
            if json {
                c.arg("--json");
            }
            let out = c.args(["completions", shell]).output().unwrap();
            assert!(
                out.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(!script.trim().is_empty(), "{shell}: empty script");
            for word in ["release", "promote", "synth-image"] {
                assert!(script.contains(word), "{shell}: no {word:?} in the script");
            }
            if shell == "bash" {
                let path = dir.path().join("otter.bash");
                std::fs::write(&path, &script).unwrap();
                let check = Process::new("bash").arg("-n").arg(&path).output().unwrap();
                assert!(
                    check.status.success(),
                    "bash -n refuses the script: {}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
        }
    }
    let out = Command::cargo_bin("otter")
        .unwrap()
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad usage");
}

/// Issue 12: a CI job that runs twice pushes the same release.otter twice; the second push exits
/// 0 with the release that is there, `"existing": true`. Another image of that version is still
/// refused.
#[test]
fn pushing_the_same_release_again_exits_0_and_says_existing() {
    let s = start_server();
    product_with_key(&s);
    synth(&s, "esp32c3", "1.0.0", "fw.bin");
    s.json(
        &s.admin,
        &[
            "sign",
            "fw.bin",
            "--key",
            "release.key",
            "--product",
            "thermo",
            "--out",
            "r.otter",
        ],
    );
    let push = ["release", "push", "r.otter", "--channel", "beta"];
    let first = s.json(&s.admin, &push);
    assert_eq!(first["existing"], false, "{first}");
    let again = s.json(&s.admin, &push);
    assert_eq!(again["existing"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["sha256"], first["sha256"]);
    let out = s.otter(&s.admin).args(push).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("published already"), "{text}");
    assert!(text.contains(first["id"].as_str().unwrap()), "{text}");

    // A higher security counter published since on the channel: the repeat is still no downgrade.
    synth(&s, "esp32c3", "2.0.0", "two.bin");
    s.json(
        &s.admin,
        &[
            "release",
            "push",
            "two.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
            "--channel",
            "beta",
            "--security-counter",
            "4",
        ],
    );
    let repeat = s.json(&s.admin, &push);
    assert_eq!(
        (&repeat["existing"], &repeat["id"]),
        (&json!(true), &first["id"])
    );

    // Another image with the same version: refused as before, naming the release that is there.
    s.json(
        &s.admin,
        &[
            "dev",
            "synth-image",
            "--chip",
            "esp32c3",
            "--version",
            "1.0.0",
            "--seed",
            "9",
            "--size",
            "50000",
            "--out",
            "other.bin",
        ],
    );
    let e = s.fails(
        &s.admin,
        &[
            "release",
            "push",
            "other.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
            "--channel",
            "beta",
            "--security-counter",
            "4",
        ],
        1,
    );
    assert_eq!(e["error"], "conflict", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "{e}"
    );
    assert_eq!(s.releases().len(), 2);
}

/// Issue 12: `otter release promote RELEASE --channel stable`.
#[test]
fn release_promote_makes_a_release_available_on_another_channel() {
    let s = start_server();
    product_with_key(&s);
    synth(&s, "esp32c3", "1.1.0", "fw.bin");
    let beta = s.json(
        &s.admin,
        &[
            "release",
            "push",
            "fw.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
            "--channel",
            "beta",
        ],
    );
    let id = beta["id"].as_str().unwrap();
    let stable = s.json(&s.admin, &["release", "promote", id, "--channel", "stable"]);
    assert_eq!(
        (&stable["channel"], &stable["existing"]),
        (&json!("stable"), &json!(false)),
        "{stable}"
    );
    assert_eq!(
        (&stable["version"], &stable["sha256"]),
        (&beta["version"], &beta["sha256"])
    );
    assert_ne!(stable["id"], beta["id"]);
    let listed = s.json(&s.admin, &["release", "list", "--channel", "stable"]);
    assert_eq!(listed["releases"][0]["id"], stable["id"]);

    // Again: nothing changes, exit 0.
    let out = s
        .otter(&s.admin)
        .args(["release", "promote", id, "--channel", "stable"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("already") && text.contains(stable["id"].as_str().unwrap()),
        "{text}"
    );
    assert_eq!(s.releases().len(), 2);

    // Tokens: a viewer may not (exit 4), a publisher of another product does not see it.
    let viewer = s.json(&s.admin, &["token", "create", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let e = s.fails(
        &viewer,
        &["release", "promote", id, "--channel", "canary"],
        4,
    );
    assert_eq!(e["error"], "forbidden");
    s.json(
        &s.admin,
        &["product", "create", "other", "--chip", "esp32c3"],
    );
    let outsider = s.json(
        &s.admin,
        &[
            "token",
            "create",
            "--role",
            "publisher",
            "--product",
            "other",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let e = s.fails(
        &outsider,
        &["release", "promote", id, "--channel", "canary"],
        1,
    );
    assert_eq!(e["error"], "not_found");
    assert_eq!(s.releases().len(), 2);
}

/// The leaf commands of `otter`, as its help lists them ("release push", ...).
fn leaf_commands(path: &mut Vec<String>, out: &mut Vec<String>) {
    let help = Command::cargo_bin("otter")
        .unwrap()
        .args(path.iter())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|name| name != "help")
        .collect();
    if subs.is_empty() {
        out.push(path.join(" "));
    }
    for sub in subs {
        path.push(sub);
        leaf_commands(path, out);
        path.pop();
    }
}

/// Issue 9: `otter audit list` shows who did what, with filters; only admins may read it.
#[test]
fn audit_list_shows_who_did_what_and_filters() {
    let s = start_server();
    product_with_key(&s);
    let viewer = s.json(&s.admin, &["token", "create", "--role", "viewer"]);
    let viewer_token = viewer["token"].as_str().unwrap().to_string();
    s.fails(&viewer_token, &["product", "rotate-secret", "thermo"], 4);

    let all = s.json(&s.admin, &["audit", "list"]);
    let entries = all["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "product.rotate_secret",
            "token.create",
            "key.add",
            "product.create",
            "token.create"
        ],
        "newest first: {all}"
    );

    let created = s.json(&s.admin, &["audit", "list", "--action", "product.create"]);
    let e = &created["entries"][0];
    assert_eq!(created["entries"].as_array().unwrap().len(), 1, "{created}");
    assert_eq!(e["actor"], "initial-admin");
    assert_eq!(e["target"], "thermo");
    assert_eq!(e["status"], 201);

    let denied = s.json(&s.admin, &["audit", "list", "--actor", "viewer"]);
    assert_eq!(denied["entries"][0]["action"], "product.rotate_secret");
    assert_eq!(denied["entries"][0]["status"], 403);
    assert_eq!(denied["entries"][0]["token_id"], viewer["info"]["id"]);

    let offline = s.json(&s.admin, &["audit", "list", "--actor", "system"]);
    assert_eq!(offline["entries"].as_array().unwrap().len(), 1, "{offline}");
    let recent = s.json(&s.admin, &["audit", "list", "--since", "1h"]);
    assert_eq!(recent["entries"], all["entries"]);
    let old = s.json(
        &s.admin,
        &["audit", "list", "--until", "2000-01-01T00:00:00Z"],
    );
    assert_eq!(old["entries"], json!([]));
    let one = s.json(&s.admin, &["audit", "list", "--limit", "1"]);
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    assert!(one["next"].is_string(), "{one}");

    let text = s.otter(&s.admin).args(["audit", "list"]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("ACTOR") && text.contains("product.create"),
        "{text}"
    );

    s.fails(&viewer_token, &["audit", "list"], 4);
    let e = s.fails(&s.admin, &["audit", "list", "--since", "yesterday"], 2);
    assert!(e["message"].as_str().unwrap().contains("--since"), "{e}");
}

/// Issue 12: with `--json`, every command (completions excepted: its output is the script)
/// prints exactly one JSON document on stdout. The list of runs must cover every command.
#[test]
fn every_command_prints_one_json_document_with_json() {
    let s = start_server();
    let mut covered = std::collections::BTreeSet::new();
    let mut run = |token: &str, args: &[&str]| -> Value {
        let words: Vec<&str> = args
            .iter()
            .copied()
            .take_while(|a| !a.starts_with('-'))
            .collect();
        // The command is the leading words that are not its operands.
        for n in (1..=words.len().min(3)).rev() {
            covered.insert(words[..n].join(" "));
        }
        s.json(token, args)
    };
    let admin = s.admin.clone();
    run(&admin, &["keygen", "--out", "release.key"]);
    run(
        &admin,
        &[
            "dev",
            "synth-image",
            "--chip",
            "esp32c3",
            "--version",
            "1.0.0",
            "--size",
            "50000",
            "--out",
            "fw.bin",
        ],
    );
    run(&admin, &["inspect", "fw.bin"]);
    let created = run(
        &admin,
        &["product", "create", "thermo", "--chip", "esp32c3"],
    );
    let secret = created["enrollment_secret"].as_str().unwrap().to_string();
    run(
        &admin,
        &[
            "product",
            "key",
            "add",
            "thermo",
            "--pub",
            "release.pub.pem",
        ],
    );
    run(
        &admin,
        &[
            "sign",
            "fw.bin",
            "--key",
            "release.key",
            "--product",
            "thermo",
            "--out",
            "r.otter",
        ],
    );
    run(&admin, &["inspect", "r.otter"]);
    run(&admin, &["verify", "r.otter", "--pub", "release.pub.pem"]);
    let rel = run(&admin, &["release", "push", "r.otter", "--channel", "beta"]);
    let rel_id = rel["id"].as_str().unwrap().to_string();
    run(&admin, &["release", "list"]);
    run(&admin, &["release", "show", &rel_id]);
    run(
        &admin,
        &["release", "promote", &rel_id, "--channel", "stable"],
    );
    run(
        &admin,
        &[
            "sign",
            "fw.bin",
            "--esp32-arduino-signed",
            "--key",
            "release.key",
            "--out",
            "fw-arduino.bin",
        ],
    );
    let attached = run(
        &admin,
        &[
            "release",
            "attach",
            &rel_id,
            "--kind",
            "esp32-arduino-signed",
            "fw-arduino.bin",
        ],
    );
    assert_eq!(attached["kind"], "esp32-arduino-signed", "{attached}");
    run(&admin, &["product", "list"]);
    run(&admin, &["product", "show", "thermo"]);
    run(
        &admin,
        &["product", "update", "thermo", "--max-devices", "10"],
    );
    std::fs::write(s.path("hw.csv"), "hardware_id\naa:bb\ncc:dd\n").unwrap();
    run(
        &admin,
        &["product", "allowlist", "import", "thermo", "hw.csv"],
    );
    run(&admin, &["product", "allowlist", "list", "thermo"]);
    run(
        &admin,
        &["product", "allowlist", "remove", "thermo", "cc:dd"],
    );
    enroll(&s, "thermo", &secret, "aa:bb");
    run(&admin, &["product", "rotate-secret", "thermo"]);
    run(&admin, &["keygen", "--out", "second.key"]);
    let key = run(
        &admin,
        &["product", "key", "add", "thermo", "--pub", "second.pub.pem"],
    );
    run(
        &admin,
        &[
            "product",
            "key",
            "remove",
            "thermo",
            key["key_id"].as_str().unwrap(),
        ],
    );
    let token = run(&admin, &["token", "create", "--role", "viewer"]);
    run(&admin, &["token", "list"]);
    run(
        &admin,
        &["token", "revoke", token["info"]["id"].as_str().unwrap()],
    );
    run(&admin, &["whoami"]);
    let devices = run(&admin, &["device", "list"]);
    let device = devices["devices"][0]["id"].as_str().unwrap().to_string();
    run(&admin, &["device", "show", &device]);
    run(&admin, &["device", "set-channel", &device, "beta"]);
    run(
        &admin,
        &["device", "allow-reenroll", "aa:bb", "--product", "thermo"],
    );
    run(&admin, &["device", "tag", &device, "lab"]);
    run(&admin, &["device", "untag", &device, "lab"]);
    run(
        &admin,
        &[
            "group",
            "create",
            "canary",
            "--product",
            "thermo",
            "--devices",
            &device,
        ],
    );
    run(&admin, &["group", "list", "--product", "thermo"]);
    run(&admin, &["group", "show", "canary", "--product", "thermo"]);
    run(
        &admin,
        &["group", "remove", "canary", &device, "--product", "thermo"],
    );
    run(
        &admin,
        &["group", "add", "canary", &device, "--product", "thermo"],
    );
    run(
        &admin,
        &["group", "delete", "canary", "--product", "thermo"],
    );
    run(&admin, &["audit", "list", "--limit", "5"]);
    let rollout = run(
        &admin,
        &[
            "rollout",
            "create",
            "--release",
            &rel_id,
            "--tag",
            "lab",
            "--stages",
            "10,100",
            "--failure-threshold",
            "20%",
        ],
    );
    let rollout = rollout["id"].as_str().unwrap().to_string();
    run(&admin, &["rollout", "list"]);
    run(&admin, &["rollout", "show", &rollout]);
    run(&admin, &["rollout", "advance", &rollout]);
    run(&admin, &["rollout", "pause", &rollout]);
    run(&admin, &["rollout", "resume", &rollout]);
    run(&admin, &["rollout", "abort", &rollout]);

    run(
        &admin,
        &[
            "product",
            "follow-github",
            "thermo",
            "--repo",
            "acme/thermo-fw",
        ],
    );
    run(&admin, &["product", "unfollow-github", "thermo"]);

    run(&admin, &["user", "create", "ana", "--role", "viewer"]);
    run(&admin, &["user", "list"]);
    run(&admin, &["user", "disable", "ana"]);

    let mut leaves = Vec::new();
    leaf_commands(&mut Vec::new(), &mut leaves);
    let missing: Vec<&String> = leaves
        .iter()
        .filter(|c| *c != "completions" && !covered.contains(*c))
        .collect();
    assert!(leaves.len() > 25, "{leaves:?}");
    assert!(
        missing.is_empty(),
        "commands not run with --json here: {missing:?}"
    );
}

/// Issue 12: under `--json`, a usage error that the argument parser finds is the same JSON
/// error document on stderr as every other error (exit 2, stdout empty), not clap's text.
#[test]
fn usage_errors_are_json_with_json() {
    for args in [
        &["--json", "release", "push"][..],
        &["release", "promote", "rel_x", "--json"],
        &["--json", "completions", "tcsh"],
        &["--json", "no-such-command"],
    ] {
        let out = Command::cargo_bin("otter")
            .unwrap()
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let e: Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(e["error"], "usage", "{args:?}");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{args:?}");
    }
}

/// The hardware ids in a `device list --json` answer, sorted.
fn hardware_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["hardware_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Issue 9: `otter device tag|untag`, `otter device list` with every filter, and `otter group`
/// static and filter groups, with refusals that change nothing.
#[test]
fn devices_are_tagged_grouped_and_listed_by_filters() {
    let s = start_server();
    let admin = s.admin.clone();
    let created = s.json(
        &admin,
        &["product", "create", "thermo", "--chip", "esp32c3"],
    );
    let secret = created["enrollment_secret"].as_str().unwrap().to_string();
    let mut tokens = Vec::new();
    for (hw, version) in [("aa", "1.0.0"), ("bb", "2.0.0"), ("cc", "1.0.0")] {
        let t = enroll(&s, "thermo", &secret, hw);
        checkin(&s, &t, version, hw.as_bytes(), "esp32c3");
        tokens.push(t);
    }
    let all = s.json(&admin, &["device", "list", "--product", "thermo"]);
    let id = |hw: &str| -> String {
        all["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["hardware_id"] == hw)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (aa, bb, cc) = (id("aa"), id("bb"), id("cc"));

    let v = s.json(&admin, &["device", "tag", &aa, "lab", "site:berlin"]);
    assert_eq!(v["tags"], json!(["lab", "site:berlin"]));
    s.json(&admin, &["device", "tag", &bb, "lab"]);
    let v = s.json(&admin, &["device", "tag", &bb, "lab"]);
    assert_eq!(v["tags"], json!(["lab"]), "tagging again changes nothing");
    s.json(&admin, &["device", "set-channel", &cc, "beta"]);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/device/v1/status", s.url))
        .bearer_auth(&tokens[1])
        .json(&json!({"state": "failure", "reason": "flash"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);

    let list = |extra: &[&str]| {
        let mut a = vec!["device", "list"];
        a.extend_from_slice(extra);
        hardware_ids(&s.json(&admin, &a))
    };
    assert_eq!(list(&["--tag", "lab"]), ["aa", "bb"]);
    assert_eq!(list(&["--tag", "lab", "--tag", "site:berlin"]), ["aa"]);
    assert_eq!(list(&["--tag", "lab,site:berlin"]), ["aa"]);
    assert_eq!(list(&["--tag", "lab", "--version", "2.0.0"]), ["bb"]);
    assert_eq!(list(&["--state", "failure"]), ["bb"]);
    assert_eq!(list(&["--channel", "beta"]), ["cc"]);
    assert_eq!(list(&["--filter", "version<1.10,tag!=lab"]), ["cc"]);
    assert_eq!(
        list(&["--product", "thermo", "--filter", "seen<1h"]),
        ["aa", "bb", "cc"]
    );
    let v = s.json(&admin, &["device", "untag", &aa, "site:berlin", "absent"]);
    assert_eq!(v["tags"], json!(["lab"]));
    let shown = s.json(&admin, &["device", "show", &bb]);
    assert_eq!(shown["device"]["last_reason"], "flash");
    assert_eq!(shown["device"]["tags"], json!(["lab"]));

    // Groups: static and filter.
    let g = s.json(
        &admin,
        &[
            "group",
            "create",
            "canary",
            "--product",
            "thermo",
            "--devices",
            &format!("{aa},{cc}"),
        ],
    );
    assert_eq!(
        (g["kind"].as_str(), g["members"].as_i64()),
        (Some("static"), Some(2))
    );
    let g = s.json(
        &admin,
        &[
            "group",
            "create",
            "old",
            "--product",
            "thermo",
            "--filter",
            "version<2",
        ],
    );
    assert_eq!(g["filter"], "version<2");
    assert_eq!(
        list(&["--product", "thermo", "--group", "canary"]),
        ["aa", "cc"]
    );
    assert_eq!(
        list(&["--product", "thermo", "--group", "old", "--tag", "lab"]),
        ["aa"]
    );
    let v = s.json(
        &admin,
        &["group", "add", "canary", &bb, "--product", "thermo"],
    );
    assert_eq!(v["members"], 3);
    let v = s.json(
        &admin,
        &["group", "remove", "canary", &aa, "--product", "thermo"],
    );
    assert_eq!(v["members"], 2);
    let v = s.json(&admin, &["group", "list", "--product", "thermo"]);
    let names: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["canary", "old"]);
    assert_eq!(
        s.json(&admin, &["group", "show", "old", "--product", "thermo"])["kind"],
        "filter"
    );

    // Refusals change nothing.
    let e = s.fails(&admin, &["device", "tag", &aa, "Not Valid"], 1);
    assert!(e["message"].as_str().unwrap().contains("tag"), "{e}");
    let e = s.fails(
        &admin,
        &[
            "group",
            "create",
            "bad",
            "--product",
            "thermo",
            "--filter",
            "colour=red",
        ],
        1,
    );
    assert!(
        e["message"].as_str().unwrap().contains("unknown field"),
        "{e}"
    );
    let e = s.fails(
        &admin,
        &[
            "group",
            "create",
            "bad",
            "--product",
            "thermo",
            "--devices",
            &format!("{aa},dev_nope"),
        ],
        1,
    );
    assert!(e["message"].as_str().unwrap().contains("dev_nope"), "{e}");
    let e = s.fails(&admin, &["device", "list", "--filter", "colour=red"], 1);
    assert!(
        e["message"].as_str().unwrap().contains("unknown field"),
        "{e}"
    );
    s.fails(&admin, &["device", "list", "--group", "canary"], 2);
    s.fails(
        &admin,
        &[
            "group",
            "create",
            "x",
            "--product",
            "thermo",
            "--devices",
            &aa,
            "--filter",
            "tag=a",
        ],
        2,
    );
    let viewer = s.json(&admin, &["token", "create", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    s.fails(&viewer, &["device", "tag", &aa, "x"], 4);
    s.fails(
        &viewer,
        &["group", "delete", "canary", "--product", "thermo"],
        4,
    );
    assert_eq!(
        hardware_ids(&s.json(&viewer, &["device", "list", "--tag", "lab"])),
        ["aa", "bb"],
        "viewers read; nothing changed"
    );
    assert_eq!(
        s.json(&admin, &["group", "list", "--product", "thermo"])["groups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    s.json(
        &admin,
        &["group", "delete", "canary", "--product", "thermo"],
    );
    s.fails(
        &admin,
        &["group", "show", "canary", "--product", "thermo"],
        1,
    );
}

/// Issue 9: `otter rollout create ... --json` prints the rollout with its `id`; `show --json`
/// has `state`, `pause_reason` and per-stage counts; pause, resume and abort by name; a device
/// of the channel is offered the release through the rollout (with `forced` and its id).
#[test]
fn rollout_create_show_pause_resume_abort() {
    let s = start_server();
    let secret = product_with_key(&s);
    synth(&s, "esp32c3", "1.2.0", "fw.bin");
    let pushed = s.json(
        &s.admin,
        &[
            "release",
            "push",
            "fw.bin",
            "--product",
            "thermo",
            "--channel",
            "stable",
            "--key",
            "release.key",
        ],
    );
    let release = pushed["id"].as_str().unwrap();
    let device = enroll(&s, "thermo", &secret, "aa:bb:cc:00:00:01");

    let r = s.json(
        &s.admin,
        &[
            "rollout",
            "create",
            "--release",
            release,
            "--channel",
            "stable",
            "--stages",
            "100",
            "--failure-threshold",
            "20%",
            "--min-finished",
            "3",
            "--auto-advance",
            "--soak",
            "30m",
            "--optional",
            "--window",
            "00:00-23:59",
            "--rate",
            "100",
        ],
    );
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["state"], "running");
    assert_eq!(
        (r["soak_s"].as_i64(), &r["forced"]),
        (Some(1800), &json!(false))
    );
    let update = &checkin(&s, &device, "1.0.0", b"old image", "esp32c3")["update"];
    // The window may be closed at 23:59 UTC; otherwise the device is assigned.
    if !update.is_null() {
        assert_eq!(
            (&update["rollout_id"], &update["forced"]),
            (&json!(id), &json!(false))
        );
    }

    let shown = s.json(&s.admin, &["rollout", "show", &id]);
    assert_eq!(shown["pause_reason"], Value::Null);
    assert_eq!(
        shown["progress"][0]["counts"]["assigned"].as_i64(),
        Some(i64::from(!update.is_null()))
    );
    let paused = s.json(&s.admin, &["rollout", "pause", &id, "--reason", "checking"]);
    assert_eq!(
        (&paused["state"], &paused["pause_reason"]),
        (&json!("paused"), &json!("checking"))
    );
    let listed = s.json(&s.admin, &["rollout", "list"]);
    assert_eq!(listed["rollouts"][0]["id"], json!(id));
    assert_eq!(
        s.json(&s.admin, &["rollout", "resume", &id])["state"],
        "running"
    );
    assert_eq!(
        s.json(&s.admin, &["rollout", "abort", &id])["state"],
        "aborted"
    );
    let e = s.fails(&s.admin, &["rollout", "resume", &id], 1);
    assert!(e["message"].as_str().unwrap().contains("aborted"), "{e}");
    let e = s.fails(
        &s.admin,
        &[
            "rollout",
            "create",
            "--release",
            release,
            "--tag",
            "x",
            "--stages",
            "50,10",
            "--failure-threshold",
            "5",
        ],
        1,
    );
    assert!(e["message"].as_str().unwrap().contains("increase"), "{e}");
}

/// Issue 13: `otter product follow-github` stores the follow (the token from an environment
/// variable, never printed), `product show` shows it, and refusals are clear.
#[test]
fn follow_github_sets_shows_and_ends_a_follow_without_echoing_the_token() {
    let s = start_server();
    product_with_key(&s);
    let token = "ghp_cliTestToken987654321";
    let out = s
        .otter(&s.admin)
        .args([
            "product",
            "follow-github",
            "thermo",
            "--repo",
            "acme/thermo-fw",
            "--asset-pattern",
            "thermo-*.otter",
            "--channel",
            "beta",
            "--github-token-env",
            "GH_READ_TOKEN",
        ])
        .env("GH_READ_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("acme/thermo-fw"), "{stdout}");
    assert!(!stdout.contains(token) && !String::from_utf8_lossy(&out.stderr).contains(token));

    let shown = s.json(&s.admin, &["product", "show", "thermo"]);
    assert_eq!(shown["github"]["repo"], "acme/thermo-fw");
    assert_eq!(shown["github"]["asset_pattern"], "thermo-*.otter");
    assert_eq!(shown["github"]["channel"], "beta");
    assert_eq!(shown["github"]["token_set"], true);
    assert!(!shown.to_string().contains(token));
    let human = s
        .otter(&s.admin)
        .args(["product", "show", "thermo"])
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("GitHub: follows acme/thermo-fw"), "{human}");
    // The first poll starts at once and fails (nothing answers at github_api_url here).
    assert!(
        human.contains("not polled yet")
            || human.contains("last poll FAILED: listing the releases"),
        "{human}"
    );

    // A missing variable is a usage error; a viewer may not; a bad repository is refused.
    let e = s.fails(
        &s.admin,
        &[
            "product",
            "follow-github",
            "thermo",
            "--repo",
            "a/b",
            "--github-token-env",
            "NO_SUCH_VAR_13",
        ],
        2,
    );
    assert!(
        e["message"].as_str().unwrap().contains("NO_SUCH_VAR_13"),
        "{e}"
    );
    let viewer = s.json(&s.admin, &["token", "create", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    s.fails(
        &viewer,
        &["product", "follow-github", "thermo", "--repo", "a/b"],
        4,
    );
    let e = s.fails(
        &s.admin,
        &["product", "follow-github", "thermo", "--repo", "no-slash"],
        1,
    );
    assert!(e["message"].as_str().unwrap().contains("owner/name"), "{e}");
    let e = s.fails(
        &s.admin,
        &[
            "product",
            "follow-github",
            "thermo",
            "--repo",
            "a/b",
            "--sign-on-import",
        ],
        1,
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("github_import_key_file"),
        "{e}"
    );
    // The refused requests changed nothing.
    let shown = s.json(&viewer, &["product", "show", "thermo"]);
    assert_eq!(shown["github"]["repo"], "acme/thermo-fw");

    s.json(&s.admin, &["product", "unfollow-github", "thermo"]);
    let shown = s.json(&s.admin, &["product", "show", "thermo"]);
    assert!(shown["github"].is_null(), "{shown}");
    s.fails(&s.admin, &["product", "unfollow-github", "thermo"], 1);
}

/// Issue 13: `otter release attach` stores a signed client format of a published release; a
/// file that is not that release's image signed is refused and stores nothing.
#[test]
fn release_attach_stores_a_signed_format_and_refuses_another_image() {
    let s = start_server();
    product_with_key(&s);
    synth(&s, "esp32c3", "1.1.0", "fw.bin");
    synth(&s, "esp32c3", "1.2.0", "other.bin");
    let rel = s.json(
        &s.admin,
        &[
            "release",
            "push",
            "fw.bin",
            "--product",
            "thermo",
            "--key",
            "release.key",
        ],
    );
    let id = rel["id"].as_str().unwrap();
    for (image, out) in [("fw.bin", "fw-a.bin"), ("other.bin", "other-a.bin")] {
        s.json(
            &s.admin,
            &[
                "sign",
                image,
                "--esp32-arduino-signed",
                "--key",
                "release.key",
                "--out",
                out,
            ],
        );
    }
    let err = s.fails(
        &s.admin,
        &[
            "release",
            "attach",
            id,
            "--kind",
            "esp32-arduino-signed",
            "other-a.bin",
        ],
        1,
    );
    assert!(
        err["message"].as_str().unwrap().contains("SHA-256"),
        "{err}"
    );
    let err = s.fails(
        &s.admin,
        &[
            "release",
            "attach",
            id,
            "--kind",
            "esp8266-signed",
            "fw-a.bin",
        ],
        1,
    );
    assert!(
        err["message"].as_str().unwrap().contains("esp8266"),
        "{err}"
    );
    let out = s
        .otter(&s.admin)
        .args([
            "release",
            "attach",
            id,
            "--kind",
            "esp32-arduino-signed",
            "fw-a.bin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("attached esp32-arduino-signed"), "{said}");
    let signed = std::fs::read(s.path("fw-a.bin")).unwrap();
    assert!(said.contains(&format!("{} bytes", signed.len())), "{said}");
}

/// Issue 11: people who sign in to the dashboard, managed from the CLI; the offline command
/// makes an admin person without a token.
#[test]
fn user_create_list_and_disable() {
    let s = start_server();
    let v = s.json(&s.admin, &["user", "create", "ada", "--role", "admin"]);
    assert_eq!(v["person"]["name"], "ada");
    assert_eq!(v["person"]["must_change_password"], true);
    let initial = v["initial_password"].as_str().unwrap();
    assert!(initial.len() >= 20, "{v}");

    // Without --json the password is printed once, said to be one-time.
    let out = s
        .otter(&s.admin)
        .args(["user", "create", "vic", "--role", "viewer"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("created viewer vic") && text.contains("one-time initial password"),
        "{text}"
    );

    let e = s.fails(&s.admin, &["user", "create", "ada", "--role", "viewer"], 1);
    assert_eq!(e["error"], "conflict", "{e}");
    let e = s.fails(
        &s.admin,
        &["user", "create", "pub", "--role", "publisher"],
        1,
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("at least one product"),
        "{e}"
    );
    let e = s.fails(&s.admin, &["user", "create", "x y", "--role", "viewer"], 1);
    assert_eq!(e["error"], "bad_request", "{e}");
    let viewer = s.json(&s.admin, &["token", "create", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    s.fails(&viewer, &["user", "create", "eve", "--role", "admin"], 4);
    s.fails(&viewer, &["user", "list"], 4);

    let list = s.json(&s.admin, &["user", "list"]);
    let names: Vec<&str> = list["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "vic"]);
    let out = s.otter(&s.admin).args(["user", "list"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("initial password"), "{table}");
    assert!(
        !table.contains(initial),
        "the list never shows a password: {table}"
    );

    let v = s.json(&s.admin, &["user", "disable", "vic"]);
    assert!(v["disabled_at"].is_string(), "{v}");
    let e = s.fails(&s.admin, &["user", "disable", "vic"], 1);
    assert_eq!(e["error"], "conflict", "{e}");
    let e = s.fails(&s.admin, &["user", "disable", "no/such"], 1);
    assert_eq!(e["error"], "not_found", "{e}");
    let out = s.otter(&s.admin).args(["user", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("disabled"));

    // Recovery on the server's host: no token, a one-time password on stdout.
    let out = Process::new(otterd_bin())
        .args(["admin", "create-person", "--name", "rescue", "--data-dir"])
        .arg(s.path("data"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(password.len() >= 20, "{password}");
    let list = s.json(&s.admin, &["user", "list"]);
    let rescue = list["people"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rescue")
        .unwrap()
        .clone();
    assert_eq!(rescue["role"], "admin");
    assert_eq!(rescue["created_by"], "otterd admin (offline)");
}
