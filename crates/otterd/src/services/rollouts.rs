//! Rollouts as a service (docs/rollouts.md): creating one, pausing, resuming, aborting and
//! advancing it, feeding its deployments from what devices report, and judging its stages
//! against their thresholds. No HTTP here; the handlers in `routes::rollouts` map the results.

use std::collections::{BTreeMap, HashMap};

use otter_core::fleet::DeviceFilter;
use otter_core::rollout::{bucket, failure_tripped, success_met, Stages, Threshold, Window};

use super::membership;
use crate::db::rollouts::{DeploymentRow, RolloutRow};
use crate::db::AuditRow;
use crate::db::{Database, DbError, DbResult, DeviceRow, DeviceState};

/// Why a rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// Bad input; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such rollout, release or group.
    #[error("{0}")]
    NotFound(String),
    /// The rollout is in a state that does not allow this.
    #[error("{0}")]
    State(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a rollout targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel(String),
    Tag(String),
    Group(String),
    Filter(DeviceFilter),
}

impl Target {
    fn kind_and_value(&self) -> (&'static str, String) {
        match self {
            Target::Channel(c) => ("channel", c.clone()),
            Target::Tag(t) => ("tag", t.clone()),
            Target::Group(g) => ("group", g.clone()),
            Target::Filter(f) => ("filter", f.to_string()),
        }
    }
}

/// A validated request to create a rollout.
#[derive(Debug, Clone)]
pub struct RolloutSpec {
    pub release_id: String,
    pub target: Target,
    pub stages: Stages,
    pub failure: Threshold,
    pub min_finished: u32,
    /// `None`: every device of a stage must succeed.
    pub success_percent: Option<u32>,
    pub auto_advance: bool,
    pub soak_s: u32,
    pub rollback: bool,
    pub forced: bool,
    pub window: Option<Window>,
    pub rate_per_minute: Option<u32>,
    /// The id a preview proposed (issue 11), so that the rollout reaches the devices the
    /// preview counted; `None`: a new one.
    pub id: Option<String>,
}

