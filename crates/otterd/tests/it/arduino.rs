//! `GET /arduino/v1/{product}` spoken to byte for byte as the stock clients do: raw HTTP/1.0
//! requests over a TcpStream with the header sets of ESP8266httpUpdate and arduino-esp32's
//! HTTPUpdate, no redirects followed, the answer read until the server closes.

use base64::Engine;
use md5::{Digest, Md5};
use otter_core::keys::PrivateKey;
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const MAC: &str = "18:FE:AA:AA:AA:01";

/// An answer as the client sees it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the sketch passes: the credential, its current version, and what the core reports.
struct Client<'a> {
    user: &'a str,
    password: &'a str,
    mac: &'a str,
    version: Option<&'a str>,
    sketch_md5: &'a str,
    free_space: u64,
    mode: &'a str,
}

impl<'a> Client<'a> {
    fn new(password: &'a str) -> Self {
        Client {
            user: "thermo",
            password,
            mac: MAC,
            version: Some("1.0.0"),
            sketch_md5: "00000000000000000000000000000000",
            free_space: 1_044_464,
            mode: "sketch",
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// The request of ESP8266httpUpdate `update(client, url, currentVersion)` after
/// `setAuthorization(user, password)`: ESP8266HTTPClient's header order, HTTP/1.0.
fn esp8266_request(host: &str, path: &str, c: &Client) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ESP8266-http-Update\r\n\
         Authorization: Basic {}\r\nConnection: close\r\n\
         x-ESP8266-Chip-ID: 10494470\r\nx-ESP8266-STA-MAC: {}\r\nx-ESP8266-AP-MAC: 1A:FE:AA:AA:AA:01\r\n\
         x-ESP8266-free-space: {}\r\nx-ESP8266-sketch-size: 373940\r\n\
         x-ESP8266-sketch-md5: {}\r\nx-ESP8266-chip-size: 4194304\r\n\
         x-ESP8266-sdk-version: 2.2.2-dev(38a443e)\r\nx-ESP8266-mode: {}\r\n",
        basic(c.user, c.password),
        c.mac,
        c.free_space,
        c.sketch_md5,
        c.mode
    );
    if let Some(v) = c.version {
        r.push_str(&format!("x-ESP8266-version: {v}\r\n"));
    }
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

/// The request of arduino-esp32's `httpUpdate.update(client, url, currentVersion)` (core 3.x):
/// upper/lower case as the core writes them.
fn esp32_request(host: &str, path: &str, c: &Client) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ESP32-http-Update\r\n\
         Connection: close\r\nAuthorization: Basic {}\r\nCache-Control: no-cache\r\n\
         x-ESP32-BASE-MAC: {}\r\nx-ESP32-STA-MAC: {}\r\nx-ESP32-AP-MAC: 1A:FE:AA:AA:AA:01\r\n\
         x-ESP32-free-space: {}\r\nx-ESP32-sketch-size: 373940\r\nx-ESP32-sketch-md5: {}\r\n\
         x-ESP32-chip-size: 4194304\r\nx-ESP32-sdk-version: v5.1.4\r\nx-ESP32-mode: {}\r\n",
        basic(c.user, c.password),
        c.mac,
        c.mac,
        c.free_space,
        c.sketch_md5,
        c.mode
    );
    if let Some(v) = c.version {
        r.push_str(&format!("x-ESP32-version: {v}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// Sends raw bytes and reads the answer until the server closes the connection (the client
/// relies on `Content-Length`, but an HTTP/1.0 exchange ends with the close).
async fn exchange(srv: &TestServer, request: &str) -> Answer {
    exchange_from(srv, request, "127.0.0.1").await
}

/// [`exchange`] from a chosen loopback address (any of 127.0.0.0/8 on Linux).
async fn exchange_from(srv: &TestServer, request: &str, local: &str) -> Answer {
    let host = srv.url.trim_start_matches("http://");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(host.parse().unwrap()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection after its answer")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get8266(srv: &TestServer, product: &str, c: &Client<'_>) -> Answer {
    let host = srv.url.trim_start_matches("http://");
    let a = exchange(
        srv,
        &esp8266_request(host, &format!("/arduino/v1/{product}"), c),
    )
    .await;
    check_common(&a);
    a
}

async fn get32(srv: &TestServer, product: &str, c: &Client<'_>) -> Answer {
    let host = srv.url.trim_start_matches("http://");
    let a = exchange(
        srv,
        &esp32_request(host, &format!("/arduino/v1/{product}"), c),
    )
    .await;
    check_common(&a);
    a
}

/// What every answer to these clients must be: closed, never chunked, never a redirect, and a
/// body the client could flash only on 200.
fn check_common(a: &Answer) {
    assert_eq!(a.header("connection"), Some("close"), "{:?}", a.headers);
    assert!(a.header("transfer-encoding").is_none(), "{:?}", a.headers);
    assert!(!(300..400).contains(&a.status) || a.status == 304);
    if a.status == 200 {
        let len: usize = a.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, a.body.len(), "Content-Length is the exact body length");
    }
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// An ESP8266 image: the real one when the shared firmware folder is there, else synthetic.
fn esp8266_image(seed: u64) -> Vec<u8> {
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/firmware/p7-esp8266-arduino-esplinker/new.bin");
    match std::fs::read(&real) {
        Ok(b) if seed == 0 => {
            assert_eq!(b[0], 0xE9, "an ESP8266 image");
            b
        }
        _ => {
            if seed == 0 {
                eprintln!(
                    "{} absent: a synthetic ESP8266 image stands in",
                    real.display()
                );
            }
            image(Chip::Esp8266, "", seed + 1)
        }
    }
}

/// Pushes `img` as `version` on `channel` of `product`; returns the release JSON.
async fn push_image(
    srv: &TestServer,
    key: &PrivateKey,
    product: &str,
    chip: Chip,
    channel: &str,
    version: &str,
    img: Vec<u8>,
) -> Value {
    let m = manifest_for(product, chip, version, &img);
    let (s, v) = srv
        .push(product, channel, &srv.admin, bundle_of(key, &m, img))
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

async fn device_json(srv: &TestServer, product: &str, mac: &str) -> Value {
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/devices?product={product}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["hardware_id"] == mac)
        .unwrap_or_else(|| panic!("device {mac} registered: {v}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{id}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn esp8266_client_gets_304_then_the_image_with_its_length_and_md5() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    // Nothing released yet: up to date, and the device is registered by its MAC.
    let c = Client::new(&secret);
    let a = get8266(&srv, "thermo", &c).await;
    assert_eq!(a.status, 304);
    assert!(a.body.is_empty());
    let d = device_json(&srv, "thermo", MAC).await;
    assert_eq!(d["device"]["channel"], "stable");

    let img = esp8266_image(0);
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    let a = get8266(&srv, "thermo", &c).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, img, "the exact image bytes");
    assert_eq!(a.body[0], 0xE9);
    assert_eq!(a.header("x-MD5"), Some(md5_hex(&img).as_str()));
    assert_eq!(a.header("x-version"), Some("1.1.0"));
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));

    // Running it: up to date. A newer version than any release: never a downgrade.
    for v in ["1.1.0", "2.0.0"] {
        let a = get8266(
            &srv,
            "thermo",
            &Client {
                version: Some(v),
                ..Client::new(&secret)
            },
        )
        .await;
        assert_eq!(a.status, 304, "running {v}");
    }
    // These clients send no SHA-256 of their sketch: the device has none, not "" (issue 9).
    let d = device_json(&srv, "thermo", MAC).await;
    assert_eq!(d["device"]["version"], "2.0.0", "{d}");
    assert!(d["device"]["image_sha256"].is_null(), "{d}");
}

#[tokio::test]
async fn esp32_client_gets_md5_and_sha256_and_headers_match_in_any_case() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32).await;
    let img = image(Chip::Esp32, "1.1.0", 7);
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp32,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    let a = get32(&srv, "thermo", &Client::new(&secret)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, img);
    assert_eq!(a.header("x-MD5"), Some(md5_hex(&img).as_str()));
    assert_eq!(
        a.header("x-SHA256"),
        Some(hex::encode(Sha256::digest(&img)).as_str())
    );
    // Header names in another case are the same headers.
    let host = srv.url.trim_start_matches("http://");
    let req = esp32_request(
        host,
        "/arduino/v1/thermo",
        &Client {
            version: Some("1.1.0"),
            ..Client::new(&secret)
        },
    )
    .replace("x-ESP32-", "X-esp32-");
    let a = exchange(&srv, &req).await;
    assert_eq!(a.status, 304);
    // An ESP8266 client of an ESP32 product is offered nothing.
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            mac: "18:FE:AA:AA:AA:09",
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!(a.status, 304);
}

#[tokio::test]
async fn version_mode_answers_the_version_without_a_body() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let img = esp8266_image(1);
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.10.0",
        img.clone(),
    )
    .await;
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.9.0",
        esp8266_image(2),
    )
    .await;
    let c = Client {
        mode: "version",
        version: Some("1.2.0"),
        ..Client::new(&secret)
    };
    let a = get8266(&srv, "thermo", &c).await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert_eq!(a.header("content-length"), Some("0"));
    assert_eq!(
        a.header("x-version"),
        Some("1.10.0"),
        "Otter's version order, not text order"
    );
    assert_eq!(a.header("x-MD5"), Some(md5_hex(&img).as_str()));
    let c = Client {
        mode: "version",
        version: Some("1.10.0"),
        ..Client::new(&secret)
    };
    assert_eq!(get8266(&srv, "thermo", &c).await.status, 304);
    // A version probe is not an update served: no outcome is inferred from the next request.
    let d = device_json(&srv, "thermo", MAC).await;
    assert_eq!(d["history"].as_array().unwrap().len(), 0, "{d}");
}

