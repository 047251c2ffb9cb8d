//! `/api/v1/products/{product}/github`: a product follows a GitHub repository's releases
//! ([`crate::services::github`] imports them). Admins set and end a follow; whoever may read the
//! product sees it, its last poll and its newest imports and refusals. The token is write-only:
//! no answer carries it (`token_set` says whether there is one).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::devices::check_channel;
use super::products::load;
use crate::auth::Principal;
use crate::db::github::{GithubFollowRow, GithubImportRow};
use crate::db::DbError;
use crate::error::{ApiError, ApiResult, Json};
use crate::services::github::{check_pattern, check_repo};
use crate::{now, AppState};

/// Newest import records shown with a follow.
const IMPORTS_SHOWN: i64 = 20;

/// What an admin sets.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowGithub {
    /// `owner/name`.
    pub repo: String,
    /// Glob over asset names (`*`, `?`); default `*.otter`.
    pub asset_pattern: Option<String>,
    /// Channel the imported releases are published to; default `stable`.
    pub channel: Option<String>,
    /// A token with read access, for a private repository (or a higher API rate limit). Stored,
    /// never shown or logged.
    pub token: Option<String>,
    /// The weaker mode (docs/security.md): matching assets that are not `release.otter`
    /// bundles are signed at import with the server's `github_import_key_file`. Default false.
    pub sign_on_import: Option<bool>,
}

/// An asset the importer looked at.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GithubImport {
    pub tag_name: String,
    pub asset_name: String,
    pub asset_id: i64,
    /// Published; `false`: refused (see `reason`), and not tried again.
    pub imported: bool,
    pub release_id: Option<String>,
    pub reason: Option<String>,
    pub at: i64,
}

/// A product's follow, without its token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GithubFollow {
    pub product: String,
    pub repo: String,
    pub asset_pattern: String,
    pub channel: String,
    /// Whether a token is stored (the token itself is never returned).
    pub token_set: bool,
    /// Plain images are signed at import by the server's key (the weaker mode).
    pub sign_on_import: bool,
    pub created_at: i64,
    pub created_by: String,
    /// When the last poll ended; `null`: not polled yet.
    pub last_poll_at: Option<i64>,
    /// Why the last poll failed as a whole; `null`: it worked.
    pub last_error: Option<String>,
    /// The newest assets looked at, newest first.
    pub imports: Vec<GithubImport>,
}

impl GithubFollow {
    fn new(f: &GithubFollowRow, imports: &[GithubImportRow]) -> Self {
        GithubFollow {
            product: f.product.clone(),
            repo: f.repo.clone(),
            asset_pattern: f.asset_pattern.clone(),
            channel: f.channel.clone(),
            token_set: f.token.is_some(),
            sign_on_import: f.sign_on_import,
            created_at: f.created_at,
            created_by: f.created_by.clone(),
            last_poll_at: f.last_poll_at,
            last_error: f.last_error.clone(),
            imports: imports
                .iter()
                .map(|i| GithubImport {
                    tag_name: i.tag_name.clone(),
                    asset_name: i.asset_name.clone(),
                    asset_id: i.asset_id,
                    imported: i.imported,
                    release_id: i.release_id.clone(),
                    reason: i.reason.clone(),
                    at: i.at,
                })
                .collect(),
        }
    }
}

