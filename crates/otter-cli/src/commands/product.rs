//! `otter product create|list|show|rotate-secret` and `otter product key add|remove`.

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
