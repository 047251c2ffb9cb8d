//! `/api/v1/rollouts`: create, list, show, pause, resume, abort and advance staged rollouts
//! (docs/rollouts.md). Admins and publishers of the product change them; viewers read. The
//! rules live in `services::rollouts`; these handlers parse, call and map.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, Role};
use crate::db::rollouts::RolloutRow;
use crate::db::DbError;
use crate::error::{ApiError, ApiResult, Json};
use crate::services::rollouts::{self as service, RolloutError, RolloutSpec, Target};
use crate::{now, pagination, AppState};
use otter_core::rollout::{Stages, Threshold, Window};

/// Body of `POST /api/v1/rollouts`. Exactly one of `channel`, `tag`, `group`, `filter`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    pub release_id: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// A device filter (docs/fleet.md syntax), e.g. `tag=lab,version<2.0.0`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Cumulative percentages of the target, e.g. `"10,50,100"`.
    pub stages: String,
    /// `"20%"` of the finished devices of a stage, or `"5"` devices.
    pub failure_threshold: String,
    /// Finished devices a stage needs before its failure threshold is judged.
    #[serde(default)]
    pub min_finished: u32,
    /// `"90%"` of a stage's devices succeeded; absent: every one.
    #[serde(default)]
    pub success_threshold: Option<String>,
    /// Open the next stage once the success threshold is met (and `soak_s` passed).
    #[serde(default)]
    pub auto_advance: bool,
    #[serde(default)]
    pub soak_s: u32,
    /// A deliberate rollback to an older version.
    #[serde(default)]
    pub rollback: bool,
    /// Devices may defer the update (`forced: false` in the assignment).
    #[serde(default)]
    pub optional: bool,
    /// Daily UTC window for new assignments, `hh:mm-hh:mm`.
    #[serde(default)]
    pub window: Option<String>,
    /// New deployments a minute, at most.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// The `rollout_id` of a preview (`GET /api/v1/rollouts/preview`), so that the rollout
    /// reaches the devices the preview counted; valid for 24 hours.
    #[serde(default)]
    pub preview_id: Option<String>,
}

/// What a rollout targets.
#[derive(Serialize, ToSchema)]
pub struct TargetView {
    /// `channel`, `tag`, `group` or `filter`.
    pub kind: String,
    pub value: String,
}

/// One stage's progress.
#[derive(Serialize, ToSchema)]
pub struct StageView {
    /// 1-based.
    pub stage: usize,
    /// Cumulative percentage of the target.
    pub percent: u32,
    /// Deployments of the stage by state (every state, 0 when none).
    pub counts: BTreeMap<String, i64>,
}

/// A rollout.
#[derive(Serialize, ToSchema)]
pub struct Rollout {
    pub id: String,
    pub product: String,
    pub release_id: String,
    pub version: String,
    pub target: TargetView,
    pub stages: Vec<u32>,
    /// 1-based stage open now.
    pub current_stage: i64,
    /// `running`, `paused`, `completed` or `aborted`.
    pub state: String,
    pub pause_reason: Option<String>,
    pub failure_threshold: String,
    pub min_finished: i64,
    /// `all`, or a percentage such as `90%`.
    pub success_threshold: String,
    pub auto_advance: bool,
    pub soak_s: i64,
    pub rollback: bool,
    pub forced: bool,
    pub window: Option<String>,
    pub rate_per_minute: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Per stage, deployments by state (in `show`, create and changes; empty in lists).
    pub progress: Vec<StageView>,
}

/// A page of rollouts, newest first.
#[derive(Serialize, ToSchema)]
pub struct RolloutList {
    pub rollouts: Vec<Rollout>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

/// Query of `GET /api/v1/rollouts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutQuery {
    pub product: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// Body of pause and abort.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: Option<String>,
}

/// One device's deployment.
#[derive(Serialize, ToSchema)]
pub struct Deployment {
    pub device_id: String,
    pub release_id: String,
    /// 1-based.
    pub stage: i64,
    pub state: String,
    pub reason: Option<String>,
    pub assigned_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// The device's reports on this release are its history:
    /// `GET /api/v1/devices/{device_id}/history` (events with this `release_id`).
    pub history: String,
}

