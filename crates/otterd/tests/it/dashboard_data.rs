//! Issue 11: what the dashboard's pages read (`services::dashboard` over the `PageStore`
//! aggregates of migration 0014), on whichever backend the run uses (SQLite, or PostgreSQL
//! with `OTTER_TEST_DATABASE=postgres`), from a fleet driven over HTTP.

use otter_core::Chip;
use otterd::services::dashboard::{self, Scope};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const CHIP: Chip = Chip::Esp32C3;

async fn checkin(srv: &TestServer, token: &str, version: &str, sha: &str) -> Value {
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(token),
            Some(
                json!({"version": version, "security_counter": 0, "image_sha256": sha,
                "chip": CHIP.name(), "partition_size": 1572864}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn status(srv: &TestServer, token: &str, release: &Value, state: &str, reason: Option<&str>) {
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/status",
            Some(token),
            Some(json!({"release_id": release["id"], "state": state, "reason": reason})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
}

#[tokio::test]
async fn the_overview_device_page_and_release_counts_come_from_the_database() {
    let srv = spawn().await;
    let (key, secret) = srv.product("lamp", CHIP).await;
    srv.product("fan", CHIP).await;
    let (s, old) = srv.publish(&key, "lamp", CHIP, "1.0.0").await;
    assert_eq!(s, 201, "{old}");
    let (s, new) = srv.publish(&key, "lamp", CHIP, "2.0.0").await;
    assert_eq!(s, 201, "{new}");
    let sha = |r: &Value| r["sha256"].as_str().unwrap().to_string();

    // Six devices: four run 1.0.0, one runs 2.0.0, one never checked in.
    let mut devs = Vec::new();
    for i in 0..6 {
        devs.push(srv.enroll("lamp", &secret, &format!("hw-{i}")).await);
    }
    for d in &devs[..4] {
        checkin(&srv, &d.1, "1.0.0", &sha(&old)).await;
    }
    checkin(&srv, &devs[4].1, "2.0.0", &sha(&new)).await;
    // A rollout of 2.0.0 to the tag `lab`, carried by devices 0 and 1.
    let db = crate::backends::open_db(&srv.data_dir()).await;
    for d in &devs[..2] {
        db.tag_device(&d.0, &["lab".to_string()]).await.unwrap();
    }
    let (s, r) = srv
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&srv.admin),
            Some(
                json!({"release_id": new["id"], "tag": "lab", "stages": "100",
                "failure_threshold": "100%"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    for d in &devs[..2] {
        let v = checkin(&srv, &d.1, "1.0.0", &sha(&old)).await;
        assert!(!v["update"].is_null(), "{v}");
    }
    status(&srv, &devs[0].1, &new, "downloading", None).await;
    status(
        &srv,
        &devs[1].1,
        &new,
        "failure",
        Some("flash write failed"),
    )
    .await;
    status(
        &srv,
        &devs[2].1,
        &old,
        "refused",
        Some("older than running"),
    )
    .await;

    let now = otterd::now();
    let o = dashboard::overview(db.as_ref(), &Scope::All, 3600, 10, now)
        .await
        .unwrap();
    assert_eq!((o.devices, o.seen_recently), (6, 5));
    let lamp = |v: Option<&str>| {
        o.versions
            .iter()
            .find(|s| s.product == "lamp" && s.version.as_deref() == v)
            .map(|s| s.devices)
    };
    assert_eq!(lamp(Some("1.0.0")), Some(4));
    assert_eq!(lamp(Some("2.0.0")), Some(1));
    assert_eq!(lamp(None), Some(1));
    assert_eq!(
        o.versions[0].version.as_deref(),
        Some("1.0.0"),
        "most devices first"
    );
    assert_eq!(o.rollouts.len(), 1);
    assert_eq!(o.rollouts[0].rollout.id, r["id"].as_str().unwrap());
    assert_eq!(o.rollouts[0].version, "2.0.0");
    let stage = &o.rollouts[0].progress[0].counts;
    assert_eq!((stage["downloading"], stage["failure"]), (1, 1));
    // Failures newest first, with their reasons, across the failed states.
    let failures: Vec<(&str, Option<&str>)> = o
        .failures
        .iter()
        .map(|f| (f.row.state.as_str(), f.row.reason.as_deref()))
        .collect();
    assert_eq!(
        failures,
        vec![
            ("refused", Some("older than running")),
            ("failure", Some("flash write failed"))
        ]
    );
    assert_eq!(o.failures[1].row.device_id, devs[1].0);
    assert_eq!(o.failures[1].product, "lamp");
    let states: Vec<(Option<&str>, i64)> = o
        .states
        .iter()
        .map(|s| (s.state.as_deref(), s.count))
        .collect();
    assert!(states.contains(&(Some("failure"), 1)), "{states:?}");
    assert!(states.contains(&(Some("downloading"), 1)), "{states:?}");

    // A publisher of another product sees none of it.
    let fan = dashboard::overview(db.as_ref(), &Scope::Only(vec!["fan".into()]), 3600, 10, now)
        .await
        .unwrap();
    assert_eq!(
        (fan.devices, fan.versions.len(), fan.failures.len()),
        (0, 0, 0)
    );
    assert!(fan.rollouts.is_empty());
    let none = dashboard::overview(db.as_ref(), &Scope::Only(vec![]), 3600, 10, now)
        .await
        .unwrap();
    assert_eq!(none.devices, 0);

    // Devices running each release, by their image.
    let rel = |v: &Value| {
        let id = v["id"].as_str().unwrap().to_string();
        let db = db.clone();
        async move { db.get_release(&id).await.unwrap() }
    };
    assert_eq!(
        dashboard::running(db.as_ref(), &rel(&old).await)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        dashboard::running(db.as_ref(), &rel(&new).await)
            .await
            .unwrap(),
        1
    );

    // A device's page: facts, tags, its deployment with the version, its reports.
    let p = dashboard::device(db.as_ref(), &Scope::All, &devs[1].0)
        .await
        .unwrap();
    assert_eq!(p.device.hardware_id, "hw-1");
    assert_eq!(p.extras.tags, vec!["lab".to_string()]);
    assert_eq!(p.extras.last_reason.as_deref(), Some("flash write failed"));
    assert_eq!(p.deployments.len(), 1);
    assert_eq!(p.deployments[0].version, "2.0.0");
    assert_eq!(p.deployments[0].row.state.as_str(), "failure");
    assert_eq!(p.events[0].state.as_str(), "failure");
    // Out of scope: as if absent.
    assert!(matches!(
        dashboard::device(db.as_ref(), &Scope::Only(vec!["fan".into()]), &devs[1].0).await,
        Err(otterd::db::DbError::NotFound)
    ));
}
