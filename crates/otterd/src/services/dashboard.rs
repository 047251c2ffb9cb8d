//! What the dashboard pages show (issue 11), read with aggregates the database computes, so a
//! page costs the same at 100,000 devices as at ten. No HTTP here.
//!
//! - [`overview`]: devices seen within the poll interval, versions running across the fleet,
//!   device states, rollouts in progress with their progress, recent failures with reasons.
//! - [`running`]: how many devices run a release (its image).
//! - [`device`]: a device's page: what it reported, its tags, its deployments and events.
//!
//! A scope (`Scope`) limits every figure to the products a caller may read.

use std::collections::HashMap;

use super::rollouts::{progress, StageProgress};
use crate::db::fleet::DeviceExtras;
use crate::db::pages::{FailureRow, StateCount};
use crate::db::rollouts::{DeploymentRow, RolloutRow};
use crate::db::{Database, DbError, DbResult, DeviceRow, EventRow, ProductRow, ReleaseRow};

/// Which products a caller sees: every one, or these (a publisher's).
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Only(Vec<String>),
}

impl Scope {
    /// Whether the scope holds this product.
    pub fn holds(&self, product: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.iter().any(|n| n == product),
        }
    }
}

/// How many devices of a product report a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionShare {
    pub product: String,
    /// `None`: nothing reported yet.
    pub version: Option<String>,
    pub devices: i64,
}

/// A rollout in progress, with what it deploys and how far it got.
#[derive(Debug, Clone)]
pub struct RolloutSummary {
    pub rollout: RolloutRow,
    pub product: String,
    pub version: String,
    pub progress: Vec<StageProgress>,
}

/// A failure a device reported, with its product's name.
#[derive(Debug, Clone)]
pub struct Failure {
    pub row: FailureRow,
    pub product: String,
}

/// The overview's figures.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The devices' poll interval, in seconds: "seen recently" means within it.
    pub poll_interval_s: u64,
    pub devices: i64,
    pub seen_recently: i64,
    /// Most devices first.
    pub versions: Vec<VersionShare>,
    /// Devices by last reported state, most first.
    pub states: Vec<StateCount>,
    /// Running and paused rollouts, newest first.
    pub rollouts: Vec<RolloutSummary>,
    /// Newest first.
    pub failures: Vec<Failure>,
}

/// The products in `scope`, and their ids for the store (`None`: all).
async fn products_in(
    db: &dyn Database,
    scope: &Scope,
) -> DbResult<(Vec<ProductRow>, Option<Vec<i64>>)> {
    let products: Vec<ProductRow> = db
        .list_products()
        .await?
        .into_iter()
        .filter(|p| scope.holds(&p.name))
        .collect();
    let ids = match scope {
        Scope::All => None,
        Scope::Only(_) => Some(products.iter().map(|p| p.id).collect()),
    };
    Ok((products, ids))
}

/// Rollouts listed on the overview, at most.
pub const OVERVIEW_ROLLOUTS: usize = 20;

/// The overview at `now`: `failures` newest failures.
pub async fn overview(
    db: &dyn Database,
    scope: &Scope,
    poll_interval_s: u64,
    failures: i64,
    now: i64,
) -> DbResult<Overview> {
    let (products, ids) = products_in(db, scope).await?;
    let ids = ids.as_deref();
    let names: HashMap<i64, String> = products.iter().map(|p| (p.id, p.name.clone())).collect();
    let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
    let since = now.saturating_sub(poll_interval_s.min(i64::MAX as u64) as i64);
    let versions = db
        .version_counts(ids)
        .await?
        .into_iter()
        .map(|v| VersionShare {
            product: name(v.product_id),
            version: v.version,
            devices: v.count,
        })
        .collect();
    let mut rollouts = Vec::new();
    for p in &products {
        rollouts.extend(db.rollouts_in_state(p.id, &["running", "paused"]).await?);
    }
    rollouts.sort_by(|a, b| b.id.cmp(&a.id));
    rollouts.truncate(OVERVIEW_ROLLOUTS);
    let mut summaries = Vec::with_capacity(rollouts.len());
    for r in rollouts {
        summaries.push(summary(db, r, &name).await?);
    }
    Ok(Overview {
        poll_interval_s,
        devices: db.count_all_devices(ids).await?,
        seen_recently: db.count_seen_since(ids, since).await?,
        versions,
        states: db.state_counts(ids).await?,
        rollouts: summaries,
        failures: db
            .recent_failures(ids, failures)
            .await?
            .into_iter()
            .map(|row| Failure {
                product: name(row.product_id),
                row,
            })
            .collect(),
    })
}

async fn summary(
    db: &dyn Database,
    r: RolloutRow,
    name: &impl Fn(i64) -> String,
) -> DbResult<RolloutSummary> {
    let version = match db.get_release(&r.release_id).await {
        Ok(rel) => rel.version,
        Err(DbError::NotFound) => String::new(),
        Err(e) => return Err(e),
    };
    Ok(RolloutSummary {
        progress: progress(db, &r).await?,
        product: name(r.product_id),
        version,
        rollout: r,
    })
}

/// How many devices of the release's product run its image.
pub async fn running(db: &dyn Database, release: &ReleaseRow) -> DbResult<i64> {
    db.count_running(release.product_id, release.sha256.as_str())
        .await
}

/// Events and deployments shown on a device's page, at most.
pub const DEVICE_HISTORY: i64 = 50;

/// One deployment of a device, with the version it deploys.
#[derive(Debug, Clone)]
pub struct DeviceDeployment {
    pub row: DeploymentRow,
    /// The release's version (empty when the release is gone).
    pub version: String,
}

/// A device's page.
#[derive(Debug, Clone)]
pub struct DevicePage {
    pub device: DeviceRow,
    pub extras: DeviceExtras,
    /// Newest first.
    pub deployments: Vec<DeviceDeployment>,
    /// What it reported, newest first.
    pub events: Vec<EventRow>,
}

/// The page of device `id`, if it is in `scope` (else `NotFound`, as if absent).
pub async fn device(db: &dyn Database, scope: &Scope, id: &str) -> DbResult<DevicePage> {
    let d = db.get_device(id).await?;
    if !scope.holds(&d.product) {
        return Err(DbError::NotFound);
    }
    let (device, extras) = super::fleet::device_with_extras(db, d).await?;
    let mut versions: HashMap<String, String> = HashMap::new();
    let mut deployments = Vec::new();
    for row in db.device_deployments(id, DEVICE_HISTORY).await? {
        if !versions.contains_key(&row.release_id) {
            let v = match db.get_release(&row.release_id).await {
                Ok(r) => r.version,
                Err(DbError::NotFound) => String::new(),
                Err(e) => return Err(e),
            };
            versions.insert(row.release_id.clone(), v);
        }
        deployments.push(DeviceDeployment {
            version: versions[&row.release_id].clone(),
            row,
        });
    }
    let events = db
        .page_events(id, None, DEVICE_HISTORY)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    Ok(DevicePage {
        device,
        extras,
        deployments,
        events,
    })
}
