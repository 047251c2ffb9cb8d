//! How many devices each stage of a proposed rollout would reach (issue 11), before it is
//! created. No HTTP here.
//!
//! A device's stage is [`otter_core::rollout::bucket`] of the rollout id and the device id, so
//! the preview draws the id the rollout will have ([`proposed_id`]) and counts with it; a
//! rollout created with that id (`preview_id`) reaches exactly the devices counted, as long as
//! the target's devices do not change meanwhile. The target's devices are chosen by the fleet's
//! device lists ([`super::fleet::list_devices`]), which select the same devices as
//! [`super::membership::matches`] does one by one: SQL answers what it can, version order is
//! evaluated here.

use otter_core::fleet::{DeviceFilter, Field, Op, Term};
use otter_core::rollout::{bucket, Stages};

use super::fleet::{self, DeviceQuery, FleetError};
use super::rollouts::{RolloutError, Target};
use crate::db::{Database, DbError, ProductRow};

/// Devices examined per page while counting.
const PAGE: i64 = 1000;

/// How long a preview's id may be used to create the rollout, in seconds.
pub const PREVIEW_ID_TTL_S: i64 = 24 * 3600;

/// One stage of a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePreview {
    /// 0-based.
    pub stage: usize,
    /// Cumulative percentage of the target.
    pub percent: u32,
    /// Devices that join the rollout when this stage opens.
    pub devices: u64,
    /// Devices in the rollout once this stage is open (this stage and the earlier ones).
    pub cumulative: u64,
}

/// What a proposed rollout would reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The id the counts were made with; create the rollout with it to reach these devices.
    pub rollout_id: String,
    /// Devices of the target now.
    pub targeted: u64,
    /// Per stage.
    pub stages: Vec<StagePreview>,
    /// Devices of the target beyond the last stage (when it is below 100 %): never reached.
    pub beyond: u64,
}

/// A new rollout id: nanoseconds since the epoch then random, so ids sort by creation time.
pub fn proposed_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let random = crate::auth::new_id("");
    format!("ro_{nanos:016x}{}", &random[..8])
}

/// Checks an id a preview proposed: its shape, and that it was drawn within
/// [`PREVIEW_ID_TTL_S`] before `now` (seconds).
pub fn check_proposed_id(id: &str, now: i64) -> Result<(), RolloutError> {
    let bad = || {
        RolloutError::Invalid(format!(
            "preview_id {:?} is not an id a rollout preview gave (ro_ and 24 hex digits)",
            crate::error::clip(id)
        ))
    };
    let hex = id.strip_prefix("ro_").ok_or_else(bad)?;
    if hex.len() != 24
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    let nanos = u64::from_str_radix(&hex[..16], 16).map_err(|_| bad())?;
    let at = (nanos / 1_000_000_000) as i64;
    if at > now + 60 || now - at > PREVIEW_ID_TTL_S {
        return Err(RolloutError::Invalid(format!(
            "preview_id {id} is older than {} hours (or from the future); preview the rollout again",
            PREVIEW_ID_TTL_S / 3600
        )));
    }
    Ok(())
}

/// The device query that selects a rollout target's devices of `product`.
fn query(product: &ProductRow, target: &Target) -> DeviceQuery {
    let term = |field, value: &str| Term {
        field,
        op: Op::Eq,
        value: value.to_string(),
        seconds: 0,
    };
    let (filter, group) = match target {
        Target::Channel(c) => (
            DeviceFilter {
                terms: vec![term(Field::Channel, c)],
            },
            None,
        ),
        Target::Tag(t) => (
            DeviceFilter {
                terms: vec![term(Field::Tag, t)],
            },
            None,
        ),
        Target::Group(g) => (DeviceFilter::default(), Some(g.clone())),
        Target::Filter(f) => (f.clone(), None),
    };
    DeviceQuery {
        product: Some(product.clone()),
        filter,
        group,
    }
}

/// Counts, per stage, the devices of `product` a rollout with id `rollout_id`, this target and
/// these stages would reach, at `now`.
pub async fn preview(
    db: &dyn Database,
    product: &ProductRow,
    target: &Target,
    stages: &Stages,
    rollout_id: &str,
    now: i64,
) -> Result<Preview, RolloutError> {
    let mut per_stage = vec![0u64; stages.len()];
    let (mut targeted, mut beyond) = (0u64, 0u64);
    let mut count = |id: &str| {
        targeted += 1;
        match stages.stage_of(bucket(rollout_id, id)) {
            Some(s) => per_stage[s] += 1,
            None => beyond += 1,
        }
    };
    match target {
        // The common targets: their ids straight from an index.
        Target::Channel(c) => {
            for id in db.target_device_ids(product.id, false, c).await? {
                count(&id);
            }
        }
        Target::Tag(t) => {
            for id in db.target_device_ids(product.id, true, t).await? {
                count(&id);
            }
        }
        Target::Group(_) | Target::Filter(_) => {
            let q = query(product, target);
            let mut after = None;
            loop {
                let page = fleet::list_devices(db, &q, after, PAGE, u64::MAX, now)
                    .await
                    .map_err(|e| match e {
                        FleetError::Invalid(m) => RolloutError::Invalid(m),
                        FleetError::NotFound(m) => RolloutError::NotFound(m),
                        FleetError::Conflict(m) => RolloutError::Invalid(m),
                        FleetError::Db(e) => RolloutError::Db(e),
                    })?;
                for (d, _) in &page.devices {
                    count(&d.id);
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
    }
    let mut cumulative = 0;
    let stages = stages
        .percents()
        .iter()
        .zip(per_stage)
        .enumerate()
        .map(|(stage, (&percent, devices))| {
            cumulative += devices;
            StagePreview {
                stage,
                percent,
                devices,
                cumulative,
            }
        })
        .collect();
    Ok(Preview {
        rollout_id: rollout_id.to_string(),
        targeted,
        stages,
        beyond,
    })
}

/// The product of a release, for a preview of a rollout of it: `NotFound` when there is none.
pub async fn release_product(
    db: &dyn Database,
    release_id: &str,
) -> Result<(crate::db::ReleaseRow, ProductRow), RolloutError> {
    let release = match db.get_release(release_id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => {
            return Err(RolloutError::NotFound(format!("no release {release_id}")))
        }
        Err(e) => return Err(e.into()),
    };
    let product = db.get_product(&release.product).await?;
    Ok((release, product))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposed_ids_check_and_stale_or_odd_ones_are_refused() {
        let now = crate::now();
        let id = proposed_id();
        check_proposed_id(&id, now).unwrap();
        assert!(check_proposed_id(&id, now + PREVIEW_ID_TTL_S + 5).is_err());
        assert!(check_proposed_id(&id, now - 3600).is_err());
        for bad in [
            "",
            "ro_",
            "rx_0000000000000000aaaaaaaa",
            &format!("{id}0"),
            &id.to_uppercase(),
        ] {
            assert!(check_proposed_id(bad, now).is_err(), "{bad}");
        }
    }
}
