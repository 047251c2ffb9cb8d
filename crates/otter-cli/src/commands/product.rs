//! `otter product create|list|show|update|rotate-secret`, `otter product key add|remove` and
//! `otter product allowlist import|list|remove`.

use std::path::Path;

use serde_json::{json, Value};

use super::keys::{read_public, write_private};
use crate::client::Api;
use crate::error::{CliError, CliResult};
use crate::output::{items, table, text, Output};

pub fn create(
    api: &Api,
    name: &str,
    chip: &str,
    description: Option<&str>,
    secret_file: Option<&Path>,
    o: Output,
) -> CliResult<()> {
    let chip: otter_core::Chip = chip.parse().map_err(|e| CliError::usage(format!("{e}")))?;
    let mut body = json!({"name": name, "chip": chip.name()});
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    let mut v = api.post("/api/v1/products", &body)?;
    let shown = deliver_secret(&mut v, secret_file)?;
    o.emit(&v, || {
        format!(
            "created product {} for {}\nenrolment secret (shown once; devices use it to enrol): {shown}",
            text(&v["product"], "name"),
            text(&v["product"], "chip"),
        )
    });
    Ok(())
}

/// With `--secret-file`, writes the answer's enrolment secret to that file (mode 0600; an
/// existing file is never overwritten) and leaves it out of what is printed, so the secret
/// stays off the terminal and out of CI logs. Returns what the human output shows for it.
fn deliver_secret(answer: &mut Value, secret_file: Option<&Path>) -> CliResult<String> {
    let secret = text(answer, "enrollment_secret");
    let Some(path) = secret_file else {
        return Ok(secret);
    };
    if path.exists() {
        return Err(CliError::usage(format!(
            "--secret-file {}: the file exists; the secret was {} but is not written over another file. \
             Rotate it with `otter product rotate-secret NAME --secret-file NEW_FILE`",
            path.display(),
            "created"
        )));
    }
    write_private(path, format!("{secret}\n").as_bytes())?;
    if let Some(map) = answer.as_object_mut() {
        map.remove("enrollment_secret");
        map.insert(
            "enrollment_secret_file".into(),
            json!(path.display().to_string()),
        );
    }
    Ok(format!("written to {} (mode 0600)", path.display()))
}

pub fn list(api: &Api, limit: Option<usize>, o: Output) -> CliResult<()> {
    let v = api.get_all("/api/v1/products", "products", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "products")
            .iter()
            .map(|p| {
                vec![
                    text(p, "name"),
                    text(p, "chip"),
                    p["keys"].as_array().map_or(0, Vec::len).to_string(),
                    text(p, "description"),
                ]
            })
            .collect();
        if rows.is_empty() {
            return "no products; create one with `otter product create NAME --chip CHIP`".into();
        }
        table(&["name", "chip", "keys", "description"], &rows)
    });
    Ok(())
}

pub fn show(api: &Api, name: &str, o: Output) -> CliResult<()> {
    let mut p = api.get(&format!("/api/v1/products/{name}"))?;
    // The GitHub follow, when there is one (a 404 is "follows nothing").
    match api.get(&format!("/api/v1/products/{name}/github")) {
        Ok(f) => p["github"] = f,
        Err(e) if e.code == "not_found" => {}
        Err(e) => return Err(e),
    }
    o.emit(&p, || {
        let mut t = format!(
            "{} ({})\n{}\nrelease keys:\n",
            text(&p, "name"),
            text(&p, "chip"),
            text(&p, "description")
        );
        for k in items(&p, "keys") {
            t += &format!("  {}  {}\n", text(k, "key_id"), text(k, "name"));
        }
        t += &enrolment_bounds(&p);
        if !p["github"].is_null() {
            t += &super::github::describe(&p["github"]);
        }
        t
    });
    Ok(())
}

pub fn rotate_secret(
    api: &Api,
    name: &str,
    secret_file: Option<&Path>,
    o: Output,
) -> CliResult<()> {
    let mut v = api.post(
        &format!("/api/v1/products/{name}/enrollment-secret"),
        &Value::Null,
    )?;
    let shown = deliver_secret(&mut v, secret_file)?;
    o.emit(&v, || {
        format!("new enrolment secret for {name} (the old one no longer works): {shown}")
    });
    Ok(())
}

