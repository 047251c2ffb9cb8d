//! The device side: enrol, check in, download (with and without Range), report status; every
//! route scoped to the calling device.

use base64::Engine;
use otter_core::image::synth::{self, SynthApp};
use otter_core::manifest::Envelope;
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

fn checkin_body(version: &str, counter: u32, sha: &str, chip: &str) -> Value {
    json!({"version": version, "security_counter": counter, "image_sha256": sha, "chip": chip, "partition_size": 1572864})
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test]
async fn enrolment_needs_the_right_secret_and_is_once_per_hardware_id() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    for (product, s) in [("thermo", "ote_wrong"), ("nope", secret.as_str())] {
        let (st, v) = srv
            .call(
                Method::POST,
                "/device/v1/enroll",
                None,
                Some(json!({"product": product, "enrollment_secret": s, "hardware_id": "a"})),
            )
            .await;
        assert_eq!(st, 401, "{v}");
    }
    let (id, token) = srv.enroll("thermo", &secret, "aa:bb").await;
    assert!(id.starts_with("dev_") && token.starts_with("otd_"));
    let (st, v) = srv
        .call(
            Method::POST,
            "/device/v1/enroll",
            None,
            Some(json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": "aa:bb"})),
        )
        .await;
    assert_eq!((st, v["error"].as_str()), (409, Some("already_enrolled")));
    // After the admin deletes the device, it may enrol again; the old token is dead.
    assert_eq!(
        srv.call(
            Method::DELETE,
            &format!("/api/v1/devices/{id}"),
            Some(&srv.admin),
            None
        )
        .await
        .0,
        204
    );
    let (st, _) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.0.0", 0, ZERO_SHA, "esp32c3")),
        )
        .await;
    assert_eq!(st, 401);
    srv.enroll("thermo", &secret, "aa:bb").await;
    // Rotating the secret stops the old one.
    let (_, v) = srv
        .call(
            Method::POST,
            "/api/v1/products/thermo/enrollment-secret",
            Some(&srv.admin),
            None,
        )
        .await;
    let new_secret = v["enrollment_secret"].as_str().unwrap();
    let (st, _) = srv
        .call(
            Method::POST,
            "/device/v1/enroll",
            None,
            Some(json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": "cc"})),
        )
        .await;
    assert_eq!(st, 401);
    srv.enroll("thermo", new_secret, "cc").await;
}

