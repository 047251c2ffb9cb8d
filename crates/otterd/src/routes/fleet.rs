//! Tags on devices and groups of devices (issue 9; docs/devices.md). The rules are in
//! `services::fleet`; these handlers check who calls, parse, call and map.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use otter_core::fleet::DeviceFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::rfc3339;
use crate::auth::{Principal, Role};
use crate::db::fleet::GroupRow;
use crate::db::ProductRow;
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination::{self, ListQuery};
use crate::services::fleet::{self, FleetError, GroupSpec};
use crate::AppState;

/// Maps a refusal of the fleet service to its answer.
pub fn api_error(e: FleetError) -> ApiError {
    match e {
        FleetError::Invalid(m) => ApiError::bad_request(m),
        FleetError::NotFound(m) => ApiError::not_found(m),
        FleetError::Conflict(m) => ApiError::conflict(m),
        FleetError::Db(e) => e.into(),
    }
}

/// Tagging devices and managing groups: admins, and publishers of the product.
fn require_fleet_write(who: &Principal, product: &str) -> Result<(), ApiError> {
    match who.role {
        Role::Admin => Ok(()),
        Role::Publisher if who.products.iter().any(|p| p == product) => Ok(()),
        Role::Publisher => Err(ApiError::forbidden(format!(
            "token {:?} may manage the devices of {:?}, not of {product:?}",
            who.name, who.products
        ))),
        Role::Viewer => Err(ApiError::forbidden(
            "viewer tokens only read; tagging devices and managing groups needs an admin token or a publisher token of the product",
        )),
    }
}

fn require_read(who: &Principal, product: &str) -> Result<(), ApiError> {
    if who.may_read_product(product) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "token {:?} may read {:?}, not {product:?}",
            who.name, who.products
        )))
    }
}

// --- The query of `GET /api/v1/devices` ---------------------------------------------------------

/// `GET /api/v1/devices` parameters, checked.
#[derive(Debug, Default)]
pub struct DeviceListQuery {
    pub product: Option<String>,
    pub group: Option<String>,
    /// `tag`, `version`, `state`, `channel` and `filter`, as one filter.
    pub filter: DeviceFilter,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

const LIST_PARAMS: &str = "product, tag, version, state, channel, group, filter, limit, cursor";

/// One `field=value` term from a query parameter.
fn term(field: &str, value: &str) -> Result<DeviceFilter, ApiError> {
    if value.contains(',') {
        return Err(ApiError::bad_request(format!(
            "{field} takes one value; combine several terms with `filter`"
        )));
    }
    let f: DeviceFilter = format!("{field}={value}")
        .parse()
        .map_err(|e: otter_core::fleet::FilterError| ApiError::bad_request(e.to_string()))?;
    if f.terms.len() != 1 {
        return Err(ApiError::bad_request(format!("{field} needs a value")));
    }
    Ok(f)
}

/// Reads the list's parameters: `tag` may repeat (or list tags with commas); the others come
/// once. Everything given must hold.
pub fn parse_device_query(pairs: &[(String, String)]) -> Result<DeviceListQuery, ApiError> {
    let mut q = DeviceListQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        if k != "tag" {
            if seen.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {k:?} is given twice; only `tag` may repeat"
                )));
            }
            seen.push(k);
        }
        match k.as_str() {
            "product" => q.product = Some(v.clone()),
            "group" => q.group = Some(v.clone()),
            "limit" => q.limit = Some(v.clone()),
            "cursor" => q.cursor = Some(v.clone()),
            "tag" => {
                for t in v.split(',').map(str::trim) {
                    fleet::check_tag(t).map_err(api_error)?;
                    q.filter.terms.extend(term("tag", t)?.terms);
                }
            }
            "version" | "state" | "channel" => q.filter.terms.extend(term(k, v)?.terms),
            "filter" => {
                let f: DeviceFilter = v.parse().map_err(|e: otter_core::fleet::FilterError| {
                    ApiError::bad_request(e.to_string())
                })?;
                q.filter.terms.extend(f.terms);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; use {LIST_PARAMS}",
                    crate::error::clip(other)
                )))
            }
        }
    }
    if q.filter.terms.len() > fleet::MAX_TERMS {
        return Err(ApiError::bad_request(format!(
            "at most {} terms (tags and filter terms together)",
            fleet::MAX_TERMS
        )));
    }
    Ok(q)
}

