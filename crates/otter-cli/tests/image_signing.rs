//! `otter keygen --type` and `otter sign --secure-boot-v2 / --esp8266-signed`: the real binary,
//! checked by Espressif's own `espsecure` (PyPI, in the repository's .venv) where it applies.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn espsecure() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/espsecure");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("espsecure")
    }
}

fn otter(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("otter")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = otter(dir, args);
    assert!(
        out.status.success(),
        "otter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn espsecure_verifies(dir: &Path, key: &str, file: &str) -> bool {
    let out = Process::new(espsecure())
        .current_dir(dir)
        .args(["verify-signature", "--version", "2", "--keyfile", key, file])
        .output()
        .expect("espsecure is needed for this test (bash scripts/setup.sh installs it)");
    out.status.success()
}

#[test]
fn keygen_types_make_pkcs8_keys_only_the_owner_reads() {
    let dir = TempDir::new().unwrap();
    for (kind, name) in [
        ("p256", "p.key"),
        ("rsa3072", "r3.key"),
        ("rsa2048", "r2.key"),
    ] {
        ok(dir.path(), &["keygen", "--type", kind, "--out", name]);
        let private = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{kind}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{kind}");
        }
    }
    let out = otter(
        dir.path(),
        &["keygen", "--type", "rsa1024", "--out", "x.key"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("x.key").exists());
}

#[test]
fn sign_secure_boot_v2_passes_espsecure_for_both_schemes_and_our_and_its_keys() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "dev",
            "synth-image",
            "--chip",
            "esp32c6",
            "--version",
            "3.1.0",
            "--out",
            "app.bin",
        ],
    );
    ok(d, &["keygen", "--type", "rsa3072", "--out", "rsa.key"]);
    ok(d, &["keygen", "--type", "p256", "--out", "ec.key"]);
    let made = Process::new(espsecure())
        .current_dir(d)
        .args([
            "generate-signing-key",
            "--version",
            "2",
            "--scheme",
            "ecdsa256",
            "espsecure-ec.pem",
        ])
        .output()
        .expect("espsecure is needed for this test (bash scripts/setup.sh installs it)");
    assert!(made.status.success());

    for key in ["rsa.key", "ec.key", "espsecure-ec.pem"] {
        let out = format!("signed-{key}.bin");
        let json: Value = serde_json::from_str(&ok(
            d,
            &[
                "--json",
                "sign",
                "app.bin",
                "--secure-boot-v2",
                "--key",
                key,
                "--out",
                &out,
            ],
        ))
        .unwrap();
        assert!(espsecure_verifies(d, key, &out), "{key}");

        // `otter inspect` shows the appended block with the key digest `sign` reported.
        let info: Value = serde_json::from_str(&ok(d, &["--json", "inspect", &out])).unwrap();
        let blocks = info["signature_blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 1, "{info}");
        assert_eq!(
            blocks[0]["key_digest"], json["sbv2_key_digests"][0],
            "{info}\n{json}"
        );

        let mut changed = std::fs::read(d.join(&out)).unwrap();
        changed[0x200] ^= 0x01;
        std::fs::write(d.join("changed.bin"), &changed).unwrap();
        assert!(!espsecure_verifies(d, key, "changed.bin"), "{key}");
    }

    // An RSA-2048 key is for ESP8266: refused, and nothing written.
    ok(d, &["keygen", "--type", "rsa2048", "--out", "r2.key"]);
    let out = otter(
        d,
        &[
            "sign",
            "app.bin",
            "--secure-boot-v2",
            "--key",
            "r2.key",
            "--out",
            "no.bin",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RSA-3072 or ECDSA P-256"));
    assert!(!d.join("no.bin").exists());
}

#[test]
fn sign_esp8266_signed_appends_signature_and_its_length() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "dev",
            "synth-image",
            "--chip",
            "esp8266",
            "--version",
            "1.0.0",
            "--out",
            "app.bin",
        ],
    );
    ok(d, &["keygen", "--type", "rsa2048", "--out", "r2.key"]);
    ok(
        d,
        &[
            "sign",
            "app.bin",
            "--esp8266-signed",
            "--key",
            "r2.key",
            "--out",
            "signed.bin",
        ],
    );
    let image = std::fs::read(d.join("app.bin")).unwrap();
    let signed = std::fs::read(d.join("signed.bin")).unwrap();
    assert_eq!(signed.len(), image.len() + 256 + 4);
    assert_eq!(&signed[..image.len()], &image[..]);
    assert_eq!(&signed[signed.len() - 4..], &256u32.to_le_bytes());

    // A P-256 key cannot make this format: refused, nothing written.
    ok(d, &["keygen", "--out", "ec.key"]);
    let out = otter(
        d,
        &[
            "sign",
            "app.bin",
            "--esp8266-signed",
            "--key",
            "ec.key",
            "--out",
            "no.bin",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.join("no.bin").exists());
}

/// A team that already has a Secure Boot V2 P-256 key from espsecure (SEC1 PEM) can sign Otter
/// release bundles with it too, and `otter verify` accepts them under espsecure's public key.
#[test]
fn an_espsecure_p256_key_signs_release_bundles() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let es = |args: &[&str]| {
        let out = Process::new(espsecure())
            .current_dir(d)
            .args(args)
            .output()
            .expect("espsecure is needed for this test (bash scripts/setup.sh installs it)");
        assert!(out.status.success(), "espsecure {args:?}");
    };
    es(&[
        "generate-signing-key",
        "--version",
        "2",
        "--scheme",
        "ecdsa256",
        "team.pem",
    ]);
    es(&[
        "extract-public-key",
        "--version",
        "2",
        "--keyfile",
        "team.pem",
        "team.pub.pem",
    ]);
    ok(
        d,
        &[
            "dev",
            "synth-image",
            "--chip",
            "esp32s3",
            "--version",
            "2.0.0",
            "--out",
            "app.bin",
        ],
    );
    ok(
        d,
        &[
            "sign",
            "app.bin",
            "--product",
            "lamp",
            "--key",
            "team.pem",
            "--out",
            "r.otter",
        ],
    );
    ok(d, &["verify", "r.otter", "--pub", "team.pub.pem"]);
}

#[test]
fn sign_esp32_arduino_signed_appends_a_512_byte_signature_area() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "dev",
            "synth-image",
            "--chip",
            "esp32",
            "--version",
            "1.0.0",
            "--out",
            "app.bin",
        ],
    );
    ok(d, &["keygen", "--type", "rsa2048", "--out", "r2.key"]);
    ok(
        d,
        &[
            "sign",
            "app.bin",
            "--esp32-arduino-signed",
            "--key",
            "r2.key",
            "--out",
            "signed.bin",
        ],
    );
    let image = std::fs::read(d.join("app.bin")).unwrap();
    let signed = std::fs::read(d.join("signed.bin")).unwrap();
    assert_eq!(signed.len(), image.len() + 512);
    assert_eq!(&signed[..image.len()], &image[..]);
    assert!(signed[image.len() + 256..].iter().all(|b| *b == 0));
    // Only one format at a time.
    let out = otter(
        d,
        &[
            "sign",
            "app.bin",
            "--esp32-arduino-signed",
            "--esp8266-signed",
            "--key",
            "r2.key",
            "--out",
            "x.bin",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.join("x.bin").exists());
}
