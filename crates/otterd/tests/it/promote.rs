//! Promotion (`POST /api/v1/releases/{id}/promote`) and pushing the same release again: the
//! same signed release on a channel once, every other release of that version refused, and the
//! publication rules of an upload applied to a promotion too.

use base64::Engine;
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn promote(srv: &TestServer, token: &str, id: &Value, body: Value) -> (u16, Value) {
    srv.call(
        Method::POST,
        &format!("/api/v1/releases/{}/promote", id.as_str().unwrap()),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn promotion_puts_the_same_signed_release_on_another_channel_once() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.1.0");
    let (s, beta) = srv.push("thermo", "beta", &srv.admin, b.clone()).await;
    assert_eq!((s, &beta["existing"]), (201, &json!(false)), "{beta}");

    let (s, stable) = promote(&srv, &srv.admin, &beta["id"], json!({"channel": "stable"})).await;
    assert_eq!(s, 201, "{stable}");
    assert_eq!(stable["existing"], false);
    assert_eq!(stable["channel"], "stable");
    assert_ne!(stable["id"], beta["id"]);
    for k in [
        "version",
        "sha256",
        "size",
        "security_counter",
        "created_at",
        "signed_by",
    ] {
        assert_eq!(stable[k], beta[k], "{k}");
    }
    assert_eq!(srv.blob_files().await, (1, 0), "the image is stored once");

    // Again, and onto its own channel: nothing changes, the release that is there answers.
    let (s, again) = promote(&srv, &srv.admin, &beta["id"], json!({"channel": "stable"})).await;
    assert_eq!(
        (s, &again["existing"], &again["id"]),
        (200, &json!(true), &stable["id"]),
        "{again}"
    );
    let (s, same) = promote(&srv, &srv.admin, &beta["id"], json!({"channel": "beta"})).await;
    assert_eq!(
        (s, &same["existing"], &same["id"]),
        (200, &json!(true), &beta["id"]),
        "{same}"
    );
    assert_eq!(srv.release_count().await, 2);

    // A device on stable is offered it, with the envelope that was signed, and downloads it.
    let (_, device) = srv.enroll("thermo", &secret, "aa:bb").await;
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&device),
            Some(json!({"version": "1.0.0", "security_counter": 0, "image_sha256": "0".repeat(64), "chip": "esp32c3", "partition_size": 1572864})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["update"]["release_id"], stable["id"]);
    let env_len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(v["update"]["envelope"].as_str().unwrap())
        .unwrap();
    assert_eq!(envelope, b[12..12 + env_len]);
    let image = srv
        .req(
            Method::GET,
            v["update"]["download_url"].as_str().unwrap(),
            Some(&device),
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&image[..], &b[12 + env_len..]);
}

#[tokio::test]
async fn promotion_is_refused_where_an_upload_would_be() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, old) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    // Stable holds a higher security counter: promoting counter 0 there is the downgrade an
    // upload is refused for, unless the publisher says so.
    let img = image(Chip::Esp32C3, "2.0.0", 7);
    let mut m = manifest_for("thermo", Chip::Esp32C3, "2.0.0", &img);
    m.security_counter = 5;
    let (s, v) = srv
        .push("thermo", "stable", &srv.admin, bundle_of(&key, &m, img))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = promote(&srv, &srv.admin, &old["id"], json!({"channel": "stable"})).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("bad_release")), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("security counter"),
        "{v}"
    );
    assert_eq!(srv.release_count().await, 2);

    // Another image of the same version on the target channel: a conflict, as for an upload.
    let (_, other) = srv
        .push("thermo", "canary", &srv.admin, {
            let img = image(Chip::Esp32C3, "1.0.0", 99);
            bundle_of(
                &key,
                &manifest_for("thermo", Chip::Esp32C3, "1.0.0", &img),
                img,
            )
        })
        .await;
    let (s, v) = promote(&srv, &srv.admin, &old["id"], json!({"channel": "canary"})).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(other["id"].as_str().unwrap()),
        "{v}"
    );

    // A channel name an upload would refuse.
    let (s, v) = promote(
        &srv,
        &srv.admin,
        &old["id"],
        json!({"channel": "Not A Channel"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // The key it was signed with is no longer trusted: the promotion is refused.
    let key_id = key.public_key().key_id().to_string();
    let (s, _) = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/products/thermo/keys/{key_id}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = promote(
        &srv,
        &srv.admin,
        &old["id"],
        json!({"channel": "rc", "allow_lower_counter": true}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (422, Some("bad_release")), "{v}");
    assert_eq!(
        srv.release_count().await,
        3,
        "no refused promotion stored a release"
    );

    // Unknown release.
    let (s, _) = promote(
        &srv,
        &srv.admin,
        &json!("rel_nope"),
        json!({"channel": "stable"}),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn promotion_with_allow_lower_counter_is_the_publishers_choice() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, old) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    let img = image(Chip::Esp32C3, "2.0.0", 7);
    let mut m = manifest_for("thermo", Chip::Esp32C3, "2.0.0", &img);
    m.security_counter = 5;
    srv.push("thermo", "stable", &srv.admin, bundle_of(&key, &m, img))
        .await;
    let (s, v) = promote(
        &srv,
        &srv.admin,
        &old["id"],
        json!({"channel": "stable", "allow_lower_counter": true}),
    )
    .await;
    assert_eq!((s, &v["channel"]), (201, &json!("stable")), "{v}");
}

#[tokio::test]
async fn publishers_promote_only_their_products_and_viewers_not_at_all() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    srv.product("other", Chip::Esp32C3).await;
    let (_, rel) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    let viewer = srv.token("viewer", &[]).await;
    let outsider = srv.token("publisher", &["other"]).await;
    let publisher = srv.token("publisher", &["thermo"]).await;
    let (s, v) = promote(&srv, &viewer, &rel["id"], json!({"channel": "stable"})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = promote(&srv, &outsider, &rel["id"], json!({"channel": "stable"})).await;
    assert_eq!(
        s, 404,
        "another product's release is not named to a publisher: {v}"
    );
    assert_eq!(srv.release_count().await, 1);
    let (s, v) = promote(&srv, &publisher, &rel["id"], json!({"channel": "stable"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["published_by"], "publisher-test");
}

/// Promotions are audited: the real binary's log names the source release, the new one, the
/// channel and the token.
#[tokio::test]
async fn promotion_is_logged_with_source_target_and_token() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    let mut cmd = otterd_serve(&data);
    cmd.env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let (mut child, url) = spawn_otterd(cmd).await;
    let srv = TestServer::attach(url, dir, &data);
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, beta) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    let (s, stable) = promote(&srv, &srv.admin, &beta["id"], json!({"channel": "stable"})).await;
    assert_eq!(s, 201, "{stable}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("release promoted"))
        .unwrap_or_else(|| panic!("no promotion line:\n{text}"));
    for part in [
        beta["id"].as_str().unwrap(),
        stable["id"].as_str().unwrap(),
        "stable",
        "initial-admin",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
}
