//! [`GithubStore`] on every backend, written once: each backend module compiles this file as a
//! module of its own (`#[path = "github_sql.rs"] mod github_store;`), like `shared.rs`. The SQL
//! is portable (`$N` placeholders, `ON CONFLICT`).

use async_trait::async_trait;
use sqlx::Row;

use super::shared::map_err;
use super::{Backend, BackendRow};
use crate::db::github::{GithubFollowRow, GithubImportRow, GithubStore};
use crate::db::{DbError, DbResult};

const FOLLOW_COLUMNS: &str = "f.product_id, p.name AS product, f.repo, f.asset_pattern, \
     f.channel, f.token, f.sign_on_import, f.created_at, f.created_by, f.last_poll_at, f.last_error";

fn follow(r: &BackendRow) -> DbResult<GithubFollowRow> {
    Ok(GithubFollowRow {
        product_id: r.try_get("product_id").map_err(map_err)?,
        product: r.try_get("product").map_err(map_err)?,
        repo: r.try_get("repo").map_err(map_err)?,
        asset_pattern: r.try_get("asset_pattern").map_err(map_err)?,
        channel: r.try_get("channel").map_err(map_err)?,
        token: r.try_get("token").map_err(map_err)?,
        sign_on_import: r.try_get("sign_on_import").map_err(map_err)?,
        created_at: r.try_get("created_at").map_err(map_err)?,
        created_by: r.try_get("created_by").map_err(map_err)?,
        last_poll_at: r.try_get("last_poll_at").map_err(map_err)?,
        last_error: r.try_get("last_error").map_err(map_err)?,
    })
}

fn import(r: &BackendRow) -> DbResult<GithubImportRow> {
    Ok(GithubImportRow {
        product_id: r.try_get("product_id").map_err(map_err)?,
        asset_id: r.try_get("asset_id").map_err(map_err)?,
        tag_name: r.try_get("tag_name").map_err(map_err)?,
        asset_name: r.try_get("asset_name").map_err(map_err)?,
        imported: r.try_get("imported").map_err(map_err)?,
        release_id: r.try_get("release_id").map_err(map_err)?,
        reason: r.try_get("reason").map_err(map_err)?,
        at: r.try_get("at").map_err(map_err)?,
    })
}

#[async_trait]
impl GithubStore for Backend {
    async fn put_github_follow(&self, f: &GithubFollowRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO github_follows (product_id, repo, asset_pattern, channel, token, \
             sign_on_import, created_at, created_by, last_poll_at, last_error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL) \
             ON CONFLICT (product_id) DO UPDATE SET repo = excluded.repo, \
             asset_pattern = excluded.asset_pattern, channel = excluded.channel, \
             token = excluded.token, sign_on_import = excluded.sign_on_import, \
             created_at = excluded.created_at, \
             created_by = excluded.created_by, last_poll_at = NULL, last_error = NULL",
        )
        .bind(f.product_id)
        .bind(&f.repo)
        .bind(&f.asset_pattern)
        .bind(&f.channel)
        .bind(&f.token)
        .bind(f.sign_on_import)
        .bind(f.created_at)
        .bind(&f.created_by)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_github_follow(&self, product_id: i64) -> DbResult<GithubFollowRow> {
        let row = sqlx::query(&format!(
            "SELECT {FOLLOW_COLUMNS} FROM github_follows f JOIN products p ON p.id = f.product_id \
             WHERE f.product_id = $1"
        ))
        .bind(product_id)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        follow(&row)
    }

    async fn delete_github_follow(&self, product_id: i64) -> DbResult<()> {
        let done = sqlx::query("DELETE FROM github_follows WHERE product_id = $1")
            .bind(product_id)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    async fn list_github_follows(&self) -> DbResult<Vec<GithubFollowRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {FOLLOW_COLUMNS} FROM github_follows f JOIN products p ON p.id = f.product_id \
             ORDER BY f.product_id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(follow).collect()
    }

    async fn record_github_poll(
        &self,
        product_id: i64,
        at: i64,
        error: Option<&str>,
    ) -> DbResult<()> {
        sqlx::query(
            "UPDATE github_follows SET last_poll_at = $1, last_error = $2 WHERE product_id = $3",
        )
        .bind(at)
        .bind(error)
        .bind(product_id)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn github_asset_seen(&self, product_id: i64, asset_id: i64) -> DbResult<bool> {
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT asset_id FROM github_imports WHERE product_id = $1 AND asset_id = $2",
        )
        .bind(product_id)
        .bind(asset_id)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        Ok(seen.is_some())
    }

    async fn record_github_import(&self, r: &GithubImportRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO github_imports (product_id, asset_id, tag_name, asset_name, imported, \
             release_id, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (product_id, asset_id) DO NOTHING",
        )
        .bind(r.product_id)
        .bind(r.asset_id)
        .bind(&r.tag_name)
        .bind(&r.asset_name)
        .bind(r.imported)
        .bind(&r.release_id)
        .bind(&r.reason)
        .bind(r.at)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_github_imports(
        &self,
        product_id: i64,
        limit: i64,
    ) -> DbResult<Vec<GithubImportRow>> {
        let rows = sqlx::query(
            "SELECT product_id, asset_id, tag_name, asset_name, imported, release_id, reason, at \
             FROM github_imports WHERE product_id = $1 ORDER BY at DESC, asset_id DESC LIMIT $2",
        )
        .bind(product_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(import).collect()
    }
}