#[tokio::test]
async fn refusals_wrong_credential_wrong_product_unknown_mac() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        esp8266_image(1),
    )
    .await;
    // Wrong password, and no credential at all.
    let a = get8266(&srv, "thermo", &Client::new("not-the-secret")).await;
    assert_eq!(a.status, 401);
    let host = srv.url.trim_start_matches("http://");
    let no_auth = esp8266_request(host, "/arduino/v1/thermo", &Client::new(&secret))
        .lines()
        .filter(|l| !l.starts_with("Authorization"))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>();
    let a = exchange(&srv, &no_auth).await;
    assert_eq!(a.status, 401);
    // An unknown product gets the same answer as a wrong secret.
    let wrong = get8266(&srv, "nosuch", &Client::new(&secret)).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body, a.body, "an unknown product is not told apart");
    // Nothing was registered by refused requests.
    let (_, v) = srv
        .call(Method::GET, "/api/v1/devices", Some(&srv.admin), None)
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 0, "{v}");

    // With the allow-list on, an unlisted MAC gets 403 and is not registered; a listed one works.
    let (s, v) = srv
        .call(
            Method::PATCH,
            "/api/v1/products/thermo",
            Some(&srv.admin),
            Some(json!({"allowlist_required": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let a = get8266(&srv, "thermo", &Client::new(&secret)).await;
    assert_eq!(a.status, 403);
    let (_, v) = srv
        .call(Method::GET, "/api/v1/devices", Some(&srv.admin), None)
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 0, "{v}");
    let r = srv
        .req(
            Method::POST,
            "/api/v1/products/thermo/allowlist",
            Some(&srv.admin),
        )
        .header("content-type", "text/csv")
        .body(format!("hardware_id\n{MAC}\n"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let a = get8266(&srv, "thermo", &Client::new(&secret)).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn free_space_too_small_and_other_channels_give_304() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let small = esp8266_image(1);
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        small.clone(),
    )
    .await;
    let mut big = esp8266_image(2);
    big.extend(std::iter::repeat_n(0u8, 40_000));
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.2.0",
        big.clone(),
    )
    .await;
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "beta",
        "9.0.0",
        esp8266_image(3),
    )
    .await;
    // Room for neither: 304 (a 200 would make the client fail with "too less space").
    let c = Client {
        free_space: small.len() as u64 - 1,
        ..Client::new(&secret)
    };
    assert_eq!(get8266(&srv, "thermo", &c).await.status, 304);
    // Room for the older only: it gets the older, as check-ins do with the partition size.
    let c = Client {
        free_space: small.len() as u64,
        ..Client::new(&secret)
    };
    let a = get8266(&srv, "thermo", &c).await;
    assert_eq!((a.status, a.header("x-version")), (200, Some("1.1.0")));
    // Room for both: the newest of its channel (stable), never the beta release.
    let a = get8266(&srv, "thermo", &Client::new(&secret)).await;
    assert_eq!((a.status, a.header("x-version")), (200, Some("1.2.0")));
    assert_eq!(a.body, big);
    // A device moved to beta gets the beta release.
    let d = device_json(&srv, "thermo", MAC).await;
    let id = d["device"]["id"].as_str().unwrap();
    let (s, v) = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            Some(&srv.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            version: Some("1.2.0"),
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!((a.status, a.header("x-version")), (200, Some("9.0.0")));
}

#[tokio::test]
async fn outcome_is_inferred_from_the_next_request() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let img = esp8266_image(1);
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    let rid = rel["id"].as_str().unwrap();
    // Served, then the device still reports the old version: failure, with a reason.
    assert_eq!(
        get8266(&srv, "thermo", &Client::new(&secret)).await.status,
        200
    );
    assert_eq!(
        get8266(&srv, "thermo", &Client::new(&secret)).await.status,
        200
    );
    // Served again, and now it runs the release (known by version): success.
    let now_running = Client {
        version: Some("1.1.0"),
        ..Client::new(&secret)
    };
    assert_eq!(get8266(&srv, "thermo", &now_running).await.status, 304);
    let d = device_json(&srv, "thermo", MAC).await;
    let h = d["history"].as_array().unwrap();
    let states: Vec<&str> = h.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["success", "downloading", "failure", "downloading"],
        "{d}"
    );
    assert!(h.iter().all(|e| e["release_id"] == rid), "{d}");
    let reason = h[2]["reason"].as_str().unwrap();
    assert!(reason.contains("1.0.0") && reason.contains(rid), "{reason}");
    assert_eq!(d["device"]["last_state"], "success");
    assert_eq!(d["device"]["version"], "1.1.0");

    // A device without a version is known by its sketch MD5.
    let c = Client {
        mac: "18:FE:AA:AA:AA:02",
        version: None,
        ..Client::new(&secret)
    };
    assert_eq!(get8266(&srv, "thermo", &c).await.status, 200);
    let md5 = md5_hex(&img);
    let c = Client {
        sketch_md5: &md5,
        ..c
    };
    assert_eq!(get8266(&srv, "thermo", &c).await.status, 304);
    let d = device_json(&srv, "thermo", "18:FE:AA:AA:AA:02").await;
    assert_eq!(d["history"][0]["state"], "success", "{d}");
    assert_eq!(
        d["device"]["version"], "1.1.0",
        "the release its MD5 names: {d}"
    );
}

