//! The fleet's storage seam: tags people set on devices and groups of devices.
//!
//! A separate trait from [`super::Database`] (which requires it) so that each part of the fleet
//! keeps its queries together; every backend implements both.

use async_trait::async_trait;

use super::DbResult;

/// A group of devices of one product.
#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: String,
    pub product_id: i64,
    pub name: String,
    /// `None`: a static list of members; otherwise a saved filter (otter-core `DeviceFilter`).
    pub filter: Option<String>,
    pub created_at: i64,
    pub created_by: String,
}

/// Tags and groups.
#[async_trait]
pub trait FleetStore: Send + Sync {
    /// A device's tags, in order.
    async fn device_tags(&self, device_id: &str) -> DbResult<Vec<String>>;
    /// Adds tags to a device (present ones are kept once); returns its tags after.
    async fn tag_device(&self, device_id: &str, tags: &[String]) -> DbResult<Vec<String>>;
    /// Removes tags from a device (absent ones are ignored); returns its tags after.
    async fn untag_device(&self, device_id: &str, tags: &[String]) -> DbResult<Vec<String>>;
    /// Creates a group and, for a static group, its members, in one transaction. `Conflict`
    /// when the product has a group of this name.
    async fn create_group(&self, g: &GroupRow, members: &[String]) -> DbResult<()>;
    /// A product's group by name.
    async fn get_group(&self, product_id: i64, name: &str) -> DbResult<GroupRow>;
    /// Whether a static group lists this device.
    async fn group_has_device(&self, group_id: &str, device_id: &str) -> DbResult<bool>;
}
