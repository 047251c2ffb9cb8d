//! The queries of [`Database`](crate::db::Database), written once for every backend.
//!
//! Each backend module compiles this file as a module of its own (`#[path = "shared.rs"] mod
//! shared;` in [`crate::db::sqlite`] and [`crate::db::postgres`]), where `super::Backend` is its
//! type. The SQL is portable: `$N` placeholders (which sqlx's SQLite driver also reads),
//! `ON CONFLICT ... DO NOTHING`, row-value comparisons for keyset pages, and optional filters
//! added by [`sqlx::QueryBuilder`] only when present rather than `$1 IS NULL` idioms.
//!
//! The backend module supplies the few things that differ between dialects:
//! - `Backend` (with `pool` and `history_max` fields), `BackendDb` (its `sqlx::Database`) and
//!   `BackendRow` (its row type);
//! - `Backend::RELEASE_SEQ`, the column that orders releases published in the same second;
//! - `conflict_name(&dyn DatabaseError) -> String`, the constraint a unique violation broke, as
//!   `table(column, ...)`;
//! - `Backend::serialize(&mut Transaction, Serial)`: makes transactions that check a rule
//!   across rows (see [`Serial`]) take turns, also across instances;
//! - `Backend::checkpoint_now(&self)`: the log checkpoint (a no-op where there is none).

use async_trait::async_trait;
use sqlx::Row;

use super::{conflict_name, Backend, BackendDb, BackendRow};
use crate::db::serial::Serial;
use crate::db::types::{parse_stored, parse_stored_opt};
use crate::db::{
    AuditFilter, AuditRow, CheckinReport, Database, DbError, DbResult, DeviceInsert, DeviceRow,
    EnrollmentPolicy, EventRow, KeyRow, PayloadRow, ProductRow, ReleaseFilter, ReleaseRow, Sha256,
    TokenRow, LAST_ADMIN,
};

pub(super) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Backend(Box::new(e))
}

pub(super) fn map_err(e: sqlx::Error) -> DbError {
    match &e {
        sqlx::Error::RowNotFound => DbError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            DbError::Conflict(conflict_name(&**d))
        }
        _ => backend(e),
    }
}

fn product(r: &BackendRow) -> Result<ProductRow, sqlx::Error> {
    Ok(ProductRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        chip: parse_stored("products", "chip", &r.try_get::<String, _>("chip")?)?,
        description: r.try_get("description")?,
        enrollment_secret_hash: r.try_get("enrollment_secret_hash")?,
        created_at: r.try_get("created_at")?,
        max_devices: r.try_get("max_devices")?,
        enrollments_per_minute: r.try_get("enrollments_per_minute")?,
        allowlist_required: r.try_get("allowlist_required")?,
    })
}

fn key(r: &BackendRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        product_id: r.try_get("product_id")?,
        key_id: r.try_get("key_id")?,
        name: r.try_get("name")?,
        public_key_pem: r.try_get("public_key_pem")?,
        created_at: r.try_get("created_at")?,
    })
}

fn release_columns() -> String {
    format!(
        "r.id, r.product_id, p.name AS product, r.channel, r.version, r.chip, \
         r.security_counter, r.size, r.sha256, r.manifest_created_at, r.expires_at, \
         r.envelope, r.signed_by, r.project_name, r.idf_version, r.published_at, \
         r.published_by, {} AS seq",
        Backend::RELEASE_SEQ
    )
}

fn release(r: &BackendRow) -> Result<ReleaseRow, sqlx::Error> {
    Ok(ReleaseRow {
        id: r.try_get("id")?,
        product_id: r.try_get("product_id")?,
        product: r.try_get("product")?,
        channel: r.try_get("channel")?,
        version: r.try_get("version")?,
        chip: parse_stored("releases", "chip", &r.try_get::<String, _>("chip")?)?,
        security_counter: r.try_get("security_counter")?,
        size: r.try_get("size")?,
        sha256: parse_stored("releases", "sha256", &r.try_get::<String, _>("sha256")?)?,
        manifest_created_at: r.try_get("manifest_created_at")?,
        expires_at: r.try_get("expires_at")?,
        envelope: r.try_get("envelope")?,
        signed_by: r.try_get("signed_by")?,
        project_name: r.try_get("project_name")?,
        idf_version: r.try_get("idf_version")?,
        published_at: r.try_get("published_at")?,
        published_by: r.try_get("published_by")?,
    })
}

