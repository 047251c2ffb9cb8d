//! The overview page (`/ui/`). A placeholder until the pages of issue 11 fill it in.

use askama::Template;
use axum::response::Response;

use super::layout::{Layout, Section};
use super::render;
use super::session::SignedIn;

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct Overview {
    layout: Layout,
}

/// `GET /ui/`.
pub async fn page(who: SignedIn) -> Response {
    render(&Overview {
        layout: Layout::new("Overview", Section::Overview, &who),
    })
}
