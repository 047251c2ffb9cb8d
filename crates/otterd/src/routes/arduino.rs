//! `GET /arduino/v1/{product}`: stock Arduino update clients (ESP8266 `ESP8266httpUpdate`,
//! arduino-esp32 `HTTPUpdate`), served natively (docs/arduino.md). What a client gets is decided
//! in [`crate::arduino`]; this module reads the request and writes the answer those clients
//! understand: `304` up to date, `200` with the exact `Content-Length` and `x-MD5` (ESP32 also
//! `x-SHA256`), `401`/`403` refusals; never a redirect; always `Connection: close`.

use axum::body::Body;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use otter_core::version::Version;

use super::device_api::{check_allowlist, check_new_device_bounds, device_limit};
use crate::arduino::{
    decide, infer_outcome, parse_headers, running_version, Candidate, ClientReport, Family, Mode,
    Outcome,
};
use crate::auth::{hash_secret, new_id, new_secret, DEVICE_TOKEN_PREFIX};
use crate::db::{
    CheckinReport, DbError, DeviceInsert, DeviceRow, DeviceState, EventRow, PayloadKind,
    PayloadRow, ProductRow, ReleaseRow, Sha256,
};
use crate::download_limit::Full;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::rate_limited;
use crate::services::{assignment, rollouts};
use crate::{now, AppState};

/// The channel of an auto-registered device (an admin moves it with `otter device update`).
pub(crate) const DEFAULT_CHANNEL: &str = "stable";

/// Seconds a client refused for load is asked to wait (ESP8266 and ESP32 treat `429` as a failed
/// update and try again at their next poll).
pub(crate) const RETRY_AFTER_S: u64 = 5;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The password of an `Authorization: Basic` header (any user name).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

