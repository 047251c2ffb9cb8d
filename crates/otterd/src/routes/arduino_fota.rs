//! esp32FOTA devices (docs/arduino.md, "esp32FOTA"): `GET /arduino/v1/{product}/fota.json`, the
//! manifest the library polls, and `GET /arduino/v1/{product}/fota/{release}.bin`, the image it
//! names. Both take the same HTTP Basic credential as `/arduino/v1/{product}` (the library sends
//! it with `setExtraHTTPHeader("Authorization", "Basic ...")` on both requests), with the same
//! throttling of failures. Answers have an exact `Content-Length` (the library reads the
//! manifest from the raw stream, so it must never be chunked) and are never redirects.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use serde::Deserialize;

use super::arduino::{authenticate, candidate, close, device_of, DEFAULT_CHANNEL, RETRY_AFTER_S};
use crate::arduino_fota::{choose, mac_of_device_id, manifest, valid_type, MANIFEST_MAX_BYTES};
use crate::db::{CheckinReport, DbError, ProductRow};
use crate::download_limit::Full;
use crate::error::{ApiError, ApiResult};
use crate::{now, AppState};

/// What the manifest URL may carry.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FotaQuery {
    /// `ESP.getEfuseMac()` in decimal: the library appends it when `use_device_id` is set. With
    /// it the device is registered by its MAC (allow-list, device cap) and gets its channel's
    /// release; without it, the `stable` channel's.
    pub id: Option<String>,
    /// The firmware type the device was built with (`cfg.name`); default the product's name.
    #[serde(rename = "type")]
    pub firmware_type: Option<String>,
}

fn client_ip(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    peer.map(|Extension(ConnectInfo(a))| a.ip())
}

fn refuse_esp8266(product: &ProductRow) -> ApiResult<()> {
    if product.chip == otter_core::Chip::Esp8266 {
        return Err(ApiError::not_found(
            "esp32FOTA runs on ESP32 chips and this product is for the ESP8266: use /arduino/v1/{product} with ESP8266httpUpdate",
        ));
    }
    Ok(())
}

#[utoipa::path(operation_id = "arduino_fota_manifest", get, path = "/arduino/v1/{product}/fota.json", tag = "device",
    security(("basic" = [])),
    params(("product" = String, Path, description = "the product's name"), FotaQuery),
    responses(
        (status = 200, description = "the esp32FOTA manifest: `{\"type\", \"version\": \"MAJOR.MINOR.PATCH\", \"url\"}` for the newest release whose version the library can compare, or `[]` when there is none", content_type = "application/json"),
        (status = 400, body = crate::error::ErrorBody, description = "an `id` that is not an eFuse MAC in decimal, a bad `type`, or no `Host` header"),
        (status = 401, body = crate::error::ErrorBody, description = "no HTTP Basic credential, a wrong one, or an unknown product (the same answer)"),
        (status = 403, body = crate::error::ErrorBody, description = "the MAC is not on the product's allow-list, or the product's device cap is reached"),
        (status = 404, body = crate::error::ErrorBody, description = "an ESP8266 product"),
        (status = 429, body = crate::error::ErrorBody, description = "too many failed credentials, or the product's rate of new devices is exceeded")))]
pub async fn manifest_json(
    State(state): State<AppState>,
    Path(product): Path<String>,
    Query(q): Query<FotaQuery>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    close(
        match serve_manifest(&state, &product, &q, &headers, client_ip(peer)).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    )
}

