//! What a device is offered at check-in (docs/protocol.md, section 2; docs/rollouts.md). No HTTP
//! here: the check-in handler parses, calls [`offer`] and maps the answer.
//!
//! The order of the rules:
//! 1. A device whose chip differs from its product's is offered nothing.
//! 2. A device with an active deployment keeps being offered that release while its rollout is
//!    running, paused or completed; one that reports running the release's image has succeeded.
//! 3. Otherwise the newest running, paused or completed rollout of the product whose target
//!    matches the device decides alone: a device in an open stage of a running (or any stage of
//!    a completed) rollout gets a deployment, if the release suits it, the window is open and
//!    the rate allows.
//! 4. Otherwise (no such rollout, or it has nothing for the device now) the channel's newest
//!    release that no rollout delivers, as before rollouts existed.

use std::borrow::Borrow;
use std::sync::Arc;

use otter_core::rollout::{bucket, Stages, Window};
use otter_core::version::Version;

use super::membership::targets;
use super::offer_cache::View;
use super::rollouts::{deployment_finished, report_on_deployment};
use crate::db::rollouts::{DeploymentRow, RolloutRow};
use crate::db::{
    CheckinReport, Database, DbError, DbResult, DeviceRow, DeviceState, ReleaseRow, Sha256,
};

/// The release offered to a device, and how.
#[derive(Debug, Clone)]
pub struct Offered {
    /// Shared with the offer cache (not copied per check-in).
    pub release: Arc<ReleaseRow>,
    /// `false`: the device may defer it (an optional rollout).
    pub forced: bool,
    /// The rollout it comes through; `None`: plain channel behaviour.
    pub rollout_id: Option<String>,
}

/// The answer for one check-in.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    pub update: Option<Offered>,
}

/// Whether a release's image fits the update partition a device reported (no report: assumed).
pub fn fits_partition(release: &ReleaseRow, partition_size: Option<i64>) -> bool {
    partition_size.is_none_or(|p| release.size <= p)
}

/// Picks the release to offer a device among a channel's candidates, or none.
pub fn choose_release<'a, R: Borrow<ReleaseRow>>(
    candidates: &'a [R],
    running_version: &str,
    running_sha256: Option<&Sha256>,
) -> Option<&'a ReleaseRow> {
    // An image without a built-in version (empty `esp_app_desc_t.version`, as in MicroPython
    // builds) reports ""; such a device is known by its image's SHA-256, so when that image is a
    // release here, the release's version stands in for it.
    let all = || candidates.iter().map(|r| r.borrow());
    let running_version = match running_version {
        "" => all()
            .find(|r| Some(&r.sha256) == running_sha256)
            .map_or("", |r| r.version.as_str()),
        v => v,
    };
    let newest = all().max_by(|a, b| {
        Version::new(&a.version)
            .cmp(&Version::new(&b.version))
            .then(a.published_at.cmp(&b.published_at))
    })?;
    let differs = Some(&newest.sha256) != running_sha256;
    let not_older = Version::new(&newest.version) >= Version::new(running_version);
    (differs && not_older).then_some(newest)
}

/// Why a rollout's release does not suit a device, if it does not: a security counter below the
/// device's, an image larger than its slot, an older version (unless a rollback), expiry.
pub fn unsuitable(
    rollout: &RolloutRow,
    release: &ReleaseRow,
    report: &CheckinReport,
    now: i64,
) -> Option<String> {
    if release.security_counter < report.security_counter {
        return Some(format!(
            "release security counter {} is below the device's {}",
            release.security_counter, report.security_counter
        ));
    }
    if !fits_partition(release, report.partition_size) {
        return Some(format!(
            "image of {} bytes does not fit the device's update partition",
            release.size
        ));
    }
    if release.expires_at.is_some_and(|e| e <= now) {
        return Some("the release has expired".into());
    }
    let older = !report.version.is_empty()
        && Version::new(&release.version) < Version::new(&report.version);
    if older && !rollout.rollback {
        return Some(format!(
            "version {} is older than the running {} and the rollout is no rollback",
            release.version, report.version
        ));
    }
    None
}

