//! What is stored stays sound (issue 8, items 8, 9, 11, 12, 18): device reports are checked
//! wherever they arrive, uploads no device can install are refused, damaged blobs are repaired,
//! orphan blobs are collected without ever breaking an upload in flight.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use otter_core::keys::PrivateKey;
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Pushes a fresh image as `version` with this counter and creation time; returns the answer.
async fn push_with(
    srv: &TestServer,
    key: &PrivateKey,
    channel: &str,
    version: &str,
    counter: u32,
    created_at: u64,
) -> (u16, Value) {
    let img = image(Chip::Esp32C3, version, 7 + counter as u64);
    let mut m = manifest_for("thermo", Chip::Esp32C3, version, &img);
    m.security_counter = counter;
    m.created_at = created_at;
    srv.push("thermo", channel, &srv.admin, bundle_of(key, &m, img))
        .await
}

/// These tests age blobs by their files' modification times, which only local disk allows;
/// tests/it/s3.rs covers the same rules on S3 by waiting instead.
fn on_local_disk(s: &mut otterd::config::Settings) {
    s.blob_backend = "local".into();
}

fn now() -> u64 {
    otterd::now() as u64
}

/// Asserts a refusal (status, message fragment) that changed nothing stored.
async fn refused_unchanged(srv: &TestServer, got: (u16, Value), status: u16, fragment: &str) {
    let releases = srv.release_count().await;
    let blobs = srv.blob_files().await;
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(fragment),
        "{msg:?} should contain {fragment:?}"
    );
    assert_eq!(srv.release_count().await, releases);
    assert_eq!(srv.blob_files().await, blobs);
}

