//! Signing in and out, and the password change (forced at the first sign-in).
//!
//! The sign-in form has no session to take a CSRF token from: `GET /ui/sign-in` sets a cookie
//! of its own with a random token, which the form repeats (and the origin check applies too).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::csrf::{self, CsrfForm};
use super::layout::{Layout, Section};
use super::session::{self, SignedIn};
use super::{render, render_status, PageError, PageResult};
use crate::db::AuditRow;
use crate::services::people::{self as svc, PeopleError, SignInError};
use crate::{audit, now, AppState};

#[derive(Template)]
#[template(path = "dashboard/sign_in.html")]
struct SignInPage {
    layout: Layout,
    csrf: String,
    next: String,
    name: String,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/password.html")]
struct PasswordPage {
    layout: Layout,
    forced: bool,
    min_chars: usize,
    error: Option<String>,
}

/// Query of `GET /ui/sign-in`.
#[derive(Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    why: Option<String>,
}

/// A local dashboard path to go to after signing in; anything else is `/ui/`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui/sign-")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

fn random_token() -> String {
    crate::services::people::new_initial_password()
}

/// `GET /ui/sign-in`.
pub async fn form(
    State(state): State<AppState>,
    Query(q): Query<SignInQuery>,
    headers: HeaderMap,
) -> Response {
    let settings = &state.settings;
    // Already signed in: on to the page.
    if let Some(id) = session::cookie(&headers, session::session_cookie(settings)) {
        if svc::resolve_session(state.db.as_ref(), settings, id, now())
            .await
            .is_ok()
        {
            return Redirect::to(&safe_next(q.next.as_deref())).into_response();
        }
    }
    let notice = match q.why.as_deref() {
        Some("expired") => Some("Your session ended. Sign in again.".to_string()),
        Some("disabled") => Some("Your account is disabled.".to_string()),
        Some("signed-out") => Some("You are signed out.".to_string()),
        _ => None,
    };
    sign_in_page(
        settings,
        &headers,
        StatusCode::OK,
        q.next.as_deref(),
        "",
        notice,
        None,
    )
}

/// The sign-in form. Its token is the browser's sign-in cookie when it has one (so that two
/// tabs with the form both work), else a new one.
fn sign_in_page(
    settings: &crate::config::Settings,
    headers: &HeaderMap,
    status: StatusCode,
    next: Option<&str>,
    name: &str,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let token = session::cookie(headers, session::sign_in_cookie(settings))
        .filter(|t| {
            t.len() >= 16
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(random_token);
    let mut resp = render_status(
        status,
        &SignInPage {
            layout: Layout::public("Sign in"),
            csrf: token.clone(),
            next: safe_next(next),
            name: name.to_string(),
            notice,
            error,
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(settings, session::sign_in_cookie(settings), &token, None),
    );
    resp
}

/// Body of `POST /ui/sign-in`.
#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// Records a sign-in attempt; failed ones share the audit log's budget of refused
/// unauthenticated attempts (`[audit] unauthenticated_per_minute`).
async fn record(state: &AppState, entry: AuditRow, failed: bool) {
    let at = now();
    if failed
        && !state
            .limiters
            .audit_unauthenticated
            .admit(at, state.settings.audit_unauthenticated_per_minute)
    {
        return;
    }
    let entry = AuditRow {
        at,
        method: Some("POST".into()),
        route: Some("/ui/sign-in".into()),
        ..entry
    };
    if let Err(e) = audit::record(state.db.as_ref(), entry).await {
        metrics::counter!("otter_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, "audit: cannot append to the audit log");
    }
}

/// `POST /ui/sign-in`.
pub async fn submit(
    State(state): State<AppState>,
    parts: Parts,
    axum::Form(f): axum::Form<SignInForm>,
) -> PageResult {
    let settings = &state.settings;
    csrf::check_origin(&parts.headers)?;
    let expected = session::cookie(&parts.headers, session::sign_in_cookie(settings)).unwrap_or("");
    if !csrf::same_token(expected, &f.csrf) {
        return Ok(sign_in_page(
            settings,
            &HeaderMap::new(),
            StatusCode::FORBIDDEN,
            f.next.as_deref(),
            &f.name,
            None,
            Some("The form was out of date. Sign in again.".into()),
        ));
    }
    let address = session::client_address(&parts, settings);
    let addr = address.clone().unwrap_or_default();
    let entry = AuditRow {
        // Only a well-formed name is written as the actor: the form is unauthenticated, so its
        // name field is anyone's text.
        actor: if svc::check_name(f.name.trim()).is_ok() {
            f.name.trim().to_string()
        } else {
            audit::ANONYMOUS_ACTOR.into()
        },
        address: address.clone(),
        ..AuditRow::default()
    };
    let name = f.name.trim();
    let result = svc::authenticate(
        state.db.as_ref(),
        &state.limiters,
        settings,
        name,
        &f.password,
        &addr,
        now(),
    )
    .await;
    let person = match result {
        Ok(p) => p,
        Err(e) => {
            let (status, message, detail) = match e {
                SignInError::Wrong { locked_for: None } => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong name or password.".to_string(),
                    "wrong name or password".to_string(),
                ),
                // The answer is the same as for a wrong password: telling "locked" would tell
                // which names exist (unknown names never lock). The audit log has the truth.
                SignInError::Wrong {
                    locked_for: Some(s),
                } => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong name or password.".to_string(),
                    format!("wrong password; locked for {s} s"),
                ),
                SignInError::Locked(s) => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong name or password.".to_string(),
                    format!("locked; {s} s left"),
                ),
                SignInError::Throttled(s) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Too many failed sign-ins from your address. Try again in {}.",
                        duration(s)
                    ),
                    format!("too many failures from this address; retry in {s} s"),
                ),
                SignInError::Disabled => (
                    StatusCode::FORBIDDEN,
                    "This account is disabled.".to_string(),
                    "disabled".to_string(),
                ),
                SignInError::Db(e) => return Err(e.into()),
            };
            record(
                &state,
                AuditRow {
                    action: "person.sign_in_failed".into(),
                    target: Some(crate::error::clip(name)),
                    detail: Some(detail),
                    status: Some(i64::from(status.as_u16())),
                    ..entry
                },
                true,
            )
            .await;
            return Ok(sign_in_page(
                settings,
                &parts.headers,
                status,
                f.next.as_deref(),
                name,
                None,
                Some(message),
            ));
        }
    };
    // Sessions past their absolute end are swept here (a sign-in is rare; the index makes it
    // cheap).
    if let Err(e) = state.db.purge_sessions(now()).await {
        tracing::warn!(error = %e, "cannot remove expired dashboard sessions");
    }
    let (id, _) = svc::start_session(state.db.as_ref(), settings, &person, address, now()).await?;
    record(
        &state,
        AuditRow {
            actor: person.name.clone(),
            role: Some(person.role),
            token_id: Some(person.id.clone()),
            action: "person.sign_in".into(),
            target: Some(person.id.clone()),
            status: Some(303),
            ..entry
        },
        false,
    )
    .await;
    let to = if person.must_change_password {
        "/ui/password".to_string()
    } else {
        safe_next(f.next.as_deref())
    };
    let mut resp = Redirect::to(&to).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(settings, session::session_cookie(settings), &id, None),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(settings, session::sign_in_cookie(settings), "", Some(0)),
    );
    Ok(resp)
}

