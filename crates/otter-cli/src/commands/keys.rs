//! `otter keygen`, and reading key files for the other commands.

use std::io::Write;
use std::path::{Path, PathBuf};

use otter_core::image::sign::{ImageKey, KeyType};
use otter_core::keys::{PrivateKey, PublicKey};
use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::output::Output;

/// Where the public key of `release.key` goes: `release.pub.pem` beside it.
pub fn public_key_path(private: &Path) -> PathBuf {
    let stem = private
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "release".into());
    private.with_file_name(format!("{stem}.pub.pem"))
}

/// `otter keygen --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    /// ECDSA P-256: Otter release keys and Secure Boot V2 ECDSA.
    P256,
    /// RSA-3072: Secure Boot V2 RSA-PSS.
    Rsa3072,
    /// RSA-2048: the ESP8266 Arduino signed format.
    Rsa2048,
}

/// Writes a new key pair: the private key with mode 0600, the public key beside it.
pub fn keygen(out: &Path, kind: KeyKind, force: bool, o: Output) -> CliResult<()> {
    let public_path = public_key_path(out);
    if !force {
        for p in [out, public_path.as_path()] {
            if p.exists() {
                return Err(CliError::usage(format!(
                    "{} exists already; pass --force to overwrite it (the old key then stops being able to sign)",
                    p.display()
                )));
            }
        }
    }
    let rsa = match kind {
        KeyKind::P256 => None,
        KeyKind::Rsa3072 => Some(KeyType::Rsa3072),
        KeyKind::Rsa2048 => Some(KeyType::Rsa2048),
    };
    if let Some(rsa) = rsa {
        return keygen_rsa(out, &public_path, rsa, o);
    }
    let key = PrivateKey::generate();
    write_private(out, key.to_pem().as_bytes())?;
    let public = key.public_key();
    std::fs::write(&public_path, public.to_pem())
        .map_err(|e| CliError::io(&public_path, "write", e))?;
    let key_id = public.key_id().to_string();
    o.emit(
        &json!({"private_key": out, "public_key": public_path, "key_id": key_id}),
        || {
            format!(
                "private key: {} (mode 0600; keep it secret, e.g. in your CI's secret store)\n\
                 public key:  {}\nkey id:      {key_id}\n\n\
                 Register the public key with: otter product key add <product> --pub {}",
                out.display(),
                public_path.display(),
                public_path.display()
            )
        },
    );
    Ok(())
}

/// An RSA key pair for device-checked image signatures (`otter sign --secure-boot-v2` with
/// RSA-3072, `--esp8266-signed` with RSA-2048); it is not an Otter release key.
fn keygen_rsa(out: &Path, public_path: &Path, kind: KeyType, o: Output) -> CliResult<()> {
    let key = ImageKey::generate(kind);
    write_private(out, key.to_pem().as_bytes())?;
    std::fs::write(public_path, key.public_pem())
        .map_err(|e| CliError::io(public_path, "write", e))?;
    let digest = key.sbv2_key_digest().map(hex::encode);
    let (use_with, digest_line) = match &digest {
        Some(d) => (
            "otter sign IMAGE --secure-boot-v2 --key",
            format!("\nSecure Boot V2 key digest (eFuse): {d}"),
        ),
        None => ("otter sign IMAGE --esp8266-signed --key", String::new()),
    };
    o.emit(
        &json!({"private_key": out, "public_key": public_path, "type": key.describe(), "sbv2_key_digest": digest}),
        || {
            format!(
                "private key: {} ({}, mode 0600; keep it secret)\npublic key:  {}{digest_line}\n\n\
                 Sign images with: {use_with} {} --out signed.bin",
                out.display(),
                key.describe(),
                public_path.display(),
                out.display()
            )
        },
    );
    Ok(())
}

#[cfg(unix)]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Remove first so an existing file's wider mode is not kept (only reached with --force).
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io(path, "create", e))?;
    f.write_all(bytes)
        .map_err(|e| CliError::io(path, "write", e))
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
    std::fs::write(path, bytes).map_err(|e| CliError::io(path, "write", e))
}

/// Reads a private key file, warning when others may read it.
pub fn read_private(path: &Path, o: Output) -> CliResult<PrivateKey> {
    let text = read_secret(path, o)?;
    PrivateKey::from_pem(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

/// Reads a key for device-checked image signatures (P-256 or RSA; `otter keygen` or `espsecure
/// generate-signing-key` files), warning when others may read it.
pub fn read_image_key(path: &Path, o: Output) -> CliResult<ImageKey> {
    let text = read_secret(path, o)?;
    ImageKey::from_pem(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

fn read_secret(path: &Path, o: Output) -> CliResult<String> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, "read", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                o.note(&format!(
                    "warning: {} can be read by other users; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = o;
    Ok(text)
}

/// Reads a public key file.
pub fn read_public(path: &Path) -> CliResult<PublicKey> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, "read", e))?;
    PublicKey::from_pem(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}
