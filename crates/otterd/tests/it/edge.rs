//! What every answer carries (issue 8, items 10, 16, 19): the JSON error body for every error the
//! framework makes, `nosniff` everywhere, `no-store` on answers with secrets, bounded echoes of
//! client input, and a case-insensitive `Bearer` scheme. Raw requests over real sockets.

use std::time::Duration;

use otter_core::Chip;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// A raw HTTP/1.1 exchange: returns the status, the head (lowercase) and the body.
pub async fn raw(url: &str, request: &[u8]) -> (u16, String, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read everything (a head over its limit).
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn request(method: &str, target: &[u8], token: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(
        format!(
            " HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    r.extend_from_slice(body);
    r
}

fn assert_json_error(what: &str, status: u16, head: &str, body: &str, want: u16) -> Value {
    assert_eq!(status, want, "{what}: {head}\n{body}");
    assert!(
        head.contains("content-type: application/json"),
        "{what}: not JSON: {head}\n{body}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert!(
        v["error"].is_string() && v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert!(
        head.contains("x-content-type-options: nosniff"),
        "{what}: {head}"
    );
    v
}

#[tokio::test]
async fn every_error_the_framework_makes_is_the_json_error_body() {
    let srv = spawn().await;
    let t = srv.admin.as_str();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "bad query string",
            request("GET", b"/api/v1/releases?product=a&product=b", t, "", b""),
            400,
        ),
        (
            "bad query value",
            request(
                "POST",
                b"/api/v1/products/thermo/releases?dry_run=maybe",
                t,
                "",
                b"",
            ),
            400,
        ),
        (
            "bad UTF-8 in a path",
            request("GET", b"/api/v1/releases/%FF%FE", t, "", b""),
            400,
        ),
        ("unknown route", request("GET", b"/nope", t, "", b""), 404),
        (
            "method the route lacks",
            request("DELETE", b"/api/v1/whoami", t, "", b""),
            405,
        ),
        (
            "body over the limit",
            request(
                "POST",
                b"/api/v1/tokens",
                t,
                "content-type: application/json\r\n",
                &vec![b' '; 200 * 1024],
            ),
            413,
        ),
        (
            "too many header fields",
            request(
                "GET",
                b"/api/v1/whoami",
                t,
                &(0..150)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>(),
                b"",
            ),
            431,
        ),
    ];
    // What hyper refuses before the router sees it: not HTTP, a head or a target too long.
    let mut huge_head = request("GET", b"/api/v1/whoami", t, "", b"");
    huge_head.truncate(huge_head.len() - 2);
    huge_head.extend_from_slice(format!("x-big: {}\r\n\r\n", "a".repeat(450 * 1024)).as_bytes());
    let mut long_target = b"/".to_vec();
    long_target.extend(std::iter::repeat_n(b'a', 70 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = cases
        .into_iter()
        .chain([
            ("not HTTP", b"GARBAGE\r\n\r\n".to_vec(), 400),
            ("head over hyper's buffer", huge_head, 431),
            (
                "target too long",
                request("GET", &long_target, t, "", b""),
                414,
            ),
        ])
        .collect();
    for (what, req, want) in cases {
        let (status, head, body) = raw(&srv.url, &req).await;
        assert_json_error(what, status, &head, &body, want);
    }
}

#[tokio::test]
async fn answers_with_secrets_are_not_stored_and_none_is_sniffed() {
    let srv = spawn().await;
    let check = |what: &str, r: &reqwest::Response| {
        let h = r.headers();
        assert_eq!(
            h.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what}"
        );
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
    };
    let r = srv
        .req(Method::POST, "/api/v1/products", Some(&srv.admin))
        .json(&json!({"name": "thermo", "chip": "esp32c3"}))
        .send()
        .await
        .unwrap();
    check("product create", &r);
    let secret = r.json::<Value>().await.unwrap()["enrollment_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let r = srv
        .req(
            Method::POST,
            "/api/v1/products/thermo/enrollment-secret",
            Some(&srv.admin),
        )
        .send()
        .await
        .unwrap();
    check("secret rotation", &r);
    let secret2 = r.json::<Value>().await.unwrap()["enrollment_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(secret, secret2);
    let r = srv
        .req(Method::POST, "/api/v1/tokens", Some(&srv.admin))
        .json(&json!({"name": "ci", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    check("token create", &r);
    let r = srv
        .req(Method::POST, "/device/v1/enroll", None)
        .json(&json!({"product": "thermo", "enrollment_secret": secret2, "hardware_id": "aa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    check("device enrolment", &r);
    // Every other answer is not sniffed either, errors and operational endpoints included.
    for path in ["/healthz", "/metrics", "/openapi.json", "/nope"] {
        let r = srv.req(Method::GET, path, None).send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn error_messages_echo_a_bounded_slice_of_the_input() {
    let srv = spawn().await;
    let long = "x".repeat(20_000);
    // Unauthenticated: a JSON body whose bad value is huge.
    let (s, v) = srv
        .call(
            Method::POST,
            "/device/v1/enroll",
            None,
            Some(json!({"product": 1, "enrollment_secret": long, "hardware_id": long})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s2, v2) = srv
        .call(
            Method::POST,
            "/device/v1/enroll",
            None,
            Some(json!({"product": long, "enrollment_secret": 1, "hardware_id": "a"})),
        )
        .await;
    assert_eq!(s2, 400);
    // Authenticated: a huge id in the path.
    let (s3, v3) = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", "y".repeat(8000)),
            Some(&srv.admin),
            None,
        )
        .await;
    assert_eq!(s3, 404);
    for v in [v, v2, v3] {
        let m = v["message"].as_str().unwrap();
        assert!(m.chars().count() <= 320, "{} chars: {m:.200}", m.len());
        assert!(
            !m.contains(&"x".repeat(65)) && !m.contains(&"y".repeat(65)),
            "more than 64 characters of one value: {m:.200}"
        );
    }
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_on_management_and_device_routes() {
    let srv = spawn().await;
    let (_, secret) = srv.product("thermo", Chip::Esp32C3).await;
    let (_, device) = srv.enroll("thermo", &secret, "aa:bb").await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = srv
            .req(Method::GET, "/api/v1/whoami", None)
            .header("authorization", format!("{scheme} {}", srv.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme} on a management route");
        let r = srv
            .req(Method::GET, "/device/v1/releases/rel_none/image", None)
            .header("authorization", format!("{scheme} {device}"))
            .send()
            .await
            .unwrap();
        // Authenticated: the release is unknown (404), not the credentials (401).
        assert_eq!(r.status(), 404, "{scheme} on a device route");
    }
    let r = srv
        .req(Method::GET, "/api/v1/whoami", None)
        .header("authorization", format!("Basic {}", srv.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "another scheme is still refused");
}
