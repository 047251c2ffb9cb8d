//! Signed image formats that devices check themselves, built offline where the key lives:
//!
//! - the ESP-IDF Secure Boot V2 signature sector (RSA-3072-PSS or ECDSA P-256 blocks) appended
//!   after the image padded to 4 KiB, as `espsecure sign-data --version 2` writes it;
//! - the ESP8266 Arduino signed format: the binary, an RSA PKCS#1 v1.5 SHA-256 signature of it,
//!   and the signature's length as a little-endian u32, as the core's `signing.py` writes it;
//! - the arduino-esp32 (3.3) signed format: the image, then a 512-byte area with an RSA-PSS or
//!   ECDSA P-256 signature and zeros, as the core's `bin_signing.py` writes it.
//!
//! The layouts are described byte by byte in `docs/image-formats.md`. No I/O here; randomness
//! (ECDSA nonces come from RFC 6979, PSS salts from the OS) only.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2::{Digest, Sha256};

use super::sigblock::{BLOCKS_PER_SECTOR, BLOCK_LEN, BLOCK_MAGIC, CRC_OFFSET};
use super::{parse, ImageFormat, SIGNATURE_SECTOR_LEN};

/// The key types `otter keygen --type` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256: Otter release keys, Secure Boot V2 ECDSA.
    P256,
    /// RSA-2048: the ESP8266 Arduino signed format.
    Rsa2048,
    /// RSA-3072: Secure Boot V2 RSA-PSS.
    Rsa3072,
}

impl KeyType {
    /// The RSA modulus size in bits, if RSA.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::P256 => None,
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
        }
    }
}

/// Why an image could not be signed in a device-checked format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageSignError {
    /// The key file is not a key this module can use.
    #[error("not a P-256 or RSA private key in PEM (PKCS#8 \"BEGIN PRIVATE KEY\", SEC1 \"BEGIN EC PRIVATE KEY\" or PKCS#1 \"BEGIN RSA PRIVATE KEY\"); make one with `otter keygen --type p256|rsa3072|rsa2048` or `espsecure generate-signing-key --version 2 --scheme ecdsa256|rsa3072`")]
    BadKey,
    /// The key is usable, but not for this format.
    #[error("{0}")]
    WrongKey(String),
    /// The image is not one this format applies to.
    #[error("{0}")]
    WrongImage(String),
}

/// A private key for device-checked image signatures. Its `Debug` never prints the secret.
pub enum ImageKey {
    /// ECDSA P-256.
    P256(p256::ecdsa::SigningKey),
    /// RSA (any size; each format checks the size it needs).
    Rsa(Box<RsaPrivateKey>),
}

impl std::fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageKey({})", self.describe())
    }
}

/// The PEM block with `label`, if the text has one (OpenSSL may put an "EC PARAMETERS" block
/// before the key).
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