fn token(r: &BackendRow) -> Result<TokenRow, sqlx::Error> {
    let products: String = r.try_get("products")?;
    let role: String = r.try_get("role")?;
    Ok(TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: parse_stored("tokens", "role", &role)?,
        products: serde_json::from_str(&products).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        token_hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) const DEVICE_COLUMNS: &str = "d.id, d.product_id, p.name AS product, d.hardware_id, \
    d.channel, d.token_hash, d.enrollment_nonce_hash, d.chip, d.version, \
    d.security_counter, d.image_sha256, d.partition_size, d.last_state, d.enrolled_at, \
    d.last_seen_at";

pub(super) fn device(r: &BackendRow) -> Result<DeviceRow, sqlx::Error> {
    Ok(DeviceRow {
        id: r.try_get("id")?,
        product_id: r.try_get("product_id")?,
        product: r.try_get("product")?,
        hardware_id: r.try_get("hardware_id")?,
        channel: r.try_get("channel")?,
        token_hash: r.try_get("token_hash")?,
        enrollment_nonce_hash: r.try_get("enrollment_nonce_hash")?,
        chip: parse_stored_opt("devices", "chip", r.try_get("chip")?)?,
        version: r.try_get("version")?,
        security_counter: r.try_get("security_counter")?,
        image_sha256: parse_stored_opt("devices", "image_sha256", r.try_get("image_sha256")?)?,
        partition_size: r.try_get("partition_size")?,
        last_state: parse_stored_opt("devices", "last_state", r.try_get("last_state")?)?,
        enrolled_at: r.try_get("enrolled_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
    })
}

fn event(r: &BackendRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        device_id: r.try_get("device_id")?,
        at: r.try_get("at")?,
        release_id: r.try_get("release_id")?,
        state: parse_stored("device_events", "state", &r.try_get::<String, _>("state")?)?,
        progress_bytes: r.try_get("progress_bytes")?,
        reason: r.try_get("reason")?,
    })
}

fn one<T>(row: Option<BackendRow>, f: fn(&BackendRow) -> Result<T, sqlx::Error>) -> DbResult<T> {
    match row {
        Some(r) => f(&r).map_err(map_err),
        None => Err(DbError::NotFound),
    }
}

pub(super) fn all<T>(
    rows: Vec<BackendRow>,
    f: fn(&BackendRow) -> Result<T, sqlx::Error>,
) -> DbResult<Vec<T>> {
    rows.iter().map(|r| f(r).map_err(map_err)).collect()
}

fn affected(n: u64) -> DbResult<()> {
    if n == 0 {
        Err(DbError::NotFound)
    } else {
        Ok(())
    }
}

/// Appends ` AND column IN (...)` for a scope list; an empty list matches nothing.
fn push_in<'a>(q: &mut sqlx::QueryBuilder<'a, BackendDb>, column: &str, values: &'a [String]) {
    if values.is_empty() {
        q.push(" AND 1 = 0");
        return;
    }
    q.push(format!(" AND {column} IN ("));
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v.as_str());
    }
    list.push_unseparated(")");
}

/// `SELECT` of releases joined with their product, `WHERE` opened for filters.
fn releases_query<'a>() -> sqlx::QueryBuilder<'a, BackendDb> {
    sqlx::QueryBuilder::new(format!(
        "SELECT {} FROM releases r JOIN products p ON p.id = r.product_id WHERE 1 = 1",
        release_columns()
    ))
}

fn devices_query<'a>() -> sqlx::QueryBuilder<'a, BackendDb> {
    sqlx::QueryBuilder::new(format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d JOIN products p ON p.id = d.product_id \
         WHERE 1 = 1"
    ))
}

fn filter_releases<'a>(q: &mut sqlx::QueryBuilder<'a, BackendDb>, f: &'a ReleaseFilter) {
    if let Some(product) = &f.product {
        q.push(" AND p.name = ").push_bind(product.as_str());
    }
    if let Some(channel) = &f.channel {
        q.push(" AND r.channel = ").push_bind(channel.as_str());
    }
}

const INSERT_RELEASE: &str = "INSERT INTO releases (id, product_id, channel, version, chip, \
    security_counter, size, sha256, manifest_created_at, expires_at, envelope, signed_by, \
    project_name, idf_version, published_at, published_by) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

