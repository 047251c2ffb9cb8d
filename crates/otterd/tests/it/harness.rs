//! Test fixtures: a running server, clients, keys and signed bundles.

use std::path::PathBuf;

use otter_core::image::synth::{self, SynthApp};
use otter_core::keys::PrivateKey;
use otter_core::manifest::{Bundle, Envelope, Manifest};
use otter_core::Chip;
use otterd::config::Settings;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// A server running in this process. Dropping it stops the server.
pub struct TestServer {
    pub url: String,
    pub dir: TempDir,
    pub admin: String,
    pub http: Client,
    /// The server's blob store (local disk, or its bucket with `OTTER_TEST_BLOBS=s3`).
    pub blobs: otterd::blob::BlobStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Starts a server with default settings.
pub async fn spawn() -> TestServer {
    spawn_with(|_| {}).await
}

/// Starts a server after `tweak` adjusts its settings.
pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let dir = TempDir::new().unwrap();
    let mut settings = Settings {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        poll_interval_s: 100,
        shutdown_grace_s: 1,
        ..Settings::default()
    };
    if crate::backends::s3::enabled() {
        crate::backends::s3::use_fresh_bucket(&mut settings).await;
    }
    // The test run's database, set before `tweak` so that settings a test copies there name
    // it; follows the data directory if `tweak` moved it.
    let database = crate::backends::database_setting_for(&settings.data_dir);
    settings.database_url = database.clone();
    tweak(&mut settings);
    if settings.database_url == database {
        settings.database_url = crate::backends::database_setting_for(&settings.data_dir);
    }
    let state = otterd::open_state(settings.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Bootstrap before returning so the admin token file exists.
    otterd::bootstrap_admin(&state).await.unwrap();
    let task = tokio::spawn(async move {
        otterd::launch_with_listener(state, listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let admin = std::fs::read_to_string(settings.data_dir.join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_string();
    TestServer {
        url,
        dir,
        admin,
        http: Client::new(),
        blobs: otterd::blob::BlobStore::open(&settings).unwrap(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestServer {
    /// A client of a server the test started itself (and stops itself); `data_dir` holds its
    /// initial admin token.
    pub fn attach(url: String, dir: TempDir, data_dir: &std::path::Path) -> TestServer {
        let admin = std::fs::read_to_string(data_dir.join("initial-admin-token"))
            .unwrap()
            .trim()
            .to_string();
        TestServer {
            url,
            dir,
            admin,
            http: Client::new(),
            blobs: otterd::blob::BlobStore::local(&data_dir.join("blobs")).unwrap(),
            stop: None,
            task: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.url, path));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends JSON and returns status and JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        into_json(r.send().await.unwrap()).await
    }

    /// Creates a product with one release key; returns the key and the enrolment secret.
    pub async fn product(&self, name: &str, chip: Chip) -> (PrivateKey, String) {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/products",
                Some(&self.admin),
                Some(json!({"name": name, "chip": chip.name()})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let secret = v["enrollment_secret"].as_str().unwrap().to_string();
        let key = PrivateKey::generate();
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/products/{name}/keys"),
                Some(&self.admin),
                Some(json!({"public_key_pem": key.public_key().to_pem()})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (key, secret)
    }

    /// Creates a token with a role (and products for publishers).
    pub async fn token(&self, role: &str, products: &[&str]) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(&self.admin),
                Some(json!({"name": format!("{role}-test"), "role": role, "products": products})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Publishes a fresh signed release of `version` on `product`'s stable channel, as admin.
    pub async fn publish(
        &self,
        key: &PrivateKey,
        product: &str,
        chip: Chip,
        version: &str,
    ) -> (u16, Value) {
        self.push(
            product,
            "stable",
            &self.admin,
            bundle(key, product, chip, version),
        )
        .await
    }

    /// Uploads bundle bytes.
    pub async fn push(
        &self,
        product: &str,
        channel: &str,
        token: &str,
        bundle: Vec<u8>,
    ) -> (u16, Value) {
        let r = self
            .req(
                Method::POST,
                &format!("/api/v1/products/{product}/releases?channel={channel}"),
                Some(token),
            )
            .header("content-type", "application/octet-stream")
            .body(bundle);
        into_json(r.send().await.unwrap()).await
    }

    /// Enrols a device; returns (device id, device token).
    pub async fn enroll(&self, product: &str, secret: &str, hw: &str) -> (String, String) {
        let (s, v) = self
            .call(
                Method::POST,
                "/device/v1/enroll",
                None,
                Some(json!({"product": product, "enrollment_secret": secret, "hardware_id": hw})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (
            v["device_id"].as_str().unwrap().into(),
            v["device_token"].as_str().unwrap().into(),
        )
    }

    /// Releases visible through the API.
    pub async fn release_count(&self) -> usize {
        let (s, v) = self
            .call(Method::GET, "/api/v1/releases", Some(&self.admin), None)
            .await;
        assert_eq!(s, 200);
        v["releases"].as_array().unwrap().len()
    }

    /// Objects under images/ and staging/ (files, on local disk).
    pub async fn blob_files(&self) -> (usize, usize) {
        if self.blobs.local_image_path("").is_some() {
            let count = |sub: &str| {
                std::fs::read_dir(self.data_dir().join("blobs").join(sub))
                    .map(|d| d.count())
                    .unwrap_or(0)
            };
            return (count("images"), count("staging"));
        }
        let store = self.blobs.object_store();
        let count = |sub: &'static str| {
            let store = store.clone();
            async move {
                use futures::TryStreamExt;
                let prefix = object_store::path::Path::from(sub);
                store
                    .list(Some(&prefix))
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap()
                    .len()
            }
        };
        (count("images").await, count("staging").await)
    }

    /// The stored bytes of an image (through the object store: local disk or S3).
    pub async fn read_image(&self, sha256_hex: &str) -> Vec<u8> {
        let key = otterd::blob::BlobStore::image_key(sha256_hex);
        let got = self.blobs.object_store().get(&key).await.unwrap();
        got.bytes().await.unwrap().to_vec()
    }

    /// Replaces the stored bytes of an image, as an attacker or a failing disk would.
    pub async fn write_image(&self, sha256_hex: &str, bytes: &[u8]) {
        let key = otterd::blob::BlobStore::image_key(sha256_hex);
        self.blobs
            .object_store()
            .put(&key, bytes.to_vec().into())
            .await
            .unwrap();
    }
}

pub async fn into_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// A valid application image for a chip and version.
pub fn image(chip: Chip, version: &str, seed: u64) -> Vec<u8> {
    synth::build(&SynthApp {
        chip,
        version: version.into(),
        payload_len: 20_000,
        seed,
        ..Default::default()
    })
}

/// A manifest describing `image`.
pub fn manifest_for(product: &str, chip: Chip, version: &str, image: &[u8]) -> Manifest {
    Manifest {
        product: product.into(),
        chip,
        version: version.into(),
        security_counter: 0,
        image_size: image.len() as u32,
        image_sha256: Sha256::digest(image).into(),
        created_at: otterd::now() as u64,
        expires_at: None,
        delta_base_sha256: None,
    }
}

/// A signed bundle for a fresh image.
pub fn bundle(key: &PrivateKey, product: &str, chip: Chip, version: &str) -> Vec<u8> {
    let img = image(chip, version, version.len() as u64);
    bundle_of(key, &manifest_for(product, chip, version, &img), img)
}

/// A signed bundle of a given manifest and image.
pub fn bundle_of(key: &PrivateKey, m: &Manifest, image: Vec<u8>) -> Vec<u8> {
    Bundle {
        envelope: Envelope::sign(m, &[key]).unwrap(),
        image,
    }
    .encode()
}

/// Spawns a prepared `otterd serve --listen 127.0.0.1:0 ...` command (stdout is taken here) and
/// waits for its ready line; returns the child (killed when dropped) and the server's URL.
pub async fn spawn_otterd(mut cmd: tokio::process::Command) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the otterd binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("otterd starts within 30 s")
        .unwrap()
        .expect("otterd prints its address");
    let url = line
        .strip_prefix("otterd listening on ")
        .expect("the ready line")
        .to_string();
    (child, url)
}

/// `otterd serve` on a free loopback port with this data directory (not yet spawned), on the
/// test run's database (see [`crate::backends`]).
pub fn otterd_serve(data_dir: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_otterd"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    with_database(&mut cmd, data_dir);
    cmd
}

/// Points an `otterd` command at the database of `data_dir` on the test run's backend (its
/// own file on SQLite: nothing to add).
pub fn with_database(cmd: &mut tokio::process::Command, data_dir: &std::path::Path) {
    if let Some(url) = crate::backends::database_url_for(data_dir) {
        cmd.env("OTTER_DATABASE_URL", url);
    }
}
