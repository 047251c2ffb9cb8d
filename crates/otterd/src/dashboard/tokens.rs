//! API tokens (`/ui/tokens`, admins, as `/api/v1/tokens`): the list, a form that creates one
//! (its secret is shown once, on the answer, and never stored), and revoke buttons.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::csrf::CsrfForm;
use super::layout::{Layout, Section};
use super::session::SignedIn;
use super::{render_status, PageResult};
use crate::auth::Role;
use crate::error::Json;
use crate::pagination::ListQuery;
use crate::routes::tokens::NewToken;
use crate::routes::views::Token;
use crate::{audit, AppState};

#[derive(Template)]
#[template(path = "dashboard/tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<Token>,
    /// After a creation: the name and the secret, shown once.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn page(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    created: Option<(String, String)>,
    error: Option<String>,
) -> PageResult {
    let Json(list) = crate::routes::tokens::list(
        State(state.clone()),
        who.principal.clone(),
        Query(ListQuery {
            limit: Some("1000".into()),
            cursor: None,
        }),
    )
    .await?;
    Ok(render_status(
        status,
        &TokensPage {
            layout: Layout::new("API tokens", Section::Tokens, who),
            tokens: list.tokens,
            created,
            error,
        },
    ))
}

/// `GET /ui/tokens`.
pub async fn list(State(state): State<AppState>, who: SignedIn) -> PageResult {
    page(&state, &who, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    pub name: String,
    pub role: String,
    /// Publishers: products separated by commas.
    pub products: Option<String>,
}

/// `POST /ui/tokens`: creates a token and shows its secret once.
pub async fn create(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(f): CsrfForm<CreateForm>,
) -> PageResult {
    // Refusals are audited as the API's are (the API's own refusals are recorded below).
    let refused = |message: &str| {
        who.audit("token.create")
            .detail(format!("refused: {}", crate::error::bound_message(message)))
    };
    if let Err(e) = who.principal.require_admin() {
        audit::record(state.db.as_ref(), refused(&e.message)).await?;
        return Err(e.into());
    }
    let role = match Role::parse(f.role.trim()) {
        Some(r) => r,
        None => {
            audit::record(state.db.as_ref(), refused("unknown role")).await?;
            return page(
                &state,
                &who,
                StatusCode::BAD_REQUEST,
                None,
                Some(format!("unknown role {:?}", f.role)),
            )
            .await;
        }
    };
    let products: Vec<String> = f
        .products
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    let result = crate::routes::tokens::create(
        State(state.clone()),
        who.principal.clone(),
        Json(NewToken {
            name: f.name.trim().to_string(),
            role,
            products,
        }),
    )
    .await;
    let entry = who.audit("token.create");
    let entry = match &result {
        Ok((_, Json(c))) => entry
            .target(&c.info.id)
            .detail(format!("role={} (dashboard)", c.info.role)),
        Err(e) => entry.detail(format!(
            "refused: {}",
            crate::error::bound_message(&e.message)
        )),
    };
    audit::record(state.db.as_ref(), entry).await?;
    match result {
        Ok((_, Json(c))) => {
            page(
                &state,
                &who,
                StatusCode::CREATED,
                Some((c.info.name, c.token)),
                None,
            )
            .await
        }
        Err(e) if e.status.is_client_error() => {
            page(&state, &who, e.status, None, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /ui/tokens/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let result = crate::routes::tokens::revoke(
        State(state.clone()),
        who.principal.clone(),
        Path(id.clone()),
    )
    .await;
    let entry = who.audit("token.revoke").target(&id).detail(match &result {
        Ok(_) => "(dashboard)".to_string(),
        Err(e) => format!("refused: {}", crate::error::bound_message(&e.message)),
    });
    audit::record(state.db.as_ref(), entry).await?;
    match result {
        Ok(_) => Ok(Redirect::to("/ui/tokens").into_response()),
        Err(e) if e.status == StatusCode::CONFLICT => {
            page(&state, &who, e.status, None, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}
