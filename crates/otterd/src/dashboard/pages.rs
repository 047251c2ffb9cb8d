//! The fleet's pages (issue 11): overview, releases, devices, rollouts, keys, tokens and the
//! audit log, on the skeleton of [`super`] (layout, [`super::session::SignedIn`], CSRF forms).
//!
//! Each page reads through the services (`services::dashboard`, `services::fleet`,
//! `services::preview`, `services::rollouts`); a change a page makes goes through the same
//! handler as the API's (so the same checks and roles apply) and is recorded in the audit log
//! by the page. Viewers see no forms that change anything, and the handlers refuse their posts.
//! JS (`static/pages.js`) adds the upload progress bar, the rollout preview as you type and the
//! live rollout view; every page works without it.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use super::{audit_page, devices, keys, releases, rollouts, tokens};
use crate::auth::{Principal, Role};
use crate::services::dashboard::Scope;
use crate::AppState;

/// The routes of these pages, merged into the skeleton's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/releases", get(releases::list))
        .route(
            "/ui/releases/upload",
            get(releases::upload_form)
                .post(releases::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/ui/releases/{id}", get(releases::show))
        .route("/ui/devices", get(devices::list))
        .route("/ui/devices/{id}", get(devices::show))
        .route("/ui/devices/{id}/tags", post(devices::add_tags))
        .route("/ui/devices/{id}/tags/remove", post(devices::remove_tag))
        .route("/ui/rollouts", get(rollouts::list).post(rollouts::create))
        .route(
            "/ui/rollouts/new",
            get(rollouts::new_form).post(rollouts::preview_form),
        )
        .route("/ui/rollouts/preview.json", get(rollouts::preview_json))
        .route("/ui/rollouts/{id}", get(rollouts::show))
        .route(
            "/ui/rollouts/{id}/progress.json",
            get(rollouts::progress_json),
        )
        .route("/ui/rollouts/{id}/{action}", post(rollouts::act))
        .route("/ui/keys", get(keys::list).post(keys::add))
        .route("/ui/keys/{product}/{key_id}/delete", post(keys::delete))
        .route("/ui/tokens", get(tokens::list).post(tokens::create))
        .route("/ui/tokens/{id}/revoke", post(tokens::revoke))
        .route("/ui/audit", get(audit_page::list))
}

/// The products a principal's pages show.
pub fn scope_of(p: &Principal) -> Scope {
    match p.role {
        Role::Admin | Role::Viewer => Scope::All,
        Role::Publisher => Scope::Only(p.products.clone()),
    }
}

/// Whether the principal may change things of this product (admins; publishers of it).
pub fn may_change(p: &Principal, product: &str) -> bool {
    match p.role {
        Role::Admin => true,
        Role::Publisher => p.products.iter().any(|x| x == product),
        Role::Viewer => false,
    }
}

/// Unix seconds as `2026-12-01 05:32:10 UTC`.
pub fn when(secs: i64) -> String {
    crate::routes::views::rfc3339(secs)
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

/// [`when`], or `never`.
pub fn when_opt(secs: Option<i64>) -> String {
    secs.map(when).unwrap_or_else(|| "never".into())
}

/// How long ago, roughly: `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(secs: Option<i64>, now: i64) -> String {
    let Some(s) = secs else {
        return "never".into();
    };
    let d = (now - s).max(0);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86_400),
    }
}

/// Bytes as `1.5 MiB`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    if b < 1024.0 {
        format!("{bytes} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    super::session::urlencode(s).replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(ago(Some(100), 142), "42 s ago");
        assert_eq!(ago(Some(0), 600), "10 min ago");
        assert_eq!(ago(None, 1), "never");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(q("a=b/c d"), "a%3Db%2Fc%20d");
    }
}
