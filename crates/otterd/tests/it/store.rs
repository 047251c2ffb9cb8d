//! The storage seam itself on the test run's backend (SQLite, or PostgreSQL with
//! `OTTER_TEST_DATABASE=postgres`): the queries both backends share answer alike.

use std::sync::Arc;

use otterd::db::fleet::GroupRow;
use otterd::db::{
    AuditFilter, Database, DbError, DeviceRow, DeviceState, EventRow, KeyRow, ProductRow, Role,
    TokenRow, LAST_ADMIN,
};

use crate::backends;

/// A fresh database of the test run's backend, migrated.
async fn open(dir: &tempfile::TempDir) -> Arc<dyn Database> {
    let data = dir.path().join("data");
    let settings = otterd::config::Settings {
        data_dir: data.clone(),
        database_url: backends::database_setting_for(&data),
        ..Default::default()
    };
    otterd::open_state(settings).await.unwrap().db
}

fn product(name: &str) -> ProductRow {
    ProductRow {
        id: 0,
        name: name.into(),
        chip: otter_core::Chip::Esp32,
        description: String::new(),
        enrollment_secret_hash: "h".into(),
        created_at: 1,
        max_devices: None,
        enrollments_per_minute: Some(600),
        allowlist_required: true,
    }
}

fn device(id: &str, product_id: i64) -> DeviceRow {
    DeviceRow {
        id: id.into(),
        product_id,
        product: String::new(),
        hardware_id: format!("hw-{id}"),
        channel: "stable".into(),
        token_hash: format!("th-{id}"),
        enrollment_nonce_hash: None,
        chip: None,
        version: None,
        security_counter: None,
        image_sha256: None,
        partition_size: None,
        last_state: None,
        enrolled_at: 1,
        last_seen_at: None,
    }
}

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, DbError>, constraint: &str) {
    match r {
        Err(DbError::Conflict(c)) => assert_eq!(c, constraint),
        other => panic!("expected a conflict on {constraint}, got {other:?}"),
    }
}

/// A unique violation names its constraint as `table(columns)`, the same on SQLite and on
/// PostgreSQL.
#[tokio::test]
async fn conflicts_name_their_constraint_on_every_backend() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open(&dir).await;
    let p = product("thermo");
    let created = db.create_product(&p).await.unwrap();
    assert!(created.allowlist_required);
    expect_conflict(db.create_product(&p).await, "products(name)");
    let key = KeyRow {
        product_id: created.id,
        key_id: "k1".into(),
        name: "release key".into(),
        public_key_pem: "pem".into(),
        created_at: 1,
    };
    db.add_key(&key).await.unwrap();
    expect_conflict(db.add_key(&key).await, "product_keys(product_id, key_id)");
    db.insert_device(&device("d1", created.id)).await.unwrap();
    let mut again = device("d2", created.id);
    again.hardware_id = "hw-d1".into();
    expect_conflict(
        db.insert_device(&again).await,
        "devices(product_id, hardware_id)",
    );
}

