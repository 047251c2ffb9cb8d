//! Listing and showing releases (uploading is in `upload`).

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::Release;
use crate::auth::{Principal, Role};
use crate::db::{DbError, ReleaseFilter};
use crate::error::{ApiError, ApiResult, Json};
use crate::AppState;

/// Query of `GET /api/v1/releases`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    pub product: Option<String>,
    pub channel: Option<String>,
}

/// List of releases, newest first.
#[derive(Serialize, ToSchema)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

#[utoipa::path(operation_id = "releases_list", get, path = "/api/v1/releases", tag = "releases", responses((status = 200, body = ReleaseList)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ReleaseQuery>,
) -> ApiResult<Json<ReleaseList>> {
    if let Some(p) = &q.product {
        if !who.may_read_product(p) {
            return Err(ApiError::forbidden(format!(
                "token {:?} may not read product {p:?}",
                who.name
            )));
        }
    }
    let filter = ReleaseFilter {
        product: q.product,
        channel: q.channel,
        limit: 1000,
    };
    let rows = state.db.list_releases(&filter).await?;
    let releases = rows
        .iter()
        .filter(|r| who.may_read_product(&r.product))
        .map(Release::from)
        .collect();
    Ok(Json(ReleaseList { releases }))
}

#[utoipa::path(operation_id = "releases_show", get, path = "/api/v1/releases/{id}", tag = "releases", responses((status = 200, body = Release)))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Release>> {
    let not_found = || ApiError::not_found(format!("no release {id}"));
    let r = state.db.get_release(&id).await.map_err(|e| match e {
        DbError::NotFound => not_found(),
        e => e.into(),
    })?;
    if who.role == Role::Publisher && !who.may_read_product(&r.product) {
        return Err(not_found());
    }
    Ok(Json(Release::from(&r)))
}
