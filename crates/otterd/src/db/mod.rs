//! The storage seam: [`Database`] holds every query the server needs, as primitives.
//!
//! Handlers see only this trait and the plain row types below; `sqlx` stays inside the backend
//! modules ([`sqlite`], [`postgres`]), which share one set of portable queries (`db/shared.rs`, `db/fleet_sql.rs`) and
//! run the same test suite. Derived rules (which release a device should get) live in the
//! handlers, written once over the trait.

pub mod checkin;
pub mod connect;
pub mod fleet;
pub mod github;
pub mod pages;
pub mod people;
pub mod postgres;
pub mod rollouts;
mod serial;
pub mod sqlite;
pub mod types;

use async_trait::async_trait;

pub use otter_core::Chip;
pub use types::{DeviceState, Role, Sha256};

/// The `Conflict` message of [`Database::revoke_token`] for the last active admin token.
pub const LAST_ADMIN: &str = "last active admin token";

/// A storage failure, in the three shapes callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write: the constraint as `table(column, ...)`, the same
    /// on every backend (or a rule's own message, such as [`LAST_ADMIN`]).
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
    pub chip: Chip,
    pub description: String,
    pub enrollment_secret_hash: String,
    pub created_at: i64,
    /// Most devices the product may have enrolled; `None`: no cap.
    pub max_devices: Option<i64>,
    /// New enrolments a minute; `None`: no limit.
    pub enrollments_per_minute: Option<i64>,
    /// Only hardware ids on the product's allow-list may enrol.
    pub allowlist_required: bool,
}

/// What an admin may change of a product's enrolment bounds.
#[derive(Debug, Clone, Default)]
pub struct EnrollmentPolicy {
    pub max_devices: Option<i64>,
    pub enrollments_per_minute: Option<i64>,
    pub allowlist_required: bool,
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
    pub chip: Chip,
    pub security_counter: i64,
    pub size: i64,
    pub sha256: Sha256,
    pub manifest_created_at: i64,
    pub expires_at: Option<i64>,
    pub envelope: Vec<u8>,
    pub signed_by: String,
    pub project_name: Option<String>,
    pub idf_version: Option<String>,
    pub published_at: i64,
    pub published_by: String,
}

// --- Release payloads (issue 9) ---

/// What a payload of a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// The whole application image, as signed (`image_sha256` of the manifest).
    Full,
    /// The image in the ESP8266 Arduino core's signed format (issue 13): the image, its RSA
    /// signature, the signature's length as a little-endian u32.
    Esp8266Signed,
    /// The image in arduino-esp32's signed format (core 3.3, issue 13): the image, then a
    /// 512-byte area holding the signature and zeros.
    Esp32ArduinoSigned,
}

impl PayloadKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Full => "full",
            PayloadKind::Esp8266Signed => "esp8266-signed",
            PayloadKind::Esp32ArduinoSigned => "esp32-arduino-signed",
        }
    }
}

impl std::str::FromStr for PayloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(PayloadKind::Full),
            "esp8266-signed" => Ok(PayloadKind::Esp8266Signed),
            "esp32-arduino-signed" => Ok(PayloadKind::Esp32ArduinoSigned),
            other => Err(format!("unknown payload kind {other:?}")),
        }
    }
}

/// One payload of a release: the full image is the first (`position` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRow {
    pub release_id: String,
    pub position: i64,
    pub kind: PayloadKind,
    pub size: i64,
    /// The payload's blob is `images/<sha256>`.
    pub sha256: Sha256,
    /// MD5, hex, for clients that check it (stock Arduino updaters); `None` until known.
    pub md5: Option<String>,
}

// --- end of release payloads ---

/// An API token (the secret itself is never stored).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: Role,
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
    pub chip: Option<Chip>,
    pub version: Option<String>,
    pub security_counter: Option<i64>,
    pub image_sha256: Option<Sha256>,
    pub partition_size: Option<i64>,
    pub last_state: Option<DeviceState>,
    pub enrolled_at: i64,
    pub last_seen_at: Option<i64>,
}

/// What [`Database::insert_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceInsert {
    Inserted,
    /// Nothing inserted: the product has its maximum of devices (the cap read under the lock).
    AtCap {
        max_devices: i64,
    },
}

/// What a device reports at check-in.
#[derive(Debug, Clone)]
pub struct CheckinReport {
    pub chip: Chip,
    pub version: String,
    pub security_counter: i64,
    /// `None`: the client reported none (stock Arduino and esp32FOTA clients may not).
    pub image_sha256: Option<Sha256>,
    pub partition_size: Option<i64>,
    pub at: i64,
}

