//! Products, their release keys and their enrolment secrets.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use otter_core::keys::PublicKey;
use otter_core::manifest::check_product_name;
use otter_core::Chip;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{self, Key};
use crate::auth::{hash_secret, new_secret, Principal, ENROLLMENT_PREFIX};
use crate::db::{DbError, KeyRow, ProductRow};
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination::{self, ListQuery};
use crate::validate;
use crate::{now, AppState};

/// Most release keys a product may have (a product view lists them all).
pub const KEYS_MAX: usize = 32;
/// New enrolments a minute a new product allows until an admin changes it.
pub const DEFAULT_ENROLLMENTS_PER_MINUTE: i64 = 600;

/// Body of `POST /api/v1/products`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    pub name: String,
    pub chip: String,
    #[serde(default)]
    pub description: String,
}

/// Answer of `POST /api/v1/products`.
#[derive(Serialize, ToSchema)]
pub struct CreatedProduct {
    pub product: views::Product,
    /// Shown once; devices use it to enrol.
    pub enrollment_secret: String,
}

/// Answer of the secret rotation.
#[derive(Serialize, ToSchema)]
pub struct EnrollmentSecret {
    pub enrollment_secret: String,
}

/// A page of products, by name.
#[derive(Serialize, ToSchema)]
pub struct ProductList {
    pub products: Vec<views::Product>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

/// A page of a product's release keys.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<Key>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

/// Body of `POST /api/v1/products/{product}/keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub public_key_pem: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Loads a product by name with a clear 404.
pub async fn load(state: &AppState, name: &str) -> ApiResult<ProductRow> {
    match state.db.get_product(name).await {
        Ok(p) => Ok(p),
        Err(DbError::NotFound) => Err(ApiError::not_found(format!("no product named {name:?}"))),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(operation_id = "products_create", post, path = "/api/v1/products", request_body = NewProduct, tag = "products",
    responses((status = 201, body = CreatedProduct), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<NewProduct>,
) -> ApiResult<(StatusCode, Json<CreatedProduct>)> {
    who.require_admin()?;
    check_product_name(&body.name).map_err(ApiError::bad_request)?;
    let chip: Chip = body
        .chip
        .parse()
        .map_err(|e: otter_core::chip::UnknownChip| ApiError::bad_request(e.to_string()))?;
    validate::text(
        "description",
        &body.description,
        0,
        validate::DESCRIPTION_MAX,
    )?;
    let secret = new_secret(ENROLLMENT_PREFIX);
    let row = ProductRow {
        id: 0,
        name: body.name.clone(),
        chip,
        description: body.description,
        enrollment_secret_hash: hash_secret(&secret),
        created_at: now(),
        max_devices: None,
        enrollments_per_minute: Some(DEFAULT_ENROLLMENTS_PER_MINUTE),
        allowlist_required: false,
    };
    let row = state.db.create_product(&row).await.map_err(|e| match e {
        DbError::Conflict(_) => {
            ApiError::conflict(format!("a product named {:?} exists already", body.name))
        }
        e => e.into(),
    })?;
    tracing::info!(product = %row.name, chip = %row.chip, by = ?who.name, "product created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedProduct {
            product: views::Product::new(&row, &[]),
            enrollment_secret: secret,
        }),
    ))
}

#[utoipa::path(operation_id = "products_list", get, path = "/api/v1/products", tag = "products",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = ProductList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ProductList>> {
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| pagination::decode("products", c, 1).map(|mut p| p.remove(0)))
        .transpose()?;
    let only = (who.role == crate::auth::Role::Publisher).then_some(who.products.as_slice());
    let rows = state
        .db
        .page_products(after.as_deref(), limit + 1, only)
        .await?;
    let (rows, next) = pagination::page(rows, limit, |p| {
        pagination::encode("products", std::slice::from_ref(&p.name))
    });
    let mut products = Vec::new();
    for p in rows {
        let keys = state.db.list_keys(p.id).await?;
        products.push(views::Product::new(&p, &keys));
    }
    Ok(Json(ProductList { products, next }))
}

