//! Client-format payloads of a published release (issue 13): the bytes `otter sign` makes for
//! stock Arduino update clients (`--esp8266-signed`, `--esp32-arduino-signed`), attached to the
//! release they sign and served exactly to those clients (`routes::arduino`). The key never
//! reaches the server; what it checks before storing anything: the bytes begin with exactly the
//! release's image, the trailer after it has the kind's form and bound, and the kind fits the
//! product's chip. The blob is stored content-addressed like an image.

use md5::{Digest, Md5};
use sha2::Sha256;

use crate::blob::BlobError;
use crate::db::Sha256 as Digest256;
use crate::db::{DbError, PayloadKind, PayloadRow, ReleaseRow};
use crate::AppState;

/// The longest RSA signature the ESP8266 Arduino core's format holds here (RSA-4096).
pub const ESP8266_SIGNATURE_MAX: usize = 512;
/// The signature area of arduino-esp32's signed format (`otter_core::image::sign`).
pub const ESP32_ARDUINO_AREA: usize = otter_core::image::sign::ESP32_ARDUINO_SIGNATURE_AREA;

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Not a payload of this release (4xx, nothing stored).
    #[error("{0}")]
    Refused(String),
    /// The release has a payload of this kind already.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] BlobError),
}

/// The kinds a client can attach, and the chip family each is for.
pub fn attachable(kind: PayloadKind, product_chip: &str) -> Result<(), String> {
    let esp8266 = product_chip == "esp8266";
    match kind {
        PayloadKind::Full => Err(
            "the full image is the release itself; attach esp8266-signed or esp32-arduino-signed"
                .into(),
        ),
        PayloadKind::Esp8266Signed if !esp8266 => Err(format!(
            "esp8266-signed is the ESP8266 Arduino core's format; this product's chip is {product_chip} (use esp32-arduino-signed)"
        )),
        PayloadKind::Esp32ArduinoSigned if esp8266 => Err(
            "esp32-arduino-signed is arduino-esp32's format; this product's chip is esp8266 (use esp8266-signed)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Checks the bytes after the image: their form for the kind.
pub fn check_trailer(kind: PayloadKind, trailer: &[u8]) -> Result<(), String> {
    match kind {
        PayloadKind::Full => Err("the full image has no trailer".into()),
        PayloadKind::Esp8266Signed => {
            let Some(len_at) = trailer.len().checked_sub(4) else {
                return Err(format!(
                    "the ESP8266 signed format ends with the signature and its 4-byte length; after the image there are only {} bytes",
                    trailer.len()
                ));
            };
            let declared =
                u32::from_le_bytes(trailer[len_at..].try_into().expect("4 bytes")) as usize;
            if declared == 0 || declared > ESP8266_SIGNATURE_MAX {
                return Err(format!(
                    "the signature length field says {declared}; an RSA signature here has 1 to {ESP8266_SIGNATURE_MAX} bytes"
                ));
            }
            if declared != len_at {
                return Err(format!(
                    "the signature length field says {declared}, but {len_at} bytes lie between the image and it (a truncated or padded file?)"
                ));
            }
            Ok(())
        }
        PayloadKind::Esp32ArduinoSigned => {
            if trailer.len() != ESP32_ARDUINO_AREA {
                return Err(format!(
                    "the arduino-esp32 signed format has a {ESP32_ARDUINO_AREA}-byte signature area after the image; there are {} bytes",
                    trailer.len()
                ));
            }
            if trailer.iter().all(|b| *b == 0) {
                return Err("the signature area after the image is all zeros: not signed".into());
            }
            Ok(())
        }
    }
}

/// Checks `bytes` against the release and stores them as its payload of `kind`. Nothing is
/// stored when a check fails.
pub async fn attach(
    state: &AppState,
    release: &ReleaseRow,
    product_chip: &str,
    kind: PayloadKind,
    bytes: &[u8],
) -> Result<PayloadRow, AttachError> {
    attachable(kind, product_chip).map_err(AttachError::Refused)?;
    let size = usize::try_from(release.size).unwrap_or(usize::MAX);
    if bytes.len() <= size {
        return Err(AttachError::Refused(format!(
            "{} bytes: not the release's image ({} bytes) followed by a signature",
            bytes.len(),
            release.size
        )));
    }
    let (image, trailer) = bytes.split_at(size);
    if Digest256::from_digest(Sha256::digest(image).into()) != release.sha256 {
        return Err(AttachError::Refused(format!(
            "the first {} bytes are not release {}'s image (their SHA-256 differs); sign the image of this release",
            release.size, release.id
        )));
    }
    check_trailer(kind, trailer).map_err(AttachError::Refused)?;
    let existing = state.db.release_payloads(&release.id).await?;
    if existing.iter().any(|p| p.kind == kind) {
        return Err(AttachError::Conflict(format!(
            "release {} has a {} payload already",
            release.id,
            kind.as_str()
        )));
    }
    let sha = Digest256::from_digest(Sha256::digest(bytes).into());
    let row = PayloadRow {
        release_id: release.id.clone(),
        position: 0,
        kind,
        size: bytes.len() as i64,
        sha256: sha.clone(),
        md5: Some(hex::encode(Md5::digest(bytes))),
    };
    let mut staged = state.blobs.stage();
    if let Err(e) = staged.write(bytes).await {
        staged.abort().await;
        return Err(e.into());
    }
    let staged = staged.complete().await?;
    // Until the payload row is in, the blob collector keeps off (crate::blob_gc explains why).
    let _publishing = state.blobs.publishing().await;
    let placed = state.blobs.publish(staged, sha.as_str()).await?;
    let inserted = state.db.add_release_payload(&row).await;
    state.blobs.settle(placed).await?;
    match inserted {
        Ok(()) => {}
        Err(DbError::Conflict(_)) => {
            return Err(AttachError::Conflict(format!(
                "release {} has a {} payload already",
                release.id,
                kind.as_str()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let stored = state.db.release_payloads(&release.id).await?;
    let row = stored
        .into_iter()
        .find(|p| p.kind == kind)
        .ok_or(AttachError::Db(DbError::NotFound))?;
    metrics::counter!("otter_release_payloads_attached_total").increment(1);
    tracing::info!(release = %release.id, kind = kind.as_str(), size = row.size, "payload attached");
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp8266_trailer(sig_len: usize, field: u32) -> Vec<u8> {
        let mut t = vec![0xA5; sig_len];
        t.extend_from_slice(&field.to_le_bytes());
        t
    }

    #[test]
    fn esp8266_trailers_need_a_matching_bounded_length() {
        let k = PayloadKind::Esp8266Signed;
        assert!(check_trailer(k, &esp8266_trailer(256, 256)).is_ok());
        assert!(check_trailer(k, &esp8266_trailer(512, 512)).is_ok());
        assert!(
            check_trailer(k, &esp8266_trailer(250, 256)).is_err(),
            "truncated"
        );
        assert!(
            check_trailer(k, &esp8266_trailer(260, 256)).is_err(),
            "padded"
        );
        assert!(
            check_trailer(k, &esp8266_trailer(0, 0)).is_err(),
            "no signature"
        );
        assert!(
            check_trailer(k, &esp8266_trailer(600, 600)).is_err(),
            "over the bound"
        );
        assert!(
            check_trailer(k, &[1, 0]).is_err(),
            "shorter than the length field"
        );
    }

    #[test]
    fn esp32_trailers_are_one_signed_area() {
        let k = PayloadKind::Esp32ArduinoSigned;
        let mut area = vec![0u8; ESP32_ARDUINO_AREA];
        assert!(check_trailer(k, &area).is_err(), "all zeros: unsigned");
        area[0] = 0x30;
        assert!(check_trailer(k, &area).is_ok());
        assert!(check_trailer(k, &area[..500]).is_err(), "truncated");
        area.push(0);
        assert!(check_trailer(k, &area).is_err(), "longer");
    }

    #[test]
    fn kinds_fit_their_chip_family() {
        assert!(attachable(PayloadKind::Esp8266Signed, "esp8266").is_ok());
        assert!(attachable(PayloadKind::Esp8266Signed, "esp32c3").is_err());
        assert!(attachable(PayloadKind::Esp32ArduinoSigned, "esp32s3").is_ok());
        assert!(attachable(PayloadKind::Esp32ArduinoSigned, "esp8266").is_err());
        assert!(attachable(PayloadKind::Full, "esp32").is_err());
    }
}