#[tokio::test]
async fn device_updates_end_to_end() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (device_id, token) = srv.enroll("thermo", &secret, "aa:bb").await;

    // Nothing published: nothing to do, with a jittered poll interval.
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.0.0", 0, ZERO_SHA, "esp32c3")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["update"], Value::Null);
    let poll = v["poll_interval_s"].as_u64().unwrap();
    assert!((90..=110).contains(&poll), "{poll}");

    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.1.0");
    let (s, rel) = srv.push("thermo", "stable", &srv.admin, b.clone()).await;
    assert_eq!(s, 201);
    // A beta release is not offered on stable.
    srv.push(
        "thermo",
        "beta",
        &srv.admin,
        bundle(&key, "thermo", Chip::Esp32C3, "2.0.0-rc1"),
    )
    .await;

    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.0.0", 0, ZERO_SHA, "esp32c3")),
        )
        .await;
    assert_eq!(s, 200);
    let update = &v["update"];
    assert_eq!(update["release_id"], rel["id"]);
    assert_eq!(update["version"], "1.1.0");
    // The envelope is verbatim what was signed, and verifies with the key.
    let env_bytes = base64::engine::general_purpose::STANDARD
        .decode(update["envelope"].as_str().unwrap())
        .unwrap();
    let env_len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    assert_eq!(env_bytes, b[12..12 + env_len]);
    let env = Envelope::decode(&env_bytes).unwrap();
    env.verify(&[key.public_key()], 1).unwrap();
    let image = &b[12 + env_len..];

    // Full download, then HEAD, ranges, conditional requests.
    let url = update["download_url"].as_str().unwrap();
    let r = srv
        .req(Method::GET, url, Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", update["sha256"].as_str().unwrap()));
    assert_eq!(
        r.headers()["content-length"],
        image.len().to_string().as_str()
    );
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], image);
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        env.manifest().image_sha256_hex()
    );

    let r = srv
        .req(Method::HEAD, url, Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        image.len().to_string().as_str()
    );

    let r = srv
        .req(Method::GET, url, Some(&token))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", image.len()).as_str()
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &image[100..200]);

    // Resume after a cut: the rest from an offset.
    let r = srv
        .req(Method::GET, url, Some(&token))
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], &image[5000..]);

    let r = srv
        .req(Method::GET, url, Some(&token))
        .header("range", format!("bytes={}-", image.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", image.len()).as_str()
    );

    let r = srv
        .req(Method::GET, url, Some(&token))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = srv
        .req(Method::GET, url, Some(&token))
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "If-Range with another ETag sends the whole image"
    );

    // Status reports become the device's history.
    let rid = rel["id"].as_str().unwrap();
    for (state, extra) in [
        ("downloading", json!({"progress_bytes": 4096})),
        ("downloaded", json!({})),
        ("installing", json!({})),
        ("rebooting", json!({})),
        ("success", json!({})),
    ] {
        let mut body = json!({"release_id": rid, "state": state});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, v) = srv
            .call(Method::POST, "/device/v1/status", Some(&token), Some(body))
            .await;
        assert_eq!(s, 204, "{state}: {v}");
    }
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/status",
            Some(&token),
            Some(json!({"release_id": rid, "state": "failure"})),
        )
        .await;
    assert_eq!(s, 400, "a failure needs a reason: {v}");
    let (s, _) = srv
        .call(
            Method::POST,
            "/device/v1/status",
            Some(&token),
            Some(json!({"state": "exploded", "reason": "x"})),
        )
        .await;
    assert_eq!(s, 400);

    let (_, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{device_id}"),
            Some(&srv.admin),
            None,
        )
        .await;
    let states: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "success",
            "rebooting",
            "installing",
            "downloaded",
            "downloading"
        ]
    );
    assert_eq!(v["history"][4]["progress_bytes"], 4096);
    assert_eq!(v["device"]["last_state"], "success");

    // Now running the release: nothing more to do. Running something newer: never downgraded.
    let sha = env.manifest().image_sha256_hex();
    let (_, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.1.0", 0, &sha, "esp32c3")),
        )
        .await;
    assert_eq!(v["update"], Value::Null);
    let (_, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.5.0", 0, ZERO_SHA, "esp32c3")),
        )
        .await;
    assert_eq!(v["update"], Value::Null);
    // A device holding a higher security counter is not offered a lower one.
    let (_, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.0.0", 1, ZERO_SHA, "esp32c3")),
        )
        .await;
    assert_eq!(v["update"], Value::Null);
    // The beta channel gets the release candidate.
    let (s, _) = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{device_id}"),
            Some(&srv.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("1.1.0", 0, &sha, "esp32c3")),
        )
        .await;
    assert_eq!(v["update"]["version"], "2.0.0-rc1");

    // The device list shows what it reported.
    let (_, v) = srv
        .call(
            Method::GET,
            "/api/v1/devices?product=thermo",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(v["devices"][0]["version"], "1.1.0");
    assert_eq!(v["devices"][0]["partition_size"], 1572864);
}

