//! The HTTP surface: one module per resource, wired here with the cross-cutting layers
//! (tracing, metrics, overload shedding, timeouts).

pub mod arduino;
pub mod arduino_fota;
pub mod audit;
pub mod device_api;
pub mod device_report;
pub mod devices;
pub mod download;
pub mod enrolment;
pub mod fleet;
pub mod github;
pub mod payloads;
pub mod people;
pub mod preview;
pub mod products;
pub mod promote;
pub mod releases;
pub mod rollouts;
pub mod system;
pub mod tokens;
pub mod upload;
pub mod views;

use std::time::Duration;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::AppState;

/// Seconds a shed client is asked to wait.
const RETRY_AFTER_S: u64 = 5;

/// Sheds load: at most `max_in_flight` API requests run at once, across all routes; the next one
/// gets `429` with `Retry-After` at once rather than queueing until it times out. (A tower
/// concurrency layer on the router would count per route, not per server.)
async fn shed_overload(
    slots: Arc<Semaphore>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    match slots.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("otter_http_shed_total").increment(1);
            ApiError::overloaded(RETRY_AFTER_S).into_response()
        }
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let management = Router::new()
        .route("/whoami", get(tokens::whoami))
        .route("/products", post(products::create).get(products::list))
        .route(
            "/products/{product}",
            get(products::show).patch(enrolment::update_product),
        )
        .route(
            "/products/{product}/github",
            get(github::show)
                .put(github::follow)
                .delete(github::unfollow),
        )
        .route(
            "/products/{product}/keys",
            post(products::add_key).get(products::list_keys),
        )
        .route(
            "/products/{product}/allowlist",
            post(enrolment::import_allowlist)
                .get(enrolment::list_allowlist)
                .layer(DefaultBodyLimit::max(enrolment::IMPORT_BYTES_MAX)),
        )
        .route(
            "/products/{product}/allowlist/{hardware_id}",
            delete(enrolment::remove_from_allowlist),
        )
        .route(
            "/products/{product}/allow-reenroll",
            post(enrolment::allow_reenroll),
        )
        .route(
            "/products/{product}/keys/{key_id}",
            delete(products::delete_key),
        )
        .route(
            "/products/{product}/enrollment-secret",
            post(products::rotate_secret),
        )
        .route(
            "/products/{product}/releases",
            post(upload::push_release).layer(DefaultBodyLimit::disable()),
        )
        .route("/releases", get(releases::list))
        .route("/releases/{id}", get(releases::show))
        .route("/releases/{id}/promote", post(promote::promote))
        .route(
            "/releases/{id}/payloads",
            post(payloads::attach)
                .layer(DefaultBodyLimit::disable())
                .get(payloads::list),
        )
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", delete(tokens::revoke))
        .route("/devices", get(devices::list))
        .route(
            "/devices/{id}",
            get(devices::show)
                .patch(devices::update)
                .delete(devices::remove),
        )
        .route("/devices/{id}/history", get(devices::history))
        // Devices and targeting (issue 9).
        .route(
            "/devices/{id}/tags",
            post(fleet::add_tags).delete(fleet::remove_tags),
        )
        .route(
            "/products/{product}/groups",
            post(fleet::create_group).get(fleet::list_groups),
        )
        .route(
            "/products/{product}/groups/{name}",
            get(fleet::show_group).delete(fleet::delete_group),
        )
        .route(
            "/products/{product}/groups/{name}/members",
            post(fleet::add_members).delete(fleet::remove_members),
        )
        .route("/rollouts", post(rollouts::create).get(rollouts::list))
        .route("/rollouts/preview", get(preview::preview))
        .route("/rollouts/{id}", get(rollouts::show))
        .route("/rollouts/{id}/pause", post(rollouts::pause))
        .route("/rollouts/{id}/resume", post(rollouts::resume))
        .route("/rollouts/{id}/abort", post(rollouts::abort))
        .route("/rollouts/{id}/advance", post(rollouts::advance))
        .route("/rollouts/{id}/deployments", get(rollouts::deployments))
        .route("/audit", get(audit::list))
        // People who sign in to the dashboard (issue 11).
        .route("/people", post(people::create).get(people::list))
        .route("/people/{name}/disable", post(people::disable))
        // Last, so that it wraps every route above (issue 9, audit log).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::middleware,
        ));

    let device = Router::new()
        .route("/enroll", post(device_api::enroll))
        .route("/checkin", post(device_api::checkin))
        .route("/status", post(device_api::status))
        .route(
            "/releases/{id}/image",
            get(download::image).head(download::image),
        );

    let slots = Arc::new(Semaphore::new(state.settings.max_in_flight));
    let limited = Router::new()
        .nest("/api/v1", management)
        .nest("/device/v1", device)
        // The dashboard (issue 11).
        .merge(crate::dashboard::router())
        .route("/arduino/v1/{product}", get(arduino::update))
        .route(
            "/arduino/v1/{product}/fota.json",
            get(arduino_fota::manifest_json),
        )
        .route(
            "/arduino/v1/{product}/fota/{file}",
            get(arduino_fota::image),
        )
        .layer(axum::middleware::from_fn(move |request, next| {
            shed_overload(slots.clone(), request, next)
        }))
        .layer(DefaultBodyLimit::max(64 * 1024));

    Router::new()
        .merge(limited)
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(axum::middleware::from_fn(crate::telemetry::track_requests))
        .layer(TraceLayer::new_for_http())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_secs(300),
        ))
        .layer(axum::middleware::from_fn(crate::edge::edge))
        .with_state(state)
}
