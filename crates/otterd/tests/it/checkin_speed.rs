//! Fast check-ins change no behaviour (issue 10): coalesced last-seen writes keep every reported
//! change, status event and outcome; a replaced or deleted device token is refused at once; a
//! release published through one instance is offered by another at the next check-in.

use std::process::Stdio;

use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::backends;
use crate::harness::*;

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn checkin(version: &str) -> Value {
    json!({"version": version, "security_counter": 0, "chip": "esp32c3", "image_sha256": ZEROS})
}

/// A real otterd process on `data_dir` (the test run's database) with a last-seen window far
/// longer than the test, so that anything written must have been written at once.
async fn start(data_dir: &std::path::Path) -> (tokio::process::Child, TestServer) {
    let mut cmd = otterd_serve(data_dir);
    cmd.env("RUST_LOG", "warn")
        .env("OTTER_LAST_SEEN_FLUSH_S", "3600")
        .stderr(Stdio::null());
    let (child, url) = spawn_otterd(cmd).await;
    let dir = tempfile::TempDir::new().unwrap();
    (child, TestServer::attach(url, dir, data_dir))
}

/// A status event, and a check-in's `last_outcome` and new version, reported just before the
/// server is killed with SIGKILL, are all in the device's record after a restart; only the
/// last-seen time of a check-in that reported nothing new may be lost (the documented window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_reported_just_before_kill_9_is_kept() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let (mut child, s) = start(&data).await;
    let (key, secret) = s.product("thermo", Chip::Esp32C3).await;
    let (st, rel) = s.publish(&key, "thermo", Chip::Esp32C3, "1.1.0").await;
    assert_eq!(st, 201, "{rel}");
    let rel_id = rel["id"].as_str().unwrap().to_string();
    let (device_id, token) = s.enroll("thermo", &secret, "aa:01").await;
    let (st, v) = s
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin("1.0.0")),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["update"]["release_id"], rel_id.as_str(), "{v}");
    // The same report again: coalesced (only its last-seen time waits).
    let (st, _) = s
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin("1.0.0")),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .call(
            Method::POST,
            "/device/v1/status",
            Some(&token),
            Some(json!({"release_id": rel_id, "state": "downloading", "progress_bytes": 10})),
        )
        .await;
    assert_eq!(st, 204);
    // The device failed to boot the update and reports the outcome with its next check-in,
    // running a newer build of its own; then the server dies at once.
    let mut last = checkin("1.0.1");
    last["last_outcome"] = json!({"release_id": rel_id, "state": "failure", "reason": "boot loop"});
    let (st, v) = s
        .call(Method::POST, "/device/v1/checkin", Some(&token), Some(last))
        .await;
    assert_eq!(st, 200, "{v}");
    child.kill().await.unwrap(); // SIGKILL
    drop(s);

    let (mut child, s) = start(&data).await;
    let (st, v) = s
        .call(
            Method::GET,
            &format!("/api/v1/devices/{device_id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let d = &v["device"];
    assert_eq!(
        d["version"], "1.0.1",
        "a reported change is written at once: {v}"
    );
    assert_eq!(d["last_state"], "failure", "{v}");
    assert!(d["last_seen_at"].is_string(), "{v}");
    let states: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failure", "downloading"], "newest first: {v}");
    assert_eq!(v["history"][0]["reason"], "boot loop", "{v}");
    child.kill().await.unwrap();
}

/// A device whose token was replaced (a repeated enrolment with its nonce) or that was deleted
/// is refused at the very next check-in, however often it checked in before.
#[tokio::test]
async fn a_replaced_or_deleted_device_token_is_refused_at_once() {
    let s = spawn().await;
    let (_, secret) = s.product("thermo", Chip::Esp32C3).await;
    let enrol = json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": "aa:02",
        "enrollment_nonce": "0123456789abcdef0123456789abcdef"});
    let (st, v) = s
        .call(Method::POST, "/device/v1/enroll", None, Some(enrol.clone()))
        .await;
    assert_eq!(st, 201, "{v}");
    let (device_id, old) = (
        v["device_id"].as_str().unwrap().to_string(),
        v["device_token"].as_str().unwrap().to_string(),
    );
    for _ in 0..3 {
        let (st, v) = s
            .call(
                Method::POST,
                "/device/v1/checkin",
                Some(&old),
                Some(checkin("1.0.0")),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = s
        .call(Method::POST, "/device/v1/enroll", None, Some(enrol))
        .await;
    assert_eq!(st, 201, "{v}");
    let new = v["device_token"].as_str().unwrap().to_string();
    let (st, v) = s
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&old),
            Some(checkin("1.0.0")),
        )
        .await;
    assert_eq!(st, 401, "the replaced token: {v}");
    let (st, v) = s
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&new),
            Some(checkin("1.0.0")),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{device_id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, v) = s
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&new),
            Some(checkin("1.0.0")),
        )
        .await;
    assert_eq!(st, 401, "the deleted device: {v}");
}

