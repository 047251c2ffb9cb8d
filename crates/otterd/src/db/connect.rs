//! Picks the backend for a database URL by its scheme.

use std::sync::Arc;

use anyhow::Context;

use super::{postgres, sqlite, Database};
use crate::config::{redact_url, Settings};

/// URL schemes this build accepts, for error messages.
pub const SCHEMES: &str = "sqlite://PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend of `url`, or an error that lists the accepted forms (the password redacted).
pub fn backend_of(url: &str) -> anyhow::Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        anyhow::bail!(
            "unsupported database URL {:?}: this build accepts {SCHEMES} (set it with --database-url, OTTER_DATABASE_URL or `database_url` in the config file)",
            redact_url(url)
        )
    }
}

/// Opens the database of `settings` and runs its migrations.
pub async fn open(settings: &Settings) -> anyhow::Result<Arc<dyn Database>> {
    let url = settings.database_url();
    let history_max = settings.limits.device_history_max as i64;
    Ok(match backend_of(&url)? {
        Backend::Sqlite => Arc::new(
            sqlite::Sqlite::open_with(
                &url,
                sqlite::SqliteBounds {
                    history_max,
                    wal_size_limit_bytes: settings.limits.wal_size_limit_bytes,
                },
            )
            .await
            .context("opening the SQLite database")?,
        ),
        Backend::Postgres => Arc::new(
            postgres::Postgres::open_with(
                &url,
                postgres::PostgresBounds {
                    history_max,
                    max_connections: settings.database_max_connections,
                    acquire_timeout: std::time::Duration::from_secs(
                        settings.database_acquire_timeout_s,
                    ),
                },
            )
            .await
            .with_context(|| format!("opening the PostgreSQL database {:?}", redact_url(&url)))?,
        ),
    })
}
