//! The audit log (issue 9): every management action and every refused attempt is recorded
//! with who, which credential, what, on which target, from where and how it ended; only admins
//! read it; nothing in the API changes it, and the database refuses to.

use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{spawn, TestServer};

/// Entries of `GET /api/v1/audit?{query}` as the admin, newest first.
async fn audit(s: &TestServer, query: &str) -> Vec<Value> {
    let (st, v) = s
        .call(
            Method::GET,
            &format!("/api/v1/audit?{query}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

/// The newest entry of `action`.
async fn last(s: &TestServer, action: &str) -> Value {
    audit(s, &format!("action={action}&limit=1"))
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {action} entry"))
}

/// The id of the token named `name`.
async fn token_id(s: &TestServer, name: &str) -> String {
    let (_, v) = s
        .call(Method::GET, "/api/v1/tokens", Some(&s.admin), None)
        .await;
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Checks who, credential, target, address and status of an entry.
fn check(e: &Value, actor: &str, token: &str, target: &str, status: u16) {
    assert_eq!(e["actor"], actor, "{e}");
    assert_eq!(e["token_id"], token, "{e}");
    assert_eq!(e["target"], target, "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["status"], status, "{e}");
}

#[tokio::test]
async fn each_kind_of_action_is_recorded_with_who_what_where_and_outcome() {
    let s = spawn().await;
    let admin = token_id(&s, "initial-admin").await;
    let (key, secret) = s.product("acme", Chip::Esp32).await;

    let e = last(&s, "product.create").await;
    check(&e, "initial-admin", &admin, "acme", 201);
    assert_eq!(e["role"], "admin");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["route"], "/api/v1/products");
    let secret_part = secret.trim_start_matches("ote_");
    assert!(!e.to_string().contains(secret_part), "no secret: {e}");
    check(
        &last(&s, "key.add").await,
        "initial-admin",
        &admin,
        "acme",
        201,
    );

    let (st, rel) = s.publish(&key, "acme", Chip::Esp32, "1.0.0").await;
    assert_eq!(st, 201, "{rel}");
    let release = rel["id"].as_str().unwrap();
    let e = last(&s, "release.push").await;
    check(&e, "initial-admin", &admin, release, 201);
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("product=acme") && detail.contains("version=1.0.0"),
        "{e}"
    );

    // A dry run checks and changes nothing: recorded only when refused.
    let dry_run = |token: &str| {
        s.req(
            Method::POST,
            "/api/v1/products/acme/releases?channel=stable&dry_run=true",
            Some(token),
        )
        .header("content-type", "application/octet-stream")
        .body(crate::harness::bundle(&key, "acme", Chip::Esp32, "1.0.1"))
        .send()
    };
    assert_eq!(dry_run(&s.admin).await.unwrap().status(), 200);
    assert!(audit(&s, "action=release.push_check").await.is_empty());
    let viewer = s.token("viewer", &[]).await;
    assert_eq!(dry_run(&viewer).await.unwrap().status(), 403);
    let e = last(&s, "release.push_check").await;
    assert_eq!(
        (&e["actor"], &e["status"]),
        (&json!("viewer-test"), &json!(403))
    );
    assert_eq!(
        last(&s, "release.push").await["target"],
        release,
        "no new push"
    );

    let (st, v) = s
        .call(
            Method::POST,
            &format!("/api/v1/releases/{release}/promote"),
            Some(&s.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let e = last(&s, "release.promote").await;
    check(&e, "initial-admin", &admin, release, 201);
    assert!(
        e["detail"].as_str().unwrap().contains("channel=beta"),
        "{e}"
    );

    let (device, _) = s.enroll("acme", &secret, "hw-1").await;
    let (st, v) = s
        .call(
            Method::POST,
            &format!("/api/v1/devices/{device}/tags"),
            Some(&s.admin),
            Some(json!({"tags": ["lab"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let e = last(&s, "device.tag").await;
    check(&e, "initial-admin", &admin, &device, 200);
    assert!(e["detail"].as_str().unwrap().contains("lab"), "{e}");
    let (st, v) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{device}"),
            Some(&s.admin),
            Some(json!({"channel": "beta"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    check(
        &last(&s, "device.update").await,
        "initial-admin",
        &admin,
        &device,
        200,
    );
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{device}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 204);
    check(
        &last(&s, "device.delete").await,
        "initial-admin",
        &admin,
        &device,
        204,
    );

    let (st, v) = s
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&s.admin),
            Some(json!({"name": "ci", "role": "publisher", "products": ["acme"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let ci = v["info"]["id"].as_str().unwrap().to_string();
    let ci_secret = v["token"].as_str().unwrap().to_string();
    let e = last(&s, "token.create").await;
    check(&e, "initial-admin", &admin, &ci, 201);
    assert!(
        e["detail"].as_str().unwrap().contains("role=publisher"),
        "{e}"
    );
    assert!(!e.to_string().contains(&ci_secret[4..]), "no token: {e}");

    // The publisher's own push is recorded under its name and credential.
    let (st, v) = s
        .push(
            "acme",
            "stable",
            &ci_secret,
            crate::harness::bundle(&key, "acme", Chip::Esp32, "1.1.0"),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let e = last(&s, "release.push").await;
    check(&e, "ci", &ci, v["id"].as_str().unwrap(), 201);
    assert_eq!(e["role"], "publisher");

    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{ci}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 204);
    check(
        &last(&s, "token.revoke").await,
        "initial-admin",
        &admin,
        &ci,
        204,
    );

    // A failed change is recorded with its status; reads that succeed are not recorded.
    let (st, _) = s
        .call(
            Method::DELETE,
            "/api/v1/tokens/tok_nosuch",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let e = last(&s, "token.revoke").await;
    check(&e, "initial-admin", &admin, "tok_nosuch", 404);
    assert!(e["detail"].as_str().unwrap().contains("refused"), "{e}");
    s.call(Method::GET, "/api/v1/products", Some(&s.admin), None)
        .await;
    assert!(audit(&s, "action=product.list").await.is_empty());

    // The first start's admin token was recorded as the system's action.
    let e = last(&s, "token.create&actor=system").await;
    assert_eq!(e["target"], admin.as_str(), "{e}");
    assert_eq!(e["status"], Value::Null, "{e}");
}

#[tokio::test]
async fn refused_attempts_are_recorded() {
    let s = spawn().await;
    s.product("acme", Chip::Esp32).await;
    let viewer = s.token("viewer", &[]).await;
    let viewer_id = token_id(&s, "viewer-test").await;

    // No credential at all.
    let (st, _) = s
        .call(Method::GET, "/api/v1/tokens", None, Some(json!({})))
        .await;
    assert_eq!(st, 401);
    let e = last(&s, "token.list").await;
    assert_eq!(e["actor"], "anonymous", "{e}");
    assert_eq!(e["token_id"], Value::Null, "{e}");
    assert_eq!(e["status"], 401, "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");

    // An unknown token: anonymous, and the token itself is nowhere in the log.
    let forged = "ott_forgedforgedforgedforgedforgedforged";
    let (st, _) = s
        .call(Method::DELETE, "/api/v1/devices/dev_x", Some(forged), None)
        .await;
    assert_eq!(st, 401);
    let e = last(&s, "device.delete").await;
    assert_eq!(e["actor"], "anonymous", "{e}");
    assert_eq!(e["target"], "dev_x", "{e}");
    assert!(!e.to_string().contains("forged"), "{e}");

    // A viewer trying to change something: 403 under its own name.
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/products/acme/enrollment-secret",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, 403);
    let e = last(&s, "product.rotate_secret").await;
    check(&e, "viewer-test", &viewer_id, "acme", 403);
    assert_eq!(e["role"], "viewer");
    assert!(e["detail"].as_str().unwrap().contains("forbidden"), "{e}");

    // A revoked token still names its owner.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{viewer_id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, _) = s
        .call(Method::GET, "/api/v1/devices", Some(&viewer), None)
        .await;
    assert_eq!(st, 401);
    let e = last(&s, "device.list").await;
    assert_eq!(e["actor"], "viewer-test", "{e}");
    assert_eq!(e["token_id"], viewer_id.as_str(), "{e}");
    assert_eq!(e["status"], 401, "{e}");
}

#[tokio::test]
async fn only_admins_read_the_audit_log() {
    let s = spawn().await;
    s.product("acme", Chip::Esp32).await;
    let viewer = s.token("viewer", &[]).await;
    let publisher = s.token("publisher", &["acme"]).await;
    for token in [&viewer, &publisher] {
        let (st, v) = s
            .call(Method::GET, "/api/v1/audit", Some(token), None)
            .await;
        assert_eq!(st, 403, "{v}");
    }
    let (st, _) = s.call(Method::GET, "/api/v1/audit", None, None).await;
    assert_eq!(st, 401);
    // Each refused read is itself recorded.
    let denied = audit(&s, "action=audit.list").await;
    assert_eq!(denied.len(), 3, "{denied:?}");
}

#[tokio::test]
async fn pages_run_newest_first_and_filters_narrow_them() {
    let s = spawn().await;
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        s.product(name, Chip::Esp32).await;
    }
    let viewer = s.token("viewer", &[]).await;
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&viewer),
            Some(json!({"name": "mine", "role": "admin"})),
        )
        .await;
    assert_eq!(st, 403);

    // All pages of two, in order, without repeats or gaps.
    let everything = audit(&s, "limit=1000").await;
    let ids: Vec<i64> = everything
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=2&cursor={c}"),
            None => "/api/v1/audit?limit=2".into(),
        };
        let (st, v) = s.call(Method::GET, &q, Some(&s.admin), None).await;
        assert_eq!(st, 200, "{v}");
        let page = v["entries"].as_array().unwrap();
        assert!(page.len() <= 2);
        paged.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, ids);

    let creates = audit(&s, "action=product.create").await;
    assert_eq!(creates.len(), 5);
    assert_eq!(creates[0]["target"], "p5");
    assert_eq!(audit(&s, "action=product.create&target=p2").await.len(), 1);
    let by_viewer = audit(&s, "actor=viewer-test").await;
    assert_eq!(by_viewer.len(), 1, "{by_viewer:?}");
    assert_eq!(by_viewer[0]["action"], "token.create");
    assert_eq!(by_viewer[0]["status"], 403);
    let now = otterd::now();
    assert_eq!(
        audit(&s, &format!("since={}", now + 3600)).await.len(),
        0,
        "nothing in the future"
    );
    assert_eq!(audit(&s, &format!("until={}", now - 3600)).await.len(), 0);
    let window = audit(&s, &format!("since={}&until={}", now - 3600, now + 3600)).await;
    assert_eq!(
        window.len(),
        everything.len(),
        "the reads above were not recorded"
    );
    assert_eq!(
        audit(&s, "since=2000-01-01T00:00:00Z&action=product.create")
            .await
            .len(),
        5
    );

    for bad in [
        "since=yesterday",
        "until=12:00",
        "cursor=nonsense",
        "limit=0",
        "actor=",
        "colour=red",
    ] {
        let (st, v) = s
            .call(
                Method::GET,
                &format!("/api/v1/audit?{bad}"),
                Some(&s.admin),
                None,
            )
            .await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
}

#[tokio::test]
async fn no_route_alters_the_log_and_the_database_refuses_to() {
    let s = spawn().await;
    s.product("acme", Chip::Esp32).await;
    let before = audit(&s, "limit=1000").await;
    assert!(!before.is_empty());
    let first = before.last().unwrap()["id"].as_i64().unwrap();
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        for (path, want) in [
            ("/api/v1/audit".to_string(), 405),
            (format!("/api/v1/audit/{first}"), 404),
        ] {
            let (st, v) = s
                .call(
                    method.clone(),
                    &path,
                    Some(&s.admin),
                    Some(json!({"actor": "x"})),
                )
                .await;
            assert_eq!(st, want, "{method} {path}: {v}");
        }
    }
    let after = audit(&s, "limit=1000").await;
    assert_eq!(after, before, "no entry changed, none added");

    // Below the API: the schema refuses UPDATE and DELETE on the table.
    for sql in [
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ] {
        let err = crate::backends::execute_raw(&s.data_dir(), sql)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(audit(&s, "limit=1000").await, before);
}

#[tokio::test]
async fn every_management_route_has_an_action_name() {
    // The table covers every management route of the OpenAPI document ...
    let doc: Value = serde_json::from_str(&otterd::openapi::document_json()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            assert!(
                otterd::audit::action_for(&method, path).is_some(),
                "{method} {path} has no action name in otterd::audit::ACTIONS"
            );
            routes.push((method, path.clone()));
        }
    }
    // ... and names no route that is gone.
    for a in otterd::audit::ACTIONS {
        assert!(
            routes.iter().any(|(m, p)| m == a.method && p == a.route),
            "{} {} is in otterd::audit::ACTIONS but not a route",
            a.method,
            a.route
        );
    }

    // ... and the running router records each of them by that name, even unauthenticated.
    let s = spawn().await;
    for (method, path) in &routes {
        let url = path
            .replace("{product}", "acme")
            .replace("{id}", "x1")
            .replace("{key_id}", "k1")
            .replace("{hardware_id}", "hw1")
            .replace("{name}", "g1");
        let (st, _) = s
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &url,
                None,
                None,
            )
            .await;
        assert_eq!(st, 401, "{method} {url}");
    }
    let entries = audit(&s, "actor=anonymous&limit=1000").await;
    assert_eq!(entries.len(), routes.len());
    for e in &entries {
        assert_ne!(e["action"], "unknown", "{e}");
        let a =
            otterd::audit::action_for(e["method"].as_str().unwrap(), e["route"].as_str().unwrap())
                .unwrap();
        assert_eq!(e["action"], a.name);
    }
}

#[tokio::test]
async fn offline_admin_and_system_actions_are_recorded() {
    let s = spawn().await;
    let settings = otterd::config::Settings {
        data_dir: s.data_dir(),
        database_url: crate::backends::database_setting_for(&s.data_dir()),
        ..Default::default()
    };
    otterd::admin::create_admin_token(&settings, "rescue")
        .await
        .unwrap();
    let e = last(&s, "token.create").await;
    assert_eq!(e["actor"], "otterd admin (offline)", "{e}");
    assert_eq!(e["token_id"], Value::Null, "{e}");
    assert_eq!(e["status"], Value::Null, "{e}");
    assert_eq!(e["target"], token_id(&s, "rescue").await.as_str());

    let db = otterd::db::connect::open(&settings).await.unwrap();
    otterd::audit::record(
        db.as_ref(),
        otterd::db::AuditRow::system("rollout.pause")
            .target("rol_1")
            .detail("failures 3 of 10 passed the threshold of 20%"),
    )
    .await
    .unwrap();
    let e = last(&s, "rollout.pause").await;
    assert_eq!(e["actor"], "system", "{e}");
    assert_eq!(e["target"], "rol_1", "{e}");
}

#[tokio::test]
async fn refused_unauthenticated_attempts_are_recorded_within_a_budget() {
    let s = crate::harness::spawn_with(|c| c.audit_unauthenticated_per_minute = 3).await;
    let start = otterd::now() / 60;
    for _ in 0..10 {
        let (st, _) = s.call(Method::GET, "/api/v1/tokens", None, None).await;
        assert_eq!(st, 401);
    }
    let minutes = otterd::now() / 60 - start + 1;
    let recorded = audit(&s, "actor=anonymous").await.len() as i64;
    if minutes == 1 {
        assert_eq!(recorded, 3);
    } else {
        assert!((3..=3 * minutes).contains(&recorded), "{recorded}");
    }
    // Refusals of known callers (403) are not bounded by it.
    let viewer = s.token("viewer", &[]).await;
    for _ in 0..5 {
        let (st, _) = s
            .call(Method::GET, "/api/v1/tokens", Some(&viewer), None)
            .await;
        assert_eq!(st, 403);
    }
    assert_eq!(audit(&s, "actor=viewer-test").await.len(), 5);
}

#[tokio::test]
async fn a_forwarded_client_address_is_recorded_only_from_a_trusted_proxy() {
    let send = |s: &TestServer| {
        s.req(Method::POST, "/api/v1/products", Some(&s.admin))
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.9")
            .json(&json!({"name": "acme", "chip": "esp32"}))
            .send()
    };
    let untrusting = spawn().await;
    assert_eq!(send(&untrusting).await.unwrap().status(), 201);
    let e = last(&untrusting, "product.create").await;
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(
        e["forwarded_for"],
        Value::Null,
        "a client can forge it: {e}"
    );

    let behind_proxy = crate::harness::spawn_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    assert_eq!(send(&behind_proxy).await.unwrap().status(), 201);
    let e = last(&behind_proxy, "product.create").await;
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!(e["forwarded_for"], "203.0.113.9", "{e}");
}
