//! The fleet's storage seam: tags people set on devices and groups of devices.
//!
//! A separate trait from [`super::Database`] (which requires it) so that each part of the fleet
//! keeps its queries together; every backend implements both.

use std::collections::HashMap;

use async_trait::async_trait;
use otter_core::fleet::{Field, Op, Term};

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

    // --- Devices and targeting (issue 9) ---
    /// Devices the selection holds, in (enrolled_at, id) order, after `after`, at most `limit`.
    async fn page_selected_devices(
        &self,
        sel: &DeviceSelection,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> DbResult<Vec<super::DeviceRow>>;
    /// Tags and last outcome of these devices (absent ids are left out).
    async fn device_extras(&self, ids: &[String]) -> DbResult<HashMap<String, DeviceExtras>>;
    /// Adds tags unless the device would then carry more than `max`: `Conflict` (naming the
    /// limit) and nothing changes. `NotFound` for an unknown device. Returns its tags after.
    async fn tag_device_capped(
        &self,
        device_id: &str,
        tags: &[String],
        max: usize,
    ) -> DbResult<Vec<String>>;
    /// A product's groups by name, after `after`.
    async fn page_groups(
        &self,
        product_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<GroupRow>>;
    /// Deletes a group (and its member list); `NotFound` if there is none.
    async fn delete_group(&self, group_id: &str) -> DbResult<()>;
    /// Adds members to a static group in one transaction; `NotFound` (nothing added) when a
    /// device does not exist or belongs to another product.
    async fn add_group_members(&self, g: &GroupRow, devices: &[String]) -> DbResult<()>;
    /// Removes members of a group (absent ones are ignored).
    async fn remove_group_members(&self, group_id: &str, devices: &[String]) -> DbResult<()>;
    /// How many devices a static group lists.
    async fn count_group_members(&self, group_id: &str) -> DbResult<i64>;
    /// How many devices carry a tag (all products).
    async fn count_tagged(&self, tag: &str) -> DbResult<i64>;
}

// --- Devices and targeting (issue 9): selections, extras, groups --------------------------------

/// A value bound to a `$N` placeholder of a [`DeviceSelection`]'s SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// Which devices a list shows: conditions SQL evaluates, all of which must hold. Built by the
/// fleet service (`services::fleet`) from the query and the terms SQL can answer exactly as
/// `DeviceFilter::matches` does ([`sql_evaluates`]).
#[derive(Debug, Clone, Default)]
pub struct DeviceSelection {
    /// Only this product's devices.
    pub product_id: Option<i64>,
    /// Filter terms (each one [`sql_evaluates`]).
    pub terms: Vec<Term>,
    /// Members of each of these static groups (ids).
    pub static_groups: Vec<String>,
    /// Unix seconds `seen` terms are measured from.
    pub now: i64,
    /// A tag few devices carry (one of the `tag=` terms): the query starts from that tag's
    /// devices and sorts them, instead of walking every device in order.
    pub drive_tag: Option<String>,
    /// A small static group (one of [`DeviceSelection::static_groups`]) to start from, the
    /// same way; used when no tag is.
    pub drive_group: Option<String>,
}

/// Whether SQL answers a term exactly as `DeviceFilter::matches` does. Version order (`<`, `<=`,
/// `>`, `>=`) is Otter's own order, not SQL's: the service evaluates those terms.
pub fn sql_evaluates(t: &Term) -> bool {
    t.field != Field::Version || matches!(t.op, Op::Eq | Op::Ne)
}

impl DeviceSelection {
    /// The tables to select from: `devices d` and `products p`, after `device_tags dt` when
    /// [`DeviceSelection::drive_tag`] is set (else `device_group_members dg` when
    /// [`DeviceSelection::drive_group`] is) (`CROSS JOIN` keeps that order in SQLite; other
    /// databases treat it as a plain join).
    pub fn from_sql(&self) -> &'static str {
        if self.drive_tag.is_some() {
            "device_tags dt CROSS JOIN devices d JOIN products p ON p.id = d.product_id"
        } else if self.drive_group.is_some() {
            "device_group_members dg CROSS JOIN devices d JOIN products p ON p.id = d.product_id"
        } else {
            "devices d JOIN products p ON p.id = d.product_id"
        }
    }

    /// The condition over `devices d` as portable SQL, placeholders numbered from `first`, with
    /// the values to bind in order.
    pub fn where_sql(&self, first: usize) -> (String, Vec<Bind>) {
        let mut parts: Vec<String> = vec!["1 = 1".into()];
        let mut binds = Vec::new();
        let next = |b: Bind, binds: &mut Vec<Bind>| {
            binds.push(b);
            format!("${}", first + binds.len() - 1)
        };
        if let Some(tag) = &self.drive_tag {
            parts.push(format!(
                "dt.tag = {} AND d.id = dt.device_id",
                next(Bind::Text(tag.clone()), &mut binds)
            ));
        } else if let Some(g) = &self.drive_group {
            parts.push(format!(
                "dg.group_id = {} AND d.id = dg.device_id",
                next(Bind::Text(g.clone()), &mut binds)
            ));
        }
        if let Some(p) = self.product_id {
            parts.push(format!("d.product_id = {}", next(Bind::Int(p), &mut binds)));
        }
        for g in &self.static_groups {
            let n = next(Bind::Text(g.clone()), &mut binds);
            parts.push(format!(
                "EXISTS (SELECT 1 FROM device_group_members m WHERE m.group_id = {n} AND m.device_id = d.id)"
            ));
        }
        for t in &self.terms {
            let text = |col: &str, nullable: bool, value: String, binds: &mut Vec<Bind>| {
                let n = next(Bind::Text(value), binds);
                match (t.op, nullable) {
                    (Op::Eq, _) => format!("{col} = {n}"),
                    (_, true) => format!("({col} IS NULL OR {col} <> {n})"),
                    (_, false) => format!("{col} <> {n}"),
                }
            };
            let sql = match t.field {
                Field::Tag => {
                    let n = next(Bind::Text(t.value.clone()), &mut binds);
                    let not = if t.op == Op::Eq { "" } else { "NOT " };
                    format!("{not}EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = {n})")
                }
                Field::Channel => text("d.channel", false, t.value.clone(), &mut binds),
                Field::HardwareId => text("d.hardware_id", false, t.value.clone(), &mut binds),
                Field::Chip => text("d.chip", true, t.value.clone(), &mut binds),
                Field::State => text("d.last_state", true, t.value.clone(), &mut binds),
                Field::Sha256 => text(
                    "LOWER(d.image_sha256)",
                    true,
                    t.value.to_ascii_lowercase(),
                    &mut binds,
                ),
                // A version is never empty in a filter, so an empty reported one never equals.
                Field::Version => text("d.version", true, t.value.clone(), &mut binds),
                Field::Counter => {
                    let n = next(Bind::Int(t.seconds), &mut binds);
                    match t.op {
                        Op::Ne => {
                            format!("(d.security_counter IS NULL OR d.security_counter <> {n})")
                        }
                        op => format!("d.security_counter {} {n}", op.symbol()),
                    }
                }
                Field::Seen => {
                    let since = self.now.saturating_sub(t.seconds);
                    let n = next(Bind::Int(since), &mut binds);
                    if t.op == Op::Lt {
                        format!("d.last_seen_at > {n}")
                    } else {
                        format!("(d.last_seen_at IS NULL OR d.last_seen_at < {n})")
                    }
                }
            };
            parts.push(sql);
        }
        (parts.join(" AND "), binds)
    }
}

/// What the device views show beyond the device row: tags and the last outcome's details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceExtras {
    /// Its tags, in order.
    pub tags: Vec<String>,
    /// Why (the reason of its last report, e.g. of a failure).
    pub last_reason: Option<String>,
    /// The release its last report was about.
    pub last_release_id: Option<String>,
}
