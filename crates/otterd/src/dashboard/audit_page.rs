//! The audit log (`/ui/audit`, admins, as `GET /api/v1/audit`): newest first, with filters on
//! actor, action, target and time, paged by the API's cursor.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::layout::{Layout, Section};
use super::pages::q;
use super::session::SignedIn;
use super::{render_status, PageResult};
use crate::error::Json;
use crate::routes::audit::{AuditEntry, AuditQuery};
use crate::AppState;

/// Entries a page shows.
const PAGE: &str = "100";

#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Unix seconds or RFC 3339.
    pub since: Option<String>,
    pub until: Option<String>,
    pub cursor: Option<String>,
}

fn opt(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct AuditPage {
    layout: Layout,
    f: Filters,
    entries: Vec<AuditEntry>,
    next: Option<String>,
    error: Option<String>,
}

/// `GET /ui/audit`.
pub async fn list(
    State(state): State<AppState>,
    who: SignedIn,
    Query(f): Query<Filters>,
) -> PageResult {
    if who.principal.role != crate::auth::Role::Admin {
        return Err(super::PageError::forbidden(
            "The audit log is for admins (as GET /api/v1/audit is).",
        ));
    }
    let query = AuditQuery {
        actor: opt(&f.actor),
        action: opt(&f.action),
        target: opt(&f.target),
        since: opt(&f.since),
        until: opt(&f.until),
        limit: Some(PAGE.into()),
        cursor: opt(&f.cursor),
    };
    let (entries, next, error, status) =
        match crate::routes::audit::list(State(state), who.principal.clone(), Query(query)).await {
            Ok(Json(p)) => (p.entries, p.next, None, StatusCode::OK),
            Err(e) if e.status.is_client_error() => (Vec::new(), None, Some(e.message), e.status),
            Err(e) => return Err(e.into()),
        };
    let next = next.map(|c| {
        let mut parts = Vec::new();
        for (k, v) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("target", &f.target),
            ("since", &f.since),
            ("until", &f.until),
        ] {
            if let Some(v) = opt(v) {
                parts.push(format!("{k}={}", q(&v)));
            }
        }
        parts.push(format!("cursor={}", q(&c)));
        format!("/ui/audit?{}", parts.join("&"))
    });
    Ok(render_status(
        status,
        &AuditPage {
            layout: Layout::new("Audit log", Section::Audit, &who),
            f,
            entries,
            next,
            error,
        },
    ))
}
