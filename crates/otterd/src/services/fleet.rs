//! Devices and targeting (issue 9): tags, groups and device selections. The rules live here,
//! with no HTTP in them; handlers parse, call and map (docs/devices.md says what each does).
//!
//! - Tags: [`check_tag`], [`tag`], [`untag`].
//! - Groups: [`create_group`], [`get_group`], [`delete_group`], [`add_members`],
//!   [`remove_members`], and [`device_in_group`] for the rollouts.
//! - Lists: [`list_devices`] pages through the devices a [`DeviceQuery`] selects, asking SQL for
//!   every term it can answer and evaluating the rest (version order) here.

use otter_core::fleet::{DeviceFacts, DeviceFilter, Field, FilterError, Op};

use crate::db::fleet::{sql_evaluates, DeviceExtras, DeviceSelection, GroupRow};
use crate::db::{Database, DbError, DbResult, DeviceRow, DeviceState, ProductRow, Sha256};

/// Longest tag and group name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most terms in one selection (a saved filter, or a list's parameters together).
pub const MAX_TERMS: usize = 64;

/// Why a fleet operation was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The input is wrong (a bad tag, filter, unknown or foreign device in a group).
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored (a name taken, a limit reached).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Result of a fleet operation.
pub type FleetResult<T> = Result<T, FleetError>;

impl From<FilterError> for FleetError {
    fn from(e: FilterError) -> Self {
        FleetError::Invalid(e.to_string())
    }
}

fn name_ok(s: &str, extra: &[u8]) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// A tag is `[a-z0-9][a-z0-9._:-]{0,63}` (`site:berlin`, `rack-3`, `v2.board`).
pub fn check_tag(t: &str) -> FleetResult<()> {
    if name_ok(t, b"._:-") {
        Ok(())
    } else {
        Err(FleetError::Invalid(format!(
            "tag {:?} must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9, '.', '_', ':', '-', starting with a letter or digit",
            crate::error::clip(t)
        )))
    }
}

/// A group name is `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn check_group_name(n: &str) -> FleetResult<()> {
    if name_ok(n, b"._-") {
        Ok(())
    } else {
        Err(FleetError::Invalid(format!(
            "group name {:?} must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            crate::error::clip(n)
        )))
    }
}

/// Checks a list of tags (1 to `max`, each valid) and removes repeats, keeping the order.
fn tag_list(tags: &[String], max: usize) -> FleetResult<Vec<String>> {
    if tags.is_empty() {
        return Err(FleetError::Invalid("give at least one tag".into()));
    }
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        check_tag(t)?;
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    if out.len() > max {
        return Err(FleetError::Invalid(format!(
            "{} tags given; a device carries at most {max} (max_tags_per_device)",
            out.len()
        )));
    }
    Ok(out)
}

/// Adds tags to a device (present ones stay once); at most `max` tags per device, else
/// `Conflict` and nothing changes. Returns its tags after.
pub async fn tag(
    db: &dyn Database,
    device: &DeviceRow,
    tags: &[String],
    max: usize,
) -> FleetResult<Vec<String>> {
    let tags = tag_list(tags, max)?;
    db.tag_device_capped(&device.id, &tags, max)
        .await
        .map_err(|e| match e {
            DbError::NotFound => FleetError::NotFound(format!("no device {}", device.id)),
            DbError::Conflict(m) => FleetError::Conflict(m),
            e => e.into(),
        })
}

/// Removes tags from a device (absent ones are ignored). Returns its tags after.
pub async fn untag(
    db: &dyn Database,
    device: &DeviceRow,
    tags: &[String],
    max: usize,
) -> FleetResult<Vec<String>> {
    // Any number of valid tags may be removed; `max` only bounds the request.
    let tags = tag_list(tags, max.max(tags.len()))?;
    db.untag_device(&device.id, &tags)
        .await
        .map_err(|e| match e {
            DbError::NotFound => FleetError::NotFound(format!("no device {}", device.id)),
            e => e.into(),
        })
}

/// How a group chooses its devices.
#[derive(Debug, Clone)]
pub enum GroupSpec {
    /// These devices (ids), all of the group's product.
    Static(Vec<String>),
    /// Devices the saved filter matches (otter-core `DeviceFilter` syntax).
    Filter(String),
}