impl ImageKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(kind: KeyType) -> Self {
        match kind.rsa_bits() {
            None => ImageKey::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng)),
            Some(bits) => ImageKey::Rsa(Box::new(
                RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                    .expect("RSA key generation with a valid size cannot fail"),
            )),
        }
    }

    /// Reads a private key: PKCS#8 (P-256 or RSA), SEC1 P-256 or PKCS#1 RSA PEM, which covers
    /// `otter keygen`, `espsecure generate-signing-key` and `openssl genpkey`/`genrsa`.
    pub fn from_pem(text: &str) -> Result<Self, ImageSignError> {
        if let Some(block) = pem_block(text, "PRIVATE KEY") {
            if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(block) {
                return Ok(ImageKey::P256(k));
            }
            if let Ok(k) = RsaPrivateKey::from_pkcs8_pem(block) {
                return Ok(ImageKey::Rsa(Box::new(k)));
            }
        }
        if let Some(block) = pem_block(text, "EC PRIVATE KEY") {
            if let Ok(k) = p256::SecretKey::from_sec1_pem(block) {
                return Ok(ImageKey::P256(k.into()));
            }
        }
        if let Some(block) = pem_block(text, "RSA PRIVATE KEY") {
            if let Ok(k) = RsaPrivateKey::from_pkcs1_pem(block) {
                return Ok(ImageKey::Rsa(Box::new(k)));
            }
        }
        Err(ImageSignError::BadKey)
    }

    /// The key as PKCS#8 PEM. The caller must store it with care (mode 0600).
    pub fn to_pem(&self) -> String {
        match self {
            ImageKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF).map(|s| s.to_string()),
            ImageKey::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF).map(|s| s.to_string()),
        }
        .expect("encoding a valid key cannot fail")
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> String {
        match self {
            ImageKey::P256(k) => k.verifying_key().to_public_key_pem(LineEnding::LF),
            ImageKey::Rsa(k) => k.to_public_key().to_public_key_pem(LineEnding::LF),
        }
        .expect("encoding a valid key cannot fail")
    }

    /// "ECDSA P-256" or "RSA-3072".
    pub fn describe(&self) -> String {
        match self {
            ImageKey::P256(_) => "ECDSA P-256".into(),
            ImageKey::Rsa(k) => format!("RSA-{}", k.size() * 8),
        }
    }

    /// The Secure Boot V2 key digest (what goes into eFuse, `espsecure digest-sbv2-public-key`),
    /// for the key types Secure Boot V2 takes.
    pub fn sbv2_key_digest(&self) -> Option<[u8; 32]> {
        let mut block = [0u8; BLOCK_LEN];
        let key = sbv2_key_part(self, &mut block).ok()?;
        Some(Sha256::digest(&block[key]).into())
    }
}

/// Writes the public-key part of a Secure Boot V2 block for `key` into `block` (version byte
/// included) and returns its range, the bytes the eFuse key digest covers.
fn sbv2_key_part(
    key: &ImageKey,
    block: &mut [u8; BLOCK_LEN],
) -> Result<std::ops::Range<usize>, ImageSignError> {
    match key {
        ImageKey::Rsa(k) if k.size() == 384 => {
            block[1] = 0x02;
            let n = k.n();
            let e = k.e().to_bytes_le();
            if e.len() > 4 {
                return Err(ImageSignError::WrongKey(
                    "the RSA public exponent does not fit in 32 bits; Secure Boot V2 needs e = 65537".into(),
                ));
            }
            put_le(&mut block[36..420], n);
            block[420..420 + e.len()].copy_from_slice(&e);
            let rinv = (BigUint::from(1u8) << 6144usize) % n;
            put_le(&mut block[424..808], &rinv);
            let n0 = n.to_bytes_le().iter().take(4).rev().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
            block[808..812].copy_from_slice(&inverse_mod_2_32(n0).wrapping_neg().to_le_bytes());
            Ok(36..812)
        }
        ImageKey::Rsa(k) => Err(ImageSignError::WrongKey(format!(
            "Secure Boot V2 takes RSA-3072 or ECDSA P-256 keys; this is RSA-{} (RSA-2048 keys are for --esp8266-signed)",
            k.size() * 8
        ))),
        ImageKey::P256(k) => {
            block[1] = 0x03;
            block[2] = 0x00; // SHA-256
            block[36] = 2; // curve id: NIST P-256
            let point = k.verifying_key().to_encoded_point(false);
            let xy = &point.as_bytes()[1..65];
            put_reversed(&mut block[37..69], &xy[..32]);
            put_reversed(&mut block[69..101], &xy[32..]);
            Ok(36..101)
        }
    }
}

