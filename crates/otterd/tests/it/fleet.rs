//! Devices and targeting (issue 9): what devices report, tags, groups, and filtered pages of
//! devices, against a real server.

use std::collections::BTreeSet;

use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const SHA: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

/// A fleet: product `thermo` with enrolled devices `hw0..hwN`, product `lamp` with one device.
struct Fleet {
    srv: TestServer,
    /// (id, token) by hardware id index.
    devices: Vec<(String, String)>,
    lamp_device: String,
    key: otter_core::keys::PrivateKey,
}

async fn fleet_on(srv: TestServer, n: usize) -> Fleet {
    let (key, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let mut devices = Vec::new();
    for i in 0..n {
        devices.push(srv.enroll("thermo", &secret, &format!("hw{i:02}")).await);
    }
    let (_, lamp_secret) = srv.product("lamp", Chip::Esp32C3).await;
    let (lamp_device, _) = srv.enroll("lamp", &lamp_secret, "lamp0").await;
    Fleet {
        srv,
        devices,
        lamp_device,
        key,
    }
}

async fn fleet(n: usize) -> Fleet {
    fleet_on(spawn().await, n).await
}

impl Fleet {
    fn id(&self, i: usize) -> &str {
        &self.devices[i].0
    }

    async fn checkin(&self, i: usize, version: &str, chip: &str) {
        let (s, v) = self
            .srv
            .call(
                Method::POST,
                "/device/v1/checkin",
                Some(&self.devices[i].1),
                Some(json!({"version": version, "security_counter": 1, "image_sha256": SHA, "chip": chip})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    async fn report(&self, i: usize, body: Value) {
        let (s, v) = self
            .srv
            .call(
                Method::POST,
                "/device/v1/status",
                Some(&self.devices[i].1),
                Some(body),
            )
            .await;
        assert_eq!(s, 204, "{v}");
    }

    async fn tag(&self, token: &str, i: usize, tags: &[&str]) -> (u16, Value) {
        self.srv
            .call(
                Method::POST,
                &format!("/api/v1/devices/{}/tags", self.id(i)),
                Some(token),
                Some(json!({ "tags": tags })),
            )
            .await
    }

    async fn channel(&self, i: usize, channel: &str) {
        let (s, v) = self
            .srv
            .call(
                Method::PATCH,
                &format!("/api/v1/devices/{}", self.id(i)),
                Some(&self.srv.admin),
                Some(json!({ "channel": channel })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// Hardware ids of every device a query lists, following pages of `limit`; asserts that no
    /// device repeats.
    async fn list(&self, query: &str, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/api/v1/devices?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (s, v) = self
                .srv
                .call(Method::GET, &path, Some(&self.srv.admin), None)
                .await;
            assert_eq!(s, 200, "{query}: {v}");
            let page = v["devices"].as_array().unwrap();
            assert!(page.len() <= limit);
            out.extend(
                page.iter()
                    .map(|d| d["hardware_id"].as_str().unwrap().to_string()),
            );
            match v["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let unique: BTreeSet<_> = out.iter().collect();
        assert_eq!(
            unique.len(),
            out.len(),
            "{query}: a device repeats: {out:?}"
        );
        out
    }

    async fn hws(&self, query: &str) -> BTreeSet<String> {
        self.list(query, 100).await.into_iter().collect()
    }

    async fn error(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.srv.call(method, path, Some(token), body).await;
        assert!((400..500).contains(&s), "{path}: {s} {v}");
        v
    }
}

fn set(hws: &[&str]) -> BTreeSet<String> {
    hws.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn devices_are_filtered_by_each_field_and_by_all_combined() {
    let f = fleet(6).await;
    let admin = f.srv.admin.clone();
    f.checkin(0, "1.2.0", "esp32c3").await;
    f.checkin(1, "1.10.0", "esp32c3").await;
    f.checkin(2, "2.0.0", "esp32s3").await;
    f.checkin(3, "1.2.0", "esp32s3").await;
    // hw04 and hw05 never checked in.
    f.tag(&admin, 0, &["lab", "site:berlin"]).await;
    f.tag(&admin, 1, &["lab"]).await;
    f.tag(&admin, 2, &["site:berlin"]).await;
    f.channel(1, "beta").await;
    f.channel(2, "beta").await;
    f.report(1, json!({"state": "failure", "reason": "flash write"}))
        .await;
    f.report(2, json!({"state": "success"})).await;

    assert_eq!(f.hws("product=thermo").await.len(), 6);
    assert_eq!(f.hws("").await.len(), 7, "every product");
    assert_eq!(f.hws("tag=lab").await, set(&["hw00", "hw01"]));
    assert_eq!(f.hws("tag=lab,site:berlin").await, set(&["hw00"]));
    assert_eq!(f.hws("tag=lab&tag=site:berlin").await, set(&["hw00"]));
    assert_eq!(f.hws("version=1.2.0").await, set(&["hw00", "hw03"]));
    assert_eq!(f.hws("state=failure").await, set(&["hw01"]));
    assert_eq!(f.hws("channel=beta").await, set(&["hw01", "hw02"]));
    assert_eq!(f.hws("filter=chip%3Desp32s3").await, set(&["hw02", "hw03"]));
    // Version order is Otter's (1.10.0 > 1.2.0), evaluated in the server.
    assert_eq!(
        f.hws("product=thermo&filter=version%3C1.10.0").await,
        set(&["hw00", "hw03"])
    );
    assert_eq!(
        f.hws("filter=version%3E%3D1.10.0").await,
        set(&["hw01", "hw02"])
    );
    assert_eq!(
        f.hws("product=thermo&filter=seen%3E1h").await,
        set(&["hw04", "hw05"]),
        "never seen counts as long ago"
    );
    assert_eq!(f.hws("product=thermo&filter=seen%3C1h").await.len(), 4);
    assert_eq!(
        f.hws("filter=tag!%3Dlab,chip%3Desp32s3").await,
        set(&["hw02", "hw03"])
    );
    assert_eq!(
        f.hws(&format!("filter=sha256%3D{}", SHA.to_uppercase()))
            .await
            .len(),
        4
    );
    assert_eq!(f.hws("filter=hardware_id%3Dhw03").await, set(&["hw03"]));
    assert_eq!(f.hws("product=thermo&filter=counter%3E%3D1").await.len(), 4);
    assert_eq!(
        f.hws("product=thermo&filter=counter!%3D1").await,
        set(&["hw04", "hw05"]),
        "an unreported counter differs"
    );
    assert_eq!(
        f.hws("product=thermo&filter=chip!%3Desp32c3").await,
        set(&["hw02", "hw03", "hw04", "hw05"])
    );
    // Everything given must hold.
    assert_eq!(
        f.hws("product=thermo&tag=site:berlin&channel=beta&state=success&filter=version%3E1.5")
            .await,
        set(&["hw02"])
    );
    assert!(f.hws("product=lamp&tag=lab").await.is_empty());

    // The views show tags and the last outcome.
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?tag=lab&state=failure",
            Some(&admin),
            None,
        )
        .await;
    let d = &v["devices"][0];
    assert_eq!(d["tags"], json!(["lab"]));
    assert_eq!(
        (d["last_state"].as_str(), d["last_reason"].as_str()),
        (Some("failure"), Some("flash write"))
    );
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", f.id(0)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(v["device"]["tags"], json!(["lab", "site:berlin"]));
    assert_eq!(v["device"]["chip"], "esp32c3");
    assert_eq!(v["device"]["security_counter"], 1);
    assert_eq!(v["device"]["image_sha256"], SHA);
}

#[tokio::test]
async fn the_last_outcome_names_its_release_and_reason() {
    let f = fleet(1).await;
    let (s, rel) = f
        .srv
        .publish(&f.key, "thermo", Chip::Esp32C3, "2.0.0")
        .await;
    assert_eq!(s, 201, "{rel}");
    let rid = rel["id"].as_str().unwrap();
    f.report(0, json!({"release_id": rid, "state": "downloading"}))
        .await;
    f.report(
        0,
        json!({"release_id": rid, "state": "rolled_back", "reason": "watchdog"}),
    )
    .await;
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", f.id(0)),
            Some(&f.srv.admin),
            None,
        )
        .await;
    let d = &v["device"];
    assert_eq!(
        (
            d["last_state"].as_str(),
            d["last_reason"].as_str(),
            d["last_release_id"].as_str()
        ),
        (Some("rolled_back"), Some("watchdog"), Some(rid))
    );
    assert_eq!(f.hws("state=rolled_back").await, set(&["hw00"]));
}

#[tokio::test]
async fn pages_of_filtered_devices_have_no_repeats_or_gaps() {
    let f = fleet(23).await;
    let admin = f.srv.admin.clone();
    let mut tagged = BTreeSet::new();
    let mut old = BTreeSet::new();
    for i in 0..23 {
        if i % 3 != 0 {
            f.tag(&admin, i, &["even-ish"]).await;
            tagged.insert(format!("hw{i:02}"));
        }
        let version = if i % 2 == 0 { "1.9.0" } else { "1.10.0" };
        f.checkin(i, version, "esp32c3").await;
        if version == "1.9.0" && i % 3 != 0 {
            old.insert(format!("hw{i:02}"));
        }
    }
    let one_page = f.list("tag=even-ish", 100).await;
    for limit in [1, 2, 5, 100] {
        let got = f.list("tag=even-ish", limit).await;
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            tagged,
            "limit {limit}"
        );
        assert_eq!(got, one_page, "pages keep the list's order");
        // A term evaluated in the server (version order) pages the same way.
        let got = f.list("tag=even-ish&filter=version%3C1.10", limit).await;
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            old,
            "limit {limit}"
        );
    }
    // A full page says where to continue; the last page does not.
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?tag=even-ish&limit=14",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 14);
    assert!(v["next"].is_string());
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?tag=even-ish&limit=15",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(v["devices"].as_array().unwrap().len(), 15);
    assert!(v["next"].is_null(), "all 15 fit: {v}");
    // A cursor of another list is refused.
    let v = f
        .error(
            &admin,
            Method::GET,
            "/api/v1/devices?cursor=Z3JvdXBzH3g",
            None,
        )
        .await;
    assert_eq!(v["error"], "bad_cursor");
}

#[tokio::test]
async fn a_page_that_examined_its_budget_names_where_to_continue() {
    let srv = spawn_with(|s| s.device_filter_scan_max = 4).await;
    let f = fleet_on(srv, 10).await;
    for i in 0..10 {
        f.checkin(i, if i == 9 { "0.1" } else { "5.0" }, "esp32c3")
            .await;
    }
    // Only hw09 matches; each page examines at most 4 of the 10 devices, so the first page is
    // short (at most hw09) but names the next one, and following them finds hw09 once.
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?product=thermo&filter=version%3C1.0&limit=10",
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert!(v["devices"].as_array().unwrap().len() <= 1, "{v}");
    assert!(v["next"].is_string(), "{v}");
    assert_eq!(
        f.list("product=thermo&filter=version%3C1.0", 10).await,
        vec!["hw09".to_string()]
    );
}

#[tokio::test]
async fn tags_are_added_and_removed_idempotently_within_the_limit() {
    let srv = spawn_with(|s| s.max_tags_per_device = 3).await;
    let f = fleet_on(srv, 1).await;
    let admin = f.srv.admin.clone();
    let path = format!("/api/v1/devices/{}/tags", f.id(0));
    let (s, v) = f.tag(&admin, 0, &["b", "a", "a"]).await;
    assert_eq!((s, &v["tags"]), (200, &json!(["a", "b"])));
    let (s, v) = f.tag(&admin, 0, &["a", "b"]).await;
    assert_eq!(
        (s, &v["tags"]),
        (200, &json!(["a", "b"])),
        "again: no change"
    );
    let (s, v) = f.tag(&admin, 0, &["c", "d"]).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("max_tags_per_device"));
    let (s, v) = f.tag(&admin, 0, &["c"]).await;
    assert_eq!((s, &v["tags"]), (200, &json!(["a", "b", "c"])));
    for _ in 0..2 {
        let (s, v) = f
            .srv
            .call(
                Method::DELETE,
                &path,
                Some(&admin),
                Some(json!({"tags": ["b", "zz"]})),
            )
            .await;
        assert_eq!((s, &v["tags"]), (200, &json!(["a", "c"])));
    }
    // Bad tags are refused and change nothing.
    for bad in [
        json!({"tags": ["Lab"]}),
        json!({"tags": ["ok", "a b"]}),
        json!({"tags": []}),
        json!({"tags": ["x"], "more": 1}),
        json!({"tags": [&"x".repeat(65)]}),
    ] {
        let (s, v) = f
            .srv
            .call(Method::POST, &path, Some(&admin), Some(bad.clone()))
            .await;
        assert!(s == 400 || s == 422, "{bad}: {s} {v}");
    }
    let (s, _) = f
        .srv
        .call(
            Method::POST,
            "/api/v1/devices/dev_nope/tags",
            Some(&admin),
            Some(json!({"tags": ["x"]})),
        )
        .await;
    assert_eq!(s, 404);
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", f.id(0)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(v["device"]["tags"], json!(["a", "c"]));
}

#[tokio::test]
async fn static_and_filter_groups_select_their_devices() {
    let f = fleet(4).await;
    let admin = f.srv.admin.clone();
    f.tag(&admin, 1, &["lab"]).await;
    f.tag(&admin, 2, &["lab"]).await;
    f.checkin(1, "1.0", "esp32c3").await;
    f.checkin(2, "3.0", "esp32c3").await;
    let groups = "/api/v1/products/thermo/groups";
    let (s, v) = f
        .srv
        .call(
            Method::POST,
            groups,
            Some(&admin),
            Some(json!({"name": "canary", "devices": [f.id(0), f.id(3), f.id(0)]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["kind"].as_str(), v["members"].as_i64()),
        (Some("static"), Some(2))
    );
    let (s, v) = f
        .srv
        .call(
            Method::POST,
            groups,
            Some(&admin),
            Some(json!({"name": "old-lab", "filter": "tag=lab, version<2"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["kind"].as_str(), v["filter"].as_str()),
        (Some("filter"), Some("tag=lab,version<2"))
    );

    assert_eq!(
        f.hws("product=thermo&group=canary").await,
        set(&["hw00", "hw03"])
    );
    assert_eq!(f.hws("product=thermo&group=old-lab").await, set(&["hw01"]));
    assert_eq!(f.hws("product=thermo&group=canary&tag=lab").await, set(&[]));
    // A filter group follows the devices: hw02 goes back to an old version.
    f.checkin(2, "1.5", "esp32c3").await;
    assert_eq!(
        f.hws("product=thermo&group=old-lab").await,
        set(&["hw01", "hw02"])
    );

    // Static members are added and removed (idempotently).
    let members = format!("{groups}/canary/members");
    for _ in 0..2 {
        let (s, v) = f
            .srv
            .call(
                Method::POST,
                &members,
                Some(&admin),
                Some(json!({"devices": [f.id(1)]})),
            )
            .await;
        assert_eq!((s, v["members"].as_i64()), (200, Some(3)), "{v}");
    }
    let (s, v) = f
        .srv
        .call(
            Method::DELETE,
            &members,
            Some(&admin),
            Some(json!({"devices": [f.id(0)]})),
        )
        .await;
    assert_eq!((s, v["members"].as_i64()), (200, Some(2)), "{v}");
    assert_eq!(
        f.hws("product=thermo&group=canary").await,
        set(&["hw01", "hw03"])
    );

    // List (paged by name), show, delete.
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            &format!("{groups}?limit=1"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(v["groups"][0]["name"], "canary");
    let (_, v2) = f
        .srv
        .call(
            Method::GET,
            &format!("{groups}?limit=1&cursor={}", v["next"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(v2["groups"][0]["name"], "old-lab");
    assert!(v2["next"].is_null());
    let (s, v) = f
        .srv
        .call(
            Method::GET,
            &format!("{groups}/old-lab"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, v["filter"].as_str()), (200, Some("tag=lab,version<2")));
    let (s, _) = f
        .srv
        .call(
            Method::DELETE,
            &format!("{groups}/canary"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = f
        .srv
        .call(Method::GET, &format!("{groups}/canary"), Some(&admin), None)
        .await;
    assert_eq!(s, 404);
    let v = f
        .error(
            &admin,
            Method::GET,
            "/api/v1/devices?product=thermo&group=canary",
            None,
        )
        .await;
    assert_eq!(v["error"], "not_found");
    // Deleting a group leaves its devices.
    assert_eq!(f.hws("product=thermo").await.len(), 4);
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let f = fleet(2).await;
    let admin = f.srv.admin.clone();
    let groups = "/api/v1/products/thermo/groups";
    let unknown = f.id(0).to_string() + "x";
    for (body, says) in [
        (
            json!({"name": "g", "filter": "colour=red"}),
            "unknown field",
        ),
        (
            json!({"name": "g", "filter": "version"}),
            "expected FIELD=VALUE",
        ),
        (json!({"name": "g", "filter": ""}), "at least one term"),
        (
            json!({"name": "g", "devices": [f.id(0), unknown]}),
            "no device",
        ),
        (
            json!({"name": "g", "devices": [f.id(0), f.lamp_device]}),
            "belongs to product",
        ),
        (
            json!({"name": "g", "devices": [], "filter": "tag=x"}),
            "not both",
        ),
        (json!({"name": "G!", "devices": []}), "group name"),
    ] {
        let v = f
            .error(&admin, Method::POST, groups, Some(body.clone()))
            .await;
        assert!(v["message"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let (_, v) = f.srv.call(Method::GET, groups, Some(&admin), None).await;
    assert_eq!(v["groups"], json!([]), "nothing was created");

    let (s, _) = f
        .srv
        .call(
            Method::POST,
            groups,
            Some(&admin),
            Some(json!({"name": "g", "devices": [f.id(0)]})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = f
        .srv
        .call(
            Method::POST,
            groups,
            Some(&admin),
            Some(json!({"name": "g", "filter": "tag=x"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let v = f
        .error(
            &admin,
            Method::POST,
            &format!("{groups}/g/members"),
            Some(json!({"devices": [f.id(1), f.lamp_device]})),
        )
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("belongs to product"),
        "{v}"
    );
    let (_, v) = f
        .srv
        .call(Method::GET, &format!("{groups}/g"), Some(&admin), None)
        .await;
    assert_eq!(
        v["members"], 1,
        "the valid device of the refused request was not added"
    );
    f.srv
        .call(
            Method::POST,
            groups,
            Some(&admin),
            Some(json!({"name": "f", "filter": "tag=x"})),
        )
        .await;
    let (s, _) = f
        .srv
        .call(
            Method::POST,
            &format!("{groups}/f/members"),
            Some(&admin),
            Some(json!({"devices": [f.id(0)]})),
        )
        .await;
    assert_eq!(s, 409, "a filter group has no static members");

    // Queries.
    for (q, says) in [
        ("filter=colour%3Dred", "unknown field"),
        ("tag=Bad", "tag"),
        ("colour=red", "unknown query parameter"),
        ("group=g", "give `product`"),
        ("version=1,2", "one value"),
        ("state=", "1 to 128"),
        ("product=thermo&product=lamp", "twice"),
        ("limit=0", "limit"),
    ] {
        let v = f
            .error(&admin, Method::GET, &format!("/api/v1/devices?{q}"), None)
            .await;
        assert!(v["message"].as_str().unwrap().contains(says), "{q}: {v}");
    }
    let (s, _) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?product=nope",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn viewers_read_and_admins_and_the_products_publishers_write() {
    let f = fleet(1).await;
    let viewer = f.srv.token("viewer", &[]).await;
    let thermo_pub = f.srv.token("publisher", &["thermo"]).await;
    let lamp_pub = f.srv.token("publisher", &["lamp"]).await;
    let groups = "/api/v1/products/thermo/groups";
    let tags = format!("/api/v1/devices/{}/tags", f.id(0));

    // Viewers change nothing.
    let (s, _) = f.tag(&viewer, 0, &["x"]).await;
    assert_eq!(s, 403);
    for (m, p, body) in [
        (Method::DELETE, tags.as_str(), json!({"tags": ["x"]})),
        (
            Method::POST,
            groups,
            json!({"name": "g", "filter": "tag=x"}),
        ),
    ] {
        let (s, _) = f.srv.call(m, p, Some(&viewer), Some(body)).await;
        assert_eq!(s, 403);
    }
    // A publisher of another product neither.
    let (s, _) = f.tag(&lamp_pub, 0, &["x"]).await;
    assert_eq!(s, 403);
    let (s, _) = f
        .srv
        .call(
            Method::POST,
            groups,
            Some(&lamp_pub),
            Some(json!({"name": "g", "filter": "tag=x"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = f.srv.call(Method::GET, groups, Some(&lamp_pub), None).await;
    assert_eq!(s, 403);
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", f.id(0)),
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert_eq!(v["device"]["tags"], json!([]), "nothing changed");

    // The product's publisher tags and manages groups, and lists its product's devices.
    let (s, _) = f.tag(&thermo_pub, 0, &["x"]).await;
    assert_eq!(s, 200);
    let (s, _) = f
        .srv
        .call(
            Method::POST,
            groups,
            Some(&thermo_pub),
            Some(json!({"name": "g", "filter": "tag=x"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?product=thermo&group=g",
            Some(&thermo_pub),
            None,
        )
        .await;
    assert_eq!((s, v["devices"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, _) = f
        .srv
        .call(
            Method::GET,
            "/api/v1/devices?product=lamp",
            Some(&thermo_pub),
            None,
        )
        .await;
    assert_eq!(s, 403);
    // Viewers read everything.
    for p in [
        groups.to_string(),
        format!("{groups}/g"),
        "/api/v1/devices?tag=x".into(),
    ] {
        let (s, _) = f.srv.call(Method::GET, &p, Some(&viewer), None).await;
        assert_eq!(s, 200, "{p}");
    }
    let (s, _) = f
        .srv
        .call(Method::DELETE, &format!("{groups}/g"), Some(&viewer), None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = f
        .srv
        .call(
            Method::DELETE,
            &format!("{groups}/g"),
            Some(&thermo_pub),
            None,
        )
        .await;
    assert_eq!(s, 204);
}

/// What the rollouts call: static membership, or the filter over the device's facts.
#[tokio::test]
async fn device_in_group_answers_for_static_and_filter_groups() {
    use otterd::db::fleet::GroupRow;
    use otterd::services::fleet::{create_group, device_in_group, GroupSpec};

    let dir = tempfile::TempDir::new().unwrap();
    let store = crate::backends::open_db(dir.path()).await;
    let db: &dyn otterd::db::Database = store.as_ref();
    let product = seed_product(db, "thermo").await;
    let other = seed_product(db, "lamp").await;
    let a = seed_device(db, &product, "a").await;
    let b = seed_device(db, &product, "b").await;
    let c = seed_device(db, &other, "c").await;
    db.tag_device(&a.id, &["lab".to_string()]).await.unwrap();
    let fixed = create_group(
        db,
        &product,
        "fixed",
        GroupSpec::Static(vec![a.id.clone()]),
        "t",
        1,
    )
    .await
    .unwrap();
    let lab = create_group(
        db,
        &product,
        "lab",
        GroupSpec::Filter("tag=lab".into()),
        "t",
        1,
    )
    .await
    .unwrap();
    let lab_tags = db.device_tags(&a.id).await.unwrap();
    let in_group = |g: &GroupRow, d: &otterd::db::DeviceRow, tags: Vec<String>| {
        let (g, d) = (g.clone(), d.clone());
        let db: &dyn otterd::db::Database = db;
        async move { device_in_group(db, &g, &d, &tags, 10).await.unwrap() }
    };
    assert!(in_group(&fixed, &a, vec![]).await);
    assert!(!in_group(&fixed, &b, vec![]).await);
    assert!(in_group(&lab, &a, lab_tags.clone()).await);
    assert!(!in_group(&lab, &b, vec![]).await);
    assert!(
        !in_group(&lab, &c, lab_tags).await,
        "another product's device"
    );
    let _ = db.ping().await;
}

async fn seed_product(db: &dyn otterd::db::Database, name: &str) -> otterd::db::ProductRow {
    db.create_product(&otterd::db::ProductRow {
        id: 0,
        name: name.into(),
        chip: otter_core::Chip::Esp32C3,
        description: String::new(),
        enrollment_secret_hash: format!("secret-{name}"),
        created_at: 1,
        max_devices: None,
        enrollments_per_minute: None,
        allowlist_required: false,
    })
    .await
    .unwrap()
}

async fn seed_device(
    db: &dyn otterd::db::Database,
    p: &otterd::db::ProductRow,
    hw: &str,
) -> otterd::db::DeviceRow {
    let d = otterd::db::DeviceRow {
        id: format!("dev_{}_{hw}", p.name),
        product_id: p.id,
        product: p.name.clone(),
        hardware_id: hw.into(),
        channel: "stable".into(),
        token_hash: format!("tok-{}-{hw}", p.name),
        enrollment_nonce_hash: None,
        chip: None,
        version: None,
        security_counter: None,
        image_sha256: None,
        partition_size: None,
        last_state: None,
        enrolled_at: 1,
        last_seen_at: None,
    };
    db.insert_device(&d).await.unwrap();
    db.get_device(&d.id).await.unwrap()
}

#[tokio::test]
async fn concurrent_tagging_never_passes_the_limit() {
    let srv = spawn_with(|s| s.max_tags_per_device = 3).await;
    let f = fleet_on(srv, 1).await;
    let path = format!("/api/v1/devices/{}/tags", f.id(0));
    let calls = (0..10).map(|i| {
        f.srv.call(
            Method::POST,
            &path,
            Some(&f.srv.admin),
            Some(json!({"tags": [format!("t{i}")]})),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{answers:?}"
    );
    assert_eq!(ok, 3, "{answers:?}");
    let (_, v) = f
        .srv
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}", f.id(0)),
            Some(&f.srv.admin),
            None,
        )
        .await;
    assert_eq!(v["device"]["tags"].as_array().unwrap().len(), 3);
}

/// A list starts from a rare tag's devices, a small group's, or walks every device in order;
/// all find the same devices in the same order, page by page.
#[tokio::test]
async fn both_ways_of_finding_tagged_devices_agree() {
    use otterd::db::fleet::DeviceSelection;

    let dir = tempfile::TempDir::new().unwrap();
    let store = crate::backends::open_db(dir.path()).await;
    let db: &dyn otterd::db::Database = store.as_ref();
    let product = seed_product(db, "thermo").await;
    let other = seed_product(db, "lamp").await;
    for i in 0..30 {
        let d = seed_device(db, &product, &format!("hw{i:02}")).await;
        if i % 3 == 0 {
            db.tag_device(&d.id, &["lab".to_string()]).await.unwrap();
        }
        if i % 2 == 0 {
            db.tag_device(&d.id, &["eu".to_string()]).await.unwrap();
        }
    }
    let foreign = seed_device(db, &other, "x").await;
    db.tag_device(&foreign.id, &["lab".to_string()])
        .await
        .unwrap();
    let filter: otter_core::fleet::DeviceFilter = "tag=lab,tag=eu".parse().unwrap();
    // A static group of every device of the product but hw01.
    let all = db.page_devices(Some(product.id), None, 100).await.unwrap();
    let members: Vec<String> = all
        .iter()
        .filter(|d| d.hardware_id != "hw01")
        .map(|d| d.id.clone())
        .collect();
    let g = otterd::services::fleet::create_group(
        db,
        &product,
        "most",
        otterd::services::fleet::GroupSpec::Static(members),
        "t",
        1,
    )
    .await
    .unwrap();
    let mut pages = Vec::new();
    for (drive_tag, drive_group) in [
        (None, None),
        (Some("lab".to_string()), None),
        (Some("eu".to_string()), None),
        (None, Some(g.id.clone())),
    ] {
        let sel = DeviceSelection {
            product_id: Some(product.id),
            terms: filter.terms.clone(),
            static_groups: vec![g.id.clone()],
            drive_tag,
            drive_group,
            ..Default::default()
        };
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = db
                .page_selected_devices(&sel, after.clone(), 2)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|d| (d.enrolled_at, d.id.clone()));
            ids.extend(page.into_iter().map(|d| d.hardware_id));
        }
        pages.push(ids);
    }
    assert_eq!(pages[0], ["hw00", "hw06", "hw12", "hw18", "hw24"]);
    for p in &pages[1..] {
        assert_eq!(p, &pages[0]);
    }
}
