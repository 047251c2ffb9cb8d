//! The reads of one device check-in in one statement (issue 10): the device by its token hash,
//! the offer generation ([`super::Database::offer_generation`]) and the device's active
//! deployment. A check-in used to make three round trips for them (on SQLite, three hops to
//! sqlx's worker thread); now it makes one.
//!
//! A separate trait from [`super::Database`] (which requires it), like [`super::fleet`].

use async_trait::async_trait;

use super::rollouts::DeploymentRow;
use super::{DbResult, DeviceRow};

/// What a check-in reads before it decides anything, read together.
#[derive(Debug, Clone)]
pub struct CheckinContext {
    pub device: DeviceRow,
    /// The offer generation, read in the same statement as the device.
    pub offer_generation: i64,
    /// The device's active deployment, if any.
    pub active_deployment: Option<DeploymentRow>,
}

/// The check-in's combined read.
#[async_trait]
pub trait CheckinStore: Send + Sync {
    /// The device whose token hashes to `token_hash` (`NotFound` if none: a revoked or
    /// replaced token is refused at once), with the offer generation and its active deployment.
    async fn checkin_context(&self, token_hash: &str) -> DbResult<CheckinContext>;
}
