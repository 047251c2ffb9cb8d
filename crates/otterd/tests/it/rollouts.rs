//! Staged rollouts (issue 9): targets, stages by bucket, thresholds that pause by themselves,
//! pause/resume/abort, rollback, one active deployment per device across two instances, the
//! maintenance window and the rate limit. Every test talks to a real server over HTTP.

use otter_core::rollout::{bucket, Stages};
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const CHIP: Chip = Chip::Esp32C3;

/// A server with product `fleet`, release 1.0.0 (what devices run) and 2.0.0 on stable.
struct Fleet {
    srv: TestServer,
    secret: String,
    old: Value,
    new: Value,
}

async fn fleet() -> Fleet {
    fleet_on(spawn().await).await
}

async fn fleet_on(srv: TestServer) -> Fleet {
    let (key, secret) = srv.product("fleet", CHIP).await;
    let (s, old) = srv.publish(&key, "fleet", CHIP, "1.0.0").await;
    assert_eq!(s, 201, "{old}");
    let (s, new) = srv.publish(&key, "fleet", CHIP, "2.0.0").await;
    assert_eq!(s, 201, "{new}");
    Fleet {
        srv,
        secret,
        old,
        new,
    }
}

/// A device: (id, token).
type Dev = (String, String);

impl Fleet {
    async fn devices(&self, n: usize, tag: Option<&str>) -> Vec<Dev> {
        let mut out = vec![];
        for i in 0..n {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let hw = format!("{}-{i}-{n}", tag.unwrap_or("plain"));
            let d = self.srv.enroll("fleet", &self.secret, &hw).await;
            // Tags through the store (the tag routes belong to another part of issue 9).
            if let Some(t) = tag {
                self.tag(&d.0, t).await;
            }
            out.push(d);
        }
        out
    }

    async fn tag(&self, device: &str, tag: &str) {
        let db = crate::backends::open_db(&self.srv.data_dir()).await;
        db.tag_device(device, &[tag.to_string()]).await.unwrap();
    }

    /// Checks in as running `release` (its version and image); returns the `update`.
    async fn checkin_running(&self, d: &Dev, release: &Value) -> Value {
        checkin(
            &self.srv,
            &d.1,
            release["version"].as_str().unwrap(),
            release["sha256"].as_str().unwrap(),
        )
        .await
    }

