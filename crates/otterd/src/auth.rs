//! Credentials: management tokens (`ott_…`), device tokens (`otd_…`) and enrolment secrets
//! (`ote_…`). All are 256-bit random strings, shown once and stored as SHA-256 hex.
//!
//! The two extractors here are the only way a handler learns who called it:
//! [`Principal`] for management routes, [`DeviceAuth`] for device routes. Each refuses the
//! other's credentials, so a device can never act on management routes and vice versa.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::checkin::CheckinContext;
use crate::db::{DbError, DeviceRow};
use crate::error::ApiError;
use crate::AppState;

/// Prefix of management tokens.
pub const TOKEN_PREFIX: &str = "ott_";
/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "otd_";
/// Prefix of enrolment secrets.
pub const ENROLLMENT_PREFIX: &str = "ote_";

/// A new random secret with a prefix that tells what it is.
pub fn new_secret(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random id with a type prefix (`rel_`, `dev_`, `tok_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

pub use crate::db::types::Role;

/// The caller of a management route.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Products a publisher may push to (empty for other roles).
    pub products: Vec<String>,
}

impl Principal {
    /// Admin only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs an admin token; token {:?} is a {}",
                self.name,
                self.role.as_str()
            )))
        }
    }

    /// Any role that may read everything (admin, viewer).
    pub fn require_reader(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Viewer => Ok(()),
            Role::Publisher => Err(ApiError::forbidden(
                "publisher tokens may only push and read their own products",
            )),
        }
    }

    /// May read this product (admin, viewer, or a publisher scoped to it).
    pub fn may_read_product(&self, product: &str) -> bool {
        match self.role {
            Role::Admin | Role::Viewer => true,
            Role::Publisher => self.products.iter().any(|p| p == product),
        }
    }

    /// May push releases to this product.
    pub fn require_publish(&self, product: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Publisher if self.products.iter().any(|p| p == product) => Ok(()),
            Role::Publisher => Err(ApiError::forbidden(format!(
                "token {:?} may publish to {:?}, not to {product:?}; ask an admin for a token with --product {product}",
                self.name, self.products
            ))),
            Role::Viewer => Err(ApiError::forbidden("viewer tokens cannot push releases; use a publisher token")),
        }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    bearer_token(value)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))
}

/// The credentials of a `Bearer` Authorization value. The scheme name is case-insensitive
/// (RFC 9110, section 11.1), so `bearer` and `BEARER` work as well as `Bearer`.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Authenticated (or refused) once already by the audit middleware of the management
        // router.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        if let Some(r) = parts.extensions.get::<Refused>() {
            return Err(ApiError {
                status: r.status,
                code: r.code,
                message: r.message.clone(),
                retry_after: None,
            });
        }
        let token = bearer(parts)?;
        if token.starts_with(DEVICE_TOKEN_PREFIX) {
            return Err(ApiError::unauthorized(
                "device credentials cannot be used on management routes",
            ));
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(ApiError::unauthorized(
                "not an Otter API token (they start with `ott_`)",
            ));
        }
        let row = match state.db.find_token(&hash_secret(token)).await {
            Ok(row) => row,
            Err(DbError::NotFound) => return Err(ApiError::unauthorized("unknown token")),
            Err(e) => return Err(e.into()),
        };
        if row.revoked_at.is_some() {
            return Err(ApiError::unauthorized("this token was revoked"));
        }
        let role = row.role;
        state.db.touch_token(&row.id, crate::now()).await?;
        Ok(Principal {
            token_id: row.id,
            name: row.name,
            role,
            products: row.products,
        })
    }
}

/// Why a management caller was not authenticated, kept for the handler so that the database
/// is asked once per request.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: axum::http::StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl From<&ApiError> for Refused {
    fn from(e: &ApiError) -> Self {
        Refused {
            status: e.status,
            code: e.code,
            message: e.message.clone(),
        }
    }
}

/// The device calling a device route.
#[derive(Debug, Clone)]
pub struct DeviceAuth(pub DeviceRow);

impl FromRequestParts<AppState> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = device_token(parts)?;
        match state.db.find_device(&hash_secret(token)).await {
            Ok(d) => Ok(DeviceAuth(d)),
            Err(DbError::NotFound) => Err(unknown_device()),
            Err(e) => Err(e.into()),
        }
    }
}

fn device_token(parts: &Parts) -> Result<&str, ApiError> {
    let token = bearer(parts)?;
    if !token.starts_with(DEVICE_TOKEN_PREFIX) {
        return Err(ApiError::unauthorized(
            "device routes need the device's own token (`otd_…`), not an API token",
        ));
    }
    Ok(token)
}

fn unknown_device() -> ApiError {
    ApiError::unauthorized("unknown device token; enrol again")
}

/// [`DeviceAuth`] for the check-in (issue 10): the device, the offer generation and its active
/// deployment, read in one statement ([`crate::db::checkin`]). The same credentials are
/// accepted and refused as by [`DeviceAuth`], read from the database at every request.
#[derive(Debug, Clone)]
pub struct DeviceCheckin(pub CheckinContext);

impl FromRequestParts<AppState> for DeviceCheckin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = device_token(parts)?;
        match state.db.checkin_context(&hash_secret(token)).await {
            Ok(c) => Ok(DeviceCheckin(c)),
            Err(DbError::NotFound) => Err(unknown_device()),
            Err(e) => Err(e.into()),
        }
    }
}
