//! Issue 11: the rollout preview (`GET /api/v1/rollouts/preview`) counts, per stage, exactly
//! the devices a rollout created with its id reaches; bad input is refused and creates nothing.

use otter_core::rollout::{bucket, Stages};
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const CHIP: Chip = Chip::Esp32C3;

fn query(release: &Value, target: &str, stages: &str) -> String {
    format!(
        "/api/v1/rollouts/preview?release_id={}&{target}&stages={stages}",
        release["id"].as_str().unwrap()
    )
}

/// Devices per stage (and beyond the last) that `id` puts these devices in.
fn expected(id: &str, stages: &str, devices: &[String]) -> (Vec<u64>, u64) {
    let s: Stages = stages.parse().unwrap();
    let mut per = vec![0u64; s.len()];
    let mut beyond = 0;
    for d in devices {
        match s.stage_of(bucket(id, d)) {
            Some(i) => per[i] += 1,
            None => beyond += 1,
        }
    }
    (per, beyond)
}

fn counts(v: &Value, field: &str) -> Vec<u64> {
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_preview_counts_each_stage_and_the_rollout_reaches_exactly_those_devices() {
    let srv = spawn().await;
    let (key, secret) = srv.product("lamp", CHIP).await;
    let (s, old) = srv.publish(&key, "lamp", CHIP, "1.0.0").await;
    assert_eq!(s, 201, "{old}");
    let (s, new) = srv.publish(&key, "lamp", CHIP, "2.0.0").await;
    assert_eq!(s, 201, "{new}");
    let mut all = Vec::new();
    let mut tokens = Vec::new();
    let mut lab = Vec::new();
    let db = crate::backends::open_db(&srv.data_dir()).await;
    for i in 0..120 {
        let (id, token) = srv.enroll("lamp", &secret, &format!("hw-{i}")).await;
        tokens.push((id.clone(), token));
        if i % 3 == 0 {
            db.tag_device(&id, &["lab".to_string()]).await.unwrap();
            lab.push(id.clone());
        }
        all.push(id);
    }

    // The whole channel, three stages.
    let (s, v) = srv
        .call(
            Method::GET,
            &query(&new, "channel=stable", "10,50,100"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["rollout_id"].as_str().unwrap().to_string();
    let (per, beyond) = expected(&id, "10,50,100", &all);
    assert_eq!(v["targeted"], 120);
    assert_eq!(v["beyond"], beyond);
    assert_eq!(counts(&v, "devices"), per);
    let per_all = per.clone();
    assert_eq!(counts(&v, "percent"), vec![10, 50, 100]);
    let cumulative = counts(&v, "cumulative");
    assert_eq!(cumulative[0], per[0]);
    assert_eq!(cumulative[2], 120);
    assert_eq!(
        (v["version"].as_str(), v["product"].as_str()),
        (Some("2.0.0"), Some("lamp"))
    );

    // A tag, with stages stopping at 40 %: the rest of the target is beyond them.
    let (s, v) = srv
        .call(
            Method::GET,
            &query(&new, "tag=lab", "20,40"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let tid = v["rollout_id"].as_str().unwrap();
    let (per, beyond) = expected(tid, "20,40", &lab);
    assert_eq!(v["targeted"], lab.len());
    assert_eq!(counts(&v, "devices"), per);
    assert_eq!(v["beyond"], beyond);
    assert!(beyond > 0, "40 % of 40 devices leaves some beyond");

    // A filter SQL cannot fully answer (version order) counts the same way.
    let (s, v) = srv
        .call(
            Method::GET,
            &query(&new, "filter=tag%3Dlab", "100"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["targeted"], lab.len());

    // Created with the preview's id, the rollout is that id: stage 1 offers the update to the
    // devices the preview put there, and to no other.
    let (s, r) = srv
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&srv.admin),
            Some(
                json!({"release_id": new["id"], "channel": "stable", "stages": "10,50,100",
                "failure_threshold": "50%", "preview_id": id}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["id"], id.as_str());
    let stages: Stages = "10,50,100".parse().unwrap();
    let mut offered = 0;
    for (d, token) in &tokens {
        let (s, v) = srv
            .call(
                Method::POST,
                "/device/v1/checkin",
                Some(token),
                Some(json!({"version": "1.0.0", "security_counter": 0,
                    "image_sha256": old["sha256"], "chip": CHIP.name(), "partition_size": 1572864})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let in_stage_1 = stages.stage_of(bucket(&id, d)) == Some(0);
        assert_eq!(!v["update"].is_null(), in_stage_1, "device {d}: {v}");
        offered += usize::from(in_stage_1);
    }
    assert_eq!(offered as u64, per_all[0]);

    // The same id again is refused, and creates nothing.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&srv.admin),
            Some(
                json!({"release_id": new["id"], "channel": "stable", "stages": "100",
                "failure_threshold": "50%", "preview_id": id}),
            ),
        )
        .await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test]
async fn a_preview_refuses_bad_input_and_follows_the_roles() {
    let srv = spawn().await;
    let (key, secret) = srv.product("lamp", CHIP).await;
    let (s, rel) = srv.publish(&key, "lamp", CHIP, "1.0.0").await;
    assert_eq!(s, 201, "{rel}");
    srv.product("fan", CHIP).await;
    srv.enroll("lamp", &secret, "hw-1").await;
    let get = |path: String, token: String| {
        let srv = &srv;
        async move { srv.call(Method::GET, &path, Some(&token), None).await }
    };
    let admin = srv.admin.clone();
    for (target, stages, status, needle) in [
        ("channel=stable&tag=lab", "100", 400, "exactly one target"),
        ("release=x", "100", 400, ""),
        ("channel=stable", "50,20", 400, "must increase"),
        ("channel=stable", "0", 400, "between 1 and 100"),
        ("group=nope", "100", 404, "no group"),
        ("filter=colour%3Dred", "100", 400, ""),
    ] {
        let (s, v) = get(query(&rel, target, stages), admin.clone()).await;
        assert_eq!(s, status, "{target} {stages}: {v}");
        assert!(v["message"].as_str().unwrap_or("").contains(needle), "{v}");
    }
    let (s, v) = get(
        "/api/v1/rollouts/preview?release_id=rel_nope&channel=stable&stages=100".into(),
        admin.clone(),
    )
    .await;
    assert_eq!(s, 404, "{v}");

    // Viewers read: they may preview. A publisher of another product sees no such release.
    let viewer = srv.token("viewer", &[]).await;
    let (s, v) = get(query(&rel, "channel=stable", "100"), viewer).await;
    assert_eq!((s, v["targeted"].as_u64()), (200, Some(1)), "{v}");
    let other = srv.token("publisher", &["fan"]).await;
    let (s, v) = get(query(&rel, "channel=stable", "100"), other).await;
    assert_eq!(s, 404, "{v}");

    // A preview id that no preview gave is refused, and no rollout is created.
    for bad in ["ro_123", "ro_ffffffffffffffff00000000", "x"] {
        let (s, v) = srv
            .call(
                Method::POST,
                "/api/v1/rollouts",
                Some(&srv.admin),
                Some(
                    json!({"release_id": rel["id"], "channel": "stable", "stages": "100",
                    "failure_threshold": "50%", "preview_id": bad}),
                ),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["message"].as_str().unwrap().contains("preview"), "{v}");
    }
    let (s, v) = srv
        .call(Method::GET, "/api/v1/rollouts", Some(&srv.admin), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["rollouts"].as_array().unwrap().len(), 0, "{v}");
}
