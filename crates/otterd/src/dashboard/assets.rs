//! Our own CSS and JS, compiled into the binary: no CDN, no build step.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::PageError;

/// The stylesheet.
pub const CSS: &str = include_str!("../../static/otter.css");
/// The script: progressive enhancement only (pages work without it for reading).
pub const JS: &str = include_str!("../../static/otter.js");
/// The fleet's pages' additions: upload progress, live rollout view, preview (`pages.js`).
pub const PAGES_JS: &str = include_str!("../../static/pages.js");
/// Styles of the fleet's pages.
pub const PAGES_CSS: &str = include_str!("../../static/pages.css");

/// `GET /ui/static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "otter.css" => (CSS, "text/css; charset=utf-8"),
        "otter.js" => (JS, "text/javascript; charset=utf-8"),
        "pages.js" => (PAGES_JS, "text/javascript; charset=utf-8"),
        "pages.css" => (PAGES_CSS, "text/css; charset=utf-8"),
        _ => {
            return PageError::new(axum::http::StatusCode::NOT_FOUND, "There is no such file.")
                .into_response()
        }
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            // Short: a new otterd version may change them under the same name.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}