/// A page of a rollout's deployments, by device id.
#[derive(Serialize, ToSchema)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

pub(crate) fn map_err(e: RolloutError) -> ApiError {
    match e {
        RolloutError::Invalid(m) => ApiError::bad_request(m),
        RolloutError::NotFound(m) => ApiError::not_found(m),
        RolloutError::State(m) => ApiError::conflict(m),
        RolloutError::Db(e) => e.into(),
    }
}

/// The reason of an optional `{"reason": ...}` body (empty: none).
fn optional_reason(body: &[u8]) -> ApiResult<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Reason>(body)
        .map(|r| r.reason)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn reason_text(r: Option<String>, who: &Principal, what: &str) -> ApiResult<String> {
    let r = r.unwrap_or_else(|| format!("{what} by {}", who.name));
    if r.chars().count() > 256 || r.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "reason is limited to 256 characters without control characters",
        ));
    }
    Ok(r)
}

/// The one target of a rollout among `channel`, `tag`, `group` and `filter`, checked.
pub(crate) fn target(
    channel: Option<String>,
    tag: Option<String>,
    group: Option<String>,
    filter: Option<String>,
) -> ApiResult<Target> {
    let targets = [
        channel.map(Target::Channel),
        tag.map(Target::Tag),
        group.map(Target::Group),
        match filter {
            Some(f) => Some(Target::Filter(f.parse().map_err(
                |e: otter_core::fleet::FilterError| ApiError::bad_request(e.to_string()),
            )?)),
            None => None,
        },
    ];
    let mut given = targets.into_iter().flatten();
    let target = match (given.next(), given.next()) {
        (Some(t), None) => t,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one target: channel, tag, group or filter",
            ))
        }
    };
    match &target {
        Target::Channel(c) => super::devices::check_channel(c)?,
        Target::Tag(t) | Target::Group(t) => {
            if t.is_empty() || t.len() > 64 || t.chars().any(|c| c.is_control() || c == ',') {
                return Err(ApiError::bad_request(
                    "a tag or group name is 1 to 64 characters without commas",
                ));
            }
        }
        Target::Filter(_) => {}
    }
    Ok(target)
}

fn spec(body: CreateRollout) -> ApiResult<RolloutSpec> {
    let bad = |e: otter_core::rollout::RuleError| ApiError::bad_request(e.0);
    let target = target(body.channel, body.tag, body.group, body.filter)?;
    let success_percent = match body.success_threshold.as_deref() {
        None | Some("all") => None,
        Some(s) => match s.parse::<Threshold>().map_err(bad)? {
            Threshold::Percent(p) if p >= 1 => Some(p),
            _ => return Err(ApiError::bad_request(
                "success_threshold is a percentage of the stage's devices, 1% to 100%, or `all`",
            )),
        },
    };
    Ok(RolloutSpec {
        release_id: body.release_id,
        target,
        stages: body.stages.parse::<Stages>().map_err(bad)?,
        failure: body.failure_threshold.parse().map_err(bad)?,
        min_finished: body.min_finished,
        success_percent,
        auto_advance: body.auto_advance,
        soak_s: body.soak_s,
        rollback: body.rollback,
        forced: !body.optional,
        window: body
            .window
            .as_deref()
            .map(str::parse::<Window>)
            .transpose()
            .map_err(bad)?,
        rate_per_minute: body.rate_per_minute,
        id: body.preview_id,
    })
}