#[tokio::test]
async fn auto_registration_keeps_to_the_device_cap() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp8266).await;
    let (s, v) = srv
        .call(
            Method::PATCH,
            "/api/v1/products/thermo",
            Some(&srv.admin),
            Some(json!({"max_devices": 1})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        get8266(&srv, "thermo", &Client::new(&secret)).await.status,
        304
    );
    let other = Client {
        mac: "18:FE:AA:AA:AA:02",
        ..Client::new(&secret)
    };
    let a = get8266(&srv, "thermo", &other).await;
    assert_eq!(a.status, 403, "{}", String::from_utf8_lossy(&a.body));
    // The registered device is still served.
    assert_eq!(
        get8266(&srv, "thermo", &Client::new(&secret)).await.status,
        304
    );
}

#[tokio::test]
async fn a_damaged_stored_image_is_not_served() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        esp8266_image(41),
    )
    .await;
    let sha = rel["sha256"].as_str().unwrap();
    let mut bad = srv.read_image(sha).await;
    let n = bad.len();
    bad[n / 3] ^= 0x5a;
    srv.write_image(sha, &bad).await;
    // The image does not match its SHA-256: an error the client does not flash, not a 200 whose
    // x-MD5 vouches for damaged bytes.
    let a = get8266(&srv, "thermo", &Client::new(&secret)).await;
    assert_eq!(a.status, 500, "{}", String::from_utf8_lossy(&a.body));
}