fn bind_release<'q>(
    q: sqlx::query::Query<'q, BackendDb, <BackendDb as sqlx::Database>::Arguments<'q>>,
    r: &'q ReleaseRow,
) -> sqlx::query::Query<'q, BackendDb, <BackendDb as sqlx::Database>::Arguments<'q>> {
    q.bind(&r.id)
        .bind(r.product_id)
        .bind(&r.channel)
        .bind(&r.version)
        .bind(r.chip.name())
        .bind(r.security_counter)
        .bind(r.size)
        .bind(r.sha256.as_str())
        .bind(r.manifest_created_at)
        .bind(r.expires_at)
        .bind(&r.envelope)
        .bind(&r.signed_by)
        .bind(&r.project_name)
        .bind(&r.idf_version)
        .bind(r.published_at)
        .bind(&r.published_by)
}

const INSERT_TOKEN: &str = "INSERT INTO tokens (id, name, role, products, token_hash, \
    created_at) VALUES ($1, $2, $3, $4, $5, $6)";

fn bind_token<'q>(
    q: sqlx::query::Query<'q, BackendDb, <BackendDb as sqlx::Database>::Arguments<'q>>,
    t: &'q TokenRow,
) -> sqlx::query::Query<'q, BackendDb, <BackendDb as sqlx::Database>::Arguments<'q>> {
    q.bind(&t.id)
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(serde_json::to_string(&t.products).expect("a list of strings serialises"))
        .bind(&t.token_hash)
        .bind(t.created_at)
}

