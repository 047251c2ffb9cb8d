//! API tokens: create (shown once), list, revoke; and `whoami`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::Token;
use crate::auth::{hash_secret, new_id, new_secret, Principal, Role, TOKEN_PREFIX};
use crate::db::{DbError, TokenRow};
use crate::error::{clip, ApiError, ApiResult, Json};
use crate::pagination::{self, ListQuery};
use crate::validate;
use crate::{now, AppState};

/// Body of `POST /api/v1/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub products: Vec<String>,
}

/// Answer of `POST /api/v1/tokens`: the secret, shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: Token,
}

/// A page of tokens, oldest first.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

/// Who the caller is.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    pub role: Role,
    pub products: Vec<String>,
}

#[utoipa::path(operation_id = "tokens_whoami", get, path = "/api/v1/whoami", tag = "tokens", responses((status = 200, body = WhoAmI)))]
pub async fn whoami(who: Principal) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: who.name,
        role: who.role,
        products: who.products,
    })
}

#[utoipa::path(operation_id = "tokens_create", post, path = "/api/v1/tokens", request_body = NewToken, tag = "tokens", responses((status = 201, body = CreatedToken)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    who.require_admin()?;
    validate::text("token name", &body.name, 1, validate::TOKEN_NAME_MAX)?;
    let products = validate::list(
        "products",
        body.products,
        validate::TOKEN_PRODUCTS_MAX,
        |p| otter_core::manifest::check_product_name(p).map_err(ApiError::bad_request),
    )?;
    match body.role {
        Role::Publisher if products.is_empty() => {
            return Err(ApiError::bad_request(
                "a publisher token needs at least one product (least privilege)",
            ))
        }
        Role::Admin | Role::Viewer if !products.is_empty() => {
            return Err(ApiError::bad_request(
                "only publisher tokens are scoped to products",
            ))
        }
        _ => {}
    }
    for p in &products {
        match state.db.get_product(p).await {
            Ok(_) => {}
            Err(DbError::NotFound) => {
                return Err(ApiError::bad_request(format!("no product named {p:?}")))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let secret = new_secret(TOKEN_PREFIX);
    let row = TokenRow {
        id: new_id("tok_"),
        name: body.name,
        role: body.role,
        products,
        token_hash: hash_secret(&secret),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    state.db.create_token(&row).await?;
    tracing::info!(token_id = %row.id, name = ?row.name, role = %row.role, by = ?who.name, "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: secret,
            info: Token::from(&row),
        }),
    ))
}

#[utoipa::path(operation_id = "tokens_list", get, path = "/api/v1/tokens", tag = "tokens",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = TokenList), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<TokenList>> {
    who.require_admin()?;
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = pagination::decode_num_text("tokens", q.cursor.as_deref())?;
    let rows = state.db.page_tokens(after, limit + 1).await?;
    let (rows, next) = pagination::page(rows, limit, |t| {
        pagination::encode("tokens", &[t.created_at.to_string(), t.id.clone()])
    });
    Ok(Json(TokenList {
        tokens: rows.iter().map(Token::from).collect(),
        next,
    }))
}

#[utoipa::path(operation_id = "tokens_revoke", delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "the last active admin token cannot be revoked", body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    state
        .db
        .revoke_token(&id, now())
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!("no active token {}", clip(&id))),
            DbError::Conflict(_) => ApiError::conflict(
                "this is the last active admin token, and without one nobody can manage the server; \
                 create another admin token first (otter token create --role admin --name NAME), then revoke this one",
            ),
            e => e.into(),
        })?;
    tracing::info!(token_id = ?id, by = ?who.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
