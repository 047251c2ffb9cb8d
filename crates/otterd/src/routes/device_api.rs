//! The device API (docs/protocol.md): enrol, check in, report status.
//!
//! Every handler except `enroll` takes [`DeviceAuth`]: the device is whoever its token says,
//! and it can only read or write its own data.

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use otter_core::Chip;
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::device_report::check_report;
use super::devices::check_channel;
use crate::auth::{
    hash_secret, new_id, new_secret, DeviceAuth, DeviceCheckin, DEVICE_TOKEN_PREFIX,
};
use crate::db::checkin::CheckinContext;
use crate::db::{CheckinReport, DbError, DeviceInsert, DeviceRow, EventRow, ProductRow, Sha256};
use crate::error::{ApiError, ApiResult, Json};
use crate::services::{assignment, last_seen, rollouts};
use crate::{now, AppState};

/// Body of `POST /device/v1/enroll`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub product: String,
    pub enrollment_secret: String,
    pub hardware_id: String,
    #[serde(default)]
    pub channel: Option<String>,
    /// 16 to 128 printable characters the device chose at random and stored before its first
    /// attempt. Repeating the enrolment with the same nonce gives the same device a new token
    /// (the first answer was lost); without it a second enrolment is refused.
    #[serde(default)]
    pub enrollment_nonce: Option<String>,
}

/// Answer of `POST /device/v1/enroll`.
#[derive(Serialize, ToSchema)]
pub struct EnrollResponse {
    pub device_id: String,
    /// Shown once; the device keeps it.
    pub device_token: String,
}

/// The outcome of the last update, as the device remembers it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LastOutcome {
    pub release_id: Option<String>,
    pub state: String,
    pub reason: Option<String>,
}

/// Body of `POST /device/v1/checkin`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    // The running image's `esp_app_desc_t.version`; empty for an image built without one (the
    // device is then known by `image_sha256`; docs/protocol.md). Not a doc comment, so that
    // docs/openapi.json stays as checked in until it is regenerated.
    pub version: String,
    pub security_counter: u32,
    pub image_sha256: String,
    pub chip: String,
    #[serde(default)]
    pub partition_size: Option<u32>,
    #[serde(default)]
    pub last_outcome: Option<LastOutcome>,
    /// The longest absolute `download_url` (in bytes) this client follows, without sending its
    /// device token there. Absent or 0: only a path on this server (`/device/v1/...`), which
    /// is what it gets when `[downloads] redirect` is off or its URL is longer.
    #[serde(default)]
    pub download_url_max: Option<u32>,
}

/// An update assignment.
#[derive(Serialize, ToSchema)]
pub struct Assignment {
    pub release_id: String,
    pub version: String,
    /// Base64 of the signed envelope, verbatim: the only field a device may trust, after
    /// verifying it.
    pub envelope: String,
    pub download_url: String,
    pub size: i64,
    pub sha256: String,
    /// `false`: an optional update (a rollout created with `--optional`); the device may defer
    /// it. Plain channel updates are forced.
    pub forced: bool,
    /// The rollout that assigns it; absent for plain channel behaviour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
}

/// Answer of `POST /device/v1/checkin`.
#[derive(Serialize, ToSchema)]
pub struct CheckinResponse {
    pub update: Option<Assignment>,
    pub poll_interval_s: u64,
}

/// Body of `POST /device/v1/status`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    #[serde(default)]
    pub release_id: Option<String>,
    pub state: String,
    #[serde(default)]
    pub progress_bytes: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_printable(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

#[utoipa::path(operation_id = "device_enroll", post, path = "/device/v1/enroll", request_body = EnrollRequest, tag = "device",
    responses((status = 201, body = EnrollResponse), (status = 401, body = crate::error::ErrorBody),
        (status = 403, description = "not on the product's allow-list (`not_allowlisted`), or the product's device cap is reached (`device_limit`)", body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody),
        (status = 429, description = "the product's rate of new enrolments is exceeded; retry after `Retry-After`", body = crate::error::ErrorBody)))]