/// One step a device reported.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub device_id: String,
    pub at: i64,
    pub release_id: Option<String>,
    pub state: DeviceState,
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

/// One entry of the audit log (issue 9). Entries are appended and never changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the log (set by the database; ignored when appending).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The principal's name, or `system`, `anonymous`, `otterd admin (offline)`.
    pub actor: String,
    /// The principal's role, when there is one.
    pub role: Option<Role>,
    /// The credential used: a token id, never the token.
    pub token_id: Option<String>,
    /// What was done, e.g. `release.push`.
    pub action: String,
    /// What it was done to: a product name, release id, device id or token id.
    pub target: Option<String>,
    /// A short note without secrets (e.g. the role of a created token).
    pub detail: Option<String>,
    /// HTTP method and route template, for actions over HTTP.
    pub method: Option<String>,
    pub route: Option<String>,
    /// Where the request came from (the peer address).
    pub address: Option<String>,
    /// The client address a trusted proxy forwarded (`trusted_proxies`), if any.
    pub forwarded_for: Option<String>,
    /// The HTTP status answered; `None` for actions outside HTTP.
    pub status: Option<i64>,
}

/// Which audit entries to list; every field set narrows the list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Entries at or after this Unix time.
    pub since: Option<i64>,
    /// Entries at or before this Unix time.
    pub until: Option<i64>,
}

