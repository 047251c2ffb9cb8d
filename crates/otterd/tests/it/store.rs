//! The storage seam itself on the test run's backend (SQLite, or PostgreSQL with
//! `OTTER_TEST_DATABASE=postgres`): the queries both backends share answer alike.

use std::sync::Arc;

use otterd::db::fleet::GroupRow;
use otterd::db::{Database, DbError, DeviceRow, KeyRow, ProductRow};

use crate::backends;

/// A fresh database of the test run's backend, migrated.
async fn open(dir: &tempfile::TempDir) -> Arc<dyn Database> {
    let data = dir.path().join("data");
    let settings = otterd::config::Settings {
        data_dir: data.clone(),
        database_url: backends::database_url_for(&data),
        ..Default::default()
    };
    otterd::open_state(settings).await.unwrap().db
}

fn product(name: &str) -> ProductRow {
    ProductRow {
        id: 0,
        name: name.into(),
        chip: "esp32".into(),
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
