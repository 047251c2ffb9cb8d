//! # otterd: the Otter server
//!
//! - [`config`]: settings from defaults, file, environment and flags.
//! - [`db`]: the `Database` seam and its SQLite and PostgreSQL backends.
//! - [`blob`]: content-addressed image storage on `object_store`.
//! - [`blob_gc`]: the collector of blobs no release references.
//! - [`verified_read`]: device downloads, hashed once per stored blob identity.
//! - [`auth`]: tokens, roles, and the extractors that tell handlers who is calling.
//! - [`audit`]: the append-only audit log of management actions.
//! - [`routes`]: the HTTP handlers, one module per resource.
//! - [`dashboard`]: the web dashboard under `/ui/` (issue 11).
//! - [`launch_with_listener`]: what `main` and the tests call to run a server.

pub mod admin;
pub mod arduino;
pub mod arduino_fota;
pub mod audit;
pub mod auth;
pub mod blob;
pub mod blob_gc;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod download_limit;
pub mod download_redirect;
pub mod edge;
pub mod error;
pub mod openapi;
pub mod pagination;
pub mod perms;
pub mod ratelimit;
pub mod routes;
pub mod serve;
pub mod services;
pub mod telemetry;
pub mod validate;
pub mod verified_read;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::blob::BlobStore;
use crate::config::Settings;
use crate::db::Database;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<dyn Database>,
    pub blobs: BlobStore,
    pub settings: Arc<Settings>,
    pub metrics: telemetry::Metrics,
    /// Rate limits on status reports and enrolments.
    pub limiters: Arc<ratelimit::Limiters>,
    /// Image downloads in progress (issue 8, item 17).
    pub downloads: download_limit::Downloads,
    /// MD5 (hex) of stored images by their SHA-256, for Arduino clients' `x-MD5`: images are
    /// content-addressed, so an entry never changes. One per server, not per process.
    pub image_md5s: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens storage for these settings: the database (running migrations) and the blob store.
pub async fn open_state(settings: Settings) -> anyhow::Result<AppState> {
    perms::create_private_dir(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (set it with --data-dir, OTTER_DATA_DIR or `data_dir` in the config file)",
            settings.data_dir.display()
        )
    })?;
    if settings.database_url.is_none() {
        let file = settings.data_dir.join("otter.db");
        perms::touch_private(&file).with_context(|| format!("creating {}", file.display()))?;
    }
    let db = db::connect::open(&settings).await?;
    // Staging is not emptied here: another instance's upload may be in flight in it. The
    // collector removes staged objects older than blob_gc_grace_s (crate::blob_gc).
    let blobs = BlobStore::open(&settings).context("opening the blob store")?;
    perms::warn_if_loose(&settings.data_dir);
    let downloads =
        download_limit::Downloads::new(settings.max_downloads, settings.max_downloads_per_device);
    Ok(AppState {
        db,
        blobs,
        settings: Arc::new(settings),
        metrics: telemetry::Metrics::install(),
        limiters: Arc::default(),
        downloads,
        image_md5s: Arc::default(),
    })
}

