//! [`Database`] on PostgreSQL: for several `otterd` instances sharing one database.
//!
//! The queries are the SQLite backend's ([`super::shared`]); this module holds the connection,
//! the PostgreSQL migrations (`migrations/postgres`, numbered like SQLite's) and the few
//! dialect differences.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection};

use super::serial::Serial;
use super::*;
use shared::{backend, map_err};

/// The PostgreSQL backend.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    /// Newest events kept per device (0: all).
    history_max: i64,
}

/// Bounds on the PostgreSQL backend.
#[derive(Debug, Clone, Copy)]
pub struct PostgresBounds {
    /// Newest events kept per device; older ones are deleted as new ones arrive (0: keep all).
    pub history_max: i64,
    /// Connections this server holds open at most.
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails.
    pub acquire_timeout: Duration,
}

impl Default for PostgresBounds {
    fn default() -> Self {
        PostgresBounds {
            history_max: 1000,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Keys of the advisory locks of [`Serial`] ("otter_a1", "otter_a2").
const FIRST_START_LOCK: i64 = 0x6f74_7465_725f_6131;
const ADMINS_LOCK: i64 = 0x6f74_7465_725f_6132;

impl Postgres {
    /// The connection pool, for the other stores of this backend.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connects to `url` (`postgres://user:password@host:port/database?sslmode=...`) and runs
    /// the migrations. sqlx's PostgreSQL migrator holds an advisory lock while it runs, so
    /// instances starting together apply each migration once.
    pub async fn open_with(url: &str, bounds: PostgresBounds) -> DbResult<Self> {
        let opts = PgConnectOptions::from_str(url).map_err(backend)?;
        // One connection first: its error says why (refused, authentication, TLS), where the
        // pool would only report a timeout.
        opts.connect()
            .await
            .map_err(backend)?
            .close()
            .await
            .map_err(backend)?;
        let pool = PgPoolOptions::new()
            .max_connections(bounds.max_connections)
            .acquire_timeout(bounds.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| DbError::Backend(Box::new(e)))?;
        Ok(Postgres {
            pool,
            history_max: bounds.history_max,
        })
    }

    /// Releases published in the same second keep their insertion order by this identity
    /// column (SQLite uses its implicit row id).
    const RELEASE_SEQ: &'static str = "r.seq";

    /// Under PostgreSQL's default isolation two transactions could each miss the other's
    /// write (two instances both see no token; two revocations both see another active
    /// admin); a transaction-scoped advisory lock per rule makes them take turns.
    async fn serialize(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        rule: Serial,
    ) -> DbResult<()> {
        let key = match rule {
            Serial::FirstStart => FIRST_START_LOCK,
            Serial::Admins => ADMINS_LOCK,
        };
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// PostgreSQL manages its own write-ahead log.
    async fn checkpoint_now(&self) -> DbResult<()> {
        Ok(())
    }
}

/// The broken constraint as `table(a, b)`, like the SQLite backend: the table and the columns
/// from the error's detail (`Key (a, b)=(...) already exists.`), or the constraint's name.
fn conflict_name(d: &dyn sqlx::error::DatabaseError) -> String {
    let Some(pg) = d.try_downcast_ref::<PgDatabaseError>() else {
        return d.message().to_string();
    };
    let columns = pg
        .detail()
        .and_then(|detail| detail.strip_prefix("Key ("))
        .and_then(|rest| rest.split_once(")=("))
        .map(|(cols, _)| cols);
    match (pg.table(), columns) {
        (Some(table), Some(cols)) => format!("{table}({cols})"),
        _ => pg.constraint().unwrap_or(pg.message()).to_string(),
    }
}

/// What the queries written once for every backend (`shared.rs` and the `*_sql.rs` stores) implement
/// here: this backend's type, its sqlx database and its rows.
type Backend = Postgres;
type BackendDb = sqlx::Postgres;
type BackendRow = PgRow;

// One file, compiled once per backend: that is the point, not a mistake.
#[allow(clippy::duplicate_mod)]
#[path = "audit_sql.rs"]
mod audit;
#[allow(clippy::duplicate_mod)]
#[path = "checkin_sql.rs"]
mod checkin_store;
#[allow(clippy::duplicate_mod)]
#[path = "fleet_sql.rs"]
mod fleet_store;
#[allow(clippy::duplicate_mod)]
#[path = "github_sql.rs"]
mod github_store;
#[allow(clippy::duplicate_mod)]
#[path = "pages_sql.rs"]
mod page_store;
#[allow(clippy::duplicate_mod)]
#[path = "people_sql.rs"]
mod people_store;
#[allow(clippy::duplicate_mod)]
#[path = "rollouts_sql.rs"]
mod rollout_store;
#[allow(clippy::duplicate_mod)]
#[path = "shared.rs"]
mod shared;
