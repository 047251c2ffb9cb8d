//! `POST /api/v1/products/{product}/releases`: streaming release upload.
//!
//! Order of checks (docs/api.md, "Release upload"): the signed head first, before a single image
//! byte is stored; then the image streams into `staging/` while it is hashed and counted; then
//! size, hash, image structure and chip; only then the blob moves to its content address and the
//! release row is inserted. A refusal at any step deletes what was staged and stores nothing.
//! The same signed release again on its channel is answered with the release that is there
//! (`existing`), after its image was read and matched; nothing is stored (routes::promote).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use otter_core::keys::PublicKey;
use otter_core::manifest::{BundleHead, Envelope, Manifest, BUNDLE_HEAD_LEN, MAX_ENVELOPE_LEN};
use otter_core::Chip;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::devices::check_channel;
use super::promote::{identical, Published};
use super::views::Release;
use crate::auth::{new_id, Principal};
use crate::blob::{StagedBlob, StagedObject};
use crate::db::{DbError, ProductRow, ReleaseRow};
use crate::error::{ApiError, ApiResult, Json};
use crate::{now, AppState};

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

/// Checks the signed head against the product, before any image byte is accepted (and a stored
/// envelope again when it is promoted: keys may have been removed, or it may have expired).
pub(crate) async fn check_envelope(
    state: &AppState,
    product: &ProductRow,
    envelope: &Envelope,
) -> ApiResult<Vec<String>> {
    let m = envelope.manifest();
    if m.product != product.name {
        return Err(ApiError::bad_release(format!(
            "the manifest is signed for product {:?}, not {:?}",
            m.product, product.name
        )));
    }
    if m.chip.name() != product.chip {
        return Err(ApiError::bad_release(format!(
            "the manifest targets {}, but product {:?} is for {}",
            m.chip, product.name, product.chip
        )));
    }
    let keys: Vec<PublicKey> = state
        .db
        .list_keys(product.id)
        .await?
        .iter()
        .filter_map(|k| PublicKey::from_pem(&k.public_key_pem).ok())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::bad_release(format!(
            "product {:?} has no release keys yet; register one with `otter product key add {} --pub release.pub.pem`",
            product.name, product.name
        )));
    }
    let signed_by = envelope
        .verify(&keys, 1)
        .map_err(|e| ApiError::bad_release(format!("signature check failed: {e}")))?;
    if m.expires_at.is_some_and(|e| e as i64 <= now()) {
        return Err(ApiError::bad_release(
            "the manifest has expired already; sign it again",
        ));
    }
    Ok(signed_by.iter().map(|k| k.to_string()).collect())
}

/// Refuses what no device can install, a counter below the channel's highest (unless
/// `allow_lower`) and a creation time ahead of the server's clock (otter_core::publish).
pub(crate) async fn check_publish_rules(
    state: &AppState,
    product: &ProductRow,
    channel: &str,
    m: &otter_core::manifest::Manifest,
    allow_lower: bool,
) -> ApiResult<()> {
    use otter_core::publish;
    publish::check_installable(m).map_err(ApiError::bad_release)?;
    publish::check_created_at(
        m.created_at,
        now().max(0) as u64,
        state.settings.manifest_max_future_s,
    )
    .map_err(ApiError::bad_release)?;
    let highest = state
        .db
        .highest_counter_release(product.id, channel)
        .await?
        .map(|r| publish::HighestCounter {
            version: r.version,
            security_counter: r.security_counter.clamp(0, u32::MAX as i64) as u32,
        });
    publish::check_counter(channel, m.security_counter, highest.as_ref(), allow_lower)
        .map_err(ApiError::bad_release)?;
    if allow_lower && highest.is_some_and(|h| m.security_counter < h.security_counter) {
        tracing::warn!(product = %product.name, %channel, version = %m.version, counter = m.security_counter, "publishing a security counter below the channel's highest, as the publisher asked");
    }
    Ok(())
}

/// Streams the image into staging (or nowhere, for a release that exists already), hashing and
/// counting; refuses too many or too few bytes.
async fn stage_image(
    stream: &mut BodyStream,
    mut leftover: BytesMut,
    mut staged: Option<&mut StagedBlob>,
    expected_size: u64,
) -> ApiResult<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    loop {
        let chunk = if !leftover.is_empty() {
            leftover.split().freeze()
        } else {
            match stream.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(ApiError::bad_request(format!(
                        "reading the upload failed: {e}"
                    )))
                }
                None => break,
            }
        };
        received += chunk.len() as u64;
        if received > expected_size {
            return Err(ApiError::bad_release(format!(
                "the image is longer than the {expected_size} bytes the manifest signs"
            )));
        }
        hasher.update(&chunk);
        if let Some(staged) = staged.as_deref_mut() {
            staged
                .write(chunk.chunk())
                .await
                .map_err(ApiError::internal)?;
        }
    }
    if received < expected_size {
        return Err(ApiError::bad_release(format!(
            "the image has {received} bytes, but the manifest signs {expected_size}"
        )));
    }
    Ok(hasher.finalize().into())
}

