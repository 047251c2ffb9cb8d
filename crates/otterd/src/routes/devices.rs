//! Devices as the management API sees them: list (filtered), show with history, change channel,
//! delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{Device, Event};
use crate::auth::Principal;
use crate::db::DbError;
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination::{self, ListQuery};
use crate::services::fleet;
use crate::AppState;

/// A page of devices, in enrolment order.
#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<Device>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

/// A device with the first page of its history, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeviceDetail {
    pub device: Device,
    pub history: Vec<Event>,
    /// Cursor of the next page of history (`GET /api/v1/devices/{id}/history`); `null` when
    /// this is all of it.
    pub history_next: Option<String>,
}

/// A page of a device's history, newest first.
#[derive(Serialize, ToSchema)]
pub struct History {
    pub history: Vec<Event>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
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

pub(crate) async fn load(state: &AppState, id: &str) -> ApiResult<crate::db::DeviceRow> {
    state.db.get_device(id).await.map_err(|e| match e {
        DbError::NotFound => ApiError::not_found(format!("no device {id}")),
        e => e.into(),
    })
}

#[utoipa::path(operation_id = "devices_list", get, path = "/api/v1/devices", tag = "devices",
    params(("product" = Option<String>, Query),
           ("tag" = Option<Vec<String>>, Query, description = "devices with every one of these tags (repeat, or a comma list)"),
           ("version" = Option<String>, Query, description = "reported version, exactly"),
           ("state" = Option<String>, Query, description = "last reported state, e.g. failure"),
           ("channel" = Option<String>, Query),
           ("group" = Option<String>, Query, description = "members of this group of `product`"),
           ("filter" = Option<String>, Query, description = "a device filter, e.g. `tag=lab,version<2.0,seen<1h` (docs/devices.md)"),
           ("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = DeviceList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<DeviceList>> {
    let q = super::fleet::parse_device_query(&pairs)?;
    // A publisher reads the devices of its own products.
    if !q
        .product
        .as_deref()
        .is_some_and(|p| who.may_read_product(p))
    {
        who.require_reader()?;
    }
    let product = match &q.product {
        Some(name) => Some(super::products::load(&state, name).await?),
        None => None,
    };
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = pagination::decode_num_text("devices", q.cursor.as_deref())?;
    let query = fleet::DeviceQuery {
        product,
        filter: q.filter,
        group: q.group,
    };
    let page = fleet::list_devices(
        state.db.as_ref(),
        &query,
        after,
        limit,
        state.settings.device_filter_scan_max,
        crate::now(),
    )
    .await
    .map_err(super::fleet::api_error)?;
    Ok(Json(DeviceList {
        devices: page
            .devices
            .into_iter()
            .map(|(d, e)| Device::with_extras(&d, e))
            .collect(),
        next: page
            .next
            .map(|(at, id)| pagination::encode("devices", &[at.to_string(), id])),
    }))
}

#[utoipa::path(operation_id = "devices_show", get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("limit" = Option<i64>, Query, description = "history events, 1 to 1000 (default 100)")),
    responses((status = 200, body = DeviceDetail)))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<DeviceDetail>> {
    who.require_reader()?;
    let d = load(&state, &id).await?;
    let History { history, next } = history_page(&state, &d.id, &q).await?;
    let (d, extras) = fleet::device_with_extras(state.db.as_ref(), d).await?;
    Ok(Json(DeviceDetail {
        device: Device::with_extras(&d, extras),
        history,
        history_next: next,
    }))
}

async fn history_page(state: &AppState, device_id: &str, q: &ListQuery) -> ApiResult<History> {
    let limit = pagination::limit(q.limit.as_deref())?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            pagination::decode("history", c, 1)?[0]
                .parse::<i64>()
                .map_err(|_| pagination::bad_cursor())
        })
        .transpose()?;
    let rows = state.db.page_events(device_id, before, limit + 1).await?;
    let (rows, next) = pagination::page(rows, limit, |(id, _)| {
        pagination::encode("history", &[id.to_string()])
    });
    Ok(History {
        history: rows.iter().map(|(_, e)| Event::from(e)).collect(),
        next,
    })
}

#[utoipa::path(operation_id = "devices_history", get, path = "/api/v1/devices/{id}/history", tag = "devices",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = History), (status = 400, body = crate::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<History>> {
    who.require_reader()?;
    let d = load(&state, &id).await?;
    Ok(Json(history_page(&state, &d.id, &q).await?))
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
    tracing::info!(device = %d.id, channel = %body.channel, by = ?who.name, "device channel changed");
    let (d, extras) =
        fleet::device_with_extras(state.db.as_ref(), load(&state, &id).await?).await?;
    Ok(Json(Device::with_extras(&d, extras)))
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
    tracing::info!(device = %d.id, by = ?who.name, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}
