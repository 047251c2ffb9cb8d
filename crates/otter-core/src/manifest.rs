//! The signed release formats: [`Manifest`], [`Envelope`] and [`Bundle`].
//!
//! The byte layouts are specified in `docs/manifest.md`; the C agent parses the same bytes.
//! Each type has exactly one valid encoding: `decode(encode(x)) == x` and
//! `encode(decode(b)) == b` for every accepted `b`.

use std::fmt;

use crate::chip::Chip;
use crate::keys::{KeyId, PrivateKey, PublicKey};

/// Magic of a manifest.
pub const MANIFEST_MAGIC: &[u8; 4] = b"OTMF";
/// Magic of an envelope.
pub const ENVELOPE_MAGIC: &[u8; 4] = b"OTSE";
/// Magic of a bundle (`release.otter`).
pub const BUNDLE_MAGIC: &[u8; 4] = b"OTRB";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Largest image a manifest may describe.
pub const MAX_IMAGE_SIZE: u32 = 64 * 1024 * 1024;
/// Most signatures one envelope may carry.
pub const MAX_SIGNATURES: usize = 8;
/// Length of the fixed part of a manifest, before the product name.
pub const MANIFEST_FIXED_LEN: usize = 96;
/// Longest manifest encoding.
pub const MAX_MANIFEST_LEN: usize = MANIFEST_FIXED_LEN + 2 + 64 + 64;
/// Longest envelope encoding.
pub const MAX_ENVELOPE_LEN: usize = 8 + MAX_MANIFEST_LEN + 72 * MAX_SIGNATURES;
/// Length of a bundle's head, before the envelope.
pub const BUNDLE_HEAD_LEN: usize = 12;

const FLAG_EXPIRES: u8 = 1;
const FLAG_DELTA: u8 = 2;

/// Which part of a signed format was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// The magic bytes.
    Magic,
    /// The format version byte.
    FormatVersion,
    /// The flags byte.
    Flags,
    /// The chip id.
    Chip,
    /// The image size.
    ImageSize,
    /// The expiry time.
    ExpiresAt,
    /// The delta base hash.
    DeltaBase,
    /// The product name.
    Product,
    /// The version string.
    Version,
    /// A length field.
    Length,
    /// The signature list.
    Signatures,
    /// Reserved bytes.
    Reserved,
    /// The image in a bundle.
    Image,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Field::Magic => "magic",
            Field::FormatVersion => "format version",
            Field::Flags => "flags",
            Field::Chip => "chip",
            Field::ImageSize => "image size",
            Field::ExpiresAt => "expires_at",
            Field::DeltaBase => "delta base",
            Field::Product => "product",
            Field::Version => "version",
            Field::Length => "length",
            Field::Signatures => "signatures",
            Field::Reserved => "reserved bytes",
            Field::Image => "image",
        };
        f.write_str(s)
    }
}

/// What was wrong with the field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended early.
    Truncated,
    /// Bytes follow the end of the encoding.
    TrailingBytes(usize),
    /// Not the value the format requires.
    Invalid(String),
    /// A format version this code does not read.
    UnsupportedVersion(u8),
}

/// An error decoding or building a signed format: which field, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {field}: {kind}")]
pub struct FormatError {
    /// Which format (`manifest`, `envelope`, `bundle`).
    pub what: &'static str,
    /// The field.
    pub field: Field,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Truncated => f.write_str("input ends early"),
            ErrorKind::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the end"),
            ErrorKind::Invalid(why) => f.write_str(why),
            ErrorKind::UnsupportedVersion(v) => write!(
                f,
                "format version {v} is not supported (this build reads version {FORMAT_VERSION}); upgrade otter"
            ),
        }
    }
}

fn err(what: &'static str, field: Field, kind: ErrorKind) -> FormatError {
    FormatError { what, field, kind }
}

fn invalid(what: &'static str, field: Field, why: impl Into<String>) -> FormatError {
    err(what, field, ErrorKind::Invalid(why.into()))
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf, pos: 0 }
    }
    fn take(&mut self, n: usize, field: Field) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.pos < n {
            return Err(err(self.what, field, ErrorKind::Truncated));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, field: Field) -> Result<u8, FormatError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: Field) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2, field)?.try_into().unwrap()))
    }
    fn u32(&mut self, field: Field) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }
    fn u64(&mut self, field: Field) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8, field)?.try_into().unwrap()))
    }
    fn arr32(&mut self, field: Field) -> Result<[u8; 32], FormatError> {
        Ok(self.take(32, field)?.try_into().unwrap())
    }
    fn finish(&self) -> Result<(), FormatError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(err(self.what, Field::Length, ErrorKind::TrailingBytes(n))),
        }
    }
}