#[tokio::test]
async fn devices_are_scoped_to_themselves_and_their_product() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, other_secret) = srv.product("lamp", Chip::Esp32C3).await;
    let (_, lamp_token) = srv.enroll("lamp", &other_secret, "lamp-1").await;
    let (_, rel) = srv.publish(&key, "thermo", Chip::Esp32C3, "1.0.0").await;
    let rid = rel["id"].as_str().unwrap();
    // A lamp device cannot download or report on a thermostat release.
    let r = srv
        .req(
            Method::GET,
            &format!("/device/v1/releases/{rid}/image"),
            Some(&lamp_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (s, _) = srv
        .call(
            Method::POST,
            "/device/v1/status",
            Some(&lamp_token),
            Some(json!({"release_id": rid, "state": "success"})),
        )
        .await;
    assert_eq!(s, 404);
    // Management tokens cannot act as devices.
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&srv.admin),
            Some(checkin_body("1.0.0", 0, ZERO_SHA, "esp32c3")),
        )
        .await;
    assert_eq!(s, 401, "{v}");
    let r = srv
        .req(
            Method::GET,
            &format!("/device/v1/releases/{rid}/image"),
            Some(&srv.admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Device routes need a token at all.
    let r = srv
        .req(
            Method::GET,
            &format!("/device/v1/releases/{rid}/image"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A device reporting another chip is offered nothing.
    let (_, token) = srv.enroll("thermo", &secret, "t-1").await;
    let (_, v) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("0.1", 0, ZERO_SHA, "esp32")),
        )
        .await;
    assert_eq!(v["update"], Value::Null);
    // Malformed check-ins are refused.
    let (s, _) = srv
        .call(
            Method::POST,
            "/device/v1/checkin",
            Some(&token),
            Some(checkin_body("0.1", 0, "xyz", "esp32c3")),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn a_blob_tampered_on_disk_is_never_served_whole() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, token) = srv.enroll("thermo", &secret, "aa").await;
    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.0.0");
    let (_, rel) = srv.push("thermo", "stable", &srv.admin, b).await;
    let sha = rel["sha256"].as_str().unwrap();
    // The attacker controls the blob store: same length, different bytes.
    let mut bytes = srv.read_image(sha).await;
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    srv.write_image(sha, &bytes).await;

    let url = format!("/device/v1/releases/{}/image", rel["id"].as_str().unwrap());
    // The server aborts the transfer before its end. With an image this small the abort can come
    // before the response head is flushed, so the client may see the error at either point.
    match srv.req(Method::GET, &url, Some(&token)).send().await {
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
        Ok(r) => {
            assert_eq!(r.status(), 200);
            match r.bytes().await {
                Err(_) => {}
                Ok(body) => assert!(body.len() < n, "a tampered image must not arrive complete"),
            }
        }
    }
    // A range of a blob that was never verified is answered only after the whole blob was hashed.
    let r = srv
        .req(Method::GET, &url, Some(&token))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500, "the operator finds why in the server log");
    assert!(r.text().await.unwrap().contains("internal server error"));
}

/// Sends a whole download and tells whether it arrived complete and matching `sha`.
async fn downloads_whole(srv: &TestServer, url: &str, token: &str, sha: &str) -> bool {
    match srv.req(Method::GET, url, Some(token)).send().await {
        Err(_) => false,
        Ok(r) if r.status() != 200 => false,
        Ok(r) => match r.bytes().await {
            Err(_) => false,
            Ok(body) => hex::encode(Sha256::digest(&body)) == sha,
        },
    }
}

#[tokio::test]
async fn a_blob_altered_after_it_was_verified_is_caught_by_its_stored_identity() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, token) = srv.enroll("thermo", &secret, "aa").await;
    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.0.0");
    let (_, rel) = srv.push("thermo", "stable", &srv.admin, b).await;
    let sha = rel["sha256"].as_str().unwrap();
    let url = format!("/device/v1/releases/{}/image", rel["id"].as_str().unwrap());
    // Served whole twice: the second time from the remembered verification.
    assert!(downloads_whole(&srv, &url, &token, sha).await);
    assert!(downloads_whole(&srv, &url, &token, sha).await);
    let range = srv
        .req(Method::GET, &url, Some(&token))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    let original = srv.read_image(sha).await;
    assert_eq!(range.bytes().await.unwrap(), original[10..20]);

    // The attacker rewrites the blob. On local disk: in place, same size, modification time put
    // back, so only the change time tells. On S3: a new object under the same key.
    let mut altered = original.clone();
    altered[15] ^= 0x55;
    match srv.blobs.local_image_path(sha) {
        Some(path) => {
            use std::os::unix::fs::FileExt;
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&altered[15..16], 15).unwrap();
            f.set_modified(modified).unwrap();
            assert_eq!(
                std::fs::metadata(&path).unwrap().modified().unwrap(),
                modified
            );
        }
        None => srv.write_image(sha, &altered).await,
    }
    assert!(!downloads_whole(&srv, &url, &token, sha).await);
    let range = srv
        .req(Method::GET, &url, Some(&token))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 500, "an altered blob's range is refused");

    // Restored, it is served again.
    srv.write_image(sha, &original).await;
    assert!(downloads_whole(&srv, &url, &token, sha).await);
}

