//! A release owns its payloads (issue 9): publishing writes the full image as the first one,
//! with its size and hashes; a promotion carries them over; a repeated push adds none.

use md5::{Digest as _, Md5};
use otter_core::Chip;
use otterd::db::{PayloadKind, PayloadRow};
use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn publishing_records_the_full_image_as_the_first_payload() {
    let mut settings = None;
    let srv = spawn_with(|s| settings = Some(s.clone())).await;
    // A second handle on the server's storage, to read what publishing wrote.
    let state = otterd::open_state(settings.take().unwrap()).await.unwrap();
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let img = image(Chip::Esp32C3, "1.0.0", 21);
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
    let id = rel["id"].as_str().unwrap();
    let expected = |release_id: &str| PayloadRow {
        release_id: release_id.into(),
        position: 0,
        kind: PayloadKind::Full,
        size: img.len() as i64,
        sha256: otterd::db::Sha256::of(&img),
        md5: Some(hex::encode(Md5::digest(&img))),
    };
    assert_eq!(
        state.db.release_payloads(id).await.unwrap(),
        vec![expected(id)]
    );

    // Pushed again: the same release, no second payload.
    let (s, again) = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle_of(&key, &m, img.clone()),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        state.db.release_payloads(id).await.unwrap(),
        vec![expected(id)]
    );

    // Promoted: the new release has the same payloads.
    let (s, promoted) = srv
        .call(
            Method::POST,
            &format!("/api/v1/releases/{id}/promote"),
            Some(&srv.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(s, 201, "{promoted}");
    let pid = promoted["id"].as_str().unwrap();
    assert_ne!(pid, id);
    assert_eq!(
        state.db.release_payloads(pid).await.unwrap(),
        vec![expected(pid)]
    );

    // A refused upload leaves no payload behind; an unknown release has none.
    let bad = manifest_for("thermo", Chip::Esp32C3, "1.0.1", &img);
    let mut other = img.clone();
    other[100] ^= 1;
    let (s, _) = srv
        .push("thermo", "stable", &srv.admin, bundle_of(&key, &bad, other))
        .await;
    assert_eq!(s, 422);
    assert!(state
        .db
        .release_payloads("rel_nope")
        .await
        .unwrap()
        .is_empty());
}
