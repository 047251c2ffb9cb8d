//! `otter sign --secure-boot-v2`, `--esp8266-signed` and `--esp32-arduino-signed`: signed images that the
//! device checks itself (ESP-IDF's Secure Boot V2 / signed-app verification, the ESP8266 Arduino
//! core's `Updater`, arduino-esp32's `Update` with `UPDATE_SIGN`), made where the key lives. The formats are in docs/image-formats.md.

use std::path::Path;

use otter_core::image::sign::{sign_esp32_arduino, sign_esp8266, sign_secure_boot_v2};
use serde_json::json;

use super::keys::read_image_key;
use super::signing::ManifestArgs;
use crate::error::{CliError, CliResult};
use crate::output::Output;

/// Which signed image to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An ESP-IDF Secure Boot V2 signature sector after the padded image.
    SecureBootV2,
    /// The ESP8266 Arduino signed format.
    Esp8266,
    /// The arduino-esp32 (3.3) signed format.
    Esp32Arduino,
}

pub fn sign_image(
    image_path: &Path,
    format: Format,
    args: &ManifestArgs,
    out: Option<&Path>,
    force: bool,
    o: Output,
) -> CliResult<()> {
    let flag = match format {
        Format::SecureBootV2 => "--secure-boot-v2",
        Format::Esp8266 => "--esp8266-signed",
        Format::Esp32Arduino => "--esp32-arduino-signed",
    };
    let out = out.ok_or_else(|| {
        CliError::usage(format!(
            "{flag} writes a signed image: say where with --out, e.g. --out firmware-signed.bin"
        ))
    })?;
    if args.version.is_some()
        || args.security_counter != 0
        || args.expires_at.is_some()
        || args.expires_in.is_some()
    {
        return Err(CliError::usage(format!(
            "--version, --security-counter and --expires-* belong in a release.otter manifest; {flag} signs the image bytes only"
        )));
    }
    if out.exists() && !force {
        return Err(CliError::usage(format!(
            "{} exists already; pass --force to overwrite it",
            out.display()
        )));
    }
    let image = std::fs::read(image_path).map_err(|e| CliError::io(image_path, "read", e))?;
    let keys = args
        .keys
        .iter()
        .map(|p| read_image_key(p, o))
        .collect::<CliResult<Vec<_>>>()?;
    let signed = match (format, keys.as_slice()) {
        (Format::SecureBootV2, _) => {
            let refs: Vec<_> = keys.iter().collect();
            sign_secure_boot_v2(&image, &refs)
        }
        (Format::Esp8266, [key]) => sign_esp8266(&image, key),
        (Format::Esp32Arduino, [key]) => sign_esp32_arduino(&image, key),
        _ => {
            return Err(CliError::usage(format!(
                "{flag} takes exactly one --key (the device holds one public key)"
            )))
        }
    }
    .map_err(|e| CliError::usage(format!("{}: {e}", image_path.display())))?;
    std::fs::write(out, &signed).map_err(|e| CliError::io(out, "write", e))?;
    let described: Vec<String> = keys.iter().map(|k| k.describe()).collect();
    let digests: Vec<Option<String>> = keys
        .iter()
        .map(|k| match format {
            Format::SecureBootV2 => k.sbv2_key_digest().map(hex::encode),
            Format::Esp8266 | Format::Esp32Arduino => None,
        })
        .collect();
    o.emit(
        &json!({
            "signed_image": out,
            "format": flag.trim_start_matches("--"),
            "size": signed.len(),
            "unsigned_size": image.len(),
            "keys": described,
            "sbv2_key_digests": digests,
        }),
        || {
            let mut t = format!(
                "signed {} -> {} ({} bytes, {flag}, key(s): {})",
                image_path.display(),
                out.display(),
                signed.len(),
                described.join(", ")
            );
            for (i, d) in digests.iter().enumerate() {
                if let Some(d) = d {
                    t += &format!("\n  block {i} key digest (eFuse)  {d}");
                }
            }
            t
        },
    );
    Ok(())
}