async fn view(state: &AppState, product_id: i64) -> ApiResult<GithubFollow> {
    let f = match state.db.get_github_follow(product_id).await {
        Ok(f) => f,
        Err(DbError::NotFound) => {
            return Err(ApiError::not_found(
                "this product follows no GitHub repository (otter product follow-github)",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let imports = state
        .db
        .list_github_imports(product_id, IMPORTS_SHOWN)
        .await?;
    Ok(GithubFollow::new(&f, &imports))
}

#[utoipa::path(operation_id = "products_follow_github", put, path = "/api/v1/products/{product}/github", tag = "products",
    request_body = FollowGithub,
    params(("product" = String, Path, description = "the product's name")),
    responses((status = 200, body = GithubFollow, description = "the follow as set (it replaces any earlier one); its first poll starts at once (unless `github_poll_interval_s` is 0)"),
        (status = 400, body = crate::error::ErrorBody, description = "a malformed repository, pattern, channel or token, or `sign_on_import` without `github_import_key_file`"),
        (status = 403, body = crate::error::ErrorBody, description = "not an admin token"),
        (status = 404, body = crate::error::ErrorBody, description = "no such product")))]
pub async fn follow(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    Json(body): Json<FollowGithub>,
) -> ApiResult<Json<GithubFollow>> {
    who.require_admin()?;
    check_repo(&body.repo).map_err(ApiError::bad_request)?;
    let asset_pattern = body.asset_pattern.unwrap_or_else(|| "*.otter".into());
    check_pattern(&asset_pattern).map_err(ApiError::bad_request)?;
    let channel = body.channel.unwrap_or_else(|| "stable".into());
    check_channel(&channel)?;
    let token = body.token.filter(|t| !t.is_empty());
    if token
        .as_ref()
        .is_some_and(|t| t.len() > 1000 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ApiError::bad_request(
            "the token must be at most 1000 printable ASCII characters",
        ));
    }
    let sign_on_import = body.sign_on_import.unwrap_or(false);
    if sign_on_import && state.settings.github_import_key_file.is_none() {
        return Err(ApiError::bad_request(
            "sign_on_import needs a key on the server: set github_import_key_file (docs/security.md explains why this mode is weaker)",
        ));
    }
    let product = load(&state, &name).await?;
    state
        .db
        .put_github_follow(&GithubFollowRow {
            product_id: product.id,
            product: product.name.clone(),
            repo: body.repo.clone(),
            asset_pattern,
            channel,
            token,
            sign_on_import,
            created_at: now(),
            created_by: who.name.clone(),
            last_poll_at: None,
            last_error: None,
        })
        .await?;
    tracing::info!(product = %product.name, repo = %body.repo, by = %who.name, "product follows a GitHub repository");
    let answer = view(&state, product.id).await?;
    // The first poll now, unless polling is off.
    if state.settings.github_poll_interval_s > 0 {
        let (state, id) = (state.clone(), product.id);
        tokio::spawn(async move {
            if let Err(e) = crate::services::github::poll_product(&state, id).await {
                tracing::warn!(error = %e, "GitHub follow: the first poll failed");
            }
        });
    }
    Ok(Json(answer))
}

#[utoipa::path(operation_id = "products_show_github", get, path = "/api/v1/products/{product}/github", tag = "products",
    params(("product" = String, Path, description = "the product's name")),
    responses((status = 200, body = GithubFollow, description = "the follow, its last poll and its newest imports and refusals (never the token)"),
        (status = 403, body = crate::error::ErrorBody, description = "a publisher token of another product"),
        (status = 404, body = crate::error::ErrorBody, description = "no such product, or it follows no repository")))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<GithubFollow>> {
    if !who.may_read_product(&name) {
        return Err(ApiError::forbidden(format!(
            "token {:?} may not read product {name:?}",
            who.name
        )));
    }
    let product = load(&state, &name).await?;
    Ok(Json(view(&state, product.id).await?))
}

#[utoipa::path(operation_id = "products_unfollow_github", delete, path = "/api/v1/products/{product}/github", tag = "products",
    params(("product" = String, Path, description = "the product's name")),
    responses((status = 204, description = "the follow and its token are gone; imported releases stay"),
        (status = 403, body = crate::error::ErrorBody, description = "not an admin token"),
        (status = 404, body = crate::error::ErrorBody, description = "no such product, or it follows no repository")))]
pub async fn unfollow(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    let product = load(&state, &name).await?;
    match state.db.delete_github_follow(product.id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(DbError::NotFound) => Err(ApiError::not_found(
            "this product follows no GitHub repository",
        )),
        Err(e) => Err(e.into()),
    }
}