fn magic(r: &mut Reader<'_>, want: &[u8; 4]) -> Result<(), FormatError> {
    let got = r.take(4, Field::Magic)?;
    if got != want {
        return Err(invalid(
            r.what,
            Field::Magic,
            format!(
                "expected {:?}, found {:02x?}; is this an Otter {} file?",
                std::str::from_utf8(want).unwrap(),
                got,
                r.what
            ),
        ));
    }
    let v = r.u8(Field::FormatVersion)?;
    if v != FORMAT_VERSION {
        return Err(err(
            r.what,
            Field::FormatVersion,
            ErrorKind::UnsupportedVersion(v),
        ));
    }
    Ok(())
}

/// Checks a product name: 1..=64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn check_product_name(name: &str) -> Result<(), String> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_rest = name.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
    });
    if ok_len && ok_first && ok_rest {
        Ok(())
    } else {
        Err(format!(
            "product name {name:?} must be 1 to 64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        ))
    }
}

/// Checks a version string: 1..=64 printable ASCII characters without spaces.
pub fn check_version(version: &str) -> Result<(), String> {
    if (1..=64).contains(&version.len()) && version.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(format!(
            "version {version:?} must be 1 to 64 printable ASCII characters without spaces"
        ))
    }
}

/// The signed facts about one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The product this release belongs to.
    pub product: String,
    /// The chip it runs on.
    pub chip: Chip,
    /// The version, ordered by [`crate::version::Version`].
    pub version: String,
    /// Monotonic anti-downgrade counter: a device refuses a lower one than it holds.
    pub security_counter: u32,
    /// Image size in bytes.
    pub image_size: u32,
    /// SHA-256 of the image.
    pub image_sha256: [u8; 32],
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Optional expiry, Unix seconds.
    pub expires_at: Option<u64>,
    /// For a delta payload: SHA-256 of the base image it applies to.
    pub delta_base_sha256: Option<[u8; 32]>,
}

impl Manifest {
    /// Checks every rule of the format that the type system does not.
    pub fn validate(&self) -> Result<(), FormatError> {
        const W: &str = "manifest";
        check_product_name(&self.product).map_err(|e| invalid(W, Field::Product, e))?;
        check_version(&self.version).map_err(|e| invalid(W, Field::Version, e))?;
        if self.image_size == 0 || self.image_size > MAX_IMAGE_SIZE {
            return Err(invalid(
                W,
                Field::ImageSize,
                format!("{} bytes is outside 1..={MAX_IMAGE_SIZE}", self.image_size),
            ));
        }
        if let Some(exp) = self.expires_at {
            if exp <= self.created_at {
                return Err(invalid(
                    W,
                    Field::ExpiresAt,
                    "expiry must be after the creation time",
                ));
            }
        }
        if self.delta_base_sha256 == Some([0; 32]) {
            return Err(invalid(
                W,
                Field::DeltaBase,
                "an all-zero delta base hash means none",
            ));
        }
        Ok(())
    }

