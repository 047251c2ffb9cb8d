//! Every management route authenticated and authorised by role; device credentials scoped.

use otter_core::Chip;
use reqwest::Method;
use serde_json::json;

use crate::harness::*;

/// The last check, of the database file's bytes, runs on SQLite only (PostgreSQL keeps no file
/// in the data directory).
#[tokio::test]
async fn first_start_writes_one_private_admin_token() {
    let srv = spawn().await;
    let path = srv.data_dir().join("initial-admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(srv.admin.starts_with("ott_"));
    let (s, v) = srv
        .call(Method::GET, "/api/v1/whoami", Some(&srv.admin), None)
        .await;
    assert_eq!((s, v["role"].as_str()), (200, Some("admin")));
    // A second bootstrap (restart) creates nothing new.
    std::fs::remove_file(&path).unwrap();
    let state = otterd::open_state(otterd::config::Settings {
        data_dir: srv.data_dir(),
        database_url: crate::backends::database_setting_for(&srv.data_dir()),
        ..Default::default()
    })
    .await
    .unwrap();
    otterd::bootstrap_admin(&state).await.unwrap();
    assert!(!path.exists());
    // The token is stored hashed: the database file does not contain it.
    if !crate::backends::sqlite_only("the database file's bytes") {
        return;
    }
    let db = std::fs::read(srv.data_dir().join("otter.db")).unwrap();
    let wal = std::fs::read(srv.data_dir().join("otter.db-wal")).unwrap_or_default();
    let needle = srv.admin.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "token stored in clear"
        );
    }
}

#[tokio::test]
async fn management_routes_refuse_missing_bad_and_device_credentials() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, device_token) = srv.enroll("thermo", &secret, "aa:bb").await;
    let routes = [
        (Method::GET, "/api/v1/products"),
        (Method::POST, "/api/v1/products"),
        (Method::GET, "/api/v1/releases"),
        (Method::GET, "/api/v1/devices"),
        (Method::GET, "/api/v1/tokens"),
        (Method::POST, "/api/v1/tokens"),
        (Method::POST, "/api/v1/products/thermo/releases"),
        (Method::POST, "/api/v1/products/thermo/keys"),
        (Method::GET, "/api/v1/whoami"),
        (Method::PATCH, "/api/v1/products/thermo"),
        (Method::GET, "/api/v1/products/thermo/keys"),
        (Method::GET, "/api/v1/products/thermo/allowlist"),
        (Method::POST, "/api/v1/products/thermo/allowlist"),
        (Method::DELETE, "/api/v1/products/thermo/allowlist/aa:bb"),
        (Method::POST, "/api/v1/products/thermo/allow-reenroll"),
        (Method::GET, "/api/v1/devices/dev_x/history"),
        (Method::POST, "/api/v1/releases/rel_x/promote"),
    ];
    for (m, path) in routes {
        for token in [
            None,
            Some("ott_not-a-real-token"),
            Some("garbage"),
            Some(device_token.as_str()),
        ] {
            let (s, v) = srv.call(m.clone(), path, token, Some(json!({}))).await;
            assert_eq!(s, 401, "{m} {path} with {token:?}: {v}");
            assert_eq!(v["error"], "unauthorized");
        }
    }
    let (_, v) = srv
        .call(Method::GET, "/api/v1/whoami", Some(&device_token), None)
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("device credentials"),
        "{v}"
    );
}

