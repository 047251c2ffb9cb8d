//! `otter sign` and `otter verify`: the signed `release.otter` bundle, made and checked where the
//! key lives (a laptop or CI), never on the server.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use otter_core::image::ImageInfo;
use otter_core::manifest::{self, Bundle, BundleHead, Envelope, Manifest};
use serde_json::json;

use super::inspect::{manifest_json, manifest_text, parse_image};
use super::keys::{read_private, read_public};
use crate::error::{CliError, CliResult};
use crate::output::Output;

/// What goes into a manifest besides the image itself.
#[derive(Args, Debug, Clone)]
pub struct ManifestArgs {
    /// Private key(s) to sign with (PKCS#8 PEM from `otter keygen`); repeat for several signatures.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The release version; defaults to the image's own (esp_app_desc_t). Required for ESP8266
    /// images and for images whose built-in version is empty (e.g. MicroPython).
    #[arg(long)]
    pub version: Option<String>,
    /// Anti-downgrade counter: devices refuse a release with a lower one than they hold.
    #[arg(long, default_value_t = 0)]
    pub security_counter: u32,
    /// Devices refuse the release after this time (Unix seconds).
    #[arg(long, value_name = "UNIX_SECONDS", conflicts_with = "expires_in")]
    pub expires_at: Option<u64>,
    /// Devices refuse the release after this long, e.g. 90d, 12h, 30m.
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `90d`, `12h`, `30m`, `45s` (or plain seconds).
pub fn parse_duration(text: &str) -> CliResult<u64> {
    let bad = || {
        CliError::usage(format!(
            "{text:?} is not a duration; write a number with s, m, h or d (e.g. 90d)"
        ))
    };
    let (num, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// Signs an image: the manifest is built from the image and the arguments.
pub fn make_bundle(
    image_path: &Path,
    image: Vec<u8>,
    product: &str,
    args: &ManifestArgs,
    o: Output,
) -> CliResult<Bundle> {
    let info = parse_image(image_path, &image)?;
    let version = release_version(&info, args.version.as_deref())?;
    manifest::check_product_name(product).map_err(CliError::usage)?;
    manifest::check_version(&version).map_err(CliError::usage)?;
    let created_at = now();
    let expires_at = match (&args.expires_at, &args.expires_in) {
        (Some(at), _) => Some(*at),
        (None, Some(d)) => Some(created_at + parse_duration(d)?),
        (None, None) => None,
    };
    let size = u32::try_from(image.len())
        .ok()
        .filter(|s| *s <= manifest::MAX_IMAGE_SIZE)
        .ok_or_else(|| {
            CliError::usage(format!(
                "{} has {} bytes; a release image has at most {} bytes",
                image_path.display(),
                image.len(),
                manifest::MAX_IMAGE_SIZE
            ))
        })?;
    let m = Manifest {
        product: product.to_string(),
        chip: info.chip,
        version,
        security_counter: args.security_counter,
        image_size: size,
        image_sha256: info.sha256,
        created_at,
        expires_at,
        delta_base_sha256: None,
    };
    let keys = args
        .keys
        .iter()
        .map(|p| read_private(p, o))
        .collect::<CliResult<Vec<_>>>()?;
    let key_refs: Vec<_> = keys.iter().collect();
    let envelope =
        Envelope::sign(&m, &key_refs).map_err(|e| CliError::usage(format!("cannot sign: {e}")))?;
    Ok(Bundle { envelope, image })
}

/// The version to sign: `--version`, or the image's own; the two must agree when both exist,
/// because a device reports the image's version and would otherwise be offered it forever.
///
/// An image whose `esp_app_desc_t.version` is empty (every MicroPython build) counts as having no
/// version, like an ESP8266 image: `--version` names it, and a device running it is recognised by
/// its image's SHA-256 (docs/protocol.md).
pub(crate) fn release_version(info: &ImageInfo, given: Option<&str>) -> CliResult<String> {
    let own = info
        .app
        .as_ref()
        .map(|a| a.version.as_str())
        .filter(|v| !v.is_empty());
    match (given, own) {
        (Some(g), Some(own)) if g != own => Err(CliError::usage(format!(
            "--version {g} differs from the version built into the image ({own}); devices report the image's version, so sign it as {own} or rebuild the image with version {g}"
        ))),
        (Some(g), _) => Ok(g.to_string()),
        (None, Some(own)) => Ok(own.to_string()),
        (None, None) if info.app.is_some() => Err(CliError::usage(
            "this image's esp_app_desc_t.version is empty (MicroPython and some other builds leave it so); pass --version, e.g. --version 1.20.1",
        )),
        (None, None) => Err(CliError::usage(
            "this image carries no version (ESP8266 images have no app descriptor); pass --version",
        )),
    }
}

pub fn sign(
    image_path: &Path,
    product: &str,
    args: &ManifestArgs,
    out: &Path,
    force: bool,
    o: Output,
) -> CliResult<()> {
    if out.exists() && !force {
        return Err(CliError::usage(format!(
            "{} exists already; pass --force to overwrite it",
            out.display()
        )));
    }
    let image = std::fs::read(image_path).map_err(|e| CliError::io(image_path, "read", e))?;
    let bundle = make_bundle(image_path, image, product, args, o)?;
    let bytes = bundle.encode();
    std::fs::write(out, &bytes).map_err(|e| CliError::io(out, "write", e))?;
    let m = bundle.envelope.manifest();
    let signed_by: Vec<String> = bundle
        .envelope
        .signatures()
        .iter()
        .map(|s| s.key_id.to_string())
        .collect();
    o.emit(
        &json!({"bundle": out, "size": bytes.len(), "manifest": manifest_json(m), "signed_by": signed_by}),
        || {
            format!(
                "signed {} -> {}\n{}  signed by         {}",
                image_path.display(),
                out.display(),
                manifest_text(m),
                signed_by.join(", ")
            )
        },
    );
    Ok(())
}

pub fn verify(
    bundle_path: &Path,
    public_keys: &[PathBuf],
    threshold: usize,
    o: Output,
) -> CliResult<()> {
    let bytes = std::fs::read(bundle_path).map_err(|e| CliError::io(bundle_path, "read", e))?;
    let fail = |why: String| {
        CliError::refused(
            "verification_failed",
            format!("{} does NOT verify: {why}", bundle_path.display()),
        )
    };
    let head = BundleHead::decode(&bytes).map_err(|e| fail(e.to_string()))?;
    let image = &bytes[head.head_len..];
    let m = head.envelope.manifest();
    manifest::check_image(m, image).map_err(|e| fail(e.to_string()))?;
    let info = otter_core::image::parse(image).map_err(|e| fail(format!("the image: {e}")))?;
    if info.chip != m.chip {
        return Err(fail(format!(
            "the manifest says {}, the image is built for {}",
            m.chip, info.chip
        )));
    }
    let trusted = public_keys
        .iter()
        .map(|p| read_public(p))
        .collect::<CliResult<Vec<_>>>()?;
    let valid = head
        .envelope
        .verify(&trusted, threshold)
        .map_err(|e| fail(e.to_string()))?;
    if let Some(exp) = m.expires_at {
        if exp <= now() {
            return Err(fail(format!(
                "the manifest expired at {}; devices refuse it",
                crate::output::iso8601(i64::try_from(exp).unwrap_or(i64::MAX))
            )));
        }
    }
    let signed_by: Vec<String> = valid.iter().map(|k| k.to_string()).collect();
    o.emit(
        &json!({"valid": true, "signed_by": signed_by, "manifest": manifest_json(m)}),
        || {
            format!(
                "OK: {} is signed by trusted key(s) {} and its image matches\n{}",
                bundle_path.display(),
                signed_by.join(", "),
                manifest_text(m)
            )
        },
    );
    Ok(())
}

/// Reads a `release.otter` file and checks its image against its manifest.
pub fn read_bundle(path: &Path) -> CliResult<Bundle> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io(path, "read", e))?;
    Bundle::decode(&bytes).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86400);
        assert_eq!(parse_duration("12h").unwrap(), 43200);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("45").unwrap(), 45);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
