//! Release upload: the happy path and every refusal, each leaving nothing stored.

use otter_core::keys::PrivateKey;
use otter_core::manifest::{Bundle, Envelope};
use otter_core::Chip;
use reqwest::Method;

use crate::harness::*;

/// Asserts a refusal with status and a message fragment, and that nothing was stored.
async fn refused(srv: &TestServer, result: (u16, serde_json::Value), status: u16, fragment: &str) {
    let (s, v) = result;
    assert_eq!(s, status, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(fragment),
        "message {msg:?} should contain {fragment:?}"
    );
    assert_eq!(
        srv.release_count().await,
        0,
        "a refused upload must leave no release"
    );
    assert_eq!(
        srv.blob_files().await,
        (0, 0),
        "a refused upload must leave no blob (images, staging)"
    );
}

#[tokio::test]
async fn push_then_list() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let (s, v) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle(&key, "thermo", Chip::Esp32C3, "1.2.0"),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"], "1.2.0");
    assert_eq!(v["channel"], "beta");
    assert_eq!(v["chip"], "esp32c3");
    assert_eq!(v["signed_by"][0], key.public_key().key_id().to_string());
    assert_eq!(srv.blob_files().await, (1, 0));
    // Same version on another channel shares the blob; another image of that version on the
    // same channel is a conflict.
    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.2.0");
    assert_eq!(
        srv.push("thermo", "stable", &srv.admin, b.clone()).await.0,
        201
    );
    let img = image(Chip::Esp32C3, "1.2.0", 42);
    let other = bundle_of(
        &key,
        &manifest_for("thermo", Chip::Esp32C3, "1.2.0", &img),
        img,
    );
    let (s, v) = srv.push("thermo", "stable", &srv.admin, other).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(srv.blob_files().await, (1, 0));
    let (_, v) = srv
        .call(
            Method::GET,
            "/api/v1/releases?channel=stable",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(v["releases"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refuses_signature_by_an_unregistered_key() {
    let srv = spawn().await;
    srv.product("thermo", Chip::Esp32C3).await;
    let stranger = PrivateKey::generate();
    let r = srv
        .publish(&stranger, "thermo", Chip::Esp32C3, "1.0.0")
        .await;
    refused(&srv, r, 422, "no signature by a trusted key").await;
}

#[tokio::test]
async fn refuses_unsigned_and_malformed_bundles() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    // A bare image, no bundle at all.
    let r = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            image(Chip::Esp32C3, "1.0.0", 1),
        )
        .await;
    refused(&srv, r, 422, "magic").await;
    // A bundle whose signature bytes were zeroed.
    let mut b = bundle(&key, "thermo", Chip::Esp32C3, "1.0.0");
    let env_len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    for byte in &mut b[12 + env_len - 64..12 + env_len] {
        *byte = 0;
    }
    let r = srv.push("thermo", "stable", &srv.admin, b).await;
    refused(&srv, r, 422, "signature").await;
    // Truncated inside the head.
    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.0.0");
    let r = srv
        .push("thermo", "stable", &srv.admin, b[..40].to_vec())
        .await;
    refused(&srv, r, 422, "").await;
    // Empty body.
    let r = srv.push("thermo", "stable", &srv.admin, vec![]).await;
    refused(&srv, r, 422, "ended after 0 bytes").await;
}

#[tokio::test]
async fn refuses_image_not_matching_the_manifest() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let img = image(Chip::Esp32C3, "1.0.0", 1);
    let m = manifest_for("thermo", Chip::Esp32C3, "1.0.0", &img);
    // Same length, one byte changed after signing.
    let mut tampered = img.clone();
    tampered[1000] ^= 0xff;
    let r = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle_of(&key, &m, tampered),
        )
        .await;
    refused(&srv, r, 422, "SHA-256").await;
    // Shorter and longer than signed.
    let r = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle_of(&key, &m, img[..img.len() - 1].to_vec()),
        )
        .await;
    refused(&srv, r, 422, "manifest signs").await;
    let mut longer = img.clone();
    longer.push(0);
    let r = srv
        .push("thermo", "stable", &srv.admin, bundle_of(&key, &m, longer))
        .await;
    refused(&srv, r, 422, "longer").await;
}