    /// The canonical encoding. Fails only if [`Manifest::validate`] fails.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let mut out = Vec::with_capacity(MAX_MANIFEST_LEN);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.push(FORMAT_VERSION);
        let flags = if self.expires_at.is_some() {
            FLAG_EXPIRES
        } else {
            0
        } | if self.delta_base_sha256.is_some() {
            FLAG_DELTA
        } else {
            0
        };
        out.push(flags);
        out.extend_from_slice(&self.chip.id().to_le_bytes());
        out.extend_from_slice(&self.security_counter.to_le_bytes());
        out.extend_from_slice(&self.image_size.to_le_bytes());
        out.extend_from_slice(&self.created_at.to_le_bytes());
        out.extend_from_slice(&self.expires_at.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.image_sha256);
        out.extend_from_slice(&self.delta_base_sha256.unwrap_or([0; 32]));
        out.push(self.product.len() as u8);
        out.extend_from_slice(self.product.as_bytes());
        out.push(self.version.len() as u8);
        out.extend_from_slice(self.version.as_bytes());
        Ok(out)
    }

    /// Decodes a manifest, refusing anything but the canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        const W: &str = "manifest";
        let mut r = Reader::new(W, bytes);
        magic(&mut r, MANIFEST_MAGIC)?;
        let flags = r.u8(Field::Flags)?;
        if flags & !(FLAG_EXPIRES | FLAG_DELTA) != 0 {
            return Err(invalid(
                W,
                Field::Flags,
                format!("unknown flag bits {flags:#04x}"),
            ));
        }
        let chip_id = r.u16(Field::Chip)?;
        let chip = Chip::from_id(chip_id)
            .ok_or_else(|| invalid(W, Field::Chip, format!("unknown chip id {chip_id:#06x}")))?;
        let security_counter = r.u32(Field::Chip)?;
        let image_size = r.u32(Field::ImageSize)?;
        let created_at = r.u64(Field::ExpiresAt)?;
        let expires_raw = r.u64(Field::ExpiresAt)?;
        let image_sha256 = r.arr32(Field::ImageSize)?;
        let delta_raw = r.arr32(Field::DeltaBase)?;
        let expires_at = if flags & FLAG_EXPIRES != 0 {
            Some(expires_raw)
        } else if expires_raw != 0 {
            return Err(invalid(W, Field::ExpiresAt, "set while its flag is clear"));
        } else {
            None
        };
        let delta_base_sha256 = if flags & FLAG_DELTA != 0 {
            Some(delta_raw)
        } else if delta_raw != [0; 32] {
            return Err(invalid(W, Field::DeltaBase, "set while its flag is clear"));
        } else {
            None
        };
        let product = read_str(&mut r, Field::Product)?;
        let version = read_str(&mut r, Field::Version)?;
        r.finish()?;
        let m = Manifest {
            product,
            chip,
            version,
            security_counter,
            image_size,
            image_sha256,
            created_at,
            expires_at,
            delta_base_sha256,
        };
        m.validate()?;
        Ok(m)
    }

    /// The image hash as lowercase hex.
    pub fn image_sha256_hex(&self) -> String {
        hex::encode(self.image_sha256)
    }
}

fn read_str(r: &mut Reader<'_>, field: Field) -> Result<String, FormatError> {
    let len = r.u8(field)? as usize;
    let raw = r.take(len, field)?;
    String::from_utf8(raw.to_vec()).map_err(|_| invalid(r.what, field, "not ASCII"))
}

/// One signature: the signing key's id and the raw `r || s` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry {
    /// Id of the key that signed.
    pub key_id: KeyId,
    /// ECDSA P-256 signature as `r || s`, big-endian.
    pub signature: [u8; 64],
}

/// A manifest with its signatures, exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    signatures: Vec<SignatureEntry>,
}

/// Why an envelope's signatures were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No signature was made by a trusted key.
    #[error("no signature by a trusted key (signed by {signed_by}; trusted: {trusted})")]
    NoTrustedSignature {
        /// Key ids that signed, comma-separated.
        signed_by: String,
        /// Key ids that were trusted, comma-separated.
        trusted: String,
    },
    /// A signature by a trusted key did not verify.
    #[error(
        "the signature by trusted key {0} does not verify: the manifest or signature was altered"
    )]
    BadSignature(KeyId),
    /// Fewer trusted keys signed than the threshold asks.
    #[error("{valid} valid signature(s) by trusted keys, {threshold} required")]
    BelowThreshold {
        /// How many verified.
        valid: usize,
        /// How many were required.
        threshold: usize,
    },
}

impl Envelope {
    /// Signs a manifest with one or more keys.
    pub fn sign(manifest: &Manifest, keys: &[&PrivateKey]) -> Result<Envelope, FormatError> {
        let manifest_bytes = manifest.encode()?;
        if keys.is_empty() || keys.len() > MAX_SIGNATURES {
            return Err(invalid(
                "envelope",
                Field::Signatures,
                format!("1..={MAX_SIGNATURES} keys needed"),
            ));
        }
        let mut signatures: Vec<SignatureEntry> = keys
            .iter()
            .map(|k| SignatureEntry {
                key_id: k.public_key().key_id(),
                signature: k.sign(&manifest_bytes),
            })
            .collect();
        signatures.sort_by_key(|s| s.key_id);
        if signatures.windows(2).any(|w| w[0].key_id == w[1].key_id) {
            return Err(invalid("envelope", Field::Signatures, "the same key twice"));
        }
        Ok(Envelope {
            manifest_bytes,
            manifest: manifest.clone(),
            signatures,
        })
    }

