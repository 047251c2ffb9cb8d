//! Blobs on a real S3-compatible server (moto, tests/it/backends/s3.rs), whatever
//! `OTTER_TEST_BLOBS` says: publication, downloads with `Range`, presigned and CDN download URLs,
//! and the collector's rules by the objects' last modification (issue 9).

use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::backends::s3;
use crate::harness::*;
use otterd::config::Settings;

/// Settings of a fresh bucket on the test S3 server.
async fn bucket() -> Settings {
    let mut s = Settings::default();
    s3::use_fresh_bucket(&mut s).await;
    s
}

/// A test server whose blobs are in `bucket`'s bucket.
async fn on_bucket(bucket: &Settings, tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let b = bucket.clone();
    spawn_with(move |s| {
        s.blob_backend = b.blob_backend;
        s.s3_bucket = b.s3_bucket;
        s.s3_endpoint = b.s3_endpoint;
        s.s3_region = b.s3_region;
        s.s3_prefix = b.s3_prefix;
        s.s3_access_key_id = b.s3_access_key_id;
        s.s3_secret_access_key = b.s3_secret_access_key;
        s.s3_allow_http = b.s3_allow_http;
        tweak(s);
    })
    .await
}

async fn on_s3(tweak: impl FnOnce(&mut Settings)) -> TestServer {
    on_bucket(&bucket().await, tweak).await
}

async fn keys(store: &dyn ObjectStore, under: &str) -> Vec<String> {
    let prefix = ObjectPath::from(under);
    store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// A device's check-in, from a client that follows absolute download URLs of any length;
/// returns the offered update.
async fn offered(srv: &TestServer, token: &str) -> Value {
    offered_to(srv, token, Some(4096)).await
}

/// A device's check-in declaring `download_url_max` (absent: `None`); returns the update.
async fn offered_to(srv: &TestServer, token: &str, url_max: Option<u32>) -> Value {
    let mut body = json!({"version": "0.9.0", "security_counter": 0,
        "image_sha256": "00".repeat(32), "chip": "esp32c3", "partition_size": 1572864});
    if let Some(max) = url_max {
        body["download_url_max"] = json!(max);
    }
    let (s, v) = srv
        .call(Method::POST, "/device/v1/checkin", Some(token), Some(body))
        .await;
    assert_eq!(s, 200, "{v}");
    v["update"].clone()
}

/// Publishes 1.0.0 of thermo; returns the image, the release and a device token.
async fn published(srv: &TestServer) -> (Vec<u8>, Value, String) {
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let img = image(Chip::Esp32C3, "1.0.0", 11);
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
    let (_, token) = srv.enroll("thermo", &secret, "aa").await;
    (img, rel, token)
}

#[tokio::test]
async fn s3_holds_published_images_and_serves_ranges() {
    let srv = on_s3(|_| {}).await;
    let (img, rel, token) = published(&srv).await;
    let sha = rel["sha256"].as_str().unwrap();
    assert!(
        !srv.data_dir().join("blobs").exists(),
        "nothing is stored on local disk"
    );
    let store = srv.blobs.object_store();
    assert_eq!(keys(&*store, "images").await, vec![format!("images/{sha}")]);
    assert!(
        keys(&*store, "staging").await.is_empty(),
        "no staged copy is left"
    );
    assert_eq!(srv.read_image(sha).await, img);

    let url = format!("/device/v1/releases/{}/image", rel["id"].as_str().unwrap());
    let r = srv
        .req(Method::GET, &url, Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), img);
    let r = srv
        .req(Method::GET, &url, Some(&token))
        .header("range", "bytes=100-4195")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-4195/{}", img.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), img[100..4196].to_vec());
    let r = srv
        .req(Method::GET, &url, Some(&token))
        .header("range", "bytes=-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        img[img.len() - 7..].to_vec()
    );
}

#[tokio::test]
async fn a_presigned_download_url_serves_exactly_the_image_with_ranges() {
    let srv = on_s3(|s| {
        s.download_redirect = "presigned".into();
        s.download_presign_ttl_s = 300;
    })
    .await;
    let (img, rel, token) = published(&srv).await;
    let update = offered(&srv, &token).await;
    assert_eq!(update["release_id"], rel["id"]);
    let url = update["download_url"].as_str().unwrap();
    assert!(
        url.starts_with(s3::endpoint()) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    // No otterd credentials: the URL itself grants the read.
    let http = reqwest::Client::new();
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        hex::encode(Sha256::digest(&got)),
        rel["sha256"].as_str().unwrap()
    );
    assert_eq!(got, img);
    let r = http
        .get(url)
        .header("range", "bytes=4096-8191")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().to_vec(), img[4096..8192].to_vec());
    // A tampered URL is refused by the store's signature check only where the store checks
    // signatures; moto does not, so that is not asserted here (docs/security.md).
}

