//! Background work of one server: jobs that run at start and then periodically (the blob
//! collector, the database log checkpoint, the rollout worker). `launch_with_listener` starts
//! them and stops them with the server's shutdown signal; a failed run is logged and tried again
//! at the next interval.
//!
//! Jobs that must run once across several instances sharing a database ([`spawn_leased`]) take
//! a lease first: a `job_leases` row naming the holder, valid until the job's next run. The
//! holder renews it at each run; another instance takes it over only once it expired (its
//! holder stopped). Taking it is one conditional upsert, so two instances never both hold it.
//! An instance is named by its host and data directory ([`instance_name`]), so a restarted
//! server renews its own leases and runs its jobs at start as before.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Database;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs `job` now and then every `every` (`None`: only now) until `stop` turns true.
pub fn spawn_periodic<F, Fut>(
    name: &'static str,
    every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
    mut job: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        loop {
            if let Err(e) = job().await {
                tracing::warn!(job = name, error = %e, "background job failed; trying again at its next run");
            }
            let Some(every) = every else { return };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

/// This instance's name in the job leases: the host name and the data directory. A restarted
/// server is the same instance, so it renews its own leases at once (its jobs run at start as
/// before); another server, on another host or data directory, is another instance.
pub fn instance_name(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
}

/// Seconds a lease lasts for a job that runs only at start.
const ONCE_LEASE_S: i64 = 60;

/// [`spawn_periodic`], but a run happens only on the instance that holds the database lease
/// `name` (`holder` names this instance); the others skip it.
pub fn spawn_leased<F, Fut>(
    name: &'static str,
    every: Option<Duration>,
    db: Arc<dyn Database>,
    holder: String,
    stop: watch::Receiver<bool>,
    job: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let job = Arc::new(job);
    spawn_periodic(name, every, stop, move || {
        let (db, holder, job) = (db.clone(), holder.clone(), job.clone());
        async move {
            let now = crate::now();
            let lease_s = every.map_or(ONCE_LEASE_S, |e| e.as_secs().max(1) as i64);
            if !db.acquire_lease(name, &holder, now + lease_s, now).await? {
                tracing::debug!(
                    job = name,
                    "another instance holds this job's lease; skipped"
                );
                return Ok(());
            }
            job().await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn runs_at_start_then_periodically_until_stopped() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let counted = runs.clone();
        let task = spawn_periodic("test", Some(Duration::from_secs(10)), stop_rx, move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                anyhow::bail!("a failing run is retried, not fatal")
            }
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "at 0 s, 10 s and 20 s");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "nothing runs after the stop"
        );
    }

    #[tokio::test]
    async fn without_an_interval_runs_once() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        spawn_periodic("once", None, stop_rx, move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
