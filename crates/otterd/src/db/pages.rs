//! What the dashboard reads (issue 11): counts the database computes (aggregates over indexes,
//! never rows carried to the server to be counted), a device's deployments, recent failures.
//!
//! A separate trait from [`super::Database`] (which requires it), as [`super::fleet`] is; the
//! SQL is written once for every backend in `pages_sql.rs`, with indexes of migration 0014.

use async_trait::async_trait;

use super::rollouts::DeploymentRow;
use super::DbResult;

/// How many devices of a product report a version (`None`: none reported yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    pub product_id: i64,
    pub version: Option<String>,
    pub count: i64,
}

/// How many devices last reported a state (`None`: nothing reported yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub state: Option<String>,
    pub count: i64,
}

/// A failure a device reported, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    pub event_id: i64,
    pub device_id: String,
    pub hardware_id: String,
    pub product_id: i64,
    pub at: i64,
    pub release_id: Option<String>,
    /// `failure`, `rolled_back` or `refused`.
    pub state: String,
    pub reason: Option<String>,
}

/// Event states the overview lists as failures.
pub const FAILURE_STATES: [&str; 3] = ["failure", "rolled_back", "refused"];

/// The dashboard's reads. `products`: only devices of these products (`None`: all).
#[async_trait]
pub trait PageStore: Send + Sync {
    /// Devices enrolled.
    async fn count_all_devices(&self, products: Option<&[i64]>) -> DbResult<i64>;
    /// Devices whose last check-in is at or after `since`.
    async fn count_seen_since(&self, products: Option<&[i64]>, since: i64) -> DbResult<i64>;
    /// Devices per (product, reported version), most devices first.
    async fn version_counts(&self, products: Option<&[i64]>) -> DbResult<Vec<VersionCount>>;
    /// Devices per last reported state, most devices first.
    async fn state_counts(&self, products: Option<&[i64]>) -> DbResult<Vec<StateCount>>;
    /// The newest failures devices reported ([`FAILURE_STATES`]), newest first.
    async fn recent_failures(
        &self,
        products: Option<&[i64]>,
        limit: i64,
    ) -> DbResult<Vec<FailureRow>>;
    /// Devices of a product running the image with this SHA-256 (hex, any case).
    async fn count_running(&self, product_id: i64, sha256: &str) -> DbResult<i64>;
    /// Ids of a product's devices on a channel (`tag` `false`) or carrying a tag (`tag`
    /// `true`): what a rollout preview counts, without reading whole rows.
    async fn target_device_ids(
        &self,
        product_id: i64,
        tag: bool,
        value: &str,
    ) -> DbResult<Vec<String>>;
    /// A device's deployments, newest first.
    async fn device_deployments(&self, device_id: &str, limit: i64)
        -> DbResult<Vec<DeploymentRow>>;
}