async fn view(state: &AppState, r: &RolloutRow, with_progress: bool) -> ApiResult<Rollout> {
    let release = state.db.get_release(&r.release_id).await?;
    let progress = if with_progress {
        service::progress(state.db.as_ref(), r)
            .await?
            .into_iter()
            .map(|p| StageView {
                stage: p.stage + 1,
                percent: p.percent,
                counts: p.counts,
            })
            .collect()
    } else {
        vec![]
    };
    Ok(Rollout {
        id: r.id.clone(),
        product: release.product.clone(),
        release_id: r.release_id.clone(),
        version: release.version.clone(),
        target: TargetView {
            kind: r.target_kind.clone(),
            value: r.target.clone(),
        },
        stages: r.stages.clone(),
        current_stage: r.current_stage + 1,
        state: r.state.clone(),
        pause_reason: r.pause_reason.clone(),
        failure_threshold: match r.failure_kind.as_str() {
            "count" => r.failure_threshold.to_string(),
            _ => format!("{}%", r.failure_threshold),
        },
        min_finished: r.min_finished,
        success_threshold: r
            .success_percent
            .map_or_else(|| "all".to_string(), |p| format!("{p}%")),
        auto_advance: r.auto_advance,
        soak_s: r.soak_s,
        rollback: r.rollback,
        forced: r.forced,
        window: match (r.window_start, r.window_end) {
            (Some(s), Some(e)) => Some(
                Window {
                    start: s as u32,
                    end: e as u32,
                }
                .to_string(),
            ),
            _ => None,
        },
        rate_per_minute: r.rate_per_minute,
        created_by: r.created_by.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        progress,
    })
}

