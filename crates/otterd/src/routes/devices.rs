//! Devices as the management API sees them: list, show with history, change channel, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{Device, Event};
use crate::auth::Principal;
use crate::db::DbError;
use crate::error::{ApiError, ApiResult, Json};
use crate::AppState;

/// Query of `GET /api/v1/devices`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    pub product: Option<String>,
}

/// List of devices.
#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

/// A device with its history, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeviceDetail {
    pub device: Device,
    pub history: Vec<Event>,
}

/// Body of `PATCH /api/v1/devices/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    pub channel: String,
}

/// Checks a channel name: `[a-z0-9][a-z0-9._-]{0,31}`.
pub fn check_channel(c: &str) -> Result<(), ApiError> {
    let ok = (1..=32).contains(&c.len())
        && c.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "channel {c:?} must be 1 to 32 characters of a-z, 0-9, '.', '_', '-'"
        )))
    }
}

async fn load(state: &AppState, id: &str) -> ApiResult<crate::db::DeviceRow> {
    state.db.get_device(id).await.map_err(|e| match e {
        DbError::NotFound => ApiError::not_found(format!("no device {id}")),
        e => e.into(),
    })
}

#[utoipa::path(operation_id = "devices_list", get, path = "/api/v1/devices", tag = "devices", responses((status = 200, body = DeviceList)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<DeviceQuery>,
) -> ApiResult<Json<DeviceList>> {
    who.require_reader()?;
    let product_id = match &q.product {
        Some(name) => Some(super::products::load(&state, name).await?.id),
        None => None,
    };
    let devices = state.db.list_devices(product_id).await?;
    Ok(Json(DeviceList {
        devices: devices.iter().map(Device::from).collect(),
    }))
}

#[utoipa::path(operation_id = "devices_show", get, path = "/api/v1/devices/{id}", tag = "devices", responses((status = 200, body = DeviceDetail)))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceDetail>> {
    who.require_reader()?;
    let d = load(&state, &id).await?;
    let events = state.db.list_events(&d.id, 200).await?;
    Ok(Json(DeviceDetail {
        device: Device::from(&d),
        history: events.iter().map(Event::from).collect(),
    }))
}

#[utoipa::path(operation_id = "devices_update", patch, path = "/api/v1/devices/{id}", request_body = DevicePatch, tag = "devices", responses((status = 200, body = Device)))]
pub async fn update(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<DevicePatch>,
) -> ApiResult<Json<Device>> {
    who.require_admin()?;
    check_channel(&body.channel)?;
    let d = load(&state, &id).await?;
    state.db.set_device_channel(&d.id, &body.channel).await?;
    tracing::info!(device = %d.id, channel = %body.channel, by = %who.name, "device channel changed");
    Ok(Json(Device::from(&load(&state, &id).await?)))
}

#[utoipa::path(operation_id = "devices_remove", delete, path = "/api/v1/devices/{id}", tag = "devices", responses((status = 204)))]
pub async fn remove(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    let d = load(&state, &id).await?;
    state.db.delete_device(&d.id).await?;
    tracing::info!(device = %d.id, by = %who.name, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}
