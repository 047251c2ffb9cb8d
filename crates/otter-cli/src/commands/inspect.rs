//! `otter inspect`: what is in a firmware image or a signed `release.otter` bundle.

use std::path::Path;

use otter_core::image::{self, ImageInfo};
use otter_core::manifest::{BundleHead, Envelope, Manifest, BUNDLE_MAGIC};
use serde_json::{json, Value};

use crate::error::{CliError, CliResult};
use crate::output::{iso8601, Output};

pub fn inspect(path: &Path, o: Output) -> CliResult<()> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io(path, "read", e))?;
    if bytes.starts_with(BUNDLE_MAGIC) {
        return inspect_bundle(path, &bytes, o);
    }
    let info = parse_image(path, &bytes)?;
    let value = image_json(&info);
    o.emit(&value, || image_text(&info));
    Ok(())
}

/// Parses an image, naming the file in the error.
pub fn parse_image(path: &Path, bytes: &[u8]) -> CliResult<ImageInfo> {
    image::parse(bytes).map_err(|e| {
        CliError::usage(format!(
            "{} is not a valid firmware image: {e}",
            path.display()
        ))
    })
}

fn inspect_bundle(path: &Path, bytes: &[u8], o: Output) -> CliResult<()> {
    let head = BundleHead::decode(bytes)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let image_bytes = &bytes[head.head_len..];
    let info = parse_image(path, image_bytes)?;
    let matches = otter_core::manifest::check_image(head.envelope.manifest(), image_bytes);
    let value = json!({
        "kind": "bundle",
        "manifest": manifest_json(head.envelope.manifest()),
        "signatures": signatures_json(&head.envelope),
        "image_matches_manifest": matches.is_ok(),
        "image": image_json(&info),
    });
    o.emit(&value, || {
        let mut t =
            String::from("release bundle (signatures are not verified here; use `otter verify`)\n");
        t += &manifest_text(head.envelope.manifest());
        for s in head.envelope.signatures() {
            t += &format!("  {:<17} {}\n", "signed by key", s.key_id);
        }
        match &matches {
            Ok(()) => t += "  image             matches the manifest's size and SHA-256\n",
            Err(e) => t += &format!("  image             DOES NOT match the manifest: {e}\n"),
        }
        t += "\n";
        t += &image_text(&info);
        t
    });
    Ok(())
}

pub fn manifest_json(m: &Manifest) -> Value {
    json!({
        "product": m.product,
        "chip": m.chip.name(),
        "version": m.version,
        "security_counter": m.security_counter,
        "image_size": m.image_size,
        "image_sha256": m.image_sha256_hex(),
        "created_at": m.created_at,
        "expires_at": m.expires_at,
        "delta_base_sha256": m.delta_base_sha256.map(hex::encode),
    })
}

pub fn signatures_json(e: &Envelope) -> Value {
    e.signatures()
        .iter()
        .map(|s| json!({"key_id": s.key_id.to_string()}))
        .collect()
}

pub fn manifest_text(m: &Manifest) -> String {
    let mut rows = vec![
        ("product", m.product.clone()),
        ("chip", m.chip.to_string()),
        ("version", m.version.clone()),
        ("security counter", m.security_counter.to_string()),
        ("image size", format!("{} bytes", m.image_size)),
        ("image sha256", m.image_sha256_hex()),
        (
            "created at",
            iso8601(i64::try_from(m.created_at).unwrap_or(i64::MAX)),
        ),
    ];
    if let Some(exp) = m.expires_at {
        rows.push((
            "expires at",
            iso8601(i64::try_from(exp).unwrap_or(i64::MAX)),
        ));
    }
    rows.iter()
        .map(|(k, v)| format!("  {k:<17} {v}\n"))
        .collect()
}

