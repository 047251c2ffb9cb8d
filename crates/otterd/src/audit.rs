//! The audit log (issue 9): who did what to which object, when, from where, and how it ended.
//!
//! - [`record`] appends one entry; code outside HTTP calls it for its own actions
//!   ([`AuditRow::system`] for work the server decides on, [`AuditRow::offline_admin`] for
//!   `otterd admin ...`).
//! - [`middleware`] sits on the whole management router, so no route can be forgotten: it
//!   names each request from [`ACTIONS`] (method and route template to an action name and the
//!   source of its target), and appends an entry for every change and every refused attempt
//!   (401, 403), whatever the outcome. A management route missing from the table is still
//!   recorded, as [`UNKNOWN_ACTION`], and a test fails on it.
//!
//! What never goes into the log: tokens, enrolment secrets, request bodies. Targets and details
//! come only from path parameters and from fields of the answer named in [`ACTIONS`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{self, Principal};
use crate::db::{AuditRow, Database, DbError, DbResult};
use crate::error::ApiError;
use crate::AppState;

/// Actor of actions the server decides on by itself (a rollout pausing itself).
pub const SYSTEM_ACTOR: &str = "system";
/// Actor of `otterd admin ...` commands run on the server's host.
pub const OFFLINE_ADMIN_ACTOR: &str = "otterd admin (offline)";
/// Actor of a request without a credential the server knows.
pub const ANONYMOUS_ACTOR: &str = "anonymous";
/// Action of a management route missing from [`ACTIONS`] (a test fails when one is).
pub const UNKNOWN_ACTION: &str = "unknown";
/// Action of the entry that counts refused unauthenticated attempts not recorded one by one.
pub const UNRECORDED_ACTION: &str = "audit.unrecorded";

/// Longest target or detail kept (longer ones are cut).
const FIELD_MAX_CHARS: usize = 200;
/// Largest answer read for the fields of a target or detail.
const ANSWER_MAX_BYTES: usize = 256 * 1024;

/// Where a target or detail value comes from.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// A path parameter of the route.
    Param(&'static str),
    /// A field of a successful JSON answer, as a JSON pointer (never a secret field).
    Answer(&'static str),
}

/// How one management route is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    pub method: &'static str,
    /// The route template, as the router and the OpenAPI document spell it.
    pub route: &'static str,
    /// The action name, `object.verb`.
    pub name: &'static str,
    /// Changes something: always recorded. Reads are recorded only when refused (401, 403).
    pub change: bool,
    pub target: Option<Field>,
    /// `label=value` pairs of the detail.
    pub detail: &'static [(&'static str, Field)],
    /// The name of the route's dry run (`?dry_run=true`), which checks and changes nothing:
    /// recorded, like a read, only when refused.
    pub dry_run: Option<&'static str>,
}

const fn change(
    method: &'static str,
    route: &'static str,
    name: &'static str,
    target: Option<Field>,
    detail: &'static [(&'static str, Field)],
) -> Action {
    Action {
        method,
        route,
        name,
        change: true,
        target,
        detail,
        dry_run: None,
    }
}

const fn read(
    method: &'static str,
    route: &'static str,
    name: &'static str,
    target: Option<Field>,
) -> Action {
    Action {
        method,
        route,
        name,
        change: false,
        target,
        detail: &[],
        dry_run: None,
    }
}

use Field::{Answer, Param};

