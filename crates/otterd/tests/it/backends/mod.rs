//! Which storage the integration tests run on. The database: SQLite (the default, one file in
//! each server's data directory) or, with `OTTER_TEST_DATABASE=postgres`, one PostgreSQL server
//! per test process ([`postgres`]) with a fresh database for each server a test starts. The
//! blobs: local disk, or an S3 server with `OTTER_TEST_BLOBS=s3` ([`s3`]).

pub mod postgres;
pub mod s3;

use std::path::Path;

/// The backends `OTTER_TEST_DATABASE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDatabase {
    Sqlite,
    Postgres,
}

/// The backend of this test run; an unknown value is an error, not a silent default.
pub fn selected() -> TestDatabase {
    match std::env::var("OTTER_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => TestDatabase::Sqlite,
        Ok("postgres") => TestDatabase::Postgres,
        Ok(other) => panic!("OTTER_TEST_DATABASE={other:?}: use `sqlite` (default) or `postgres`"),
    }
}

/// The `database_url` for a server with this data directory: `None` on SQLite (the server's own
/// file), on PostgreSQL a database created for this directory on first use, so a server
/// restarted on the same directory finds its data again.
pub fn database_url_for(data_dir: &Path) -> Option<String> {
    match selected() {
        TestDatabase::Sqlite => None,
        TestDatabase::Postgres => Some(postgres::database_for(data_dir)),
    }
}

/// [`database_url_for`] as the `database_url` setting holds it.
pub fn database_setting_for(data_dir: &Path) -> Option<otterd::config::SecretUrl> {
    database_url_for(data_dir).map(Into::into)
}

/// The URL of the database of `data_dir` on the test run's backend, spelled out (for a test
/// that starts a second server on it).
pub fn database_url_of(data_dir: &Path) -> String {
    database_url_for(data_dir)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("otter.db").display()))
}

/// The database of `data_dir` on the test run's backend (created and migrated if new), for a
/// test that reads or seeds it below the API.
pub async fn open_db(data_dir: &Path) -> std::sync::Arc<dyn otterd::db::Database> {
    let settings = otterd::config::Settings {
        data_dir: data_dir.to_path_buf(),
        database_url: Some(database_url_of(data_dir).into()),
        ..Default::default()
    };
    otterd::db::connect::open(&settings).await.unwrap()
}

/// Runs one SQL statement on the database of `data_dir` directly, below `otterd` (for tests of
/// what the schema itself refuses).
pub async fn execute_raw(data_dir: &Path, sql: &str) -> Result<u64, sqlx::Error> {
    use sqlx::Connection;
    match database_url_for(data_dir) {
        None => {
            let url = format!("sqlite://{}", data_dir.join("otter.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await?;
            Ok(sqlx::query(sql).execute(&mut conn).await?.rows_affected())
        }
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            Ok(sqlx::query(sql).execute(&mut conn).await?.rows_affected())
        }
    }
}

/// Whether a test about SQLite's own files should run; on other backends it says why it
/// does not (tests that use this say so in their doc comment).
pub fn sqlite_only(what: &str) -> bool {
    let on = selected() == TestDatabase::Sqlite;
    if !on {
        eprintln!("not run on {:?}: {what} exist only with SQLite", selected());
    }
    on
}