/// The rollout and its product's name, if `who` may read it (else 404, as if absent).
async fn readable(state: &AppState, who: &Principal, id: &str) -> ApiResult<(RolloutRow, String)> {
    let missing = || ApiError::not_found(format!("no rollout {id}"));
    let r = match state.db.get_rollout(id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let product = state.db.get_release(&r.release_id).await?.product;
    if !who.may_read_product(&product) {
        return Err(missing());
    }
    Ok((r, product))
}

/// The rollout, if `who` may change it (admins, publishers of its product).
async fn changeable(state: &AppState, who: &Principal, id: &str) -> ApiResult<RolloutRow> {
    let (r, product) = readable(state, who, id).await?;
    if who.role == Role::Viewer {
        return Err(ApiError::forbidden("viewer tokens cannot change rollouts"));
    }
    who.require_publish(&product)?;
    Ok(r)
}

#[utoipa::path(operation_id = "rollouts_create", post, path = "/api/v1/rollouts", tag = "rollouts",
    request_body = CreateRollout,
    responses((status = 201, body = Rollout), (status = 400, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<CreateRollout>,
) -> ApiResult<(StatusCode, Json<Rollout>)> {
    if who.role == Role::Viewer {
        return Err(ApiError::forbidden("viewer tokens cannot create rollouts"));
    }
    let spec = spec(body)?;
    let release = match state.db.get_release(&spec.release_id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => {
            return Err(ApiError::not_found(format!(
                "no release {}",
                spec.release_id
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if !who.may_read_product(&release.product) {
        return Err(ApiError::not_found(format!(
            "no release {}",
            spec.release_id
        )));
    }
    who.require_publish(&release.product)?;
    let r = service::create(state.db.as_ref(), spec, &who.name, now())
        .await
        .map_err(map_err)?;
    Ok((StatusCode::CREATED, Json(view(&state, &r, true).await?)))
}

#[utoipa::path(operation_id = "rollouts_list", get, path = "/api/v1/rollouts", tag = "rollouts",
    params(("product" = Option<String>, Query),
           ("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = RolloutList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<RolloutQuery>,
) -> ApiResult<Json<RolloutList>> {
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = match q.cursor.as_deref() {
        Some(c) => Some(pagination::decode("rollouts", c, 1)?.remove(0)),
        None => None,
    };
    let mut only: Option<Vec<i64>> = None;
    if let Some(p) = &q.product {
        if !who.may_read_product(p) {
            return Err(ApiError::forbidden(format!(
                "token {:?} may not read product {p:?}",
                who.name
            )));
        }
        only = Some(vec![state.db.get_product(p).await?.id]);
    } else if who.role == Role::Publisher {
        let mut ids = vec![];
        for p in &who.products {
            match state.db.get_product(p).await {
                Ok(p) => ids.push(p.id),
                Err(DbError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        only = Some(ids);
    }
    let rows = state
        .db
        .list_rollouts(only.as_deref(), after.as_deref(), limit + 1)
        .await?;
    let (rows, next) = pagination::page(rows, limit, |r| {
        pagination::encode("rollouts", std::slice::from_ref(&r.id))
    });
    let mut rollouts = Vec::with_capacity(rows.len());
    for r in &rows {
        rollouts.push(view(&state, r, false).await?);
    }
    Ok(Json(RolloutList { rollouts, next }))
}

#[utoipa::path(operation_id = "rollouts_show", get, path = "/api/v1/rollouts/{id}", tag = "rollouts",
    responses((status = 200, body = Rollout), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Rollout>> {
    let (r, _) = readable(&state, &who, &id).await?;
    Ok(Json(view(&state, &r, true).await?))
}

#[utoipa::path(operation_id = "rollouts_pause", post, path = "/api/v1/rollouts/{id}/pause", tag = "rollouts",
    request_body = Reason,
    responses((status = 200, body = Rollout), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "not running")))]
pub async fn pause(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Rollout>> {
    changeable(&state, &who, &id).await?;
    let reason = reason_text(optional_reason(&body)?, &who, "paused")?;
    let r = service::pause(state.db.as_ref(), &id, &reason, now())
        .await
        .map_err(map_err)?;
    Ok(Json(view(&state, &r, true).await?))
}

#[utoipa::path(operation_id = "rollouts_resume", post, path = "/api/v1/rollouts/{id}/resume", tag = "rollouts",
    responses((status = 200, body = Rollout), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "not paused")))]
pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Rollout>> {
    changeable(&state, &who, &id).await?;
    let r = service::resume(state.db.as_ref(), &id, now())
        .await
        .map_err(map_err)?;
    Ok(Json(view(&state, &r, true).await?))
}

#[utoipa::path(operation_id = "rollouts_abort", post, path = "/api/v1/rollouts/{id}/abort", tag = "rollouts",
    request_body = Reason,
    responses((status = 200, body = Rollout), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "aborted already")))]
pub async fn abort(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Rollout>> {
    changeable(&state, &who, &id).await?;
    let reason = reason_text(optional_reason(&body)?, &who, "aborted")?;
    let r = service::abort(state.db.as_ref(), &id, &reason, now())
        .await
        .map_err(map_err)?;
    Ok(Json(view(&state, &r, true).await?))
}

#[utoipa::path(operation_id = "rollouts_advance", post, path = "/api/v1/rollouts/{id}/advance", tag = "rollouts",
    responses((status = 200, body = Rollout), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "not running")))]
pub async fn advance(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Rollout>> {
    changeable(&state, &who, &id).await?;
    let r = service::advance(state.db.as_ref(), &id, now())
        .await
        .map_err(map_err)?;
    Ok(Json(view(&state, &r, true).await?))
}

#[utoipa::path(operation_id = "rollouts_deployments", get, path = "/api/v1/rollouts/{id}/deployments", tag = "rollouts",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = DeploymentList), (status = 404, body = crate::error::ErrorBody)))]
pub async fn deployments(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<pagination::ListQuery>,
) -> ApiResult<Json<DeploymentList>> {
    readable(&state, &who, &id).await?;
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = match q.cursor.as_deref() {
        Some(c) => Some(pagination::decode("deployments", c, 1)?.remove(0)),
        None => None,
    };
    let rows = state
        .db
        .page_deployments(&id, after.as_deref(), limit + 1)
        .await?;
    let (rows, next) = pagination::page(rows, limit, |d| {
        pagination::encode("deployments", std::slice::from_ref(&d.device_id))
    });
    Ok(Json(DeploymentList {
        deployments: rows
            .into_iter()
            .map(|d| Deployment {
                history: format!("/api/v1/devices/{}/history", d.device_id),
                device_id: d.device_id,
                release_id: d.release_id,
                stage: d.stage + 1,
                state: d.state.as_str().to_string(),
                reason: d.reason,
                assigned_at: d.assigned_at,
                updated_at: d.updated_at,
                finished_at: d.finished_at,
            })
            .collect(),
        next,
    }))
}