fn offered(release: Arc<ReleaseRow>, rollout: &RolloutRow) -> Offer {
    Offer {
        update: Some(Offered {
            release,
            forced: rollout.forced,
            rollout_id: Some(rollout.id.clone()),
        }),
    }
}

/// Decides what `device` (as it reports itself in `report`, already recorded) is offered.
pub async fn offer(
    db: &dyn Database,
    device: &DeviceRow,
    report: &CheckinReport,
    now: i64,
) -> DbResult<Offer> {
    offer_in(&View::uncached(db), device, report, now).await
}

/// [`offer`], reading the rows shared by the product's devices through `view` (from memory
/// when cached, [`super::offer_cache`]).
pub async fn offer_in(
    view: &View<'_>,
    device: &DeviceRow,
    report: &CheckinReport,
    now: i64,
) -> DbResult<Offer> {
    let active = Active::Unread;
    offer_known(view, device, report, now, active).await
}

/// The device's active deployment as [`offer_known`] is given it.
#[derive(Debug, Clone)]
pub enum Active {
    /// Read with the device, after nothing of this check-in changed deployments.
    Read(Option<DeploymentRow>),
    /// Not read yet: the offer reads it.
    Unread,
}

/// [`offer_in`] with the device's active deployment read already (with the device, in one
/// statement: [`crate::db::checkin`]) when `active` says so.
pub async fn offer_known(
    view: &View<'_>,
    device: &DeviceRow,
    report: &CheckinReport,
    now: i64,
    active: Active,
) -> DbResult<Offer> {
    let db = view.db;
    let product = view.product(&device.product).await?;
    if product.chip != report.chip {
        tracing::warn!(device = %device.id, reported = %report.chip, "device reports a chip other than its product's; no update offered");
        return Ok(Offer::default());
    }

    // Rule 2: an active deployment.
    let active = match active {
        Active::Read(d) => d,
        Active::Unread => db.active_deployment(&device.id).await?,
    };
    if let Some(d) = active {
        let rollout = view.rollout(&d.rollout_id).await?;
        let release = view.release(&d.release_id).await?;
        if report.image_sha256.as_ref() == Some(&release.sha256) {
            report_on_deployment(
                db,
                &d,
                DeviceState::Success,
                Some("running the release's image"),
                now,
            )
            .await?;
        } else if matches!(rollout.state.as_str(), "running" | "paused" | "completed") {
            return Ok(offered(release, &rollout));
        } else {
            // Assigned by a check-in that raced with the abort: cancel it now, so it blocks no
            // other rollout.
            report_on_deployment(db, &d, DeviceState::Cancelled, Some("rollout aborted"), now)
                .await?;
        }
    }

    // Rule 3: the newest live rollout whose target matches decides alone.
    let rollouts = view.live_rollouts(device.product_id).await?;
    // Tags matter only to targets other than a channel.
    let tags = if rollouts.iter().any(|r| r.target_kind != "channel") {
        db.device_tags(&device.id).await?
    } else {
        Vec::new()
    };
    for rollout in rollouts.iter() {
        if !targets(db, rollout, device, report, &tags, now).await? {
            continue;
        }
        if let Some(offer) = from_rollout(view, rollout, device, report, now).await? {
            return Ok(offer);
        }
        break;
    }

    // Rule 4: the channel, without the releases that rollouts deliver.
    let rolled_out = view.rolled_out_images(device.product_id).await?;
    let all = view
        .release_candidates(
            device.product_id,
            &device.channel,
            report.security_counter,
            now,
        )
        .await?;
    let candidates: Vec<&ReleaseRow> = all
        .iter()
        // A release larger than the device's update slot is refused by the device ("oversize")
        // at every poll, and would hide the older releases of the channel it can install.
        .filter(|r| fits_partition(r, report.partition_size))
        .filter(|r| !rolled_out.contains(&r.sha256))
        .collect();
    Ok(Offer {
        update: choose_release(&candidates, &report.version, report.image_sha256.as_ref()).map(
            |r| Offered {
                release: Arc::new(r.clone()),
                forced: true,
                rollout_id: None,
            },
        ),
    })
}

