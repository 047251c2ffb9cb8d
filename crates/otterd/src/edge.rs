//! What every request and response passes through at the edge of the router (issue 8, items 10,
//! 16 and 20), so that no handler has to remember it:
//!
//! - an error the framework answered on its own (a bad query string or path parameter, an
//!   unknown route, a method the route lacks, a body over a limit, a body timeout) gets the
//!   documented JSON error body, like every [`ApiError`];
//! - a request with more header fields or header bytes than we accept gets a JSON `431`;
//! - every response carries `X-Content-Type-Options: nosniff`, and API responses (which may carry
//!   tokens or secrets) `Cache-Control: no-store` unless they set their own (image downloads do);
//! - every refusal (4xx) is logged at `info` with method, route, status, code and reason, the
//!   reason and any client-chosen path as escaped fields. No secret is logged: error messages
//!   never contain one.

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{clip, ApiError};

/// Header fields hyper parses before it gives up with a bare `431` (our own limit is lower, so
/// clients see the JSON answer).
pub const HYPER_MAX_HEADERS: usize = 1024;
/// Header fields a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Bytes of header names and values a request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The code and reason of a refusal, attached to the response for the log line.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn is_html(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

/// The error code for a status the framework answered.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "unprocessable",
        429 => "overloaded",
        431 => "headers_too_large",
        501 => "not_implemented",
        503 => "unavailable",
        504 => "timeout",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

fn default_message(status: StatusCode, method: &Method) -> String {
    match status.as_u16() {
        404 => "no such route; see /openapi.json".into(),
        405 => format!("method {method} is not allowed on this route; see /openapi.json"),
        408 => "the request body was not received in time".into(),
        413 => "the request body is too large".into(),
        416 => "the requested range is outside the image".into(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_ascii_lowercase(),
    }
}

/// Rewrites a non-JSON error answer into the JSON error body, keeping its status and headers.
async fn to_json(resp: Response, method: &Method) -> Response {
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        default_message(parts.status, method)
    } else {
        text
    };
    let err = ApiError {
        status: parts.status,
        code: code_for(parts.status),
        message,
        retry_after: None,
    };
    let new = err.into_response();
    let (new_parts, new_body) = new.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in new_parts.headers.iter() {
        parts.headers.insert(k.clone(), v.clone());
    }
    parts.extensions.extend(new_parts.extensions);
    Response::from_parts(parts, new_body)
}

/// The middleware; install it as the outermost layer of the router.
pub async fn edge(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let api = path.starts_with("/api/") || path.starts_with("/device/");
    let fields = req.headers().len();
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    let mut resp = if fields > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "headers_too_large",
            message: format!(
                "the request has {fields} header fields ({bytes} bytes); at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes are accepted"
            ),
            retry_after: None,
        }
        .into_response()
    } else {
        next.run(req).await
    };
    let status = resp.status();
    // Dashboard pages (issue 11) answer their refusals as HTML pages of their own.
    let page = path.starts_with("/ui/") && is_html(&resp);
    if (status.is_client_error() || status.is_server_error()) && !is_json(&resp) && !page {
        resp = to_json(resp, &method).await;
    }
    if status.is_client_error() {
        let (code, reason) = resp
            .extensions()
            .get::<Refusal>()
            .map(|r| (r.code, r.message.as_str()))
            .unwrap_or(("", ""));
        match &route {
            Some(route) => tracing::info!(
                %method, route = %route, status = status.as_u16(), code, reason = ?reason,
                "request refused"
            ),
            None => tracing::info!(
                %method, path = ?clip(&path), status = status.as_u16(), code, reason = ?reason,
                "request refused"
            ),
        }
    }
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