/// `x` such that `a * x == 1 (mod 2^32)`, for odd `a` (Newton's iteration doubles the correct
/// bits each step: 5 steps from 3 correct bits give more than 32).
fn inverse_mod_2_32(a: u32) -> u32 {
    let mut x = a; // correct to 3 bits for odd a
    for _ in 0..5 {
        x = x.wrapping_mul(2u32.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

fn put_le(dst: &mut [u8], value: &BigUint) {
    let bytes = value.to_bytes_le();
    dst.fill(0);
    dst[..bytes.len()].copy_from_slice(&bytes);
}

fn put_reversed(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
        *d = *s;
    }
}

/// One Secure Boot V2 signature block for `digest` (SHA-256 of the signed data).
pub fn sbv2_block(key: &ImageKey, digest: &[u8; 32]) -> Result<[u8; BLOCK_LEN], ImageSignError> {
    let mut block = [0u8; BLOCK_LEN];
    block[0] = BLOCK_MAGIC;
    sbv2_key_part(key, &mut block)?;
    block[4..36].copy_from_slice(digest);
    match key {
        ImageKey::Rsa(k) => {
            let sig = k
                .sign_with_rng(
                    &mut rand_core::OsRng,
                    Pss::new_with_salt::<Sha256>(32),
                    digest,
                )
                .map_err(|e| ImageSignError::WrongKey(format!("RSA-PSS signing failed: {e}")))?;
            put_reversed(&mut block[812..1196], &sig);
        }
        ImageKey::P256(k) => {
            let sig: p256::ecdsa::Signature = k
                .sign_prehash(digest)
                .map_err(|e| ImageSignError::WrongKey(format!("ECDSA signing failed: {e}")))?;
            let rs = sig.to_bytes();
            put_reversed(&mut block[101..133], &rs[..32]);
            put_reversed(&mut block[133..165], &rs[32..]);
        }
    }
    let crc = crc32fast::hash(&block[..CRC_OFFSET]);
    block[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(block)
}

/// Signs an ESP-IDF application image for Secure Boot V2 (or `SECURE_SIGNED_APPS_NO_SECURE_BOOT`):
/// the image (without any trailing fill) padded with 0xFF to a multiple of 4096 bytes, then a
/// 4096-byte signature sector holding one block per key (at most 3, all of one scheme) and 0xFF
/// after them. Every block signs the SHA-256 of the padded image.
pub fn sign_secure_boot_v2(file: &[u8], keys: &[&ImageKey]) -> Result<Vec<u8>, ImageSignError> {
    let info = parse(file)
        .map_err(|e| ImageSignError::WrongImage(format!("not a valid firmware image: {e}")))?;
    if info.format != ImageFormat::EspIdf {
        return Err(ImageSignError::WrongImage(
            "Secure Boot V2 signs ESP-IDF images (ESP32 family); for ESP8266 use --esp8266-signed"
                .into(),
        ));
    }
    if !info.signatures.is_empty() {
        return Err(ImageSignError::WrongImage(format!(
            "the image is signed already ({} block(s) after it); sign the unsigned build output",
            info.signatures.len()
        )));
    }
    if keys.is_empty() || keys.len() > BLOCKS_PER_SECTOR {
        return Err(ImageSignError::WrongKey(format!(
            "a Secure Boot V2 signature sector holds 1 to {BLOCKS_PER_SECTOR} blocks; got {} keys",
            keys.len()
        )));
    }
    let rsa = keys
        .iter()
        .filter(|k| matches!(k, ImageKey::Rsa(_)))
        .count();
    if rsa != 0 && rsa != keys.len() {
        return Err(ImageSignError::WrongKey(
            "all keys of one signature sector must use the same scheme (a device checks only the scheme it was built for)".into(),
        ));
    }
    let signed_len = info.image_len.next_multiple_of(SIGNATURE_SECTOR_LEN);
    let mut out = Vec::with_capacity(signed_len + SIGNATURE_SECTOR_LEN);
    out.extend_from_slice(&file[..info.image_len]);
    out.resize(signed_len, 0xFF);
    let digest: [u8; 32] = Sha256::digest(&out).into();
    let mut sector = vec![0xFFu8; SIGNATURE_SECTOR_LEN];
    for (i, key) in keys.iter().enumerate() {
        let block = sbv2_block(key, &digest)?;
        sector[i * BLOCK_LEN..(i + 1) * BLOCK_LEN].copy_from_slice(&block);
    }
    out.extend_from_slice(&sector);
    Ok(out)
}

/// Signs an ESP8266 binary (or its `.bin.gz`) in the Arduino core's signed format: the binary
/// unchanged, the RSA PKCS#1 v1.5 signature over its SHA-256 (as long as the modulus), then that
/// length as a little-endian u32.
pub fn sign_esp8266(file: &[u8], key: &ImageKey) -> Result<Vec<u8>, ImageSignError> {
    let ImageKey::Rsa(k) = key else {
        return Err(ImageSignError::WrongKey(
            "the ESP8266 Arduino signed format takes an RSA key (RSA-2048, `otter keygen --type rsa2048`)".into(),
        ));
    };
    let gzip = file.starts_with(&[0x1F, 0x8B]);
    if !gzip {
        let info = parse(file)
            .map_err(|e| ImageSignError::WrongImage(format!("not a valid firmware image: {e}")))?;
        if info.format == ImageFormat::EspIdf {
            return Err(ImageSignError::WrongImage(
                "this is an ESP-IDF (ESP32 family) image; --esp8266-signed is for ESP8266 binaries (use --secure-boot-v2)".into(),
            ));
        }
    }
    let digest = Sha256::digest(file);
    let sig = k
        .sign_with_rng(
            &mut rand_core::OsRng,
            Pkcs1v15Sign::new::<Sha256>(),
            &digest,
        )
        .map_err(|e| ImageSignError::WrongKey(format!("RSA signing failed: {e}")))?;
    let len = u32::try_from(sig.len()).expect("an RSA signature is short");
    let mut out = Vec::with_capacity(file.len() + sig.len() + 4);
    out.extend_from_slice(file);
    out.extend_from_slice(&sig);
    out.extend_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// The signature area of the arduino-esp32 signed format: the signature, then zeros.
pub const ESP32_ARDUINO_SIGNATURE_AREA: usize = 512;

/// Signs an ESP-IDF (ESP32-family) Arduino image in arduino-esp32's signed format (`Update` with
/// `UPDATE_SIGN`, from core 3.3): the image unchanged, then a 512-byte area holding the signature
/// over the image's SHA-256 followed by zeros; no length field. RSA keys sign with RSASSA-PSS,
/// MGF1-SHA-256, salt length = modulus bytes - 32 - 2 (the largest, as the core's
/// `bin_signing.py` and its mbedTLS verifier use); P-256 keys with ECDSA, DER-encoded.
pub fn sign_esp32_arduino(file: &[u8], key: &ImageKey) -> Result<Vec<u8>, ImageSignError> {
    let info = parse(file)
        .map_err(|e| ImageSignError::WrongImage(format!("not a valid firmware image: {e}")))?;
    if info.format != ImageFormat::EspIdf {
        return Err(ImageSignError::WrongImage(
            "this is an ESP8266 image; --esp32-arduino-signed is for ESP32-family images (use --esp8266-signed)".into(),
        ));
    }
    let digest = Sha256::digest(file);
    let sig = match key {
        ImageKey::Rsa(k) => {
            let salt = k.size() - 32 - 2;
            k.sign_with_rng(
                &mut rand_core::OsRng,
                Pss::new_with_salt::<Sha256>(salt),
                &digest,
            )
            .map_err(|e| ImageSignError::WrongKey(format!("RSA-PSS signing failed: {e}")))?
        }
        ImageKey::P256(k) => {
            let sig: p256::ecdsa::Signature = k
                .sign_prehash(&digest)
                .map_err(|e| ImageSignError::WrongKey(format!("ECDSA signing failed: {e}")))?;
            sig.to_der().as_bytes().to_vec()
        }
    };
    if sig.len() > ESP32_ARDUINO_SIGNATURE_AREA {
        return Err(ImageSignError::WrongKey(format!(
            "a {} signature has {} bytes; the format holds at most {ESP32_ARDUINO_SIGNATURE_AREA} (RSA up to 4096 bits)",
            key.describe(),
            sig.len()
        )));
    }
    let mut out = Vec::with_capacity(file.len() + ESP32_ARDUINO_SIGNATURE_AREA);
    out.extend_from_slice(file);
    out.extend_from_slice(&sig);
    out.resize(file.len() + ESP32_ARDUINO_SIGNATURE_AREA, 0);
    Ok(out)
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