pub async fn enroll(
    State(state): State<AppState>,
    Json(body): Json<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let refused = || ApiError::unauthorized("unknown product or wrong enrolment secret");
    if !is_printable(&body.hardware_id, 64) {
        return Err(ApiError::bad_request(
            "hardware_id must be 1 to 64 printable ASCII characters",
        ));
    }
    let channel = body.channel.clone().unwrap_or_else(|| "stable".into());
    check_channel(&channel)?;
    let product = match state.db.get_product(&body.product).await {
        Ok(p) => p,
        Err(DbError::NotFound) => return Err(refused()),
        Err(e) => return Err(e.into()),
    };
    if !constant_time_eq(
        hash_secret(&body.enrollment_secret).as_bytes(),
        product.enrollment_secret_hash.as_bytes(),
    ) {
        tracing::warn!(product = %product.name, "enrolment refused: wrong secret");
        return Err(refused());
    }
    if let Some(nonce) = &body.enrollment_nonce {
        if nonce.len() < 16 || !is_printable(nonce, 128) {
            return Err(ApiError::bad_request(
                "enrollment_nonce must be 16 to 128 printable ASCII characters (32 random hex digits suit)",
            ));
        }
    }
    let token = new_secret(DEVICE_TOKEN_PREFIX);
    check_allowlist(&state, &product, &body.hardware_id).await?;
    match state
        .db
        .find_device_by_hardware_id(product.id, &body.hardware_id)
        .await
    {
        Ok(_) => return repeat_enrollment(&state, &product.name, product.id, &body, token).await,
        Err(DbError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    check_new_device_bounds(&state, &product, &body.hardware_id).await?;
    let row = DeviceRow {
        id: new_id("dev_"),
        product_id: product.id,
        product: product.name.clone(),
        hardware_id: body.hardware_id.clone(),
        channel,
        token_hash: hash_secret(&token),
        enrollment_nonce_hash: body.enrollment_nonce.as_deref().map(hash_secret),
        chip: None,
        version: None,
        security_counter: None,
        image_sha256: None,
        partition_size: None,
        last_state: None,
        enrolled_at: now(),
        last_seen_at: None,
    };
    match state.db.insert_device(&row).await {
        Ok(DeviceInsert::Inserted) => {}
        Ok(DeviceInsert::AtCap { max_devices }) => {
            return Err(device_limit(&product, max_devices, &body.hardware_id))
        }
        Err(DbError::Conflict(_)) => {
            return repeat_enrollment(&state, &product.name, product.id, &body, token).await;
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!("otter_device_enrollments_total").increment(1);
    tracing::info!(device = %row.id, product = %product.name, "device enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            device_id: row.id,
            device_token: token,
        }),
    ))
}

fn refuse_enrolment(reason: &'static str, product: &str, hardware_id: &str) {
    metrics::counter!("otter_device_enrollments_refused_total", "reason" => reason).increment(1);
    tracing::info!(product = %product, hardware_id = ?hardware_id, reason, "enrolment refused");
}

/// With the product's allow-list mode on, only listed hardware ids may enrol (any enrolment).
pub(crate) async fn check_allowlist(
    state: &AppState,
    product: &ProductRow,
    hardware_id: &str,
) -> ApiResult<()> {
    if product.allowlist_required && !state.db.allowlist_contains(product.id, hardware_id).await? {
        refuse_enrolment("not_allowlisted", &product.name, hardware_id);
        return Err(ApiError {
            code: "not_allowlisted",
            ..ApiError::forbidden(format!(
                "hardware id {hardware_id:?} is not on the allow-list of {:?}; an admin adds it with `otter product allowlist import`",
                product.name
            ))
        });
    }
    Ok(())
}

/// `403 device_limit`: the product has its maximum of devices (counted as refused).
pub(crate) fn device_limit(product: &ProductRow, max: i64, hardware_id: &str) -> ApiError {
    refuse_enrolment("device_limit", &product.name, hardware_id);
    ApiError {
        code: "device_limit",
        ..ApiError::forbidden(format!(
            "product {:?} has its maximum of {max} enrolled devices; an admin can raise it with `otter product update {} --max-devices N`",
            product.name, product.name
        ))
    }
}

/// A new device: within the product's cap and its rate of new enrolments. The cap is checked
/// here only to refuse early, without a rate token or a write; what holds it, also with several
/// instances, is [`crate::db::Database::insert_device`], which counts under a lock.
pub(crate) async fn check_new_device_bounds(
    state: &AppState,
    product: &ProductRow,
    hardware_id: &str,
) -> ApiResult<()> {
    if let Some(max) = product.max_devices {
        if state.db.count_devices(product.id).await? >= max {
            return Err(device_limit(product, max, hardware_id));
        }
    }
    if let Some(rate) = product.enrollments_per_minute {
        let rate = rate.clamp(1, u32::MAX as i64) as u32;
        if let Err(wait) = state.limiters.enrollments.take(&product.id, rate, rate) {
            refuse_enrolment("rate_limited", &product.name, hardware_id);
            return Err(crate::ratelimit::rate_limited(
                format!(
                    "product {:?} takes at most {rate} new enrolments a minute; retry after the Retry-After delay",
                    product.name
                ),
                wait,
            ));
        }
    }
    Ok(())
}

/// A second enrolment of an enrolled hardware id: allowed with the nonce of the first, or once
/// after an admin allowed it (`otter device allow-reenroll`); then the device gets a new token
/// (the old one stops working). Otherwise `409`.
async fn repeat_enrollment(
    state: &AppState,
    product: &str,
    product_id: i64,
    body: &EnrollRequest,
    token: String,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let existing = state
        .db
        .find_device_by_hardware_id(product_id, &body.hardware_id)
        .await?;
    let same_device = match (&body.enrollment_nonce, &existing.enrollment_nonce_hash) {
        (Some(nonce), Some(stored)) => {
            constant_time_eq(hash_secret(nonce).as_bytes(), stored.as_bytes())
        }
        _ => false,
    };
    if !same_device {
        let at = now();
        match state
            .db
            .take_reenrollment(
                &existing.id,
                &hash_secret(&token),
                body.enrollment_nonce.as_deref().map(hash_secret).as_deref(),
                at,
            )
            .await
        {
            Ok(()) => {
                metrics::counter!("otter_device_enrollments_total").increment(1);
                tracing::warn!(device = %existing.id, product = %product, hardware_id = ?body.hardware_id,
                    "device enrolled again with the product secret, as an admin allowed once; old token replaced");
                return Ok((
                    StatusCode::CREATED,
                    Json(EnrollResponse {
                        device_id: existing.id,
                        device_token: token,
                    }),
                ));
            }
            Err(DbError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        refuse_enrolment("already_enrolled", product, &body.hardware_id);
        return Err(ApiError {
            code: "already_enrolled",
            ..ApiError::conflict(format!(
                "hardware id {:?} is enrolled in {:?} already; an admin can allow it to enrol once more (`otter device allow-reenroll`) or delete the device",
                body.hardware_id, product
            ))
        });
    }
    state
        .db
        .set_device_token(&existing.id, &hash_secret(&token))
        .await?;
    metrics::counter!("otter_device_enrollments_total").increment(1);
    tracing::info!(device = %existing.id, product = %product, "device enrolled again with its nonce; new token issued");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            device_id: existing.id,
            device_token: token,
        }),
    ))
}

