//! `otter device list|show|set-channel|allow-reenroll|tag|untag`.

use super::signing::parse_duration;
use crate::client::Api;
use crate::error::CliResult;
use crate::output::{items, joined, table, text, Output};

/// What `otter device list` selects; everything given must hold (docs/devices.md).
#[derive(Debug, Default)]
pub struct Selection<'a> {
    pub product: Option<&'a str>,
    pub tags: &'a [String],
    pub version: Option<&'a str>,
    pub state: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub group: Option<&'a str>,
    pub filter: Option<&'a str>,
}

impl Selection<'_> {
    /// `/api/v1/devices` with the selection as its query, encoded.
    fn path(&self) -> String {
        let mut url =
            reqwest::Url::parse("http://otter.invalid/api/v1/devices").expect("a valid base URL");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in [
                ("product", self.product),
                ("version", self.version),
                ("state", self.state),
                ("channel", self.channel),
                ("group", self.group),
                ("filter", self.filter),
            ] {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            for t in self.tags {
                q.append_pair("tag", t);
            }
        }
        match url.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}", url.path()),
            _ => url.path().to_string(),
        }
    }
}

pub fn list(api: &Api, sel: &Selection<'_>, limit: Option<usize>, o: Output) -> CliResult<()> {
    let v = api.get_all(&sel.path(), "devices", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "devices")
            .iter()
            .map(|d| {
                let mut row: Vec<String> = [
                    "id",
                    "product",
                    "hardware_id",
                    "channel",
                    "version",
                    "last_state",
                    "last_seen_at",
                ]
                .iter()
                .map(|k| field(d, k))
                .collect();
                row.push(joined(&d["tags"], ","));
                row
            })
            .collect();
        if rows.is_empty() {
            return "no devices".into();
        }
        table(
            &[
                "id",
                "product",
                "hardware id",
                "channel",
                "version",
                "state",
                "last seen",
                "tags",
            ],
            &rows,
        )
    });
    Ok(())
}

/// Adds tags to a device (`otter device tag`).
pub fn tag(api: &Api, id: &str, tags: &[String], o: Output) -> CliResult<()> {
    let v = api.post(
        &format!("/api/v1/devices/{id}/tags"),
        &serde_json::json!({ "tags": tags }),
    )?;
    o.emit(&v, || format!("{id} tags: {}", joined(&v["tags"], ", ")));
    Ok(())
}

/// Removes tags from a device (`otter device untag`).
pub fn untag(api: &Api, id: &str, tags: &[String], o: Output) -> CliResult<()> {
    let v = api.delete_json(
        &format!("/api/v1/devices/{id}/tags"),
        &serde_json::json!({ "tags": tags }),
    )?;
    o.emit(&v, || {
        let now = joined(&v["tags"], ", ");
        format!(
            "{id} tags: {}",
            if now.is_empty() { "none".into() } else { now }
        )
    });
    Ok(())
}

pub fn show(api: &Api, id: &str, o: Output) -> CliResult<()> {
    let mut v = api.get(&format!("/api/v1/devices/{id}"))?;
    if v["history_next"].is_string() {
        // The history is bounded per device (`device_history_max`): fetch all of it.
        v["history"] = api.get_all(&format!("/api/v1/devices/{id}/history"), "history", None)?
            ["history"]
            .take();
        v["history_next"] = serde_json::Value::Null;
    }
    o.emit(&v, || {
        let d = &v["device"];
        let mut t: Vec<String> = [
            "id",
            "product",
            "hardware_id",
            "channel",
            "chip",
            "version",
            "security_counter",
            "image_sha256",
            "partition_size",
            "enrolled_at",
            "last_seen_at",
            "last_state",
            "last_reason",
            "last_release_id",
        ]
        .iter()
        .map(|k| format!("{k:<17}{}", field(d, k)))
        .collect();
        t.push(format!("{:<17}{}", "tags", joined(&d["tags"], ", ")));
        t.push("history:".into());
        let rows: Vec<Vec<String>> = items(&v, "history")
            .iter()
            .map(|e| {
                ["at", "state", "release_id", "progress_bytes", "reason"]
                    .iter()
                    .map(|k| text(e, k))
                    .collect()
            })
            .collect();
        t.push(table(
            &["at", "state", "release", "progress", "reason"],
            &rows,
        ));
        t.join("\n")
    });
    Ok(())
}

pub fn set_channel(api: &Api, id: &str, channel: &str, o: Output) -> CliResult<()> {
    let v = api.patch(
        &format!("/api/v1/devices/{id}"),
        &serde_json::json!({"channel": channel}),
    )?;
    o.emit(&v, || {
        format!("{id} now follows channel {}", text(&v, "channel"))
    });
    Ok(())
}

/// A device field as text; an empty version (an image built without one, e.g. MicroPython) is
/// shown as `unknown`: the device is known by its image's SHA-256.
fn field(d: &serde_json::Value, key: &str) -> String {
    match (key, d[key].as_str()) {
        ("version", Some("")) => "unknown".into(),
        _ => text(d, key),
    }
}

/// Lets an enrolled hardware id enrol once more with the product secret (docs/security.md).
pub fn allow_reenroll(
    api: &Api,
    product: &str,
    hardware_id: &str,
    valid_for: &str,
    o: Output,
) -> CliResult<()> {
    let secs = parse_duration(valid_for)?;
    let v = api.post(
        &format!("/api/v1/products/{product}/allow-reenroll"),
        &serde_json::json!({"hardware_id": hardware_id, "valid_for_s": secs}),
    )?;
    o.emit(&v, || {
        format!(
            "{} ({}) may enrol once more with the enrolment secret of {product} until {}; its current token stops working then",
            text(&v, "hardware_id"),
            text(&v, "device_id"),
            text(&v, "until")
        )
    });
    Ok(())
}
