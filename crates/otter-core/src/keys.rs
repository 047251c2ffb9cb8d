//! Release keys: ECDSA over NIST P-256 with SHA-256.
//!
//! Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), public keys SubjectPublicKeyInfo
//! PEM (`-----BEGIN PUBLIC KEY-----`); OpenSSL reads and writes both. A key is named by its
//! [`KeyId`]: the first 8 bytes of SHA-256 over the SEC1 uncompressed point, which the C agent
//! computes the same way for its compiled-in keys.

use std::fmt;
use std::str::FromStr;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not a P-256 private key in PKCS#8 PEM.
    #[error("not a P-256 private key in PKCS#8 PEM (\"-----BEGIN PRIVATE KEY-----\") or SEC1 PEM (\"-----BEGIN EC PRIVATE KEY-----\"); make one with `otter keygen` or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`")]
    BadPrivateKey,
    /// The text is not a P-256 public key in SubjectPublicKeyInfo PEM.
    #[error("not a P-256 public key in PEM (\"-----BEGIN PUBLIC KEY-----\"); `otter keygen` writes one beside the private key, or use `openssl pkey -in release.key -pubout`")]
    BadPublicKey,
    /// A key id is not 16 hex characters.
    #[error("a key id is 16 hex characters, got {0:?}")]
    BadKeyId(String),
}

/// The 8-byte name of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 8];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::BadKeyId(s.to_string()))?;
        Ok(KeyId(out))
    }
}

/// A release public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo PEM.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|_| KeyError::BadPublicKey)
    }

    /// Writes a SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding a valid P-256 key cannot fail")
    }

    /// The SEC1 uncompressed point, `04 || X || Y` (65 bytes): what the agent embeds.
    pub fn sec1_uncompressed(&self) -> [u8; 65] {
        let point = self.0.to_encoded_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// Reads a SEC1 point (compressed or uncompressed).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::BadPublicKey)
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::digest(self.sec1_uncompressed());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Checks a raw `r || s` signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        match Signature::from_slice(signature) {
            Ok(sig) => self.0.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// A release private key. Its `Debug` never prints the secret.
pub struct PrivateKey(SigningKey);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(for {})", self.public_key().key_id())
    }
}

impl PrivateKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        PrivateKey(SigningKey::random(&mut rand_core::OsRng))
    }

    /// Reads a PKCS#8 PEM private key, or a SEC1 one (`-----BEGIN EC PRIVATE KEY-----`, as
    /// `espsecure generate-signing-key --version 2 --scheme ecdsa256` and `openssl ecparam
    /// -genkey` write it, possibly after an `EC PARAMETERS` block).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Some(at) = pem.find("-----BEGIN EC PRIVATE KEY-----") {
            return p256::SecretKey::from_sec1_pem(pem[at..].trim())
                .map(|k| PrivateKey(k.into()))
                .map_err(|_| KeyError::BadPrivateKey);
        }
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(PrivateKey)
            .map_err(|_| KeyError::BadPrivateKey)
    }

    /// Writes the key as PKCS#8 PEM. The caller must store it with care (mode 0600).
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding a valid P-256 key cannot fail")
            .to_string()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// Signs `message` (SHA-256 is applied here) and returns the raw `r || s` pair.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig: Signature = self.0.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_sign_verify() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
        let public = PublicKey::from_pem(&again.public_key().to_pem()).unwrap();
        assert_eq!(public, key.public_key());
        let sig = key.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellO", &sig));
        assert_eq!(
            public.key_id().to_string().parse::<KeyId>().unwrap(),
            public.key_id()
        );
        assert!(format!("{key:?}").starts_with("PrivateKey(for "));
    }

    #[test]
    fn refuses_wrong_pem() {
        assert_eq!(
            PrivateKey::from_pem("nope").unwrap_err(),
            KeyError::BadPrivateKey
        );
        let key = PrivateKey::generate();
        assert_eq!(
            PublicKey::from_pem(&key.to_pem()).unwrap_err(),
            KeyError::BadPublicKey
        );
        assert!(PrivateKey::from_pem(&key.public_key().to_pem()).is_err());
        assert!("abc".parse::<KeyId>().is_err());
    }
}
