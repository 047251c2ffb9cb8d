//! The overview (`/ui/`): the fleet at a glance, from `services::dashboard::overview`.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::layout::{Layout, Section};
use super::pages::{ago, scope_of, when};
use super::session::SignedIn;
use super::{render, PageResult};
use crate::services::dashboard;
use crate::{now, AppState};

/// Failures listed.
const FAILURES: i64 = 10;

struct VersionBar {
    product: String,
    version: String,
    devices: i64,
    /// Share of all devices, in whole percent.
    percent: i64,
    filter: String,
}

struct StateRow {
    state: String,
    devices: i64,
    /// A state devices reported (a filter of the device table), not "none yet".
    linked: bool,
}

struct StageBar {
    stage: usize,
    percent: u32,
    done: i64,
    failed: i64,
    active: i64,
}

struct RolloutRow {
    id: String,
    product: String,
    version: String,
    state: String,
    reason: String,
    stage: i64,
    stages: usize,
    bars: Vec<StageBar>,
}

struct FailureRow {
    device_id: String,
    hardware_id: String,
    product: String,
    state: String,
    reason: String,
    at: String,
    ago: String,
}

#[derive(Template)]
#[template(path = "dashboard/home.html")]
struct Home {
    layout: Layout,
    devices: i64,
    seen: i64,
    poll: String,
    versions: Vec<VersionBar>,
    states: Vec<StateRow>,
    rollouts: Vec<RolloutRow>,
    failures: Vec<FailureRow>,
}

/// Progress counts of a stage: (finished well, failed, still under way).
pub fn stage_counts(counts: &std::collections::BTreeMap<String, i64>) -> (i64, i64, i64) {
    let get = |s: &str| counts.get(s).copied().unwrap_or(0);
    let failed = get("failure") + get("rolled_back") + get("refused");
    let active = [
        "assigned",
        "downloading",
        "downloaded",
        "installing",
        "rebooting",
    ]
    .iter()
    .map(|s| get(s))
    .sum();
    (get("success"), failed, active)
}

/// `GET /ui/`.
pub async fn page(State(state): State<AppState>, who: SignedIn) -> PageResult<Response> {
    let at = now();
    let poll = state.settings.poll_interval_s;
    let o = dashboard::overview(
        state.db.as_ref(),
        &scope_of(&who.principal),
        poll,
        FAILURES,
        at,
    )
    .await?;
    let total = o.devices.max(1);
    let home = Home {
        layout: Layout::new("Overview", Section::Overview, &who),
        devices: o.devices,
        seen: o.seen_recently,
        poll: if poll % 3600 == 0 {
            format!("{} h", poll / 3600)
        } else if poll % 60 == 0 {
            format!("{} min", poll / 60)
        } else {
            format!("{poll} s")
        },
        versions: o
            .versions
            .into_iter()
            .map(|v| VersionBar {
                percent: v.devices * 100 / total,
                filter: match &v.version {
                    Some(ver) => format!(
                        "/ui/devices?product={}&version={}",
                        super::pages::q(&v.product),
                        super::pages::q(ver)
                    ),
                    None => format!("/ui/devices?product={}", super::pages::q(&v.product)),
                },
                product: v.product,
                version: v.version.unwrap_or_else(|| "(not reported)".into()),
                devices: v.devices,
            })
            .collect(),
        states: o
            .states
            .into_iter()
            .map(|s| StateRow {
                linked: s.state.is_some(),
                state: s.state.unwrap_or_else(|| "(none yet)".into()),
                devices: s.count,
            })
            .collect(),
        rollouts: o
            .rollouts
            .into_iter()
            .map(|s| RolloutRow {
                bars: s
                    .progress
                    .iter()
                    .map(|p| {
                        let (done, failed, active) = stage_counts(&p.counts);
                        StageBar {
                            stage: p.stage + 1,
                            percent: p.percent,
                            done,
                            failed,
                            active,
                        }
                    })
                    .collect(),
                id: s.rollout.id.clone(),
                product: s.product,
                version: s.version,
                state: s.rollout.state.clone(),
                reason: s.rollout.pause_reason.clone().unwrap_or_default(),
                stage: s.rollout.current_stage + 1,
                stages: s.rollout.stages.len(),
            })
            .collect(),
        failures: o
            .failures
            .into_iter()
            .map(|f| FailureRow {
                device_id: f.row.device_id,
                hardware_id: f.row.hardware_id,
                product: f.product,
                state: f.row.state,
                reason: f.row.reason.unwrap_or_default(),
                at: when(f.row.at),
                ago: ago(Some(f.row.at), at),
            })
            .collect(),
    };
    Ok(render(&home))
}