// --- Tags ---------------------------------------------------------------------------------------

/// Body of `POST` and `DELETE /api/v1/devices/{id}/tags`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    /// Tags, each `[a-z0-9][a-z0-9._:-]{0,63}`.
    pub tags: Vec<String>,
}

/// A device's tags.
#[derive(Serialize, ToSchema)]
pub struct DeviceTags {
    pub device_id: String,
    pub tags: Vec<String>,
}

#[utoipa::path(operation_id = "devices_tag", post, path = "/api/v1/devices/{id}/tags", tag = "devices",
    request_body = TagsBody,
    responses((status = 200, body = DeviceTags), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "more than max_tags_per_device")))]
pub async fn add_tags(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<TagsBody>,
) -> ApiResult<Json<DeviceTags>> {
    let d = super::devices::load(&state, &id).await?;
    require_fleet_write(&who, &d.product)?;
    let tags = fleet::tag(
        state.db.as_ref(),
        &d,
        &body.tags,
        state.settings.max_tags_per_device,
    )
    .await
    .map_err(api_error)?;
    tracing::info!(device = %d.id, tags = ?body.tags, by = ?who.name, "device tagged");
    Ok(Json(DeviceTags {
        device_id: d.id,
        tags,
    }))
}

#[utoipa::path(operation_id = "devices_untag", delete, path = "/api/v1/devices/{id}/tags", tag = "devices",
    request_body = TagsBody,
    responses((status = 200, body = DeviceTags), (status = 400, body = crate::error::ErrorBody)))]
pub async fn remove_tags(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<TagsBody>,
) -> ApiResult<Json<DeviceTags>> {
    let d = super::devices::load(&state, &id).await?;
    require_fleet_write(&who, &d.product)?;
    let tags = fleet::untag(
        state.db.as_ref(),
        &d,
        &body.tags,
        state.settings.max_tags_per_device,
    )
    .await
    .map_err(api_error)?;
    tracing::info!(device = %d.id, tags = ?body.tags, by = ?who.name, "device untagged");
    Ok(Json(DeviceTags {
        device_id: d.id,
        tags,
    }))
}

// --- Groups -------------------------------------------------------------------------------------

/// A group of devices of one product.
#[derive(Serialize, ToSchema)]
pub struct Group {
    pub name: String,
    pub product: String,
    /// `static` (a list of devices) or `filter` (a saved filter).
    pub kind: String,
    /// The saved filter of a `filter` group.
    pub filter: Option<String>,
    /// How many devices a `static` group lists (`null` for a filter group: list them with
    /// `GET /api/v1/devices?product=P&group=NAME`).
    pub members: Option<i64>,
    pub created_at: String,
    pub created_by: String,
}

async fn group_view(state: &AppState, product: &ProductRow, g: GroupRow) -> ApiResult<Group> {
    let members = match g.filter {
        None => Some(state.db.count_group_members(&g.id).await?),
        Some(_) => None,
    };
    Ok(Group {
        name: g.name,
        product: product.name.clone(),
        kind: if g.filter.is_some() {
            "filter"
        } else {
            "static"
        }
        .into(),
        filter: g.filter,
        members,
        created_at: rfc3339(g.created_at),
        created_by: g.created_by,
    })
}

/// Body of `POST /api/v1/products/{product}/groups`: `devices` or `filter`, not both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// `[a-z0-9][a-z0-9._-]{0,63}`, unique within the product.
    pub name: String,
    /// A static group: these devices (ids) of the product.
    pub devices: Option<Vec<String>>,
    /// A filter group: devices this filter matches when asked (docs/devices.md).
    pub filter: Option<String>,
}

/// Body of the members routes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Members {
    /// Device ids.
    pub devices: Vec<String>,
}

/// A page of groups, by name.
#[derive(Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<Group>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

