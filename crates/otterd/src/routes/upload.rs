//! `POST /api/v1/products/{product}/releases`: streaming release upload.
//!
//! The handler reads the bundle head and hands it, and the rest of the body as the image, to
//! [`crate::services::release`], which holds the publication protocol and its order of checks
//! (docs/api.md, "Release upload"); it maps the outcome to a status code.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use otter_core::manifest::{BundleHead, BUNDLE_HEAD_LEN, MAX_ENVELOPE_LEN};
use serde::{Deserialize, Serialize};

use super::devices::check_channel;
use super::promote::Published;
use super::views::Release;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Json};
use crate::services::release::{self, Outcome, PublishError};
use crate::AppState;

/// Query of the upload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushQuery {
    pub channel: Option<String>,
    /// Check the bundle head (credentials, product, signature, size, duplicate) and stop: the
    /// client sends only the head. Clients do this first so that a refusal reaches them before
    /// they stream the image (an HTTP client that is still sending does not read the answer).
    pub dry_run: Option<bool>,
    /// Publish although the security counter is lower than the channel's highest (docs/security.md).
    pub allow_lower_counter: Option<bool>,
}

/// The answer to a dry run: the release would be accepted so far.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PushCheck {
    pub product: String,
    pub version: String,
    pub channel: String,
    /// Key ids whose signatures verified.
    pub signed_by: Vec<String>,
    /// Bytes of image the upload must carry after the head.
    pub image_size: u32,
    /// `true`: this signed manifest is published on the channel already (`release`); the
    /// upload would change nothing and answer that release with 200.
    pub existing: bool,
    /// The release already published, when `existing`.
    pub release: Option<Release>,
}

type BodyStream = axum::body::BodyDataStream;

/// Reads from the body until `buf` holds at least `n` bytes.
async fn fill(stream: &mut BodyStream, buf: &mut BytesMut, n: usize) -> ApiResult<()> {
    while buf.len() < n {
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(ApiError::bad_request(format!("reading the upload failed: {e}"))),
            None => {
                return Err(ApiError::bad_release(format!(
                    "the upload ended after {} bytes, inside the bundle head; is this a release.otter file from `otter sign`?",
                    buf.len()
                )))
            }
        }
    }
    Ok(())
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Refused(m) => ApiError::bad_release(m),
            PublishError::TooLarge(m) => ApiError::too_large(m),
            PublishError::Conflict(m) => ApiError::conflict(m),
            PublishError::Unreadable(m) => ApiError::bad_request(m),
            PublishError::Db(e) => e.into(),
            PublishError::Storage(e) => ApiError::internal(e),
        }
    }
}

#[utoipa::path(operation_id = "releases_push_release", post, path = "/api/v1/products/{product}/releases", tag = "releases",
    params(("channel" = Option<String>, Query, description = "channel to publish to; default stable"),
        ("dry_run" = Option<bool>, Query, description = "send only the bundle head; check it and stop"),
        ("allow_lower_counter" = Option<bool>, Query, description = "publish although the security counter is lower than the channel's highest")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a release.otter bundle"),
    responses((status = 201, body = Published, description = "published (`existing`: false)"),
        (status = 200, body = Published, description = "this signed manifest and image are on the channel already: nothing changed, `existing`: true (a dry run answers a PushCheck)"),
        (status = 409, body = crate::error::ErrorBody, description = "another release of this version is on the channel"), (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn push_release(
    State(state): State<AppState>,
    who: Principal,
    Path(product_name): Path<String>,
    Query(q): Query<PushQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    who.require_publish(&product_name)?;
    let channel = q.channel.unwrap_or_else(|| "stable".into());
    check_channel(&channel)?;
    let product = super::products::load(&state, &product_name).await?;
    let limit = state.settings.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit + (BUNDLE_HEAD_LEN + MAX_ENVELOPE_LEN) as u64) {
        return Err(ApiError::too_large(format!(
            "the upload is larger than max_upload_bytes ({limit})"
        )));
    }

    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    fill(&mut stream, &mut buf, BUNDLE_HEAD_LEN).await?;
    let fixed: [u8; BUNDLE_HEAD_LEN] = buf[..BUNDLE_HEAD_LEN].try_into().expect("length checked");
    let env_len =
        BundleHead::envelope_len(&fixed).map_err(|e| ApiError::bad_release(e.to_string()))?;
    fill(&mut stream, &mut buf, BUNDLE_HEAD_LEN + env_len).await?;
    let head = BundleHead::decode(&buf).map_err(|e| ApiError::bad_release(e.to_string()))?;
    let prepared = release::prepare(
        &state,
        &product,
        &channel,
        &head.envelope,
        q.allow_lower_counter.unwrap_or(false),
    )
    .await?;
    if q.dry_run.unwrap_or(false) {
        let check = PushCheck {
            product: product.name.clone(),
            version: head.envelope.manifest().version.clone(),
            channel,
            signed_by: prepared.signed_by,
            image_size: head.envelope.manifest().image_size,
            existing: prepared.existing.is_some(),
            release: prepared.existing.as_ref().map(Release::from),
        };
        return Ok((StatusCode::OK, Json(check)).into_response());
    }
    let envelope_bytes = buf[BUNDLE_HEAD_LEN..head.head_len].to_vec();
    buf.advance(head.head_len);
    // What the head's reads took of the image, then the rest of the body.
    let image = futures::stream::once(async move { Ok(buf.freeze()) }).chain(stream);
    let publication = release::Publication {
        product: &product,
        channel: &channel,
        envelope: &head.envelope,
        envelope_bytes,
        published_by: &who.name,
    };
    match release::publish(&state, publication, prepared, Box::pin(image)).await? {
        Outcome::Published(row) => {
            Ok((StatusCode::CREATED, Json(Published::new(&row, false))).into_response())
        }
        Outcome::Existing(row) => {
            Ok((StatusCode::OK, Json(Published::new(&row, true))).into_response())
        }
    }
}