    /// Adds a signature by another key (for k-of-n approval), keeping the order canonical.
    pub fn add_signature(&mut self, key: &PrivateKey) -> Result<(), FormatError> {
        let entry = SignatureEntry {
            key_id: key.public_key().key_id(),
            signature: key.sign(&self.manifest_bytes),
        };
        if self.signatures.iter().any(|s| s.key_id == entry.key_id) {
            return Err(invalid(
                "envelope",
                Field::Signatures,
                format!("already signed by {}", entry.key_id),
            ));
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(invalid(
                "envelope",
                Field::Signatures,
                format!("at most {MAX_SIGNATURES} signatures"),
            ));
        }
        self.signatures.push(entry);
        self.signatures.sort_by_key(|s| s.key_id);
        Ok(())
    }

    /// The decoded manifest. Trust it only after [`Envelope::verify`].
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest bytes exactly as signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The signatures, ordered by key id.
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + self.manifest_bytes.len() + 72 * self.signatures.len());
        out.extend_from_slice(ENVELOPE_MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.signatures.len() as u8);
        out.extend_from_slice(&(self.manifest_bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        for s in &self.signatures {
            out.extend_from_slice(&s.key_id.0);
            out.extend_from_slice(&s.signature);
        }
        out
    }

    /// Decodes an envelope and the manifest inside it. Does not verify signatures.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, FormatError> {
        const W: &str = "envelope";
        let mut r = Reader::new(W, bytes);
        magic(&mut r, ENVELOPE_MAGIC)?;
        let count = r.u8(Field::Signatures)? as usize;
        if count == 0 || count > MAX_SIGNATURES {
            return Err(invalid(
                W,
                Field::Signatures,
                format!("{count} signatures; 1..={MAX_SIGNATURES} allowed"),
            ));
        }
        let mlen = r.u16(Field::Length)? as usize;
        if !(MANIFEST_FIXED_LEN + 4..=MAX_MANIFEST_LEN).contains(&mlen) {
            return Err(invalid(
                W,
                Field::Length,
                format!("manifest length {mlen} is impossible"),
            ));
        }
        let manifest_bytes = r.take(mlen, Field::Length)?.to_vec();
        let manifest = Manifest::decode(&manifest_bytes)?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            let key_id = KeyId(r.take(8, Field::Signatures)?.try_into().unwrap());
            let signature: [u8; 64] = r.take(64, Field::Signatures)?.try_into().unwrap();
            signatures.push(SignatureEntry { key_id, signature });
        }
        r.finish()?;
        if signatures.windows(2).any(|w| w[0].key_id >= w[1].key_id) {
            return Err(invalid(
                W,
                Field::Signatures,
                "key ids must be distinct and in ascending order",
            ));
        }
        Ok(Envelope {
            manifest_bytes,
            manifest,
            signatures,
        })
    }

    /// Verifies the signatures against trusted keys: at least `threshold` distinct trusted keys
    /// must have signed validly. Signatures by unknown keys are ignored; a signature by a
    /// trusted key that fails is an error (someone altered the manifest). Returns the ids of
    /// the keys that verified.
    pub fn verify(
        &self,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<Vec<KeyId>, VerifyError> {
        let mut valid = Vec::new();
        for s in &self.signatures {
            if let Some(key) = trusted.iter().find(|k| k.key_id() == s.key_id) {
                if !key.verify(&self.manifest_bytes, &s.signature) {
                    return Err(VerifyError::BadSignature(s.key_id));
                }
                valid.push(s.key_id);
            }
        }
        if valid.is_empty() {
            let ids = |it: &mut dyn Iterator<Item = KeyId>| {
                it.map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
            };
            return Err(VerifyError::NoTrustedSignature {
                signed_by: ids(&mut self.signatures.iter().map(|s| s.key_id)),
                trusted: ids(&mut trusted.iter().map(|k| k.key_id())),
            });
        }
        if valid.len() < threshold.max(1) {
            return Err(VerifyError::BelowThreshold {
                valid: valid.len(),
                threshold,
            });
        }
        Ok(valid)
    }
}