    async fn rollout(&self, body: Value) -> Value {
        let (s, v) = self
            .srv
            .call(
                Method::POST,
                "/api/v1/rollouts",
                Some(&self.srv.admin),
                Some(body),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn show(&self, id: &Value) -> Value {
        let (s, v) = self
            .srv
            .call(
                Method::GET,
                &format!("/api/v1/rollouts/{}", id.as_str().unwrap()),
                Some(&self.srv.admin),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn act(&self, id: &Value, what: &str) -> (u16, Value) {
        self.srv
            .call(
                Method::POST,
                &format!("/api/v1/rollouts/{}/{what}", id.as_str().unwrap()),
                Some(&self.srv.admin),
                None,
            )
            .await
    }

    async fn report(&self, d: &Dev, release: &Value, state: &str) {
        let reason = (state != "success").then_some("planted");
        let (s, v) = self
            .srv
            .call(
                Method::POST,
                "/device/v1/status",
                Some(&d.1),
                Some(json!({"release_id": release["id"], "state": state, "reason": reason})),
            )
            .await;
        assert_eq!(s, 204, "{v}");
    }
}

async fn checkin(srv: &TestServer, token: &str, version: &str, sha: &str) -> Value {
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(token),
            Some(json!({"version": version, "security_counter": 0, "image_sha256": sha, "chip": CHIP.name(), "partition_size": 1572864})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["update"].clone()
}

fn count(rollout: &Value, stage: usize, state: &str) -> i64 {
    rollout["progress"][stage]["counts"][state]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_device_outside_the_target_never_gets_the_release() {
    let f = fleet().await;
    let lab = f.devices(3, Some("lab")).await;
    let plain = f.devices(3, None).await;
    // Before any rollout, 2.0.0 reaches the whole channel.
    assert_eq!(
        f.checkin_running(&plain[0], &f.old).await["release_id"],
        f.new["id"]
    );

    let r = f
        .rollout(json!({"release_id": f.new["id"], "tag": "lab", "stages": "100", "failure_threshold": "20%"}))
        .await;
    assert_eq!(
        (r["state"].as_str(), r["current_stage"].as_i64()),
        (Some("running"), Some(1))
    );
    for d in &plain {
        assert_eq!(
            f.checkin_running(d, &f.old).await,
            Value::Null,
            "outside the target"
        );
    }
    for d in &lab {
        let u = f.checkin_running(d, &f.old).await;
        assert_eq!(u["release_id"], f.new["id"]);
        assert_eq!((&u["rollout_id"], &u["forced"]), (&r["id"], &json!(true)));
    }
    let shown = f.show(&r["id"]).await;
    assert_eq!(count(&shown, 0, "assigned"), 3, "{shown}");

    // The same image promoted to another channel is not delivered there either.
    let (s, v) = f
        .srv
        .call(
            Method::POST,
            &format!("/api/v1/releases/{}/promote", f.new["id"].as_str().unwrap()),
            Some(&f.srv.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = f
        .srv
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{}", plain[0].0),
            Some(&f.srv.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(f.checkin_running(&plain[0], &f.old).await, Value::Null);
}

#[tokio::test]
async fn stage_membership_follows_the_bucket_and_advances_by_hand() {
    let f = fleet().await;
    let devices = f.devices(30, Some("field")).await;
    let r = f
        .rollout(json!({"release_id": f.new["id"], "tag": "field", "stages": "30,100", "failure_threshold": "50%"}))
        .await;
    let stages: Stages = "30,100".parse().unwrap();
    let id = r["id"].as_str().unwrap();
    let mut first = 0;
    for d in &devices {
        let expected = stages.admits(bucket(id, &d.0), 0);
        first += usize::from(expected);
        for _ in 0..2 {
            let u = f.checkin_running(d, &f.old).await;
            assert_eq!(
                !u.is_null(),
                expected,
                "the same answer every time for {}",
                d.0
            );
        }
    }
    assert!(first > 0 && first < 30, "{first} of 30 in a 30 % stage");
    let (s, v) = f.act(&r["id"], "advance").await;
    assert_eq!((s, v["current_stage"].as_i64()), (200, Some(2)), "{v}");
    for d in &devices {
        assert_eq!(
            f.checkin_running(d, &f.old).await["release_id"],
            f.new["id"]
        );
    }
    let (s, v) = f.act(&r["id"], "advance").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("completed")), "{v}");
    let (s, v) = f.act(&r["id"], "advance").await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
}

#[tokio::test]
async fn auto_pause_trips_at_the_threshold_and_not_before_then_resume_and_abort() {
    let f = fleet().await;
    let devices = f.devices(8, Some("lab")).await;
    let late = f.devices(1, Some("lab")).await;
    let r = f
        .rollout(
            json!({"release_id": f.new["id"], "tag": "lab", "stages": "100",
            "failure_threshold": "20%", "min_finished": 5}),
        )
        .await;
    for d in &devices {
        assert!(!f.checkin_running(d, &f.old).await.is_null());
    }
    // Two failures of two finished: past 20 %, but fewer than 5 finished.
    f.report(&devices[0], &f.new, "downloading").await;
    f.report(&devices[0], &f.new, "failure").await;
    f.report(&devices[1], &f.new, "rolled_back").await;
    f.report(&devices[2], &f.new, "success").await;
    f.report(&devices[3], &f.new, "success").await;
    let shown = f.show(&r["id"]).await;
    assert_eq!(shown["state"], "running", "4 finished < min 5: {shown}");
    assert_eq!(count(&shown, 0, "failure"), 1);
    assert_eq!(count(&shown, 0, "rolled_back"), 1);
    // The fifth finished: 2 of 5 failed, 40 % > 20 %.
    f.report(&devices[4], &f.new, "success").await;
    let shown = f.show(&r["id"]).await;
    assert_eq!(shown["state"], "paused", "{shown}");
    assert_eq!(
        shown["pause_reason"],
        "stage 1: 2 of 5 finished devices failed (40% > 20%)"
    );
    // The pause is in the audit log, by the system, with its reason.
    let (s, log) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/audit?action=rollout.pause",
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{log}");
    let entry = &log["entries"][0];
    assert_eq!(
        (&entry["actor"], &entry["target"], &entry["detail"]),
        (&json!("system"), &r["id"], &shown["pause_reason"]),
        "{log}"
    );

    // Paused: a device not yet assigned gets nothing; an assigned one may finish.
    assert_eq!(f.checkin_running(&late[0], &f.old).await, Value::Null);
    assert_eq!(
        f.checkin_running(&devices[5], &f.old).await["release_id"],
        f.new["id"]
    );
    f.report(&devices[5], &f.new, "success").await;

    // Resume acknowledges the failures so far: new devices are assigned again.
    let (s, v) = f.act(&r["id"], "resume").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(v["pause_reason"], Value::Null);
    assert_eq!(
        f.checkin_running(&late[0], &f.old).await["release_id"],
        f.new["id"]
    );
    let (s, _) = f.act(&r["id"], "resume").await;
    assert_eq!(s, 409, "resuming a running rollout");

    // Abort: assigned devices are cancelled and nothing is offered any more, not even by the
    // channel the release is on.
    let (s, v) = f.act(&r["id"], "abort").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("aborted")), "{v}");
    assert_eq!(count(&v, 0, "cancelled"), 3, "{v}");
    for d in devices.iter().chain(&late) {
        assert_eq!(f.checkin_running(d, &f.old).await, Value::Null);
    }
    let fresh = f.devices(1, None).await;
    assert_eq!(f.checkin_running(&fresh[0], &f.old).await, Value::Null);
    let (s, _) = f.act(&r["id"], "pause").await;
    assert_eq!(s, 409, "an aborted rollout cannot be paused");
}

#[tokio::test]
async fn success_by_image_hash_advances_stages_automatically_until_completed() {
    let f = fleet().await;
    let devices = f.devices(12, Some("lab")).await;
    let r = f
        .rollout(
            json!({"release_id": f.new["id"], "tag": "lab", "stages": "50,100",
            "failure_threshold": "1", "auto_advance": true}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let stages: Stages = "50,100".parse().unwrap();
    let (first, second): (Vec<&Dev>, Vec<&Dev>) = devices
        .iter()
        .partition(|d| stages.stage_of(bucket(id, &d.0)) == Some(0));
    for d in &first {
        assert_eq!(
            f.checkin_running(d, &f.old).await["release_id"],
            f.new["id"]
        );
    }
    for d in &second {
        assert_eq!(f.checkin_running(d, &f.old).await, Value::Null);
    }
    // Each device of stage 1 reports running the new image: success; the last one opens
    // stage 2 at once (no soak time).
    for d in &first {
        assert_eq!(f.checkin_running(d, &f.new).await, Value::Null);
    }
    let shown = f.show(&r["id"]).await;
    assert_eq!(shown["current_stage"], 2, "{shown}");
    assert_eq!(count(&shown, 0, "success"), first.len() as i64);
    for d in &second {
        assert_eq!(
            f.checkin_running(d, &f.old).await["release_id"],
            f.new["id"]
        );
        f.report(d, &f.new, "success").await;
    }
    let shown = f.show(&r["id"]).await;
    assert_eq!(shown["state"], "completed", "{shown}");
}

#[tokio::test]
async fn a_rollback_offers_an_older_release_and_only_when_flagged() {
    let f = fleet().await;
    let a = f.devices(1, Some("a")).await;
    let b = f.devices(1, Some("b")).await;
    // 1.0.0 to devices running 2.0.0: refused without --rollback, offered with it.
    let plain = f
        .rollout(json!({"release_id": f.old["id"], "tag": "a", "stages": "100", "failure_threshold": "100%"}))
        .await;
    let back = f
        .rollout(json!({"release_id": f.old["id"], "tag": "b", "stages": "100", "failure_threshold": "100%", "rollback": true, "optional": true}))
        .await;
    assert_eq!(back["rollback"], true);
    assert_eq!(f.checkin_running(&a[0], &f.new).await, Value::Null);
    let shown = f.show(&plain["id"]).await;
    assert_eq!(count(&shown, 0, "refused"), 1, "{shown}");
    let u = f.checkin_running(&b[0], &f.new).await;
    assert_eq!(u["release_id"], f.old["id"]);
    assert_eq!(
        (&u["rollout_id"], &u["forced"]),
        (&back["id"], &json!(false))
    );
}

#[tokio::test]
async fn the_window_and_the_rate_limit_hold() {
    let f = fleet().await;
    let closed = f.devices(2, Some("night")).await;
    let many = f.devices(5, Some("many")).await;
    // A window that ends before now and starts after it: closed now.
    let m = (otterd::now() % 86_400) / 60;
    let (start, end) = ((m + 60) % 1440, (m + 120) % 1440);
    let window = format!(
        "{:02}:{:02}-{:02}:{:02}",
        start / 60,
        start % 60,
        end / 60,
        end % 60
    );
    let r = f
        .rollout(json!({"release_id": f.new["id"], "tag": "night", "stages": "100", "failure_threshold": "20%", "window": window}))
        .await;
    assert_eq!(r["window"], window);
    for d in &closed {
        assert_eq!(
            f.checkin_running(d, &f.old).await,
            Value::Null,
            "outside {window}"
        );
    }
    // Stay within one minute for the rate count.
    if otterd::now() % 60 > 45 {
        tokio::time::sleep(std::time::Duration::from_secs(16)).await;
    }
    f.rollout(json!({"release_id": f.new["id"], "tag": "many", "stages": "100", "failure_threshold": "20%", "rate_per_minute": 2}))
        .await;
    let mut assigned = 0;
    for d in &many {
        assigned += usize::from(!f.checkin_running(d, &f.old).await.is_null());
    }
    assert_eq!(assigned, 2, "2 new deployments a minute");

    for (body, says) in [
        (
            json!({"release_id": f.new["id"], "tag": "x", "stages": "100", "failure_threshold": "20%", "window": "25:00-01:00"}),
            "window",
        ),
        (
            json!({"release_id": f.new["id"], "tag": "x", "stages": "50,10", "failure_threshold": "20%"}),
            "increase",
        ),
        (
            json!({"release_id": f.new["id"], "stages": "100", "failure_threshold": "20%"}),
            "exactly one target",
        ),
        (
            json!({"release_id": f.new["id"], "tag": "x", "channel": "stable", "stages": "100", "failure_threshold": "20%"}),
            "exactly one target",
        ),
        (
            json!({"release_id": f.new["id"], "tag": "x", "stages": "100", "failure_threshold": "lots"}),
            "threshold",
        ),
        (
            json!({"release_id": f.new["id"], "filter": "colour=red", "stages": "100", "failure_threshold": "2"}),
            "unknown field",
        ),
        (
            json!({"release_id": f.new["id"], "tag": "x", "stages": "100", "failure_threshold": "2", "rate_per_minute": 0}),
            "at least 1",
        ),
    ] {
        let (s, v) = f
            .srv
            .call(
                Method::POST,
                "/api/v1/rollouts",
                Some(&f.srv.admin),
                Some(body),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{says}: {v}");
    }
    let (s, v) = f
        .srv
        .call(Method::POST, "/api/v1/rollouts", Some(&f.srv.admin),
            Some(json!({"release_id": f.new["id"], "group": "nope", "stages": "100", "failure_threshold": "2"})))
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = f
        .srv
        .call(Method::GET, "/api/v1/rollouts", Some(&f.srv.admin), None)
        .await;
    assert_eq!(
        (s, v["rollouts"].as_array().unwrap().len()),
        (200, 2),
        "nothing refused was stored: {v}"
    );
}

#[tokio::test]
async fn viewers_read_and_publishers_change_only_their_products() {
    let f = fleet().await;
    let viewer = f.srv.token("viewer", &[]).await;
    let own = f.srv.token("publisher", &["fleet"]).await;
    f.srv.product("other", CHIP).await;
    let foreign = f.srv.token("publisher", &["other"]).await;
    let body = json!({"release_id": f.new["id"], "channel": "stable", "stages": "10,100", "failure_threshold": "20%"});
    let call = |t: String, m: Method, p: String, b: Option<Value>| {
        let srv = &f.srv;
        async move { srv.call(m, &p, Some(&t), b).await }
    };
    let (s, _) = call(
        viewer.clone(),
        Method::POST,
        "/api/v1/rollouts".into(),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        foreign.clone(),
        Method::POST,
        "/api/v1/rollouts".into(),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        s, 404,
        "another product's release is not shown to this publisher"
    );
    let (s, r) = call(
        own.clone(),
        Method::POST,
        "/api/v1/rollouts".into(),
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["created_by"], "publisher-test");
    let path = format!("/api/v1/rollouts/{}", r["id"].as_str().unwrap());
    let (s, v) = call(viewer.clone(), Method::GET, path.clone(), None).await;
    assert_eq!((s, &v["state"]), (200, &json!("running")));
    let (s, _) = call(viewer, Method::POST, format!("{path}/pause"), None).await;
    assert_eq!(s, 403);
    let (s, _) = call(foreign.clone(), Method::GET, path.clone(), None).await;
    assert_eq!(s, 404);
    let (s, v) = call(foreign, Method::GET, "/api/v1/rollouts".into(), None).await;
    assert_eq!((s, v["rollouts"].as_array().unwrap().len()), (200, 0));
    let (s, v) = call(
        own,
        Method::POST,
        format!("{path}/pause"),
        Some(json!({"reason": "looking"})),
    )
    .await;
    assert_eq!(
        (s, &v["state"], &v["pause_reason"]),
        (200, &json!("paused"), &json!("looking"))
    );
}

/// A second server on `a`'s database with its own data directory (kept alive by the returned
/// directory). On S3 it has a bucket of its own: the tests using it download nothing.
async fn second_instance(
    a: &TestServer,
    tweak: impl FnOnce(&mut otterd::config::Settings),
) -> (tempfile::TempDir, TestServer) {
    let shared_db = crate::backends::database_url_of(&a.data_dir());
    let admin_token = a.data_dir().join("initial-admin-token");
    // Its admin token is the first server's: the database has one already.
    let b_dir = tempfile::TempDir::new().unwrap();
    let b_data = b_dir.path().join("data");
    std::fs::create_dir(&b_data).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&b_data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::copy(&admin_token, b_data.join("initial-admin-token")).unwrap();
    let b = spawn_with(|s| {
        s.data_dir = b_data;
        s.database_url = Some(shared_db.into());
        tweak(s);
    })
    .await;
    (b_dir, b)
}

/// Two instances on one database: a rollout created through one is assigned and judged from
/// check-ins on the other, and although both run the rollout worker, the stage advances once
/// (one system entry in the audit log).
#[tokio::test]
async fn a_rollout_created_on_one_instance_advances_from_checkins_on_the_other() {
    let a = spawn_with(|s| s.rollout_eval_interval_s = 1).await;
    let (_b_dir, b) = second_instance(&a, |s| s.rollout_eval_interval_s = 1).await;
    let f = fleet_on(a).await;
    let devices = f.devices(10, Some("lab")).await;
    let r = f
        .rollout(
            json!({"release_id": f.new["id"], "tag": "lab", "stages": "50,100",
            "failure_threshold": "1", "auto_advance": true, "soak_s": 1}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let stages: Stages = "50,100".parse().unwrap();
    let (first, second): (Vec<&Dev>, Vec<&Dev>) = devices
        .iter()
        .partition(|d| stages.admits(bucket(id, &d.0), 0));
    assert!(!first.is_empty(), "10 devices, none in a 50 % stage");
    let old = (
        f.old["version"].as_str().unwrap(),
        f.old["sha256"].as_str().unwrap(),
    );
    let new = (
        f.new["version"].as_str().unwrap(),
        f.new["sha256"].as_str().unwrap(),
    );
    for d in &second {
        assert!(
            checkin(&b, &d.1, old.0, old.1).await.is_null(),
            "stage 2 not open"
        );
    }
    for d in &first {
        let u = checkin(&b, &d.1, old.0, old.1).await;
        assert_eq!(
            (&u["release_id"], &u["rollout_id"]),
            (&f.new["id"], &r["id"])
        );
        assert!(
            checkin(&b, &d.1, new.0, new.1).await.is_null(),
            "success by image"
        );
    }
    let started = std::time::Instant::now();
    loop {
        let shown = f.show(&r["id"]).await;
        if shown["current_stage"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "no worker advanced the rollout: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for d in &second {
        let u = checkin(&b, &d.1, old.0, old.1).await;
        assert_eq!(
            u["rollout_id"], r["id"],
            "stage 2 is open on the other instance: {u}"
        );
    }
    // Give both workers time for more passes: the stage was advanced by one of them, once.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (s, log) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/audit?action=rollout.advance&target={id}"),
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["actor"], "system", "{log}");
}

#[tokio::test]
async fn concurrent_checkins_on_two_instances_never_double_assign() {
    let a = spawn().await;
    let (_b_dir, b) = second_instance(&a, |_| {}).await;
    let f = fleet_on(a).await;
    let devices = f.devices(4, Some("lab")).await;
    // Two rollouts of the product target the devices; the newer one wins.
    f.rollout(json!({"release_id": f.old["id"], "tag": "lab", "stages": "100", "failure_threshold": "20%", "rollback": true}))
        .await;
    let newer = f
        .rollout(json!({"release_id": f.new["id"], "tag": "lab", "stages": "100", "failure_threshold": "20%"}))
        .await;
    let sha = "0".repeat(64);
    let mut calls = vec![];
    for d in &devices {
        for i in 0..8 {
            let srv = if i % 2 == 0 { &f.srv } else { &b };
            calls.push(checkin(srv, &d.1, "0.9.0", &sha));
        }
    }
    let answers = futures::future::join_all(calls).await;
    for u in &answers {
        assert_eq!(
            (&u["release_id"], &u["rollout_id"]),
            (&f.new["id"], &newer["id"]),
            "{u}"
        );
    }
    let (s, v) = f
        .srv
        .call(
            Method::GET,
            &format!(
                "/api/v1/rollouts/{}/deployments",
                newer["id"].as_str().unwrap()
            ),
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["deployments"].as_array().unwrap().len(),
        4,
        "one per device: {v}"
    );
}

impl Fleet {
    async fn store(&self) -> std::sync::Arc<dyn otterd::db::Database> {
        crate::backends::open_db(&self.srv.data_dir()).await
    }
}

#[tokio::test]
async fn a_finished_device_returns_to_its_channel_and_final_states_stay() {
    let f = fleet().await;
    let devices = f.devices(2, Some("lab")).await;
    let r = f
        .rollout(json!({"release_id": f.new["id"], "tag": "lab", "stages": "100", "failure_threshold": "100%", "min_finished": 1}))
        .await;
    for d in &devices {
        assert_eq!(
            f.checkin_running(d, &f.old).await["release_id"],
            f.new["id"]
        );
    }
    // The check-in's last_outcome feeds the deployment as a status report does.
    let (s, v) = f
        .srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&devices[0].1),
            Some(json!({"version": "1.0.0", "security_counter": 0, "image_sha256": f.old["sha256"], "chip": CHIP.name(),
                "last_outcome": {"release_id": f.new["id"], "state": "failure", "reason": "boot loop"}})),
        )
        .await;
    assert_eq!((s, &v["update"]), (200, &Value::Null), "{v}");
    // A final state stays: a later success report does not turn the failure around.
    f.report(&devices[0], &f.new, "success").await;
    f.report(&devices[1], &f.new, "success").await;
    let shown = f.show(&r["id"]).await;
    assert_eq!(
        (count(&shown, 0, "failure"), count(&shown, 0, "success")),
        (1, 1),
        "{shown}"
    );
    let (_, page) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/rollouts/{}/deployments", r["id"].as_str().unwrap()),
            Some(&f.srv.admin),
            None,
        )
        .await;
    let failed = page["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == json!(devices[0].0))
        .unwrap();
    assert_eq!(
        (&failed["state"], &failed["reason"]),
        (&json!("failure"), &json!("boot loop"))
    );
    let (s, v) = f.act(&r["id"], "advance").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("completed")));

    // A later release without a rollout reaches the devices through their channel again.
    let key = {
        // A new key for the product: the harness keeps none.
        let key = otter_core::keys::PrivateKey::generate();
        let (s, v) = f
            .srv
            .call(
                Method::POST,
                "/api/v1/products/fleet/keys",
                Some(&f.srv.admin),
                Some(json!({"public_key_pem": key.public_key().to_pem()})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        key
    };
    let (s, newer) = f.srv.publish(&key, "fleet", CHIP, "2.1.0").await;
    assert_eq!(s, 201, "{newer}");
    let u = f.checkin_running(&devices[1], &f.new).await;
    assert_eq!(
        (&u["release_id"], &u["rollout_id"]),
        (&newer["id"], &Value::Null),
        "{u}"
    );
}

#[tokio::test]
async fn the_worker_advances_after_the_soak_time() {
    let srv = spawn_with(|s| s.rollout_eval_interval_s = 1).await;
    let f = fleet_on(srv).await;
    let devices = f.devices(6, Some("lab")).await;
    let r = f
        .rollout(
            json!({"release_id": f.new["id"], "tag": "lab", "stages": "50,100",
            "failure_threshold": "1", "auto_advance": true, "soak_s": 2}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let stages: Stages = "50,100".parse().unwrap();
    for d in devices
        .iter()
        .filter(|d| stages.admits(bucket(id, &d.0), 0))
    {
        assert!(!f.checkin_running(d, &f.old).await.is_null());
        assert!(
            f.checkin_running(d, &f.new).await.is_null(),
            "success by image"
        );
    }
    assert_eq!(f.show(&r["id"]).await["current_stage"], 1, "soaking");
    let started = std::time::Instant::now();
    loop {
        let shown = f.show(&r["id"]).await;
        if shown["current_stage"] == 2 {
            assert!(
                started.elapsed() >= std::time::Duration::from_millis(900),
                "not before the soak time"
            );
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the worker never advanced: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn groups_and_filters_are_targets() {
    use otterd::db::fleet::GroupRow;
    let f = fleet().await;
    let devices = f.devices(3, None).await;
    let store = f.store().await;
    let product_id = store.get_product("fleet").await.unwrap().id;
    store
        .create_group(
            &GroupRow {
                id: "grp_1".into(),
                product_id,
                name: "pilots".into(),
                filter: None,
                created_at: 0,
                created_by: "t".into(),
            },
            &[devices[0].0.clone()],
        )
        .await
        .unwrap();
    let g = f
        .rollout(json!({"release_id": f.new["id"], "group": "pilots", "stages": "100", "failure_threshold": "20%"}))
        .await;
    assert_eq!(
        f.checkin_running(&devices[0], &f.old).await["rollout_id"],
        g["id"]
    );
    assert_eq!(f.checkin_running(&devices[1], &f.old).await, Value::Null);
    // A filter on what the device reports: devices[2] runs an older version than devices[1].
    let fl = f
        .rollout(json!({"release_id": f.new["id"], "filter": "version<0.9.0", "stages": "100", "failure_threshold": "20%"}))
        .await;
    assert_eq!(f.checkin_running(&devices[1], &f.old).await, Value::Null);
    let u = checkin(&f.srv, &devices[2].1, "0.5.0", &"1".repeat(64)).await;
    assert_eq!(u["rollout_id"], fl["id"]);
}

#[tokio::test]
async fn a_rollback_still_respects_the_security_counter() {
    let f = fleet().await;
    let d = f.devices(1, Some("lab")).await;
    let r = f
        .rollout(json!({"release_id": f.old["id"], "tag": "lab", "stages": "100", "failure_threshold": "100%", "rollback": true}))
        .await;
    let (s, v) = f
        .srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&d[0].1),
            Some(json!({"version": "2.0.0", "security_counter": 3, "image_sha256": f.new["sha256"], "chip": CHIP.name()})),
        )
        .await;
    assert_eq!((s, &v["update"]), (200, &Value::Null), "{v}");
    let (_, page) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/rollouts/{}/deployments", r["id"].as_str().unwrap()),
            Some(&f.srv.admin),
            None,
        )
        .await;
    let d = &page["deployments"][0];
    assert_eq!(d["state"], "refused", "{page}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("security counter 0 is below the device's 3"),
        "{page}"
    );
}

#[tokio::test]
async fn a_job_lease_has_one_holder_until_it_expires() {
    // Two handles (two connection pools, as two instances have) on the test run's database.
    let dir = tempfile::TempDir::new().unwrap();
    let a = crate::backends::open_db(dir.path()).await;
    let b = crate::backends::open_db(dir.path()).await;
    assert!(a.acquire_lease("job", "a", 100, 0).await.unwrap());
    assert!(
        !b.acquire_lease("job", "b", 100, 50).await.unwrap(),
        "held by a"
    );
    assert!(
        a.acquire_lease("job", "a", 200, 99).await.unwrap(),
        "its holder renews it"
    );
    assert!(!b.acquire_lease("job", "b", 300, 150).await.unwrap());
    assert!(
        b.acquire_lease("job", "b", 400, 201).await.unwrap(),
        "expired: taken over"
    );
    assert!(!a.acquire_lease("job", "a", 500, 300).await.unwrap());
    assert!(
        a.acquire_lease("other", "a", 500, 300).await.unwrap(),
        "one lease per job"
    );
    // Many takers at once: exactly one wins.
    let takers = (0..16).map(|i| {
        let b = b.clone();
        async move {
            b.acquire_lease("race", &format!("h{i}"), 1000, 0)
                .await
                .unwrap()
        }
    });
    let won = futures::future::join_all(takers).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1);
}

#[tokio::test]
async fn rollouts_and_deployments_are_paged() {
    let f = fleet().await;
    let devices = f.devices(3, Some("lab")).await;
    let mut ids = vec![];
    for tag in ["a", "b", "lab"] {
        let r = f
            .rollout(json!({"release_id": f.new["id"], "tag": tag, "stages": "100", "failure_threshold": "20%"}))
            .await;
        ids.push(r["id"].clone());
    }
    let get = |path: String| {
        let srv = &f.srv;
        async move {
            let (s, v) = srv.call(Method::GET, &path, Some(&srv.admin), None).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let first = get("/api/v1/rollouts?limit=2".into()).await;
    let listed: Vec<&Value> = first["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(listed, [&ids[2], &ids[1]], "newest first");
    let next = first["next"].as_str().unwrap();
    let second = get(format!("/api/v1/rollouts?limit=2&cursor={next}")).await;
    assert_eq!(second["rollouts"][0]["id"], ids[0]);
    assert_eq!(second["next"], Value::Null);
    let (s, v) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/rollouts?cursor=bogus",
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_cursor")));

    for d in &devices {
        assert!(!f.checkin_running(d, &f.old).await.is_null());
    }
    let base = format!("/api/v1/rollouts/{}/deployments", ids[2].as_str().unwrap());
    let page = get(format!("{base}?limit=2")).await;
    assert_eq!(page["deployments"].as_array().unwrap().len(), 2);
    let rest = get(format!(
        "{base}?limit=2&cursor={}",
        page["next"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        (rest["deployments"].as_array().unwrap().len(), &rest["next"]),
        (1, &Value::Null)
    );
    let mut seen: Vec<String> = page["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["deployments"].as_array().unwrap())
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut all: Vec<String> = devices.iter().map(|d| d.0.clone()).collect();
    all.sort();
    assert_eq!(seen, all);
}

#[tokio::test]
async fn an_assignment_that_raced_with_an_abort_is_cancelled_at_the_next_checkin() {
    use otterd::db::rollouts::DeploymentRow;
    let f = fleet().await;
    let d = f.devices(1, Some("lab")).await;
    let first = f
        .rollout(json!({"release_id": f.new["id"], "tag": "lab", "stages": "100", "failure_threshold": "20%"}))
        .await;
    let (s, _) = f.act(&first["id"], "abort").await;
    assert_eq!(s, 200);
    // A check-in on another instance assigned the device just after the abort cancelled the
    // rollout's deployments.
    let store = f.store().await;
    store
        .insert_deployment(
            &DeploymentRow {
                rollout_id: first["id"].as_str().unwrap().into(),
                device_id: d[0].0.clone(),
                release_id: f.new["id"].as_str().unwrap().into(),
                stage: 0,
                state: otterd::db::DeviceState::Assigned,
                reason: None,
                assigned_at: 1,
                updated_at: 1,
                finished_at: None,
            },
            true,
        )
        .await
        .unwrap();
    let second = f
        .rollout(json!({"release_id": f.new["id"], "tag": "lab", "stages": "100", "failure_threshold": "20%"}))
        .await;
    let u = f.checkin_running(&d[0], &f.old).await;
    assert_eq!(u["rollout_id"], second["id"], "{u}");
    assert_eq!(count(&f.show(&first["id"]).await, 0, "cancelled"), 1);
}