/// Downloads a release as a device and returns the bytes (panics unless complete).
async fn download(srv: &TestServer, device_token: &str, release_id: &str) -> Vec<u8> {
    let r = srv
        .req(
            Method::GET,
            &format!("/device/v1/releases/{release_id}/image"),
            Some(device_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "download of {release_id}");
    r.bytes().await.expect("the whole image arrives").to_vec()
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn set_age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// Writes a blob no release references under `images/`, `age` old; returns its path.
fn plant_orphan(data_dir: &Path, seed: u8, age: Duration) -> PathBuf {
    let bytes = vec![seed; 4096];
    let path = data_dir.join("blobs/images").join(sha_hex(&bytes));
    std::fs::write(&path, &bytes).unwrap();
    set_age(&path, age);
    path
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

// ---------------------------------------------------------------------------------------------
// Item 8: a check-in's last_outcome is checked as /status checks a report.

#[tokio::test]
async fn checkin_last_outcome_is_checked_like_a_status_report() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (lamp_key, _) = srv.product("lamp", Chip::Esp32C3).await;
    let (_, own) = srv.publish(&key, "thermo", Chip::Esp32C3, "1.0.0").await;
    let (_, foreign) = srv.publish(&lamp_key, "lamp", Chip::Esp32C3, "1.0.0").await;
    let (device, token) = srv.enroll("thermo", &secret, "aa").await;
    let checkin = |outcome: Value| {
        let body = json!({"version": "0.9.0", "security_counter": 0, "image_sha256": ZERO_SHA,
            "chip": "esp32c3", "last_outcome": outcome});
        srv.call(Method::POST, "/device/v1/checkin", Some(&token), Some(body))
    };
    let history = || async {
        let (s, v) = srv
            .call(
                Method::GET,
                &format!("/api/v1/devices/{device}"),
                Some(&srv.admin),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    };

    let bad = [
        (
            json!({"release_id": foreign["id"], "state": "success", "reason": null}),
            404,
            "no release",
        ),
        (
            json!({"release_id": "rel_nosuch", "state": "success", "reason": null}),
            404,
            "no release",
        ),
        (
            json!({"release_id": own["id"], "state": "failure", "reason": "x".repeat(20_000)}),
            400,
            "256 characters",
        ),
        (
            json!({"release_id": own["id"], "state": "exploded", "reason": null}),
            400,
            "is not one of",
        ),
        (
            json!({"release_id": own["id"], "state": "failure", "reason": null}),
            400,
            "needs a reason",
        ),
        // States of a deployment or of the history that only the server records.
        (
            json!({"release_id": own["id"], "state": "cancelled", "reason": "x"}),
            400,
            "is not one of downloading, downloaded, installing, rebooting, success, failure, rolled_back, refused",
        ),
        (
            json!({"release_id": own["id"], "state": "assigned", "reason": null}),
            400,
            "is not one of",
        ),
    ];
    for (outcome, status, fragment) in bad {
        let (s, v) = checkin(outcome.clone()).await;
        assert_eq!(s, status, "{outcome}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("last_outcome") && msg.contains(fragment),
            "{msg}"
        );
        assert!(
            msg.len() < 400,
            "the error must not echo the input: {} bytes",
            msg.len()
        );
    }
    let v = history().await;
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        0,
        "a refused check-in stores no event: {v}"
    );
    assert!(
        v["device"]["last_seen_at"].is_null() && v["device"]["version"].is_null(),
        "a refused check-in is not recorded: {v}"
    );

    // A sound outcome about its own product's release is stored as before.
    let (s, v) =
        checkin(json!({"release_id": own["id"], "state": "failure", "reason": "hash mismatch"}))
            .await;
    assert_eq!(s, 200, "{v}");
    let v = history().await;
    let events = v["history"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["release_id"], own["id"]);
    assert_eq!(events[0]["reason"], "hash mismatch");
}

// ---------------------------------------------------------------------------------------------
// Item 9: what no device can install is refused at upload.

#[tokio::test]
async fn a_delta_manifest_is_refused_at_upload_and_at_the_dry_run() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let (s, _) = srv.publish(&key, "thermo", Chip::Esp32C3, "1.0.0").await;
    assert_eq!(s, 201);
    let img = image(Chip::Esp32C3, "2.0.0", 9);
    let mut m = manifest_for("thermo", Chip::Esp32C3, "2.0.0", &img);
    m.delta_base_sha256 = Some([0x11; 32]);
    let b = bundle_of(&key, &m, img);
    let head_len = otter_core::manifest::BundleHead::decode(&b)
        .unwrap()
        .head_len;
    let dry = srv
        .push(
            "thermo",
            "stable&dry_run=true",
            &srv.admin,
            b[..head_len].to_vec(),
        )
        .await;
    refused_unchanged(&srv, dry, 422, "delta releases are not supported").await;
    let full = srv.push("thermo", "stable", &srv.admin, b).await;
    refused_unchanged(&srv, full, 422, "delta releases are not supported").await;
    assert_eq!(srv.release_count().await, 1, "1.0.0 stays the only release");
}

// ---------------------------------------------------------------------------------------------
// Item 18: security counter and creation time.

#[tokio::test]
async fn a_counter_below_the_channels_highest_is_refused_unless_allowed() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    assert_eq!(
        push_with(&srv, &key, "stable", "5.0.0", 5, now()).await.0,
        201
    );
    let r = push_with(&srv, &key, "stable", "5.1.0", 2, now()).await;
    refused_unchanged(
        &srv,
        r,
        422,
        "security counter 2 is lower than 5 of release 5.0.0",
    )
    .await;
    // The dry run (what `otter release push` sends first) refuses it too.
    let img = image(Chip::Esp32C3, "5.1.0", 9);
    let mut m = manifest_for("thermo", Chip::Esp32C3, "5.1.0", &img);
    m.security_counter = 2;
    let b = bundle_of(&key, &m, img);
    let head_len = otter_core::manifest::BundleHead::decode(&b)
        .unwrap()
        .head_len;
    let dry = srv
        .push(
            "thermo",
            "stable&dry_run=true",
            &srv.admin,
            b[..head_len].to_vec(),
        )
        .await;
    refused_unchanged(&srv, dry, 422, "lower than 5").await;
    // Other channels keep their own counters; an equal or higher counter is fine.
    assert_eq!(
        push_with(&srv, &key, "beta", "5.1.0", 2, now()).await.0,
        201
    );
    assert_eq!(
        push_with(&srv, &key, "stable", "5.2.0", 5, now()).await.0,
        201
    );
    // The explicit override publishes it.
    let (s, v) = srv
        .push(
            "thermo",
            "stable&allow_lower_counter=true",
            &srv.admin,
            bundle_of(&key, &m, image(Chip::Esp32C3, "5.1.0", 9)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["security_counter"], 2);
}

#[tokio::test]
async fn a_manifest_created_in_the_future_is_refused() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let year_2100 = 4_102_444_800;
    let r = push_with(&srv, &key, "stable", "1.0.0", 0, year_2100).await;
    refused_unchanged(&srv, r, 422, "in the future").await;
    // Within the default 10 minutes of clock skew: accepted.
    assert_eq!(
        push_with(&srv, &key, "stable", "1.0.1", 0, now() + 300)
            .await
            .0,
        201
    );
    // The bound is a setting.
    let strict = spawn_with(|s| s.manifest_max_future_s = 60).await;
    let (key, _) = strict.product("thermo", Chip::Esp32C3).await;
    let r = push_with(&strict, &key, "stable", "1.0.0", 0, now() + 300).await;
    refused_unchanged(&strict, r, 422, "more than the 60 s allowed").await;
}

// ---------------------------------------------------------------------------------------------
// Item 11: a damaged blob is replaced by the next verified upload of the same bytes.

