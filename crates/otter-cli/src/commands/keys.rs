//! `otter keygen`, and reading key files for the other commands.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes a new key pair: the private key with mode 0600, the public key beside it.
pub fn keygen(out: &Path, force: bool, o: Output) -> CliResult<()> {
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
    PrivateKey::from_pem(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

/// Reads a public key file.
pub fn read_public(path: &Path) -> CliResult<PublicKey> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, "read", e))?;
    PublicKey::from_pem(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}