/// What is offered follows every change at the next check-in, also through another instance:
/// a device checking in through B is offered nothing, then a release published through A; once
/// A starts a rollout of that release to other devices (a tag the device lacks), B offers it no
/// more. On PostgreSQL A and B are two real otterd processes on one database; on SQLite (one
/// server's own file) they are one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_instance_changes_the_other_offers_at_the_next_checkin() {
    if backends::selected() != backends::TestDatabase::Postgres {
        let s = spawn().await;
        return offers_follow_changes(&s, &s).await;
    }
    let url = backends::postgres::fresh_database();
    let serve = |data: &std::path::Path| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_otterd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("OTTER_DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null());
        cmd
    };
    let (dir_a, dir_b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (a_data, b_data) = (dir_a.path().join("data"), dir_b.path().join("data"));
    let (mut child_a, url_a) = spawn_otterd(serve(&a_data)).await;
    let (mut child_b, url_b) = spawn_otterd(serve(&b_data)).await;
    let a = TestServer::attach(url_a, dir_a, &a_data);
    let mut b = TestServer::attach(url_b, dir_b, &a_data);
    b.admin = a.admin.clone();
    offers_follow_changes(&a, &b).await;
    child_a.kill().await.unwrap();
    child_b.kill().await.unwrap();
}

async fn offers_follow_changes(a: &TestServer, b: &TestServer) {
    let (key, secret) = a.product("thermo", Chip::Esp32C3).await;
    let (_, token) = b.enroll("thermo", &secret, "aa:03").await;
    let offered = || async {
        let (st, v) = b
            .call(
                Method::POST,
                "/device/v1/checkin",
                Some(&token),
                Some(checkin("1.0.0")),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v["update"]["release_id"].clone()
    };
    for _ in 0..3 {
        assert_eq!(offered().await, Value::Null);
    }
    let (st, rel) = a.publish(&key, "thermo", Chip::Esp32C3, "1.1.0").await;
    assert_eq!(st, 201, "{rel}");
    for _ in 0..3 {
        assert_eq!(offered().await, rel["id"], "published through A");
    }
    let (st, v) = a
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&a.admin),
            Some(
                json!({"release_id": rel["id"], "tag": "nobody", "stages": "100",
                "failure_threshold": "20%"}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        offered().await,
        Value::Null,
        "a rollout delivers the release now, to other devices"
    );
}

/// A check-in that reports nothing new is not written at once, but its last-seen time is, by
/// the flush job, within `last_seen_flush_s`.
#[tokio::test]
async fn a_coalesced_last_seen_time_is_written_within_the_window() {
    let s = spawn_with(|s| s.last_seen_flush_s = 1).await;
    let (_, secret) = s.product("thermo", Chip::Esp32C3).await;
    let (device_id, token) = s.enroll("thermo", &secret, "aa:04").await;
    let seen = || async {
        let (st, v) = s
            .call(
                Method::GET,
                &format!("/api/v1/devices/{device_id}"),
                Some(&s.admin),
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v["device"]["last_seen_at"].as_str().unwrap().to_string()
    };
    let checkin_now = || async {
        let (st, v) = s
            .call(
                Method::POST,
                "/device/v1/checkin",
                Some(&token),
                Some(checkin("1.0.0")),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    };
    checkin_now().await;
    let first = seen().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    checkin_now().await;
    let mut later = seen().await;
    for _ in 0..30 {
        if later > first {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        later = seen().await;
    }
    assert!(later > first, "last seen {first} then {later}");
}