#[utoipa::path(operation_id = "device_checkin", post, path = "/device/v1/checkin", request_body = CheckinRequest, tag = "device",
    responses((status = 200, body = CheckinResponse), (status = 400, body = crate::error::ErrorBody, description = "a malformed field, or a last_outcome that /status would refuse"), (status = 404, body = crate::error::ErrorBody, description = "last_outcome names a release not of this product"), (status = 429, body = crate::error::ErrorBody)))]
pub async fn checkin(
    State(state): State<AppState>,
    DeviceCheckin(context): DeviceCheckin,
    Json(body): Json<CheckinRequest>,
) -> ApiResult<Json<CheckinResponse>> {
    let CheckinContext {
        device,
        offer_generation,
        active_deployment,
    } = context;
    // The active deployment read with the device holds unless this check-in's last_outcome
    // is recorded below (it may finish the deployment): then the offer reads it again.
    let mut active = assignment::Active::Read(active_deployment);
    // An empty version is an image built without one (docs/protocol.md, "Check-in").
    if !body.version.is_empty() {
        otter_core::manifest::check_version(&body.version).map_err(ApiError::bad_request)?;
    }
    let chip: Chip = body
        .chip
        .parse()
        .map_err(|e: otter_core::chip::UnknownChip| ApiError::bad_request(e.to_string()))?;
    let sha: Sha256 = body
        .image_sha256
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| ApiError::bad_request("image_sha256 must be 64 hex characters"))?;
    let outcome_state = match &body.last_outcome {
        // Checked as a status report is, before anything of this check-in is stored.
        Some(o) => Some(
            check_report(
                &state,
                device.product_id,
                "last_outcome: ",
                o.release_id.as_deref(),
                &o.state,
                o.reason.as_deref(),
            )
            .await?,
        ),
        None => None,
    };
    let at = now();
    let report = CheckinReport {
        chip,
        version: body.version.clone(),
        security_counter: body.security_counter as i64,
        image_sha256: Some(sha),
        partition_size: body.partition_size.map(i64::from),
        at,
    };
    last_seen::record_checkin(
        state.db.as_ref(),
        &state.last_seen,
        state.settings.last_seen_flush_s,
        &device,
        &report,
    )
    .await?;
    if let (Some(outcome), Some(outcome_state)) = (&body.last_outcome, outcome_state) {
        if device.last_state != Some(outcome_state) {
            // The device remembers an outcome the server missed (e.g. it was offline).
            state
                .db
                .add_event(&EventRow {
                    device_id: device.id.clone(),
                    at,
                    release_id: outcome.release_id.clone(),
                    state: outcome_state,
                    progress_bytes: None,
                    reason: outcome.reason.clone(),
                })
                .await?;
            rollouts::device_reported(
                state.db.as_ref(),
                &device.id,
                outcome.release_id.as_deref(),
                outcome_state,
                outcome.reason.as_deref(),
                at,
            )
            .await?;
            active = assignment::Active::Unread;
        }
    }
    metrics::counter!("otter_device_checkins_total").increment(1);

    let view = state
        .offer_cache
        .view_at(state.db.as_ref(), offer_generation);
    let offer = assignment::offer_known(&view, &device, &report, at, active).await?;
    let update = match offer.update {
        Some(o) => Some(Assignment {
            release_id: o.release.id.clone(),
            version: o.release.version.clone(),
            envelope: base64::engine::general_purpose::STANDARD.encode(&o.release.envelope),
            download_url: crate::download_redirect::image_url(
                &state,
                &o.release.id,
                o.release.sha256.as_str(),
                body.download_url_max.unwrap_or(0) as usize,
            )
            .await
            .map_err(ApiError::internal)?,
            size: o.release.size,
            sha256: o.release.sha256.to_string(),
            forced: o.forced,
            rollout_id: o.rollout_id,
        }),
        None => None,
    };
    let base = state.settings.poll_interval_s as f64;
    let poll_interval_s = (base * rand::thread_rng().gen_range(0.9..=1.1))
        .round()
        .max(1.0) as u64;
    Ok(Json(CheckinResponse {
        update,
        poll_interval_s,
    }))
}

