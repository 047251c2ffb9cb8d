//! [`RolloutStore`] on every backend, written once: each backend module compiles this file as a
//! module of its own (`#[path = "rollouts_sql.rs"] mod rollout_store;`), like `shared.rs`. The
//! SQL is portable (`$N` placeholders, `ON CONFLICT`, partial unique index, booleans as
//! BOOLEAN).

use async_trait::async_trait;
use sqlx::Row;

use super::shared::map_err;
use super::{Backend, BackendRow};
use crate::db::rollouts::{DeploymentRow, RolloutRow, RolloutStore, StageCount};
use crate::db::types::parse_stored;
use crate::db::{DbError, DbResult, DeviceState, Sha256};

const ROLLOUT_COLUMNS: &str = "id, product_id, release_id, target_kind, target, current_stage, \
    state, pause_reason, failure_kind, failure_threshold, min_finished, success_percent, \
    auto_advance, soak_s, is_rollback, forced, window_start, window_end, rate_per_minute, \
    stage_met_at, ack_failed, ack_finished, created_by, created_at, updated_at";

const DEPLOYMENT_COLUMNS: &str =
    "rollout_id, device_id, release_id, stage, state, reason, assigned_at, updated_at, finished_at";

fn rollout(r: &BackendRow) -> Result<RolloutRow, sqlx::Error> {
    Ok(RolloutRow {
        id: r.try_get("id")?,
        product_id: r.try_get("product_id")?,
        release_id: r.try_get("release_id")?,
        target_kind: r.try_get("target_kind")?,
        target: r.try_get("target")?,
        stages: vec![],
        current_stage: r.try_get("current_stage")?,
        state: r.try_get("state")?,
        pause_reason: r.try_get("pause_reason")?,
        failure_kind: r.try_get("failure_kind")?,
        failure_threshold: r.try_get("failure_threshold")?,
        min_finished: r.try_get("min_finished")?,
        success_percent: r.try_get("success_percent")?,
        auto_advance: r.try_get("auto_advance")?,
        soak_s: r.try_get("soak_s")?,
        rollback: r.try_get("is_rollback")?,
        forced: r.try_get("forced")?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        rate_per_minute: r.try_get("rate_per_minute")?,
        stage_met_at: r.try_get("stage_met_at")?,
        ack_failed: r.try_get("ack_failed")?,
        ack_finished: r.try_get("ack_finished")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn deployment(r: &BackendRow) -> Result<DeploymentRow, sqlx::Error> {
    Ok(DeploymentRow {
        rollout_id: r.try_get("rollout_id")?,
        device_id: r.try_get("device_id")?,
        release_id: r.try_get("release_id")?,
        stage: r.try_get("stage")?,
        state: parse_stored("deployments", "state", &r.try_get::<String, _>("state")?)?,
        reason: r.try_get("reason")?,
        assigned_at: r.try_get("assigned_at")?,
        updated_at: r.try_get("updated_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Backend {
    /// Rows to rollouts, each with its stages.
    async fn with_stages(&self, rows: Vec<BackendRow>) -> DbResult<Vec<RolloutRow>> {
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut ro = rollout(r).map_err(map_err)?;
            let stages: Vec<i64> = sqlx::query_scalar(
                "SELECT percent FROM rollout_stages WHERE rollout_id = $1 ORDER BY stage",
            )
            .bind(&ro.id)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
            ro.stages = stages.into_iter().map(|p| p as u32).collect();
            out.push(ro);
        }
        Ok(out)
    }
}

#[async_trait]
impl RolloutStore for Backend {
    async fn create_rollout(&self, r: &RolloutRow) -> DbResult<()> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(&format!(
            "INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"
        ))
        .bind(&r.id)
        .bind(r.product_id)
        .bind(&r.release_id)
        .bind(&r.target_kind)
        .bind(&r.target)
        .bind(r.current_stage)
        .bind(&r.state)
        .bind(&r.pause_reason)
        .bind(&r.failure_kind)
        .bind(r.failure_threshold)
        .bind(r.min_finished)
        .bind(r.success_percent)
        .bind(r.auto_advance)
        .bind(r.soak_s)
        .bind(r.rollback)
        .bind(r.forced)
        .bind(r.window_start)
        .bind(r.window_end)
        .bind(r.rate_per_minute)
        .bind(r.stage_met_at)
        .bind(r.ack_failed)
        .bind(r.ack_finished)
        .bind(&r.created_by)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        for (i, p) in r.stages.iter().enumerate() {
            sqlx::query(
                "INSERT INTO rollout_stages (rollout_id, stage, percent) VALUES ($1, $2, $3)",
            )
            .bind(&r.id)
            .bind(i as i64)
            .bind(i64::from(*p))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn get_rollout(&self, id: &str) -> DbResult<RolloutRow> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        self.with_stages(vec![row])
            .await?
            .pop()
            .ok_or(DbError::NotFound)
    }

    async fn list_rollouts(
        &self,
        product_ids: Option<&[i64]>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<RolloutRow>> {
        // Explicit branches: `id < $1` only with a cursor, an IN list only with products.
        let mut conditions = Vec::new();
        let mut n = 0;
        if after.is_some() {
            n += 1;
            conditions.push(format!("id < ${n}"));
        }
        if let Some(ids) = product_ids {
            if ids.is_empty() {
                return Ok(vec![]);
            }
            let list: Vec<String> = ids
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            conditions.push(format!("product_id IN ({})", list.join(", ")));
        }
        let filter = match conditions.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", conditions.join(" AND ")),
        };
        let sql = format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts {filter} ORDER BY id DESC LIMIT ${}",
            n + 1
        );
        let mut q = sqlx::query(&sql);
        if let Some(a) = after {
            q = q.bind(a);
        }
        for id in product_ids.unwrap_or_default() {
            q = q.bind(*id);
        }
        let rows = q
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        self.with_stages(rows).await
    }

    async fn rollouts_in_state(
        &self,
        product_id: i64,
        states: &[&str],
    ) -> DbResult<Vec<RolloutRow>> {
        // At most four states: an explicit list of placeholders.
        let list: Vec<String> = (0..states.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE product_id = $1 AND state IN ({}) \
             ORDER BY created_at DESC, id DESC",
            if list.is_empty() {
                "NULL".to_string()
            } else {
                list.join(", ")
            }
        );
        let mut q = sqlx::query(&sql).bind(product_id);
        for s in states {
            q = q.bind(*s);
        }
        let rows = q.fetch_all(self.pool()).await.map_err(map_err)?;
        self.with_stages(rows).await
    }

    async fn running_rollouts(&self) -> DbResult<Vec<RolloutRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE state = 'running' ORDER BY created_at"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        self.with_stages(rows).await
    }

    async fn rolled_out_images(&self, product_id: i64) -> DbResult<Vec<Sha256>> {
        let hexes: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT r.sha256 FROM rollouts o JOIN releases r ON r.id = o.release_id \
             WHERE o.product_id = $1",
        )
        .bind(product_id)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        hexes
            .iter()
            .map(|h| parse_stored("releases", "sha256", h))
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn set_rollout_state(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        reason: Option<&str>,
        ack: Option<(i64, i64)>,
        at: i64,
    ) -> DbResult<bool> {
        // `from` has at most four states: an explicit list of placeholders.
        let mut sql = String::from(
            "UPDATE rollouts SET state = $1, pause_reason = $2, stage_met_at = NULL, \
             updated_at = $3, \
             ack_failed = CASE WHEN $4 >= 0 THEN $4 ELSE ack_failed END, \
             ack_finished = CASE WHEN $5 >= 0 THEN $5 ELSE ack_finished END \
             WHERE id = $6 AND state IN (",
        );
        for i in 0..from.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", i + 7));
        }
        sql.push(')');
        let mut q = sqlx::query(&sql)
            .bind(to)
            .bind(reason)
            .bind(at)
            .bind(ack.map_or(-1, |a| a.0))
            .bind(ack.map_or(-1, |a| a.1))
            .bind(id);
        for s in from {
            q = q.bind(*s);
        }
        let done = q.execute(self.pool()).await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn advance_rollout(&self, id: &str, stage: i64, last: bool, at: i64) -> DbResult<bool> {
        let done = if last {
            sqlx::query(
                "UPDATE rollouts SET state = 'completed', stage_met_at = NULL, updated_at = $1 \
                 WHERE id = $2 AND state = 'running' AND current_stage = $3",
            )
            .bind(at)
            .bind(id)
            .bind(stage)
            .execute(self.pool())
            .await
        } else {
            sqlx::query(
                "UPDATE rollouts SET current_stage = current_stage + 1, stage_met_at = NULL, \
                 ack_failed = 0, ack_finished = 0, updated_at = $1 WHERE id = $2 AND state = 'running' AND current_stage = $3",
            )
            .bind(at)
            .bind(id)
            .bind(stage)
            .execute(self.pool())
            .await
        }
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_stage_met(&self, id: &str, stage: i64, at: i64) -> DbResult<()> {
        sqlx::query(
            "UPDATE rollouts SET stage_met_at = $1 WHERE id = $2 AND current_stage = $3 \
             AND stage_met_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .bind(stage)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn take_rate_slot(&self, id: &str, minute: i64, rate: i64) -> DbResult<bool> {
        let done = sqlx::query(
            "UPDATE rollouts SET rate_count = CASE WHEN rate_minute = $1 THEN rate_count + 1 \
             ELSE 1 END, rate_minute = $1 \
             WHERE id = $2 AND (rate_minute <> $1 OR rate_count < $3)",
        )
        .bind(minute)
        .bind(id)
        .bind(rate)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_deployment(&self, d: &DeploymentRow, active: bool) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO deployments (rollout_id, device_id, release_id, stage, state, active, \
             reason, assigned_at, updated_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&d.rollout_id)
        .bind(&d.device_id)
        .bind(&d.release_id)
        .bind(d.stage)
        .bind(d.state.as_str())
        .bind(active)
        .bind(&d.reason)
        .bind(d.assigned_at)
        .bind(d.updated_at)
        .bind(d.finished_at)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn active_deployment(&self, device_id: &str) -> DbResult<Option<DeploymentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE device_id = $1 AND active"
        ))
        .bind(device_id)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        row.map(|r| deployment(&r)).transpose().map_err(map_err)
    }

    async fn get_deployment(
        &self,
        rollout_id: &str,
        device_id: &str,
    ) -> DbResult<Option<DeploymentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE rollout_id = $1 AND device_id = $2"
        ))
        .bind(rollout_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        row.map(|r| deployment(&r)).transpose().map_err(map_err)
    }

    async fn update_deployment(
        &self,
        rollout_id: &str,
        device_id: &str,
        state: DeviceState,
        reason: Option<&str>,
        at: i64,
    ) -> DbResult<bool> {
        let fin = state.is_final();
        let done = sqlx::query(
            "UPDATE deployments SET state = $1, reason = $2, updated_at = $3, active = $4, \
             finished_at = $5 WHERE rollout_id = $6 AND device_id = $7 AND active",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(at)
        .bind(!fin)
        .bind(fin.then_some(at))
        .bind(rollout_id)
        .bind(device_id)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel_deployments(&self, rollout_id: &str, reason: &str, at: i64) -> DbResult<u64> {
        let done = sqlx::query(
            "UPDATE deployments SET state = 'cancelled', reason = $1, updated_at = $2, \
             active = FALSE, finished_at = $2 WHERE rollout_id = $3 AND active",
        )
        .bind(reason)
        .bind(at)
        .bind(rollout_id)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn page_deployments(
        &self,
        rollout_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<DeploymentRow>> {
        let rows = match after {
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE rollout_id = $1 \
                     AND device_id > $2 ORDER BY device_id LIMIT $3"
                ))
                .bind(rollout_id)
                .bind(after)
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE rollout_id = $1 \
                     ORDER BY device_id LIMIT $2"
                ))
                .bind(rollout_id)
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
        }
        .map_err(map_err)?;
        rows.iter()
            .map(deployment)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn deployment_counts(&self, rollout_id: &str) -> DbResult<Vec<StageCount>> {
        let rows = sqlx::query(
            "SELECT stage, state, COUNT(*) AS n FROM deployments WHERE rollout_id = $1 \
             GROUP BY stage, state ORDER BY stage, state",
        )
        .bind(rollout_id)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(StageCount {
                    stage: r.try_get("stage")?,
                    state: parse_stored("deployments", "state", &r.try_get::<String, _>("state")?)?,
                    count: r.try_get("n")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn product_device_tags(&self, product_id: i64) -> DbResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT t.device_id, t.tag FROM device_tags t JOIN devices d ON d.id = t.device_id \
             WHERE d.product_id = $1",
        )
        .bind(product_id)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get("device_id")?, r.try_get("tag")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        until: i64,
        now: i64,
    ) -> DbResult<bool> {
        let done = sqlx::query(
            "INSERT INTO job_leases (name, holder, until) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE job_leases.until < $4 OR job_leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
