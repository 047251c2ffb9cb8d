//! The storage seam: [`Database`] holds every query the server needs, as primitives.
//!
//! Handlers see only this trait and the plain row types below; `sqlx` stays inside the backend
//! modules ([`sqlite`] today, PostgreSQL next, running the same test suite). Derived rules
//! (which release a device should get) live in the handlers, written once over the trait.

pub mod sqlite;

use async_trait::async_trait;

/// The `Conflict` message of [`Database::revoke_token`] for the last active admin token.
pub const LAST_ADMIN: &str = "last active admin token";

/// A storage failure, in the three shapes callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else; the details go to the log, never to a client.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a database call.
pub type DbResult<T> = Result<T, DbError>;

/// A product row.
#[derive(Debug, Clone)]
pub struct ProductRow {
    pub id: i64,
    pub name: String,
    pub chip: String,
    pub description: String,
    pub enrollment_secret_hash: String,
    pub created_at: i64,
}

/// A release public key registered for a product.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub product_id: i64,
    pub key_id: String,
    pub name: String,
    pub public_key_pem: String,
    pub created_at: i64,
}

/// A published release.
#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub id: String,
    pub product_id: i64,
    pub product: String,
    pub channel: String,
    pub version: String,
    pub chip: String,
    pub security_counter: i64,
    pub size: i64,
    pub sha256: String,
    pub manifest_created_at: i64,
    pub expires_at: Option<i64>,
    pub envelope: Vec<u8>,
    pub signed_by: String,
    pub project_name: Option<String>,
    pub idf_version: Option<String>,
    pub published_at: i64,
    pub published_by: String,
}

/// An API token (the secret itself is never stored).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub products: Vec<String>,
    pub token_hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// An enrolled device and what it last reported.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub product_id: i64,
    pub product: String,
    pub hardware_id: String,
    pub channel: String,
    pub token_hash: String,
    /// Hash of the nonce the device chose for its enrolment (repeatable enrolment), if any.
    pub enrollment_nonce_hash: Option<String>,
    pub chip: Option<String>,
    pub version: Option<String>,
    pub security_counter: Option<i64>,
    pub image_sha256: Option<String>,
    pub partition_size: Option<i64>,
    pub last_state: Option<String>,
    pub enrolled_at: i64,
    pub last_seen_at: Option<i64>,
}

/// What a device reports at check-in.
#[derive(Debug, Clone)]
pub struct CheckinReport {
    pub chip: String,
    pub version: String,
    pub security_counter: i64,
    pub image_sha256: String,
    pub partition_size: Option<i64>,
    pub at: i64,
}

/// One step a device reported.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub device_id: String,
    pub at: i64,
    pub release_id: Option<String>,
    pub state: String,
    pub progress_bytes: Option<i64>,
    pub reason: Option<String>,
}

/// Filter for listing releases.
#[derive(Debug, Clone, Default)]
pub struct ReleaseFilter {
    pub product: Option<String>,
    pub channel: Option<String>,
    pub limit: i64,
}

/// Every query the server needs. Implementations run their own migrations in their constructor.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Answers when the database is reachable.
    async fn ping(&self) -> DbResult<()>;

    async fn create_product(&self, p: &ProductRow) -> DbResult<ProductRow>;
    async fn list_products(&self) -> DbResult<Vec<ProductRow>>;
    async fn get_product(&self, name: &str) -> DbResult<ProductRow>;
    async fn set_enrollment_secret(&self, product_id: i64, secret_hash: &str) -> DbResult<()>;

    async fn add_key(&self, key: &KeyRow) -> DbResult<()>;
    async fn list_keys(&self, product_id: i64) -> DbResult<Vec<KeyRow>>;
    async fn delete_key(&self, product_id: i64, key_id: &str) -> DbResult<()>;

    async fn insert_release(&self, r: &ReleaseRow) -> DbResult<()>;
    async fn release_exists(&self, product_id: i64, channel: &str, version: &str)
        -> DbResult<bool>;
    async fn get_release(&self, id: &str) -> DbResult<ReleaseRow>;
    async fn list_releases(&self, f: &ReleaseFilter) -> DbResult<Vec<ReleaseRow>>;
    /// Releases of a channel that a device with this counter could take, unexpired at `now`.
    async fn release_candidates(
        &self,
        product_id: i64,
        channel: &str,
        min_security_counter: i64,
        now: i64,
    ) -> DbResult<Vec<ReleaseRow>>;

    async fn create_token(&self, t: &TokenRow) -> DbResult<()>;
    async fn count_tokens(&self) -> DbResult<i64>;
    async fn find_token(&self, token_hash: &str) -> DbResult<TokenRow>;
    async fn list_tokens(&self) -> DbResult<Vec<TokenRow>>;
    /// Revokes an active token; `NotFound` if there is none with this id, `Conflict`
    /// ([`LAST_ADMIN`]) if it is the last active admin token.
    async fn revoke_token(&self, id: &str, at: i64) -> DbResult<()>;
    async fn touch_token(&self, id: &str, at: i64) -> DbResult<()>;

    async fn insert_device(&self, d: &DeviceRow) -> DbResult<()>;
    async fn find_device(&self, token_hash: &str) -> DbResult<DeviceRow>;
    async fn find_device_by_hardware_id(
        &self,
        product_id: i64,
        hardware_id: &str,
    ) -> DbResult<DeviceRow>;
    /// Replaces a device's token (a repeated enrolment); the old token stops working.
    async fn set_device_token(&self, device_id: &str, token_hash: &str) -> DbResult<()>;
    async fn get_device(&self, id: &str) -> DbResult<DeviceRow>;
    async fn list_devices(&self, product_id: Option<i64>) -> DbResult<Vec<DeviceRow>>;
    async fn record_checkin(&self, device_id: &str, r: &CheckinReport) -> DbResult<()>;
    async fn set_device_channel(&self, device_id: &str, channel: &str) -> DbResult<()>;
    async fn delete_device(&self, device_id: &str) -> DbResult<()>;
    /// Appends an event and updates the device's last state, in one transaction.
    async fn add_event(&self, e: &EventRow) -> DbResult<()>;
    async fn list_events(&self, device_id: &str, limit: i64) -> DbResult<Vec<EventRow>>;
}