/// Tags and groups (issue 9): the same answers on every backend, a group name once per product,
/// members only from the group's product.
#[tokio::test]
async fn tags_and_groups_are_stored_alike_on_every_backend() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open(&dir).await;
    let thermo = db.create_product(&product("thermo")).await.unwrap();
    let lamp = db.create_product(&product("lamp")).await.unwrap();
    db.insert_device(&device("d1", thermo.id)).await.unwrap();
    db.insert_device(&device("d2", thermo.id)).await.unwrap();
    db.insert_device(&device("l1", lamp.id)).await.unwrap();
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        db.tag_device("d1", &tags(&["lab", "eu", "lab"]))
            .await
            .unwrap(),
        tags(&["eu", "lab"])
    );
    assert_eq!(
        db.untag_device("d1", &tags(&["eu", "absent"]))
            .await
            .unwrap(),
        tags(&["lab"])
    );
    assert!(matches!(
        db.tag_device("nope", &tags(&["x"])).await,
        Err(DbError::NotFound)
    ));
    let group = GroupRow {
        id: "g1".into(),
        product_id: thermo.id,
        name: "canary".into(),
        filter: None,
        created_at: 2,
        created_by: "tok_admin".into(),
    };
    db.create_group(&group, &tags(&["d1"])).await.unwrap();
    assert!(db.group_has_device("g1", "d1").await.unwrap());
    assert!(!db.group_has_device("g1", "d2").await.unwrap());
    let got = db.get_group(thermo.id, "canary").await.unwrap();
    assert_eq!((got.id.as_str(), got.filter), ("g1", None));
    let twice = GroupRow {
        id: "g2".into(),
        ..group.clone()
    };
    expect_conflict(
        db.create_group(&twice, &[]).await,
        "device_groups(product_id, name)",
    );
    // A device of another product is refused, and nothing of the group is kept.
    let foreign = GroupRow {
        id: "g3".into(),
        name: "mixed".into(),
        ..group
    };
    assert!(matches!(
        db.create_group(&foreign, &tags(&["d2", "l1"])).await,
        Err(DbError::NotFound)
    ));
    assert!(matches!(
        db.get_group(thermo.id, "mixed").await,
        Err(DbError::NotFound)
    ));
}

/// Two admins revoke each other at the same moment, many times over: exactly one revocation
/// wins each time and one admin token stays active, on every backend (on PostgreSQL the two
/// statements would otherwise each count the other admin as still active).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_never_remove_the_last_admin() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open(&dir).await;
    let admin = |id: String| TokenRow {
        name: id.clone(),
        token_hash: format!("hash-{id}"),
        id,
        role: Role::Admin,
        products: vec![],
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
    };
    for round in 0..20 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        db.create_token(&admin(a.clone())).await.unwrap();
        db.create_token(&admin(b.clone())).await.unwrap();
        // Only a and b are active: every earlier round left one of its pair, revoked now.
        for t in db.list_tokens().await.unwrap() {
            if t.revoked_at.is_none() && t.id != a && t.id != b {
                db.revoke_token(&t.id, 2).await.unwrap();
            }
        }
        let (db1, db2) = (db.clone(), db.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { db1.revoke_token(&a, 3).await }),
            tokio::spawn(async move { db2.revoke_token(&b, 3).await })
        );
        let results = [ra.unwrap(), rb.unwrap()];
        let won = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(DbError::Conflict(m)) if m == LAST_ADMIN))
            .count();
        assert_eq!((won, refused), (1, 1), "round {round}: {results:?}");
        let active = db
            .list_tokens()
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .count();
        assert_eq!(active, 1, "round {round}");
    }
}