/// Every management route and its action name.
pub const ACTIONS: &[Action] = &[
    read("GET", "/api/v1/whoami", "token.whoami", None),
    change(
        "POST",
        "/api/v1/products",
        "product.create",
        Some(Answer("/product/name")),
        &[("chip", Answer("/product/chip"))],
    ),
    read("GET", "/api/v1/products", "product.list", None),
    read(
        "GET",
        "/api/v1/products/{product}",
        "product.show",
        Some(Param("product")),
    ),
    change(
        "PATCH",
        "/api/v1/products/{product}",
        "product.update",
        Some(Param("product")),
        &[],
    ),
    change(
        "POST",
        "/api/v1/products/{product}/keys",
        "key.add",
        Some(Param("product")),
        &[("key_id", Answer("/key_id"))],
    ),
    read(
        "GET",
        "/api/v1/products/{product}/keys",
        "key.list",
        Some(Param("product")),
    ),
    change(
        "DELETE",
        "/api/v1/products/{product}/keys/{key_id}",
        "key.delete",
        Some(Param("product")),
        &[("key_id", Param("key_id"))],
    ),
    change(
        "POST",
        "/api/v1/products/{product}/allowlist",
        "allowlist.import",
        Some(Param("product")),
        &[("added", Answer("/added")), ("total", Answer("/total"))],
    ),
    read(
        "GET",
        "/api/v1/products/{product}/allowlist",
        "allowlist.list",
        Some(Param("product")),
    ),
    change(
        "DELETE",
        "/api/v1/products/{product}/allowlist/{hardware_id}",
        "allowlist.remove",
        Some(Param("product")),
        &[("hardware_id", Param("hardware_id"))],
    ),
    change(
        "POST",
        "/api/v1/products/{product}/allow-reenroll",
        "device.allow_reenroll",
        Some(Answer("/device_id")),
        &[("product", Param("product"))],
    ),
    change(
        "POST",
        "/api/v1/products/{product}/enrollment-secret",
        "product.rotate_secret",
        Some(Param("product")),
        &[],
    ),
    Action {
        dry_run: Some("release.push_check"),
        ..change(
            "POST",
            "/api/v1/products/{product}/releases",
            "release.push",
            Some(Answer("/id")),
            &[
                ("product", Param("product")),
                ("channel", Answer("/channel")),
                ("version", Answer("/version")),
                ("existing", Answer("/existing")),
            ],
        )
    },
    read("GET", "/api/v1/releases", "release.list", None),
    read(
        "GET",
        "/api/v1/releases/{id}",
        "release.show",
        Some(Param("id")),
    ),
    read(
        "GET",
        "/api/v1/releases/{id}/payloads",
        "release.payloads",
        Some(Param("id")),
    ),
    change(
        "POST",
        "/api/v1/releases/{id}/payloads",
        "release.attach",
        Some(Param("id")),
        &[
            ("kind", Answer("/kind")),
            ("size", Answer("/size")),
            ("sha256", Answer("/sha256")),
        ],
    ),
    change(
        "POST",
        "/api/v1/releases/{id}/promote",
        "release.promote",
        Some(Param("id")),
        &[
            ("new_release", Answer("/id")),
            ("channel", Answer("/channel")),
            ("existing", Answer("/existing")),
        ],
    ),
    change(
        "POST",
        "/api/v1/tokens",
        "token.create",
        Some(Answer("/info/id")),
        &[
            ("name", Answer("/info/name")),
            ("role", Answer("/info/role")),
        ],
    ),
    read("GET", "/api/v1/tokens", "token.list", None),
    change(
        "DELETE",
        "/api/v1/tokens/{id}",
        "token.revoke",
        Some(Param("id")),
        &[],
    ),
    read("GET", "/api/v1/devices", "device.list", None),
    read(
        "GET",
        "/api/v1/devices/{id}",
        "device.show",
        Some(Param("id")),
    ),
    change(
        "PATCH",
        "/api/v1/devices/{id}",
        "device.update",
        Some(Param("id")),
        &[("channel", Answer("/channel"))],
    ),
    change(
        "DELETE",
        "/api/v1/devices/{id}",
        "device.delete",
        Some(Param("id")),
        &[],
    ),
    read(
        "GET",
        "/api/v1/devices/{id}/history",
        "device.history",
        Some(Param("id")),
    ),
    // Devices and targeting (issue 9).
    change(
        "POST",
        "/api/v1/devices/{id}/tags",
        "device.tag",
        Some(Param("id")),
        &[("tags", Answer("/tags"))],
    ),
    change(
        "DELETE",
        "/api/v1/devices/{id}/tags",
        "device.untag",
        Some(Param("id")),
        &[("tags", Answer("/tags"))],
    ),
    change(
        "POST",
        "/api/v1/products/{product}/groups",
        "group.create",
        Some(Answer("/name")),
        &[("product", Param("product")), ("kind", Answer("/kind"))],
    ),
    read(
        "GET",
        "/api/v1/products/{product}/groups",
        "group.list",
        Some(Param("product")),
    ),
    read(
        "GET",
        "/api/v1/products/{product}/groups/{name}",
        "group.show",
        Some(Param("name")),
    ),
    change(
        "DELETE",
        "/api/v1/products/{product}/groups/{name}",
        "group.delete",
        Some(Param("name")),
        &[("product", Param("product"))],
    ),
    change(
        "POST",
        "/api/v1/products/{product}/groups/{name}/members",
        "group.add_members",
        Some(Param("name")),
        &[
            ("product", Param("product")),
            ("members", Answer("/members")),
        ],
    ),
    change(
        "DELETE",
        "/api/v1/products/{product}/groups/{name}/members",
        "group.remove_members",
        Some(Param("name")),
        &[
            ("product", Param("product")),
            ("members", Answer("/members")),
        ],
    ),
    read(
        "GET",
        "/api/v1/products/{product}/github",
        "product.github_show",
        Some(Param("product")),
    ),
    change(
        "PUT",
        "/api/v1/products/{product}/github",
        "product.github_follow",
        Some(Param("product")),
        &[
            ("repo", Answer("/repo")),
            ("channel", Answer("/channel")),
            ("sign_on_import", Answer("/sign_on_import")),
        ],
    ),
    change(
        "DELETE",
        "/api/v1/products/{product}/github",
        "product.github_unfollow",
        Some(Param("product")),
        &[],
    ),
    read("GET", "/api/v1/rollouts", "rollout.list", None),
    read("GET", "/api/v1/rollouts/preview", "rollout.preview", None),
    change(
        "POST",
        "/api/v1/rollouts",
        "rollout.create",
        Some(Answer("/id")),
        &[
            ("release", Answer("/release_id")),
            ("product", Answer("/product")),
        ],
    ),
    read(
        "GET",
        "/api/v1/rollouts/{id}",
        "rollout.show",
        Some(Param("id")),
    ),
    read(
        "GET",
        "/api/v1/rollouts/{id}/deployments",
        "rollout.deployments",
        Some(Param("id")),
    ),
    change(
        "POST",
        "/api/v1/rollouts/{id}/pause",
        "rollout.pause",
        Some(Param("id")),
        &[("reason", Answer("/pause_reason"))],
    ),
    change(
        "POST",
        "/api/v1/rollouts/{id}/resume",
        "rollout.resume",
        Some(Param("id")),
        &[],
    ),
    change(
        "POST",
        "/api/v1/rollouts/{id}/abort",
        "rollout.abort",
        Some(Param("id")),
        &[("reason", Answer("/pause_reason"))],
    ),
    change(
        "POST",
        "/api/v1/rollouts/{id}/advance",
        "rollout.advance",
        Some(Param("id")),
        &[("stage", Answer("/current_stage"))],
    ),
    read("GET", "/api/v1/audit", "audit.list", None),
    // People who sign in to the dashboard (issue 11). Their sign-ins, sign-outs and password
    // changes are recorded by the dashboard (`person.sign_in`, `person.sign_in_failed`,
    // `person.sign_out`, `person.password_change`).
    change(
        "POST",
        "/api/v1/people",
        "person.create",
        Some(Answer("/person/id")),
        &[
            ("name", Answer("/person/name")),
            ("role", Answer("/person/role")),
        ],
    ),
    read("GET", "/api/v1/people", "person.list", None),
    change(
        "POST",
        "/api/v1/people/{name}/disable",
        "person.disable",
        Some(Answer("/id")),
        &[("name", Param("name"))],
    ),
];

