//! `otter release push|list|show|promote`.

use std::path::Path;

use otter_core::manifest::{BundleHead, Manifest, BUNDLE_MAGIC};
use otter_core::publish;
use serde_json::Value;

use super::signing::{make_bundle, read_bundle, ManifestArgs};
use crate::client::Api;
use crate::error::{CliError, CliResult, Exit};
use crate::output::{items, table, text, time_text, Output};

/// Pushes a firmware image (signed here first) or an already signed `release.otter`.
pub fn push(
    api: &Api,
    file: &Path,
    product: Option<&str>,
    channel: &str,
    sign_with: Option<&ManifestArgs>,
    allow_lower_counter: bool,
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
        // Not a bundle: it must be a firmware image before anything else is said about it.
        super::inspect::parse_image(file, &bytes).map_err(|e| {
            CliError::usage(format!(
                "{e}; `otter release push` takes an ESP32/ESP8266 firmware .bin or a release.otter made by `otter sign`"
            ))
        })?;
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
    pre_check(api, m, channel, allow_lower_counter, o)?;
    let mut path = format!("/api/v1/products/{}/releases?channel={channel}", m.product);
    if allow_lower_counter {
        path.push_str("&allow_lower_counter=true");
    }
    // The head alone first: the server checks credentials, product, signature and duplicates
    // and answers before any image byte is sent, so a refusal is never lost mid-upload.
    let check = api.post_bytes(
        &format!("{path}&dry_run=true"),
        &BundleHead::encode(&bundle.envelope),
    )?;
    // This signed release is on the channel already (a CI job that runs again): nothing to send.
    let release = match check.get("release").filter(|_| check["existing"] == true) {
        Some(existing) => {
            let mut r = existing.clone();
            r["existing"] = Value::Bool(true);
            r
        }
        None => api.upload(&path, &bundle.encode(), !o.json)?,
    };
    o.emit(&release, || {
        let done = if release["existing"] == true {
            "published already (nothing changed):"
        } else {
            "published"
        };
        format!(
            "{done} {} {} on channel {} as {}\n  size {} bytes, sha256 {}\n  signed by {}",
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

/// The server's publication rules (otter_core::publish), checked here before a byte is sent,
/// with the channel's releases fetched from the server: a release no device can install, a
/// security counter below the channel's highest (unless allowed), a creation time ahead of
/// this machine's clock (a warning: the server's own clock and bound decide).
fn pre_check(
    api: &Api,
    m: &Manifest,
    channel: &str,
    allow_lower_counter: bool,
    o: Output,
) -> CliResult<()> {
    let refused = |message: String| CliError::refused("bad_release", message);
    publish::check_installable(m).map_err(refused)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Err(e) = publish::check_created_at(m.created_at, now, publish::DEFAULT_MAX_FUTURE_S) {
        o.note(&format!("warning: {e}"));
    }
    let listed = match api.get_all(
        &format!("/api/v1/releases?product={}&channel={channel}", m.product),
        "releases",
        None,
    ) {
        Ok(v) => v,
        // Not allowed to read the product: the push itself gets the server's precise answer.
        Err(e) if e.exit == Exit::Auth => return Ok(()),
        Err(e) => return Err(e),
    };
    // This version on the channel already: the server's dry run decides whether it is the same
    // release (answered as it is, whatever the counters) or another one (refused).
    if items(&listed, "releases")
        .iter()
        .any(|r| r["version"].as_str() == Some(m.version.as_str()))
    {
        return Ok(());
    }
    let highest = items(&listed, "releases")
        .iter()
        .filter_map(|r| {
            Some(publish::HighestCounter {
                version: r["version"].as_str()?.to_string(),
                security_counter: u32::try_from(r["security_counter"].as_u64()?).ok()?,
            })
        })
        .max_by_key(|h| h.security_counter);
    publish::check_counter(
        channel,
        m.security_counter,
        highest.as_ref(),
        allow_lower_counter,
    )
    .map_err(refused)?;
    if let Some(h) = highest.filter(|h| m.security_counter < h.security_counter) {
        o.note(&format!(
            "warning: security counter {} is lower than {} of release {} on channel {channel:?}; publishing anyway (--allow-lower-counter)",
            m.security_counter, h.security_counter, h.version
        ));
    }
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
        .map(|k| match *k {
            // The manifest's times are Unix seconds in the JSON; people get ISO 8601 like the rest.
            "created_at" | "expires_at" => format!("{k:<17}{}", time_text(&r, k)),
            _ => format!("{k:<17}{}", text(&r, k)),
        })
        .chain([format!("{:<17}{}", "signed_by", join(&r["signed_by"]))])
        .collect::<Vec<_>>()
        .join("\n")
    });
    Ok(())
}

/// Publishes a release on another channel of its product (the server checks it as an upload).
pub fn promote(
    api: &Api,
    id: &str,
    channel: &str,
    allow_lower_counter: bool,
    o: Output,
) -> CliResult<()> {
    let mut body = serde_json::json!({ "channel": channel });
    if allow_lower_counter {
        body["allow_lower_counter"] = Value::Bool(true);
    }
    let r = api.post(&format!("/api/v1/releases/{id}/promote"), &body)?;
    o.emit(&r, || {
        if r["existing"] == true {
            format!(
                "{} {} is on channel {} already as {} (nothing changed)",
                text(&r, "product"),
                text(&r, "version"),
                text(&r, "channel"),
                text(&r, "id")
            )
        } else {
            format!(
                "promoted {} {} ({id}) to channel {} as {}",
                text(&r, "product"),
                text(&r, "version"),
                text(&r, "channel"),
                text(&r, "id")
            )
        }
    });
    Ok(())
}

fn join(list: &Value) -> String {
    crate::output::joined(list, ", ")
}
