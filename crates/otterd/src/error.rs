//! One error type for every route, with a stable JSON body: `{"error": code, "message": text}`.
//!
//! 4xx codes and messages are part of the API contract. A 5xx carries no internals: the cause is
//! logged here, with the request's span, and the client gets a generic message.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

/// The error body, as documented in docs/api.md.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: &'static str,
    /// What is wrong and what to do, for people.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m)
    }
    pub fn bad_release(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_release", m)
    }
    pub fn overloaded(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "the server is busy; retry after the Retry-After delay",
            )
        }
    }
    /// A server fault: logs `cause` and answers a body without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the server log has the details",
        )
    }
}

/// Characters of client input an error message may repeat.
pub const ECHO_MAX_CHARS: usize = 64;
/// Characters an error message may have in all; longer ones are cut (issue 8, item 16).
pub const MESSAGE_MAX_CHARS: usize = 320;

/// At most [`ECHO_MAX_CHARS`] characters of client input, with `…` when cut.
pub fn clip(input: &str) -> String {
    clip_to(input, ECHO_MAX_CHARS)
}

/// An error message as sent: every run of more than [`ECHO_MAX_CHARS`] characters without a
/// space (an id, a name or a value the client sent) cut to that, and the whole to
/// [`MESSAGE_MAX_CHARS`].
pub fn bound_message(m: &str) -> String {
    let words: Vec<String> = m.split(' ').map(clip).collect();
    clip_to(&words.join(" "), MESSAGE_MAX_CHARS)
}

fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = bound_message(&self.message);
        let refusal = crate::edge::Refusal {
            code: self.code,
            message: message.clone(),
        };
        let body = ErrorBody {
            error: self.code,
            message,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(refusal);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::not_found("not found"),
            DbError::Conflict(m) => ApiError::conflict(m),
            DbError::Backend(e) => ApiError::internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "bad_json", r.body_text());
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e = ApiError::too_large("the JSON body is too large");
        } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            e.message = "send the body as JSON with Content-Type: application/json".into();
        }
        e
    }
}

/// `Json<T>` whose rejections use [`ApiError`]'s body.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_repeat_a_bounded_slice_of_client_input() {
        let long = "x".repeat(10_000);
        let m = bound_message(&format!("no product named {long:?}; create it first"));
        assert!(m.starts_with("no product named \"xxxx"), "{m}");
        assert!(m.ends_with("… create it first"), "{m}");
        assert!(m.chars().count() < 100, "{m}");
        let spaced = "a ".repeat(10_000);
        assert!(bound_message(&spaced).chars().count() <= MESSAGE_MAX_CHARS + 1);
        assert_eq!(bound_message("short and sweet"), "short and sweet");
    }
}