#[tokio::test]
async fn refuses_wrong_chip_and_wrong_product() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    // The manifest says esp32 for an esp32c3 product.
    let r = srv.publish(&key, "thermo", Chip::Esp32, "1.0.0").await;
    refused(&srv, r, 422, "esp32c3").await;
    // The manifest says esp32c3 but the image inside is built for the ESP32.
    let img = image(Chip::Esp32, "1.0.0", 3);
    let m = manifest_for("thermo", Chip::Esp32C3, "1.0.0", &img);
    let r = srv
        .push("thermo", "stable", &srv.admin, bundle_of(&key, &m, img))
        .await;
    refused(&srv, r, 422, "built for esp32").await;
    // Signed for another product.
    let r = srv
        .push(
            "thermo",
            "stable",
            &srv.admin,
            bundle(&key, "lamp", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    refused(&srv, r, 422, "lamp").await;
    // A manifest over bytes that are not a firmware image.
    let junk = vec![0x42u8; 5000];
    let m = manifest_for("thermo", Chip::Esp32C3, "1.0.0", &junk);
    let r = srv
        .push("thermo", "stable", &srv.admin, bundle_of(&key, &m, junk))
        .await;
    refused(&srv, r, 422, "not a valid firmware image").await;
}

#[tokio::test]
async fn refuses_oversize_uploads() {
    let srv = spawn_with(|s| s.max_upload_bytes = 8 * 1024).await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let r = srv.publish(&key, "thermo", Chip::Esp32C3, "1.0.0").await;
    refused(&srv, r, 413, "max_upload_bytes").await;
    // Without Content-Length (streamed), the manifest's size is checked before any byte is stored.
    let b = bundle(&key, "thermo", Chip::Esp32C3, "1.0.0");
    let stream = futures::stream::iter(
        b.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = srv
        .req(
            Method::POST,
            "/api/v1/products/thermo/releases",
            Some(&srv.admin),
        )
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    refused(&srv, into_json(r).await, 413, "max_upload_bytes").await;
}

#[tokio::test]
async fn refuses_expired_manifests_and_keyless_products() {
    let srv = spawn().await;
    let (s, _) = srv
        .call(
            Method::POST,
            "/api/v1/products",
            Some(&srv.admin),
            Some(serde_json::json!({"name": "bare", "chip": "esp32"})),
        )
        .await;
    assert_eq!(s, 201);
    let key = PrivateKey::generate();
    let r = srv.publish(&key, "bare", Chip::Esp32, "1.0.0").await;
    refused(&srv, r, 422, "otter product key add").await;

    let (key, _) = srv.product("thermo", Chip::Esp32).await;
    let img = image(Chip::Esp32, "1.0.0", 1);
    let mut m = manifest_for("thermo", Chip::Esp32, "1.0.0", &img);
    m.created_at = 1_000;
    m.expires_at = Some(2_000);
    let b = Bundle {
        envelope: Envelope::sign(&m, &[&key]).unwrap(),
        image: img,
    }
    .encode();
    let r = srv.push("thermo", "stable", &srv.admin, b).await;
    refused(&srv, r, 422, "expired").await;
}

#[tokio::test]
async fn a_dry_run_checks_the_head_and_stores_nothing() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let full = bundle(&key, "thermo", Chip::Esp32C3, "1.4.0");
    let head_len = otter_core::manifest::BundleHead::decode(&full)
        .unwrap()
        .head_len;
    let (s, v) = srv
        .push(
            "thermo",
            "stable&dry_run=true",
            &srv.admin,
            full[..head_len].to_vec(),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], "1.4.0");
    assert_eq!(v["signed_by"][0], key.public_key().key_id().to_string());
    assert_eq!(srv.release_count().await, 0);
    assert_eq!(srv.blob_files().await, (0, 0));
    // A head signed by a stranger is refused by the dry run already.
    let stranger = PrivateKey::generate();
    let bad = bundle(&stranger, "thermo", Chip::Esp32C3, "1.4.0");
    let result = srv
        .push(
            "thermo",
            "stable&dry_run=true",
            &srv.admin,
            bad[..head_len].to_vec(),
        )
        .await;
    refused(&srv, result, 422, "key").await;
}

