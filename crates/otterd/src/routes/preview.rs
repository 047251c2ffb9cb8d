//! `GET /api/v1/rollouts/preview` (issue 11): how many devices each stage of a proposed rollout
//! would reach. A read: anyone who may read the release's product may ask. The counting lives
//! in `services::preview`.

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Json};
use crate::services::preview as service;
use crate::{now, AppState};
use otter_core::rollout::Stages;

/// Query of the preview: a release, exactly one target, and the stages.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// The release the rollout would deploy (its product's devices are counted).
    pub release_id: String,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub group: Option<String>,
    /// A device filter (docs/fleet.md syntax).
    pub filter: Option<String>,
    /// Cumulative percentages, e.g. `10,50,100`.
    pub stages: String,
}

/// One stage of a preview.
#[derive(Serialize, ToSchema)]
pub struct StagePreview {
    /// 1-based.
    pub stage: usize,
    /// Cumulative percentage of the target.
    pub percent: u32,
    /// Devices that join when this stage opens.
    pub devices: u64,
    /// Devices in the rollout once this stage is open.
    pub cumulative: u64,
}

/// What a proposed rollout would reach.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    /// Give it as `preview_id` when creating the rollout to reach exactly these devices
    /// (valid for 24 hours).
    pub rollout_id: String,
    pub product: String,
    pub release_id: String,
    pub version: String,
    /// Devices of the target now.
    pub targeted: u64,
    /// Devices of the target beyond the last stage (never reached).
    pub beyond: u64,
    pub stages: Vec<StagePreview>,
}

#[utoipa::path(operation_id = "rollouts_preview", get, path = "/api/v1/rollouts/preview", tag = "rollouts",
    params(PreviewQuery),
    responses((status = 200, body = Preview), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<PreviewQuery>,
) -> ApiResult<Json<Preview>> {
    let target = super::rollouts::target(q.channel, q.tag, q.group, q.filter)?;
    let stages: Stages = q
        .stages
        .parse()
        .map_err(|e: otter_core::rollout::RuleError| ApiError::bad_request(e.0))?;
    let db = state.db.as_ref();
    let (release, product) = service::release_product(db, &q.release_id)
        .await
        .map_err(super::rollouts::map_err)?;
    if !who.may_read_product(&product.name) {
        return Err(ApiError::not_found(format!("no release {}", q.release_id)));
    }
    let p = service::preview(
        db,
        &product,
        &target,
        &stages,
        &service::proposed_id(),
        now(),
    )
    .await
    .map_err(super::rollouts::map_err)?;
    Ok(Json(Preview {
        rollout_id: p.rollout_id,
        product: product.name,
        release_id: release.id,
        version: release.version,
        targeted: p.targeted,
        beyond: p.beyond,
        stages: p
            .stages
            .into_iter()
            .map(|s| StagePreview {
                stage: s.stage + 1,
                percent: s.percent,
                devices: s.devices,
                cumulative: s.cumulative,
            })
            .collect(),
    }))
}
