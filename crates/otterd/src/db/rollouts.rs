//! The rollouts' storage seam: rollouts, their stages, deployments, and job leases.
//!
//! A separate trait from [`super::Database`] (which requires it), as [`super::fleet`] is. Every
//! write that two instances could race on is one conditional statement or guarded by a unique
//! constraint, so the database decides who wins (docs/rollouts.md, "Several instances").

use async_trait::async_trait;

use super::{DbResult, DeviceState, Sha256};

/// Rollout states.
pub const ROLLOUT_STATES: [&str; 4] = ["running", "paused", "completed", "aborted"];

/// A rollout, with its stages.
#[derive(Debug, Clone)]
pub struct RolloutRow {
    pub id: String,
    pub product_id: i64,
    pub release_id: String,
    /// `channel`, `tag`, `group` or `filter`.
    pub target_kind: String,
    pub target: String,
    /// Cumulative percentages.
    pub stages: Vec<u32>,
    /// 0-based index of the open stage.
    pub current_stage: i64,
    pub state: String,
    pub pause_reason: Option<String>,
    /// `percent` or `count`.
    pub failure_kind: String,
    pub failure_threshold: i64,
    pub min_finished: i64,
    pub success_percent: Option<i64>,
    pub auto_advance: bool,
    pub soak_s: i64,
    pub rollback: bool,
    pub forced: bool,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub rate_per_minute: Option<i64>,
    pub stage_met_at: Option<i64>,
    /// Failed and finished deployments of the open stage that a resume acknowledged.
    pub ack_failed: i64,
    pub ack_finished: i64,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One device's deployment of a rollout.
#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub rollout_id: String,
    pub device_id: String,
    pub release_id: String,
    /// 0-based stage the device belongs to.
    pub stage: i64,
    pub state: DeviceState,
    pub reason: Option<String>,
    pub assigned_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// How many deployments of a stage are in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCount {
    pub stage: i64,
    pub state: DeviceState,
    pub count: i64,
}

/// Rollouts, deployments and leases.
#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// Creates a rollout and its stages in one transaction.
    async fn create_rollout(&self, r: &RolloutRow) -> DbResult<()>;
    async fn get_rollout(&self, id: &str) -> DbResult<RolloutRow>;
    /// Rollouts newest first (ids order by creation time), after the id `after`, `limit` rows;
    /// `product_ids`: only these products.
    async fn list_rollouts(
        &self,
        product_ids: Option<&[i64]>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<RolloutRow>>;
    /// A product's rollouts in these states, newest first.
    async fn rollouts_in_state(
        &self,
        product_id: i64,
        states: &[&str],
    ) -> DbResult<Vec<RolloutRow>>;
    /// Every running rollout (for the background worker).
    async fn running_rollouts(&self) -> DbResult<Vec<RolloutRow>>;
    /// SHA-256 of every release of a product that has a rollout, whatever its state.
    async fn rolled_out_images(&self, product_id: i64) -> DbResult<Vec<Sha256>>;
    /// Moves a rollout from one of `from` to `to` with a reason, resetting the soak clock;
    /// `ack` (failed, finished) acknowledged when given. `false` when it was in none of `from`.
    async fn set_rollout_state(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
        ack: Option<(i64, i64)>,
        at: i64,
    ) -> DbResult<bool>;
    /// Opens stage `stage + 1` of a running rollout whose open stage is `stage` (or completes
    /// it after its last stage). `false` when another caller moved it first.
    async fn advance_rollout(&self, id: &str, stage: i64, last: bool, at: i64) -> DbResult<bool>;
    /// Records when the open stage first met its success threshold (kept once set).
    async fn mark_stage_met(&self, id: &str, stage: i64, at: i64) -> DbResult<()>;
    /// Takes one of `rate` new-deployment slots of the minute `minute`; `false` when all are
    /// taken. One conditional statement, so instances share the count.
    async fn take_rate_slot(&self, id: &str, minute: i64, rate: i64) -> DbResult<bool>;

    /// Inserts a deployment. `Conflict` when the device has one in this rollout or an active
    /// one in any rollout.
    async fn insert_deployment(&self, d: &DeploymentRow, active: bool) -> DbResult<()>;
    /// The device's active deployment, if any.
    async fn active_deployment(&self, device_id: &str) -> DbResult<Option<DeploymentRow>>;
    async fn get_deployment(
        &self,
        rollout_id: &str,
        device_id: &str,
    ) -> DbResult<Option<DeploymentRow>>;
    /// Moves an active deployment to `state`; a final state ends it. `false` when it was not
    /// active.
    async fn update_deployment(
        &self,
        rollout_id: &str,
        device_id: &str,
        state: DeviceState,
        reason: Option<&str>,
        at: i64,
    ) -> DbResult<bool>;
    /// Cancels every active deployment of a rollout; returns how many.
    async fn cancel_deployments(&self, rollout_id: &str, reason: &str, at: i64) -> DbResult<u64>;
    /// Deployments of a rollout in order of assignment, after `after` (device id), `limit` rows.
    async fn page_deployments(
        &self,
        rollout_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<DeploymentRow>>;
    /// Counts per (stage, state).
    async fn deployment_counts(&self, rollout_id: &str) -> DbResult<Vec<StageCount>>;
    /// Every (device id, tag) pair of a product's devices.
    async fn product_device_tags(&self, product_id: i64) -> DbResult<Vec<(String, String)>>;

    /// Takes or renews the lease on job `name` for `holder` until `until`, when it is free,
    /// expired at `now`, or `holder`'s already. One conditional upsert.
    async fn acquire_lease(&self, name: &str, holder: &str, until: i64, now: i64)
        -> DbResult<bool>;
}
