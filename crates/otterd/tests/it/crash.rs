//! kill -9 at any moment of an upload leaves the whole release or nothing.
//!
//! Runs the real `otterd` binary as a process, streams an upload slowly, kills the process with
//! SIGKILL at a random point (inside the head, mid-image, around the final commit), restarts it
//! on the same data directory and checks the invariants.

use std::process::Stdio;
use std::time::Duration;

use otter_core::Chip;
use rand::{Rng, SeedableRng};
use reqwest::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::process::Child;

use crate::harness::{bundle_of, image, manifest_for, otterd_serve, spawn_otterd};

async fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut cmd = otterd_serve(data_dir);
    cmd.env("RUST_LOG", "warn")
        .env("OTTER_BLOB_GC_GRACE_S", "0")
        .stderr(Stdio::null());
    spawn_otterd(cmd).await
}

async fn get(http: &Client, url: &str, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_upload_leaves_whole_release_or_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let http = Client::new();
    let (mut child, mut url) = start(&data).await;
    let admin = std::fs::read_to_string(data.join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let r = http
        .post(format!("{url}/api/v1/products"))
        .bearer_auth(&admin)
        .json(&json!({"name": "thermo", "chip": "esp32"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = otter_core::keys::PrivateKey::generate();
    let r = http
        .post(format!("{url}/api/v1/products/thermo/keys"))
        .bearer_auth(&admin)
        .json(&json!({"public_key_pem": key.public_key().to_pem()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let trials: u64 = std::env::var("OTTER_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x077e5);
    let mut published = 0;
    for trial in 0..trials {
        let version = format!("1.0.{trial}");
        // Every third image repeats, so a crash after a deduplicated blob is covered too.
        let img = image(Chip::Esp32, &version, trial % 3);
        let b = bundle_of(
            &key,
            &manifest_for("thermo", Chip::Esp32, &version, &img),
            img,
        );
        let chunk = 16 * 1024;
        let total_chunks = b.len().div_ceil(chunk);
        // Kill after k chunks were handed to the socket: 0 (inside the head) to all (around the commit).
        let kill_after = rng.gen_range(0..=total_chunks);
        let extra_delay = Duration::from_millis(rng.gen_range(0..30));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let mut rx = rx;
        let body = reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let upload = tokio::spawn(
            http.post(format!("{url}/api/v1/products/thermo/releases"))
                .bearer_auth(&admin)
                .body(body)
                .send(),
        );
        for (i, c) in b.chunks(chunk).enumerate() {
            if i == kill_after {
                break;
            }
            if tx.send(Ok(c.to_vec())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if kill_after == total_chunks {
            drop(tx);
            tokio::time::sleep(extra_delay).await;
        }
        child.kill().await.unwrap(); // SIGKILL
        let _ = child.wait().await;
        let _ = upload.await;

        let (c, u) = start(&data).await;
        child = c;
        let url_now = u;
        // Invariant 1: what the interrupted upload left in staging is swept by the collector's
        // pass at start (the grace period is 0 here; a start itself no longer empties staging,
        // where another instance's upload may be in flight).
        let staging = data.join("blobs/staging");
        let leftovers = || std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
        for _ in 0..100 {
            if leftovers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(leftovers(), 0, "trial {trial}: staging not cleaned");
        // Invariant 2: every visible release is whole: its blob exists and hashes to its sha256.
        let list = get(&http, &format!("{url_now}/api/v1/releases"), &admin).await;
        let releases = list["releases"].as_array().unwrap();
        for r in releases {
            let sha = r["sha256"].as_str().unwrap();
            let blob = std::fs::read(data.join("blobs/images").join(sha))
                .unwrap_or_else(|_| panic!("trial {trial}: release {} has no blob", r["version"]));
            assert_eq!(
                hex::encode(Sha256::digest(&blob)),
                sha,
                "trial {trial}: partial blob"
            );
            assert_eq!(blob.len() as u64, r["size"].as_u64().unwrap());
        }
        let this = releases
            .iter()
            .filter(|r| r["version"] == version.as_str())
            .count();
        assert!(this <= 1);
        published += this;
        // Invariant 3: the server still works: the same release can be pushed (again) now; when
        // the interrupted upload had committed, the repeat answers that release (200).
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let body2 =
            reqwest::Body::wrap_stream(futures::stream::poll_fn(move |cx| rx2.poll_recv(cx)));
        let again = tokio::spawn(
            http.post(format!("{url_now}/api/v1/products/thermo/releases"))
                .bearer_auth(&admin)
                .body(body2)
                .send(),
        );
        tx2.send(Ok(b.clone())).await.unwrap();
        drop(tx2);
        let status = again.await.unwrap().unwrap().status().as_u16();
        assert!(
            status == 201 || (status == 200 && this == 1),
            "trial {trial}: re-push answered {status}"
        );
        url = url_now;
    }
    eprintln!("{trials} kill -9 trials, {published} of the interrupted uploads had committed before the kill");
    let _ = child.kill().await;
}

/// SIGTERM: a download in flight completes, then the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_then_exits() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let http = Client::new();
    let (mut child, url) = start(&data).await;
    let admin = std::fs::read_to_string(data.join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let created: Value = http
        .post(format!("{url}/api/v1/products"))
        .bearer_auth(&admin)
        .json(&json!({"name": "thermo", "chip": "esp32"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = otter_core::keys::PrivateKey::generate();
    http.post(format!("{url}/api/v1/products/thermo/keys"))
        .bearer_auth(&admin)
        .json(&json!({"public_key_pem": key.public_key().to_pem()}))
        .send()
        .await
        .unwrap();
    let img = otter_core::image::synth::build(&otter_core::image::synth::SynthApp {
        chip: Chip::Esp32,
        version: "3.0.0".into(),
        payload_len: 12_000_000, // more than loopback socket buffers hold
        ..Default::default()
    });
    let pushed: Value = http
        .post(format!("{url}/api/v1/products/thermo/releases"))
        .bearer_auth(&admin)
        .body(bundle_of(
            &key,
            &manifest_for("thermo", Chip::Esp32, "3.0.0", &img),
            img.clone(),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enrolled: Value = http
        .post(format!("{url}/device/v1/enroll"))
        .json(&json!({"product": "thermo", "enrollment_secret": created["enrollment_secret"], "hardware_id": "hw-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut download = http
        .get(format!(
            "{url}/device/v1/releases/{}/image",
            pushed["id"].as_str().unwrap()
        ))
        .bearer_auth(enrolled["device_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut got = download.chunk().await.unwrap().unwrap().to_vec();

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(chunk) = download.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), img.len());
    assert!(got == img, "the download in flight completed intact");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("otterd exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit, got {status}");
}
