// FleetStore on every backend, written once: each backend module includes this file in a module
// of its own (`mod fleet_store { include!("fleet_sql.rs"); }`), where `super::Backend` is its
// type and `super::map_err` its error mapping. The SQL is portable (`$N` placeholders,
// `ON CONFLICT`). Further stores follow the same pattern.

use async_trait::async_trait;
use sqlx::Row;

use super::{map_err, Backend};
use crate::db::fleet::{FleetStore, GroupRow};
use crate::db::{DbError, DbResult};

#[async_trait]
impl FleetStore for Backend {
    async fn device_tags(&self, device_id: &str) -> DbResult<Vec<String>> {
        sqlx::query_scalar("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag")
            .bind(device_id)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)
    }

    async fn tag_device(&self, device_id: &str, tags: &[String]) -> DbResult<Vec<String>> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        // Refuses an unknown device instead of failing on the foreign key.
        sqlx::query("SELECT id FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        for tag in tags {
            sqlx::query(
                "INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(device_id)
            .bind(tag)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        self.device_tags(device_id).await
    }

    async fn untag_device(&self, device_id: &str, tags: &[String]) -> DbResult<Vec<String>> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query("SELECT id FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        for tag in tags {
            sqlx::query("DELETE FROM device_tags WHERE device_id = $1 AND tag = $2")
                .bind(device_id)
                .bind(tag)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        self.device_tags(device_id).await
    }

    async fn create_group(&self, g: &GroupRow, members: &[String]) -> DbResult<()> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO device_groups (id, product_id, name, filter, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&g.id)
        .bind(g.product_id)
        .bind(&g.name)
        .bind(&g.filter)
        .bind(g.created_at)
        .bind(&g.created_by)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        for device_id in members {
            // Only devices of the group's product may be members.
            let added = sqlx::query(
                "INSERT INTO device_group_members (group_id, device_id) \
                 SELECT $1, id FROM devices WHERE id = $2 AND product_id = $3 \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&g.id)
            .bind(device_id)
            .bind(g.product_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if added.rows_affected() == 0 {
                let listed: Option<String> = sqlx::query_scalar(
                    "SELECT device_id FROM device_group_members WHERE group_id = $1 AND device_id = $2",
                )
                .bind(&g.id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                if listed.is_none() {
                    return Err(DbError::NotFound);
                }
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn get_group(&self, product_id: i64, name: &str) -> DbResult<GroupRow> {
        let r = sqlx::query(
            "SELECT id, product_id, name, filter, created_at, created_by FROM device_groups \
             WHERE product_id = $1 AND name = $2",
        )
        .bind(product_id)
        .bind(name)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        Ok(GroupRow {
            id: r.try_get("id").map_err(map_err)?,
            product_id: r.try_get("product_id").map_err(map_err)?,
            name: r.try_get("name").map_err(map_err)?,
            filter: r.try_get("filter").map_err(map_err)?,
            created_at: r.try_get("created_at").map_err(map_err)?,
            created_by: r.try_get("created_by").map_err(map_err)?,
        })
    }

    async fn group_has_device(&self, group_id: &str, device_id: &str) -> DbResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT device_id FROM device_group_members WHERE group_id = $1 AND device_id = $2",
        )
        .bind(group_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        Ok(found.is_some())
    }
}
