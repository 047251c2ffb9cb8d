//! The check-in's one read (issue 10): the device by its token, the offer generation and the
//! device's active deployment come from one statement, and say what the separate reads say;
//! the check-in built on it still follows an abort and a revoked token at once.

use otter_core::Chip;
use otterd::auth::hash_secret;
use otterd::db::DbError;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const CHIP: Chip = Chip::Esp32C3;

async fn checkin(srv: &TestServer, token: &str, running: &Value) -> Value {
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(token),
            Some(json!({"version": running["version"], "security_counter": 0,
                "image_sha256": running["sha256"], "chip": CHIP.name()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["update"].clone()
}

#[tokio::test]
async fn one_read_says_what_the_three_reads_say_and_follows_an_abort() {
    let srv = spawn().await;
    let (key, secret) = srv.product("fleet", CHIP).await;
    let (s, old) = srv.publish(&key, "fleet", CHIP, "1.0.0").await;
    assert_eq!(s, 201, "{old}");
    let (s, new) = srv.publish(&key, "fleet", CHIP, "2.0.0").await;
    assert_eq!(s, 201, "{new}");
    let lab = srv.enroll("fleet", &secret, "lab-1").await;
    let plain = srv.enroll("fleet", &secret, "plain-1").await;
    let db = crate::backends::open_db(&srv.data_dir()).await;
    db.tag_device(&lab.0, &["lab".to_string()]).await.unwrap();
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
    let update = checkin(&srv, &lab.1, &old).await;
    assert_eq!(
        (&update["release_id"], &update["rollout_id"]),
        (&new["id"], &r["id"])
    );

    // The assigned device: its row, the generation and its deployment, as read one by one.
    let ctx = db.checkin_context(&hash_secret(&lab.1)).await.unwrap();
    let alone = db.find_device(&hash_secret(&lab.1)).await.unwrap();
    assert_eq!(ctx.device.id, lab.0);
    assert_eq!(
        (ctx.device.version.as_deref(), ctx.device.image_sha256),
        (alone.version.as_deref(), alone.image_sha256)
    );
    assert_eq!(ctx.offer_generation, db.offer_generation().await.unwrap());
    let d = ctx.active_deployment.expect("the lab device's deployment");
    let alone = db.active_deployment(&lab.0).await.unwrap().unwrap();
    assert_eq!(
        (
            &d.rollout_id,
            &d.release_id,
            d.stage,
            d.state,
            d.assigned_at
        ),
        (
            &alone.rollout_id,
            &alone.release_id,
            alone.stage,
            alone.state,
            alone.assigned_at
        )
    );
    assert_eq!(
        (d.rollout_id.as_str(), d.device_id.as_str()),
        (r["id"].as_str().unwrap(), lab.0.as_str())
    );

    // A device without a deployment; an unknown token.
    let ctx = db.checkin_context(&hash_secret(&plain.1)).await.unwrap();
    assert_eq!(ctx.device.id, plain.0);
    assert!(ctx.active_deployment.is_none());
    assert!(matches!(
        db.checkin_context(&hash_secret("otd_nobody")).await,
        Err(DbError::NotFound)
    ));

    // The deployment is offered again until the rollout is aborted; then not, at once, and the
    // generation read with the device has moved.
    let before = db.checkin_context(&hash_secret(&lab.1)).await.unwrap();
    assert_eq!(checkin(&srv, &lab.1, &old).await["rollout_id"], r["id"]);
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/v1/rollouts/{}/abort", r["id"].as_str().unwrap()),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let after = db.checkin_context(&hash_secret(&lab.1)).await.unwrap();
    assert_ne!(after.offer_generation, before.offer_generation);
    let update = checkin(&srv, &lab.1, &old).await;
    assert_ne!(update["rollout_id"], r["id"], "{update}");
    assert!(db
        .checkin_context(&hash_secret(&lab.1))
        .await
        .unwrap()
        .active_deployment
        .is_none());

    // A deleted device's token is refused by the check-in at once.
    let (s, v) = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{}", plain.0),
            Some(&srv.admin),
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {v}");
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&plain.1),
            Some(json!({"version": "1.0.0", "security_counter": 0,
                "image_sha256": old["sha256"], "chip": CHIP.name()})),
        )
        .await;
    assert_eq!(s, 401, "{v}");
}