/// The table row of a management route.
pub fn action_for(method: &str, route: &str) -> Option<&'static Action> {
    ACTIONS
        .iter()
        .find(|a| a.method.eq_ignore_ascii_case(method) && a.route == route)
}

impl AuditRow {
    /// An entry for an action the server takes by itself (actor [`SYSTEM_ACTOR`]).
    pub fn system(action: &str) -> AuditRow {
        AuditRow {
            actor: SYSTEM_ACTOR.into(),
            action: action.into(),
            ..AuditRow::default()
        }
    }

    /// An entry for an `otterd admin ...` command (actor [`OFFLINE_ADMIN_ACTOR`]).
    pub fn offline_admin(action: &str) -> AuditRow {
        AuditRow {
            actor: OFFLINE_ADMIN_ACTOR.into(),
            action: action.into(),
            ..AuditRow::default()
        }
    }

    /// Sets the target.
    pub fn target(mut self, target: impl Into<String>) -> AuditRow {
        self.target = Some(target.into());
        self
    }

    /// Sets the detail (no secrets).
    pub fn detail(mut self, detail: impl Into<String>) -> AuditRow {
        self.detail = Some(detail.into());
        self
    }
}

/// How many refused unauthenticated attempts (401) are recorded one by one in a minute
/// (`audit_unauthenticated_per_minute`): anyone on the network can make them, so without a
/// bound they would grow the log without one. Attempts beyond it are counted, and the count is
/// recorded as one [`UNRECORDED_ACTION`] entry before the first entry of a later minute.
#[derive(Debug, Default)]
pub struct MinuteBudget {
    inner: std::sync::Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    minute: i64,
    used: u32,
    dropped: u64,
    /// Dropped attempts of closed minutes not yet recorded: (start of the first, count).
    pending: Option<(i64, u64)>,
}