/// The head of a bundle: everything before the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHead {
    /// The signed envelope.
    pub envelope: Envelope,
    /// Length of the head in bytes: where the image starts.
    pub head_len: usize,
}

impl BundleHead {
    /// Reads the 12-byte fixed head and returns the envelope length, so a streaming reader
    /// knows how much more to read before calling [`BundleHead::decode`].
    pub fn envelope_len(head: &[u8; BUNDLE_HEAD_LEN]) -> Result<usize, FormatError> {
        const W: &str = "bundle";
        let mut r = Reader::new(W, head);
        magic(&mut r, BUNDLE_MAGIC)?;
        if r.take(3, Field::Reserved)? != [0, 0, 0] {
            return Err(invalid(W, Field::Reserved, "must be zero"));
        }
        let len = r.u32(Field::Length)? as usize;
        if !(8..=MAX_ENVELOPE_LEN).contains(&len) {
            return Err(invalid(
                W,
                Field::Length,
                format!("envelope length {len} is impossible"),
            ));
        }
        Ok(len)
    }

    /// Decodes the head from the start of a bundle (the image may or may not follow).
    pub fn decode(bytes: &[u8]) -> Result<BundleHead, FormatError> {
        let fixed: &[u8; BUNDLE_HEAD_LEN] = bytes
            .get(..BUNDLE_HEAD_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| err("bundle", Field::Length, ErrorKind::Truncated))?;
        let len = Self::envelope_len(fixed)?;
        let env = bytes
            .get(BUNDLE_HEAD_LEN..BUNDLE_HEAD_LEN + len)
            .ok_or_else(|| err("bundle", Field::Length, ErrorKind::Truncated))?;
        Ok(BundleHead {
            envelope: Envelope::decode(env)?,
            head_len: BUNDLE_HEAD_LEN + len,
        })
    }

    /// Encodes a head for an envelope.
    pub fn encode(envelope: &Envelope) -> Vec<u8> {
        let env = envelope.encode();
        let mut out = Vec::with_capacity(BUNDLE_HEAD_LEN + env.len());
        out.extend_from_slice(BUNDLE_MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(env.len() as u32).to_le_bytes());
        out.extend_from_slice(&env);
        out
    }
}

/// A whole `release.otter` file: envelope plus image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The signed envelope.
    pub envelope: Envelope,
    /// The image bytes.
    pub image: Vec<u8>,
}

impl Bundle {
    /// Decodes a bundle and checks that the image matches the manifest's size and hash.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, FormatError> {
        let head = BundleHead::decode(bytes)?;
        let image = &bytes[head.head_len..];
        check_image(head.envelope.manifest(), image)?;
        Ok(Bundle {
            envelope: head.envelope,
            image: image.to_vec(),
        })
    }

    /// The bundle's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BundleHead::encode(&self.envelope);
        out.extend_from_slice(&self.image);
        out
    }
}

