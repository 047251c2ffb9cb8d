//! Issue 8, items 6, 13 and 14: bounds on enrolment (allow-list, cap, rate, re-enrolment once),
//! on admin-set strings, and on device data (report rate, history, pages, the database log).

use std::collections::HashSet;

use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn enroll_raw(srv: &TestServer, product: &str, secret: &str, hw: &str) -> (u16, Value) {
    srv.call(
        Method::POST,
        "/device/v1/enroll",
        None,
        Some(json!({"product": product, "enrollment_secret": secret, "hardware_id": hw})),
    )
    .await
}

async fn import_csv(srv: &TestServer, product: &str, csv: &str) -> (u16, Value) {
    let r = srv
        .req(
            Method::POST,
            &format!("/api/v1/products/{product}/allowlist"),
            Some(&srv.admin),
        )
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    into_json(r).await
}

async fn patch_product(srv: &TestServer, product: &str, body: Value) -> Value {
    let (s, v) = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/products/{product}"),
            Some(&srv.admin),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn report(srv: &TestServer, token: &str, progress: u64) -> reqwest::Response {
    srv.req(Method::POST, "/device/v1/status", Some(token))
        .json(&json!({"state": "downloading", "progress_bytes": progress}))
        .send()
        .await
        .unwrap()
}

/// Every item of a list, following `next` with pages of two; asserts no item comes twice.
async fn walk(srv: &TestServer, path: &str, key: &str, id: &str) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=2&cursor={c}"),
            None => format!("{path}{sep}limit=2"),
        };
        let (s, v) = srv.call(Method::GET, &url, Some(&srv.admin), None).await;
        assert_eq!(s, 200, "{url}: {v}");
        let items = v[key].as_array().unwrap();
        assert!(
            items.len() <= 2,
            "{url}: a page holds at most `limit` items"
        );
        out.extend(items.iter().map(|i| {
            if id.is_empty() {
                i.as_str().unwrap().to_string()
            } else {
                i[id].to_string()
            }
        }));
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                let unique: HashSet<_> = out.iter().collect();
                assert_eq!(
                    unique.len(),
                    out.len(),
                    "{path}: an item came twice: {out:?}"
                );
                return out;
            }
        }
    }
    panic!("{path}: pages never end");
}