/// Issue 9: a release that a rollout delivers reaches devices only through the rollout: a stock
/// client outside its target (no tag `lab`) no longer gets it from the channel.
#[tokio::test]
async fn a_release_with_a_rollout_is_not_served_by_the_channel() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "2.0.0",
        esp8266_image(1),
    )
    .await;
    let c = Client::new(&secret);
    assert_eq!(get8266(&srv, "thermo", &c).await.status, 200);
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&srv.admin),
            Some(json!({"release_id": rel["id"], "tag": "lab", "stages": "100", "failure_threshold": "20%"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(get8266(&srv, "thermo", &c).await.status, 304);
}

#[tokio::test]
async fn failed_credentials_are_throttled_per_product_and_per_address() {
    let srv = spawn_with(|s| {
        s.arduino_auth_failures_per_minute = 1;
        s.arduino_auth_failures_burst = 3;
    })
    .await;
    let (_, secret) = srv.product("thermo", Chip::Esp8266).await;
    let (_, other_secret) = srv.product("other", Chip::Esp8266).await;
    let host = srv.url.trim_start_matches("http://");
    let req = |product: &str, password: &str| {
        esp8266_request(
            host,
            &format!("/arduino/v1/{product}"),
            &Client::new(password),
        )
    };
    for _ in 0..3 {
        let a = exchange_from(&srv, &req("thermo", "guess"), "127.0.0.1").await;
        check_common(&a);
        assert_eq!(a.status, 401);
    }
    // Over the limit: 429 with Retry-After, even with the right secret (it is not checked).
    let a = exchange_from(&srv, &req("thermo", &secret), "127.0.0.1").await;
    check_common(&a);
    assert_eq!(a.status, 429, "{}", String::from_utf8_lossy(&a.body));
    let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // The same address is throttled for another product too.
    let a = exchange_from(&srv, &req("other", &other_secret), "127.0.0.1").await;
    assert_eq!(a.status, 429);
    // From another address: the product is still throttled, another product is not.
    let a = exchange_from(&srv, &req("thermo", &secret), "127.0.0.2").await;
    assert_eq!(a.status, 429);
    let a = exchange_from(&srv, &req("other", &other_secret), "127.0.0.2").await;
    assert_eq!(a.status, 304, "{}", String::from_utf8_lossy(&a.body));
    // Successes are not counted: many right answers from the new address stay served.
    for _ in 0..5 {
        let a = exchange_from(&srv, &req("other", &other_secret), "127.0.0.2").await;
        assert_eq!(a.status, 304);
    }
}

// --- esp32FOTA -------------------------------------------------------------------------------

/// The request of esp32FOTA's HTTPClient (arduino-esp32 core, HTTP/1.1 with reuse, the default
/// `use_http10 = false`) with `setExtraHTTPHeader("Authorization", "Basic ...")`.
fn fota_request(host: &str, path_and_query: &str, password: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ESP32HTTPClient\r\n\
         Connection: keep-alive\r\nAccept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n\
         Authorization: Basic {}\r\n\r\n",
        basic("thermo", password)
    )
}

/// `semver_parse_version` of esp32FOTA's semver.c: up to three `.`-separated `strtol` numbers;
/// any other character makes it fail, and the library then uses 0.0.0.
fn fota_semver(s: &str) -> (i64, i64, i64) {
    let mut v = [0i64; 3];
    for (i, slice) in s.split('.').take(4).enumerate() {
        let digits: String = slice
            .chars()
            .enumerate()
            .take_while(|(j, c)| c.is_ascii_digit() || (*j == 0 && (*c == '-' || *c == '+')))
            .map(|(_, c)| c)
            .collect();
        if digits.len() != slice.len() {
            return (0, 0, 0);
        }
        if i < 3 {
            v[i] = digits.parse().unwrap_or(0);
        }
    }
    (v[0], v[1], v[2])
}

/// esp32FOTA's `checkJSONManifest` over an object or an array: the firmware URL of the first
/// entry whose `type` is `name` and whose version is newer than `current`.
fn fota_pick(doc: &Value, name: &str, current: &str) -> Option<String> {
    let entries = match doc {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![doc.clone()],
        _ => panic!("esp32FOTA parses an object or an array: {doc}"),
    };
    entries.into_iter().find_map(|e| {
        if e["type"].as_str() != Some(name) {
            return None;
        }
        let payload = match &e["version"] {
            Value::Number(n) if n.as_u64().is_some_and(|v| v <= u16::MAX as u64) => {
                (n.as_u64().unwrap() as i64, 0, 0)
            }
            Value::String(s) => fota_semver(s),
            _ => (0, 0, 0),
        };
        let url = match e["url"].as_str() {
            Some(u) => u.to_string(),
            None => format!(
                "http://{}:{}{}",
                e["host"].as_str()?,
                e["port"].as_u64()?,
                e["bin"].as_str()?
            ),
        };
        (payload > fota_semver(current)).then_some(url)
    })
}

/// Fetches the manifest as the library does and checks what it needs: `200`, an exact
/// `Content-Length` (it reads the raw stream), no chunking, at most 2048 bytes.
async fn fota_manifest(srv: &TestServer, path_and_query: &str, password: &str) -> Value {
    let host = srv.url.trim_start_matches("http://");
    let a = exchange(srv, &fota_request(host, path_and_query, password)).await;
    check_common(&a);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(
        a.body.len() <= 2048,
        "esp32FOTA's JSON document is 2048 bytes"
    );
    serde_json::from_slice(&a.body).unwrap()
}

#[tokio::test]
async fn esp32fota_manifest_and_image_as_the_library_reads_them() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32).await;
    let host = srv.url.trim_start_matches("http://").to_string();
    // ESP.getEfuseMac() of 24:0A:C4:12:34:56, in decimal as the library appends it.
    let id = 0x5634_12C4_0A24u64;
    let path = format!("/arduino/v1/thermo/fota.json?id={id}");

    // Nothing released: an empty array, which the library reads as no update.
    let doc = fota_manifest(&srv, &path, &secret).await;
    assert_eq!(doc, json!([]));
    assert_eq!(fota_pick(&doc, "thermo", "0.0.1"), None);
    // The device is registered under its MAC.
    let d = device_json(&srv, "thermo", "24:0A:C4:12:34:56").await;
    assert_eq!(d["device"]["channel"], "stable");

    let img = image(Chip::Esp32, "1.1.0", 11);
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp32,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    // A prerelease version esp32FOTA would read as 0.0.0 is not listed.
    push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp32,
        "stable",
        "1.2.0-rc1",
        image(Chip::Esp32, "1.2.0-rc1", 12),
    )
    .await;
    let doc = fota_manifest(&srv, &path, &secret).await;
    assert_eq!(doc["type"], "thermo");
    assert_eq!(doc["version"], "1.1.0");
    assert_eq!(fota_pick(&doc, "thermo", "1.1.0"), None, "up to date");
    assert_eq!(fota_pick(&doc, "thermo", "1.2"), None, "never a downgrade");
    assert_eq!(fota_pick(&doc, "other-fw", "1.0.0"), None, "another type");
    let url = fota_pick(&doc, "thermo", "1.0.0").expect("an update for 1.0.0");
    let url_path = url
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or_else(|| panic!("an absolute URL on this server: {url}"));

    // The image, fetched without redirects: the exact bytes, their length and MD5.
    let a = exchange(&srv, &fota_request(&host, url_path, &secret)).await;
    check_common(&a);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, img);
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.header("x-MD5"), Some(md5_hex(&img).as_str()));

    // A device built with another firmware name asks with ?type=.
    let doc = fota_manifest(
        &srv,
        "/arduino/v1/thermo/fota.json?type=esp32-fota-http",
        &secret,
    )
    .await;
    assert!(
        fota_pick(&doc, "esp32-fota-http", "1.0.0").is_some(),
        "{doc}"
    );

    // Refusals: wrong secret (manifest and image), a release of another product, bad input.
    let a = exchange(&srv, &fota_request(&host, &path, "wrong")).await;
    assert_eq!(a.status, 401);
    let a = exchange(&srv, &fota_request(&host, url_path, "wrong")).await;
    assert_eq!(a.status, 401);
    let (_, other_secret) = srv.product("other", Chip::Esp32).await;
    let foreign = url_path.replace("/thermo/", "/other/");
    let a = exchange(&srv, &fota_request(&host, &foreign, &other_secret)).await;
    assert_eq!(a.status, 404, "another product's release is not served");
    for bad in ["?id=notanumber", "?id=281474976710656", "?type=a%20b"] {
        let a = exchange(
            &srv,
            &fota_request(
                &host,
                &format!("/arduino/v1/thermo/fota.json{bad}"),
                &secret,
            ),
        )
        .await;
        assert_eq!(a.status, 400, "{bad}");
    }
    let (_, s8266) = srv.product("legacy", Chip::Esp8266).await;
    let a = exchange(
        &srv,
        &fota_request(&host, "/arduino/v1/legacy/fota.json", &s8266),
    )
    .await;
    assert_eq!(a.status, 404, "esp32FOTA is for ESP32 products");
}

