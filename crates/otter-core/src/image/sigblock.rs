//! Secure Boot V2 signature sectors (RSA-3072-PSS, ECDSA P-256 and P-384 blocks) and the older
//! ESP32-only V1 ECDSA signature, found after an ESP-IDF image.
//!
//! Otter does not need these to trust a release (its own manifest signature does that), but a
//! device with Secure Boot or `SECURE_SIGNED_APPS_NO_SECURE_BOOT` checks them, so `otter inspect`
//! shows them and the parser makes sure a block present in the file is intact and signs these
//! very bytes: a block that signs other bytes would only fail later, on the device.

use super::reader::slice;
use super::ImageError;
use sha2::{Digest, Sha256, Sha384};

/// The size of a Secure Boot V2 signature sector.
pub const SIGNATURE_SECTOR_LEN: usize = 4096;
pub(super) const BLOCK_LEN: usize = 1216;
pub(super) const BLOCKS_PER_SECTOR: usize = 3;
pub(super) const BLOCK_MAGIC: u8 = 0xE7;
pub(super) const CRC_OFFSET: usize = 1196;
/// The SBv1 ECDSA signature: u32 version (0) and r||s.
const V1_SIGNATURE_LEN: usize = 68;

/// The signature scheme of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// Secure Boot V2, RSA-3072 with PSS.
    Rsa3072Pss,
    /// Secure Boot V2, ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
    /// Secure Boot V2, ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// The ESP32-only Secure Boot V1 ECDSA signature (key compiled into the bootloader).
    EcdsaV1,
}

impl SignatureScheme {
    /// The name `espsecure` users know.
    pub fn name(self) -> &'static str {
        match self {
            SignatureScheme::Rsa3072Pss => "sbv2-rsa3072",
            SignatureScheme::EcdsaP256 => "sbv2-ecdsa-p256",
            SignatureScheme::EcdsaP384 => "sbv2-ecdsa-p384",
            SignatureScheme::EcdsaV1 => "sbv1-ecdsa-p256",
        }
    }
}

/// One signature block found after the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBlock {
    /// The scheme.
    pub scheme: SignatureScheme,
    /// File offset of the block.
    pub offset: usize,
    /// The digest of the public key as burnt into eFuse (`espsecure digest-sbv2-public-key`);
    /// `None` for V1, whose key is not in the block.
    pub key_digest: Option<[u8; 32]>,
}

/// Reads the Secure Boot V2 sector at `sector_at` (blocks failing magic are absent, as on the
/// device). `signed` is everything before the sector: what the blocks must sign.
pub(super) fn parse_v2_sector(
    file: &[u8],
    sector_at: usize,
) -> Result<Vec<SignatureBlock>, ImageError> {
    let sector = slice(file, sector_at, SIGNATURE_SECTOR_LEN, "signature sector")?;
    let signed = &file[..sector_at];
    let mut blocks = Vec::new();
    for index in 0..BLOCKS_PER_SECTOR {
        let block = &sector[index * BLOCK_LEN..(index + 1) * BLOCK_LEN];
        let offset = sector_at + index * BLOCK_LEN;
        if block[0] != BLOCK_MAGIC {
            // ESP-IDF stops at the first absent block.
            break;
        }
        let bad = |why: String| ImageError::SignatureBlock { index, offset, why };
        let stored_crc = u32::from_le_bytes(
            block[CRC_OFFSET..CRC_OFFSET + 4]
                .try_into()
                .unwrap_or_default(),
        );
        let crc = crc32fast::hash(&block[..CRC_OFFSET]);
        if crc != stored_crc {
            return Err(bad(format!(
                "CRC32 is {stored_crc:#010x} but the block gives {crc:#010x} (the block is corrupt)"
            )));
        }
        let (scheme, digest_ok, key) = match (block[1], block[2]) {
            (0x02, _) => (
                SignatureScheme::Rsa3072Pss,
                block[4..36] == Sha256::digest(signed)[..],
                &block[36..812],
            ),
            (0x03, 0x00) => (
                SignatureScheme::EcdsaP256,
                block[4..36] == Sha256::digest(signed)[..],
                &block[36..101],
            ),
            (0x03, 0x01) => (
                SignatureScheme::EcdsaP384,
                block[4..52] == Sha384::digest(signed)[..],
                &block[52..149],
            ),
            (version, sha) => {
                return Err(bad(format!(
                    "unknown block version {version:#04x} with SHA version {sha:#04x}"
                )))
            }
        };
        if !digest_ok {
            return Err(bad(format!(
                "the {} block signs different bytes than the {sector_at} bytes before it (the image was changed after signing)",
                scheme.name()
            )));
        }
        blocks.push(SignatureBlock {
            scheme,
            offset,
            key_digest: Some(Sha256::digest(key).into()),
        });
    }
    if blocks.is_empty() {
        return Err(ImageError::TrailingData {
            offset: sector_at,
            len: file.len() - sector_at,
        });
    }
    Ok(blocks)
}

/// If `rest` (the bytes after the image at `offset`) is exactly a V1 ECDSA signature, returns it.
pub(super) fn v1_signature(rest: &[u8], offset: usize) -> Option<SignatureBlock> {
    (rest.len() == V1_SIGNATURE_LEN && rest[..4] == [0, 0, 0, 0]).then_some(SignatureBlock {
        scheme: SignatureScheme::EcdsaV1,
        offset,
        key_digest: None,
    })
}
