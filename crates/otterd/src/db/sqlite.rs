//! [`Database`] on SQLite: the embedded default, one file in the data directory.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::SqlitePool;

use super::serial::Serial;
use super::*;
use shared::{backend, map_err};

/// The SQLite backend.
#[derive(Clone)]
pub struct Sqlite {
    pool: SqlitePool,
    /// Newest events kept per device (0: all).
    history_max: i64,
}

/// Bounds on what the SQLite files hold (issue 8, item 14).
#[derive(Debug, Clone, Copy)]
pub struct SqliteBounds {
    /// Newest events kept per device; older ones are deleted as new ones arrive (0: keep all).
    pub history_max: i64,
    /// `PRAGMA journal_size_limit`: the write-ahead log is cut back to this size after each
    /// checkpoint.
    pub wal_size_limit_bytes: u64,
}

impl Default for SqliteBounds {
    fn default() -> Self {
        SqliteBounds {
            history_max: 1000,
            wal_size_limit_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Sqlite {
    /// The connection pool, for the other stores of this backend.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens (creating if missing) the database at `url` (`sqlite://path` or a plain path) and
    /// runs the migrations.
    pub async fn open(url: &str) -> DbResult<Self> {
        Self::open_with(url, SqliteBounds::default()).await
    }

    /// [`Sqlite::open`] with explicit bounds.
    pub async fn open_with(url: &str, bounds: SqliteBounds) -> DbResult<Self> {
        let opts = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(backend)?
        } else {
            SqliteConnectOptions::new().filename(Path::new(url))
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL survives a killed process without losing committed rows; only a power
        // cut of the host can lose the last transactions, never corrupt the file.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .pragma(
            "journal_size_limit",
            bounds.wal_size_limit_bytes.to_string(),
        )
        .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| DbError::Backend(Box::new(e)))?;
        Ok(Sqlite {
            pool,
            history_max: bounds.history_max,
        })
    }
}

impl Sqlite {
    /// Releases published in the same second keep their insertion order by SQLite's implicit
    /// row id: the table's primary key is a text id, and SQLite cannot add an ordered column to
    /// an existing table.
    const RELEASE_SEQ: &'static str = "r.rowid";

    /// Nothing to hold: each rule is one statement, and a writing statement takes SQLite's
    /// single write lock before it reads, so the check and the write are one step.
    async fn serialize(
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        _rule: Serial,
    ) -> DbResult<()> {
        Ok(())
    }

    async fn checkpoint_now(&self) -> DbResult<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// SQLite names the columns of the broken constraint in its message,
/// `UNIQUE constraint failed: t.a, t.b`; this gives `t(a, b)`.
fn conflict_name(d: &dyn sqlx::error::DatabaseError) -> String {
    let msg = d.message();
    let Some(cols) = msg.strip_prefix("UNIQUE constraint failed: ") else {
        return msg.to_string();
    };
    let mut table = None;
    let mut names = Vec::new();
    for col in cols.split(", ") {
        match col.split_once('.') {
            Some((t, c)) => {
                table.get_or_insert(t);
                names.push(c);
            }
            None => names.push(col),
        }
    }
    format!("{}({})", table.unwrap_or("?"), names.join(", "))
}

/// What the queries written once for every backend (`shared.rs` and the `*_sql.rs` stores) implement
/// here: this backend's type, its sqlx database and its rows.
type Backend = Sqlite;
type BackendDb = sqlx::Sqlite;
type BackendRow = SqliteRow;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unique_violation_names_its_table_and_columns() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Sqlite::open(dir.path().join("t.db").to_str().unwrap())
            .await
            .unwrap();
        let p = ProductRow {
            id: 0,
            name: "lamp".into(),
            chip: otter_core::Chip::Esp32,
            description: String::new(),
            enrollment_secret_hash: "h".into(),
            created_at: 1,
            max_devices: None,
            enrollments_per_minute: None,
            allowlist_required: false,
        };
        db.create_product(&p).await.unwrap();
        match db.create_product(&p).await {
            Err(DbError::Conflict(c)) => assert_eq!(c, "products(name)"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
}
