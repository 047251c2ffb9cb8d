//! `otter product create|list|show|rotate-secret` and `otter product key add|remove`.

use std::path::Path;

use serde_json::{json, Value};

use super::keys::read_public;
use crate::client::Api;
use crate::error::{CliError, CliResult};
use crate::output::{items, table, text, Output};

pub fn create(
    api: &Api,
    name: &str,
    chip: &str,
    description: Option<&str>,
    o: Output,
) -> CliResult<()> {
    let chip: otter_core::Chip = chip.parse().map_err(|e| CliError::usage(format!("{e}")))?;
    let mut body = json!({"name": name, "chip": chip.name()});
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    let v = api.post("/api/v1/products", &body)?;
    o.emit(&v, || {
        format!(
            "created product {} for {}\nenrolment secret (shown once; devices use it to enrol): {}",
            text(&v["product"], "name"),
            text(&v["product"], "chip"),
            text(&v, "enrollment_secret")
        )
    });
    Ok(())
}

pub fn list(api: &Api, o: Output) -> CliResult<()> {
    let v = api.get("/api/v1/products")?;
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
    let p = api.get(&format!("/api/v1/products/{name}"))?;
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
        t
    });
    Ok(())
}

pub fn rotate_secret(api: &Api, name: &str, o: Output) -> CliResult<()> {
    let v = api.post(
        &format!("/api/v1/products/{name}/enrollment-secret"),
        &Value::Null,
    )?;
    o.emit(&v, || {
        format!(
            "new enrolment secret for {name} (the old one no longer works): {}",
            text(&v, "enrollment_secret")
        )
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