/// A CI job that runs twice: the same signed release pushed again to its channel answers the
/// release that is there (200, `existing`), dry run included, and stores nothing new; any other
/// release of that version is refused as before.
#[tokio::test]
async fn pushing_the_same_signed_release_again_answers_the_existing_one() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    let img = image(Chip::Esp32C3, "1.0.0", 1);
    let m = manifest_for("thermo", Chip::Esp32C3, "1.0.0", &img);
    let b = bundle_of(&key, &m, img.clone());
    let (s, first) = srv.push("thermo", "beta", &srv.admin, b.clone()).await;
    assert_eq!(
        (s, &first["existing"]),
        (201, &serde_json::json!(false)),
        "{first}"
    );

    let (s, again) = srv.push("thermo", "beta", &srv.admin, b.clone()).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["existing"], true);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["published_at"], first["published_at"]);
    // The dry run says so before the image is sent.
    let env_len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let (s, v) = into_json(
        srv.req(
            Method::POST,
            "/api/v1/products/thermo/releases?channel=beta&dry_run=true",
            Some(&srv.admin),
        )
        .body(b[..12 + env_len].to_vec())
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, &v["existing"], &v["release"]["id"]),
        (200, &serde_json::json!(true), &first["id"]),
        "{v}"
    );
    // The image must still match the manifest.
    let mut tampered = b.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let (s, v) = srv.push("thermo", "beta", &srv.admin, tampered).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(srv.release_count().await, 1);
    assert_eq!(srv.blob_files().await, (1, 0));

    // The same image signed again (a CI re-run: only the creation time differs) is the same
    // release: nothing changes, the stored manifest stays as first signed.
    let mut resigned = m.clone();
    resigned.created_at -= 1;
    let (s, v) = srv
        .push(
            "thermo",
            "beta",
            &srv.admin,
            bundle_of(&key, &resigned, img.clone()),
        )
        .await;
    assert_eq!((s, v["existing"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["id"], first["id"], "{v}");
    assert_eq!(v["created_at"], first["created_at"], "{v}");
    assert_eq!(srv.release_count().await, 1);

    // The same image under another signed manifest (another counter), and another image:
    // refused, naming the release that is there.
    let mut m3 = m.clone();
    m3.security_counter += 1;
    for other in [
        bundle_of(&key, &m3, img.clone()),
        bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
    ] {
        let (s, v) = srv.push("thermo", "beta", &srv.admin, other).await;
        assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains(first["id"].as_str().unwrap()),
            "{v}"
        );
    }
    assert_eq!(srv.release_count().await, 1);

    // A higher counter published since does not turn the repeat into a downgrade.
    let img2 = image(Chip::Esp32C3, "2.0.0", 2);
    let mut m2 = manifest_for("thermo", Chip::Esp32C3, "2.0.0", &img2);
    m2.security_counter = 3;
    assert_eq!(
        srv.push("thermo", "beta", &srv.admin, bundle_of(&key, &m2, img2))
            .await
            .0,
        201
    );
    let (s, v) = srv.push("thermo", "beta", &srv.admin, b.clone()).await;
    assert_eq!((s, &v["existing"]), (200, &serde_json::json!(true)), "{v}");

    assert_eq!(srv.release_count().await, 2);
}