impl Window {
    fn advance(&mut self, now: i64) {
        let minute = now.div_euclid(60);
        if self.minute == minute {
            return;
        }
        if self.dropped > 0 {
            let (from, n) = self.pending.unwrap_or((self.minute * 60, 0));
            self.pending = Some((from, n + self.dropped));
        }
        self.minute = minute;
        self.used = 0;
        self.dropped = 0;
    }
}

impl MinuteBudget {
    /// Attempts dropped in minutes that are over by `now` and not recorded yet: the Unix time
    /// the first of those minutes began, and the count.
    pub fn take_closed(&self, now: i64) -> Option<(i64, u64)> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.advance(now);
        w.pending.take()
    }

    /// Whether one more attempt may be recorded this minute (`per_minute` 0: always).
    pub fn admit(&self, now: i64, per_minute: u32) -> bool {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.advance(now);
        if per_minute == 0 || w.used < per_minute {
            w.used += 1;
            return true;
        }
        w.dropped += 1;
        metrics::counter!("otter_audit_unrecorded_total").increment(1);
        if w.dropped == 1 {
            tracing::warn!(
                per_minute,
                "audit: more refused unauthenticated attempts this minute than audit_unauthenticated_per_minute; counting the rest"
            );
        }
        false
    }
}

/// Appends `entry` to the audit log (stamped now unless it carries a time); returns its id.
/// Targets and details longer than 200 characters are cut.
pub async fn record(db: &dyn Database, mut entry: AuditRow) -> DbResult<i64> {
    if entry.at == 0 {
        entry.at = crate::now();
    }
    for v in [&mut entry.target, &mut entry.detail].into_iter().flatten() {
        *v = clip(v);
    }
    let id = db.append_audit(&entry).await?;
    metrics::counter!("otter_audit_entries_total").increment(1);
    Ok(id)
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(FIELD_MAX_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The caller of a refused request, as far as the server knows it: a known token (even a
/// revoked one) names its owner; anything else is [`ANONYMOUS_ACTOR`].
async fn refused_caller(state: &AppState, req_headers: &axum::http::HeaderMap) -> AuditRow {
    let token = req_headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer_token)
        .filter(|t| t.starts_with(auth::TOKEN_PREFIX));
    if let Some(token) = token {
        match state.db.find_token(&auth::hash_secret(token)).await {
            Ok(row) => {
                return AuditRow {
                    actor: row.name,
                    role: Some(row.role),
                    token_id: Some(row.id),
                    ..AuditRow::default()
                }
            }
            Err(DbError::NotFound) => {}
            Err(e) => {
                tracing::warn!(error = %e, "audit: cannot look up the token of a refused request")
            }
        }
    }
    AuditRow {
        actor: ANONYMOUS_ACTOR.into(),
        ..AuditRow::default()
    }
}

/// The client address in `X-Forwarded-For` of a request from a trusted proxy: the rightmost
/// address that is not itself a trusted proxy (each proxy appends the address it got the
/// request from, so addresses left of that one are the client's to choose). `None` when the
/// header is missing or an entry on the way is not an IP address.
pub fn forwarded_client(headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        hops.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    let mut client = None;
    for hop in hops.iter().rev() {
        let ip: IpAddr = hop.parse().ok()?;
        client = Some(ip);
        if !trusted.contains(&ip) {
            break;
        }
    }
    client
}

fn field_value(
    field: Field,
    params: &[(String, String)],
    answer: Option<&serde_json::Value>,
) -> Option<String> {
    match field {
        Field::Param(name) => params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        Field::Answer(pointer) => match answer?.pointer(pointer)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        },
    }
}

/// Reads a JSON answer for the fields the action names, and gives the answer back intact.
async fn read_answer(resp: Response) -> (Response, Option<serde_json::Value>) {
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Only an answer of known, small length: one that could not be read whole and given back
    // is passed on untouched, without its fields.
    let small = http_body::Body::size_hint(resp.body())
        .upper()
        .is_some_and(|n| n <= ANSWER_MAX_BYTES as u64);
    if !json || !small || !resp.status().is_success() {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, ANSWER_MAX_BYTES).await {
        Ok(bytes) => {
            let value = serde_json::from_slice(&bytes).ok();
            (
                Response::from_parts(parts, axum::body::Body::from(bytes)),
                value,
            )
        }
        Err(e) => (
            ApiError::internal(format!("audit: cannot read the answer: {e}")).into_response(),
            None,
        ),
    }
}

/// The middleware of the management router (install with `route_layer`, so that the route
/// template is known). It also authenticates the caller once, for the handler's [`Principal`]
/// extractor to reuse.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let dry_run = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "dry_run=true"));
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded_for = peer
        .filter(|p| state.settings.trusted_proxies.contains(p))
        .and_then(|_| forwarded_client(&parts.headers, &state.settings.trusted_proxies));
    let who = match Principal::from_request_parts(&mut parts, &state).await {
        Ok(p) => {
            parts.extensions.insert(p.clone());
            Some(p)
        }
        Err(e) => {
            parts.extensions.insert(auth::Refused::from(&e));
            None
        }
    };
    let headers = parts.headers.clone();
    let resp = next.run(Request::from_parts(parts, body)).await;

    let status = resp.status();
    let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    let action = action_for(&method, &route);
    let dry_run = action.and_then(|a| a.dry_run).filter(|_| dry_run);
    // A read that was let through is no action; a method the route lacks (405) reached no
    // handler at all.
    let not_a_route = action.is_none() && status == StatusCode::METHOD_NOT_ALLOWED;
    let read = dry_run.is_some() || action.is_some_and(|a| !a.change);
    if not_a_route || (!refused && read) {
        return resp;
    }
    let wants_answer = action.is_some_and(|a| {
        a.target
            .iter()
            .chain(a.detail.iter().map(|(_, f)| f))
            .any(|f| matches!(f, Field::Answer(_)))
    });
    let (resp, answer) = if wants_answer {
        read_answer(resp).await
    } else {
        (resp, None)
    };

    let now = crate::now();
    let budget = &state.limiters.audit_unauthenticated;
    if let Some((from, count)) = budget.take_closed(now) {
        let summary = AuditRow::system(UNRECORDED_ACTION).detail(format!(
            "{count} refused unauthenticated attempts from {} on were not recorded one by one (audit_unauthenticated_per_minute = {})",
            crate::routes::views::rfc3339(from),
            state.settings.audit_unauthenticated_per_minute
        ));
        if let Err(e) = record(state.db.as_ref(), summary).await {
            metrics::counter!("otter_audit_write_failures_total").increment(1);
            tracing::error!(error = %e, "audit: cannot append to the audit log");
        }
    }
    if status == StatusCode::UNAUTHORIZED
        && !budget.admit(now, state.settings.audit_unauthenticated_per_minute)
    {
        return resp;
    }
    let mut entry = match &who {
        Some(p) => AuditRow {
            actor: p.name.clone(),
            role: Some(p.role),
            token_id: Some(p.token_id.clone()),
            ..AuditRow::default()
        },
        None => refused_caller(&state, &headers).await,
    };
    entry.action = dry_run
        .or(action.map(|a| a.name))
        .unwrap_or(UNKNOWN_ACTION)
        .into();
    if let Some(a) = action {
        entry.target = a
            .target
            .and_then(|f| field_value(f, &params, answer.as_ref()));
        let detail: Vec<String> = a
            .detail
            .iter()
            .filter_map(|(label, f)| {
                field_value(*f, &params, answer.as_ref()).map(|v| format!("{label}={v}"))
            })
            .collect();
        if !detail.is_empty() {
            entry.detail = Some(detail.join(" "));
        }
    }
    if !status.is_success() {
        let code = resp
            .extensions()
            .get::<crate::edge::Refusal>()
            .map(|r| r.code)
            .unwrap_or("");
        let refusal = if code.is_empty() {
            "refused".to_string()
        } else {
            format!("refused: {code}")
        };
        entry.detail = Some(match entry.detail {
            Some(d) => format!("{d} {refusal}"),
            None => refusal,
        });
    }
    entry.method = Some(method);
    entry.route = Some(route);
    entry.address = peer.map(|p| p.to_string());
    entry.forwarded_for = forwarded_for.map(|a| a.to_string());
    entry.status = Some(i64::from(status.as_u16()));
    entry.at = now;
    if let Err(e) = record(state.db.as_ref(), entry).await {
        // The action happened (or was refused) already; the answer stays true to it.
        metrics::counter!("otter_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, "audit: cannot append to the audit log");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_records_so_many_a_minute_and_counts_the_rest() {
        let b = MinuteBudget::default();
        let t0 = 1_800_000_000 / 60 * 60;
        assert_eq!(b.take_closed(t0), None);
        let admitted = (0..5).filter(|i| b.admit(t0 + i, 3)).count();
        assert_eq!(admitted, 3);
        assert_eq!(b.take_closed(t0 + 59), None, "the minute is not over");
        // A later minute: the count of the dropped ones comes out once, and the budget is new.
        assert_eq!(b.take_closed(t0 + 60), Some((t0, 2)));
        assert_eq!(b.take_closed(t0 + 61), None);
        assert!(b.admit(t0 + 61, 3));
        // Dropped counts of minutes nobody looked at add up, from the first of them.
        for _ in 0..4 {
            b.admit(t0 + 62, 3);
        }
        for _ in 0..5 {
            b.admit(t0 + 125, 3);
        }
        assert_eq!(b.take_closed(t0 + 300), Some((t0 + 60, 2 + 2)));
        // 0: no limit.
        assert!((0..1000).all(|i| b.admit(t0 + 400 + i % 10, 0)));
    }

    #[test]
    fn the_forwarded_client_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let client = |values: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            forwarded_client(&h, &trusted).map(|a| a.to_string())
        };
        assert_eq!(client(&["203.0.113.7"]).as_deref(), Some("203.0.113.7"));
        // A client-chosen entry left of the real one changes nothing.
        assert_eq!(
            client(&["1.2.3.4, 203.0.113.7, 10.0.0.2"]).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client(&["1.2.3.4", "203.0.113.7"]).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(client(&["2001:db8::1"]).as_deref(), Some("2001:db8::1"));
        assert_eq!(client(&[]), None);
        assert_eq!(client(&["203.0.113.7, garbage"]), None);
    }

    #[test]
    fn system_and_offline_entries_name_their_actor() {
        let e = AuditRow::system("rollout.pause")
            .target("rol_1")
            .detail("why");
        assert_eq!(
            (e.actor.as_str(), e.target.as_deref()),
            ("system", Some("rol_1"))
        );
        assert_eq!(
            AuditRow::offline_admin("token.create").actor,
            OFFLINE_ADMIN_ACTOR
        );
        assert_eq!(clip(&"x".repeat(500)).chars().count(), FIELD_MAX_CHARS + 1);
    }
}
