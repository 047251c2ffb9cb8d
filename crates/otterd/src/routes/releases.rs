//! Listing and showing releases (uploading is in `upload`).

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::Release;
use crate::auth::{Principal, Role};
use crate::db::{DbError, ReleaseFilter};
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination;
use crate::AppState;

/// Query of `GET /api/v1/releases`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    pub product: Option<String>,
    pub channel: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A page of releases, newest first.
#[derive(Serialize, ToSchema)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

#[utoipa::path(operation_id = "releases_list", get, path = "/api/v1/releases", tag = "releases",
    params(("product" = Option<String>, Query), ("channel" = Option<String>, Query),
           ("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = ReleaseList), (status = 400, body = crate::error::ErrorBody)))]
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
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            let p = pagination::decode("releases", c, 2)?;
            match (p[0].parse(), p[1].parse()) {
                (Ok(at), Ok(seq)) => Ok((at, seq)),
                _ => Err(pagination::bad_cursor()),
            }
        })
        .transpose()?;
    let filter = ReleaseFilter {
        product: q.product,
        channel: q.channel,
        limit,
    };
    let only = (who.role == Role::Publisher).then_some(who.products.as_slice());
    let rows = state
        .db
        .page_releases(&filter, only, after, limit + 1)
        .await?;
    let (rows, next) = pagination::page(rows, limit, |(seq, r)| {
        pagination::encode("releases", &[r.published_at.to_string(), seq.to_string()])
    });
    let releases = rows.iter().map(|(_, r)| Release::from(r)).collect();
    Ok(Json(ReleaseList { releases, next }))
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
