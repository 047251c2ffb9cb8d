//! Tests of the signed formats: our parser reads back what we build, Espressif's `espsecure`
//! (PyPI) accepts the Secure Boot V2 sectors and refuses them after a one-byte change, and a
//! verifier written in Python from the ESP8266 Arduino format (using `cryptography`, not our
//! code) accepts the ESP8266 signed layout.

use super::super::tests::{espressif, synth_for};
use super::*;
use crate::image::SignatureScheme;
use crate::Chip;
use std::path::Path;

/// A throwaway RSA-3072 key made once for the tests (generating one per test run is slow in
/// debug builds).
fn rsa_key(bits: usize) -> ImageKey {
    use std::sync::OnceLock;
    static K2048: OnceLock<String> = OnceLock::new();
    static K3072: OnceLock<String> = OnceLock::new();
    let cell = if bits == 2048 { &K2048 } else { &K3072 };
    let pem = cell.get_or_init(|| {
        ImageKey::generate(if bits == 2048 {
            KeyType::Rsa2048
        } else {
            KeyType::Rsa3072
        })
        .to_pem()
    });
    ImageKey::from_pem(pem).unwrap()
}

fn run_ok(tool: &str, args: &[&str]) -> String {
    let out = espressif(tool, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn sbv2_sectors_parse_back_with_the_keys_digest() {
    let image = synth_for(Chip::Esp32C6);
    for key in [ImageKey::generate(KeyType::P256), rsa_key(3072)] {
        let signed = sign_secure_boot_v2(&image, &[&key]).unwrap();
        assert_eq!(signed.len() % 4096, 0);
        assert_eq!(&signed[..image.len()], &image[..]);
        assert!(signed[image.len()..signed.len() - 4096]
            .iter()
            .all(|b| *b == 0xFF));
        let info = parse(&signed).unwrap();
        assert_eq!(info.signatures.len(), 1, "{}", key.describe());
        let want = match key {
            ImageKey::P256(_) => SignatureScheme::EcdsaP256,
            ImageKey::Rsa(_) => SignatureScheme::Rsa3072Pss,
        };
        assert_eq!(info.signatures[0].scheme, want);
        assert_eq!(info.signatures[0].offset, signed.len() - 4096);
        assert_eq!(info.signatures[0].key_digest, key.sbv2_key_digest());
        // The rest of the sector is erased flash.
        assert!(signed[signed.len() - 4096 + 1216..]
            .iter()
            .all(|b| *b == 0xFF));
    }
}

#[test]
fn sbv2_takes_up_to_three_keys_of_one_scheme() {
    let image = synth_for(Chip::Esp32S3);
    let keys: Vec<ImageKey> = (0..3).map(|_| ImageKey::generate(KeyType::P256)).collect();
    let refs: Vec<&ImageKey> = keys.iter().collect();
    let info = parse(&sign_secure_boot_v2(&image, &refs).unwrap()).unwrap();
    assert_eq!(info.signatures.len(), 3);
    for (block, key) in info.signatures.iter().zip(&keys) {
        assert_eq!(block.key_digest, key.sbv2_key_digest());
    }
    let four = ImageKey::generate(KeyType::P256);
    let mut too_many = refs.clone();
    too_many.push(&four);
    assert!(sign_secure_boot_v2(&image, &too_many).is_err());
    let rsa = rsa_key(3072);
    assert!(sign_secure_boot_v2(&image, &[refs[0], &rsa]).is_err());
}

#[test]
fn sbv2_refuses_wrong_keys_and_images() {
    let image = synth_for(Chip::Esp32C3);
    let rsa2048 = rsa_key(2048);
    let err = sign_secure_boot_v2(&image, &[&rsa2048]).unwrap_err();
    assert!(err.to_string().contains("RSA-2048"), "{err}");
    let p256 = ImageKey::generate(KeyType::P256);
    let signed = sign_secure_boot_v2(&image, &[&p256]).unwrap();
    let err = sign_secure_boot_v2(&signed, &[&p256]).unwrap_err();
    assert!(err.to_string().contains("signed already"), "{err}");
    assert!(sign_secure_boot_v2(b"not an image", &[&p256]).is_err());
    let esp8266 = synth_for(Chip::Esp8266);
    assert!(sign_secure_boot_v2(&esp8266, &[&p256]).is_err());
}

#[test]
fn esp8266_signed_layout_is_binary_signature_length() {
    let image = esp8266_image();
    let key = rsa_key(2048);
    let signed = sign_esp8266(&image, &key).unwrap();
    assert_eq!(signed.len(), image.len() + 260);
    assert_eq!(&signed[..image.len()], &image[..]);
    assert_eq!(&signed[signed.len() - 4..], &[0x00, 0x01, 0x00, 0x00]);
    let ImageKey::Rsa(k) = &key else {
        unreachable!()
    };
    let sig = &signed[image.len()..image.len() + 256];
    k.to_public_key()
        .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&image), sig)
        .unwrap();
    let p256 = ImageKey::generate(KeyType::P256);
    assert!(sign_esp8266(&image, &p256).is_err());
    assert!(sign_esp8266(&synth_for(Chip::Esp32), &key).is_err());
}