pub fn add_key(
    api: &Api,
    product: &str,
    public_key: &Path,
    name: Option<&str>,
    o: Output,
) -> CliResult<()> {
    let key = read_public(public_key)?;
    let mut body = json!({"public_key_pem": key.to_pem()});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let v = api.post(&format!("/api/v1/products/{product}/keys"), &body)?;
    o.emit(&v, || {
        format!(
            "registered key {} for {product}: releases signed with it are accepted",
            text(&v, "key_id")
        )
    });
    Ok(())
}

pub fn remove_key(api: &Api, product: &str, key_id: &str, o: Output) -> CliResult<()> {
    api.delete(&format!("/api/v1/products/{product}/keys/{key_id}"))?;
    o.emit(&json!({"removed": key_id}), || {
        format!("removed key {key_id} from {product}")
    });
    Ok(())
}

fn enrolment_bounds(p: &Value) -> String {
    let or_none = |k: &str| match &p[k] {
        Value::Null => "none".to_string(),
        v => v.to_string(),
    };
    format!(
        "enrolment:\n  max devices             {}\n  enrolments per minute   {}\n  allow-list required     {}\n",
        or_none("max_devices"),
        or_none("enrollments_per_minute"),
        if p["allowlist_required"] == true { "on" } else { "off" }
    )
}

/// `N` or `none` (no bound).
fn bound(flag: &str, value: &str) -> CliResult<Value> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Value::Null);
    }
    match value.parse::<u32>() {
        Ok(n) => Ok(json!(n)),
        Err(_) => Err(CliError::usage(format!(
            "{flag} takes a whole number or `none`, not {value:?}"
        ))),
    }
}

/// Changes a product's enrolment bounds; only the flags given change.
pub fn update(
    api: &Api,
    name: &str,
    max_devices: Option<&str>,
    enrollments_per_minute: Option<&str>,
    allowlist: Option<&str>,
    o: Output,
) -> CliResult<()> {
    let mut body = json!({});
    if let Some(v) = max_devices {
        body["max_devices"] = bound("--max-devices", v)?;
    }
    if let Some(v) = enrollments_per_minute {
        body["enrollments_per_minute"] = bound("--enrollments-per-minute", v)?;
    }
    if let Some(v) = allowlist {
        body["allowlist_required"] = match v {
            "on" => json!(true),
            "off" => json!(false),
            _ => {
                return Err(CliError::usage(format!(
                    "--allowlist takes on or off, not {v:?}"
                )))
            }
        };
    }
    if body.as_object().is_some_and(|b| b.is_empty()) {
        return Err(CliError::usage(
            "nothing to change: pass --max-devices, --enrollments-per-minute or --allowlist",
        ));
    }
    let p = api.patch(&format!("/api/v1/products/{name}"), &body)?;
    o.emit(&p, || {
        format!("updated {}\n{}", text(&p, "name"), enrolment_bounds(&p))
    });
    Ok(())
}

/// Imports a factory CSV into the product's allow-list (all rows or none).
pub fn allowlist_import(api: &Api, product: &str, file: &Path, o: Output) -> CliResult<()> {
    let csv = std::fs::read_to_string(file).map_err(|e| CliError::io(file, "read", e))?;
    let v = api.post_text(
        &format!("/api/v1/products/{product}/allowlist"),
        &csv,
        "text/csv",
    )?;
    o.emit(&v, || {
        format!(
            "imported {} hardware ids into the allow-list of {product} ({} new); it holds {} now",
            text(&v, "rows"),
            text(&v, "added"),
            text(&v, "total")
        )
    });
    Ok(())
}

pub fn allowlist_list(api: &Api, product: &str, limit: Option<usize>, o: Output) -> CliResult<()> {
    let v = api.get_all(
        &format!("/api/v1/products/{product}/allowlist"),
        "hardware_ids",
        limit,
    )?;
    o.emit(&v, || {
        let ids = items(&v, "hardware_ids");
        if ids.is_empty() {
            return format!("the allow-list of {product} is empty");
        }
        ids.iter()
            .map(|i| crate::output::clean(i.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

pub fn allowlist_remove(api: &Api, product: &str, hardware_id: &str, o: Output) -> CliResult<()> {
    api.delete(&format!(
        "/api/v1/products/{product}/allowlist/{}",
        percent_encode(hardware_id)
    ))?;
    o.emit(&json!({"removed": hardware_id}), || {
        format!("removed {hardware_id} from the allow-list of {product}")
    });
    Ok(())
}

/// Encodes every byte but unreserved URL characters, for a path segment.
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
