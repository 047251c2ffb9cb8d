//! GitHub Releases as a source, against a stand-in of GitHub written here: the releases API
//! (`GET /repos/{o}/{r}/releases` with GitHub's JSON shapes, asset downloads that redirect with
//! `302` to a second server standing in for the asset host), so the importer's whole path runs
//! over real sockets: list, redirect, download, verify, publish, record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const REPO: &str = "acme/thermo-fw";
const GH_TOKEN: &str = "ghp_standInToken0123456789";

#[derive(Default)]
struct Gh {
    /// The release list, newest first, as GitHub sends it.
    releases: Vec<Value>,
    /// Asset bytes by id.
    assets: HashMap<i64, Vec<u8>>,
    /// Downloads from the asset host, by asset id.
    downloads: HashMap<i64, usize>,
    /// Authorization headers the asset host received (must stay empty: the token is GitHub's).
    asset_host_auth: Vec<String>,
    /// Release-list requests, and how many carried the token.
    list_calls: usize,
    list_calls_with_token: usize,
    /// The asset host's base URL.
    asset_base: String,
    api_base: String,
}

type Shared = Arc<Mutex<Gh>>;

fn authorised(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {GH_TOKEN}"))
}

/// `GET /repos/{o}/{r}/releases`: a private repository, as GitHub answers it (404 without a
/// token).
async fn list(
    State(gh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut gh = gh.lock().unwrap();
    gh.list_calls += 1;
    if format!("{o}/{r}") != REPO || !authorised(&headers) {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/releases/releases#list-releases", "status": "404"}))).into_response();
    }
    gh.list_calls_with_token += 1;
    axum::Json(Value::Array(gh.releases.clone())).into_response()
}

/// `GET /repos/{o}/{r}/releases/assets/{id}` with `Accept: application/octet-stream`: `302` to
/// a short-lived URL on the asset host.
async fn asset(
    State(gh): State<Shared>,
    Path((_o, _r, id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    let gh = gh.lock().unwrap();
    if !authorised(&headers) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let wants_bytes = headers
        .get(header::ACCEPT)
        .is_some_and(|a| a == "application/octet-stream");
    if !wants_bytes || !gh.assets.contains_key(&id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    Response::builder()
        .status(StatusCode::FOUND)
        .header(
            header::LOCATION,
            format!(
                "{}/github-production-release-asset/{id}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300&X-Amz-Signature=abc",
                gh.asset_base
            ),
        )
        .body(axum::body::Body::empty())
        .unwrap()
}

async fn asset_host(State(gh): State<Shared>, Path(id): Path<i64>, headers: HeaderMap) -> Response {
    let mut gh = gh.lock().unwrap();
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        gh.asset_host_auth
            .push(a.to_str().unwrap_or("?").to_string());
    }
    *gh.downloads.entry(id).or_default() += 1;
    match gh.assets.get(&id) {
        Some(b) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            b.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve(router: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    url
}

/// Starts the API stand-in and the asset host.
async fn stand_in() -> Shared {
    let gh: Shared = Arc::default();
    let api = Router::new()
        .route("/repos/{o}/{r}/releases", get(list))
        .route("/repos/{o}/{r}/releases/assets/{id}", get(asset))
        .with_state(gh.clone());
    let assets = Router::new()
        .route("/github-production-release-asset/{id}", get(asset_host))
        .with_state(gh.clone());
    let api_base = serve(api).await;
    let asset_base = serve(assets).await;
    {
        let mut g = gh.lock().unwrap();
        g.api_base = api_base;
        g.asset_base = asset_base;
    }
    gh
}

/// Adds a release (newest first) with `(id, name, bytes)` assets, in GitHub's JSON shape.
fn add_release(gh: &Shared, id: i64, tag: &str, draft: bool, assets: Vec<(i64, &str, Vec<u8>)>) {
    let mut g = gh.lock().unwrap();
    let api = g.api_base.clone();
    let listed: Vec<Value> = assets
        .iter()
        .map(|(aid, name, bytes)| {
            json!({
                "url": format!("{api}/repos/{REPO}/releases/assets/{aid}"),
                "id": aid,
                "node_id": "RA_kwDO",
                "name": name,
                "label": null,
                "content_type": "application/octet-stream",
                "state": "uploaded",
                "size": bytes.len(),
                "download_count": 0,
                "created_at": "2026-11-30T10:00:00Z",
                "updated_at": "2026-11-30T10:00:00Z",
                "browser_download_url": format!("https://github.com/{REPO}/releases/download/{tag}/{name}"),
            })
        })
        .collect();
    for (aid, _, bytes) in assets {
        g.assets.insert(aid, bytes);
    }
    g.releases.insert(
        0,
        json!({
            "url": format!("{api}/repos/{REPO}/releases/{id}"),
            "assets_url": format!("{api}/repos/{REPO}/releases/{id}/assets"),
            "html_url": format!("https://github.com/{REPO}/releases/tag/{tag}"),
            "id": id,
            "tag_name": tag,
            "target_commitish": "main",
            "name": tag,
            "draft": draft,
            "prerelease": false,
            "created_at": "2026-11-30T10:00:00Z",
            "published_at": if draft { Value::Null } else { json!("2026-11-30T10:00:00Z") },
            "assets": listed,
            "body": "built by CI",
        }),
    );
}

async fn follow_state(srv: &TestServer) -> Value {
    let (s, v) = srv
        .call(
            Method::GET,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits (at most 30 s) until the follow satisfies `done`.
async fn wait_for(srv: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let v = follow_state(srv).await;
        if done(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s: {}", follow_state(srv).await);
}

#[tokio::test]
async fn a_followed_repository_is_imported_verified_served_and_refusals_are_shown() {
    let gh = stand_in().await;
    let api_base = gh.lock().unwrap().api_base.clone();
    let srv = spawn_with(|s| {
        s.github_api_url = api_base;
        s.github_poll_interval_s = 1;
    })
    .await;
    let (key, secret) = srv.product("thermo", Chip::Esp32).await;

    // CI's releases: v1.1.0 with a signed bundle (and a plain .bin the pattern leaves out),
    // a draft, and v1.2.0 whose bundle was altered after signing plus an unsigned one.
    let img = image(Chip::Esp32, "1.1.0", 31);
    let good = bundle_of(
        &key,
        &manifest_for("thermo", Chip::Esp32, "1.1.0", &img),
        img.clone(),
    );
    add_release(
        &gh,
        100,
        "v1.1.0",
        false,
        vec![
            (1001, "release.otter", good),
            (1002, "firmware.bin", img.clone()),
        ],
    );
    let draft_img = image(Chip::Esp32, "1.3.0", 33);
    add_release(
        &gh,
        101,
        "v1.3.0",
        true,
        vec![(
            1011,
            "release.otter",
            bundle_of(
                &key,
                &manifest_for("thermo", Chip::Esp32, "1.3.0", &draft_img),
                draft_img,
            ),
        )],
    );
    let img2 = image(Chip::Esp32, "1.2.0", 32);
    let mut tampered = bundle_of(
        &key,
        &manifest_for("thermo", Chip::Esp32, "1.2.0", &img2),
        img2,
    );
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    add_release(
        &gh,
        102,
        "v1.2.0",
        false,
        vec![
            (1021, "release.otter", tampered),
            (1022, "unsigned.otter", vec![0xE9; 4096]),
        ],
    );

    // Viewers cannot set a follow; a malformed repository changes nothing.
    let viewer = srv.token("viewer", &[]).await;
    let (s, _) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&viewer),
            Some(json!({"repo": REPO})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            Some(json!({"repo": "not a repo"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            Some(json!({"repo": REPO, "sign_on_import": true})),
        )
        .await;
    assert_eq!(
        s, 400,
        "signing at import needs github_import_key_file: {v}"
    );
    let (s, _) = srv
        .call(
            Method::GET,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 404, "no follow after a refused request");

    // Without a token the private repository is a 404: the poll's failure is shown, nothing
    // is recorded as imported or refused.
    let (s, v) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            Some(json!({"repo": REPO})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["asset_pattern"], "*.otter");
    assert_eq!(v["token_set"], false);
    let v = wait_for(&srv, "a failed poll", |v| !v["last_error"].is_null()).await;
    assert!(v["last_error"].as_str().unwrap().contains("404"), "{v}");
    assert_eq!(v["imports"], json!([]));

    // With the token: imported, refused, recorded.
    let (s, v) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            Some(json!({"repo": REPO, "token": GH_TOKEN})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_set"], true);
    assert!(
        !v.to_string().contains(GH_TOKEN),
        "the token is never returned"
    );
    let v = wait_for(&srv, "three assets looked at", |v| {
        v["imports"].as_array().unwrap().len() == 3
    })
    .await;
    assert!(!v.to_string().contains(GH_TOKEN));
    assert!(v["last_error"].is_null(), "{v}");
    let imports = v["imports"].as_array().unwrap();
    let by_id = |id: i64| {
        imports
            .iter()
            .find(|i| i["asset_id"] == id)
            .unwrap_or_else(|| panic!("asset {id}: {v}"))
    };
    assert_eq!(by_id(1001)["imported"], true, "{v}");
    assert_eq!(by_id(1001)["tag_name"], "v1.1.0");
    let release_id = by_id(1001)["release_id"].as_str().unwrap().to_string();
    assert_eq!(
        by_id(1021)["imported"],
        false,
        "the altered bundle is refused: {v}"
    );
    assert!(by_id(1021)["release_id"].is_null());
    assert!(!by_id(1021)["reason"].as_str().unwrap().is_empty());
    assert_eq!(
        by_id(1022)["imported"],
        false,
        "the unsigned asset is refused: {v}"
    );
    assert!(
        by_id(1022)["reason"]
            .as_str()
            .unwrap()
            .contains("release.otter"),
        "{v}"
    );
    // The draft and the .bin were not looked at.
    assert!(imports
        .iter()
        .all(|i| i["asset_id"] != 1011 && i["asset_id"] != 1002));

    // The release is there, as an upload would have made it, and nothing else is.
    let (s, r) = srv
        .call(
            Method::GET,
            &format!("/api/v1/releases/{release_id}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["version"], "1.1.0");
    assert_eq!(srv.release_count().await, 1);

    // A stock ESP32 client is served the imported image from Otter, byte for byte.
    let resp = srv
        .http
        .get(format!("{}/arduino/v1/thermo", srv.url))
        .basic_auth("thermo", Some(&secret))
        .header("x-ESP32-STA-MAC", "24:0A:C4:00:00:01")
        .header("x-ESP32-free-space", "1966080")
        .header("x-ESP32-mode", "sketch")
        .header("x-ESP32-version", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), img);

    // More polls: every asset was downloaded once, and the token never reached the asset host.
    let polled = v["last_poll_at"].as_i64().unwrap();
    wait_for(&srv, "two more polls", |v| {
        v["last_poll_at"].as_i64().unwrap() >= polled + 2
    })
    .await;
    {
        let g = gh.lock().unwrap();
        for id in [1001, 1021, 1022] {
            assert_eq!(g.downloads.get(&id), Some(&1), "asset {id} downloaded once");
        }
        assert!(!g.downloads.contains_key(&1011) && !g.downloads.contains_key(&1002));
        assert!(g.asset_host_auth.is_empty(), "{:?}", g.asset_host_auth);
        assert!(g.list_calls_with_token >= 3);
    }

    // Unfollowing keeps the imported release.
    let (s, _) = srv
        .call(
            Method::DELETE,
            "/api/v1/products/thermo/github",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .call(
            Method::DELETE,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(srv.release_count().await, 1);
}

#[tokio::test]
async fn an_asset_larger_than_an_upload_may_be_is_refused_without_downloading_it() {
    let gh = stand_in().await;
    let api_base = gh.lock().unwrap().api_base.clone();
    let srv = spawn_with(|s| {
        s.github_api_url = api_base;
        // Hourly: the follow's first poll runs when it is set, not at the interval.
        s.github_poll_interval_s = 3600;
        s.max_upload_bytes = 4096;
    })
    .await;
    srv.product("thermo", Chip::Esp32).await;
    add_release(
        &gh,
        200,
        "v2.0.0",
        false,
        vec![(2001, "big.otter", vec![0u8; 64 * 1024])],
    );
    let (s, v) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            Some(json!({"repo": REPO, "token": GH_TOKEN})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let v = wait_for(&srv, "the asset looked at", |v| {
        !v["imports"].as_array().unwrap().is_empty()
    })
    .await;
    let i = &v["imports"][0];
    assert_eq!(i["imported"], false);
    assert!(
        i["reason"].as_str().unwrap().contains("max_upload_bytes"),
        "{v}"
    );
    assert!(
        gh.lock().unwrap().downloads.is_empty(),
        "not downloaded at all"
    );
    assert_eq!(srv.release_count().await, 0);
}

#[tokio::test]
async fn the_weaker_mode_signs_plain_images_at_import_with_the_servers_key() {
    let gh = stand_in().await;
    let api_base = gh.lock().unwrap().api_base.clone();
    let keys = tempfile::TempDir::new().unwrap();
    let server_key = otter_core::keys::PrivateKey::generate();
    let key_file = keys.path().join("import.key");
    std::fs::write(&key_file, server_key.to_pem()).unwrap();
    let srv = spawn_with(|s| {
        s.github_api_url = api_base;
        s.github_poll_interval_s = 3600;
        s.github_import_key_file = Some(key_file);
    })
    .await;
    srv.product("thermo", Chip::Esp32).await;
    // The operator registers the server's key with the product: without it nothing verifies.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/products/thermo/keys",
            Some(&srv.admin),
            Some(json!({"public_key_pem": server_key.public_key().to_pem(), "name": "github-import"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let img = image(Chip::Esp32, "1.4.0", 41);
    add_release(
        &gh,
        300,
        "v1.4.0",
        false,
        vec![
            (3001, "thermo.bin", img.clone()),
            (3002, "notes.bin", b"not firmware".to_vec()),
        ],
    );
    let (s, v) = srv
        .call(
            Method::PUT,
            "/api/v1/products/thermo/github",
            Some(&srv.admin),
            Some(json!({"repo": REPO, "token": GH_TOKEN, "asset_pattern": "*.bin", "sign_on_import": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["sign_on_import"], true);
    let v = wait_for(&srv, "both assets looked at", |v| {
        v["imports"].as_array().unwrap().len() == 2
    })
    .await;
    let imports = v["imports"].as_array().unwrap();
    let good = imports.iter().find(|i| i["asset_id"] == 3001).unwrap();
    assert_eq!(good["imported"], true, "{v}");
    let bad = imports.iter().find(|i| i["asset_id"] == 3002).unwrap();
    assert_eq!(bad["imported"], false, "{v}");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("not a valid firmware image"),
        "{v}"
    );
    let (s, r) = srv
        .call(
            Method::GET,
            &format!("/api/v1/releases/{}", good["release_id"].as_str().unwrap()),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["version"], "1.4.0");
    assert_eq!(r["size"], img.len());
    assert!(
        r["published_by"]
            .as_str()
            .unwrap()
            .contains("signed at import"),
        "{r}"
    );
}