/// Checks that `image` is what `manifest` describes (size and SHA-256).
pub fn check_image(manifest: &Manifest, image: &[u8]) -> Result<(), FormatError> {
    use sha2::{Digest, Sha256};
    if image.len() as u64 != manifest.image_size as u64 {
        return Err(invalid(
            "bundle",
            Field::Image,
            format!(
                "{} bytes, but the manifest says {}",
                image.len(),
                manifest.image_size
            ),
        ));
    }
    let got: [u8; 32] = Sha256::digest(image).into();
    if got != manifest.image_sha256 {
        return Err(invalid(
            "bundle",
            Field::Image,
            format!(
                "SHA-256 {} does not match the manifest's {}",
                hex::encode(got),
                manifest.image_sha256_hex()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            product: "thermostat".into(),
            chip: Chip::Esp32C3,
            version: "1.2.3".into(),
            security_counter: 7,
            image_size: 4,
            image_sha256: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
                b"abcd",
            ))
            .into(),
            created_at: 1_700_000_000,
            expires_at: None,
            delta_base_sha256: None,
        }
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            "[a-z0-9][a-z0-9._-]{0,63}",
            prop::sample::select(Chip::all().collect::<Vec<_>>()),
            "[!-~]{1,64}",
            any::<u32>(),
            1..=MAX_IMAGE_SIZE,
            any::<[u8; 32]>(),
            0..u64::MAX / 2,
            prop::option::of(1..u64::MAX / 2),
            prop::option::of(any::<[u8; 32]>().prop_filter("nonzero", |h| *h != [0; 32])),
        )
            .prop_map(
                |(product, chip, version, sc, size, sha, created, exp, delta)| Manifest {
                    product,
                    chip,
                    version,
                    security_counter: sc,
                    image_size: size,
                    image_sha256: sha,
                    created_at: created,
                    expires_at: exp.map(|e| created + e),
                    delta_base_sha256: delta,
                },
            )
    }

    #[test]
    fn layout_matches_the_spec() {
        let m = sample();
        let b = m.encode().unwrap();
        assert_eq!(&b[0..4], b"OTMF");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 0);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 5);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(b[96] as usize, "thermostat".len());
        assert_eq!(b.len(), 98 + 10 + 5);
    }

    #[test]
    fn refuses_non_canonical_and_bad_fields() {
        let good = sample().encode().unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Manifest::decode(&trailing).unwrap_err().kind,
            ErrorKind::TrailingBytes(1)
        ));
        let mut expiry_without_flag = good.clone();
        expiry_without_flag[24] = 1;
        assert_eq!(
            Manifest::decode(&expiry_without_flag).unwrap_err().field,
            Field::ExpiresAt
        );
        let mut v2 = good.clone();
        v2[4] = 2;
        assert!(Manifest::decode(&v2)
            .unwrap_err()
            .to_string()
            .contains("upgrade otter"));
        let mut bad_chip = good.clone();
        bad_chip[6] = 1;
        assert_eq!(Manifest::decode(&bad_chip).unwrap_err().field, Field::Chip);
        let mut upper = good.clone();
        upper[97] = b'T';
        assert_eq!(Manifest::decode(&upper).unwrap_err().field, Field::Product);
        for cut in 0..good.len() {
            assert!(Manifest::decode(&good[..cut]).is_err());
        }
        let mut m = sample();
        m.image_size = 0;
        assert_eq!(m.encode().unwrap_err().field, Field::ImageSize);
    }

    #[test]
    fn envelope_threshold_and_unknown_keys() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let stranger = PrivateKey::generate();
        let mut env = Envelope::sign(&sample(), &[&a]).unwrap();
        env.add_signature(&b).unwrap();
        assert!(env.add_signature(&a).is_err());
        let decoded = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(decoded, env);
        assert_eq!(
            decoded
                .verify(&[a.public_key(), b.public_key()], 2)
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            decoded.verify(&[a.public_key()], 2),
            Err(VerifyError::BelowThreshold {
                valid: 1,
                threshold: 2
            })
        ));
        assert!(matches!(
            decoded.verify(&[stranger.public_key()], 1),
            Err(VerifyError::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn bundle_checks_image() {
        let k = PrivateKey::generate();
        let env = Envelope::sign(&sample(), &[&k]).unwrap();
        let bundle = Bundle {
            envelope: env,
            image: b"abcd".to_vec(),
        };
        let bytes = bundle.encode();
        assert_eq!(Bundle::decode(&bytes).unwrap(), bundle);
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(Bundle::decode(&tampered)
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        let mut longer = bytes;
        longer.push(0);
        assert!(Bundle::decode(&longer)
            .unwrap_err()
            .to_string()
            .contains("5 bytes"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn manifest_round_trips(m in arb_manifest()) {
            let bytes = m.encode().unwrap();
            prop_assert!(bytes.len() <= MAX_MANIFEST_LEN);
            let back = Manifest::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::decode(&bytes);
            let _ = Envelope::decode(&bytes);
            let _ = BundleHead::decode(&bytes);
            if let Ok(env) = Envelope::decode(&bytes) {
                prop_assert_eq!(env.encode(), bytes);
            }
        }

        #[test]
        fn any_flipped_bit_breaks_verification(m in arb_manifest(), bit in 0usize..(8 * 200)) {
            let key = PrivateKey::generate();
            let env = Envelope::sign(&m, &[&key]).unwrap();
            let mut bytes = env.encode();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            // Either the flipped envelope no longer decodes, or it no longer verifies.
            if let Ok(flipped) = Envelope::decode(&bytes) {
                prop_assert!(flipped.verify(&[key.public_key()], 1).is_err());
            }
        }
    }
}
