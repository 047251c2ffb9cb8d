//! Whether a device is in a rollout's target (a channel, a tag, a group or a filter).
//! Group membership is the fleet's rule ([`super::fleet::facts_in_group`]), applied to what the
//! device reports at this check-in.

use otter_core::fleet::{DeviceFacts, DeviceFilter};

use crate::db::rollouts::RolloutRow;
use crate::db::{CheckinReport, Database, DbError, DbResult, DeviceRow, DeviceState, Sha256};

/// A device's facts as stored, or as it reports itself now (`report`).
pub fn facts<'a>(
    device: &'a DeviceRow,
    report: Option<&'a CheckinReport>,
    tags: &'a [String],
) -> DeviceFacts<'a> {
    match report {
        Some(r) => DeviceFacts {
            hardware_id: &device.hardware_id,
            channel: &device.channel,
            chip: Some(r.chip.name()),
            version: Some(&r.version),
            security_counter: Some(r.security_counter),
            image_sha256: r.image_sha256.as_ref().map(Sha256::as_str),
            last_state: device.last_state.map(DeviceState::as_str),
            last_seen_at: Some(r.at),
            tags,
        },
        None => super::fleet::facts(device, tags),
    }
}

/// Whether the device is in the product's group `name` (an unknown group holds no device).
async fn in_group(
    db: &dyn Database,
    product_id: i64,
    name: &str,
    device_id: &str,
    facts: &DeviceFacts<'_>,
    now: i64,
) -> DbResult<bool> {
    let group = match db.get_group(product_id, name).await {
        Ok(g) => g,
        Err(DbError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    super::fleet::facts_in_group(db, &group, device_id, facts, now).await
}

/// Whether `rollout` targets the device with these facts.
pub async fn matches(
    db: &dyn Database,
    rollout: &RolloutRow,
    device: &DeviceRow,
    facts: &DeviceFacts<'_>,
    now: i64,
) -> DbResult<bool> {
    if device.product_id != rollout.product_id {
        return Ok(false);
    }
    Ok(match rollout.target_kind.as_str() {
        "channel" => device.channel == rollout.target,
        "tag" => facts.tags.contains(&rollout.target),
        "group" => {
            in_group(
                db,
                rollout.product_id,
                &rollout.target,
                &device.id,
                facts,
                now,
            )
            .await?
        }
        "filter" => rollout
            .target
            .parse::<DeviceFilter>()
            .is_ok_and(|f| f.matches(facts, now)),
        _ => false,
    })
}

/// [`matches`] for a device checking in now.
pub async fn targets(
    db: &dyn Database,
    rollout: &RolloutRow,
    device: &DeviceRow,
    report: &CheckinReport,
    tags: &[String],
    now: i64,
) -> DbResult<bool> {
    matches(db, rollout, device, &facts(device, Some(report), tags), now).await
}