pub fn image_json(info: &ImageInfo) -> Value {
    json!({
        "kind": "image",
        "format": info.format.name(),
        "image_version": info.format.esptool_version(),
        "chip": info.chip.name(),
        "entry_addr": format!("{:#010x}", info.entry_addr),
        "flash": {
            "mode": info.flash.mode_name(),
            "size": info.flash.size_name(info.chip),
            "size_bytes": info.flash.size_bytes_for(info.chip),
            "freq": info.flash.freq_name(info.chip),
            "freq_code": info.flash.freq_code,
        },
        "extended_header": info.extended.map(|x| json!({
            "wp_pin": format!("{:#04x}", x.wp_pin),
            "pin_drive": {"clk": x.pin_drive[0], "q": x.pin_drive[1], "d": x.pin_drive[2],
                "cs0": x.pin_drive[3], "hd": x.pin_drive[4], "wp": x.pin_drive[5]},
            "min_chip_rev": x.min_chip_rev,
            "max_chip_rev_full_raw": x.max_chip_rev_full_raw,
        })),
        "min_chip_rev_full": info.min_chip_rev_full,
        "max_chip_rev_full": info.max_chip_rev_full,
        "segments": info.segments.iter().map(|s| json!({
            "load_addr": format!("{:#010x}", s.load_addr), "file_offset": s.file_offset,
            "header_offset": s.file_offset - 8, "len": s.len,
        })).collect::<Vec<_>>(),
        "checksum": format!("{:#04x}", info.checksum),
        "validation_hash": info.validation_hash.map(hex::encode),
        "app": info.app.as_ref().map(|a| json!({
            "version": a.version,
            "project_name": a.project_name,
            "idf_version": a.idf_ver,
            "secure_version": a.secure_version,
            "build_time": a.time,
            "build_date": a.date,
            "elf_sha256": hex::encode(a.elf_sha256),
            "min_efuse_blk_rev_full": a.min_efuse_blk_rev_full,
            "max_efuse_blk_rev_full": a.max_efuse_blk_rev_full,
            "mmu_page_size": a.mmu_page_size,
        })),
        "signature_blocks": info.signatures.iter().map(|s| json!({
            "scheme": s.scheme.name(), "offset": s.offset, "key_digest": s.key_digest.map(hex::encode),
        })).collect::<Vec<_>>(),
        "image_len": info.image_len,
        "trailing_len": info.trailing_len,
        "file_len": info.file_len,
        "sha256": hex::encode(info.sha256),
    })
}

/// `major.minor` of a `major*100+minor` revision, as esptool writes it.
fn rev(full: u16) -> String {
    format!("{}.{}", full / 100, full % 100)
}

fn image_text(info: &ImageInfo) -> String {
    let mut t = format!(
        "{} image for {} (image version {})\n",
        info.format.name(),
        info.chip.display_name(),
        info.format.esptool_version()
    );
    if let Some(a) = &info.app {
        let version = if a.version.is_empty() {
            "(empty: sign with --version)"
        } else {
            &a.version
        };
        t += &format!(
            "  version         {}\n  project         {}\n  ESP-IDF         {}\n  secure_version  {}\n  built           {} {}\n  ELF sha256      {}\n  eFuse blk rev   {} to {}\n",
            version,
            a.project_name,
            a.idf_ver,
            a.secure_version,
            a.date,
            a.time,
            hex::encode(a.elf_sha256),
            rev(a.min_efuse_blk_rev_full),
            rev(a.max_efuse_blk_rev_full),
        );
        if let Some(page) = a.mmu_page_size {
            t += &format!("  MMU page size   {} KB\n", page / 1024);
        }
    }
    let after = if info.format == otter_core::image::ImageFormat::EspIdf {
        "after it"
    } else {
        "after it: the flash-mapped part the ROM loader does not read"
    };
    t += &format!(
        "  size            {} bytes (image {} + {} {after})\n  sha256          {}\n  entry           {:#010x}\n  flash           {}, {}, {}\n",
        info.file_len,
        info.image_len,
        info.trailing_len,
        hex::encode(info.sha256),
        info.entry_addr,
        info.flash.mode_name(),
        info.flash.size_name(info.chip).unwrap_or("invalid size"),
        info.flash.freq_name(info.chip).unwrap_or("invalid frequency"),
    );
    if let Some(x) = info.extended {
        let max = x.max_chip_rev_full_raw;
        t += &format!(
            "  chip revision   v{} to v{} (legacy min_rev = {})\n  WP pin          {:#04x}{}\n",
            rev(info.min_chip_rev_full),
            rev(max),
            x.min_chip_rev,
            x.wp_pin,
            if x.wp_pin == 0xEE { " (disabled)" } else { "" },
        );
    }
    t += &format!("  segments        {}\n", info.segments.len());
    for (i, s) in info.segments.iter().enumerate() {
        t += &format!(
            "    {i:>2}  length {:#07x}  load {:#010x}  header at {:#010x}\n",
            s.len,
            s.load_addr,
            s.file_offset - 8
        );
    }
    t += &format!("  checksum        {:#04x} (valid)\n", info.checksum);
    if let Some(h) = info.validation_hash {
        t += &format!("  validation hash {} (valid)\n", hex::encode(h));
    }
    if info.signatures.is_empty() {
        t += "  secure boot     no signature blocks\n";
    }
    for s in &info.signatures {
        t += &format!(
            "  secure boot     {} block at {:#x}, key digest {}\n",
            s.scheme.name(),
            s.offset,
            s.key_digest.map(hex::encode).unwrap_or_else(|| "-".into())
        );
    }
    t
}
