//! Where a device's `download_url` points (issue 9, `download_redirect`): at otterd itself
//! (`off`, the default), at the object store with a presigned URL (`presigned`), or at a CDN in
//! front of the bucket (a base URL; the image is `<base>/images/<sha256>`). The device verifies
//! the signed SHA-256 of what it downloads either way; what otterd gives up when it no longer
//! serves images is in docs/security.md.
//!
//! A device gets a URL off otterd only when its check-in says it follows one that long
//! (`download_url_max`, docs/protocol.md); any other device, and any URL longer than it
//! declared, gets otterd's own path. Otter's C agent declares what its URL buffer holds: CDN
//! URLs fit it, presigned URLs (several hundred bytes) do not.

use std::time::Duration;

use crate::blob::BlobError;
use crate::AppState;

/// The `download_url` of a release's image for a device that follows absolute URLs of at most
/// `url_max` bytes (0: none; only a path on otterd).
pub async fn image_url(
    state: &AppState,
    release_id: &str,
    sha256_hex: &str,
    url_max: usize,
) -> Result<String, BlobError> {
    let own = || format!("/device/v1/releases/{release_id}/image");
    let elsewhere = match state.settings.download_redirect.as_str() {
        _ if url_max == 0 => None,
        "off" => None,
        "presigned" => {
            let ttl = Duration::from_secs(state.settings.download_presign_ttl_s);
            // Settings::validate refuses `presigned` without S3; a local store serves itself.
            state.blobs.presigned_image_url(sha256_hex, ttl).await?
        }
        base => Some(format!(
            "{}/images/{sha256_hex}",
            base.trim_end_matches('/')
        )),
    };
    Ok(match elsewhere {
        Some(url) if url.len() <= url_max => url,
        Some(url) => {
            metrics::counter!("otter_download_redirects_too_long_total").increment(1);
            tracing::debug!(
                len = url.len(),
                url_max,
                "download URL longer than the device follows; it downloads from otterd"
            );
            own()
        }
        None => own(),
    })
}