#[utoipa::path(operation_id = "device_status", post, path = "/device/v1/status", request_body = StatusReport, tag = "device",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
        (status = 429, description = "the device reports faster than `device_reports_per_minute`; retry after `Retry-After`", body = crate::error::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    Json(body): Json<StatusReport>,
) -> ApiResult<StatusCode> {
    let limits = &state.settings.limits;
    if let Err(wait) = state.limiters.reports.take(
        &device.id,
        limits.device_reports_per_minute,
        limits.device_reports_burst,
    ) {
        metrics::counter!("otter_device_reports_limited_total").increment(1);
        return Err(crate::ratelimit::rate_limited(
            format!(
                "this device sends more than {} status reports a minute; retry after the Retry-After delay",
                limits.device_reports_per_minute
            ),
            wait,
        ));
    }
    let report_state = check_report(
        &state,
        device.product_id,
        "",
        body.release_id.as_deref(),
        &body.state,
        body.reason.as_deref(),
    )
    .await?;
    let at = now();
    state
        .db
        .add_event(&EventRow {
            device_id: device.id.clone(),
            at,
            release_id: body.release_id.clone(),
            state: report_state,
            progress_bytes: body.progress_bytes.map(|b| b.min(i64::MAX as u64) as i64),
            reason: body.reason.clone(),
        })
        .await?;
    rollouts::device_reported(
        state.db.as_ref(),
        &device.id,
        body.release_id.as_deref(),
        report_state,
        body.reason.as_deref(),
        at,
    )
    .await?;
    metrics::counter!("otter_device_reports_total", "state" => report_state.as_str()).increment(1);
    Ok(StatusCode::NO_CONTENT)
}