#[tokio::test]
async fn a_corrupt_blob_is_replaced_by_a_verified_upload_of_the_same_image() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, token) = srv.enroll("thermo", &secret, "aa").await;
    let img = image(Chip::Esp32C3, "1.0.0", 3);
    let m = manifest_for("thermo", Chip::Esp32C3, "1.0.0", &img);
    let (s, rel) = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle_of(&key, &m, img.clone()),
        )
        .await;
    assert_eq!(s, 201, "{rel}");
    let sha = rel["sha256"].as_str().unwrap().to_string();
    let mut bad = srv.read_image(&sha).await;
    let n = bad.len();
    bad[n / 3] ^= 0x5a;
    srv.write_image(&sha, &bad).await;

    let (s, v) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle_of(&key, &m, img.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        sha_hex(&srv.read_image(&sha).await),
        sha,
        "the stored blob is the verified upload again"
    );
    assert_eq!(srv.blob_files().await, (1, 0), "and no staged copy is left");
    let got = download(&srv, &token, rel["id"].as_str().unwrap()).await;
    assert_eq!(got, img, "the first release downloads whole and intact");
    // A sound blob is kept as it is (same inode: not rewritten; a check of local disk).
    #[cfg(unix)]
    if let Some(path) = srv.blobs.local_image_path(&sha) {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&path).unwrap().ino();
        let (s, _) = srv
            .push("thermo", "nightly", &srv.admin, bundle_of(&key, &m, img))
            .await;
        assert_eq!(s, 201);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    }
}

// ---------------------------------------------------------------------------------------------
// Item 12: blobs no release references are collected, never one being published.

const OLD: Duration = Duration::from_secs(2 * 3600);

#[tokio::test]
async fn orphan_blobs_are_collected_at_start_and_referenced_ones_kept() {
    let keep = tempfile::TempDir::new().unwrap();
    let data = keep.path().join("data");
    let (rel, img, secret) = {
        let srv = spawn_with(|s| {
            s.data_dir = data.clone();
            on_local_disk(s);
        })
        .await;
        let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
        let img = image(Chip::Esp32C3, "1.0.0", 5);
        let m = manifest_for("thermo", Chip::Esp32C3, "1.0.0", &img);
        let (s, rel) = srv
            .push(
                "thermo",
                "stable",
                &srv.admin,
                bundle_of(&key, &m, img.clone()),
            )
            .await;
        assert_eq!(s, 201);
        (rel, img, secret)
    };
    let referenced = data
        .join("blobs/images")
        .join(rel["sha256"].as_str().unwrap());
    // Old enough to be past the grace period, as are the release's own blob and the orphan.
    set_age(&referenced, OLD);
    let orphan = plant_orphan(&data, 1, OLD);
    let young = plant_orphan(&data, 2, Duration::ZERO);

    // Collection every hour: only the pass at start can remove it within the test.
    let srv = spawn_with(|s| {
        s.data_dir = data.clone();
        s.blob_gc_interval_s = 3600;
        on_local_disk(s);
    })
    .await;
    wait_until("the orphan blob is collected", || !orphan.exists()).await;
    assert!(referenced.exists(), "a referenced blob is kept");
    assert!(
        young.exists(),
        "a blob younger than the grace period is kept"
    );
    let (_, token) = srv.enroll("thermo", &secret, "aa").await;
    assert_eq!(
        download(&srv, &token, rel["id"].as_str().unwrap()).await,
        img
    );
}

#[tokio::test]
async fn the_collector_runs_periodically_and_clears_stale_staging() {
    let srv = spawn_with(|s| {
        s.blob_gc_interval_s = 1;
        on_local_disk(s);
    })
    .await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let (s, rel) = srv.publish(&key, "thermo", Chip::Esp32C3, "1.0.0").await;
    assert_eq!(s, 201);
    let data = srv.data_dir();
    let referenced = data
        .join("blobs/images")
        .join(rel["sha256"].as_str().unwrap());
    set_age(&referenced, OLD);
    let orphan = plant_orphan(&data, 3, OLD);
    let young = plant_orphan(&data, 4, Duration::ZERO);
    std::fs::create_dir_all(data.join("blobs/staging")).unwrap();
    let stale = data.join("blobs/staging/0123456789abcdef0123456789abcdef#1");
    std::fs::write(&stale, b"half an upload").unwrap();
    set_age(&stale, OLD);
    let fresh = data.join("blobs/staging/fedcba9876543210fedcba9876543210");
    std::fs::write(&fresh, b"an upload in another process").unwrap();

    wait_until(
        "the orphan and the stale staging file are collected",
        || !orphan.exists() && !stale.exists(),
    )
    .await;
    assert!(referenced.exists());
    assert!(young.exists());
    assert!(fresh.exists(), "recent staging entries are kept");
}

