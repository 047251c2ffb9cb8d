//! Where a device's `download_url` points (issue 9, `download_redirect`): at otterd itself
//! (`off`, the default), at the object store with a presigned URL (`presigned`), or at a CDN in
//! front of the bucket (a base URL; the image is `<base>/images/<sha256>`). The device verifies
//! the signed SHA-256 of what it downloads either way; what otterd gives up when it no longer
//! serves images is in docs/security.md.

use std::time::Duration;

use crate::blob::BlobError;
use crate::AppState;

/// The `download_url` of a release's image for a device.
pub async fn image_url(
    state: &AppState,
    release_id: &str,
    sha256_hex: &str,
) -> Result<String, BlobError> {
    let own = || format!("/device/v1/releases/{release_id}/image");
    match state.settings.download_redirect.as_str() {
        "off" => Ok(own()),
        "presigned" => {
            let ttl = Duration::from_secs(state.settings.download_presign_ttl_s);
            Ok(state
                .blobs
                .presigned_image_url(sha256_hex, ttl)
                .await?
                // Settings::validate refuses `presigned` without S3; a local store serves itself.
                .unwrap_or_else(own))
        }
        base => Ok(format!(
            "{}/images/{sha256_hex}",
            base.trim_end_matches('/')
        )),
    }
}
