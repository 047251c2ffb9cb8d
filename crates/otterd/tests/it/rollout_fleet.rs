//! Issue 9, "How we will know it works": a fleet of 1,000 simulated devices speaking the device
//! protocol concurrently goes through a staged rollout of a bad release (a planted failure rate
//! trips the auto-pause at the threshold, in stage 1), then through a rollout of the fixed
//! release that completes all its stages.

use std::time::Instant;

use futures::stream::{self, StreamExt};
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const CHIP: Chip = Chip::Esp32C3;
const DEVICES: usize = 1_000;
/// Devices talking at once (below the server's `max_in_flight`).
const CONCURRENCY: usize = 48;

/// One simulated device: what it runs.
#[derive(Clone)]
struct Sim {
    index: usize,
    token: String,
    version: String,
    sha256: String,
}

/// What a simulated device does with an offered update.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Installs,
    Fails,
}

async fn post(srv: &TestServer, token: &str, path: &str, body: Value) -> (u16, Value) {
    srv.call(Method::POST, path, Some(token), Some(body)).await
}

/// One poll of a device: check in; when offered an update, report its progress and either fail
/// or install it (the next check-in reports its image). Returns whether it was offered one.
async fn poll(srv: &TestServer, sim: &mut Sim, outcome: impl Fn(&Sim) -> Outcome) -> bool {
    let (s, v) = post(
        srv,
        &sim.token,
        "/device/v1/checkin",
        json!({"version": sim.version, "security_counter": 0, "image_sha256": sim.sha256,
            "chip": CHIP.name(), "partition_size": 1572864}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let u = &v["update"];
    if u.is_null() {
        return false;
    }
    for state in ["downloading", "downloaded", "installing"] {
        let (s, v) = post(
            srv,
            &sim.token,
            "/device/v1/status",
            json!({"release_id": u["release_id"], "state": state}),
        )
        .await;
        assert_eq!(s, 204, "{v}");
    }
    match outcome(sim) {
        Outcome::Fails => {
            let (s, v) = post(
                srv,
                &sim.token,
                "/device/v1/status",
                json!({"release_id": u["release_id"], "state": "failure", "reason": "planted: image crashes at boot"}),
            )
            .await;
            assert_eq!(s, 204, "{v}");
        }
        Outcome::Installs => {
            sim.version = u["version"].as_str().unwrap().into();
            sim.sha256 = u["sha256"].as_str().unwrap().into();
            // The device reboots into the new image and says so at its next check-in.
            let (s, v) = post(
                srv,
                &sim.token,
                "/device/v1/checkin",
                json!({"version": sim.version, "security_counter": 0, "image_sha256": sim.sha256,
                    "chip": CHIP.name(), "partition_size": 1572864}),
            )
            .await;
            assert_eq!(s, 200, "{v}");
        }
    }
    true
}

/// Every device polls once, `CONCURRENCY` at a time; returns how many were offered an update.
async fn round(
    srv: &TestServer,
    sims: &mut Vec<Sim>,
    outcome: impl Fn(&Sim) -> Outcome + Copy,
) -> usize {
    let taken = std::mem::take(sims);
    let results: Vec<(Sim, bool)> = stream::iter(taken)
        .map(|mut sim| async move {
            let offered = poll(srv, &mut sim, outcome).await;
            (sim, offered)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let offered = results.iter().filter(|(_, o)| *o).count();
    *sims = results.into_iter().map(|(s, _)| s).collect();
    sims.sort_by_key(|s| s.index);
    offered
}

async fn rollout(srv: &TestServer, release: &Value) -> Value {
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&srv.admin),
            Some(
                json!({"release_id": release["id"], "channel": "stable", "stages": "10,50,100",
                "failure_threshold": "20%", "min_finished": 20, "auto_advance": true}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

async fn show(srv: &TestServer, id: &Value) -> Value {
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/rollouts/{}", id.as_str().unwrap()),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn stage_total(r: &Value, stage: usize) -> i64 {
    r["progress"][stage]["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_pause_a_bad_release_then_take_the_fixed_one() {
    let started = Instant::now();
    let srv = spawn().await;
    let (key, secret) = srv.product("fleet", CHIP).await;
    // A fleet enrols faster than the default rate of new enrolments.
    let (s, v) = srv
        .call(
            Method::PATCH,
            "/api/v1/products/fleet",
            Some(&srv.admin),
            Some(json!({"enrollments_per_minute": null})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, running) = srv.publish(&key, "fleet", CHIP, "1.0.0").await;
    let (s, bad) = srv.publish(&key, "fleet", CHIP, "2.0.0").await;
    assert_eq!(s, 201, "{bad}");

    let secret = &secret;
    let srv_ref = &srv;
    let mut sims: Vec<Sim> = stream::iter(0..DEVICES)
        .map(|index| async move {
            let (_, token) = srv_ref
                .enroll("fleet", secret, &format!("sim-{index:04}"))
                .await;
            Sim {
                index,
                token,
                version: "1.0.0".into(),
                sha256: String::new(),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for sim in &mut sims {
        sim.sha256 = running["sha256"].as_str().unwrap().into();
    }
    sims.sort_by_key(|s| s.index);
    let enrolled = started.elapsed();

    // The bad release: 30 % of the devices that take it fail.
    let bad_rollout = rollout(&srv, &bad).await;
    let planted = |s: &Sim| match s.index % 10 < 3 {
        true => Outcome::Fails,
        false => Outcome::Installs,
    };
    let offered = round(&srv, &mut sims, planted).await;
    let r = show(&srv, &bad_rollout["id"]).await;
    assert_eq!(r["state"], "paused", "{r}");
    let reason = r["pause_reason"].as_str().unwrap();
    // "stage 1: F of N finished devices failed (P% > 20%)", judged with at least 20 finished.
    let figures: Vec<u64> = reason
        .trim_start_matches("stage 1: ")
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert!(reason.starts_with("stage 1: "), "{reason}");
    let (failed, finished) = (figures[0], figures[1]);
    assert!(finished >= 20, "not before min_finished: {reason}");
    assert!(failed * 100 > 20 * finished, "past the threshold: {reason}");
    // Only part of stage 1 (about 10 % of the fleet) was touched: the rollout paused while
    // the rest of the stage checked in.
    assert_eq!(r["current_stage"], 1);
    assert_eq!((stage_total(&r, 1), stage_total(&r, 2)), (0, 0), "{r}");
    let touched = stage_total(&r, 0);
    assert!(
        (20..=150).contains(&touched) && offered as i64 == touched,
        "{touched} devices in stage 1, {offered} offered: {r}"
    );
    // Paused: another round assigns no one new.
    round(&srv, &mut sims, planted).await;
    assert_eq!(
        stage_total(&show(&srv, &bad_rollout["id"]).await, 0),
        touched
    );
    let bad_phase = started.elapsed();

    // Abort it, publish the fixed release and roll it out: no device fails; the stages advance
    // by themselves as every device of a stage succeeds.
    let (s, v) = srv
        .call(
            Method::POST,
            &format!(
                "/api/v1/rollouts/{}/abort",
                bad_rollout["id"].as_str().unwrap()
            ),
            Some(&srv.admin),
            Some(json!({"reason": "2.0.0 crashes at boot"})),
        )
        .await;
    assert_eq!((s, &v["state"]), (200, &json!("aborted")), "{v}");
    let (s, fixed) = srv.publish(&key, "fleet", CHIP, "2.0.1").await;
    assert_eq!(s, 201, "{fixed}");
    let fixed_rollout = rollout(&srv, &fixed).await;
    let mut rounds = 0;
    loop {
        rounds += 1;
        round(&srv, &mut sims, |_| Outcome::Installs).await;
        let r = show(&srv, &fixed_rollout["id"]).await;
        if r["state"] == "completed" {
            let success: i64 = (0..3)
                .map(|k| r["progress"][k]["counts"]["success"].as_i64().unwrap())
                .sum();
            assert_eq!(success, DEVICES as i64, "{r}");
            break;
        }
        assert_eq!(r["state"], "running", "{r}");
        assert!(rounds < 6, "not completed after {rounds} rounds: {r}");
    }
    assert!(sims.iter().all(|s| s.version == "2.0.1"));
    eprintln!(
        "fleet of {DEVICES}: enrolled in {enrolled:?}, bad release paused after {:?}, fixed release completed in {rounds} rounds, {:?} in all",
        bad_phase - enrolled,
        started.elapsed()
    );
}
