//! `otter release push|list|show`.

use std::path::Path;

use otter_core::manifest::{BundleHead, BUNDLE_MAGIC};
use serde_json::Value;

use super::signing::{make_bundle, read_bundle, ManifestArgs};
use crate::client::Api;
use crate::error::{CliError, CliResult};
use crate::output::{items, table, text, Output};

/// Pushes a firmware image (signed here first) or an already signed `release.otter`.
pub fn push(
    api: &Api,
    file: &Path,
    product: Option<&str>,
    channel: &str,
    sign_with: Option<&ManifestArgs>,
    o: Output,
) -> CliResult<()> {
    let bytes = std::fs::read(file).map_err(|e| CliError::io(file, "read", e))?;
    let bundle = if bytes.starts_with(BUNDLE_MAGIC) {
        if sign_with.is_some() {
            return Err(CliError::usage(format!(
                "{} is signed already; push it without --key, or push the firmware image to sign it anew",
                file.display()
            )));
        }
        read_bundle(file)?
    } else {
        let args = sign_with.ok_or_else(|| {
            CliError::usage(format!(
                "{} is a firmware image: pass --key release.key to sign it (or push a release.otter made by `otter sign`)",
                file.display()
            ))
        })?;
        let product = product.ok_or_else(|| {
            CliError::usage("pass --product NAME: the product this firmware is for")
        })?;
        make_bundle(file, bytes, product, args, o)?
    };
    let m = bundle.envelope.manifest();
    if let Some(p) = product {
        if p != m.product {
            return Err(CliError::usage(format!(
                "{} is signed for product {:?}, not {p:?}",
                file.display(),
                m.product
            )));
        }
    }
    let path = format!("/api/v1/products/{}/releases?channel={channel}", m.product);
    // The head alone first: the server checks credentials, product, signature and duplicates
    // and answers before any image byte is sent, so a refusal is never lost mid-upload.
    api.post_bytes(
        &format!("{path}&dry_run=true"),
        &BundleHead::encode(&bundle.envelope),
    )?;
    let release = api.upload(&path, &bundle.encode(), !o.json)?;
    o.emit(&release, || {
        format!(
            "published {} {} on channel {} as {}\n  size {} bytes, sha256 {}\n  signed by {}",
            text(&release, "product"),
            text(&release, "version"),
            text(&release, "channel"),
            text(&release, "id"),
            text(&release, "size"),
            text(&release, "sha256"),
            join(&release["signed_by"]),
        )
    });
    Ok(())
}

pub fn list(
    api: &Api,
    product: Option<&str>,
    channel: Option<&str>,
    limit: Option<usize>,
    o: Output,
) -> CliResult<()> {
    let mut query = Vec::new();
    if let Some(p) = product {
        query.push(format!("product={p}"));
    }
    if let Some(c) = channel {
        query.push(format!("channel={c}"));
    }
    let path = if query.is_empty() {
        "/api/v1/releases".to_string()
    } else {
        format!("/api/v1/releases?{}", query.join("&"))
    };
    let v = api.get_all(&path, "releases", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "releases")
            .iter()
            .map(|r| {
                [
                    "id",
                    "product",
                    "version",
                    "channel",
                    "chip",
                    "security_counter",
                    "size",
                    "published_at",
                ]
                .iter()
                .map(|k| text(r, k))
                .collect()
            })
            .collect();
        if rows.is_empty() {
            return "no releases".into();
        }
        table(
            &[
                "id",
                "product",
                "version",
                "channel",
                "chip",
                "counter",
                "size",
                "published",
            ],
            &rows,
        )
    });
    Ok(())
}

pub fn show(api: &Api, id: &str, o: Output) -> CliResult<()> {
    let r = api.get(&format!("/api/v1/releases/{id}"))?;
    o.emit(&r, || {
        [
            "id",
            "product",
            "chip",
            "version",
            "channel",
            "security_counter",
            "size",
            "sha256",
            "created_at",
            "expires_at",
            "published_at",
            "published_by",
            "project_name",
            "idf_version",
        ]
        .iter()
        .map(|k| format!("{k:<17}{}", text(&r, k)))
        .chain([format!("{:<17}{}", "signed_by", join(&r["signed_by"]))])
        .collect::<Vec<_>>()
        .join("\n")
    });
    Ok(())
}

fn join(list: &Value) -> String {
    crate::output::joined(list, ", ")
}
