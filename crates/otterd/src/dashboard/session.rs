//! Who is signed in: the session cookie, and the [`SignedIn`] extractor every page takes.
//!
//! The cookie holds a random session id (256 bits); the database keeps its SHA-256 only. The
//! cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` with the `__Host-` prefix
//! unless `[dashboard] secure_cookies` is off (plain-HTTP testing on localhost).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};

use crate::auth::Principal;
use crate::config::Settings;
use crate::db::people::PersonRow;
use crate::db::AuditRow;
use crate::services::people::{self as svc, SessionEnd};
use crate::AppState;

/// The session cookie's name.
pub fn session_cookie(settings: &Settings) -> &'static str {
    if settings.dashboard_secure_cookies {
        "__Host-otter_session"
    } else {
        "otter_session"
    }
}

/// The sign-in form's own cookie (its CSRF token before there is a session).
pub fn sign_in_cookie(settings: &Settings) -> &'static str {
    if settings.dashboard_secure_cookies {
        "__Host-otter_sign_in"
    } else {
        "otter_sign_in"
    }
}

/// A `Set-Cookie` value; `max_age` `None`: a browser-session cookie; `Some(0)`: remove it.
pub fn set_cookie(
    settings: &Settings,
    name: &str,
    value: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let secure = if settings.dashboard_secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .expect("cookie names and values are base64url")
}

/// The value of cookie `name` in a request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client's address: the peer, or the client a trusted proxy names.
pub fn client_address(parts: &Parts, settings: &Settings) -> Option<String> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let client = if settings.trusted_proxies.contains(&peer) {
        crate::audit::forwarded_client(&parts.headers, &settings.trusted_proxies).unwrap_or(peer)
    } else {
        peer
    };
    Some(client.to_string())
}

/// The person signed in to the dashboard. Extracting it checks the session (idle and absolute
/// end, person not disabled); without a valid one the page redirects to `/ui/sign-in`. A
/// person who must change their initial password is sent to `/ui/password` from every page.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// What they may do: the same type API tokens produce (its `token_id` is the person's id).
    pub principal: Principal,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    pub person: PersonRow,
    /// SHA-256 of the session id.
    pub session_hash: String,
    /// The client's address (for the audit log).
    pub address: Option<String>,
}

impl SignedIn {
    /// Admins only: a `403` page naming the person's role otherwise.
    pub fn require_admin(&self) -> Result<(), super::PageError> {
        if self.principal.role == crate::auth::Role::Admin {
            Ok(())
        } else {
            Err(super::PageError::forbidden(format!(
                "This is for admins; you are signed in as a {}.",
                self.principal.role
            )))
        }
    }

    /// An audit entry of an action by this person (actor, role, person id and address filled
    /// in); add `.target(..)` and `.detail(..)`, then `crate::audit::record`.
    pub fn audit(&self, action: &str) -> AuditRow {
        AuditRow {
            actor: self.person.name.clone(),
            role: Some(self.principal.role),
            token_id: Some(self.person.id.clone()),
            action: action.into(),
            address: self.address.clone(),
            ..AuditRow::default()
        }
    }
}

/// Where a page without a valid session sends the browser.
fn to_sign_in(parts: &Parts, settings: &Settings, why: Option<&str>) -> Response {
    let mut query = Vec::new();
    if parts.method == Method::GET {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/ui/");
        query.push(format!("next={}", urlencode(next)));
    }
    if let Some(why) = why {
        query.push(format!("why={why}"));
    }
    let to = if query.is_empty() {
        "/ui/sign-in".to_string()
    } else {
        format!("/ui/sign-in?{}", query.join("&"))
    };
    let mut resp = Redirect::to(&to).into_response();
    if cookie(&parts.headers, session_cookie(settings)).is_some() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(settings, session_cookie(settings), "", Some(0)),
        );
    }
    resp
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<SignedIn>() {
            return Ok(s.clone());
        }
        let settings = &state.settings;
        let Some(id) = cookie(&parts.headers, session_cookie(settings)).map(str::to_owned) else {
            return Err(to_sign_in(parts, settings, None));
        };
        let (session, person) =
            match svc::resolve_session(state.db.as_ref(), settings, &id, crate::now()).await {
                Ok(x) => x,
                Err(SessionEnd::Expired) => {
                    return Err(to_sign_in(parts, settings, Some("expired")))
                }
                Err(SessionEnd::Disabled) => {
                    return Err(to_sign_in(parts, settings, Some("disabled")))
                }
                Err(SessionEnd::Unknown) => return Err(to_sign_in(parts, settings, None)),
                Err(SessionEnd::Db(e)) => return Err(super::PageError::from(e).into_response()),
            };
        let path = parts.uri.path();
        if person.must_change_password && path != "/ui/password" && path != "/ui/sign-out" {
            return Err(Redirect::to("/ui/password").into_response());
        }
        let who = SignedIn {
            principal: svc::principal(&person),
            csrf: session.csrf,
            session_hash: session.id_hash,
            address: client_address(parts, settings),
            person,
        };
        parts.extensions.insert(who.clone());
        Ok(who)
    }
}