fn duration(s: u64) -> String {
    match s {
        0..=90 => format!("{s} seconds"),
        91..=5400 => format!("{} minutes", s.div_ceil(60)),
        _ => format!("{} hours", s.div_ceil(3600)),
    }
}

/// Body of a form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

/// `POST /ui/sign-out`.
pub async fn sign_out(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> PageResult {
    state.db.delete_session(&who.session_hash).await?;
    let entry = AuditRow {
        method: Some("POST".into()),
        route: Some("/ui/sign-out".into()),
        status: Some(303),
        ..who.audit("person.sign_out").target(&who.person.id)
    };
    if let Err(e) = audit::record(state.db.as_ref(), entry).await {
        tracing::error!(error = %e, "audit: cannot append to the audit log");
    }
    let settings = &state.settings;
    let mut resp = Redirect::to("/ui/sign-in?why=signed-out").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(settings, session::session_cookie(settings), "", Some(0)),
    );
    Ok(resp)
}

/// `GET /ui/password`.
pub async fn password_form(State(state): State<AppState>, who: SignedIn) -> Response {
    render(&PasswordPage {
        forced: who.person.must_change_password,
        layout: Layout::new("Change your password", Section::None, &who),
        min_chars: state.settings.dashboard_password_min_chars,
        error: None,
    })
}

/// Body of `POST /ui/password`.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /ui/password`: changes the password, ends every session of the person and starts a
/// new one for this browser.
pub async fn password_submit(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(f): CsrfForm<PasswordForm>,
) -> PageResult {
    let settings = &state.settings;
    let again = |message: String| {
        render_status(
            StatusCode::BAD_REQUEST,
            &PasswordPage {
                forced: who.person.must_change_password,
                layout: Layout::new("Change your password", Section::None, &who),
                min_chars: settings.dashboard_password_min_chars,
                error: Some(message),
            },
        )
    };
    if f.new != f.confirm {
        return Ok(again(
            "The new password and its confirmation differ.".into(),
        ));
    }
    match svc::change_password(state.db.as_ref(), settings, &who.person, &f.current, &f.new).await {
        Ok(()) => {}
        Err(PeopleError::Invalid(m)) => return Ok(again(format!("{m}."))),
        Err(e) => return Err(PageError::from(crate::routes::people::api_error(e))),
    }
    let entry = AuditRow {
        method: Some("POST".into()),
        route: Some("/ui/password".into()),
        status: Some(303),
        ..who.audit("person.password_change").target(&who.person.id)
    };
    if let Err(e) = audit::record(state.db.as_ref(), entry).await {
        tracing::error!(error = %e, "audit: cannot append to the audit log");
    }
    let person = state.db.get_person(&who.person.id).await?;
    let (id, _) = svc::start_session(
        state.db.as_ref(),
        settings,
        &person,
        who.address.clone(),
        now(),
    )
    .await?;
    let mut resp = Redirect::to("/ui/").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(settings, session::session_cookie(settings), &id, None),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_dashboard_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/ui/devices?tag=a")), "/ui/devices?tag=a");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/api/v1/tokens",
            "/ui/\\evil",
            "/ui/sign-out",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }
}