/// Creates a running rollout of `spec`'s release at its first stage.
pub async fn create(
    db: &dyn Database,
    spec: RolloutSpec,
    created_by: &str,
    now: i64,
) -> Result<RolloutRow, RolloutError> {
    let release = match db.get_release(&spec.release_id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => {
            return Err(RolloutError::NotFound(format!(
                "no release {}",
                spec.release_id
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if let Target::Group(name) = &spec.target {
        match db.get_group(release.product_id, name).await {
            Ok(_) => {}
            Err(DbError::NotFound) => {
                return Err(RolloutError::NotFound(format!(
                    "product {:?} has no group {name:?}",
                    release.product
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(p) = spec.success_percent {
        if !(1..=100).contains(&p) {
            return Err(RolloutError::Invalid(
                "success_percent must be between 1 and 100".into(),
            ));
        }
    }
    if release.expires_at.is_some_and(|e| e <= now) {
        return Err(RolloutError::Invalid(format!(
            "release {} has expired; devices would refuse it",
            release.id
        )));
    }
    if spec.rate_per_minute == Some(0) {
        return Err(RolloutError::Invalid(
            "rate_per_minute must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    if let Some(id) = &spec.id {
        super::preview::check_proposed_id(id, now)?;
    }
    let (target_kind, target) = spec.target.kind_and_value();
    let (failure_kind, failure_threshold) = match spec.failure {
        Threshold::Percent(p) => ("percent", i64::from(p)),
        Threshold::Count(n) => ("count", n.min(i64::MAX as u64) as i64),
    };
    let row = RolloutRow {
        id: spec.id.clone().unwrap_or_else(rollout_id),
        product_id: release.product_id,
        release_id: release.id.clone(),
        target_kind: target_kind.into(),
        target,
        stages: spec.stages.percents().to_vec(),
        current_stage: 0,
        state: "running".into(),
        pause_reason: None,
        failure_kind: failure_kind.into(),
        failure_threshold,
        min_finished: i64::from(spec.min_finished),
        success_percent: spec.success_percent.map(i64::from),
        auto_advance: spec.auto_advance,
        soak_s: i64::from(spec.soak_s),
        rollback: spec.rollback,
        forced: spec.forced,
        window_start: spec.window.map(|w| i64::from(w.start)),
        window_end: spec.window.map(|w| i64::from(w.end)),
        rate_per_minute: spec.rate_per_minute.map(i64::from),
        stage_met_at: None,
        ack_failed: 0,
        ack_finished: 0,
        created_by: created_by.into(),
        created_at: now,
        updated_at: now,
    };
    db.create_rollout(&row).await.map_err(|e| match e {
        DbError::Conflict(_) if spec.id.is_some() => RolloutError::State(format!(
            "a rollout with id {} exists already; preview the rollout again for a new id",
            row.id
        )),
        e => e.into(),
    })?;
    tracing::info!(rollout = %row.id, release = %row.release_id, by = created_by, "rollout created");
    Ok(row)
}

/// A new rollout id that sorts by creation time (nanoseconds, then random), so "newest" is
/// well defined between rollouts created in the same second.
fn rollout_id() -> String {
    // u64 nanoseconds last until the year 2554; kept short, as the id travels in every
    // assignment and the agent reads the check-in answer into a small buffer.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let random = crate::auth::new_id("");
    format!("ro_{nanos:016x}{}", &random[..8])
}

async fn get(db: &dyn Database, id: &str) -> Result<RolloutRow, RolloutError> {
    match db.get_rollout(id).await {
        Ok(r) => Ok(r),
        Err(DbError::NotFound) => Err(RolloutError::NotFound(format!("no rollout {id}"))),
        Err(e) => Err(e.into()),
    }
}

fn refuse(r: &RolloutRow, what: &str) -> RolloutError {
    RolloutError::State(format!(
        "rollout {} is {}; it cannot be {what}",
        r.id, r.state
    ))
}

/// Pauses a running rollout: no new device is assigned; assigned ones may finish.
pub async fn pause(
    db: &dyn Database,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<RolloutRow, RolloutError> {
    get(db, id).await?;
    if !db
        .set_rollout_state(id, &["running"], "paused", Some(reason), None, now)
        .await?
    {
        return Err(refuse(&get(db, id).await?, "paused"));
    }
    get(db, id).await
}

/// Resumes a paused rollout. The open stage's failures so far are acknowledged: its failure
/// threshold counts the deployments that finish from now on.
pub async fn resume(db: &dyn Database, id: &str, now: i64) -> Result<RolloutRow, RolloutError> {
    let r = get(db, id).await?;
    let (failed, finished) = stage_outcomes(db, &r.id, r.current_stage).await?;
    if !db
        .set_rollout_state(
            id,
            &["paused"],
            "running",
            None,
            Some((failed as i64, finished as i64)),
            now,
        )
        .await?
    {
        return Err(refuse(&get(db, id).await?, "resumed"));
    }
    let r = get(db, id).await?;
    evaluate(db, &r, now).await?;
    get(db, id).await
}

/// Aborts a rollout for good: it assigns no device from now on, and its active deployments are
/// cancelled.
pub async fn abort(
    db: &dyn Database,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<RolloutRow, RolloutError> {
    get(db, id).await?;
    if !db
        .set_rollout_state(
            id,
            &["running", "paused", "completed"],
            "aborted",
            Some(reason),
            None,
            now,
        )
        .await?
    {
        return Err(refuse(&get(db, id).await?, "aborted"));
    }
    let n = db
        .cancel_deployments(id, &format!("rollout aborted: {reason}"), now)
        .await?;
    tracing::info!(rollout = %id, cancelled = n, "rollout aborted");
    get(db, id).await
}

/// Opens the next stage by hand (or completes the rollout after its last stage).
pub async fn advance(db: &dyn Database, id: &str, now: i64) -> Result<RolloutRow, RolloutError> {
    let r = get(db, id).await?;
    if r.state != "running" {
        return Err(refuse(&r, "advanced"));
    }
    let last = r.current_stage + 1 >= r.stages.len() as i64;
    if !db.advance_rollout(id, r.current_stage, last, now).await? {
        return Err(RolloutError::State(format!(
            "rollout {id} moved on meanwhile; look at it again"
        )));
    }
    get(db, id).await
}

/// Applies what a device reported (a status report, or a check-in's last outcome) to its active
/// deployment. A report naming another release than the deployment's is not about it.
pub async fn device_reported(
    db: &dyn Database,
    device_id: &str,
    release_id: Option<&str>,
    state: DeviceState,
    reason: Option<&str>,
    now: i64,
) -> DbResult<()> {
    let Some(d) = db.active_deployment(device_id).await? else {
        return Ok(());
    };
    if release_id.is_some_and(|r| r != d.release_id) {
        return Ok(());
    }
    report_on_deployment(db, &d, state, reason, now).await
}

/// Moves a deployment to `state`; at a final state its stage is judged at once.
pub async fn report_on_deployment(
    db: &dyn Database,
    d: &DeploymentRow,
    state: DeviceState,
    reason: Option<&str>,
    now: i64,
) -> DbResult<()> {
    if !db
        .update_deployment(&d.rollout_id, &d.device_id, state, reason, now)
        .await?
    {
        return Ok(());
    }
    if state.is_final() {
        metrics::counter!("otter_deployments_finished_total", "state" => state.as_str())
            .increment(1);
        deployment_finished(db, &d.rollout_id, now).await?;
    }
    Ok(())
}

/// A deployment of `rollout_id` reached a final state: judge its rollout now.
pub async fn deployment_finished(db: &dyn Database, rollout_id: &str, now: i64) -> DbResult<()> {
    let r = db.get_rollout(rollout_id).await?;
    evaluate(db, &r, now).await
}

fn threshold(r: &RolloutRow) -> Threshold {
    match r.failure_kind.as_str() {
        "count" => Threshold::Count(r.failure_threshold.max(0) as u64),
        _ => Threshold::Percent(r.failure_threshold.clamp(0, 100) as u32),
    }
}

/// Judges a running rollout's open stage: pauses it when its failures pass the threshold;
/// with auto-advance, opens the next stage once the success threshold is met and the soak time
/// has passed (repeating for stages that are already met). The background worker calls this
/// for the time-based part; a finished deployment calls it at once.
pub async fn evaluate(db: &dyn Database, rollout: &RolloutRow, now: i64) -> DbResult<()> {
    let mut r = rollout.clone();
    for _ in 0..=r.stages.len() {
        if r.state != "running" {
            return Ok(());
        }
        let stage = r.current_stage;
        let (failed, finished) = stage_outcomes(db, &r.id, stage).await?;
        let failed = failed.saturating_sub(r.ack_failed.max(0) as u64);
        let finished = finished.saturating_sub(r.ack_finished.max(0) as u64);
        if let Some(reason) = failure_tripped(
            stage as usize,
            failed,
            finished,
            threshold(&r),
            r.min_finished.max(0) as u64,
        ) {
            if db
                .set_rollout_state(&r.id, &["running"], "paused", Some(&reason), None, now)
                .await?
            {
                metrics::counter!("otter_rollouts_auto_paused_total").increment(1);
                tracing::warn!(rollout = %r.id, reason = %reason, "rollout paused itself");
                let entry = AuditRow::system("rollout.pause")
                    .target(&r.id)
                    .detail(&reason);
                crate::audit::record(db, entry).await?;
            }
            return Ok(());
        }
        if !r.auto_advance {
            return Ok(());
        }
        let all = db.deployment_counts(&r.id).await?;
        let in_stage = || all.iter().filter(|c| c.stage == stage);
        let succeeded: u64 = in_stage()
            .filter(|c| c.state == DeviceState::Success)
            .map(|c| c.count as u64)
            .sum();
        let pending: i64 = in_stage()
            .filter(|c| !c.state.is_final())
            .map(|c| c.count)
            .sum();
        let percent = r.success_percent.map(|p| p.clamp(1, 100) as u32);
        // Counting the stage's devices reads the product's devices: not while a deployment of
        // the stage is still under way and every device must succeed.
        if percent.is_none() && pending > 0 {
            return Ok(());
        }
        let members = stage_members(db, &r, stage as usize, now).await?;
        if !success_met(succeeded, members, percent) {
            return Ok(());
        }
        let met_at = match r.stage_met_at {
            Some(at) => at,
            None => {
                db.mark_stage_met(&r.id, stage, now).await?;
                now
            }
        };
        if now - met_at < r.soak_s {
            return Ok(());
        }
        let last = stage + 1 >= r.stages.len() as i64;
        if db.advance_rollout(&r.id, stage, last, now).await? {
            tracing::info!(rollout = %r.id, stage = stage + 1, completed = last, "rollout stage succeeded");
            let what = if last {
                "completed"
            } else {
                "next stage opened"
            };
            let entry = AuditRow::system("rollout.advance")
                .target(&r.id)
                .detail(format!("stage {} succeeded; {what}", stage + 1));
            crate::audit::record(db, entry).await?;
        }
        r = db.get_rollout(&r.id).await?;
    }
    Ok(())
}

/// Failed and finished deployments of a stage.
async fn stage_outcomes(db: &dyn Database, rollout_id: &str, stage: i64) -> DbResult<(u64, u64)> {
    let (mut failed, mut finished) = (0u64, 0u64);
    for c in db.deployment_counts(rollout_id).await? {
        if c.stage != stage {
            continue;
        }
        // The failed ends count for the failure threshold.
        if c.state.is_failed() {
            failed += c.count as u64;
            finished += c.count as u64;
        } else if c.state == DeviceState::Success {
            finished += c.count as u64;
        }
    }
    Ok((failed, finished))
}

/// How many of the product's devices the rollout targets in stage `stage` (0-based).
pub async fn stage_members(
    db: &dyn Database,
    r: &RolloutRow,
    stage: usize,
    now: i64,
) -> DbResult<u64> {
    let Ok(stages) = Stages::new(r.stages.clone()) else {
        return Ok(0);
    };
    let devices: Vec<DeviceRow> = db.list_devices(Some(r.product_id)).await?;
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for (device, tag) in db.product_device_tags(r.product_id).await? {
        tags.entry(device).or_default().push(tag);
    }
    let none = Vec::new();
    let mut n = 0;
    for d in &devices {
        if stages.stage_of(bucket(&r.id, &d.id)) != Some(stage) {
            continue;
        }
        let t = tags.get(&d.id).unwrap_or(&none);
        let facts = membership::facts(d, None, t);
        if membership::matches(db, r, d, &facts, now).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// One stage's progress: its percentage and its deployments by state.
#[derive(Debug, Clone)]
pub struct StageProgress {
    pub stage: usize,
    pub percent: u32,
    pub counts: BTreeMap<String, i64>,
}

/// Per-stage counts of a rollout's deployments by state (every state listed, 0 when none).
pub async fn progress(db: &dyn Database, r: &RolloutRow) -> DbResult<Vec<StageProgress>> {
    let mut out: Vec<StageProgress> = r
        .stages
        .iter()
        .enumerate()
        .map(|(stage, &percent)| StageProgress {
            stage,
            percent,
            counts: DeviceState::DEPLOYMENT
                .iter()
                .map(|s| (s.as_str().to_string(), 0))
                .collect(),
        })
        .collect();
    for c in db.deployment_counts(&r.id).await? {
        if let Some(p) = out.get_mut(c.stage as usize) {
            p.counts.insert(c.state.as_str().to_string(), c.count);
        }
    }
    Ok(out)
}

/// One pass of the background worker: judges every running rollout (soak times, stages whose
/// devices changed).
pub async fn tick(db: &dyn Database, now: i64) -> DbResult<usize> {
    let running = db.running_rollouts().await?;
    for r in &running {
        evaluate(db, r, now).await?;
    }
    Ok(running.len())
}
