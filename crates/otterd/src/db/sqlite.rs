//! [`Database`] on SQLite: the embedded default, one file in the data directory.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::*;

mod audit;

/// The SQLite backend.
#[derive(Clone)]
pub struct Sqlite {
    pool: SqlitePool,
    /// Newest events kept per device (0: all).
    history_max: i64,
}

/// Bounds on what the SQLite files hold (issue 8, item 14).
#[derive(Debug, Clone, Copy)]
pub struct SqliteBounds {
    /// Newest events kept per device; older ones are deleted as new ones arrive (0: keep all).
    pub history_max: i64,
    /// `PRAGMA journal_size_limit`: the write-ahead log is cut back to this size after each
    /// checkpoint.
    pub wal_size_limit_bytes: u64,
}

impl Default for SqliteBounds {
    fn default() -> Self {
        SqliteBounds {
            history_max: 1000,
            wal_size_limit_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Sqlite {
    /// The connection pool, for the other stores of this backend.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens (creating if missing) the database at `url` (`sqlite://path` or a plain path) and
    /// runs the migrations.
    pub async fn open(url: &str) -> DbResult<Self> {
        Self::open_with(url, SqliteBounds::default()).await
    }

    /// [`Sqlite::open`] with explicit bounds.
    pub async fn open_with(url: &str, bounds: SqliteBounds) -> DbResult<Self> {
        let opts = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(backend)?
        } else {
            SqliteConnectOptions::new().filename(Path::new(url))
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL survives a killed process without losing committed rows; only a power
        // cut of the host can lose the last transactions, never corrupt the file.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .pragma(
            "journal_size_limit",
            bounds.wal_size_limit_bytes.to_string(),
        )
        .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| DbError::Backend(Box::new(e)))?;
        Ok(Sqlite {
            pool,
            history_max: bounds.history_max,
        })
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Backend(Box::new(e))
}

pub(super) fn map_err(e: sqlx::Error) -> DbError {
    match &e {
        sqlx::Error::RowNotFound => DbError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            DbError::Conflict(d.message().to_string())
        }
        _ => backend(e),
    }
}

fn product(r: &SqliteRow) -> Result<ProductRow, sqlx::Error> {
    Ok(ProductRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        chip: r.try_get("chip")?,
        description: r.try_get("description")?,
        enrollment_secret_hash: r.try_get("enrollment_secret_hash")?,
        created_at: r.try_get("created_at")?,
        max_devices: r.try_get("max_devices")?,
        enrollments_per_minute: r.try_get("enrollments_per_minute")?,
        allowlist_required: r.try_get("allowlist_required")?,
    })
}

fn key(r: &SqliteRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        product_id: r.try_get("product_id")?,
        key_id: r.try_get("key_id")?,
        name: r.try_get("name")?,
        public_key_pem: r.try_get("public_key_pem")?,
        created_at: r.try_get("created_at")?,
    })
}

const RELEASE_COLUMNS: &str = "r.id, r.product_id, p.name AS product, r.channel, r.version, r.chip, \
    r.security_counter, r.size, r.sha256, r.manifest_created_at, r.expires_at, r.envelope, r.signed_by, \
    r.project_name, r.idf_version, r.published_at, r.published_by";