#[utoipa::path(operation_id = "products_list_keys", get, path = "/api/v1/products/{product}/keys", tag = "products",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = KeyList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<KeyList>> {
    if !who.may_read_product(&name) {
        return Err(ApiError::forbidden(format!(
            "token {:?} may not read product {name:?}",
            who.name
        )));
    }
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = pagination::decode_num_text("keys", q.cursor.as_deref())?;
    let p = load(&state, &name).await?;
    let rows = state.db.page_keys(p.id, after, limit + 1).await?;
    let (rows, next) = pagination::page(rows, limit, |k| {
        pagination::encode("keys", &[k.created_at.to_string(), k.key_id.clone()])
    });
    Ok(Json(KeyList {
        keys: rows.iter().map(Key::from).collect(),
        next,
    }))
}

#[utoipa::path(operation_id = "products_show", get, path = "/api/v1/products/{product}", tag = "products", responses((status = 200, body = views::Product)))]
pub async fn show(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<views::Product>> {
    if !who.may_read_product(&name) {
        return Err(ApiError::forbidden(format!(
            "token {:?} may not read product {name:?}",
            who.name
        )));
    }
    let p = load(&state, &name).await?;
    let keys = state.db.list_keys(p.id).await?;
    Ok(Json(views::Product::new(&p, &keys)))
}

#[utoipa::path(operation_id = "products_add_key", post, path = "/api/v1/products/{product}/keys", request_body = NewKey, tag = "products",
    responses((status = 201, body = Key)))]
pub async fn add_key(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    Json(body): Json<NewKey>,
) -> ApiResult<(StatusCode, Json<Key>)> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    if let Some(n) = &body.name {
        validate::text("key name", n, 1, validate::KEY_NAME_MAX)?;
    }
    let key = PublicKey::from_pem(&body.public_key_pem)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.db.list_keys(p.id).await?.len() >= KEYS_MAX {
        return Err(ApiError::conflict(format!(
            "product {name:?} has {KEYS_MAX} release keys, the most it may have; remove one first"
        )));
    }
    let row = KeyRow {
        product_id: p.id,
        key_id: key.key_id().to_string(),
        name: body.name.unwrap_or_else(|| format!("key {}", key.key_id())),
        public_key_pem: key.to_pem(),
        created_at: now(),
    };
    state.db.add_key(&row).await.map_err(|e| match e {
        DbError::Conflict(_) => ApiError::conflict(format!(
            "key {} is registered for {name:?} already",
            row.key_id
        )),
        e => e.into(),
    })?;
    tracing::info!(product = %name, key_id = %row.key_id, key_name = ?row.name, by = ?who.name, "release key added");
    Ok((StatusCode::CREATED, Json(Key::from(&row))))
}

#[utoipa::path(operation_id = "products_delete_key", delete, path = "/api/v1/products/{product}/keys/{key_id}", tag = "products", responses((status = 204)))]
pub async fn delete_key(
    State(state): State<AppState>,
    who: Principal,
    Path((name, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    state
        .db
        .delete_key(p.id, &key_id)
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!("no key {key_id} for {name:?}")),
            e => e.into(),
        })?;
    tracing::info!(product = %name, key_id = ?key_id, by = ?who.name, "release key removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(operation_id = "products_rotate_secret", post, path = "/api/v1/products/{product}/enrollment-secret", tag = "products",
    responses((status = 200, body = EnrollmentSecret)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<EnrollmentSecret>> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    let secret = new_secret(ENROLLMENT_PREFIX);
    state
        .db
        .set_enrollment_secret(p.id, &hash_secret(&secret))
        .await?;
    tracing::info!(product = %name, by = ?who.name, "enrolment secret rotated");
    Ok(Json(EnrollmentSecret {
        enrollment_secret: secret,
    }))
}