async fn serve_manifest(
    state: &AppState,
    product: &str,
    q: &FotaQuery,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> ApiResult<Response> {
    let product = authenticate(state, product, headers, client).await?;
    refuse_esp8266(&product)?;
    let firmware_type = q.firmware_type.as_deref().unwrap_or(&product.name);
    if !valid_type(firmware_type) {
        return Err(ApiError::bad_request(
            "type must be 1 to 64 printable ASCII characters without spaces (the firmware name the device was built with)",
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::bad_request("the request has no usable Host header"))?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let (channel, id_query) = match &q.id {
        Some(id) => {
            let mac = mac_of_device_id(id).ok_or_else(|| {
                ApiError::bad_request(
                    "id must be ESP.getEfuseMac() in decimal (what esp32FOTA sends with use_device_id)",
                )
            })?;
            let device = device_of(state, &product, &mac).await?;
            // Only the time it was seen: esp32FOTA reports no version, so what the device
            // reported through other routes is kept.
            state
                .db
                .record_checkin(
                    &device.id,
                    &CheckinReport {
                        chip: device.chip.unwrap_or(product.chip),
                        version: device.version.clone().unwrap_or_default(),
                        security_counter: device.security_counter.unwrap_or(0),
                        image_sha256: device.image_sha256.clone(),
                        partition_size: device.partition_size,
                        at: now(),
                    },
                )
                .await?;
            metrics::counter!("otter_device_checkins_total").increment(1);
            (device.channel, format!("?id={}", id.trim()))
        }
        None => (DEFAULT_CHANNEL.to_string(), String::new()),
    };
    let candidates = state
        .db
        .release_candidates(product.id, &channel, 0, now())
        .await?;
    let chosen = choose(&candidates).map(|r| {
        let url = format!(
            "{}://{host}/arduino/v1/{}/fota/{}.bin{id_query}",
            if https { "https" } else { "http" },
            product.name,
            r.id
        );
        (r, url)
    });
    let body = serde_json::to_vec(&manifest(firmware_type, chosen)).map_err(ApiError::internal)?;
    if body.len() > MANIFEST_MAX_BYTES {
        return Err(ApiError::bad_request(format!(
            "the manifest would be {} bytes, more than the {MANIFEST_MAX_BYTES} esp32FOTA parses: use a shorter host name or type",
            body.len()
        )));
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .map_err(ApiError::internal)
}

#[utoipa::path(operation_id = "arduino_fota_image", get, path = "/arduino/v1/{product}/fota/{file}", tag = "device",
    security(("basic" = [])),
    params(("product" = String, Path, description = "the product's name"),
        ("file" = String, Path, description = "`{release id}.bin`, as the manifest names it"),
        FotaQuery),
    responses(
        (status = 200, description = "the release's image, with its exact `Content-Length` and `x-MD5`", content_type = "application/octet-stream"),
        (status = 401, body = crate::error::ErrorBody, description = "no HTTP Basic credential, a wrong one, or an unknown product (the same answer)"),
        (status = 404, body = crate::error::ErrorBody, description = "no such release of this product, or it expired"),
        (status = 429, body = crate::error::ErrorBody, description = "too many failed credentials, or the server's image sends are at `max_downloads`")))]
pub async fn image(
    State(state): State<AppState>,
    Path((product, file)): Path<(String, String)>,
    Query(q): Query<FotaQuery>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    close(
        match serve_image(&state, &product, &file, &q, &headers, client_ip(peer)).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    )
}

async fn serve_image(
    state: &AppState,
    product: &str,
    file: &str,
    q: &FotaQuery,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> ApiResult<Response> {
    let product = authenticate(state, product, headers, client).await?;
    refuse_esp8266(&product)?;
    let missing = || ApiError::not_found("no such release of this product (or it expired)");
    let release_id = file.strip_suffix(".bin").ok_or_else(missing)?;
    let release = match state.db.get_release(release_id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if release.product_id != product.id || release.expires_at.is_some_and(|e| e <= now()) {
        return Err(missing());
    }
    let chosen = candidate(state, release).await?;
    let who = match (&q.id, client) {
        (Some(id), _) => format!("fota:{id}"),
        (None, Some(ip)) => format!("fota-addr:{ip}"),
        (None, None) => "fota".to_string(),
    };
    let slot = state.downloads.acquire(&who).map_err(|full| {
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
    let release = &chosen.release;
    let stream = state
        .blobs
        .read_checked(crate::verified_read::ReadRequest {
            sha256_hex: release.sha256.as_str(),
            size: release.size.max(0) as u64,
            span: 0..release.size.max(0) as u64,
            chunk: state.settings.download_chunk_bytes,
        })
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!("otter_download_bytes_total").increment(release.size.max(0) as u64);
    tracing::info!(release = %release.id, version = %release.version, client = %who, "image served to an esp32FOTA client");
    let body = stream.map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, release.size)
        .header("x-MD5", &chosen.md5)
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}