/// The collector with no grace period at all, run back to back while many uploads publish
/// (new blobs and blobs already in place): every release still downloads whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_racing_uploads_never_breaks_a_release() {
    let dir = tempfile::TempDir::new().unwrap();
    let settings = otterd::config::Settings {
        data_dir: dir.path().join("data"),
        database_url: crate::backends::database_setting_for(&dir.path().join("data")),
        listen: "127.0.0.1:0".parse().unwrap(),
        blob_gc_interval_s: 0,
        blob_gc_grace_s: 0,
        shutdown_grace_s: 1,
        ..Default::default()
    };
    let state = otterd::open_state(settings.clone()).await.unwrap();
    otterd::bootstrap_admin(&state).await.unwrap();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(otterd::launch_with_listener(
        state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let srv = TestServer::attach(url, dir, &settings.data_dir);
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, token) = srv.enroll("thermo", &secret, "aa").await;

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let collector = {
        let (state, running) = (state.clone(), running.clone());
        tokio::spawn(async move {
            let mut passes = 0u32;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                otterd::blob_gc::collect_once(&state).await.unwrap();
                passes += 1;
                tokio::task::yield_now().await;
            }
            passes
        })
    };
    // Each image goes to two channels, so one upload often finds its blob in place already; and
    // half of them start with their blob planted as an orphan (a killed earlier upload), which
    // the upload keeps after hashing it while the collector wants it gone.
    std::fs::create_dir_all(settings.data_dir.join("blobs/images")).unwrap();
    let mut uploads = Vec::new();
    for i in 0..24u64 {
        let version = format!("1.0.{i}");
        let img = otter_core::image::synth::build(&otter_core::image::synth::SynthApp {
            chip: Chip::Esp32C3,
            version: version.clone(),
            payload_len: 256 * 1024,
            seed: 100 + i,
            ..Default::default()
        });
        let m = manifest_for("thermo", Chip::Esp32C3, &version, &img);
        if i % 2 == 0 {
            std::fs::write(
                settings.data_dir.join("blobs/images").join(sha_hex(&img)),
                &img,
            )
            .unwrap();
        }
        let b = bundle_of(&key, &m, img.clone());
        for channel in ["stable", "beta"] {
            let (http, url, admin, b) = (
                srv.http.clone(),
                srv.url.clone(),
                srv.admin.clone(),
                b.clone(),
            );
            uploads.push(tokio::spawn(async move {
                let r = http
                    .post(format!(
                        "{url}/api/v1/products/thermo/releases?channel={channel}"
                    ))
                    .bearer_auth(admin)
                    .body(b)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
                r.json::<Value>().await.unwrap()
            }));
        }
    }
    let mut releases = Vec::new();
    for u in uploads {
        releases.push(u.await.unwrap());
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let passes = collector.await.unwrap();
    assert!(
        passes > 1,
        "the collector ran during the uploads ({passes} passes)"
    );
    // One more pass after the dust settles: still nothing referenced may go.
    otterd::blob_gc::collect_once(&state).await.unwrap();
    for r in &releases {
        let got = download(&srv, &token, r["id"].as_str().unwrap()).await;
        assert_eq!(sha_hex(&got), r["sha256"].as_str().unwrap(), "{r}");
    }
    let _ = stop.send(());
    let _ = server.await;
}

/// The real `otterd` binary, configured through the environment: what kill -9 left behind (a blob
/// whose release row never came) is gone once the server is up again.
#[tokio::test]
async fn the_otterd_binary_collects_orphans_at_start() {
    use tokio::io::AsyncBufReadExt;
    let keep = tempfile::TempDir::new().unwrap();
    let data = keep.path().join("data");
    let sha = {
        let srv = spawn_with(|s| {
            s.data_dir = data.clone();
            on_local_disk(s);
        })
        .await;
        let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
        let (s, rel) = srv.publish(&key, "thermo", Chip::Esp32C3, "1.0.0").await;
        assert_eq!(s, 201);
        rel["sha256"].as_str().unwrap().to_string()
    };
    let referenced = data.join("blobs/images").join(&sha);
    set_age(&referenced, Duration::from_secs(120));
    let orphan = plant_orphan(&data, 6, Duration::from_secs(120));
    let mut cmd = otterd_serve(&data);
    let mut child = cmd
        .env("OTTER_BLOB_GC_GRACE_S", "60")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("otterd starts")
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("otterd listening on "), "{ready}");
    wait_until("otterd collects the orphan", || !orphan.exists()).await;
    assert!(referenced.exists(), "the release's blob is kept");
    child.kill().await.unwrap();
}