#[tokio::test]
async fn a_cdn_base_url_points_devices_at_the_images_key() {
    // The test bucket stands in for the CDN's origin: `<base>/images/<sha256>` is the object.
    let bucket = bucket().await;
    let base = format!(
        "{}/{}/{}/",
        bucket.s3_endpoint.clone().unwrap(),
        bucket.s3_bucket.clone().unwrap(),
        bucket.s3_prefix
    );
    let srv = on_bucket(&bucket, |s| s.download_redirect = base.clone()).await;
    let (img, rel, token) = published(&srv).await;
    let update = offered(&srv, &token).await;
    let sha = rel["sha256"].as_str().unwrap();
    assert_eq!(
        update["download_url"].as_str().unwrap(),
        format!("{}images/{sha}", base)
    );
    // What the CDN fetches from its origin there (the bucket is private; a real CDN signs its
    // origin requests): the object under the prefix holds exactly the image.
    assert_eq!(srv.read_image(sha).await, img);
}

/// A device gets a URL off otterd only if its check-in says it follows one that long
/// (`download_url_max`): a client that says nothing (every agent before it) and a client whose
/// limit is below the URL's length (Otter's C agent: 199 bytes, less than a presigned URL) get
/// otterd's own path; a CDN URL within the limit is handed out.
#[tokio::test]
async fn redirect_urls_go_only_to_devices_that_follow_urls_that_long() {
    let srv = on_s3(|s| s.download_redirect = "presigned".into()).await;
    let (_, rel, token) = published(&srv).await;
    let own = format!("/device/v1/releases/{}/image", rel["id"].as_str().unwrap());
    let presigned = offered_to(&srv, &token, Some(4096)).await["download_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(presigned.contains("X-Amz-Signature="), "{presigned}");
    for max in [None, Some(0), Some(199), Some(presigned.len() as u32 - 1)] {
        assert_eq!(
            offered_to(&srv, &token, max).await["download_url"],
            own,
            "download_url_max {max:?}"
        );
    }
    assert_eq!(
        offered_to(&srv, &token, Some(presigned.len() as u32)).await["download_url"]
            .as_str()
            .unwrap()
            .len(),
        presigned.len()
    );

    let cdn = on_s3(|s| s.download_redirect = "https://cdn.example.com/fw".into()).await;
    let (_, rel, token) = published(&cdn).await;
    let sha = rel["sha256"].as_str().unwrap();
    let url = format!("https://cdn.example.com/fw/images/{sha}");
    assert_eq!(
        offered_to(&cdn, &token, Some(199)).await["download_url"],
        url
    );
    assert_eq!(
        offered_to(&cdn, &token, None).await["download_url"],
        format!("/device/v1/releases/{}/image", rel["id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn without_redirect_devices_download_from_otterd() {
    let srv = on_s3(|_| {}).await;
    let (_, rel, token) = published(&srv).await;
    let update = offered(&srv, &token).await;
    assert_eq!(
        update["download_url"],
        format!("/device/v1/releases/{}/image", rel["id"].as_str().unwrap())
    );
}

/// The collector on S3 goes by the objects' last modification: staged objects and unreferenced
/// images older than the grace period go; young ones, and referenced images, stay. A start
/// (another instance's) leaves young staged uploads alone.
#[tokio::test]
async fn s3_collection_goes_by_last_modified_and_a_start_keeps_uploads_in_flight() {
    let bucket = bucket().await;
    let srv = on_bucket(&bucket, |s| s.blob_gc_interval_s = 3600).await;
    let (_, rel, _) = published(&srv).await;
    let sha = rel["sha256"].as_str().unwrap().to_string();
    let store = srv.blobs.object_store();
    let orphan = "ab".repeat(32);
    for key in [format!("images/{orphan}"), "staging/old-upload".into()] {
        store
            .put(&ObjectPath::from(key), vec![1u8; 64].into())
            .await
            .unwrap();
    }
    // S3 keeps last-modified to the second: three seconds make these older than a 2 s grace,
    // while what is written next stays younger than it for at least a second.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let young = "cd".repeat(32);
    for key in [format!("images/{young}"), "staging/in-flight".into()] {
        store
            .put(&ObjectPath::from(key), vec![2u8; 64].into())
            .await
            .unwrap();
    }

    // Another instance starts on the same bucket (and database): it removes nothing by itself.
    let second = Settings {
        data_dir: srv.data_dir(),
        database_url: crate::backends::database_setting_for(&srv.data_dir()),
        blob_gc_grace_s: 2,
        ..bucket.clone()
    };
    let second = otterd::open_state(second).await.unwrap();
    assert_eq!(
        keys(&*store, "staging").await.len(),
        2,
        "a start keeps staging"
    );

    let done = otterd::blob_gc::collect_once(&second).await.unwrap();
    assert_eq!((done.images, done.staging), (1, 1), "{done:?}");
    let images = keys(&*store, "images").await;
    assert!(!images.contains(&format!("images/{orphan}")), "{images:?}");
    assert!(
        images.contains(&format!("images/{young}")),
        "young orphans stay"
    );
    assert!(
        images.contains(&format!("images/{sha}")),
        "referenced images stay"
    );
    assert_eq!(
        keys(&*store, "staging").await,
        vec!["staging/in-flight".to_string()]
    );
}

/// The S3 settings of a bucket as `OTTER_*` variables.
fn s3_env(b: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("OTTER_BLOB_BACKEND", "s3".into()),
        ("OTTER_S3_BUCKET", b.s3_bucket.clone().unwrap()),
        ("OTTER_S3_ENDPOINT", b.s3_endpoint.clone().unwrap()),
        ("OTTER_S3_PREFIX", b.s3_prefix.clone()),
        (
            "OTTER_S3_ACCESS_KEY_ID",
            b.s3_access_key_id.clone().unwrap(),
        ),
        (
            "OTTER_S3_SECRET_ACCESS_KEY",
            b.s3_secret_access_key.as_ref().unwrap().expose().into(),
        ),
        ("OTTER_S3_ALLOW_HTTP", "true".into()),
    ]
}

/// The otterd binary takes the S3 settings from its environment: `config show` names their
/// source and hides the secret, and `serve` stores what it publishes in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otterd_binary_keeps_blobs_in_the_bucket_its_environment_names() {
    let bucket = bucket().await;
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otterd"))
        .args(["config", "show", "--sources"])
        .envs(s3_env(&bucket))
        .env("OTTER_S3_SECRET_ACCESS_KEY", "n0t-to-be-shown")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(!shown.contains("n0t-to-be-shown"), "{shown}");
    assert!(
        shown.contains("# secret_access_key = \"***\"  # environment"),
        "{shown}"
    );
    assert!(
        shown.contains("[blobs]\nbackend = \"s3\"  # environment"),
        "{shown}"
    );

    // A plain-http endpoint without s3_allow_http is refused at start, naming the fix.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_otterd"))
        .args(["config", "show"])
        .envs(s3_env(&bucket))
        .env("OTTER_S3_ALLOW_HTTP", "false")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OTTER_S3_ALLOW_HTTP"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = otterd_serve(&data);
    cmd.envs(s3_env(&bucket))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    let (_child, url) = spawn_otterd(cmd).await;
    let srv = TestServer::attach(url, dir, &data);
    let (_, rel, _) = published(&srv).await;
    let store = otterd::blob::BlobStore::open(&bucket)
        .unwrap()
        .object_store();
    assert_eq!(
        keys(&*store, "images").await,
        vec![format!("images/{}", rel["sha256"].as_str().unwrap())]
    );
    assert!(
        !data.join("blobs/images").exists(),
        "no image on local disk"
    );
}

/// Two instances on one bucket and one database: one publishes (new images, and images that
/// sat in the bucket as orphans) while the other collects back to back, which neither
/// instance's in-process lock can order. Every release still downloads whole. Which side wins
/// each race is up to timing here; the rules that settle every order (an upload restores a blob
/// that vanished before it settled; the collector puts back what a release came to reference)
/// are tested order by order in `otterd::blob`'s unit tests. (The grace period
/// is 3 s, not 0: with several instances it is also what keeps another instance's staged
/// uploads from the sweep; last-modified times are whole seconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_collecting_never_breaks_a_release_another_publishes() {
    let bucket = bucket().await;
    let keep = tempfile::TempDir::new().unwrap();
    let data = keep.path().join("data");
    let publisher = on_bucket(&bucket, |s| {
        s.data_dir = data.clone();
        s.blob_gc_interval_s = 0;
    })
    .await;
    let collector = otterd::open_state(Settings {
        data_dir: data.clone(),
        database_url: crate::backends::database_setting_for(&data),
        blob_gc_grace_s: 3,
        ..bucket.clone()
    })
    .await
    .unwrap();
    let (key, secret) = publisher.product("thermo", Chip::Esp32C3).await;
    let (_, token) = publisher.enroll("thermo", &secret, "aa").await;
    let store = publisher.blobs.object_store();
    let images: Vec<(String, Vec<u8>)> = (0..16u64)
        .map(|i| {
            let version = format!("1.0.{i}");
            let img = image(Chip::Esp32C3, &version, 300 + i);
            (version, img)
        })
        .collect();
    // Half of the images sit in the bucket already, as orphans old enough to collect.
    for (_, img) in images.iter().step_by(2) {
        let sha = hex::encode(Sha256::digest(img));
        store
            .put(
                &otterd::blob::BlobStore::image_key(&sha),
                img.clone().into(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(4100)).await;

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let passes = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut passes = 0u32;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                otterd::blob_gc::collect_once(&collector).await.unwrap();
                passes += 1;
            }
            passes
        })
    };
    let mut releases = Vec::new();
    for (version, img) in images {
        let m = manifest_for("thermo", Chip::Esp32C3, &version, &img);
        let (s, rel) = publisher
            .push(
                "thermo",
                "stable",
                &publisher.admin,
                bundle_of(&key, &m, img),
            )
            .await;
        assert_eq!(s, 201, "{rel}");
        releases.push(rel);
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(passes.await.unwrap() > 1, "the collector ran alongside");
    for r in &releases {
        let url = format!("/device/v1/releases/{}/image", r["id"].as_str().unwrap());
        let got = publisher
            .req(Method::GET, &url, Some(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{r}");
        let got = got.bytes().await.expect("the whole image arrives");
        assert_eq!(
            hex::encode(Sha256::digest(&got)),
            r["sha256"].as_str().unwrap()
        );
    }
}