/// On first start (no token at all), creates an admin token and writes it to
/// `<data_dir>/initial-admin-token` with mode 0600. Logs the path, never the token.
///
/// Several instances may start together on one empty database: the token is created with
/// [`Database::create_first_token`], so exactly one of them creates it and writes the file; the
/// others find a token and carry on. The file is written under a name of its own first and
/// renamed into place only once the token is in the database, so no instance leaves a file
/// holding a token that does not exist.
pub async fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    if state.db.count_tokens().await? > 0 {
        return Ok(());
    }
    let token = auth::new_secret(auth::TOKEN_PREFIX);
    let path = state.settings.data_dir.join("initial-admin-token");
    let row = db::TokenRow {
        id: auth::new_id("tok_"),
        name: "initial-admin".into(),
        role: auth::Role::Admin,
        products: vec![],
        token_hash: auth::hash_secret(&token),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    let pending = state
        .settings
        .data_dir
        .join(format!("initial-admin-token.{}.tmp", row.id));
    write_private_file(&pending, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", pending.display()))?;
    let created = state.db.create_first_token(&row).await;
    if !matches!(created, Ok(true)) {
        let _ = std::fs::remove_file(&pending);
        created?;
        tracing::info!("another instance created the first admin token");
        return Ok(());
    }
    std::fs::rename(&pending, &path).with_context(|| format!("writing {}", path.display()))?;
    audit::record(
        state.db.as_ref(),
        db::AuditRow::system("token.create")
            .target(&row.id)
            .detail("name=initial-admin role=admin first start"),
    )
    .await?;
    tracing::warn!(
        path = %path.display(),
        "first start: created an admin token and wrote it to this file (mode 0600). Read it once, keep it in a password manager, then delete the file"
    );
    Ok(())
}

fn write_private_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves on `listener` until `shutdown` completes, then lets requests in flight finish for up to
/// `shutdown_grace_s`. The blob collector ([`blob_gc`]) runs alongside and stops with it.
pub async fn launch_with_listener(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    bootstrap_admin(&state).await?;
    let grace = Duration::from_secs(state.settings.shutdown_grace_s);
    let limits = serve::ConnLimits {
        max_connections: serve::fit_connection_cap(
            state.settings.max_connections,
            state.settings.max_downloads,
        ),
        header_read_timeout: Duration::from_secs(state.settings.header_read_timeout_s),
        keepalive_timeout: Duration::from_secs(state.settings.keepalive_timeout_s),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = start_workers(&state, &stop_rx);
    let app = router(state);
    let server = serve::serve(listener, app, limits, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx2 = stop_rx.clone();
    tokio::select! {
        _ = server => {},
        _ = async {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("requests still running after the shutdown grace period; stopping anyway"),
    }
    drop(stop_rx);
    for worker in workers {
        worker.abort();
    }
    Ok(())
}

/// The background jobs of this server ([`workers`]): the blob collector (issue 8, item 12), the
/// rollout worker (issue 9) and the GitHub release import (issue 13), each under a database
/// lease, and the database log checkpoint (item 14). All run at start and stop with `stop`.
fn start_workers(
    state: &AppState,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let collector_state = state.clone();
    let gc_every = state.settings.blob_gc_interval_s;
    let db = state.db.clone();
    // Names this instance in the job leases (issue 9): with several instances on one
    // database, each leased job runs on one of them.
    let holder = workers::instance_name(&state.settings.data_dir);
    let rollout_db = state.db.clone();
    let github_state = state.clone();
    let github_every = state.settings.github_poll_interval_s;
    let mut jobs = vec![
        workers::spawn_leased(
            "blob collector",
            (gc_every > 0).then(|| Duration::from_secs(gc_every)),
            state.db.clone(),
            holder.clone(),
            stop.clone(),
            move || {
                let state = collector_state.clone();
                async move { blob_gc::collect_once(&state).await.map(drop) }
            },
        ),
        workers::spawn_leased(
            "rollout worker",
            Some(Duration::from_secs(state.settings.rollout_eval_interval_s)),
            state.db.clone(),
            holder.clone(),
            stop.clone(),
            move || {
                let db = rollout_db.clone();
                async move {
                    services::rollouts::tick(db.as_ref(), now()).await?;
                    Ok(())
                }
            },
        ),
        // Empties the database's write-ahead log: without it the log keeps the size of its
        // largest burst.
        workers::spawn_periodic(
            "database log checkpoint",
            Some(Duration::from_secs(
                state.settings.limits.wal_checkpoint_interval_s,
            )),
            stop.clone(),
            move || {
                let db = db.clone();
                async move { Ok(db.checkpoint().await?) }
            },
        ),
    ];
    // GitHub Releases as a source (issue 13): only when polling is on; leased like the jobs
    // above, so with several instances one of them imports.
    if github_every > 0 {
        jobs.push(workers::spawn_leased(
            "GitHub release import",
            Some(Duration::from_secs(github_every)),
            state.db.clone(),
            holder,
            stop.clone(),
            move || {
                let state = github_state.clone();
                async move { services::github::poll_all(&state).await }
            },
        ));
    }
    jobs
}