#[tokio::test]
async fn squatting_is_refused_when_the_product_requires_its_allowlist() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (s, v) = import_csv(
        &srv,
        "thermo",
        "serial,hardware_id,test_result\n1,aa:bb:00:01,pass\n2,aa:bb:00:02,pass\n",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["added"].as_u64(), v["total"].as_i64()),
        (Some(2), Some(2))
    );
    // List mode off: the list is only prepared, anyone with the secret still enrols.
    assert_eq!(enroll_raw(&srv, "thermo", &secret, "zz:00").await.0, 201);
    let p = patch_product(&srv, "thermo", json!({"allowlist_required": true})).await;
    assert_eq!(p["allowlist_required"], true);
    // A squatter with the secret cannot take an id the factory never made...
    let (s, v) = enroll_raw(&srv, "thermo", &secret, "aa:bb:00:99").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (403, Some("not_allowlisted")),
        "{v}"
    );
    // ... and the real devices enrol.
    srv.enroll("thermo", &secret, "aa:bb:00:01").await;
    srv.enroll("thermo", &secret, "aa:bb:00:02").await;
    // Removing an id from the list stops its enrolment.
    let (s, _) = srv
        .call(
            Method::DELETE,
            "/api/v1/products/thermo/allowlist/aa:bb:00:02",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .call(
            Method::DELETE,
            "/api/v1/products/thermo/allowlist/aa:bb:00:02",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_bad_allowlist_csv_is_refused_naming_the_line_and_changes_nothing() {
    let srv = spawn().await;
    srv.product("thermo", Chip::Esp32).await;
    assert_eq!(
        import_csv(&srv, "thermo", "hardware_id\nid-1\nid-2\n")
            .await
            .0,
        200
    );
    for (csv, says) in [
        ("hardware_id\nid-3\nbad\u{1b}[31m\nid-4\n", "line 3"),
        ("mac,serial\nid-3,1\n", "no hardware_id column"),
        ("hardware_id\nid-3\n\"id-4\n", "never ends"),
        ("", "empty"),
        ("hardware_id\nid-5\n", ""), // valid: then a second import below repeats nothing
    ] {
        let (s, v) = import_csv(&srv, "thermo", csv).await;
        if says.is_empty() {
            assert_eq!(s, 200, "{v}");
            continue;
        }
        assert_eq!(s, 400, "{csv:?}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains(says) && m.contains("nothing imported"),
            "{csv:?}: {m}"
        );
    }
    let all = walk(
        &srv,
        "/api/v1/products/thermo/allowlist",
        "hardware_ids",
        "",
    )
    .await;
    assert_eq!(
        all,
        ["id-1", "id-2", "id-5"],
        "the refused files added nothing"
    );
    let (_, v) = import_csv(&srv, "thermo", "hardware_id\nid-1\nid-1\nid-6\n").await;
    assert_eq!(
        (v["rows"].as_u64(), v["added"].as_u64(), v["total"].as_i64()),
        (Some(2), Some(1), Some(4))
    );
}

#[tokio::test]
async fn enrolment_beyond_the_product_cap_is_refused() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let p = patch_product(&srv, "thermo", json!({"max_devices": 2})).await;
    assert_eq!(p["max_devices"], 2);
    srv.enroll("thermo", &secret, "hw-1").await;
    srv.enroll("thermo", &secret, "hw-2").await;
    let (s, v) = enroll_raw(&srv, "thermo", &secret, "hw-3").await;
    assert_eq!((s, v["error"].as_str()), (403, Some("device_limit")), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("--max-devices"),
        "{v}"
    );
    let p = patch_product(&srv, "thermo", json!({"max_devices": null})).await;
    assert_eq!(p["max_devices"], Value::Null);
    srv.enroll("thermo", &secret, "hw-3").await;
}

#[tokio::test]
async fn concurrent_enrolments_never_overshoot_the_cap() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    patch_product(&srv, "thermo", json!({"max_devices": 5})).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (url, http, secret) = (srv.url.clone(), srv.http.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/device/v1/enroll"))
                .json(&json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": format!("hw-{i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        15,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn new_enrolments_beyond_the_product_rate_get_429_with_retry_after() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, p) = srv
        .call(
            Method::GET,
            "/api/v1/products/thermo",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(
        p["enrollments_per_minute"], 600,
        "the documented default: {p}"
    );
    patch_product(&srv, "thermo", json!({"enrollments_per_minute": 3})).await;
    for i in 0..3 {
        srv.enroll("thermo", &secret, &format!("hw-{i}")).await;
    }
    let r = srv
        .req(Method::POST, "/device/v1/enroll", None)
        .json(&json!({"product": "thermo", "enrollment_secret": secret, "hardware_id": "hw-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&wait),
        "about 20 s for one of 3 a minute: {wait}"
    );
    let (_, v) = into_json(r).await;
    assert_eq!(v["error"], "rate_limited");
    let (s, _) = srv
        .call(
            Method::PATCH,
            "/api/v1/products/thermo",
            Some(&srv.admin),
            Some(json!({"enrollments_per_minute": 0})),
        )
        .await;
    assert_eq!(s, 400, "0 is not a rate; null is no limit");
    patch_product(&srv, "thermo", json!({"enrollments_per_minute": null})).await;
    srv.enroll("thermo", &secret, "hw-9").await;
}

#[tokio::test]
async fn an_admin_lets_an_enrolled_hardware_id_enrol_again_exactly_once() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (id, old_token) = srv.enroll("thermo", &secret, "aa:bb").await;
    let (s, v) = enroll_raw(&srv, "thermo", &secret, "aa:bb").await;
    assert_eq!((s, v["error"].as_str()), (409, Some("already_enrolled")));
    assert!(
        v["message"].as_str().unwrap().contains("allow-reenroll"),
        "{v}"
    );
    let (s, _) = srv
        .call(
            Method::POST,
            "/api/v1/products/thermo/allow-reenroll",
            Some(&srv.admin),
            Some(json!({"hardware_id": "never-enrolled"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/products/thermo/allow-reenroll",
            Some(&srv.admin),
            Some(json!({"hardware_id": "aa:bb"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["device_id"], id.as_str());
    let (s, v) = enroll_raw(&srv, "thermo", &secret, "aa:bb").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["device_id"], id.as_str(), "the same device, a new token");
    let new_token = v["device_token"].as_str().unwrap().to_string();
    assert_ne!(new_token, old_token);
    async fn checkin(srv: &TestServer, t: &str) -> u16 {
        srv.call(
            Method::POST,
            "/device/v1/checkin",
            Some(t),
            Some(
                json!({"version": "1.0.0", "security_counter": 0, "chip": "esp32c3",
                "image_sha256": "00".repeat(32)}),
            ),
        )
        .await
        .0
    }
    assert_eq!(
        checkin(&srv, &old_token).await,
        401,
        "the old token is dead"
    );
    assert_eq!(checkin(&srv, &new_token).await, 200);
    // Once: the mark is gone.
    let (s, _) = enroll_raw(&srv, "thermo", &secret, "aa:bb").await;
    assert_eq!(s, 409);
    // Recorded in the device's history.
    let (_, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{id}"),
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
    assert_eq!(states, ["reenrolled"], "{v}");
}

#[tokio::test]
async fn admin_set_strings_are_one_bounded_line_and_lists_are_deduplicated() {
    let srv = spawn().await;
    let key = otter_core::keys::PrivateKey::generate();
    srv.product("thermo", Chip::Esp32).await;
    let tokens_before = srv
        .call(Method::GET, "/api/v1/tokens", Some(&srv.admin), None)
        .await
        .1["tokens"]
        .as_array()
        .unwrap()
        .len();
    let bad = [
        (
            "/api/v1/tokens",
            json!({"name": "ci\nINFO forged line", "role": "viewer"}),
            "token name",
        ),
        (
            "/api/v1/tokens",
            json!({"name": "\u{1b}[2J", "role": "viewer"}),
            "token name",
        ),
        (
            "/api/v1/tokens",
            json!({"name": "nul\u{0}", "role": "viewer"}),
            "token name",
        ),
        (
            "/api/v1/tokens",
            json!({"name": "x".repeat(65), "role": "viewer"}),
            "64",
        ),
        (
            "/api/v1/products/thermo/keys",
            json!({"public_key_pem": key.public_key().to_pem(), "name": "k".repeat(60_000)}),
            "key name",
        ),
        (
            "/api/v1/products",
            json!({"name": "lamp", "chip": "esp32", "description": "a\u{1b}]0;owned\u{7}"}),
            "description",
        ),
        (
            "/api/v1/tokens",
            json!({"name": "ci", "role": "publisher",
                "products": (0..65).map(|i| format!("p{i}")).collect::<Vec<_>>()}),
            "at most 64",
        ),
    ];
    for (path, body, says) in bad {
        let (s, v) = srv
            .call(Method::POST, path, Some(&srv.admin), Some(body))
            .await;
        assert_eq!(s, 400, "{path}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains(says), "{path}: {m}");
        assert!(
            !m.contains('\u{1b}') && !m.contains('\n'),
            "never echoed: {m}"
        );
    }
    let (_, v) = srv
        .call(Method::GET, "/api/v1/tokens", Some(&srv.admin), None)
        .await;
    assert_eq!(
        v["tokens"].as_array().unwrap().len(),
        tokens_before,
        "nothing stored"
    );
    let (_, v) = srv
        .call(
            Method::GET,
            "/api/v1/products/thermo",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "no key stored");
    // 1,000 copies of one product are one product.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&srv.admin),
            Some(json!({"name": "ci", "role": "publisher", "products": vec!["thermo"; 1000]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["info"]["products"], json!(["thermo"]));
}

#[tokio::test]
async fn status_reports_beyond_the_device_rate_get_429_with_retry_after() {
    let srv = spawn_with(|s| {
        s.limits.device_reports_per_minute = 60;
        s.limits.device_reports_burst = 5;
    })
    .await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, token) = srv.enroll("thermo", &secret, "hw").await;
    let (_, other) = srv.enroll("thermo", &secret, "hw-2").await;
    for i in 0..5 {
        assert_eq!(report(&srv, &token, i).await.status(), 204);
    }
    let r = report(&srv, &token, 5).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(into_json(r).await.1["error"], "rate_limited");
    assert_eq!(report(&srv, &other, 0).await.status(), 204, "per device");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        report(&srv, &token, 6).await.status(),
        204,
        "one a second again"
    );
}

#[tokio::test]
async fn history_keeps_the_newest_events_per_device() {
    let srv = spawn_with(|s| {
        s.limits.device_reports_per_minute = 0;
        s.limits.device_history_max = 5;
    })
    .await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (id, token) = srv.enroll("thermo", &secret, "hw").await;
    let (other_id, other) = srv.enroll("thermo", &secret, "hw-2").await;
    assert_eq!(report(&srv, &other, 1).await.status(), 204);
    for i in 1..=12 {
        assert_eq!(report(&srv, &token, i).await.status(), 204);
    }
    let progress = walk(
        &srv,
        &format!("/api/v1/devices/{id}/history"),
        "history",
        "progress_bytes",
    )
    .await;
    assert_eq!(progress, ["12", "11", "10", "9", "8"]);
    let (_, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{other_id}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        1,
        "other devices keep theirs"
    );
}

#[tokio::test]
async fn every_list_pages_each_item_exactly_once() {
    let srv = spawn().await;
    let (key, secret) = srv.product("p0", Chip::Esp32C3).await;
    for i in 1..5 {
        srv.product(&format!("p{i}"), Chip::Esp32C3).await;
    }
    for i in 0..2 {
        let k = otter_core::keys::PrivateKey::generate();
        let (s, _) = srv
            .call(
                Method::POST,
                "/api/v1/products/p0/keys",
                Some(&srv.admin),
                Some(json!({"public_key_pem": k.public_key().to_pem(), "name": format!("k{i}")})),
            )
            .await;
        assert_eq!(s, 201);
    }
    for i in 0..4 {
        srv.token("viewer", &[]).await;
        let v = format!("1.{i}.0");
        let (s, r) = srv
            .push(
                "p0",
                "stable",
                &srv.admin,
                bundle(&key, "p0", Chip::Esp32C3, &v),
            )
            .await;
        assert_eq!(s, 201, "{r}");
    }
    let mut device = String::new();
    for i in 0..5 {
        let (id, token) = srv.enroll("p0", &secret, &format!("hw-{i}")).await;
        assert_eq!(report(&srv, &token, i).await.status(), 204);
        assert_eq!(report(&srv, &token, i + 100).await.status(), 204);
        assert_eq!(report(&srv, &token, i + 200).await.status(), 204);
        device = id;
    }
    import_csv(&srv, "p0", "hardware_id\na\nb\nc\nd\ne\n").await;
    for (path, key, id, n) in [
        ("/api/v1/products", "products", "name", 5),
        ("/api/v1/products/p0/keys", "keys", "key_id", 3),
        ("/api/v1/releases", "releases", "id", 4),
        (
            "/api/v1/releases?product=p0&channel=stable",
            "releases",
            "id",
            4,
        ),
        ("/api/v1/tokens", "tokens", "id", 5),
        ("/api/v1/devices", "devices", "id", 5),
        ("/api/v1/devices?product=p0", "devices", "id", 5),
        ("/api/v1/products/p0/allowlist", "hardware_ids", "", 5),
    ] {
        let paged = walk(&srv, path, key, id).await;
        assert_eq!(paged.len(), n, "{path}: {paged:?}");
        let sep = if path.contains('?') { '&' } else { '?' };
        let (_, v) = srv
            .call(
                Method::GET,
                &format!("{path}{sep}limit=1000"),
                Some(&srv.admin),
                None,
            )
            .await;
        assert_eq!(v["next"], Value::Null);
        let whole: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                if id.is_empty() {
                    i.as_str().unwrap().to_string()
                } else {
                    i[id].to_string()
                }
            })
            .collect();
        assert_eq!(paged, whole, "{path}: pages in the list's order");
    }
    let versions = walk(&srv, "/api/v1/releases", "releases", "version").await;
    assert_eq!(
        versions,
        ["\"1.3.0\"", "\"1.2.0\"", "\"1.1.0\"", "\"1.0.0\""],
        "newest first"
    );
    let history = walk(
        &srv,
        &format!("/api/v1/devices/{device}/history"),
        "history",
        "progress_bytes",
    )
    .await;
    assert_eq!(history, ["204", "104", "4"]);
    let (_, v) = srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{device}?limit=1"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(v["history"].as_array().unwrap().len(), 1);
    assert!(v["history_next"].is_string(), "{v}");
}

#[tokio::test]
async fn a_bad_cursor_or_limit_is_a_clear_400() {
    let srv = spawn().await;
    srv.product("p0", Chip::Esp32C3).await;
    srv.product("p1", Chip::Esp32C3).await;
    let (_, v) = srv
        .call(
            Method::GET,
            "/api/v1/products?limit=1",
            Some(&srv.admin),
            None,
        )
        .await;
    let products_cursor = v["next"].as_str().unwrap().to_string();
    for (path, code) in [
        (
            "/api/v1/devices?cursor=not-a-cursor".to_string(),
            "bad_cursor",
        ),
        (
            format!("/api/v1/tokens?cursor={products_cursor}"),
            "bad_cursor",
        ),
        (
            format!("/api/v1/releases?cursor={products_cursor}"),
            "bad_cursor",
        ),
        ("/api/v1/products?cursor=%00%01".to_string(), "bad_cursor"),
        ("/api/v1/products?limit=0".to_string(), "bad_limit"),
        ("/api/v1/devices?limit=1001".to_string(), "bad_limit"),
        ("/api/v1/tokens?limit=ten".to_string(), "bad_limit"),
    ] {
        let (s, v) = srv.call(Method::GET, &path, Some(&srv.admin), None).await;
        assert_eq!((s, v["error"].as_str()), (400, Some(code)), "{path}: {v}");
        assert!(v["message"].as_str().unwrap().len() > 20, "{v}");
    }
}

fn wal_size(srv: &TestServer) -> u64 {
    std::fs::metadata(srv.data_dir().join("otter.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Runs on SQLite only: the write-ahead log file and its checkpoint are SQLite's.
#[tokio::test]
async fn the_database_log_shrinks_after_a_burst_of_reports() {
    if !crate::backends::sqlite_only("the write-ahead log file and its checkpoint") {
        return;
    }
    let srv = spawn_with(|s| {
        s.limits.device_reports_per_minute = 0;
        s.limits.wal_checkpoint_interval_s = 1;
        s.limits.wal_size_limit_bytes = 1024 * 1024;
    })
    .await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(srv.enroll("thermo", &secret, &format!("hw-{i}")).await.1);
    }
    let started = std::time::Instant::now();
    let mut peak = 0;
    let mut tasks = Vec::new();
    for (i, t) in tokens.into_iter().enumerate() {
        let url = srv.url.clone();
        let http = srv.http.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..250u64 {
                let r = http
                    .post(format!("{url}/device/v1/status"))
                    .bearer_auth(&t)
                    .json(&json!({"state": "downloading", "progress_bytes": n,
                        "reason": format!("device {i} report {n} {}", "x".repeat(150))}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
        }));
    }
    while !tasks.iter().all(|t| t.is_finished()) {
        peak = peak.max(wal_size(&srv));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let burst = started.elapsed();
    let mut after = wal_size(&srv);
    for _ in 0..50 {
        if after <= 64 * 1024 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = wal_size(&srv);
    }
    eprintln!(
        "WAL: 2000 status reports in {:.1} s, peak {} bytes, {} bytes after the checkpoint",
        burst.as_secs_f64(),
        peak,
        after
    );
    assert!(
        after <= 64 * 1024,
        "the periodic checkpoint empties the log: {after} bytes"
    );
}
