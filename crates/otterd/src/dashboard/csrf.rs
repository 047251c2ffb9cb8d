//! Cross-site request forgery: every POST of the dashboard carries the session's token in a
//! form field (`csrf`), and comes from our own origin (`Sec-Fetch-Site: same-origin` when the
//! browser sends it, an `Origin` naming the `Host` it was sent to when it sends one). The
//! session cookie is `SameSite=Strict` besides.
//!
//! Pages take [`CsrfForm<T>`] for url-encoded forms; a body of another kind (a multipart
//! upload) calls [`check_request`] with the token it carries.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::session::SignedIn;
use super::PageError;
use crate::AppState;

/// The form field holding the token.
pub const FIELD: &str = "csrf";

fn refused(why: &str) -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        format!("This form was refused: {why}. Go back, reload the page and send it again."),
    )
}

/// Checks that a request comes from a page of ours: `Sec-Fetch-Site` (when sent) is
/// `same-origin`, and `Origin` (when sent) is the origin of the `Host` it was sent to.
pub fn check_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err(refused("it was sent from another site"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if host.is_empty() || authority != Some(host) {
            return Err(refused("it was sent from another origin"));
        }
    }
    Ok(())
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a POST whose body is not a url-encoded form: its origin, and the token it carries
/// against the session's.
pub fn check_request(headers: &HeaderMap, who: &SignedIn, token: &str) -> Result<(), PageError> {
    check_origin(headers)?;
    if !same_token(&who.csrf, token) {
        return Err(refused("its security token is missing or out of date"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct TokenOnly {
    csrf: Option<String>,
}

/// A url-encoded form of a signed-in person, checked against CSRF. `T` sees the whole form,
/// `csrf` field included (so it must not deny unknown fields). The handler may take
/// [`SignedIn`] too (before this), at no extra cost.
#[derive(Debug)]
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let who = SignedIn::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token: TokenOnly = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| PageError::bad_request("The form could not be read.").into_response())?;
        check_request(&headers, &who, token.csrf.as_deref().unwrap_or(""))
            .map_err(IntoResponse::into_response)?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            PageError::bad_request(format!("The form could not be read: {e}")).into_response()
        })?;
        Ok(CsrfForm(form))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_our_own_origin_may_post() {
        let ok = [
            ("host", "otter.example:8080"),
            ("origin", "https://otter.example:8080"),
        ];
        assert!(check_origin(&headers(&ok)).is_ok());
        assert!(check_origin(&headers(&[("host", "a")])).is_ok());
        for bad in [
            headers(&[
                ("host", "otter.example"),
                ("origin", "https://evil.example"),
            ]),
            headers(&[("host", "otter.example"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:1"), ("origin", "http://127.0.0.1:2")]),
            headers(&[("host", "a"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "a"), ("sec-fetch-site", "same-site")]),
        ] {
            assert!(check_origin(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
    }
}
