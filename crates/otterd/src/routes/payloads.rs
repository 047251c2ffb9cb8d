//! `POST /api/v1/releases/{id}/payloads?kind=...`: attaches the client-format bytes of a
//! published release (issue 13). The checks and the storing are in
//! [`crate::services::payloads`]; this module reads the body within its bound and maps the result.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, Role};
use crate::db::{DbError, PayloadKind, PayloadRow};
use crate::error::{ApiError, ApiResult, Json};
use crate::services::payloads::{self, AttachError, ESP32_ARDUINO_AREA, ESP8266_SIGNATURE_MAX};
use crate::AppState;

/// Query of the attachment.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    /// `esp8266-signed` or `esp32-arduino-signed`.
    pub kind: String,
}

/// A payload of a release.
#[derive(Serialize, ToSchema)]
pub struct Payload {
    pub release_id: String,
    pub position: i64,
    pub kind: String,
    pub size: i64,
    pub sha256: String,
    pub md5: Option<String>,
}

impl From<&PayloadRow> for Payload {
    fn from(p: &PayloadRow) -> Self {
        Payload {
            release_id: p.release_id.clone(),
            position: p.position,
            kind: p.kind.as_str().into(),
            size: p.size,
            sha256: p.sha256.to_string(),
            md5: p.md5.clone(),
        }
    }
}

impl From<AttachError> for ApiError {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Refused(m) => ApiError::bad_release(m),
            AttachError::Conflict(m) => ApiError::conflict(m),
            AttachError::Db(e) => e.into(),
            AttachError::Storage(e) => ApiError::internal(e),
        }
    }
}

#[utoipa::path(operation_id = "releases_attach_payload", post, path = "/api/v1/releases/{id}/payloads", tag = "releases",
    params(("id" = String, Path, description = "the release"),
        ("kind" = String, Query, description = "`esp8266-signed` or `esp32-arduino-signed`")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the release's image in the kind's signed format, as `otter sign --esp8266-signed` or `--esp32-arduino-signed` wrote it"),
    responses((status = 201, body = Payload, description = "stored; stock clients of the kind get these bytes from now on"),
        (status = 400, body = crate::error::ErrorBody, description = "an unknown kind"),
        (status = 403, body = crate::error::ErrorBody, description = "a viewer, or a publisher of another product"),
        (status = 404, body = crate::error::ErrorBody, description = "no such release"),
        (status = 409, body = crate::error::ErrorBody, description = "the release has a payload of this kind already"),
        (status = 413, body = crate::error::ErrorBody, description = "longer than the image and the kind's largest trailer"),
        (status = 422, body = crate::error::ErrorBody, description = "the bytes do not begin with the release's image, the trailer is malformed, or the kind is for another chip")))]
pub async fn attach(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Payload>)> {
    let kind: PayloadKind = q.kind.parse().map_err(|e: String| {
        ApiError::bad_request(format!(
            "{e}: attach esp8266-signed or esp32-arduino-signed"
        ))
    })?;
    let not_found = || ApiError::not_found(format!("no release {id}"));
    let release = state.db.get_release(&id).await.map_err(|e| match e {
        DbError::NotFound => not_found(),
        e => e.into(),
    })?;
    if who.role == Role::Publisher && !who.may_read_product(&release.product) {
        return Err(not_found());
    }
    who.require_publish(&release.product)?;
    // The image and the largest trailer of any kind: anything longer is refused unread.
    let limit = usize::try_from(release.size).unwrap_or(usize::MAX)
        + ESP8266_SIGNATURE_MAX.max(ESP32_ARDUINO_AREA)
        + 4;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::too_large(format!(
            "more than {limit} bytes: a signed payload is the release's image ({} bytes) and a signature",
            release.size
        ))
    })?;
    let row = payloads::attach(&state, &release, release.chip.name(), kind, &bytes).await?;
    Ok((StatusCode::CREATED, Json(Payload::from(&row))))
}

/// The payloads of a release, the full image first.
#[derive(Serialize, ToSchema)]
pub struct PayloadList {
    pub payloads: Vec<Payload>,
}

#[utoipa::path(operation_id = "releases_list_payloads", get, path = "/api/v1/releases/{id}/payloads", tag = "releases",
    params(("id" = String, Path, description = "the release")),
    responses((status = 200, body = PayloadList), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<PayloadList>> {
    let not_found = || ApiError::not_found(format!("no release {id}"));
    let release = state.db.get_release(&id).await.map_err(|e| match e {
        DbError::NotFound => not_found(),
        e => e.into(),
    })?;
    if who.role == Role::Publisher && !who.may_read_product(&release.product) {
        return Err(not_found());
    }
    let rows = state.db.release_payloads(&release.id).await?;
    Ok(Json(PayloadList {
        payloads: rows.iter().map(Payload::from).collect(),
    }))
}
