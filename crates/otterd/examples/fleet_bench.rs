//! Times filtered pages of `GET /api/v1/devices` (the fleet service underneath it) on a large
//! fleet, seeded through the `Database` trait (issue 9: "fast at 100,000 devices").
//!
//! ```text
//! cargo run -p otterd --example fleet_bench -- [DEVICES] [DB_FILE]
//! ```
//!
//! DEVICES defaults to 100000. DB_FILE (default: a temporary file) is reused when it already
//! holds the devices, so a second run only times the queries.

use std::time::Instant;

use otter_core::fleet::DeviceFilter;
use otterd::db::fleet::FleetStore;
use otterd::db::sqlite::Sqlite;
use otterd::db::{CheckinReport, Database, DeviceRow, EventRow, ProductRow};
use otterd::services::fleet::{create_group, list_devices, DeviceQuery, GroupSpec};

const NOW: i64 = 1_800_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let tmp = tempfile::TempDir::new()?;
    let file = args
        .next()
        .unwrap_or_else(|| tmp.path().join("bench.db").display().to_string());
    let db = Sqlite::open(&file).await?;
    let product = match db.get_product("bench").await {
        Ok(p) => p,
        Err(_) => {
            db.create_product(&ProductRow {
                id: 0,
                name: "bench".into(),
                chip: otter_core::Chip::Esp32C3,
                description: String::new(),
                enrollment_secret_hash: "x".into(),
                created_at: 0,
                max_devices: None,
                enrollments_per_minute: None,
                allowlist_required: false,
            })
            .await?
        }
    };
    let have = db.count_devices(product.id).await? as usize;
    if have < n {
        let t = Instant::now();
        seed(&db, &product, have, n).await?;
        println!(
            "seeded {} devices in {:.1} s",
            n - have,
            t.elapsed().as_secs_f64()
        );
    }
    // A static group of 50 devices spread over the fleet, and a filter group.
    if db.get_group(product.id, "fifty").await.is_err() {
        let members: Vec<String> = (0..50)
            .map(|i| format!("dev_bench{:07}", i * (n / 50)))
            .collect();
        create_group(
            &db,
            &product,
            "fifty",
            GroupSpec::Static(members),
            "bench",
            NOW,
        )
        .await?;
        create_group(
            &db,
            &product,
            "lab-beta",
            GroupSpec::Filter("tag=lab,channel=beta".into()),
            "bench",
            NOW,
        )
        .await?;
    }
    println!(
        "{n} devices; limit 100; the first page, and the last of up to 50 pages that follow it"
    );
    for (label, q) in [
        ("product", ""),
        ("tag=lab (10 %)", "tag=lab"),
        ("tag=rare (10 devices)", "tag=rare"),
        ("channel=beta (14 %)", "channel=beta"),
        ("state=failure (5 %)", "state=failure"),
        ("version=1.3.0 (10 %)", "version=1.3.0"),
        ("version=2.0.0 (1 %)", "version=2.0.0"),
        ("chip=esp32s3 (30 %)", "chip=esp32s3"),
        ("seen<1h (~0.6 %)", "seen<1h"),
        ("tag=lab,channel=beta", "tag=lab,channel=beta"),
        ("version<1.2.0 (service)", "version<1.2.0"),
        ("version>=2.0.0 (service, 1 %)", "version>=2.0.0"),
        ("group=fifty (static, 50)", "group=fifty"),
        ("group=lab-beta (filter)", "group=lab-beta"),
    ] {
        let (filter, group) = match q.strip_prefix("group=") {
            Some(g) => (DeviceFilter::default(), Some(g.to_string())),
            None => (q.parse::<DeviceFilter>()?, None),
        };
        let query = DeviceQuery {
            product: Some(product.clone()),
            filter,
            group,
        };
        let t = Instant::now();
        let first = list_devices(&db, &query, None, 100, 20_000, NOW).await?;
        let first_ms = t.elapsed().as_secs_f64() * 1000.0;
        // Follow 50 pages, timing the last.
        let mut after = first.next.clone();
        let mut last_ms = None;
        for _ in 0..50 {
            let Some(a) = after.take() else { break };
            let t = Instant::now();
            let p = list_devices(&db, &query, Some(a), 100, 20_000, NOW).await?;
            last_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
            after = p.next;
        }
        println!(
            "{label:<32} first page {:>4} devices {first_ms:>8.2} ms; last followed page {}",
            first.devices.len(),
            last_ms.map_or("-".into(), |m| format!("{m:.2} ms"))
        );
    }
    Ok(())
}

async fn seed(db: &Sqlite, p: &ProductRow, from: usize, to: usize) -> anyhow::Result<()> {
    for i in from..to {
        let id = format!("dev_bench{i:07}");
        db.insert_device(&DeviceRow {
            id: id.clone(),
            product_id: p.id,
            product: p.name.clone(),
            hardware_id: format!("hw{i:07}"),
            channel: if i % 7 == 3 { "beta" } else { "stable" }.into(),
            token_hash: format!("tok{i}"),
            enrollment_nonce_hash: None,
            chip: None,
            version: None,
            security_counter: None,
            image_sha256: None,
            partition_size: None,
            last_state: None,
            enrolled_at: 1_700_000_000 + i as i64,
            last_seen_at: None,
        })
        .await?;
        let version = if i % 100 == 7 {
            "2.0.0".to_string()
        } else {
            format!("1.{}.0", i % 10)
        };
        db.record_checkin(
            &id,
            &CheckinReport {
                chip: if i % 10 < 3 {
                    otter_core::Chip::Esp32S3
                } else {
                    otter_core::Chip::Esp32C3
                },
                version,
                security_counter: 1,
                image_sha256: Some(format!("{i:064x}").parse().map_err(anyhow::Error::msg)?),
                partition_size: None,
                // Spread over a week before NOW.
                at: NOW - ((i as i64 * 7919) % (7 * 86_400)),
            },
        )
        .await?;
        let mut tags = vec![if i % 2 == 0 { "eu" } else { "us" }.to_string()];
        if i % 10 == 5 {
            tags.push("lab".into());
        }
        if i % (to / 10).max(1) == 1 {
            tags.push("rare".into());
        }
        db.tag_device(&id, &tags).await?;
        if i % 20 == 9 {
            db.add_event(&EventRow {
                device_id: id.clone(),
                // Keeps last_seen_at as the check-in set it (add_event sets it too).
                at: NOW - ((i as i64 * 7919) % (7 * 86_400)),
                release_id: None,
                state: otterd::db::DeviceState::Failure,
                progress_bytes: None,
                reason: Some("bench".into()),
            })
            .await?;
        }
    }
    Ok(())
}