/// The text of a `DbError::Backend` with its sources, for checking what it names.
fn backend_error_text<T: std::fmt::Debug>(r: Result<T, DbError>) -> String {
    match r {
        Err(e @ DbError::Backend(_)) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

/// A stored value that is not one of its type's values (written below otterd) is refused
/// when read, with an error naming the table, the column and the value, on every backend.
#[tokio::test]
async fn a_stored_value_that_does_not_decode_is_refused_clearly() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open(&dir).await;
    let data = dir.path().join("data");
    let token = TokenRow {
        id: "tok_bad".into(),
        name: "bad".into(),
        role: Role::Viewer,
        products: vec![],
        token_hash: "hash-bad".into(),
        created_at: 1,
        last_used_at: None,
        revoked_at: None,
    };
    db.create_token(&token).await.unwrap();
    assert_eq!(db.find_token("hash-bad").await.unwrap().role, Role::Viewer);
    // The schema itself keeps a token's role among the known ones...
    let refused = backends::execute_raw(
        &data,
        "UPDATE tokens SET role = 'root' WHERE id = 'tok_bad'",
    )
    .await;
    assert!(
        refused.is_err(),
        "the schema took an unknown role: {refused:?}"
    );
    assert_eq!(db.find_token("hash-bad").await.unwrap().role, Role::Viewer);

    // ... the audit log's role column has no such check: reading decodes it.
    backends::execute_raw(
        &data,
        "INSERT INTO audit_log (at, actor, role, action) VALUES (5, 'x', 'superuser', 'a.b')",
    )
    .await
    .unwrap();
    let text = backend_error_text(db.page_audit(&AuditFilter::default(), None, 10).await);
    assert!(text.contains("audit_log.role"), "{text}");
    assert!(text.contains("\"superuser\""), "{text}");

    // A chip Otter does not know, in a product and in what a device reported.
    let p = db.create_product(&product("chips")).await.unwrap();
    db.insert_device(&device("dev_chip", p.id)).await.unwrap();
    backends::execute_raw(
        &data,
        "UPDATE devices SET chip = 'esp99' WHERE id = 'dev_chip'",
    )
    .await
    .unwrap();
    let text = backend_error_text(db.get_device("dev_chip").await);
    assert!(text.contains("devices.chip"), "{text}");
    assert!(text.contains("\"esp99\""), "{text}");
    backends::execute_raw(
        &data,
        "UPDATE products SET chip = 'z80' WHERE name = 'chips'",
    )
    .await
    .unwrap();
    let text = backend_error_text(db.get_product("chips").await);
    assert!(text.contains("products.chip"), "{text}");
    assert!(text.contains("\"z80\""), "{text}");
}

/// Device states are typed (issue 9): a state stored as its name reads back as it was written,
/// and one that is none of the states (written below otterd) is refused when read, naming the
/// table, the column and the value, on every backend.
#[tokio::test]
async fn a_stored_device_state_that_does_not_decode_is_refused_clearly() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open(&dir).await;
    let data = dir.path().join("data");
    let p = db.create_product(&product("states")).await.unwrap();
    db.insert_device(&device("dev_state", p.id)).await.unwrap();
    db.add_event(&EventRow {
        device_id: "dev_state".into(),
        at: 5,
        release_id: None,
        state: DeviceState::RolledBack,
        progress_bytes: None,
        reason: Some("self-test failed".into()),
    })
    .await
    .unwrap();
    let d = db.get_device("dev_state").await.unwrap();
    assert_eq!(d.last_state, Some(DeviceState::RolledBack));
    let events = db.list_events("dev_state", 10).await.unwrap();
    assert_eq!(events[0].state, DeviceState::RolledBack);

    backends::execute_raw(
        &data,
        "UPDATE devices SET last_state = 'exploded' WHERE id = 'dev_state'",
    )
    .await
    .unwrap();
    let text = backend_error_text(db.get_device("dev_state").await);
    assert!(text.contains("devices.last_state"), "{text}");
    assert!(text.contains("\"exploded\""), "{text}");
    backends::execute_raw(
        &data,
        "UPDATE device_events SET state = 'Success' WHERE device_id = 'dev_state'",
    )
    .await
    .unwrap();
    let text = backend_error_text(db.list_events("dev_state", 10).await);
    assert!(text.contains("device_events.state"), "{text}");
    assert!(text.contains("\"Success\""), "{text}");
}

/// Migration 0011 (issue 9): a device stored with `image_sha256 = ''` (what stock Arduino and
/// esp32FOTA clients left before) reads back as no SHA-256 once the migration ran, on every
/// backend; before it, '' is not a SHA-256 and is refused as undecodable.
#[tokio::test]
async fn migration_0011_turns_an_empty_image_sha256_into_none() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = open(&dir).await;
    let data = dir.path().join("data");
    let p = db.create_product(&product("stock")).await.unwrap();
    db.insert_device(&device("dev_stock", p.id)).await.unwrap();
    // The database as 0010 left it: '' stored, 0011 not applied yet.
    backends::execute_raw(
        &data,
        "UPDATE devices SET image_sha256 = '' WHERE id = 'dev_stock'",
    )
    .await
    .unwrap();
    let text = backend_error_text(db.get_device("dev_stock").await);
    assert!(text.contains("devices.image_sha256"), "{text}");
    let undone = backends::execute_raw(&data, "DELETE FROM _sqlx_migrations WHERE version = 11")
        .await
        .unwrap();
    assert_eq!(undone, 1, "migration 0011 was applied");
    drop(db);
    let db = open(&dir).await;
    assert_eq!(db.get_device("dev_stock").await.unwrap().image_sha256, None);
}