// --- Client-format payloads (issue 13) ---

/// Attaches `bytes` to release `id` as `kind` with `token`; status and JSON.
async fn attach(
    srv: &TestServer,
    id: &str,
    kind: &str,
    token: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let r = srv
        .req(
            Method::POST,
            &format!("/api/v1/releases/{id}/payloads?kind={kind}"),
            Some(token),
        )
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    into_json(r).await
}

async fn payload_kinds(srv: &TestServer, id: &str) -> Vec<String> {
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/releases/{id}/payloads"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_attached_esp8266_signed_payload_is_served_byte_for_byte() {
    use otter_core::image::sign::{sign_esp8266, ImageKey, KeyType};
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let img = esp8266_image(0);
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    let id = rel["id"].as_str().unwrap().to_string();
    let rsa = ImageKey::generate(KeyType::Rsa2048);
    let signed = sign_esp8266(&img, &rsa).unwrap();
    assert_eq!(signed.len(), img.len() + 256 + 4);
    let blobs_before = srv.blob_files().await;

    // Refused, and nothing stored: a viewer; an image part that differs; a truncated trailer;
    // a trailer whose length field lies; the kind of the other chip family.
    let viewer = srv.token("viewer", &[]).await;
    let (s, v) = attach(&srv, &id, "esp8266-signed", &viewer, signed.clone()).await;
    assert_eq!(s, 403, "{v}");
    let mut other_image = signed.clone();
    other_image[100] ^= 1;
    let (s, v) = attach(&srv, &id, "esp8266-signed", &srv.admin, other_image).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("SHA-256"), "{v}");
    let truncated = signed[..signed.len() - 10].to_vec();
    let (s, v) = attach(&srv, &id, "esp8266-signed", &srv.admin, truncated).await;
    assert_eq!(s, 422, "{v}");
    let mut lying = signed.clone();
    let n = lying.len();
    lying[n - 4..].copy_from_slice(&100_000u32.to_le_bytes());
    let (s, v) = attach(&srv, &id, "esp8266-signed", &srv.admin, lying).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = attach(
        &srv,
        &id,
        "esp32-arduino-signed",
        &srv.admin,
        signed.clone(),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("esp8266"), "{v}");
    let (s, v) = attach(&srv, &id, "full", &srv.admin, signed.clone()).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = attach(&srv, &id, "bogus", &srv.admin, signed.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(payload_kinds(&srv, &id).await, ["full"]);
    assert_eq!(srv.blob_files().await, blobs_before, "no blob stored");
    // Before it is attached, the client gets the plain image.
    let c = Client::new(&secret);
    let a = get8266(&srv, "thermo", &c).await;
    assert_eq!((a.status, a.body == img), (200, true));

    // A publisher of the product attaches it; a second of the same kind conflicts.
    let publisher = srv.token("publisher", &["thermo"]).await;
    let (s, v) = attach(&srv, &id, "esp8266-signed", &publisher, signed.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "esp8266-signed");
    assert_eq!(v["size"], signed.len() as u64);
    assert_eq!(v["md5"], md5_hex(&signed));
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(&signed)));
    let (s, v) = attach(&srv, &id, "esp8266-signed", &srv.admin, signed.clone()).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(payload_kinds(&srv, &id).await, ["full", "esp8266-signed"]);

    // Room for the image but not for its signature: nothing this client can take.
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            free_space: img.len() as u64,
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!(a.status, 304, "the signed bytes do not fit");

    // The ESP8266 client now gets exactly the signed bytes, with their length and MD5.
    let a = get8266(&srv, "thermo", &c).await;
    assert_eq!(a.status, 200);
    assert!(a.body == signed, "the exact signed bytes");
    assert_eq!(
        a.header("content-length"),
        Some(signed.len().to_string().as_str())
    );
    assert_eq!(a.header("x-MD5"), Some(md5_hex(&signed).as_str()));
    // The Arduino core's check: the trailer's length, then the signature over the image.
    let sig_len = u32::from_le_bytes(a.body[a.body.len() - 4..].try_into().unwrap()) as usize;
    assert_eq!(sig_len, 256);
    assert_eq!(&a.body[..a.body.len() - 4 - sig_len], img.as_slice());

    // A client that reports the MD5 of the signed bytes it wrote has installed the release.
    let signed_md5 = md5_hex(&signed);
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            version: None,
            sketch_md5: &signed_md5,
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!(a.status, 304);
    let d = device_json(&srv, "thermo", MAC).await;
    assert_eq!(d["history"][0]["state"], "success", "{d}");
}

