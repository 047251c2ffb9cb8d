//! `POST /api/v1/releases/{id}/promote`: makes a published release available on another channel,
//! and what promotion and upload share: the answer that says whether a release was there already
//! (an idempotent push or promotion), and the refusal of another release of the same version.
//!
//! A promoted release is a new release row on the target channel with the same signed envelope
//! and the same image blob: the manifest names no channel (docs/manifest.md), so devices cannot
//! tell the two apart and nothing is signed again. The promotion goes through the checks of an
//! upload (signature against the product's keys today, expiry, installable, the target channel's
//! security counter, creation time), so it cannot publish what an upload could not.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::devices::check_channel;
use super::views::Release;
use crate::auth::{new_id, Principal, Role};
use crate::db::{DbError, ReleaseRow};
use crate::error::{ApiError, ApiResult, Json};
use crate::services::release::{self, check_envelope, check_publish_rules, Outcome};
use crate::{now, AppState};
use otter_core::manifest::Envelope;

/// A release as publishing answers it: the release, and whether it was there already.
#[derive(Serialize, ToSchema)]
pub struct Published {
    #[serde(flatten)]
    pub release: Release,
    /// `true`: this signed manifest was on the channel already and nothing changed (status
    /// 200); `false`: published by this request (status 201).
    pub existing: bool,
}

impl Published {
    pub fn new(r: &ReleaseRow, existing: bool) -> Self {
        Published {
            release: Release::from(r),
            existing,
        }
    }
}

/// Body of `POST /api/v1/releases/{id}/promote`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The channel to publish the release on, e.g. `stable`.
    pub channel: String,
    /// Publish although the security counter is lower than the target channel's highest.
    #[serde(default)]
    pub allow_lower_counter: bool,
}

/// Whether a stored release is the same release as `envelope`'s manifest
/// ([`release::identical`]).
pub use crate::services::release::identical;

/// After an insert that a unique constraint refused ([`release::lost_race`]), as an answer.
pub async fn lost_race(
    state: &AppState,
    row: &ReleaseRow,
    envelope: &Envelope,
) -> ApiResult<Response> {
    match release::lost_race(state, row, envelope).await? {
        Outcome::Existing(other) | Outcome::Published(other) => {
            Ok((StatusCode::OK, Json(Published::new(&other, true))).into_response())
        }
    }
}

#[utoipa::path(operation_id = "releases_promote", post, path = "/api/v1/releases/{id}/promote", tag = "releases",
    request_body = Promotion,
    responses((status = 201, body = Published, description = "published on the channel (`existing`: false)"),
        (status = 200, body = Published, description = "the release is on the channel already: nothing changed, `existing`: true"),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "another release of this version is on the channel"),
        (status = 422, body = crate::error::ErrorBody, description = "refused by the publication rules, as an upload would be")))]
pub async fn promote(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(body): Json<Promotion>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found(format!("no release {id}"));
    let source = state.db.get_release(&id).await.map_err(|e| match e {
        DbError::NotFound => not_found(),
        e => e.into(),
    })?;
    // A publisher learns nothing of other products' releases (as `GET /releases/{id}`).
    if who.role == Role::Publisher && !who.may_read_product(&source.product) {
        return Err(not_found());
    }
    who.require_publish(&source.product)?;
    let channel = body.channel;
    check_channel(&channel)?;
    let product = super::products::load(&state, &source.product).await?;
    let envelope = Envelope::decode(&source.envelope).map_err(ApiError::internal)?;
    let signed_by = check_envelope(&state, &product, &envelope).await?;
    let manifest = envelope.manifest();
    let on_channel = state
        .db
        .find_release(product.id, &channel, &manifest.version)
        .await?;
    if let Some(existing) = on_channel.as_ref().filter(|r| identical(r, &envelope)) {
        tracing::info!(release = %existing.id, from = %source.id, product = %existing.product, version = %existing.version, %channel, by = ?who.name, "release promoted again: on the channel already");
        return Ok((StatusCode::OK, Json(Published::new(existing, true))).into_response());
    }
    check_publish_rules(
        &state,
        &product,
        &channel,
        manifest,
        body.allow_lower_counter,
    )
    .await?;
    if let Some(other) = &on_channel {
        return Err(ApiError::conflict(release::conflict_message(
            other, manifest,
        )));
    }
    let row = ReleaseRow {
        id: new_id("rel_"),
        channel: channel.clone(),
        signed_by: signed_by.join(","),
        published_at: now(),
        published_by: who.name.clone(),
        ..source.clone()
    };
    // The blob is the source release's; the lock keeps the collector from judging it while the
    // new row goes in (crate::blob_gc), should the source ever be removed meanwhile.
    let _publishing = state.blobs.publishing().await;
    // The same image, so the same payloads (issue 9).
    let payloads: Vec<_> = state
        .db
        .release_payloads(&source.id)
        .await?
        .into_iter()
        .map(|p| crate::db::PayloadRow {
            release_id: row.id.clone(),
            ..p
        })
        .collect();
    match state.db.insert_release_with_payloads(&row, &payloads).await {
        Ok(()) => {}
        Err(DbError::Conflict(_)) => return lost_race(&state, &row, &envelope).await,
        Err(e) => return Err(e.into()),
    }
    metrics::counter!("otter_releases_published_total").increment(1);
    tracing::info!(release = %row.id, from = %source.id, product = %row.product, version = %row.version, %channel, by = ?who.name, "release promoted");
    Ok((StatusCode::CREATED, Json(Published::new(&row, false))).into_response())
}
