//! `GET /api/v1/audit`: the audit log, newest first (issue 9). Admins only: the log names
//! every token, who holds it and from which address it is used. Nothing here or anywhere in
//! the API edits or deletes an entry.

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::rfc3339;
use crate::auth::Principal;
use crate::db::{AuditFilter, AuditRow};
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination;
use crate::AppState;

/// Longest filter value accepted.
const FILTER_MAX_CHARS: usize = 200;

/// Query of `GET /api/v1/audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// One entry of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log; later entries have higher ids.
    pub id: i64,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// When, Unix seconds.
    pub at_unix: i64,
    /// The token's name, or `system`, `anonymous`, `otterd admin (offline)`.
    pub actor: String,
    /// The token's role, when a token was used.
    pub role: Option<String>,
    /// The id of the token used (never the token).
    pub token_id: Option<String>,
    /// What was done, e.g. `release.push` (docs/security.md lists them).
    pub action: String,
    /// What it was done to: a product name, release id, device id or token id.
    pub target: Option<String>,
    /// `label=value` notes, and `refused: CODE` when the request failed.
    pub detail: Option<String>,
    pub method: Option<String>,
    /// The route template, e.g. `/api/v1/tokens/{id}`.
    pub route: Option<String>,
    /// The address the request came from (the peer: a proxy's, behind one).
    pub address: Option<String>,
    /// The client address a trusted proxy forwarded (setting `trusted_proxies`); `null` when
    /// the peer is not a trusted proxy.
    pub forwarded_for: Option<String>,
    /// The HTTP status answered; `null` for actions outside HTTP.
    pub status: Option<i64>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id,
            at: rfc3339(r.at),
            at_unix: r.at,
            actor: r.actor,
            role: r.role.map(|r| r.as_str().to_string()),
            token_id: r.token_id,
            action: r.action,
            target: r.target,
            detail: r.detail,
            method: r.method,
            route: r.route,
            address: r.address,
            forwarded_for: r.forwarded_for,
            status: r.status,
        }
    }
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The cursor of the next (older) page; `null` after the last.
    pub next: Option<String>,
}

/// A time filter: Unix seconds or RFC 3339.
fn parse_time(name: &str, raw: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(raw) = raw else { return Ok(None) };
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(Some(n));
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name} must be Unix seconds or an RFC 3339 time such as 2026-01-31T12:00:00Z"
            ))
        })
}

fn text(name: &str, raw: Option<String>) -> ApiResult<Option<String>> {
    match raw {
        Some(v) if v.is_empty() || v.chars().count() > FILTER_MAX_CHARS => Err(
            ApiError::bad_request(format!("{name} must be 1 to {FILTER_MAX_CHARS} characters")),
        ),
        v => Ok(v),
    }
}

#[utoipa::path(operation_id = "audit_list", get, path = "/api/v1/audit", tag = "audit",
    params(("actor" = Option<String>, Query, description = "only entries of this actor (a token's name, `system`, `anonymous`)"),
           ("action" = Option<String>, Query, description = "only this action, e.g. `token.revoke`"),
           ("target" = Option<String>, Query, description = "only entries on this product name, release, device or token id"),
           ("since" = Option<String>, Query, description = "only entries at or after this time (Unix seconds or RFC 3339)"),
           ("until" = Option<String>, Query, description = "only entries at or before this time (Unix seconds or RFC 3339)"),
           ("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::error::ErrorBody),
              (status = 403, description = "only admin tokens may read the audit log", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    who.require_admin()?;
    let filter = AuditFilter {
        actor: text("actor", q.actor)?,
        action: text("action", q.action)?,
        target: text("target", q.target)?,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
    };
    let limit = pagination::limit(q.limit.as_deref())?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            pagination::decode("audit", c, 1)?[0]
                .parse::<i64>()
                .map_err(|_| pagination::bad_cursor())
        })
        .transpose()?;
    let rows = state.db.page_audit(&filter, before, limit + 1).await?;
    let (rows, next) = pagination::page(rows, limit, |e| {
        pagination::encode("audit", &[e.id.to_string()])
    });
    Ok(Json(AuditPage {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
        next,
    }))
}
