//! [`FleetStore`] on SQLite. The SQL is portable (`$N` placeholders, `ON CONFLICT`).

use async_trait::async_trait;
use sqlx::Row;

use std::collections::HashMap;

use sqlx::sqlite::SqliteRow;

use super::fleet::{Bind, DeviceExtras, DeviceSelection, FleetStore, GroupRow};
use super::sqlite::{device, map_err, Sqlite, DEVICE_COLUMNS};
use super::{DbError, DbResult, DeviceRow};

fn group(r: &SqliteRow) -> DbResult<GroupRow> {
    Ok(GroupRow {
        id: r.try_get("id").map_err(map_err)?,
        product_id: r.try_get("product_id").map_err(map_err)?,
        name: r.try_get("name").map_err(map_err)?,
        filter: r.try_get("filter").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
        created_by: r.try_get("created_by").map_err(map_err)?,
    })
}

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts static members in the open transaction; `NotFound` when a device is unknown or of
/// another product.
async fn insert_members(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    g: &GroupRow,
    members: &[String],
) -> DbResult<()> {
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
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        if added.rows_affected() == 0 {
            let listed: Option<String> = sqlx::query_scalar(
                "SELECT device_id FROM device_group_members WHERE group_id = $1 AND device_id = $2",
            )
            .bind(&g.id)
            .bind(device_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_err)?;
            if listed.is_none() {
                return Err(DbError::NotFound);
            }
        }
    }
    Ok(())
}

#[async_trait]
impl FleetStore for Sqlite {
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
        insert_members(&mut tx, g, members).await?;
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
        group(&r)
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

    async fn page_selected_devices(
        &self,
        sel: &DeviceSelection,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<DeviceRow>> {
        let (cond, binds) = sel.where_sql(1);
        let n = binds.len();
        let keyset = match after {
            Some(_) => format!(" AND (d.enrolled_at, d.id) > (${}, ${})", n + 1, n + 2),
            None => String::new(),
        };
        let limit_at = if after.is_some() { n + 3 } else { n + 1 };
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM {} WHERE {cond}{keyset} \
             ORDER BY d.enrolled_at, d.id LIMIT ${limit_at}",
            sel.from_sql()
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Int(i) => q.bind(i),
                Bind::Text(t) => q.bind(t),
            };
        }
        if let Some((at, id)) = after {
            q = q.bind(at).bind(id);
        }
        let rows = q
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        rows.iter().map(|r| device(r).map_err(map_err)).collect()
    }

    async fn device_extras(&self, ids: &[String]) -> DbResult<HashMap<String, DeviceExtras>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let list = placeholders(1, ids.len());
        let sql =
            format!("SELECT id, last_reason, last_release_id FROM devices WHERE id IN ({list})");
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(self.pool()).await.map_err(map_err)? {
            out.insert(
                r.try_get::<String, _>("id").map_err(map_err)?,
                DeviceExtras {
                    tags: Vec::new(),
                    last_reason: r.try_get("last_reason").map_err(map_err)?,
                    last_release_id: r.try_get("last_release_id").map_err(map_err)?,
                },
            );
        }
        let sql = format!(
            "SELECT device_id, tag FROM device_tags WHERE device_id IN ({list}) ORDER BY device_id, tag"
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(self.pool()).await.map_err(map_err)? {
            let id: String = r.try_get("device_id").map_err(map_err)?;
            if let Some(e) = out.get_mut(&id) {
                e.tags.push(r.try_get("tag").map_err(map_err)?);
            }
        }
        Ok(out)
    }

    async fn tag_device_capped(
        &self,
        device_id: &str,
        tags: &[String],
        max: usize,
    ) -> DbResult<Vec<String>> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        // Takes the device's row for writing first (a row lock on PostgreSQL, the write lock on
        // SQLite), so two concurrent requests cannot both pass the cap.
        let found = sqlx::query("UPDATE devices SET partition_size = partition_size WHERE id = $1")
            .bind(device_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if found.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
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
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM device_tags WHERE device_id = $1")
                .bind(device_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
        if count as u64 > max as u64 {
            tx.rollback().await.map_err(map_err)?;
            return Err(DbError::Conflict(format!(
                "a device carries at most {max} tags (max_tags_per_device); this would make {count}"
            )));
        }
        tx.commit().await.map_err(map_err)?;
        self.device_tags(device_id).await
    }

    async fn page_groups(
        &self,
        product_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<GroupRow>> {
        let rows = match after {
            Some(a) => sqlx::query(
                "SELECT id, product_id, name, filter, created_at, created_by FROM device_groups \
                 WHERE product_id = $1 AND name > $2 ORDER BY name LIMIT $3",
            )
            .bind(product_id)
            .bind(a)
            .bind(limit),
            None => sqlx::query(
                "SELECT id, product_id, name, filter, created_at, created_by FROM device_groups \
                 WHERE product_id = $1 ORDER BY name LIMIT $2",
            )
            .bind(product_id)
            .bind(limit),
        }
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(group).collect()
    }

    async fn delete_group(&self, group_id: &str) -> DbResult<()> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM device_group_members WHERE group_id = $1")
            .bind(group_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let r = sqlx::query("DELETE FROM device_groups WHERE id = $1")
            .bind(group_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if r.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        tx.commit().await.map_err(map_err)
    }

    async fn add_group_members(&self, g: &GroupRow, devices: &[String]) -> DbResult<()> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        insert_members(&mut tx, g, devices).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn remove_group_members(&self, group_id: &str, devices: &[String]) -> DbResult<()> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        for d in devices {
            sqlx::query("DELETE FROM device_group_members WHERE group_id = $1 AND device_id = $2")
                .bind(group_id)
                .bind(d)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn count_group_members(&self, group_id: &str) -> DbResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM device_group_members WHERE group_id = $1")
            .bind(group_id)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)
    }

    async fn count_tagged(&self, tag: &str) -> DbResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM device_tags WHERE tag = $1")
            .bind(tag)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)
    }
}