#[tokio::test]
async fn an_esp32_arduino_signed_payload_is_served_with_its_sha256() {
    use otter_core::image::sign::{sign_esp32_arduino, ImageKey, KeyType};
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp32).await;
    let img = image(Chip::Esp32, "", 7);
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp32,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    let id = rel["id"].as_str().unwrap().to_string();
    let signed = sign_esp32_arduino(&img, &ImageKey::generate(KeyType::P256)).unwrap();
    // An unsigned (all-zero) area is refused.
    let mut zeros = img.clone();
    zeros.resize(img.len() + 512, 0);
    let (s, v) = attach(&srv, &id, "esp32-arduino-signed", &srv.admin, zeros).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = attach(&srv, &id, "esp8266-signed", &srv.admin, signed.clone()).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = attach(
        &srv,
        &id,
        "esp32-arduino-signed",
        &srv.admin,
        signed.clone(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let a = get32(&srv, "thermo", &Client::new(&secret)).await;
    assert_eq!(a.status, 200);
    assert!(a.body == signed, "the exact signed bytes");
    assert_eq!(a.header("x-MD5"), Some(md5_hex(&signed).as_str()));
    assert_eq!(
        a.header("x-SHA256"),
        Some(hex::encode(Sha256::digest(&signed)).as_str())
    );
}

// --- Stock clients in rollouts (issue 13) ---

async fn rollout(srv: &TestServer, body: Value) -> String {
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&srv.admin),
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn deployments(srv: &TestServer, rollout: &str) -> Vec<Value> {
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/rollouts/{rollout}/deployments"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["deployments"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_stock_client_in_a_rollouts_open_stage_gets_its_release() {
    use otter_core::rollout::{bucket, Stages};
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let img = esp8266_image(0);
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        img.clone(),
    )
    .await;
    let rid = rollout(
        &srv,
        json!({"release_id": rel["id"], "channel": "stable", "stages": "50,100", "failure_threshold": "100%"}),
    )
    .await;
    let stages: Stages = "50,100".parse().unwrap();
    let macs: Vec<String> = (0..16).map(|i| format!("18:FE:AA:AA:BB:{i:02X}")).collect();
    let mut inside = Vec::new();
    let mut outside = 0;
    for mac in &macs {
        let c = Client {
            mac,
            ..Client::new(&secret)
        };
        let a = get8266(&srv, "thermo", &c).await;
        let d = device_json(&srv, "thermo", mac).await;
        let id = d["device"]["id"].as_str().unwrap().to_string();
        if stages.stage_of(bucket(&rid, &id)) == Some(0) {
            assert_eq!(a.status, 200, "{mac} is in the open stage");
            assert!(a.body == img, "the rollout's image");
            assert_eq!(a.header("x-version"), Some("1.1.0"));
            inside.push(id);
        } else {
            assert_eq!(a.status, 304, "{mac} is in the stage not yet open");
            outside += 1;
        }
    }
    assert!(
        !inside.is_empty() && outside > 0,
        "16 devices fall in both stages"
    );
    let mut deployed: Vec<String> = deployments(&srv, &rid)
        .await
        .iter()
        .map(|d| {
            assert_eq!(d["state"], "downloading", "{d}");
            d["device_id"].as_str().unwrap().to_string()
        })
        .collect();
    deployed.sort();
    inside.sort();
    assert_eq!(deployed, inside, "a deployment for each device served");
}