#[utoipa::path(operation_id = "groups_create", post, path = "/api/v1/products/{product}/groups", tag = "groups",
    request_body = NewGroup,
    responses((status = 201, body = Group), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_group(
    State(state): State<AppState>,
    who: Principal,
    Path(product): Path<String>,
    Json(body): Json<NewGroup>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let p = super::products::load(&state, &product).await?;
    require_fleet_write(&who, &p.name)?;
    let spec = match (body.devices, body.filter) {
        (Some(d), None) => GroupSpec::Static(d),
        (None, Some(f)) => GroupSpec::Filter(f),
        _ => {
            return Err(ApiError::bad_request(
                "give either `devices` (a static group) or `filter` (a saved filter), not both",
            ))
        }
    };
    let g = fleet::create_group(
        state.db.as_ref(),
        &p,
        &body.name,
        spec,
        &who.name,
        crate::now(),
    )
    .await
    .map_err(api_error)?;
    tracing::info!(product = %p.name, group = %g.name, by = ?who.name, "group created");
    Ok((StatusCode::CREATED, Json(group_view(&state, &p, g).await?)))
}

#[utoipa::path(operation_id = "groups_list", get, path = "/api/v1/products/{product}/groups", tag = "groups",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = GroupList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list_groups(
    State(state): State<AppState>,
    who: Principal,
    Path(product): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<GroupList>> {
    let p = super::products::load(&state, &product).await?;
    require_read(&who, &p.name)?;
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| pagination::decode("groups", c, 1).map(|mut v| v.remove(0)))
        .transpose()?;
    let rows = state
        .db
        .page_groups(p.id, after.as_deref(), limit + 1)
        .await?;
    let (rows, next) = pagination::page(rows, limit, |g| {
        pagination::encode("groups", std::slice::from_ref(&g.name))
    });
    let mut groups = Vec::with_capacity(rows.len());
    for g in rows {
        groups.push(group_view(&state, &p, g).await?);
    }
    Ok(Json(GroupList { groups, next }))
}

#[utoipa::path(operation_id = "groups_show", get, path = "/api/v1/products/{product}/groups/{name}", tag = "groups",
    responses((status = 200, body = Group), (status = 404, body = crate::error::ErrorBody)))]
pub async fn show_group(
    State(state): State<AppState>,
    who: Principal,
    Path((product, name)): Path<(String, String)>,
) -> ApiResult<Json<Group>> {
    let p = super::products::load(&state, &product).await?;
    require_read(&who, &p.name)?;
    let g = fleet::get_group(state.db.as_ref(), &p, &name)
        .await
        .map_err(api_error)?;
    Ok(Json(group_view(&state, &p, g).await?))
}

#[utoipa::path(operation_id = "groups_delete", delete, path = "/api/v1/products/{product}/groups/{name}", tag = "groups",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_group(
    State(state): State<AppState>,
    who: Principal,
    Path((product, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = super::products::load(&state, &product).await?;
    require_fleet_write(&who, &p.name)?;
    fleet::delete_group(state.db.as_ref(), &p, &name)
        .await
        .map_err(api_error)?;
    tracing::info!(product = %p.name, group = %name, by = ?who.name, "group deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(operation_id = "groups_add_members", post, path = "/api/v1/products/{product}/groups/{name}/members", tag = "groups",
    request_body = Members,
    responses((status = 200, body = Group), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "a filter group")))]
pub async fn add_members(
    State(state): State<AppState>,
    who: Principal,
    Path((product, name)): Path<(String, String)>,
    Json(body): Json<Members>,
) -> ApiResult<Json<Group>> {
    let p = super::products::load(&state, &product).await?;
    require_fleet_write(&who, &p.name)?;
    let g = fleet::add_members(state.db.as_ref(), &p, &name, &body.devices)
        .await
        .map_err(api_error)?;
    tracing::info!(product = %p.name, group = %name, count = body.devices.len(), by = ?who.name, "group members added");
    Ok(Json(group_view(&state, &p, g).await?))
}

#[utoipa::path(operation_id = "groups_remove_members", delete, path = "/api/v1/products/{product}/groups/{name}/members", tag = "groups",
    request_body = Members,
    responses((status = 200, body = Group), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "a filter group")))]
pub async fn remove_members(
    State(state): State<AppState>,
    who: Principal,
    Path((product, name)): Path<(String, String)>,
    Json(body): Json<Members>,
) -> ApiResult<Json<Group>> {
    let p = super::products::load(&state, &product).await?;
    require_fleet_write(&who, &p.name)?;
    let g = fleet::remove_members(state.db.as_ref(), &p, &name, &body.devices)
        .await
        .map_err(api_error)?;
    tracing::info!(product = %p.name, group = %name, count = body.devices.len(), by = ?who.name, "group members removed");
    Ok(Json(group_view(&state, &p, g).await?))
}
