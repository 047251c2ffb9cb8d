//! [`CheckinStore`] on every backend, written once: each backend module compiles this file as a
//! module of its own (`#[path = "checkin_sql.rs"] mod checkin_store;`), like `fleet_sql.rs`.
//! Portable SQL: a scalar subquery for the generation, a `LEFT JOIN` on the partial unique
//! index of active deployments (migration 0007), `$N` placeholders.

use async_trait::async_trait;
use sqlx::Row;

use super::shared::{device, map_err, DEVICE_COLUMNS};
use super::{Backend, BackendRow};
use crate::db::checkin::{CheckinContext, CheckinStore};
use crate::db::rollouts::DeploymentRow;
use crate::db::types::parse_stored;
use crate::db::{DbError, DbResult};

/// The device's columns (as `devices_query`), the generation, and the active deployment's
/// columns under `dep_` names (all NULL without one). Built once.
fn query() -> &'static str {
    static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    QUERY.get_or_init(|| {
        format!(
            "SELECT {DEVICE_COLUMNS}, \
         (SELECT generation FROM offer_generation WHERE id = 1) AS offer_generation, \
         dep.rollout_id AS dep_rollout_id, dep.release_id AS dep_release_id, \
         dep.stage AS dep_stage, dep.state AS dep_state, dep.reason AS dep_reason, \
         dep.assigned_at AS dep_assigned_at, dep.updated_at AS dep_updated_at, \
         dep.finished_at AS dep_finished_at \
         FROM devices d JOIN products p ON p.id = d.product_id \
         LEFT JOIN deployments dep ON dep.device_id = d.id AND dep.active \
         WHERE d.token_hash = $1"
        )
    })
}

fn context(r: &BackendRow) -> Result<CheckinContext, sqlx::Error> {
    let device = device(r)?;
    let rollout_id: Option<String> = r.try_get("dep_rollout_id")?;
    let active_deployment = match rollout_id {
        None => None,
        Some(rollout_id) => Some(DeploymentRow {
            rollout_id,
            device_id: device.id.clone(),
            release_id: r.try_get("dep_release_id")?,
            stage: r.try_get("dep_stage")?,
            state: parse_stored(
                "deployments",
                "state",
                &r.try_get::<String, _>("dep_state")?,
            )?,
            reason: r.try_get("dep_reason")?,
            assigned_at: r.try_get("dep_assigned_at")?,
            updated_at: r.try_get("dep_updated_at")?,
            finished_at: r.try_get("dep_finished_at")?,
        }),
    };
    Ok(CheckinContext {
        device,
        offer_generation: r.try_get("offer_generation")?,
        active_deployment,
    })
}

#[async_trait]
impl CheckinStore for Backend {
    async fn checkin_context(&self, token_hash: &str) -> DbResult<CheckinContext> {
        let row = sqlx::query(query())
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?;
        match row {
            Some(r) => context(&r).map_err(map_err),
            None => Err(DbError::NotFound),
        }
    }
}
