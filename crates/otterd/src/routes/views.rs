//! The JSON objects of the API (docs/api.md, "Objects"), built from database rows.

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{DeviceRow, EventRow, KeyRow, ProductRow, ReleaseRow, TokenRow};

/// RFC 3339 UTC for Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A release public key.
#[derive(Serialize, ToSchema)]
pub struct Key {
    pub key_id: String,
    pub name: String,
    pub public_key_pem: String,
    pub created_at: String,
}

impl From<&KeyRow> for Key {
    fn from(k: &KeyRow) -> Self {
        Key {
            key_id: k.key_id.clone(),
            name: k.name.clone(),
            public_key_pem: k.public_key_pem.clone(),
            created_at: rfc3339(k.created_at),
        }
    }
}

/// A product.
#[derive(Serialize, ToSchema)]
pub struct Product {
    pub name: String,
    pub chip: String,
    pub description: String,
    pub created_at: String,
    pub keys: Vec<Key>,
    /// Most devices that may be enrolled; `null`: no cap.
    pub max_devices: Option<i64>,
    /// New enrolments a minute; `null`: no limit.
    pub enrollments_per_minute: Option<i64>,
    /// Only hardware ids on the product's allow-list may enrol.
    pub allowlist_required: bool,
}

impl Product {
    pub fn new(p: &ProductRow, keys: &[KeyRow]) -> Self {
        Product {
            name: p.name.clone(),
            chip: p.chip.name().to_string(),
            description: p.description.clone(),
            created_at: rfc3339(p.created_at),
            keys: keys.iter().map(Key::from).collect(),
            max_devices: p.max_devices,
            enrollments_per_minute: p.enrollments_per_minute,
            allowlist_required: p.allowlist_required,
        }
    }
}

/// A published release.
#[derive(Serialize, ToSchema)]
pub struct Release {
    pub id: String,
    pub product: String,
    pub chip: String,
    pub version: String,
    pub channel: String,
    pub security_counter: i64,
    pub size: i64,
    pub sha256: String,
    /// From the signed manifest, Unix seconds.
    pub created_at: i64,
    /// From the signed manifest, Unix seconds.
    pub expires_at: Option<i64>,
    pub published_at: String,
    pub published_by: String,
    pub signed_by: Vec<String>,
    pub project_name: Option<String>,
    pub idf_version: Option<String>,
}

impl From<&ReleaseRow> for Release {
    fn from(r: &ReleaseRow) -> Self {
        Release {
            id: r.id.clone(),
            product: r.product.clone(),
            chip: r.chip.name().to_string(),
            version: r.version.clone(),
            channel: r.channel.clone(),
            security_counter: r.security_counter,
            size: r.size,
            sha256: r.sha256.to_string(),
            created_at: r.manifest_created_at,
            expires_at: r.expires_at,
            published_at: rfc3339(r.published_at),
            published_by: r.published_by.clone(),
            signed_by: r
                .signed_by
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            project_name: r.project_name.clone(),
            idf_version: r.idf_version.clone(),
        }
    }
}

/// An API token's public facts (never the secret).
#[derive(Serialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: String,
    pub products: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked: bool,
}

impl From<&TokenRow> for Token {
    fn from(t: &TokenRow) -> Self {
        Token {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.as_str().to_string(),
            products: t.products.clone(),
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked: t.revoked_at.is_some(),
        }
    }
}

/// A device.
#[derive(Serialize, ToSchema)]
pub struct Device {
    pub id: String,
    pub product: String,
    pub hardware_id: String,
    pub channel: String,
    pub chip: Option<String>,
    pub version: Option<String>,
    pub security_counter: Option<i64>,
    pub image_sha256: Option<String>,
    pub partition_size: Option<i64>,
    pub enrolled_at: String,
    pub last_seen_at: Option<String>,
    pub last_state: Option<String>,
    /// The reason of its last report (e.g. why an update failed).
    pub last_reason: Option<String>,
    /// The release its last report was about.
    pub last_release_id: Option<String>,
    /// Tags people set (docs/devices.md).
    pub tags: Vec<String>,
}

impl From<&DeviceRow> for Device {
    fn from(d: &DeviceRow) -> Self {
        Device {
            id: d.id.clone(),
            product: d.product.clone(),
            hardware_id: d.hardware_id.clone(),
            channel: d.channel.clone(),
            chip: d.chip.map(|c| c.name().to_string()),
            version: d.version.clone(),
            security_counter: d.security_counter,
            image_sha256: d.image_sha256.as_ref().map(|s| s.to_string()),
            partition_size: d.partition_size,
            enrolled_at: rfc3339(d.enrolled_at),
            last_seen_at: d.last_seen_at.map(rfc3339),
            last_state: d.last_state.map(|s| s.as_str().to_string()),
            last_reason: None,
            last_release_id: None,
            tags: Vec::new(),
        }
    }
}

impl Device {
    /// A device with its tags and last outcome.
    pub fn with_extras(d: &DeviceRow, e: crate::db::fleet::DeviceExtras) -> Self {
        Device {
            last_reason: e.last_reason,
            last_release_id: e.last_release_id,
            tags: e.tags,
            ..Device::from(d)
        }
    }
}

/// One reported step.
#[derive(Serialize, ToSchema)]
pub struct Event {
    pub at: String,
    pub release_id: Option<String>,
    pub state: String,
    pub progress_bytes: Option<i64>,
    pub reason: Option<String>,
}

impl From<&EventRow> for Event {
    fn from(e: &EventRow) -> Self {
        Event {
            at: rfc3339(e.at),
            release_id: e.release_id.clone(),
            state: e.state.as_str().to_string(),
            progress_bytes: e.progress_bytes,
            reason: e.reason.clone(),
        }
    }
}