#[test]
fn keys_round_trip_through_pem() {
    for key in [ImageKey::generate(KeyType::P256), rsa_key(2048)] {
        let again = ImageKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public_pem(), key.public_pem());
        assert_eq!(again.describe(), key.describe());
    }
    assert_eq!(
        ImageKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err(),
        ImageSignError::BadKey
    );
}

/// The real firmware corpus: `OTTER_FIRMWARE_DIR` when set, else `../shared/firmware` beside the
/// repository (CI has it).
fn firmware(relative: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("OTTER_FIRMWARE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/firmware"));
    let path = dir.join(relative);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!(
                "{} is absent: checked with a synthetic image instead (set OTTER_FIRMWARE_DIR)",
                path.display()
            );
            None
        }
    }
}

/// The real ESP8266 Arduino image from the firmware corpus when present, else a synthetic one.
fn esp8266_image() -> Vec<u8> {
    firmware("p7-esp8266-arduino-esplinker/new.bin").unwrap_or_else(|| synth_for(Chip::Esp8266))
}

/// The real ESP-IDF hello_world (ESP32) when present, else a synthetic ESP32-C6 image.
fn idf_image() -> Vec<u8> {
    firmware("p1-esp32-idf-hello-world/new.bin").unwrap_or_else(|| synth_for(Chip::Esp32C6))
}

// ---------- independent checks ----------

