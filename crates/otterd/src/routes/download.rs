//! `GET`/`HEAD /device/v1/releases/{id}/image`: the image, with `Range`, a strong `ETag` and
//! `Content-Length`, compatible with `esp_https_ota`'s partial downloads.
//!
//! Bytes tampered with in storage never reach a device, whole or as a range: the blob is hashed
//! once per stored identity ([`crate::verified_read`]).

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use crate::auth::DeviceAuth;
use crate::db::DbError;
use crate::download_limit::{Full, RETRY_AFTER_S};
use crate::error::{ApiError, ApiResult};
use crate::verified_read::ReadRequest;
use crate::AppState;

/// What a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve everything.
    Full,
    /// One satisfiable range.
    Partial(Range<u64>),
    /// Cannot be satisfied (416).
    Unsatisfiable,
}

/// Parses a `Range` header against a size. Multiple ranges and other units are served whole,
/// as RFC 9110 allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        // Suffix: the last N bytes.
        return match end.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(n) if size > 0 => RangeRequest::Partial(size.saturating_sub(n)..size),
            Ok(_) => RangeRequest::Unsatisfiable,
            Err(_) => RangeRequest::Full,
        };
    }
    let Ok(start) = start.parse::<u64>() else {
        return RangeRequest::Full;
    };
    let end = if end.is_empty() {
        size.saturating_sub(1)
    } else {
        match end.parse::<u64>() {
            Ok(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(start..end + 1)
    }
}

fn etag_matches(header_value: Option<&HeaderValue>, etag: &str) -> bool {
    header_value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

#[utoipa::path(operation_id = "device_image", get, path = "/device/v1/releases/{id}/image", tag = "device",
    responses((status = 200, description = "the whole image"), (status = 206, description = "a range"),
              (status = 304), (status = 404, body = crate::error::ErrorBody), (status = 416),
              (status = 429, description = "too many downloads in progress (server or device); retry after `Retry-After`", body = crate::error::ErrorBody)))]
pub async fn image(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Ids of other products' releases answer like unknown ones, so they don't leak.
    let release = match state.db.get_release(&id).await {
        Ok(r) if r.product_id == device.product_id => r,
        Ok(_) | Err(DbError::NotFound) => {
            return Err(ApiError::not_found(format!("no release {id}")))
        }
        Err(e) => return Err(e.into()),
    };
    let size = release.size as u64;
    let etag = format!("\"{}\"", release.sha256);

    let base = |status: StatusCode| {
        let mut r = Response::builder()
            .status(status)
            .header(header::ETAG, &etag)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            );
        if status != StatusCode::NOT_MODIFIED {
            r = r.header(header::CONTENT_TYPE, "application/octet-stream");
        }
        r
    };
    if etag_matches(headers.get(header::IF_NONE_MATCH), &etag) {
        return base(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // If-Range with another validator means "the image changed": send it whole.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .map(|v| v.to_str().map(|s| s.trim() == etag).unwrap_or(false))
        .unwrap_or(true);
    let range = if if_range_ok {
        parse_range(range_header, size)
    } else {
        RangeRequest::Full
    };

    let (status, span) = match range {
        RangeRequest::Unsatisfiable => {
            return base(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .map_err(ApiError::internal);
        }
        RangeRequest::Full => (StatusCode::OK, 0..size),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
    };
    let mut resp = base(status).header(header::CONTENT_LENGTH, span.end - span.start);
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", span.start, span.end - 1),
        );
    }
    if method == Method::HEAD {
        return resp.body(Body::empty()).map_err(ApiError::internal);
    }
    // Held by the body until it is finished or dropped, so stalled downloads stay counted.
    let slot = state.downloads.acquire(&device.id).map_err(|full| {
        metrics::counter!("otter_downloads_refused_total").increment(1);
        let message = match full {
            Full::Server(n) => format!(
                "the server is sending {n} images already (max_downloads); retry after the Retry-After delay"
            ),
            Full::Device(n) => format!(
                "this device has {n} downloads in progress already (max_downloads_per_device); finish or close them first"
            ),
        };
        ApiError {
            message,
            ..ApiError::overloaded(RETRY_AFTER_S)
        }
    })?;
    let stream = state
        .blobs
        .read_checked(ReadRequest {
            sha256_hex: release.sha256.as_str(),
            size,
            span: span.clone(),
            chunk: state.settings.download_chunk_bytes,
        })
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!("otter_download_bytes_total").increment(span.end - span.start);
    let body = Body::from_stream(stream.map(move |chunk| {
        let _held = &slot;
        chunk
    }));
    resp.body(body).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=90-500"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Partial(0..100));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 100), Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Full);
    }
}