async fn enrol_with(srv: &TestServer, secret: &str, hw: &str, nonce: Option<&str>) -> (u16, Value) {
    let mut body = json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": hw});
    if let Some(n) = nonce {
        body["enrollment_nonce"] = json!(n);
    }
    srv.call(Method::POST, "/device/v1/enroll", None, Some(body))
        .await
}

async fn checkin_status(srv: &TestServer, token: &Value) -> u16 {
    srv.call(
        Method::POST,
        "/device/v1/checkin",
        Some(token.as_str().unwrap()),
        Some(checkin_body("1.0.0", 0, ZERO_SHA, "esp32c3")),
    )
    .await
    .0
}

/// A device whose enrolment answer was lost (power cut before it stored its token) repeats the
/// enrolment with the nonce it stored first: same device, new token, old token dead. Anyone else
/// with the product secret but not the nonce is refused.
#[tokio::test]
async fn enrolment_repeats_with_the_devices_nonce_only() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let nonce = "0123456789abcdef0123456789abcdef";
    let (st, first) = enrol_with(&srv, &secret, "aa:bb", Some(nonce)).await;
    assert_eq!(st, 201, "{first}");
    let (st, second) = enrol_with(&srv, &secret, "aa:bb", Some(nonce)).await;
    assert_eq!(st, 201, "{second}");
    assert_eq!(first["device_id"], second["device_id"], "the same device");
    assert_ne!(first["device_token"], second["device_token"]);
    assert_eq!(checkin_status(&srv, &first["device_token"]).await, 401);
    assert_eq!(checkin_status(&srv, &second["device_token"]).await, 200);
    // Another nonce, or none: refused, and the device's token still works.
    for other in [Some("ffffffffffffffffffffffffffffffff"), None] {
        let (st, v) = enrol_with(&srv, &secret, "aa:bb", other).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (409, Some("already_enrolled")),
            "{v}"
        );
    }
    assert_eq!(checkin_status(&srv, &second["device_token"]).await, 200);
    // A nonce too short to be random is a bad request, and nothing is stored.
    let (st, v) = enrol_with(&srv, &secret, "cc:dd", Some("short")).await;
    assert_eq!(st, 400, "{v}");
    let (_, list) = srv
        .call(Method::GET, "/api/v1/devices", Some(&srv.admin), None)
        .await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1, "{list}");
}

/// A release larger than the update partition a device reports is never offered to it (the
/// device would refuse it as oversize at every poll); the newest one that fits is.
#[tokio::test]
async fn a_release_larger_than_the_devices_partition_is_not_offered() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, token) = srv.enroll("thermo", &secret, "aa:bb").await;
    let small = image(Chip::Esp32C3, "1.1.0", 1);
    let big = synth::build(&SynthApp {
        chip: Chip::Esp32C3,
        version: "1.2.0".into(),
        payload_len: 60_000,
        seed: 2,
        ..Default::default()
    });
    assert!(big.len() > small.len() + 30_000);
    let m = manifest_for("thermo", Chip::Esp32C3, "1.1.0", &small);
    let (s, fits) = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle_of(&key, &m, small.clone()),
        )
        .await;
    assert_eq!(s, 201, "{fits}");
    let m = manifest_for("thermo", Chip::Esp32C3, "1.2.0", &big);
    let (s, _) = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle_of(&key, &m, big.clone()),
        )
        .await;
    assert_eq!(s, 201);

    let offered = |partition: Option<usize>| {
        let mut body = checkin_body("1.0.0", 0, ZERO_SHA, "esp32c3");
        if let Some(p) = partition {
            body["partition_size"] = json!(p);
        }
        let srv = &srv;
        let token = token.clone();
        async move {
            let (s, v) = srv
                .call(Method::POST, "/device/v1/checkin", Some(&token), Some(body))
                .await;
            assert_eq!(s, 200, "{v}");
            v["update"]["version"].clone()
        }
    };
    assert_eq!(
        offered(None).await,
        "1.2.0",
        "no partition size: the newest"
    );
    assert_eq!(offered(Some(big.len())).await, "1.2.0", "it fits exactly");
    assert_eq!(
        offered(Some(big.len() - 1)).await,
        "1.1.0",
        "too big for the slot: the newest that fits"
    );
    assert_eq!(
        offered(Some(small.len() - 1)).await,
        Value::Null,
        "nothing fits"
    );
}