/// Checks that every device exists and belongs to `product`; returns the ids without repeats.
async fn own_devices(
    db: &dyn Database,
    product: &ProductRow,
    ids: &[String],
) -> FleetResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        match db.get_device(id).await {
            Ok(d) if d.product_id == product.id => {}
            Ok(d) => {
                return Err(FleetError::Invalid(format!(
                    "device {id} belongs to product {:?}, not {:?}; a group holds devices of its own product",
                    d.product, product.name
                )))
            }
            Err(DbError::NotFound) => {
                return Err(FleetError::Invalid(format!(
                    "no device {:?}; list them with `otter device list --product {}`",
                    crate::error::clip(id),
                    product.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// Parses a group's filter; it must have at least one term.
fn group_filter(text: &str) -> FleetResult<DeviceFilter> {
    let f: DeviceFilter = text.parse()?;
    if f.is_empty() {
        return Err(FleetError::Invalid(
            "a filter group needs at least one term, e.g. tag=lab,version<2.0".into(),
        ));
    }
    if f.terms.len() > MAX_TERMS {
        return Err(FleetError::Invalid(format!(
            "a filter has at most {MAX_TERMS} terms"
        )));
    }
    Ok(f)
}

/// Creates a group of `product`: a static list of its devices, or a saved filter.
pub async fn create_group(
    db: &dyn Database,
    product: &ProductRow,
    name: &str,
    spec: GroupSpec,
    by: &str,
    now: i64,
) -> FleetResult<GroupRow> {
    check_group_name(name)?;
    let (filter, members) = match spec {
        GroupSpec::Static(ids) => (None, own_devices(db, product, &ids).await?),
        GroupSpec::Filter(text) => (Some(group_filter(&text)?.to_string()), Vec::new()),
    };
    let g = GroupRow {
        id: crate::auth::new_id("grp_"),
        product_id: product.id,
        name: name.to_string(),
        filter,
        created_at: now,
        created_by: by.to_string(),
    };
    db.create_group(&g, &members).await.map_err(|e| match e {
        DbError::Conflict(_) => FleetError::Conflict(format!(
            "product {:?} has a group named {name:?} already",
            product.name
        )),
        DbError::NotFound => {
            FleetError::Invalid("a device was deleted while the group was created".into())
        }
        e => e.into(),
    })?;
    Ok(g)
}

/// A group of `product` by name.
pub async fn get_group(
    db: &dyn Database,
    product: &ProductRow,
    name: &str,
) -> FleetResult<GroupRow> {
    db.get_group(product.id, name).await.map_err(|e| match e {
        DbError::NotFound => FleetError::NotFound(format!(
            "product {:?} has no group {:?}",
            product.name,
            crate::error::clip(name)
        )),
        e => e.into(),
    })
}

/// Deletes a group (its devices stay; only the list goes).
pub async fn delete_group(db: &dyn Database, product: &ProductRow, name: &str) -> FleetResult<()> {
    let g = get_group(db, product, name).await?;
    db.delete_group(&g.id).await.map_err(|e| match e {
        DbError::NotFound => FleetError::NotFound(format!("group {name:?} is gone already")),
        e => e.into(),
    })
}

fn require_static(g: &GroupRow) -> FleetResult<()> {
    match &g.filter {
        None => Ok(()),
        Some(f) => Err(FleetError::Conflict(format!(
            "group {:?} chooses its devices by the filter {f:?}; only static groups have members to add or remove",
            g.name
        ))),
    }
}

/// Adds devices of the group's product to a static group.
pub async fn add_members(
    db: &dyn Database,
    product: &ProductRow,
    name: &str,
    devices: &[String],
) -> FleetResult<GroupRow> {
    let g = get_group(db, product, name).await?;
    require_static(&g)?;
    if devices.is_empty() {
        return Err(FleetError::Invalid("give at least one device".into()));
    }
    let ids = own_devices(db, product, devices).await?;
    db.add_group_members(&g, &ids).await.map_err(|e| match e {
        DbError::NotFound => FleetError::Invalid("a device was deleted while it was added".into()),
        e => e.into(),
    })?;
    Ok(g)
}

/// Removes devices from a static group (devices it does not list are ignored).
pub async fn remove_members(
    db: &dyn Database,
    product: &ProductRow,
    name: &str,
    devices: &[String],
) -> FleetResult<GroupRow> {
    let g = get_group(db, product, name).await?;
    require_static(&g)?;
    if devices.is_empty() {
        return Err(FleetError::Invalid("give at least one device".into()));
    }
    db.remove_group_members(&g.id, devices).await?;
    Ok(g)
}

/// What a filter sees of a device.
pub fn facts<'a>(d: &'a DeviceRow, tags: &'a [String]) -> DeviceFacts<'a> {
    DeviceFacts {
        hardware_id: &d.hardware_id,
        channel: &d.channel,
        chip: d.chip.map(|c| c.name()),
        version: d.version.as_deref(),
        security_counter: d.security_counter,
        image_sha256: d.image_sha256.as_ref().map(Sha256::as_str),
        last_state: d.last_state.map(DeviceState::as_str),
        last_seen_at: d.last_seen_at,
        tags,
    }
}

/// Whether a device is in a group at `now`: a static group lists it; a filter group's filter
/// matches its facts (`tags`: its tags). A device of another product never is.
pub async fn device_in_group(
    db: &dyn Database,
    g: &GroupRow,
    d: &DeviceRow,
    tags: &[String],
    now: i64,
) -> DbResult<bool> {
    if d.product_id != g.product_id {
        return Ok(false);
    }
    facts_in_group(db, g, &d.id, &facts(d, tags), now).await
}

/// [`device_in_group`] for facts the caller has at hand (at check-in, the report just made,
/// which is newer than the stored row). The caller checks that the device is of the group's
/// product.
pub async fn facts_in_group(
    db: &dyn Database,
    g: &GroupRow,
    device_id: &str,
    facts: &DeviceFacts<'_>,
    now: i64,
) -> DbResult<bool> {
    match &g.filter {
        None => db.group_has_device(&g.id, device_id).await,
        Some(text) => match text.parse::<DeviceFilter>() {
            Ok(f) => Ok(f.matches(facts, now)),
            Err(e) => {
                // Filters are checked when saved; a stored one that no longer parses matches
                // nothing rather than everything.
                tracing::warn!(group = %g.id, error = %e, "a saved group filter does not parse");
                Ok(false)
            }
        },
    }
}

/// Which devices to list; every part must hold.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Only this product's devices.
    pub product: Option<ProductRow>,
    /// Terms (from `tag`, `version`, `state`, `channel` and `filter`).
    pub filter: DeviceFilter,
    /// Only members of this group of [`DeviceQuery::product`].
    pub group: Option<String>,
}

/// A page of devices.
#[derive(Debug)]
pub struct DevicePage {
    /// The devices with their tags and last outcome.
    pub devices: Vec<(DeviceRow, DeviceExtras)>,
    /// Where the next page starts (after this (enrolled_at, id)); `None` after the last.
    /// A page may hold fewer than `limit` devices (even none) and still name a next page when
    /// the server examined `scan_max` devices for terms SQL cannot evaluate.
    pub next: Option<(i64, String)>,
}

/// Splits a query into what SQL selects and the terms evaluated here.
async fn plan(
    db: &dyn Database,
    q: &DeviceQuery,
    now: i64,
) -> FleetResult<(DeviceSelection, DeviceFilter)> {
    let mut sel = DeviceSelection {
        product_id: q.product.as_ref().map(|p| p.id),
        now,
        ..Default::default()
    };
    let mut residual = DeviceFilter::default();
    let mut terms = q.filter.terms.clone();
    if let Some(name) = &q.group {
        let product = q.product.as_ref().ok_or_else(|| {
            FleetError::Invalid("groups belong to a product: give `product` with `group`".into())
        })?;
        let g = get_group(db, product, name).await?;
        match &g.filter {
            None => sel.static_groups.push(g.id),
            Some(text) => terms.extend(group_filter(text)?.terms),
        }
    }
    // Start from the rarest tag asked for when few devices carry it (else from a small static
    // group): sorting a few hundred devices beats walking 100,000 in order to find them.
    let mut rarest: Option<(i64, String)> = None;
    for t in terms
        .iter()
        .filter(|t| t.field == Field::Tag && t.op == Op::Eq)
    {
        let n = db.count_tagged(&t.value).await?;
        if rarest.as_ref().is_none_or(|(m, _)| n < *m) {
            rarest = Some((n, t.value.clone()));
        }
    }
    sel.drive_tag = rarest.filter(|(n, _)| *n <= DRIVE_MAX).map(|(_, t)| t);
    if sel.drive_tag.is_none() {
        if let Some(g) = sel.static_groups.first() {
            if db.count_group_members(g).await? <= DRIVE_MAX {
                sel.drive_group = Some(g.clone());
            }
        }
    }
    for t in terms {
        if sql_evaluates(&t) {
            sel.terms.push(t);
        } else {
            residual.terms.push(t);
        }
    }
    Ok((sel, residual))
}

/// A tag carried by (or a static group of) at most this many devices is where a list starts
/// (see [`plan`]).
const DRIVE_MAX: i64 = 2000;

/// Rows fetched at once while terms are evaluated here.
const BATCH: i64 = 500;

/// A page of the devices a query selects, in enrolment order after `after`: at most `limit`,
/// examining at most `scan_max` devices for terms evaluated here (version order).
pub async fn list_devices(
    db: &dyn Database,
    q: &DeviceQuery,
    after: Option<(i64, String)>,
    limit: i64,
    scan_max: u64,
    now: i64,
) -> FleetResult<DevicePage> {
    let (sel, residual) = plan(db, q, now).await?;
    let mut rows: Vec<DeviceRow> = Vec::new();
    let mut next = None;
    if residual.is_empty() {
        rows = db.page_selected_devices(&sel, after, limit + 1).await?;
        if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            next = rows.last().map(|d| (d.enrolled_at, d.id.clone()));
        }
    } else {
        let mut cursor = after;
        let mut examined: u64 = 0;
        loop {
            let want = BATCH.min(scan_max.saturating_sub(examined).max(1) as i64);
            let batch = db.page_selected_devices(&sel, cursor.clone(), want).await?;
            let exhausted = (batch.len() as i64) < want;
            for d in batch {
                examined += 1;
                cursor = Some((d.enrolled_at, d.id.clone()));
                // Version terms only: tags never reach here (SQL evaluates them).
                if residual.matches(&facts(&d, &[]), now) {
                    rows.push(d);
                    if rows.len() as i64 > limit {
                        break;
                    }
                }
            }
            if rows.len() as i64 > limit {
                rows.truncate(limit as usize);
                next = rows.last().map(|d| (d.enrolled_at, d.id.clone()));
                break;
            }
            if exhausted {
                break;
            }
            if examined >= scan_max {
                // Say where to continue: after the last device examined.
                next = cursor;
                break;
            }
        }
    }
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let mut extras = db.device_extras(&ids).await?;
    let devices = rows
        .into_iter()
        .map(|d| {
            let e = extras.remove(&d.id).unwrap_or_default();
            (d, e)
        })
        .collect();
    Ok(DevicePage { devices, next })
}

/// One device with its tags and last outcome.
pub async fn device_with_extras(
    db: &dyn Database,
    d: DeviceRow,
) -> DbResult<(DeviceRow, DeviceExtras)> {
    let e = db
        .device_extras(std::slice::from_ref(&d.id))
        .await?
        .remove(&d.id)
        .unwrap_or_default();
    Ok((d, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_group_names_follow_their_syntax() {
        for ok in ["lab", "site:berlin", "rack-3", "v2.board", "a_b", "0"] {
            check_tag(ok).unwrap();
        }
        for bad in ["", "Lab", "-x", ":x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        check_tag(&"x".repeat(64)).unwrap();
        check_group_name("canary-eu").unwrap();
        assert!(check_group_name("a:b").is_err());
    }

    #[test]
    fn tag_lists_drop_repeats_and_respect_the_cap() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(tag_list(&l(&["a", "b", "a"]), 2).unwrap(), l(&["a", "b"]));
        assert!(tag_list(&l(&["a", "b", "c"]), 2).is_err());
        assert!(tag_list(&[], 2).is_err());
    }
}
