//! Seeds a fleet of enrolled devices into an existing product for `bench/run.sh` (issue 10),
//! through the `Database` trait, and writes their device tokens, one a line.
//!
//! ```text
//! cargo run --release -p otterd --example seed_fleet -- DATABASE_URL PRODUCT DEVICES TOKENS_FILE
//! ```
//!
//! DATABASE_URL is `sqlite://PATH` or `postgres://...` (the database of a running otterd is
//! fine: SQLite runs in WAL mode). Each device is enrolled (`insert_device`, as enrolment does)
//! and has checked in once (`record_checkin`: esp32, version 1.0.0), so the fleet looks like one
//! that has been running. Tokens are `otd_fleet<N>`: not secret, a benchmark's fleet.
//! Enrolling 100,000 devices through the API would spend minutes in enrolment's rate limits and
//! per-request work that the check-in benchmark does not measure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use otterd::auth::hash_secret;
use otterd::db::postgres::{Postgres, PostgresBounds};
use otterd::db::sqlite::Sqlite;
use otterd::db::{CheckinReport, Database, DeviceRow};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, product, n, tokens_file] = args.as_slice() else {
        anyhow::bail!("usage: seed_fleet DATABASE_URL PRODUCT DEVICES TOKENS_FILE");
    };
    let n: usize = n.parse()?;
    let db: Arc<dyn Database> = if url.starts_with("postgres") {
        Arc::new(
            Postgres::open_with(
                url,
                PostgresBounds {
                    history_max: 1000,
                    max_connections: 16,
                    acquire_timeout: Duration::from_secs(30),
                },
            )
            .await?,
        )
    } else {
        Arc::new(Sqlite::open(url.trim_start_matches("sqlite://")).await?)
    };
    let p = db.get_product(product).await?;
    let t = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let db = db.clone();
            let p = p.clone();
            async move {
                let id = format!("dev_fleet{i:06}");
                db.insert_device(&DeviceRow {
                    id: id.clone(),
                    product_id: p.id,
                    product: p.name.clone(),
                    hardware_id: format!("fleet-{i:06}"),
                    channel: "stable".into(),
                    token_hash: hash_secret(&token(i)),
                    enrollment_nonce_hash: None,
                    chip: None,
                    version: None,
                    security_counter: None,
                    image_sha256: None,
                    partition_size: None,
                    last_state: None,
                    enrolled_at: otterd::now(),
                    last_seen_at: None,
                })
                .await?;
                db.record_checkin(
                    &id,
                    &CheckinReport {
                        chip: p.chip,
                        version: "1.0.0".into(),
                        security_counter: 0,
                        image_sha256: Some("0".repeat(64).parse().expect("64 hex digits")),
                        partition_size: None,
                        at: otterd::now(),
                    },
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    let tokens: String = (0..n).map(|i| token(i) + "\n").collect();
    std::fs::write(tokens_file, tokens)?;
    println!("seeded {n} devices in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn token(i: usize) -> String {
    format!("otd_fleet{i:06}")
}
