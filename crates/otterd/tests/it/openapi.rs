//! The OpenAPI document is served, and the checked-in copy is current.

use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn openapi_is_served_and_checked_in() {
    let srv = spawn().await;
    let (s, served) = srv.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(served["paths"]["/device/v1/checkin"].is_object());
    let generated = otterd::openapi::document_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("OTTER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        checked_in.trim_end(),
        generated.trim_end(),
        "docs/openapi.json is stale: run OTTER_UPDATE_OPENAPI=1 cargo test -p otterd openapi"
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let srv = spawn().await;
    let (s, v) = srv.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    srv.call(Method::GET, "/api/v1/whoami", Some(&srv.admin), None)
        .await;
    let text = srv
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("otter_http_requests_total"), "{text}");
    assert!(!text.contains(&srv.admin));
}
