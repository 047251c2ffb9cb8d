//! The people page (`/ui/people`, admins only): everyone who may sign in, a form to add a
//! person (the one-time initial password is shown once, on the answer), and disable buttons.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use serde::Deserialize;

use super::csrf::CsrfForm;
use super::layout::{Layout, Section};
use super::session::SignedIn;
use super::{render_status, PageError, PageResult};
use crate::auth::Role;
use crate::db::people::PersonRow;
use crate::db::AuditRow;
use crate::routes::people::api_error;
use crate::routes::views::rfc3339;
use crate::services::people::{self as svc, PeopleError};
use crate::{audit, now, AppState};

/// One row of the table.
struct Row {
    name: String,
    role: &'static str,
    products: String,
    state: &'static str,
    last_sign_in: String,
    enabled: bool,
}

impl Row {
    fn of(p: &PersonRow, at: i64) -> Row {
        let state = if p.disabled_at.is_some() {
            "disabled"
        } else if p.locked_until.is_some_and(|t| t > at) {
            "locked out"
        } else if p.must_change_password {
            "initial password"
        } else {
            "active"
        };
        Row {
            name: p.name.clone(),
            role: p.role.as_str(),
            products: p.products.join(", "),
            state,
            last_sign_in: p
                .last_sign_in_at
                .map(rfc3339)
                .unwrap_or_else(|| "never".into()),
            enabled: p.disabled_at.is_none(),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/people.html")]
struct PeoplePage {
    layout: Layout,
    people: Vec<Row>,
    /// After a creation: the name and the one-time password.
    created: Option<(String, String)>,
    error: Option<String>,
}

async fn page_with(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    created: Option<(String, String)>,
    error: Option<String>,
) -> PageResult {
    who.require_admin()?;
    let at = now();
    let people = state.db.list_people().await?;
    Ok(render_status(
        status,
        &PeoplePage {
            layout: Layout::new("People", Section::People, who),
            people: people.iter().map(|p| Row::of(p, at)).collect(),
            created,
            error,
        },
    ))
}

/// `GET /ui/people`.
pub async fn page(State(state): State<AppState>, who: SignedIn) -> PageResult {
    page_with(&state, &who, StatusCode::OK, None, None).await
}

/// Body of `POST /ui/people`.
#[derive(Deserialize)]
pub struct NewPersonForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// Comma-separated product names (publishers).
    #[serde(default)]
    products: String,
}

async fn record(state: &AppState, entry: AuditRow, route: &str) {
    let entry = AuditRow {
        method: Some("POST".into()),
        route: Some(route.into()),
        ..entry
    };
    if let Err(e) = audit::record(state.db.as_ref(), entry).await {
        metrics::counter!("otter_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, "audit: cannot append to the audit log");
    }
}

/// Records a refused people action, as the API's audit layer records a refused request.
async fn record_refused(
    state: &AppState,
    who: &SignedIn,
    action: &str,
    route: &str,
    status: StatusCode,
    message: &str,
) {
    let entry = AuditRow {
        status: Some(status.as_u16() as i64),
        ..who
            .audit(action)
            .detail(format!("refused: {}", crate::error::bound_message(message)))
    };
    record(state, entry, route).await;
}

/// `POST /ui/people`: adds a person and shows their initial password once.
pub async fn create(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(f): CsrfForm<NewPersonForm>,
) -> PageResult<Response> {
    if let Err(e) = who.require_admin() {
        record_refused(
            &state,
            &who,
            "person.create",
            "/ui/people",
            StatusCode::FORBIDDEN,
            "admins only",
        )
        .await;
        return Err(e);
    }
    let Some(role) = Role::parse(f.role.trim()) else {
        record_refused(
            &state,
            &who,
            "person.create",
            "/ui/people",
            StatusCode::BAD_REQUEST,
            "unknown role",
        )
        .await;
        return page_with(
            &state,
            &who,
            StatusCode::BAD_REQUEST,
            None,
            Some("Choose a role: admin, publisher or viewer.".into()),
        )
        .await;
    };
    let products: Vec<String> = f
        .products
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    match svc::create(
        state.db.as_ref(),
        f.name.trim(),
        role,
        products,
        &who.person.name,
        now(),
    )
    .await
    {
        Ok((row, password)) => {
            record(
                &state,
                AuditRow {
                    status: Some(201),
                    ..who
                        .audit("person.create")
                        .target(&row.id)
                        .detail(format!("name={} role={}", row.name, row.role))
                },
                "/ui/people",
            )
            .await;
            page_with(
                &state,
                &who,
                StatusCode::CREATED,
                Some((row.name, password)),
                None,
            )
            .await
        }
        Err(e @ (PeopleError::Invalid(_) | PeopleError::Conflict(_))) => {
            let message = e.to_string();
            record_refused(
                &state,
                &who,
                "person.create",
                "/ui/people",
                StatusCode::BAD_REQUEST,
                &message,
            )
            .await;
            page_with(
                &state,
                &who,
                StatusCode::BAD_REQUEST,
                None,
                Some(format!("{e}.")),
            )
            .await
        }
        Err(e) => Err(PageError::from(api_error(e))),
    }
}

/// `POST /ui/people/{name}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    who: SignedIn,
    Path(name): Path<String>,
    CsrfForm(super::sign_in::Empty {}): CsrfForm<super::sign_in::Empty>,
) -> PageResult {
    let route = "/ui/people/{name}/disable";
    if let Err(e) = who.require_admin() {
        record_refused(
            &state,
            &who,
            "person.disable",
            route,
            StatusCode::FORBIDDEN,
            "admins only",
        )
        .await;
        return Err(e);
    }
    let row = match svc::disable(state.db.as_ref(), &name, now()).await {
        Ok(row) => row,
        Err(e) => {
            let e = api_error(e);
            record_refused(&state, &who, "person.disable", route, e.status, &e.message).await;
            return Err(PageError::from(e));
        }
    };
    record(
        &state,
        AuditRow {
            status: Some(303),
            ..who
                .audit("person.disable")
                .target(&row.id)
                .detail(format!("name={}", row.name))
        },
        "/ui/people/{name}/disable",
    )
    .await;
    Ok(axum::response::IntoResponse::into_response(Redirect::to(
        "/ui/people",
    )))
}