/// A device in the target of `rollout`, with no active deployment: its offer when the rollout
/// assigns it now, `None` when the rollout has nothing for it now (its stage is not open, the
/// rollout is paused, the device finished here, the window is closed, the rate is used up).
async fn from_rollout(
    view: &View<'_>,
    rollout: &RolloutRow,
    device: &DeviceRow,
    report: &CheckinReport,
    now: i64,
) -> DbResult<Option<Offer>> {
    let stages = match Stages::new(rollout.stages.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(rollout = %rollout.id, error = %e, "stored rollout has bad stages");
            return Ok(None);
        }
    };
    let b = bucket(&rollout.id, &device.id);
    let Some(stage) = stages.stage_of(b) else {
        return Ok(None);
    };
    let open = match rollout.state.as_str() {
        "completed" => true,
        "running" => stage as i64 <= rollout.current_stage,
        _ => false,
    };
    if !open {
        return Ok(None);
    }
    let db = view.db;
    let release = view.release(&rollout.release_id).await?;
    if let Some(d) = db.get_deployment(&rollout.id, &device.id).await? {
        // Assigned by a check-in alongside this one: answer it. Finished here already
        // (success, failure, ...): a rollout offers a device once.
        return Ok((!d.state.is_final()).then(|| offered(release, rollout)));
    }
    let mut d = DeploymentRow {
        rollout_id: rollout.id.clone(),
        device_id: device.id.clone(),
        release_id: release.id.clone(),
        stage: stage as i64,
        state: DeviceState::Assigned,
        reason: None,
        assigned_at: now,
        updated_at: now,
        finished_at: None,
    };
    // Finished at once: already running it (success), or it cannot take it (refused).
    let settled = if report.image_sha256.as_ref() == Some(&release.sha256) {
        Some((
            DeviceState::Success,
            "already running the release's image".to_string(),
        ))
    } else {
        unsuitable(rollout, &release, report, now)
            .map(|why| (DeviceState::Refused, format!("server: {why}")))
    };
    if let Some((state, why)) = settled {
        d.state = state;
        d.reason = Some(why);
        d.finished_at = Some(now);
        match db.insert_deployment(&d, false).await {
            Ok(()) => deployment_finished(db, &rollout.id, now).await?,
            Err(DbError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        return Ok(None);
    }
    if let (Some(s), Some(e)) = (rollout.window_start, rollout.window_end) {
        let w = Window {
            start: s as u32,
            end: e as u32,
        };
        if !w.contains(now) {
            return Ok(None);
        }
    }
    if let Some(rate) = rollout.rate_per_minute {
        if !db.take_rate_slot(&rollout.id, now / 60, rate).await? {
            return Ok(None);
        }
    }
    match db.insert_deployment(&d, true).await {
        Ok(()) => {
            metrics::counter!("otter_rollout_assignments_total").increment(1);
            Ok(Some(offered(release, rollout)))
        }
        // Another check-in of this device (on this instance or another) assigned first; the
        // constraints keep one active deployment. Answer what it holds now.
        Err(DbError::Conflict(_)) => match db.active_deployment(&device.id).await? {
            Some(active) if active.rollout_id == rollout.id => Ok(Some(offered(release, rollout))),
            _ => Ok(None),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in digest, named for reading.
    fn h(name: &str) -> Sha256 {
        Sha256::of(name.as_bytes())
    }

    fn rel(version: &str, sha: &str, published_at: i64) -> ReleaseRow {
        ReleaseRow {
            id: format!("rel_{version}_{published_at}"),
            product_id: 1,
            product: "p".into(),
            channel: "stable".into(),
            version: version.into(),
            chip: otter_core::Chip::Esp32,
            security_counter: 0,
            size: 1,
            sha256: h(sha),
            manifest_created_at: 0,
            expires_at: None,
            envelope: vec![],
            signed_by: String::new(),
            project_name: None,
            idf_version: None,
            published_at,
            published_by: "t".into(),
        }
    }

    fn rollout(rollback: bool) -> RolloutRow {
        RolloutRow {
            id: "ro_1".into(),
            product_id: 1,
            release_id: "rel".into(),
            target_kind: "tag".into(),
            target: "lab".into(),
            stages: vec![100],
            current_stage: 0,
            state: "running".into(),
            pause_reason: None,
            failure_kind: "percent".into(),
            failure_threshold: 20,
            min_finished: 0,
            success_percent: None,
            auto_advance: false,
            soak_s: 0,
            rollback,
            forced: true,
            window_start: None,
            window_end: None,
            rate_per_minute: None,
            stage_met_at: None,
            ack_failed: 0,
            ack_finished: 0,
            created_by: "t".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn report(version: &str, counter: i64, partition: Option<i64>) -> CheckinReport {
        CheckinReport {
            chip: otter_core::Chip::Esp32,
            version: version.into(),
            security_counter: counter,
            image_sha256: Some(h("x")),
            partition_size: partition,
            at: 0,
        }
    }

    #[test]
    fn a_rollout_release_must_suit_the_device() {
        let mut r = rel("1.0.0", "a", 1);
        r.security_counter = 2;
        r.size = 100;
        let plain = rollout(false);
        assert_eq!(
            unsuitable(&plain, &r, &report("0.9.0", 2, Some(100)), 0),
            None
        );
        let why = |ro: &RolloutRow, rep: &CheckinReport| unsuitable(ro, &r, rep, 0).unwrap();
        assert!(why(&plain, &report("0.9.0", 3, None)).contains("security counter 2"));
        assert!(why(&plain, &report("0.9.0", 0, Some(99))).contains("does not fit"));
        assert!(why(&plain, &report("1.1.0", 0, None)).contains("no rollback"));
        // A rollback may go down in version, never below the device's counter.
        let back = rollout(true);
        assert_eq!(unsuitable(&back, &r, &report("1.1.0", 2, None), 0), None);
        assert!(why(&back, &report("1.1.0", 3, None)).contains("security counter"));
        // A device without a version (known by its image) is never "newer".
        assert_eq!(unsuitable(&plain, &r, &report("", 0, None), 0), None);
        r.expires_at = Some(10);
        assert!(unsuitable(&plain, &r, &report("0.9.0", 0, None), 10)
            .unwrap()
            .contains("expired"));
    }

    #[test]
    fn offers_the_newest_version_not_the_latest_upload() {
        let c = [rel("1.10.0", "b", 1), rel("1.9.0", "a", 2)];
        assert_eq!(
            choose_release(&c, "1.0.0", Some(&h("x"))).unwrap().version,
            "1.10.0"
        );
    }

    #[test]
    fn equal_versions_prefer_the_later_publication() {
        let c = [rel("2.0.0", "a", 1), rel("2.0.0", "b", 5)];
        assert_eq!(
            choose_release(&c, "1.0.0", Some(&h("x"))).unwrap().sha256,
            h("b")
        );
    }

    #[test]
    fn nothing_when_running_it_or_newer_or_no_candidates() {
        let c = [rel("2.0.0", "a", 1)];
        assert!(
            choose_release(&c, "1.0.0", Some(&h("a"))).is_none(),
            "already running these bytes"
        );
        assert!(
            choose_release(&c, "2.1.0", Some(&h("z"))).is_none(),
            "never downgrades"
        );
        assert!(choose_release::<ReleaseRow>(&[], "1.0.0", Some(&h("z"))).is_none());
        // Same version, different bytes (a rebuild): offered.
        assert!(choose_release(&c, "2.0.0", Some(&h("z"))).is_some());
    }

    #[test]
    fn a_device_without_a_version_is_known_by_its_image_hash() {
        let c = [rel("1.20.1", "new", 2), rel("1.20.0", "old", 1)];
        assert_eq!(
            choose_release(&c, "", Some(&h("old"))).unwrap().version,
            "1.20.1"
        );
        assert!(
            choose_release(&c, "", Some(&h("new"))).is_none(),
            "running the newest"
        );
        assert_eq!(
            choose_release(&c, "", Some(&h("unknown"))).unwrap().version,
            "1.20.1",
            "an image the server does not know is offered the newest"
        );
    }
}
