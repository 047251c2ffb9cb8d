//! The dashboard (issue 11): server-rendered pages under `/ui/`, with progressive enhancement
//! (docs/dashboard.md says why). Everything it needs is in the binary: askama templates
//! (`crates/otterd/templates/`, compiled in, HTML auto-escaped) and our own small CSS and JS
//! (`crates/otterd/static/`, `include_str!`). No inline script; the CSP ([`CSP`]) forbids it.
//!
//! # Module map (for whoever adds a page)
//!
//! - [`layout`]: [`layout::Layout`], what the base template (`templates/dashboard/base.html`)
//!   needs: title, nav, who is signed in, the CSRF token of the sign-out form. A page template
//!   `{% extends "dashboard/base.html" %}`, fills `{% block content %}` and has a field
//!   `layout: Layout`, built with [`layout::Layout::new`]`(title, Section::X, &who)`.
//! - [`session`]: [`session::SignedIn`], the extractor of every page: the signed-in person, as
//!   the same [`crate::auth::Principal`] API tokens produce (so pages check
//!   `who.principal.require_admin()?` and `may_read_product` like the API does), and the
//!   session's CSRF token. Without a valid session it redirects to `/ui/sign-in`. Admin-only
//!   pages call `who.require_admin()?` (a 403 page in people's words).
//! - [`csrf`]: [`csrf::CsrfForm`], the extractor of every POST form (checks the `csrf` field
//!   against the session, and `Origin`/`Sec-Fetch-Site`); [`csrf::check_request`] for bodies
//!   that are not url-encoded forms (multipart uploads).
//! - [`PageError`]: the error of page handlers, answered as an HTML page; `?` works on
//!   [`ApiError`], [`DbError`] and service errors converted to `ApiError`.
//! - [`render`]: a template to a response.
//! - [`assets`]: `/ui/static/otter.css`, `/ui/static/otter.js`.
//! - [`sign_in`]: sign-in, sign-out, the password change.
//! - [`people`]: the people page (admins).
//! - [`overview_page`]: the overview page (`/ui/`); [`pages`]: the routes of the fleet's
//!   pages ([`releases`], [`devices`], [`rollouts`], [`keys`], [`tokens`], [`audit_page`]).
//!
//! Pages record their changes in the audit log themselves: `crate::audit::record(db,
//! who.audit("object.verb").target(..))` ([`session::SignedIn::audit`] fills in the actor).

pub mod assets;
pub mod audit_page;
pub mod csrf;
pub mod devices;
pub mod keys;
pub mod layout;
pub mod overview_page;
pub mod pages;
pub mod people;
pub mod releases;
pub mod rollouts;
pub mod session;
pub mod sign_in;
pub mod tokens;

use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::db::DbError;
use crate::error::ApiError;
use crate::AppState;

/// The Content-Security-Policy of every dashboard answer: only our own scripts, styles and
/// images; no inline script, no plugins, no framing, forms post only to us.
pub const CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's router (its routes spelled whole, `/ui/...`; merged into the server's).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview_page::page))
        .route("/ui/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/ui/sign-out", post(sign_in::sign_out))
        .route(
            "/ui/password",
            get(sign_in::password_form).post(sign_in::password_submit),
        )
        .route("/ui/people", get(people::page).post(people::create))
        .route("/ui/people/{name}/disable", post(people::disable))
        .route("/ui/static/{file}", get(assets::serve))
        // The fleet's pages (issue 11, part 2): `pages` holds their routes.
        .merge(pages::router())
        // Any other page: an HTML 404 (the server's fallback answers JSON).
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Any other path under `/ui/`: people not signed in go to the sign-in page (the dashboard's
/// pages are not told apart from other paths before that).
async fn not_found(_: session::SignedIn) -> PageError {
    PageError::new(StatusCode::NOT_FOUND, "There is no such page.")
}

/// Headers of every dashboard answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/ui/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), usb=(), serial=()"),
    );
    if !is_asset {
        // Pages show fleet data and carry CSRF tokens: never kept by a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A template as a `200` HTML answer.
pub fn render<T: Template>(t: &T) -> Response {
    render_status(StatusCode::OK, t)
}

/// A template as an HTML answer with this status.
pub fn render_status<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => PageError::from(ApiError::internal(format!("template: {e}"))).into_response(),
    }
}

/// The page of an error.
#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// An error of a page handler, answered as a small HTML page with its status.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::FORBIDDEN, message)
    }
    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        // A 5xx message is generic already (ApiError::internal logged the cause).
        PageError::new(e.status, crate::error::bound_message(&e.message))
    }
}

impl From<DbError> for PageError {
    fn from(e: DbError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

/// Result of a page handler.
pub type PageResult<T = Response> = Result<T, PageError>;
