//! Products, their release keys and their enrolment secrets.

use axum::extract::{Path, State};
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
use crate::{now, AppState};

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

/// List of products.
#[derive(Serialize, ToSchema)]
pub struct ProductList {
    pub products: Vec<views::Product>,
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
    if body.description.len() > 1024 {
        return Err(ApiError::bad_request(
            "description is limited to 1024 bytes",
        ));
    }
    let secret = new_secret(ENROLLMENT_PREFIX);
    let row = ProductRow {
        id: 0,
        name: body.name.clone(),
        chip: chip.name().into(),
        description: body.description,
        enrollment_secret_hash: hash_secret(&secret),
        created_at: now(),
    };
    let row = state.db.create_product(&row).await.map_err(|e| match e {
        DbError::Conflict(_) => {
            ApiError::conflict(format!("a product named {:?} exists already", body.name))
        }
        e => e.into(),
    })?;
    tracing::info!(product = %row.name, chip = %row.chip, by = %who.name, "product created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedProduct {
            product: views::Product::new(&row, &[]),
            enrollment_secret: secret,
        }),
    ))
}

#[utoipa::path(operation_id = "products_list", get, path = "/api/v1/products", tag = "products", responses((status = 200, body = ProductList)))]
pub async fn list(State(state): State<AppState>, who: Principal) -> ApiResult<Json<ProductList>> {
    let mut products = Vec::new();
    for p in state.db.list_products().await? {
        if who.may_read_product(&p.name) {
            let keys = state.db.list_keys(p.id).await?;
            products.push(views::Product::new(&p, &keys));
        }
    }
    Ok(Json(ProductList { products }))
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
    let key = PublicKey::from_pem(&body.public_key_pem)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
    tracing::info!(product = %name, key_id = %row.key_id, by = %who.name, "release key added");
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
    tracing::info!(product = %name, key_id = %key_id, by = %who.name, "release key removed");
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
    tracing::info!(product = %name, by = %who.name, "enrolment secret rotated");
    Ok(Json(EnrollmentSecret {
        enrollment_secret: secret,
    }))
}