/// The product, when the password is its enrolment secret; an unknown product and a wrong
/// secret get the same `401`, so product names do not leak. Failed attempts are counted per
/// product name and per client address (`arduino_auth_failures_per_minute`): over the limit
/// the answer is `429` with `Retry-After`, and the secret is not even checked.
pub(crate) async fn authenticate(
    state: &AppState,
    product: &str,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> ApiResult<ProductRow> {
    let (rate, burst) = (
        state.settings.arduino_auth_failures_per_minute,
        state.settings.arduino_auth_failures_burst,
    );
    let failures = &state.limiters.arduino_auth_failures;
    let mut keys = vec![format!("product:{product}")];
    if let Some(ip) = client {
        keys.push(format!("addr:{ip}"));
    }
    for key in &keys {
        if let Err(wait) = failures.peek(key, rate, burst) {
            metrics::counter!("otter_arduino_auth_throttled_total").increment(1);
            tracing::warn!(key = %key, "arduino client throttled: too many failed credentials");
            return Err(rate_limited(
                "too many failed credentials for this product or from this address; retry later",
                wait,
            ));
        }
    }
    let refused = || {
        for key in &keys {
            let _ = failures.take(key, rate, burst);
        }
        ApiError::unauthorized(
            "unknown product or wrong credential: use HTTP Basic with the product's enrolment secret as the password",
        )
    };
    let password = basic_password(headers).ok_or_else(refused)?;
    let product = match state.db.get_product(product).await {
        Ok(p) => p,
        Err(DbError::NotFound) => return Err(refused()),
        Err(e) => return Err(e.into()),
    };
    if !constant_time_eq(
        hash_secret(&password).as_bytes(),
        product.enrollment_secret_hash.as_bytes(),
    ) {
        tracing::warn!(product = %product.name, "arduino client refused: wrong credential");
        return Err(refused());
    }
    Ok(product)
}

/// The device of this MAC in the product, registered at its first request within the product's
/// allow-list, device cap and enrolment rate.
pub(crate) async fn device_of(
    state: &AppState,
    product: &ProductRow,
    mac: &str,
) -> ApiResult<DeviceRow> {
    check_allowlist(state, product, mac).await?;
    match state.db.find_device_by_hardware_id(product.id, mac).await {
        Ok(d) => return Ok(d),
        Err(DbError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    check_new_device_bounds(state, product, mac).await?;
    let row = DeviceRow {
        id: new_id("dev_"),
        product_id: product.id,
        product: product.name.clone(),
        hardware_id: mac.to_string(),
        channel: DEFAULT_CHANNEL.into(),
        // These clients have no token; this one is thrown away, so it can never be used.
        token_hash: hash_secret(&new_secret(DEVICE_TOKEN_PREFIX)),
        enrollment_nonce_hash: None,
        chip: None,
        version: None,
        security_counter: None,
        image_sha256: None,
        partition_size: None,
        last_state: None,
        enrolled_at: now(),
        last_seen_at: None,
    };
    match state.db.insert_device(&row).await {
        Ok(DeviceInsert::AtCap { max_devices }) => Err(device_limit(product, max_devices, mac)),
        Ok(DeviceInsert::Inserted) => {
            metrics::counter!("otter_device_enrollments_total").increment(1);
            tracing::info!(device = %row.id, product = %product.name, mac, "arduino client registered");
            Ok(row)
        }
        // Registered by a concurrent request.
        Err(DbError::Conflict(_)) => {
            Ok(state.db.find_device_by_hardware_id(product.id, mac).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// MD5 (hex) of a release's stored image, read as a stream; an image whose SHA-256 is not the
/// release's (a damaged blob) is an error, so a wrong digest is never cached.
async fn image_md5(state: &AppState, release: &ReleaseRow) -> ApiResult<String> {
    let mut stream = state
        .blobs
        .stream_image(release.sha256.as_str(), None)
        .await
        .map_err(ApiError::internal)?;
    let (mut md5, mut sha) = (Md5::new(), sha2::Sha256::new());
    while let Some(chunk) = stream.try_next().await.map_err(ApiError::internal)? {
        md5.update(&chunk);
        sha.update(&chunk);
    }
    if Sha256::from_digest(sha.finalize().into()) != release.sha256 {
        return Err(ApiError::internal(format!(
            "the stored image of release {} does not match its SHA-256",
            release.id
        )));
    }
    Ok(hex::encode(md5.finalize()))
}

pub(crate) async fn candidate(state: &AppState, release: ReleaseRow) -> ApiResult<Candidate> {
    let cached = state
        .image_md5s
        .lock()
        .expect("no panic while holding the lock")
        .get(release.sha256.as_str())
        .cloned();
    let md5 = match cached {
        Some(m) => m,
        None => {
            let m = image_md5(state, &release).await?;
            state
                .image_md5s
                .lock()
                .expect("no panic while holding the lock")
                .insert(release.sha256.to_string(), m.clone());
            m
        }
    };
    Ok(Candidate { release, md5 })
}

/// After an update was served, this request tells whether the client installed it.
async fn record_outcome(
    state: &AppState,
    device: &DeviceRow,
    report: &ClientReport,
) -> ApiResult<()> {
    let last = state.db.list_events(&device.id, 1).await?;
    let Some(served) = last
        .first()
        .filter(|e| e.state == DeviceState::Downloading)
        .and_then(|e| e.release_id.clone())
    else {
        return Ok(());
    };
    let release = match state.db.get_release(&served).await {
        Ok(r) => r,
        Err(DbError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let served = candidate(state, release).await?;
    // A client may report the MD5 of the signed bytes it was sent (issue 13), not the image's.
    let payload_md5 = match report.sketch_md5.as_deref() {
        Some(md5) => state
            .db
            .release_payloads(&served.release.id)
            .await?
            .iter()
            .any(|p| p.md5.as_deref() == Some(md5)),
        None => false,
    };
    let (event_state, reason) = match infer_outcome(&served, report) {
        Outcome::Success => (DeviceState::Success, None),
        Outcome::Failure(_) if payload_md5 => (DeviceState::Success, None),
        Outcome::Failure(reason) => (DeviceState::Failure, Some(reason)),
    };
    let at = now();
    state
        .db
        .add_event(&EventRow {
            device_id: device.id.clone(),
            at,
            release_id: Some(served.release.id.clone()),
            state: event_state,
            progress_bytes: None,
            reason: reason.clone(),
        })
        .await?;
    // As a status report would: the rollout's thresholds count stock clients too (issue 13).
    rollouts::device_reported(
        state.db.as_ref(),
        &device.id,
        Some(&served.release.id),
        event_state,
        reason.as_deref(),
        at,
    )
    .await?;
    metrics::counter!("otter_device_reports_total", "state" => event_state.as_str()).increment(1);
    Ok(())
}

/// A client that sends no version but the MD5 of a release's signed payload (the bytes it was
/// sent, issue 13) runs that release: its version stands in, as the image's MD5 would.
async fn signed_md5_version(
    state: &AppState,
    candidates: &[Candidate],
    report: &mut ClientReport,
) -> ApiResult<()> {
    let Some(md5) = report.sketch_md5.clone() else {
        return Ok(());
    };
    if report.version.is_some() || candidates.iter().any(|c| c.md5 == md5) {
        return Ok(());
    }
    for c in candidates {
        let payloads = state.db.release_payloads(&c.release.id).await?;
        if payloads
            .iter()
            .any(|p| p.md5.as_deref() == Some(md5.as_str()))
        {
            report.version = Some(c.release.version.clone());
            return Ok(());
        }
    }
    Ok(())
}

/// The release a rollout gives this device now (`services::assignment::offer`, which records
/// the deployment), or `None` when no rollout has one for it. A device that already runs the
/// rollout's version (these clients report no image SHA-256 on ESP8266) has succeeded there.
async fn rollout_offer(
    state: &AppState,
    device: &DeviceRow,
    checkin: &CheckinReport,
) -> ApiResult<Option<Candidate>> {
    let offer = assignment::offer(state.db.as_ref(), device, checkin, checkin.at).await?;
    let Some(offered) = offer.update.filter(|o| o.rollout_id.is_some()) else {
        return Ok(None);
    };
    if !checkin.version.is_empty()
        && Version::new(&checkin.version) == Version::new(&offered.release.version)
    {
        rollouts::device_reported(
            state.db.as_ref(),
            &device.id,
            Some(&offered.release.id),
            DeviceState::Success,
            Some("already running the release's version"),
            checkin.at,
        )
        .await?;
        return Ok(None);
    }
    Ok(Some(candidate(state, (*offered.release).clone()).await?))
}

/// What a client is sent of a release: one payload's blob, length and digests.
struct Served {
    kind: PayloadKind,
    size: i64,
    sha256: Sha256,
    md5: String,
}

/// The payload of the client's signed format when the release has one (ESP8266 family:
/// `esp8266-signed`; ESP32: `esp32-arduino-signed`), else the full image.
async fn served_bytes(state: &AppState, chosen: &Candidate, family: Family) -> ApiResult<Served> {
    let want = match family {
        Family::Esp8266 => PayloadKind::Esp8266Signed,
        Family::Esp32 => PayloadKind::Esp32ArduinoSigned,
    };
    let payloads = state.db.release_payloads(&chosen.release.id).await?;
    match payloads.into_iter().find(|p| p.kind == want) {
        // Attached payloads have their MD5 from the bytes checked when they were stored.
        Some(PayloadRow {
            kind,
            size,
            sha256,
            md5: Some(md5),
            ..
        }) => Ok(Served {
            kind,
            size,
            sha256,
            md5,
        }),
        _ => Ok(Served {
            kind: PayloadKind::Full,
            size: chosen.release.size,
            sha256: chosen.release.sha256.clone(),
            md5: chosen.md5.clone(),
        }),
    }
}

pub(crate) fn close(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn not_modified() -> Response {
    StatusCode::NOT_MODIFIED.into_response()
}

#[utoipa::path(operation_id = "arduino_update", get, path = "/arduino/v1/{product}", tag = "device",
    security(("basic" = [])),
    params(("product" = String, Path, description = "the product's name")),
    responses(
        (status = 200, description = "an update: the image, with `Content-Length`, `x-MD5`, `x-version` (and `x-SHA256` for `x-ESP32-*` clients); in `version` mode an empty body with `x-version` and `x-MD5`", content_type = "application/octet-stream"),
        (status = 304, description = "up to date, or nothing this client can take (too large for its free space, a filesystem mode, a chip of another family)"),
        (status = 400, body = crate::error::ErrorBody, description = "not an Arduino update client: no `x-ESP8266-*`/`x-ESP32-*` headers or no STA MAC"),
        (status = 401, body = crate::error::ErrorBody, description = "no HTTP Basic credential, a wrong one, or an unknown product (the same answer)"),
        (status = 403, body = crate::error::ErrorBody, description = "the MAC is not on the product's allow-list, or the product's device cap is reached"),
        (status = 429, body = crate::error::ErrorBody, description = "too many failed credentials for this product or from this address (`arduino_auth_failures_per_minute`), the product's rate of new devices is exceeded, or the server's image sends are at `max_downloads`")))]
pub async fn update(
    State(state): State<AppState>,
    Path(product): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let client = peer.map(|Extension(ConnectInfo(a))| a.ip());
    close(match serve(&state, &product, &headers, client).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    })
}

async fn serve(
    state: &AppState,
    product: &str,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> ApiResult<Response> {
    let product = authenticate(state, product, headers, client).await?;
    let mut report = parse_headers(
        headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
    )
    .map_err(ApiError::bad_request)?;
    let device = device_of(state, &product, &report.mac).await?;
    record_outcome(state, &device, &report).await?;
    let at = now();
    // Arduino clients have no anti-rollback counter: every unexpired release of the channel,
    // but those that rollouts deliver (docs/rollouts.md): those come only through the rollout
    // (`rollout_offer` below), as for the agent.
    let rolled_out = state.db.rolled_out_images(product.id).await?;
    let mut candidates = Vec::new();
    for r in state
        .db
        .release_candidates(product.id, &device.channel, 0, at)
        .await?
    {
        if rolled_out.contains(&r.sha256) {
            continue;
        }
        candidates.push(candidate(state, r).await?);
    }
    signed_md5_version(state, &candidates, &mut report).await?;
    let checkin = CheckinReport {
        chip: match (report.family.serves(product.chip), report.family) {
            (true, _) => product.chip,
            (false, Family::Esp8266) => otter_core::Chip::Esp8266,
            (false, Family::Esp32) => otter_core::Chip::Esp32,
        },
        version: running_version(&candidates, &report).unwrap_or_default(),
        security_counter: 0,
        // Checked as 64 hex digits, lowercased, when the headers were read; absent: none.
        image_sha256: report.sketch_sha256.as_deref().and_then(|s| s.parse().ok()),
        partition_size: report.free_space.map(|f| f.min(i64::MAX as u64) as i64),
        at,
    };
    state.db.record_checkin(&device.id, &checkin).await?;
    metrics::counter!("otter_device_checkins_total").increment(1);
    if !report.family.serves(product.chip) {
        tracing::warn!(device = %device.id, product_chip = %product.chip, family = ?report.family,
            "arduino client of another chip family; no update offered");
        return Ok(not_modified());
    }
    if report.mode == Mode::Filesystem {
        return Ok(not_modified());
    }
    // A rollout that reaches this device decides first, as at an agent's check-in (issue 13);
    // `version` probes take no deployment, so they see the channel only.
    let from_rollout = match report.mode {
        Mode::Sketch => rollout_offer(state, &device, &checkin).await?,
        _ => None,
    };
    let chosen = match &from_rollout {
        Some(c) => c,
        None => match decide(&candidates, &report) {
            Some(c) => c,
            None => return Ok(not_modified()),
        },
    };
    let release = &chosen.release;
    // The bytes this client gets: its signed format when the release has it (issue 13), else
    // the image.
    let served = served_bytes(state, chosen, report.family).await?;
    // The choice counted the image's size; a signed payload is a little larger, and a client
    // that cannot hold it would fail at every check ("too little space").
    if report
        .free_space
        .is_some_and(|room| served.size.max(0) as u64 > room)
    {
        tracing::info!(device = %device.id, release = %release.id, size = served.size, "the signed payload does not fit the client's free space");
        return Ok(not_modified());
    }
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("x-MD5", &served.md5)
        .header("x-version", &release.version);
    if report.mode == Mode::Version {
        return builder
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    // Counted with the agent's downloads (max_downloads, max_downloads_per_device) until the
    // body is sent or the connection drops.
    let slot = state.downloads.acquire(&device.id).map_err(|full| {
        metrics::counter!("otter_downloads_refused_total").increment(1);
        let message = match full {
            Full::Server(n) => {
                format!("the server is sending {n} images already (max_downloads); retry later")
            }
            Full::Device(n) => format!(
                "this device has {n} downloads in progress already (max_downloads_per_device)"
            ),
        };
        ApiError {
            message,
            ..ApiError::overloaded(RETRY_AFTER_S)
        }
    })?;
    // The stored image, whose MD5 and SHA-256 were checked when its MD5 was computed; streamed
    // with its exact length (never chunked: these clients need `Content-Length`).
    let stream = state
        .blobs
        .read_checked(crate::verified_read::ReadRequest {
            sha256_hex: served.sha256.as_str(),
            size: served.size.max(0) as u64,
            span: 0..served.size.max(0) as u64,
            chunk: state.settings.download_chunk_bytes,
        })
        .await
        .map_err(ApiError::internal)?;
    let mut builder = builder
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, served.size);
    if report.family == Family::Esp32 {
        builder = builder.header("x-SHA256", served.sha256.as_str());
    }
    state
        .db
        .add_event(&EventRow {
            device_id: device.id.clone(),
            at,
            release_id: Some(release.id.clone()),
            state: DeviceState::Downloading,
            progress_bytes: None,
            reason: None,
        })
        .await?;
    if from_rollout.is_some() {
        rollouts::device_reported(
            state.db.as_ref(),
            &device.id,
            Some(&release.id),
            DeviceState::Downloading,
            None,
            at,
        )
        .await?;
    }
    metrics::counter!("otter_download_bytes_total").increment(served.size.max(0) as u64);
    tracing::info!(device = %device.id, release = %release.id, version = %release.version, payload = served.kind.as_str(), "update served to an arduino client");
    // Held by the body until it is sent or the connection drops.
    let body = stream.map(move |chunk| {
        let _held = &slot;
        chunk
    });
    builder
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}