fn release(r: &SqliteRow) -> Result<ReleaseRow, sqlx::Error> {
    Ok(ReleaseRow {
        id: r.try_get("id")?,
        product_id: r.try_get("product_id")?,
        product: r.try_get("product")?,
        channel: r.try_get("channel")?,
        version: r.try_get("version")?,
        chip: r.try_get("chip")?,
        security_counter: r.try_get("security_counter")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
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

fn token(r: &SqliteRow) -> Result<TokenRow, sqlx::Error> {
    let products: String = r.try_get("products")?;
    Ok(TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        products: serde_json::from_str(&products).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        token_hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

pub(super) const DEVICE_COLUMNS: &str = "d.id, d.product_id, p.name AS product, d.hardware_id, d.channel, d.token_hash, \
    d.enrollment_nonce_hash, d.chip, d.version, d.security_counter, d.image_sha256, d.partition_size, d.last_state, d.enrolled_at, d.last_seen_at";

pub(super) fn device(r: &SqliteRow) -> Result<DeviceRow, sqlx::Error> {
    Ok(DeviceRow {
        id: r.try_get("id")?,
        product_id: r.try_get("product_id")?,
        product: r.try_get("product")?,
        hardware_id: r.try_get("hardware_id")?,
        channel: r.try_get("channel")?,
        token_hash: r.try_get("token_hash")?,
        enrollment_nonce_hash: r.try_get("enrollment_nonce_hash")?,
        chip: r.try_get("chip")?,
        version: r.try_get("version")?,
        security_counter: r.try_get("security_counter")?,
        image_sha256: r.try_get("image_sha256")?,
        partition_size: r.try_get("partition_size")?,
        last_state: r.try_get("last_state")?,
        enrolled_at: r.try_get("enrolled_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
    })
}

fn event(r: &SqliteRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        device_id: r.try_get("device_id")?,
        at: r.try_get("at")?,
        release_id: r.try_get("release_id")?,
        state: r.try_get("state")?,
        progress_bytes: r.try_get("progress_bytes")?,
        reason: r.try_get("reason")?,
    })
}

fn one<T>(row: Option<SqliteRow>, f: fn(&SqliteRow) -> Result<T, sqlx::Error>) -> DbResult<T> {
    match row {
        Some(r) => f(&r).map_err(map_err),
        None => Err(DbError::NotFound),
    }
}

fn all<T>(rows: Vec<SqliteRow>, f: fn(&SqliteRow) -> Result<T, sqlx::Error>) -> DbResult<Vec<T>> {
    rows.iter().map(|r| f(r).map_err(map_err)).collect()
}

fn affected(n: u64) -> DbResult<()> {
    if n == 0 {
        Err(DbError::NotFound)
    } else {
        Ok(())
    }
}

#[async_trait]
impl Database for Sqlite {
    async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_product(&self, p: &ProductRow) -> DbResult<ProductRow> {
        let row = sqlx::query(
            "INSERT INTO products (name, chip, description, enrollment_secret_hash, created_at, \
             max_devices, enrollments_per_minute, allowlist_required) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&p.name)
        .bind(&p.chip)
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
        let row = sqlx::query("SELECT * FROM products WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, product)
    }

    async fn set_enrollment_secret(&self, product_id: i64, secret_hash: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE products SET enrollment_secret_hash = ? WHERE id = ?")
            .bind(secret_hash)
            .bind(product_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn add_key(&self, k: &KeyRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO product_keys (product_id, key_id, name, public_key_pem, created_at) VALUES (?, ?, ?, ?, ?)",
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
            "SELECT * FROM product_keys WHERE product_id = ? ORDER BY created_at, key_id",
        )
        .bind(product_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        all(rows, key)
    }

    async fn delete_key(&self, product_id: i64, key_id: &str) -> DbResult<()> {
        let r = sqlx::query("DELETE FROM product_keys WHERE product_id = ? AND key_id = ?")
            .bind(product_id)
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn insert_release(&self, r: &ReleaseRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO releases (id, product_id, channel, version, chip, security_counter, size, sha256, \
             manifest_created_at, expires_at, envelope, signed_by, project_name, idf_version, published_at, published_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(r.product_id)
        .bind(&r.channel)
        .bind(&r.version)
        .bind(&r.chip)
        .bind(r.security_counter)
        .bind(r.size)
        .bind(&r.sha256)
        .bind(r.manifest_created_at)
        .bind(r.expires_at)
        .bind(&r.envelope)
        .bind(&r.signed_by)
        .bind(&r.project_name)
        .bind(&r.idf_version)
        .bind(r.published_at)
        .bind(&r.published_by)
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
        sqlx::query(
            "INSERT INTO releases (id, product_id, channel, version, chip, security_counter, size, sha256, \
             manifest_created_at, expires_at, envelope, signed_by, project_name, idf_version, published_at, published_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&r.id)
        .bind(r.product_id)
        .bind(&r.channel)
        .bind(&r.version)
        .bind(&r.chip)
        .bind(r.security_counter)
        .bind(r.size)
        .bind(&r.sha256)
        .bind(r.manifest_created_at)
        .bind(r.expires_at)
        .bind(&r.envelope)
        .bind(&r.signed_by)
        .bind(&r.project_name)
        .bind(&r.idf_version)
        .bind(r.published_at)
        .bind(&r.published_by)
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
            .bind(&p.sha256)
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
                    sha256: r.try_get("sha256").map_err(map_err)?,
                    md5: r.try_get("md5").map_err(map_err)?,
                })
            })
            .collect()
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
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases r JOIN products p ON p.id = r.product_id WHERE r.id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
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
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases r JOIN products p ON p.id = r.product_id \
             WHERE r.product_id = ? AND r.channel = ? AND r.version = ?"
        );
        let row = sqlx::query(&sql)
            .bind(product_id)
            .bind(channel)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| release(&r).map_err(map_err)).transpose()
    }

    async fn list_releases(&self, f: &ReleaseFilter) -> DbResult<Vec<ReleaseRow>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases r JOIN products p ON p.id = r.product_id \
             WHERE (?1 IS NULL OR p.name = ?1) AND (?2 IS NULL OR r.channel = ?2) \
             ORDER BY r.published_at DESC, r.rowid DESC LIMIT ?3"
        );
        let rows = sqlx::query(&sql)
            .bind(&f.product)
            .bind(&f.channel)
            .bind(if f.limit > 0 { f.limit } else { 1000 })
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        all(rows, release)
    }

    async fn release_candidates(
        &self,
        product_id: i64,
        channel: &str,
        min_security_counter: i64,
        now: i64,
    ) -> DbResult<Vec<ReleaseRow>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases r JOIN products p ON p.id = r.product_id \
             WHERE r.product_id = ? AND r.channel = ? AND r.security_counter >= ? \
             AND (r.expires_at IS NULL OR r.expires_at > ?) \
             ORDER BY r.published_at DESC, r.rowid DESC LIMIT 64"
        );
        let rows = sqlx::query(&sql)
            .bind(product_id)
            .bind(channel)
            .bind(min_security_counter)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        all(rows, release)
    }

    async fn highest_counter_release(
        &self,
        product_id: i64,
        channel: &str,
    ) -> DbResult<Option<ReleaseRow>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases r JOIN products p ON p.id = r.product_id \
             WHERE r.product_id = ? AND r.channel = ? \
             ORDER BY r.security_counter DESC, r.published_at DESC, r.rowid DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(product_id)
            .bind(channel)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| release(&r).map_err(map_err)).transpose()
    }

    async fn blob_referenced(&self, sha256_hex: &str) -> DbResult<bool> {
        let row = sqlx::query("SELECT 1 FROM releases WHERE sha256 = ? LIMIT 1")
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
        sqlx::query(
            "INSERT INTO tokens (id, name, role, products, token_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(serde_json::to_string(&t.products).expect("a list of strings serialises"))
        .bind(&t.token_hash)
        .bind(t.created_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn count_tokens(&self) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        row.try_get("n").map_err(map_err)
    }

    async fn find_token(&self, token_hash: &str) -> DbResult<TokenRow> {
        let row = sqlx::query("SELECT * FROM tokens WHERE token_hash = ?")
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
        // One statement, so two revocations at once cannot both remove "the other" last admin.
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL \
             AND (role <> 'admin' OR (SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND revoked_at IS NULL) > 1)",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        if r.rows_affected() == 0 {
            let active_admin = sqlx::query(
                "SELECT 1 FROM tokens WHERE id = ? AND revoked_at IS NULL AND role = 'admin'",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
            if active_admin.is_some() {
                return Err(DbError::Conflict(LAST_ADMIN.into()));
            }
        }
        affected(r.rows_affected())
    }

    async fn touch_token(&self, id: &str, at: i64) -> DbResult<()> {
        // At most one write a minute per token: last_used_at is for people, not for accounting.
        sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
            .bind(at)
            .bind(id)
            .bind(at - 60)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn insert_device(&self, d: &DeviceRow) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO devices (id, product_id, hardware_id, channel, token_hash, enrollment_nonce_hash, enrolled_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.id)
        .bind(d.product_id)
        .bind(&d.hardware_id)
        .bind(&d.channel)
        .bind(&d.token_hash)
        .bind(&d.enrollment_nonce_hash)
        .bind(d.enrolled_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn find_device(&self, token_hash: &str) -> DbResult<DeviceRow> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d JOIN products p ON p.id = d.product_id WHERE d.token_hash = ?");
        let row = sqlx::query(&sql)
            .bind(token_hash)
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
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN products p ON p.id = d.product_id \
             WHERE d.product_id = ? AND d.hardware_id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(product_id)
            .bind(hardware_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, device)
    }

    async fn set_device_token(&self, device_id: &str, token_hash: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE devices SET token_hash = ? WHERE id = ?")
            .bind(token_hash)
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn get_device(&self, id: &str) -> DbResult<DeviceRow> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d JOIN products p ON p.id = d.product_id WHERE d.id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        one(row, device)
    }

    async fn list_devices(&self, product_id: Option<i64>) -> DbResult<Vec<DeviceRow>> {
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN products p ON p.id = d.product_id \
             WHERE (?1 IS NULL OR d.product_id = ?1) ORDER BY d.enrolled_at, d.id"
        );
        let rows = sqlx::query(&sql)
            .bind(product_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        all(rows, device)
    }

    async fn record_checkin(&self, device_id: &str, r: &CheckinReport) -> DbResult<()> {
        let res = sqlx::query(
            "UPDATE devices SET chip = ?, version = ?, security_counter = ?, image_sha256 = ?, \
             partition_size = COALESCE(?, partition_size), last_seen_at = ? WHERE id = ?",
        )
        .bind(&r.chip)
        .bind(&r.version)
        .bind(r.security_counter)
        .bind(&r.image_sha256)
        .bind(r.partition_size)
        .bind(r.at)
        .bind(device_id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        affected(res.rows_affected())
    }

    async fn set_device_channel(&self, device_id: &str, channel: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE devices SET channel = ? WHERE id = ?")
            .bind(channel)
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn delete_device(&self, device_id: &str) -> DbResult<()> {
        let r = sqlx::query("DELETE FROM devices WHERE id = ?")
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn add_event(&self, e: &EventRow) -> DbResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO device_events (device_id, at, release_id, state, progress_bytes, reason) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.device_id)
        .bind(e.at)
        .bind(&e.release_id)
        .bind(&e.state)
        .bind(e.progress_bytes)
        .bind(&e.reason)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("UPDATE devices SET last_state = ?, last_reason = ?, last_release_id = ?, last_seen_at = ? WHERE id = ?")
            .bind(&e.state)
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
                "DELETE FROM device_events WHERE device_id = ?1 AND id <= \
                 (SELECT id FROM device_events WHERE device_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
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
        let rows =
            sqlx::query("SELECT * FROM device_events WHERE device_id = ? ORDER BY id DESC LIMIT ?")
                .bind(device_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        all(rows, event)
    }
    async fn set_enrollment_policy(&self, product_id: i64, p: &EnrollmentPolicy) -> DbResult<()> {
        let r = sqlx::query(
            "UPDATE products SET max_devices = ?, enrollments_per_minute = ?, allowlist_required = ? WHERE id = ?",
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
        let row = sqlx::query("SELECT COUNT(*) AS n FROM devices WHERE product_id = ?")
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
                "INSERT OR IGNORE INTO product_allowlist (product_id, hardware_id, added_at) VALUES (?, ?, ?)",
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
            sqlx::query("DELETE FROM product_allowlist WHERE product_id = ? AND hardware_id = ?")
                .bind(product_id)
                .bind(hardware_id)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        affected(r.rows_affected())
    }

    async fn allowlist_contains(&self, product_id: i64, hardware_id: &str) -> DbResult<bool> {
        let row =
            sqlx::query("SELECT 1 FROM product_allowlist WHERE product_id = ? AND hardware_id = ?")
                .bind(product_id)
                .bind(hardware_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn allowlist_count(&self, product_id: i64) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM product_allowlist WHERE product_id = ?")
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
        let rows = sqlx::query(
            "SELECT hardware_id FROM product_allowlist WHERE product_id = ?1 \
             AND (?2 IS NULL OR hardware_id > ?2) ORDER BY hardware_id LIMIT ?3",
        )
        .bind(product_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| r.try_get("hardware_id").map_err(map_err))
            .collect()
    }

    async fn allow_reenroll(&self, device_id: &str, until: i64, by: &str) -> DbResult<()> {
        let r = sqlx::query("UPDATE devices SET reenroll_until = ?, reenroll_by = ? WHERE id = ?")
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
            "UPDATE devices SET token_hash = ?, enrollment_nonce_hash = ?, reenroll_until = NULL, \
             reenroll_by = NULL WHERE id = ? AND reenroll_until >= ?",
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
            "INSERT INTO device_events (device_id, at, release_id, state, progress_bytes, reason) \
             VALUES (?, ?, NULL, 'reenrolled', NULL, ?)",
        )
        .bind(device_id)
        .bind(at)
        .bind("enrolled again with the product secret after an admin allowed it once; the old token no longer works")
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
        let only = only.map(|o| serde_json::to_string(o).expect("a list of strings serialises"));
        let rows = sqlx::query(
            "SELECT * FROM products WHERE (?1 IS NULL OR name > ?1) \
             AND (?2 IS NULL OR name IN (SELECT value FROM json_each(?2))) ORDER BY name LIMIT ?3",
        )
        .bind(after)
        .bind(only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        all(rows, product)
    }

    async fn page_keys(
        &self,
        product_id: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<KeyRow>> {
        let (at, id) = after.unzip();
        let rows = sqlx::query(
            "SELECT * FROM product_keys WHERE product_id = ?1 \
             AND (?2 IS NULL OR (created_at, key_id) > (?2, ?3)) ORDER BY created_at, key_id LIMIT ?4",
        )
        .bind(product_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        all(rows, key)
    }

    async fn page_releases(
        &self,
        f: &ReleaseFilter,
        only: Option<&[String]>,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> DbResult<Vec<(i64, ReleaseRow)>> {
        let only = only.map(|o| serde_json::to_string(o).expect("a list of strings serialises"));
        let (at, seq) = after.unzip();
        let sql = format!(
            "SELECT {RELEASE_COLUMNS}, r.rowid AS seq FROM releases r JOIN products p ON p.id = r.product_id \
             WHERE (?1 IS NULL OR p.name = ?1) AND (?2 IS NULL OR r.channel = ?2) \
             AND (?3 IS NULL OR p.name IN (SELECT value FROM json_each(?3))) \
             AND (?4 IS NULL OR (r.published_at, r.rowid) < (?4, ?5)) \
             ORDER BY r.published_at DESC, r.rowid DESC LIMIT ?6"
        );
        let rows = sqlx::query(&sql)
            .bind(&f.product)
            .bind(&f.channel)
            .bind(only)
            .bind(at)
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
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
        let (at, id) = after.unzip();
        let rows = sqlx::query(
            "SELECT * FROM tokens WHERE (?1 IS NULL OR (created_at, id) > (?1, ?2)) \
             ORDER BY created_at, id LIMIT ?3",
        )
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        all(rows, token)
    }

    async fn page_devices(
        &self,
        product_id: Option<i64>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<DeviceRow>> {
        let (at, id) = after.unzip();
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d JOIN products p ON p.id = d.product_id \
             WHERE (?1 IS NULL OR d.product_id = ?1) AND (?2 IS NULL OR (d.enrolled_at, d.id) > (?2, ?3)) \
             ORDER BY d.enrolled_at, d.id LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(product_id)
            .bind(at)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        all(rows, device)
    }

    async fn page_events(
        &self,
        device_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<(i64, EventRow)>> {
        let rows = sqlx::query(
            "SELECT * FROM device_events WHERE device_id = ?1 AND (?2 IS NULL OR id < ?2) \
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(device_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
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
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn append_audit(&self, e: &AuditRow) -> DbResult<i64> {
        audit::append(&self.pool, e).await
    }

    async fn page_audit(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<AuditRow>> {
        audit::page(&self.pool, f, before, limit).await
    }
}