/// `espsecure verify-signature --version 2` accepts what we append, for keys espsecure made
/// itself, and refuses the file once one byte of the image changes.
#[test]
fn espsecure_verifies_our_sbv2_sectors_and_refuses_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let image = idf_image();
    for scheme in ["ecdsa256", "rsa3072"] {
        let key_path = p(&format!("{scheme}.pem"));
        run_ok(
            "espsecure",
            &[
                "generate-signing-key",
                "--version",
                "2",
                "--scheme",
                scheme,
                &key_path,
            ],
        );
        let key = ImageKey::from_pem(&std::fs::read_to_string(&key_path).unwrap())
            .unwrap_or_else(|e| panic!("espsecure's {scheme} key: {e}"));
        let signed = sign_secure_boot_v2(&image, &[&key]).unwrap();
        let signed_path = p(&format!("signed-{scheme}.bin"));
        std::fs::write(&signed_path, &signed).unwrap();
        let text = run_ok(
            "espsecure",
            &[
                "verify-signature",
                "--version",
                "2",
                "--keyfile",
                &key_path,
                &signed_path,
            ],
        );
        assert!(
            text.contains("Signature block 0 verification successful"),
            "{scheme}: {text}"
        );

        run_ok(
            "espsecure",
            &[
                "digest-sbv2-public-key",
                "--keyfile",
                &key_path,
                "--output",
                &p("digest.bin"),
            ],
        );
        assert_eq!(
            key.sbv2_key_digest().unwrap().to_vec(),
            std::fs::read(p("digest.bin")).unwrap(),
            "{scheme}: the eFuse key digest"
        );

        let mut changed = signed.clone();
        changed[0x100] ^= 1;
        let changed_path = p(&format!("changed-{scheme}.bin"));
        std::fs::write(&changed_path, &changed).unwrap();
        let out = espressif(
            "espsecure",
            &[
                "verify-signature",
                "--version",
                "2",
                "--keyfile",
                &key_path,
                &changed_path,
            ],
        );
        assert!(
            !out.status.success(),
            "{scheme}: espsecure accepted a changed image:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The ESP8266 signed layout, checked by a verifier written from the format (the binary, an RSA
/// PKCS#1 v1.5 SHA-256 signature as long as the modulus, its length as u32 LE) with Python's
/// `cryptography`, as the device's `Updater` does it; and refused after one changed byte.
#[test]
fn python_verifier_accepts_the_esp8266_signed_layout() {
    const VERIFIER: &str = r#"
import struct, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
data = open(sys.argv[2], "rb").read()
pub = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
(sig_len,) = struct.unpack("<I", data[-4:])
assert sig_len == pub.key_size // 8, "length field is not the modulus length"
body, sig = data[: -(sig_len + 4)], data[-(sig_len + 4) : -4]
pub.verify(sig, body, padding.PKCS1v15(), hashes.SHA256())
print("OK", len(body))
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("verify.py"), VERIFIER).unwrap();
    let key = rsa_key(2048);
    std::fs::write(p("key.pub.pem"), key.public_pem()).unwrap();
    let image = esp8266_image();
    let signed = sign_esp8266(&image, &key).unwrap();
    std::fs::write(p("signed.bin"), &signed).unwrap();
    let mut changed = signed.clone();
    changed[10] ^= 1;
    std::fs::write(p("changed.bin"), &changed).unwrap();

    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let python = if python.exists() {
        python.to_str().unwrap().to_owned()
    } else {
        "python3".to_owned()
    };
    let verify = |file: &str| {
        std::process::Command::new(&python)
            .args([&p("verify.py"), &p("key.pub.pem"), &p(file)])
            .output()
            .expect("python with `cryptography` is needed (bash scripts/setup.sh)")
    };
    let ok = verify("signed.bin");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        format!("OK {}", image.len())
    );
    let bad = verify("changed.bin");
    assert!(!bad.status.success(), "a changed byte was accepted");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("InvalidSignature"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// The Arduino core's `signing.py` signs with `openssl dgst -sha256 -sign private.key` (PKCS#1
/// v1.5 is deterministic), so with the same key our signature must be that one, byte for byte.
#[test]
fn esp8266_signature_is_byte_for_byte_what_openssl_dgst_sign_makes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let key = rsa_key(2048);
    std::fs::write(p("private.key"), key.to_pem()).unwrap();
    let image = esp8266_image();
    std::fs::write(p("app.bin"), &image).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", &p("private.key"), &p("app.bin")])
        .output()
        .expect("openssl is needed for this interop test (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = sign_esp8266(&image, &key).unwrap();
    assert_eq!(&signed[image.len()..signed.len() - 4], &out.stdout[..]);
}

/// The arduino-esp32 signed layout, checked by a verifier written from the format (image, then a
/// 512-byte area: RSA-PSS with the largest salt, or a DER ECDSA signature, then zeros) with
/// Python's `cryptography`, as the core's `Updater` does it; and refused after one changed byte.
#[test]
fn python_verifier_accepts_the_esp32_arduino_signed_layout() {
    const VERIFIER: &str = r#"
import sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
data = open(sys.argv[2], "rb").read()
pub = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
body, area = data[:-512], data[-512:]
if isinstance(pub, rsa.RSAPublicKey):
    n = pub.key_size // 8
    sig = area[:n]
    assert area[n:] == bytes(512 - n), "padding is not zeros"
    pub.verify(sig, body, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=n - 32 - 2), hashes.SHA256())
else:
    assert area[0] == 0x30
    der_len = 2 + area[1]
    sig = area[:der_len]
    decode_dss_signature(sig)
    assert area[der_len:] == bytes(512 - der_len), "padding is not zeros"
    pub.verify(sig, body, ec.ECDSA(hashes.SHA256()))
print("OK", len(body))
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("verify.py"), VERIFIER).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let python = if python.exists() {
        python.to_str().unwrap().to_owned()
    } else {
        "python3".to_owned()
    };
    let image = idf_image();
    for key in [
        rsa_key(2048),
        rsa_key(3072),
        ImageKey::generate(KeyType::P256),
    ] {
        std::fs::write(p("key.pub.pem"), key.public_pem()).unwrap();
        let signed = sign_esp32_arduino(&image, &key).unwrap();
        assert_eq!(signed.len(), image.len() + 512);
        std::fs::write(p("signed.bin"), &signed).unwrap();
        let mut changed = signed.clone();
        changed[0x40] ^= 1;
        std::fs::write(p("changed.bin"), &changed).unwrap();
        let verify = |file: &str| {
            std::process::Command::new(&python)
                .args([&p("verify.py"), &p("key.pub.pem"), &p(file)])
                .output()
                .expect("python with `cryptography` is needed (bash scripts/setup.sh)")
        };
        let ok = verify("signed.bin");
        assert!(
            ok.status.success(),
            "{}: {}",
            key.describe(),
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout).trim(),
            format!("OK {}", image.len())
        );
        let bad = verify("changed.bin");
        assert!(
            !bad.status.success(),
            "{}: a changed byte was accepted",
            key.describe()
        );
    }
    assert!(sign_esp32_arduino(&synth_for(Chip::Esp8266), &rsa_key(2048)).is_err());
}
