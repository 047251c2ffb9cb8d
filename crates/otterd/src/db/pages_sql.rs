//! [`PageStore`] on every backend, written once (`#[path = "pages_sql.rs"] mod page_store;` in
//! each backend module, like `fleet_sql.rs`). Portable SQL: `$N` placeholders, aggregates only.

use async_trait::async_trait;
use sqlx::Row;

use super::shared::map_err;
use super::{Backend, BackendRow};
use crate::db::pages::{FailureRow, PageStore, StateCount, VersionCount, FAILURE_STATES};
use crate::db::rollouts::DeploymentRow;
use crate::db::types::parse_stored;
use crate::db::DbResult;

/// ` AND <col> IN ($first, ...)` for a product scope, or nothing; an empty scope matches no
/// row.
fn scope(col: &str, products: Option<&[i64]>, first: usize) -> String {
    match products {
        None => String::new(),
        Some([]) => " AND 1 = 0".into(),
        Some(ids) => {
            let list: Vec<String> = (first..first + ids.len())
                .map(|i| format!("${i}"))
                .collect();
            format!(" AND {col} IN ({})", list.join(", "))
        }
    }
}

/// Binds a product scope's ids after the other values.
fn bind_scope<'q>(
    mut q: sqlx::query::Query<
        'q,
        super::BackendDb,
        <super::BackendDb as sqlx::Database>::Arguments<'q>,
    >,
    products: Option<&[i64]>,
) -> sqlx::query::Query<'q, super::BackendDb, <super::BackendDb as sqlx::Database>::Arguments<'q>> {
    for id in products.unwrap_or_default() {
        q = q.bind(*id);
    }
    q
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

#[async_trait]
impl PageStore for Backend {
    async fn count_all_devices(&self, products: Option<&[i64]>) -> DbResult<i64> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM devices WHERE 1 = 1{}",
            scope("product_id", products, 1)
        );
        let r = bind_scope(sqlx::query(&sql), products)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
        r.try_get("n").map_err(map_err)
    }

    async fn count_seen_since(&self, products: Option<&[i64]>, since: i64) -> DbResult<i64> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM devices WHERE last_seen_at >= $1{}",
            scope("product_id", products, 2)
        );
        let r = bind_scope(sqlx::query(&sql).bind(since), products)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
        r.try_get("n").map_err(map_err)
    }

    async fn version_counts(&self, products: Option<&[i64]>) -> DbResult<Vec<VersionCount>> {
        let sql = format!(
            "SELECT product_id, version, COUNT(*) AS n FROM devices WHERE 1 = 1{} \
             GROUP BY product_id, version ORDER BY n DESC, product_id, version",
            scope("product_id", products, 1)
        );
        let rows = bind_scope(sqlx::query(&sql), products)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(VersionCount {
                    product_id: r.try_get("product_id")?,
                    version: r.try_get("version")?,
                    count: r.try_get("n")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn state_counts(&self, products: Option<&[i64]>) -> DbResult<Vec<StateCount>> {
        let sql = format!(
            "SELECT last_state, COUNT(*) AS n FROM devices WHERE 1 = 1{} \
             GROUP BY last_state ORDER BY n DESC, last_state",
            scope("product_id", products, 1)
        );
        let rows = bind_scope(sqlx::query(&sql), products)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(StateCount {
                    state: r.try_get("last_state")?,
                    count: r.try_get("n")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(map_err)
    }

    async fn recent_failures(
        &self,
        products: Option<&[i64]>,
        limit: i64,
    ) -> DbResult<Vec<FailureRow>> {
        // Newest first per state from the (state, id) index, merged: each state contributes at
        // most `limit` rows, so the work does not grow with the history.
        let mut out: Vec<FailureRow> = Vec::new();
        for state in FAILURE_STATES {
            let sql = format!(
                "SELECT e.id, e.device_id, d.hardware_id, d.product_id, e.at, e.release_id, \
                 e.state, e.reason FROM device_events e JOIN devices d ON d.id = e.device_id \
                 WHERE e.state = $1{} ORDER BY e.id DESC LIMIT ${}",
                scope("d.product_id", products, 2),
                2 + products.map_or(0, <[i64]>::len)
            );
            let rows = bind_scope(sqlx::query(&sql).bind(state), products)
                .bind(limit)
                .fetch_all(self.pool())
                .await
                .map_err(map_err)?;
            for r in &rows {
                let f = (|| {
                    Ok::<_, sqlx::Error>(FailureRow {
                        event_id: r.try_get("id")?,
                        device_id: r.try_get("device_id")?,
                        hardware_id: r.try_get("hardware_id")?,
                        product_id: r.try_get("product_id")?,
                        at: r.try_get("at")?,
                        release_id: r.try_get("release_id")?,
                        state: parse_stored(
                            "deployments",
                            "state",
                            &r.try_get::<String, _>("state")?,
                        )?,
                        reason: r.try_get("reason")?,
                    })
                })()
                .map_err(map_err)?;
                out.push(f);
            }
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.event_id));
        out.truncate(limit.max(0) as usize);
        Ok(out)
    }

    async fn count_running(&self, product_id: i64, sha256: &str) -> DbResult<i64> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n FROM devices WHERE product_id = $1 AND image_sha256 = $2",
        )
        .bind(product_id)
        .bind(sha256.to_ascii_lowercase())
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        r.try_get("n").map_err(map_err)
    }

    async fn target_device_ids(
        &self,
        product_id: i64,
        tag: bool,
        value: &str,
    ) -> DbResult<Vec<String>> {
        let sql = if tag {
            // From the tag's index first (CROSS JOIN keeps that order in SQLite; other
            // databases plan it themselves).
            "SELECT d.id FROM device_tags t CROSS JOIN devices d \
             WHERE t.tag = $1 AND d.id = t.device_id AND d.product_id = $2"
        } else {
            "SELECT id FROM devices WHERE channel = $1 AND product_id = $2"
        };
        sqlx::query_scalar(sql)
            .bind(value)
            .bind(product_id)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)
    }

    async fn device_deployments(
        &self,
        device_id: &str,
        limit: i64,
    ) -> DbResult<Vec<DeploymentRow>> {
        let rows = sqlx::query(
            "SELECT rollout_id, device_id, release_id, stage, state, reason, assigned_at, \
             updated_at, finished_at FROM deployments WHERE device_id = $1 \
             ORDER BY assigned_at DESC, rollout_id DESC LIMIT $2",
        )
        .bind(device_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(deployment)
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }
}
