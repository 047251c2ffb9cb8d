//! `otter group create|list|show|delete|add|remove`: groups of a product's devices, a static
//! list or a saved filter (docs/devices.md).

use serde_json::{json, Value};

use crate::client::Api;
use crate::error::CliResult;
use crate::output::{items, table, text, Output};

fn describe(g: &Value) -> String {
    match g["kind"].as_str() {
        Some("filter") => format!("filter {}", text(g, "filter")),
        _ => format!("{} devices", text(g, "members")),
    }
}

/// Creates a static group (`devices`) or a filter group (`filter`).
pub fn create(
    api: &Api,
    product: &str,
    name: &str,
    devices: Option<&[String]>,
    filter: Option<&str>,
    o: Output,
) -> CliResult<()> {
    let body = match (devices, filter) {
        (Some(d), _) => json!({"name": name, "devices": d}),
        (None, f) => json!({"name": name, "filter": f}),
    };
    let v = api.post(&format!("/api/v1/products/{product}/groups"), &body)?;
    o.emit(&v, || {
        format!(
            "created group {} of {product}: {}; list its devices with `otter device list --product {product} --group {}`",
            text(&v, "name"),
            describe(&v),
            text(&v, "name")
        )
    });
    Ok(())
}

pub fn list(api: &Api, product: &str, limit: Option<usize>, o: Output) -> CliResult<()> {
    let v = api.get_all(
        &format!("/api/v1/products/{product}/groups"),
        "groups",
        limit,
    )?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "groups")
            .iter()
            .map(|g| {
                vec![
                    text(g, "name"),
                    text(g, "kind"),
                    describe(g),
                    text(g, "created_by"),
                ]
            })
            .collect();
        if rows.is_empty() {
            return format!("{product} has no groups");
        }
        table(&["name", "kind", "devices", "created by"], &rows)
    });
    Ok(())
}

pub fn show(api: &Api, product: &str, name: &str, o: Output) -> CliResult<()> {
    let v = api.get(&format!("/api/v1/products/{product}/groups/{name}"))?;
    o.emit(&v, || {
        [
            "name",
            "product",
            "kind",
            "filter",
            "members",
            "created_at",
            "created_by",
        ]
        .iter()
        .map(|k| format!("{k:<12}{}", text(&v, k)))
        .collect::<Vec<_>>()
        .join("\n")
    });
    Ok(())
}

pub fn delete(api: &Api, product: &str, name: &str, o: Output) -> CliResult<()> {
    api.delete(&format!("/api/v1/products/{product}/groups/{name}"))?;
    o.emit(&json!({"deleted": name, "product": product}), || {
        format!("deleted group {name} of {product}; its devices are unchanged")
    });
    Ok(())
}

/// Adds (`add`) or removes devices of a static group.
pub fn members(
    api: &Api,
    product: &str,
    name: &str,
    devices: &[String],
    add: bool,
    o: Output,
) -> CliResult<()> {
    let path = format!("/api/v1/products/{product}/groups/{name}/members");
    let body = json!({ "devices": devices });
    let v = if add {
        api.post(&path, &body)?
    } else {
        api.delete_json(&path, &body)?
    };
    o.emit(&v, || {
        format!("group {name} of {product}: {}", describe(&v))
    });
    Ok(())
}