#[tokio::test]
async fn failures_inferred_at_the_next_request_pause_the_rollout() {
    let srv = spawn().await;
    let (key, secret) = srv.product("thermo", Chip::Esp8266).await;
    let rel = push_image(
        &srv,
        &key,
        "thermo",
        Chip::Esp8266,
        "stable",
        "1.1.0",
        esp8266_image(0),
    )
    .await;
    let rid = rollout(
        &srv,
        json!({"release_id": rel["id"], "channel": "stable", "stages": "100", "failure_threshold": "20%"}),
    )
    .await;
    let (good, bad) = ("18:FE:AA:AA:CC:01", "18:FE:AA:AA:CC:02");
    for mac in [good, bad] {
        let c = Client {
            mac,
            ..Client::new(&secret)
        };
        assert_eq!(get8266(&srv, "thermo", &c).await.status, 200, "{mac}");
    }
    // The first comes back running 1.1.0: success, and the rollout goes on.
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            mac: good,
            version: Some("1.1.0"),
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!(a.status, 304);
    let (_, r) = srv
        .call(
            Method::GET,
            &format!("/api/v1/rollouts/{rid}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(r["state"], "running", "{r}");
    // One that runs the rollout's version already is not sent it: a success at once.
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            mac: "18:FE:AA:AA:CC:03",
            version: Some("1.1.0"),
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!(a.status, 304);
    // The second still runs 1.0.0: a failure with a reason; 1 of 2 is over 20%: paused.
    let a = get8266(
        &srv,
        "thermo",
        &Client {
            mac: bad,
            ..Client::new(&secret)
        },
    )
    .await;
    assert_eq!(a.status, 304, "not offered again after failing");
    let (_, r) = srv
        .call(
            Method::GET,
            &format!("/api/v1/rollouts/{rid}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(r["state"], "paused", "{r}");
    let states: Vec<(String, bool)> = deployments(&srv, &rid)
        .await
        .iter()
        .map(|d| {
            (
                d["state"].as_str().unwrap().to_string(),
                d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("still reports version 1.0.0")),
            )
        })
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert_eq!(
        states.iter().filter(|s| s.0 == "success").count(),
        2,
        "{states:?}"
    );
    assert!(states.contains(&("failure".into(), true)), "{states:?}");
}
