//! `otter token create|list|revoke` and `otter whoami`.

use serde_json::json;

use crate::client::Api;
use crate::error::CliResult;
use crate::output::{items, joined, table, text, Output};

pub fn create(
    api: &Api,
    role: &str,
    products: &[String],
    name: Option<&str>,
    o: Output,
) -> CliResult<()> {
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        if products.is_empty() {
            role.to_string()
        } else {
            format!("{role}-{}", products.join("-"))
        }
    });
    let v = api.post(
        "/api/v1/tokens",
        &json!({"name": name, "role": role, "products": products}),
    )?;
    o.emit(&v, || {
        format!(
            "created {} token {} ({})\ntoken (shown once; store it in your CI's secrets as OTTER_TOKEN): {}",
            text(&v["info"], "role"),
            text(&v["info"], "name"),
            text(&v["info"], "id"),
            text(&v, "token")
        )
    });
    Ok(())
}

pub fn list(api: &Api, limit: Option<usize>, o: Output) -> CliResult<()> {
    let v = api.get_all("/api/v1/tokens", "tokens", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "tokens")
            .iter()
            .map(|t| {
                vec![
                    text(t, "id"),
                    text(t, "name"),
                    text(t, "role"),
                    joined(&t["products"], ","),
                    text(t, "last_used_at"),
                    if t["revoked"] == true {
                        "revoked"
                    } else {
                        "active"
                    }
                    .into(),
                ]
            })
            .collect();
        table(
            &["id", "name", "role", "products", "last used", "state"],
            &rows,
        )
    });
    Ok(())
}

pub fn revoke(api: &Api, id: &str, o: Output) -> CliResult<()> {
    api.delete(&format!("/api/v1/tokens/{id}"))?;
    o.emit(&json!({"revoked": id}), || {
        format!("revoked token {id}; it stops working at once")
    });
    Ok(())
}

pub fn whoami(api: &Api, o: Output) -> CliResult<()> {
    let v = api.get("/api/v1/whoami")?;
    o.emit(&v, || {
        format!(
            "{} ({}){}",
            text(&v, "name"),
            text(&v, "role"),
            v["products"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|_| format!(", products: {}", joined(&v["products"], ", ")))
                .unwrap_or_default()
        )
    });
    Ok(())
}