#[tokio::test]
async fn roles_are_enforced() {
    let srv = spawn().await;
    let (key, _) = srv.product("thermo", Chip::Esp32C3).await;
    srv.product("other", Chip::Esp32C3).await;
    let viewer = srv.token("viewer", &[]).await;
    let publisher = srv.token("publisher", &["thermo"]).await;

    // Viewer: reads, never writes.
    assert_eq!(
        srv.call(Method::GET, "/api/v1/products", Some(&viewer), None)
            .await
            .0,
        200
    );
    assert_eq!(
        srv.call(Method::GET, "/api/v1/devices", Some(&viewer), None)
            .await
            .0,
        200
    );
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/products",
            Some(&viewer),
            Some(json!({"name": "x", "chip": "esp32"})),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));
    let (s, v) = srv
        .push(
            "thermo",
            "stable",
            &viewer,
            bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        srv.call(Method::GET, "/api/v1/tokens", Some(&viewer), None)
            .await
            .0,
        403
    );

    // Publisher: pushes to its product only, sees only its product, cannot manage.
    let (s, v) = srv
        .push(
            "thermo",
            "stable",
            &publisher,
            bundle(&key, "thermo", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = srv
        .push(
            "other",
            "stable",
            &publisher,
            bundle(&key, "other", Chip::Esp32C3, "1.0.0"),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("other"));
    let (_, v) = srv
        .call(Method::GET, "/api/v1/products", Some(&publisher), None)
        .await;
    assert_eq!(v["products"].as_array().unwrap().len(), 1);
    assert_eq!(
        srv.call(
            Method::GET,
            "/api/v1/releases?product=other",
            Some(&publisher),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        srv.call(Method::GET, "/api/v1/devices", Some(&publisher), None)
            .await
            .0,
        403
    );
    let (s, _) = srv
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&publisher),
            Some(json!({"name": "n", "role": "admin"})),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(srv.release_count().await, 1);
}

#[tokio::test]
async fn enrolment_bounds_are_for_admins_only() {
    let srv = spawn().await;
    srv.product("thermo", Chip::Esp32C3).await;
    let viewer = srv.token("viewer", &[]).await;
    let publisher = srv.token("publisher", &["thermo"]).await;
    let routes = [
        (
            Method::PATCH,
            "/api/v1/products/thermo",
            json!({"max_devices": 1}),
        ),
        (
            Method::GET,
            "/api/v1/products/thermo/allowlist",
            json!(null),
        ),
        (
            Method::POST,
            "/api/v1/products/thermo/allowlist",
            json!("hardware_id\naa\n"),
        ),
        (
            Method::DELETE,
            "/api/v1/products/thermo/allowlist/aa",
            json!(null),
        ),
        (
            Method::POST,
            "/api/v1/products/thermo/allow-reenroll",
            json!({"hardware_id": "aa"}),
        ),
    ];
    for (m, path, body) in routes {
        for token in [&viewer, &publisher] {
            let (s, v) = srv
                .call(m.clone(), path, Some(token), Some(body.clone()))
                .await;
            assert_eq!(
                (s, v["error"].as_str()),
                (403, Some("forbidden")),
                "{m} {path}: {v}"
            );
        }
    }
    let (_, p) = srv
        .call(
            Method::GET,
            "/api/v1/products/thermo",
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(
        p["max_devices"],
        serde_json::Value::Null,
        "nothing changed: {p}"
    );
    // Readers page through keys and history as they read the rest.
    let (s, _) = srv
        .call(
            Method::GET,
            "/api/v1/products/thermo/keys",
            Some(&publisher),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv
        .call(
            Method::GET,
            "/api/v1/devices/dev_x/history",
            Some(&publisher),
            None,
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn tokens_are_least_privilege_and_revocable() {
    let srv = spawn().await;
    srv.product("thermo", Chip::Esp32).await;
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&srv.admin),
            Some(json!({"name": "ci", "role": "publisher"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = srv
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&srv.admin),
            Some(json!({"name": "ci", "role": "publisher", "products": ["nope"]})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&srv.admin),
            Some(json!({"name": "ci", "role": "publisher", "products": ["thermo"]})),
        )
        .await;
    assert_eq!(s, 201);
    let token = v["token"].as_str().unwrap().to_string();
    let id = v["info"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        srv.call(Method::GET, "/api/v1/whoami", Some(&token), None)
            .await
            .0,
        200
    );
    let (s, _) = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = srv
        .call(Method::GET, "/api/v1/whoami", Some(&token), None)
        .await;
    assert_eq!(s, 401);
    assert!(v["message"].as_str().unwrap().contains("revoked"));
    // Listing never shows secrets.
    let (_, v) = srv
        .call(Method::GET, "/api/v1/tokens", Some(&srv.admin), None)
        .await;
    assert!(!v.to_string().contains(&token));
    assert!(!v.to_string().contains("ott_"));
}

#[tokio::test]
async fn bad_json_and_unknown_fields_get_clear_errors() {
    let srv = spawn().await;
    let r = srv
        .req(Method::POST, "/api/v1/products", Some(&srv.admin))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, v) = into_json(r).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_json")));
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/products",
            Some(&srv.admin),
            Some(json!({"name": "a", "chip": "esp32", "colour": "red"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("colour"), "{v}");
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/v1/products",
            Some(&srv.admin),
            Some(json!({"name": "a", "chip": "esp99"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("esp32c3"), "{v}");
    let (s, _) = srv
        .call(
            Method::POST,
            "/api/v1/products",
            Some(&srv.admin),
            Some(json!({"name": "../etc", "chip": "esp32"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        srv.call(Method::GET, "/api/v1/products", Some(&srv.admin), None)
            .await
            .1["products"],
        json!([])
    );
}

#[tokio::test]
async fn overload_answers_429_with_retry_after() {
    let srv = spawn_with(|s| s.max_in_flight = 1).await;
    let (_, _) = srv.product("thermo", Chip::Esp32C3).await;
    // Hold the only slot with an upload whose body never ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let hold = srv
        .req(
            Method::POST,
            "/api/v1/products/thermo/releases",
            Some(&srv.admin),
        )
        .body(body)
        .send();
    let hold = tokio::spawn(hold);
    tx.send(Ok(b"OTRB".to_vec())).await.unwrap();
    // Let the held request get inside the server before anything else competes for the slot.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut shed = None;
    for _ in 0..200 {
        let r = srv
            .req(Method::GET, "/api/v1/whoami", Some(&srv.admin))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            shed = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = shed.expect("a second request while the only slot is busy gets 429");
    assert_eq!(r.headers()["retry-after"], "5");
    let (_, v) = into_json(r).await;
    assert_eq!(v["error"], "overloaded");
    drop(tx);
    let _ = hold.await;
    // Health stays answerable under overload.
    assert_eq!(srv.call(Method::GET, "/healthz", None, None).await.0, 200);
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn arduino_route_takes_only_the_product_secret() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp8266).await;
    let (_, device_token) = srv.enroll("thermo", &secret, "aa:bb").await;
    let get = |auth: Option<String>| {
        let mut r = srv
            .req(Method::GET, "/arduino/v1/thermo", None)
            .header("x-ESP8266-STA-MAC", "18:FE:AA:AA:AA:AA")
            .header("x-ESP8266-mode", "sketch");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    // API and device tokens, as bearer or as the Basic password, are not the product secret.
    for token in [srv.admin.clone(), device_token.clone()] {
        for auth in [
            format!("Bearer {token}"),
            format!("Basic {}", b64(&format!("thermo:{token}"))),
        ] {
            let r = get(Some(auth)).await.unwrap();
            assert_eq!(r.status(), 401);
        }
    }
    assert_eq!(get(None).await.unwrap().status(), 401);
    let ok = get(Some(format!(
        "Basic {}",
        b64(&format!("any-user:{secret}"))
    )))
    .await
    .unwrap();
    assert_eq!(ok.status(), 304, "any user name with the secret");
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