#[async_trait]
impl Database for Backend {
    async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_product(&self, p: &ProductRow) -> DbResult<ProductRow> {
        let row = sqlx::query(
            "INSERT INTO products (name, chip, description, enrollment_secret_hash, \
             created_at, max_devices, enrollments_per_minute, allowlist_required) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(&p.name)
        .bind(p.chip.name())
        .bind(&p.description)
        .bind(&p.enrollment_secret_hash)
        .bind(p.created_at)
        .bind(p.max_devices)
        .bind(p.enrollments_per_minute)
        .bind(p.allowlist_required)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        product(&row).map_err(map_err)
    }

    async fn list_products(&self) -> DbResult<Vec<ProductRow>> {
        let rows = sqlx::query("SELECT * FROM products ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        all(rows, product)
    }

    async fn get_product(&self, name: &str) -> DbResult<ProductRow> {
        let row = sqlx::query("SELECT * FROM products WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, product)
    }

    async fn set_enrollment_secret(&self, product_id: i64, secret_hash: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE products SET enrollment_secret_hash = $1 WHERE id = $2")
            .bind(secret_hash)
            .bind(product_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn add_key(&self, k: &KeyRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO product_keys (product_id, key_id, name, public_key_pem, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(k.product_id)
        .bind(&k.key_id)
        .bind(&k.name)
        .bind(&k.public_key_pem)
        .bind(k.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_keys(&self, product_id: i64) -> DbResult<Vec<KeyRow>> {
        let rows = sqlx::query(
            "SELECT * FROM product_keys WHERE product_id = $1 ORDER BY created_at, key_id",
        )
        .bind(product_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        all(rows, key)
    }

    async fn delete_key(&self, product_id: i64, key_id: &str) -> DbResult<()> {
        let r = sqlx::query("DELETE FROM product_keys WHERE product_id = $1 AND key_id = $2")
            .bind(product_id)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn insert_release(&self, r: &ReleaseRow) -> DbResult<()> {
        bind_release(sqlx::query(INSERT_RELEASE), r)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn insert_release_with_payloads(
        &self,
        r: &ReleaseRow,
        payloads: &[PayloadRow],
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        bind_release(sqlx::query(INSERT_RELEASE), r)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        for p in payloads {
            sqlx::query(
                "INSERT INTO release_payloads (release_id, position, kind, size, sha256, md5) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&r.id)
            .bind(p.position)
            .bind(p.kind.as_str())
            .bind(p.size)
            .bind(p.sha256.as_str())
            .bind(&p.md5)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn release_payloads(&self, release_id: &str) -> DbResult<Vec<PayloadRow>> {
        let rows = sqlx::query(
            "SELECT release_id, position, kind, size, sha256, md5 FROM release_payloads \
             WHERE release_id = $1 ORDER BY position",
        )
        .bind(release_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind").map_err(map_err)?;
                Ok(PayloadRow {
                    release_id: r.try_get("release_id").map_err(map_err)?,
                    position: r.try_get("position").map_err(map_err)?,
                    kind: kind
                        .parse()
                        .map_err(|e: String| DbError::Backend(e.into()))?,
                    size: r.try_get("size").map_err(map_err)?,
                    sha256: parse_stored(
                        "release_payloads",
                        "sha256",
                        &r.try_get::<String, _>("sha256").map_err(map_err)?,
                    )
                    .map_err(map_err)?,
                    md5: r.try_get("md5").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn add_release_payload(&self, p: &PayloadRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO release_payloads (release_id, position, kind, size, sha256, md5) \
             SELECT $1, COALESCE(MAX(position), -1) + 1, $2, $3, $4, $5 FROM release_payloads \
             WHERE release_id = $1",
        )
        .bind(&p.release_id)
        .bind(p.kind.as_str())
        .bind(p.size)
        .bind(p.sha256.as_str())
        .bind(&p.md5)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn set_payload_md5(&self, release_id: &str, position: i64, md5: &str) -> DbResult<()> {
        sqlx::query("UPDATE release_payloads SET md5 = $1 WHERE release_id = $2 AND position = $3")
            .bind(md5)
            .bind(release_id)
            .bind(position)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get_release(&self, id: &str) -> DbResult<ReleaseRow> {
        let mut q = releases_query();
        q.push(" AND r.id = ").push_bind(id);
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, release)
    }

    async fn find_release(
        &self,
        product_id: i64,
        channel: &str,
        version: &str,
    ) -> DbResult<Option<ReleaseRow>> {
        let mut q = releases_query();
        q.push(" AND r.product_id = ").push_bind(product_id);
        q.push(" AND r.channel = ").push_bind(channel);
        q.push(" AND r.version = ").push_bind(version);
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| release(&r).map_err(map_err)).transpose()
    }

    async fn list_releases(&self, f: &ReleaseFilter) -> DbResult<Vec<ReleaseRow>> {
        let mut q = releases_query();
        filter_releases(&mut q, f);
        q.push(format!(
            " ORDER BY r.published_at DESC, {} DESC LIMIT ",
            Backend::RELEASE_SEQ
        ))
        .push_bind(if f.limit > 0 { f.limit } else { 1000 });
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, release)
    }

    async fn release_candidates(
        &self,
        product_id: i64,
        channel: &str,
        min_security_counter: i64,
        now: i64,
    ) -> DbResult<Vec<ReleaseRow>> {
        let mut q = releases_query();
        q.push(" AND r.product_id = ").push_bind(product_id);
        q.push(" AND r.channel = ").push_bind(channel);
        q.push(" AND r.security_counter >= ")
            .push_bind(min_security_counter);
        q.push(" AND (r.expires_at IS NULL OR r.expires_at > ")
            .push_bind(now)
            .push(")");
        q.push(format!(
            " ORDER BY r.published_at DESC, {} DESC LIMIT 64",
            Backend::RELEASE_SEQ
        ));
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, release)
    }

    async fn highest_counter_release(
        &self,
        product_id: i64,
        channel: &str,
    ) -> DbResult<Option<ReleaseRow>> {
        let mut q = releases_query();
        q.push(" AND r.product_id = ").push_bind(product_id);
        q.push(" AND r.channel = ").push_bind(channel);
        q.push(format!(
            " ORDER BY r.security_counter DESC, r.published_at DESC, {} DESC LIMIT 1",
            Backend::RELEASE_SEQ
        ));
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| release(&r).map_err(map_err)).transpose()
    }

    async fn blob_referenced(&self, sha256_hex: &str) -> DbResult<bool> {
        let row = sqlx::query("SELECT 1 FROM releases WHERE sha256 = $1 LIMIT 1")
            .bind(sha256_hex)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        if row.is_some() {
            return Ok(true);
        }
        // A payload other than the full image has a blob of its own (issue 9).
        let row = sqlx::query("SELECT 1 FROM release_payloads WHERE sha256 = $1 LIMIT 1")
            .bind(sha256_hex)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn create_token(&self, t: &TokenRow) -> DbResult<()> {
        bind_token(sqlx::query(INSERT_TOKEN), t)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_first_token(&self, t: &TokenRow) -> DbResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        Backend::serialize(&mut tx, Serial::FirstStart).await?;
        // One statement: no other writer can slip a token in between the check and
        // the insert.
        let r = bind_token(
            sqlx::query(
                "INSERT INTO tokens (id, name, role, products, token_hash, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6 \
                 WHERE NOT EXISTS (SELECT 1 FROM tokens)",
            ),
            t,
        )
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn count_tokens(&self) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        row.try_get("n").map_err(map_err)
    }

    async fn find_token(&self, token_hash: &str) -> DbResult<TokenRow> {
        let row = sqlx::query("SELECT * FROM tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, token)
    }

    async fn list_tokens(&self) -> DbResult<Vec<TokenRow>> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        all(rows, token)
    }

    async fn revoke_token(&self, id: &str, at: i64) -> DbResult<()> {
        // One statement, and revocations taking turns, so two at once cannot both
        // remove "the other" last admin.
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        Backend::serialize(&mut tx, Serial::Admins).await?;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND (role <> 'admin' OR (SELECT COUNT(*) FROM tokens \
             WHERE role = 'admin' AND revoked_at IS NULL) > 1)",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if r.rows_affected() == 0 {
            let active_admin = sqlx::query(
                "SELECT 1 FROM tokens WHERE id = $1 AND revoked_at IS NULL \
                 AND role = 'admin'",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
            if active_admin.is_some() {
                return Err(DbError::Conflict(LAST_ADMIN.into()));
            }
        }
        tx.commit().await.map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn touch_token(&self, id: &str, at: i64) -> DbResult<()> {
        // At most one write a minute per token: last_used_at is for people, not for
        // accounting.
        sqlx::query(
            "UPDATE tokens SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(at)
        .bind(id)
        .bind(at - 60)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn insert_device(&self, d: &DeviceRow) -> DbResult<DeviceInsert> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // A write to the product's row first: PostgreSQL locks the row until the commit, and
        // SQLite takes its one write lock, so enrolments into one product take turns between
        // counting and inserting, on every instance (issue 9).
        let cap: Option<i64> = sqlx::query(
            "UPDATE products SET max_devices = max_devices WHERE id = $1 RETURNING max_devices",
        )
        .bind(d.product_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(DbError::NotFound)?
        .try_get("max_devices")
        .map_err(map_err)?;
        if let Some(max_devices) = cap {
            let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM devices WHERE product_id = $1")
                .bind(d.product_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?
                .try_get("n")
                .map_err(map_err)?;
            if n >= max_devices {
                return Ok(DeviceInsert::AtCap { max_devices });
            }
        }
        sqlx::query(
            "INSERT INTO devices (id, product_id, hardware_id, channel, token_hash, \
             enrollment_nonce_hash, enrolled_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.id)
        .bind(d.product_id)
        .bind(&d.hardware_id)
        .bind(&d.channel)
        .bind(&d.token_hash)
        .bind(&d.enrollment_nonce_hash)
        .bind(d.enrolled_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(DeviceInsert::Inserted)
    }

    async fn find_device(&self, token_hash: &str) -> DbResult<DeviceRow> {
        let mut q = devices_query();
        q.push(" AND d.token_hash = ").push_bind(token_hash);
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, device)
    }

    async fn find_device_by_hardware_id(
        &self,
        product_id: i64,
        hardware_id: &str,
    ) -> DbResult<DeviceRow> {
        let mut q = devices_query();
        q.push(" AND d.product_id = ").push_bind(product_id);
        q.push(" AND d.hardware_id = ").push_bind(hardware_id);
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, device)
    }

    async fn set_device_token(&self, device_id: &str, token_hash: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE devices SET token_hash = $1 WHERE id = $2")
            .bind(token_hash)
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn get_device(&self, id: &str) -> DbResult<DeviceRow> {
        let mut q = devices_query();
        q.push(" AND d.id = ").push_bind(id);
        let row = q
            .build()
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, device)
    }

    async fn list_devices(&self, product_id: Option<i64>) -> DbResult<Vec<DeviceRow>> {
        let mut q = devices_query();
        if let Some(id) = product_id {
            q.push(" AND d.product_id = ").push_bind(id);
        }
        q.push(" ORDER BY d.enrolled_at, d.id");
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, device)
    }

    async fn record_checkin(&self, device_id: &str, r: &CheckinReport) -> DbResult<()> {
        let res = sqlx::query(
            "UPDATE devices SET chip = $1, version = $2, security_counter = $3, \
             image_sha256 = $4, partition_size = COALESCE($5, partition_size), \
             last_seen_at = $6 WHERE id = $7",
        )
        .bind(r.chip.name())
        .bind(&r.version)
        .bind(r.security_counter)
        .bind(r.image_sha256.as_ref().map(Sha256::as_str))
        .bind(r.partition_size)
        .bind(r.at)
        .bind(device_id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        affected(res.rows_affected())
    }

    async fn set_device_channel(&self, device_id: &str, channel: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE devices SET channel = $1 WHERE id = $2")
            .bind(channel)
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn delete_device(&self, device_id: &str) -> DbResult<()> {
        let r = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn add_event(&self, e: &EventRow) -> DbResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO device_events (device_id, at, release_id, state, \
             progress_bytes, reason) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&e.device_id)
        .bind(e.at)
        .bind(&e.release_id)
        .bind(e.state.as_str())
        .bind(e.progress_bytes)
        .bind(&e.reason)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "UPDATE devices SET last_state = $1, last_reason = $2, last_release_id = $3, \
             last_seen_at = $4 WHERE id = $5",
        )
        .bind(e.state.as_str())
        .bind(&e.reason)
        .bind(&e.release_id)
        .bind(e.at)
        .bind(&e.device_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if self.history_max > 0 {
            // Keep the newest `history_max` events of this device (the index on
            // (device_id, id) makes this a short range delete).
            sqlx::query(
                "DELETE FROM device_events WHERE device_id = $1 AND id <= \
                 (SELECT id FROM device_events WHERE device_id = $1 \
                 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&e.device_id)
            .bind(self.history_max)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn list_events(&self, device_id: &str, limit: i64) -> DbResult<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT * FROM device_events WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(device_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        all(rows, event)
    }

    async fn set_enrollment_policy(&self, product_id: i64, p: &EnrollmentPolicy) -> DbResult<()> {
        let r = sqlx::query(
            "UPDATE products SET max_devices = $1, enrollments_per_minute = $2, \
             allowlist_required = $3 WHERE id = $4",
        )
        .bind(p.max_devices)
        .bind(p.enrollments_per_minute)
        .bind(p.allowlist_required)
        .bind(product_id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn count_devices(&self, product_id: i64) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM devices WHERE product_id = $1")
            .bind(product_id)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        row.try_get("n").map_err(map_err)
    }

    async fn allowlist_add(
        &self,
        product_id: i64,
        hardware_ids: &[String],
        at: i64,
    ) -> DbResult<u64> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut added = 0;
        for id in hardware_ids {
            let r = sqlx::query(
                "INSERT INTO product_allowlist (product_id, hardware_id, added_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (product_id, hardware_id) DO NOTHING",
            )
            .bind(product_id)
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            added += r.rows_affected();
        }
        tx.commit().await.map_err(map_err)?;
        Ok(added)
    }

    async fn allowlist_remove(&self, product_id: i64, hardware_id: &str) -> DbResult<()> {
        let r =
            sqlx::query("DELETE FROM product_allowlist WHERE product_id = $1 AND hardware_id = $2")
                .bind(product_id)
                .bind(hardware_id)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn allowlist_contains(&self, product_id: i64, hardware_id: &str) -> DbResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM product_allowlist WHERE product_id = $1 AND hardware_id = $2",
        )
        .bind(product_id)
        .bind(hardware_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn allowlist_count(&self, product_id: i64) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM product_allowlist WHERE product_id = $1")
            .bind(product_id)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        row.try_get("n").map_err(map_err)
    }

    async fn allowlist_page(
        &self,
        product_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<String>> {
        let mut q = sqlx::QueryBuilder::<BackendDb>::new(
            "SELECT hardware_id FROM product_allowlist WHERE product_id = ",
        );
        q.push_bind(product_id);
        if let Some(after) = after {
            q.push(" AND hardware_id > ").push_bind(after);
        }
        q.push(" ORDER BY hardware_id LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| r.try_get("hardware_id").map_err(map_err))
            .collect()
    }

    async fn allow_reenroll(&self, device_id: &str, until: i64, by: &str) -> DbResult<()> {
        let r =
            sqlx::query("UPDATE devices SET reenroll_until = $1, reenroll_by = $2 WHERE id = $3")
                .bind(until)
                .bind(by)
                .bind(device_id)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn take_reenrollment(
        &self,
        device_id: &str,
        token_hash: &str,
        nonce_hash: Option<&str>,
        at: i64,
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let r = sqlx::query(
            "UPDATE devices SET token_hash = $1, enrollment_nonce_hash = $2, \
             reenroll_until = NULL, reenroll_by = NULL \
             WHERE id = $3 AND reenroll_until >= $4",
        )
        .bind(token_hash)
        .bind(nonce_hash)
        .bind(device_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        affected(r.rows_affected())?;
        sqlx::query(
            "INSERT INTO device_events (device_id, at, release_id, state, \
             progress_bytes, reason) VALUES ($1, $2, NULL, 'reenrolled', NULL, $3)",
        )
        .bind(device_id)
        .bind(at)
        .bind(
            "enrolled again with the product secret after an admin allowed it once; \
             the old token no longer works",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn page_products(
        &self,
        after: Option<&str>,
        limit: i64,
        only: Option<&[String]>,
    ) -> DbResult<Vec<ProductRow>> {
        let mut q = sqlx::QueryBuilder::<BackendDb>::new("SELECT * FROM products WHERE 1 = 1");
        if let Some(after) = after {
            q.push(" AND name > ").push_bind(after);
        }
        if let Some(only) = only {
            push_in(&mut q, "name", only);
        }
        q.push(" ORDER BY name LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, product)
    }

    async fn page_keys(
        &self,
        product_id: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<KeyRow>> {
        let mut q =
            sqlx::QueryBuilder::<BackendDb>::new("SELECT * FROM product_keys WHERE product_id = ");
        q.push_bind(product_id);
        if let Some((at, id)) = after {
            q.push(" AND (created_at, key_id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY created_at, key_id LIMIT ")
            .push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, key)
    }

    async fn page_releases(
        &self,
        f: &ReleaseFilter,
        only: Option<&[String]>,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> DbResult<Vec<(i64, ReleaseRow)>> {
        let seq = Backend::RELEASE_SEQ;
        let mut q = releases_query();
        filter_releases(&mut q, f);
        if let Some(only) = only {
            push_in(&mut q, "p.name", only);
        }
        if let Some((at, after_seq)) = after {
            q.push(format!(" AND (r.published_at, {seq}) < ("))
                .push_bind(at)
                .push(", ")
                .push_bind(after_seq)
                .push(")");
        }
        q.push(format!(" ORDER BY r.published_at DESC, {seq} DESC LIMIT "))
            .push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("seq").map_err(map_err)?,
                    release(r).map_err(map_err)?,
                ))
            })
            .collect()
    }

    async fn page_tokens(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<TokenRow>> {
        let mut q = sqlx::QueryBuilder::<BackendDb>::new("SELECT * FROM tokens WHERE 1 = 1");
        if let Some((at, id)) = after {
            q.push(" AND (created_at, id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY created_at, id LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, token)
    }

    async fn page_devices(
        &self,
        product_id: Option<i64>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<DeviceRow>> {
        let mut q = devices_query();
        if let Some(id) = product_id {
            q.push(" AND d.product_id = ").push_bind(id);
        }
        if let Some((at, id)) = after {
            q.push(" AND (d.enrolled_at, d.id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY d.enrolled_at, d.id LIMIT ")
            .push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        all(rows, device)
    }

    async fn page_events(
        &self,
        device_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<(i64, EventRow)>> {
        let mut q =
            sqlx::QueryBuilder::<BackendDb>::new("SELECT * FROM device_events WHERE device_id = ");
        q.push_bind(device_id);
        if let Some(before) = before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id").map_err(map_err)?,
                    event(r).map_err(map_err)?,
                ))
            })
            .collect()
    }

    async fn checkpoint(&self) -> DbResult<()> {
        self.checkpoint_now().await
    }

    async fn append_audit(&self, e: &AuditRow) -> DbResult<i64> {
        super::audit::append(&self.pool, e).await
    }

    async fn page_audit(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<AuditRow>> {
        super::audit::page(&self.pool, f, before, limit).await
    }
}
