//! Release keys (`/ui/keys`): the public keys each product's releases are verified with.
//! Admins add (a PEM public key, never a private one) and remove keys, through the API's
//! handlers; everyone else reads.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::csrf::CsrfForm;
use super::layout::{Layout, Section};
use super::pages::{scope_of, when};
use super::session::SignedIn;
use super::{render_status, PageResult};
use crate::auth::Role;
use crate::error::Json;
use crate::routes::products::NewKey;
use crate::{audit, AppState};

struct KeyView {
    product: String,
    key_id: String,
    name: String,
    added: String,
}

#[derive(Template)]
#[template(path = "dashboard/keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyView>,
    products: Vec<String>,
    admin: bool,
    error: Option<String>,
}

async fn page(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let scope = scope_of(&who.principal);
    let mut keys = Vec::new();
    let mut products = Vec::new();
    for p in state.db.list_products().await? {
        if !scope.holds(&p.name) {
            continue;
        }
        for k in state.db.list_keys(p.id).await? {
            keys.push(KeyView {
                product: p.name.clone(),
                key_id: k.key_id,
                name: k.name,
                added: when(k.created_at),
            });
        }
        products.push(p.name);
    }
    Ok(render_status(
        status,
        &KeysPage {
            layout: Layout::new("Release keys", Section::Keys, who),
            keys,
            products,
            admin: who.principal.role == Role::Admin,
            error,
        },
    ))
}

/// `GET /ui/keys`.
pub async fn list(State(state): State<AppState>, who: SignedIn) -> PageResult {
    page(&state, &who, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct AddForm {
    pub product: String,
    pub name: Option<String>,
    pub public_key_pem: String,
}

/// `POST /ui/keys`: adds a public key to a product (admins).
pub async fn add(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(f): CsrfForm<AddForm>,
) -> PageResult {
    let name = f.name.filter(|n| !n.trim().is_empty());
    let result = crate::routes::products::add_key(
        State(state.clone()),
        who.principal.clone(),
        Path(f.product.clone()),
        Json(NewKey {
            public_key_pem: f.public_key_pem,
            name,
        }),
    )
    .await;
    let entry = who
        .audit("product.add_key")
        .target(&f.product)
        .detail(match &result {
            Ok((_, Json(k))) => format!("key_id={} (dashboard)", k.key_id),
            Err(e) => format!("refused: {}", crate::error::bound_message(&e.message)),
        });
    audit::record(state.db.as_ref(), entry).await?;
    match result {
        Ok(_) => Ok(Redirect::to("/ui/keys").into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            page(&state, &who, e.status, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /ui/keys/{product}/{key_id}/delete` (admins).
pub async fn delete(
    State(state): State<AppState>,
    who: SignedIn,
    Path((product, key_id)): Path<(String, String)>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let result = crate::routes::products::delete_key(
        State(state.clone()),
        who.principal.clone(),
        Path((product.clone(), key_id.clone())),
    )
    .await;
    let entry = who
        .audit("product.delete_key")
        .target(&product)
        .detail(match &result {
            Ok(_) => format!("key_id={key_id} (dashboard)"),
            Err(e) => format!("refused: {}", crate::error::bound_message(&e.message)),
        });
    audit::record(state.db.as_ref(), entry).await?;
    result?;
    Ok(Redirect::to("/ui/keys").into_response())
}