/// Parses the staged image and checks it against the product's chip.
fn check_image(bytes: &[u8], product: &ProductRow) -> ApiResult<(Option<String>, Option<String>)> {
    let info = otter_core::image::parse(bytes)
        .map_err(|e| ApiError::bad_release(format!("not a valid firmware image: {e}")))?;
    let product_chip: Option<Chip> = product.chip.parse().ok();
    if Some(info.chip) != product_chip {
        return Err(ApiError::bad_release(format!(
            "the image is built for {}, but product {:?} is for {}",
            info.chip, product.name, product.chip
        )));
    }
    Ok(match &info.app {
        Some(app) => (Some(app.project_name.clone()), Some(app.idf_ver.clone())),
        None => (None, None),
    })
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
    let signed_by = check_envelope(&state, &product, &head.envelope).await?;
    let manifest = head.envelope.manifest().clone();
    // The same signed manifest on this channel already: pushing it again changes nothing and is
    // no error (a CI job that runs twice). The image is still read and must match.
    let on_channel = state
        .db
        .find_release(product.id, &channel, &manifest.version)
        .await?;
    if let Some(existing) = on_channel.as_ref().filter(|r| identical(r, &head.envelope)) {
        if q.dry_run.unwrap_or(false) {
            let check = PushCheck {
                product: product.name.clone(),
                version: manifest.version.clone(),
                channel,
                signed_by,
                image_size: manifest.image_size,
                existing: true,
                release: Some(Release::from(existing)),
            };
            return Ok((StatusCode::OK, Json(check)).into_response());
        }
        check_size(&manifest, limit)?;
        buf.advance(head.head_len);
        let digest = stage_image(&mut stream, buf, None, manifest.image_size as u64).await?;
        if digest != manifest.image_sha256 {
            return Err(ApiError::bad_release(format!(
                "the image's SHA-256 is {}, but the manifest signs {}",
                hex::encode(digest),
                manifest.image_sha256_hex()
            )));
        }
        tracing::info!(release = %existing.id, product = %existing.product, version = %existing.version, channel = %existing.channel, by = ?who.name, "release pushed again: published already");
        return Ok((StatusCode::OK, Json(Published::new(existing, true))).into_response());
    }
    check_publish_rules(
        &state,
        &product,
        &channel,
        &manifest,
        q.allow_lower_counter.unwrap_or(false),
    )
    .await?;
    check_size(&manifest, limit)?;
    if let Some(other) = &on_channel {
        return Err(super::promote::conflict(other, &manifest));
    }
    if q.dry_run.unwrap_or(false) {
        let check = PushCheck {
            product: product.name.clone(),
            version: manifest.version.clone(),
            channel,
            signed_by,
            image_size: manifest.image_size,
            existing: false,
            release: None,
        };
        return Ok((StatusCode::OK, Json(check)).into_response());
    }
    // Stored and served verbatim, exactly the bytes that were signed and checked.
    let envelope_bytes = buf[BUNDLE_HEAD_LEN..head.head_len].to_vec();
    buf.advance(head.head_len);

    let mut staged = state.blobs.stage();
    let digest = match stage_image(
        &mut stream,
        buf,
        Some(&mut staged),
        manifest.image_size as u64,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            staged.abort().await;
            return Err(e);
        }
    };
    let staged: StagedObject = staged.complete().await.map_err(ApiError::internal)?;
    if digest != manifest.image_sha256 {
        state.blobs.discard(staged).await;
        return Err(ApiError::bad_release(format!(
            "the image's SHA-256 is {}, but the manifest signs {}",
            hex::encode(digest),
            manifest.image_sha256_hex()
        )));
    }
    let bytes = match state.blobs.read_staged(&staged).await {
        Ok(b) => b,
        Err(e) => {
            state.blobs.discard(staged).await;
            return Err(ApiError::internal(e));
        }
    };
    let (project_name, idf_version) = match check_image(&bytes, &product) {
        Ok(v) => v,
        Err(e) => {
            state.blobs.discard(staged).await;
            return Err(e);
        }
    };
    drop(bytes);

    let sha_hex = manifest.image_sha256_hex();
    // Until the release row is in, the blob collector keeps off (crate::blob_gc explains why).
    let _publishing = state.blobs.publishing().await;
    state
        .blobs
        .publish(staged, &sha_hex)
        .await
        .map_err(ApiError::internal)?;
    let row = ReleaseRow {
        id: new_id("rel_"),
        product_id: product.id,
        product: product.name.clone(),
        channel: channel.clone(),
        version: manifest.version.clone(),
        chip: manifest.chip.name().into(),
        security_counter: manifest.security_counter as i64,
        size: manifest.image_size as i64,
        sha256: sha_hex,
        manifest_created_at: manifest.created_at as i64,
        expires_at: manifest.expires_at.map(|e| e as i64),
        envelope: envelope_bytes,
        signed_by: signed_by.join(","),
        project_name,
        idf_version,
        published_at: now(),
        published_by: who.name.clone(),
    };
    // The blob is in place; the release becomes visible with this one insert. A crash before
    // it leaves an unreferenced blob that no route serves.
    match state.db.insert_release(&row).await {
        Ok(()) => {}
        // The same push ran alongside this one and won: its answer is this one's too.
        Err(DbError::Conflict(_)) => {
            return super::promote::lost_race(&state, &row, &head.envelope).await;
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!("otter_releases_published_total").increment(1);
    tracing::info!(release = %row.id, product = %row.product, version = %row.version, channel = %row.channel, by = ?who.name, "release published");
    Ok((StatusCode::CREATED, Json(Published::new(&row, false))).into_response())
}

/// Refuses an image larger than `max_upload_bytes` before a byte of it is read.
fn check_size(manifest: &Manifest, limit: u64) -> ApiResult<()> {
    if manifest.image_size as u64 > limit {
        return Err(ApiError::too_large(format!(
            "the image has {} bytes; this server accepts at most {limit} (max_upload_bytes)",
            manifest.image_size
        )));
    }
    Ok(())
}