/// Every query the server needs. Implementations run their own migrations in their constructor.
#[async_trait]
pub trait Database:
    checkin::CheckinStore
    + fleet::FleetStore
    + rollouts::RolloutStore
    + github::GithubStore
    + pages::PageStore
    + people::PeopleStore
    + Send
    + Sync
    + 'static
{
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
    /// Inserts a release and its payloads in one transaction (issue 9): both or neither.
    async fn insert_release_with_payloads(
        &self,
        r: &ReleaseRow,
        payloads: &[PayloadRow],
    ) -> DbResult<()>;
    /// A release's payloads in order (the full image first); empty for an unknown release.
    async fn release_payloads(&self, release_id: &str) -> DbResult<Vec<PayloadRow>>;
    /// Adds a payload to a published release after the others (issue 13); its `position` is
    /// chosen here. `Conflict` when the release has a payload of this kind already.
    async fn add_release_payload(&self, p: &PayloadRow) -> DbResult<()>;
    /// Records the MD5 of a payload whose MD5 was unknown (computed from its verified bytes).
    async fn set_payload_md5(&self, release_id: &str, position: i64, md5: &str) -> DbResult<()>;
    async fn get_release(&self, id: &str) -> DbResult<ReleaseRow>;
    /// The release of a product's channel with this version, if there is one.
    async fn find_release(
        &self,
        product_id: i64,
        channel: &str,
        version: &str,
    ) -> DbResult<Option<ReleaseRow>>;
    async fn list_releases(&self, f: &ReleaseFilter) -> DbResult<Vec<ReleaseRow>>;
    /// Releases of a channel that a device with this counter could take, unexpired at `now`.
    async fn release_candidates(
        &self,
        product_id: i64,
        channel: &str,
        min_security_counter: i64,
        now: i64,
    ) -> DbResult<Vec<ReleaseRow>>;
    /// The release of a channel with the highest security counter (latest published on a tie).
    async fn highest_counter_release(
        &self,
        product_id: i64,
        channel: &str,
    ) -> DbResult<Option<ReleaseRow>>;
    /// Whether any release references the image with this SHA-256 (hex).
    async fn blob_referenced(&self, sha256_hex: &str) -> DbResult<bool>;

    async fn create_token(&self, t: &TokenRow) -> DbResult<()>;
    /// Creates `t` only if there is no token at all, atomically even with several servers on
    /// one database; `false` when some token already exists.
    async fn create_first_token(&self, t: &TokenRow) -> DbResult<bool>;
    async fn count_tokens(&self) -> DbResult<i64>;
    async fn find_token(&self, token_hash: &str) -> DbResult<TokenRow>;
    async fn list_tokens(&self) -> DbResult<Vec<TokenRow>>;
    /// Revokes an active token; `NotFound` if there is none with this id, `Conflict`
    /// ([`LAST_ADMIN`]) if it is the last active admin token.
    async fn revoke_token(&self, id: &str, at: i64) -> DbResult<()>;
    async fn touch_token(&self, id: &str, at: i64) -> DbResult<()>;

    /// Enrols a device within its product's `max_devices`, atomically even with several
    /// servers on one database: the product's row is locked while its devices are counted and
    /// the new one is inserted. `Conflict` when the hardware id is enrolled already.
    async fn insert_device(&self, d: &DeviceRow) -> DbResult<DeviceInsert>;
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
    /// Moves the last-seen time of each listed device forward to the time given (never back),
    /// in one transaction (coalesced check-ins, [`crate::services::last_seen`]). Devices
    /// deleted meanwhile are skipped.
    async fn touch_devices(&self, seen: &[(String, i64)]) -> DbResult<()>;
    /// The generation of what check-ins are offered: migration 0012's triggers bump it at every
    /// change to products, releases, rollouts and rollout stages
    /// ([`crate::services::offer_cache`]).
    async fn offer_generation(&self) -> DbResult<i64>;
    async fn set_device_channel(&self, device_id: &str, channel: &str) -> DbResult<()>;
    async fn delete_device(&self, device_id: &str) -> DbResult<()>;
    /// Appends an event and updates the device's last state, in one transaction.
    async fn add_event(&self, e: &EventRow) -> DbResult<()>;
    async fn list_events(&self, device_id: &str, limit: i64) -> DbResult<Vec<EventRow>>;

    // --- Enrolment bounds (issue 8, item 6) ---
    async fn set_enrollment_policy(&self, product_id: i64, p: &EnrollmentPolicy) -> DbResult<()>;
    async fn count_devices(&self, product_id: i64) -> DbResult<i64>;
    /// Adds hardware ids to a product's allow-list in one transaction; returns how many were new.
    async fn allowlist_add(
        &self,
        product_id: i64,
        hardware_ids: &[String],
        at: i64,
    ) -> DbResult<u64>;
    async fn allowlist_remove(&self, product_id: i64, hardware_id: &str) -> DbResult<()>;
    async fn allowlist_contains(&self, product_id: i64, hardware_id: &str) -> DbResult<bool>;
    async fn allowlist_count(&self, product_id: i64) -> DbResult<i64>;
    /// Allow-listed hardware ids in order, after `after`.
    async fn allowlist_page(
        &self,
        product_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<String>>;
    /// Lets an enrolled device enrol once more with the product secret alone, until `until`.
    async fn allow_reenroll(&self, device_id: &str, until: i64, by: &str) -> DbResult<()>;
    /// Uses the mark [`Database::allow_reenroll`] set: replaces the device's token and nonce,
    /// clears the mark and records an event, in one transaction. `NotFound` when no mark is
    /// valid at `at`.
    async fn take_reenrollment(
        &self,
        device_id: &str,
        token_hash: &str,
        nonce_hash: Option<&str>,
        at: i64,
    ) -> DbResult<()>;

    // --- Pages of every list (issue 8, item 14): keyset order, `limit` rows after the key ---
    /// Products by name; `only`: just these names (a publisher's scope).
    async fn page_products(
        &self,
        after: Option<&str>,
        limit: i64,
        only: Option<&[String]>,
    ) -> DbResult<Vec<ProductRow>>;
    /// Keys by (created_at, key_id).
    async fn page_keys(
        &self,
        product_id: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<KeyRow>>;
    /// Releases newest first, by (published_at, insertion order) descending; each with its
    /// position for the cursor. `only`: just these products.
    async fn page_releases(
        &self,
        f: &ReleaseFilter,
        only: Option<&[String]>,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> DbResult<Vec<(i64, ReleaseRow)>>;
    /// Tokens by (created_at, id).
    async fn page_tokens(
        &self,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<TokenRow>>;
    /// Devices by (enrolled_at, id).
    async fn page_devices(
        &self,
        product_id: Option<i64>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<DeviceRow>>;
    /// A device's events newest first, each with its id for the cursor.
    async fn page_events(
        &self,
        device_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<(i64, EventRow)>>;

    /// Moves the write-ahead log into the database and shrinks it (a no-op where there is none).
    async fn checkpoint(&self) -> DbResult<()>;

    // --- Audit log (issue 9): append and read only; nothing edits or deletes an entry ---
    /// Appends one entry; returns its id.
    async fn append_audit(&self, e: &AuditRow) -> DbResult<i64>;
    /// Entries matching `f`, newest first (by id descending), with ids below `before`.
    async fn page_audit(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<AuditRow>>;
}
