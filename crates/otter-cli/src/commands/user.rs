//! `otter user create|list|disable`: people who sign in to the dashboard (issue 11).

use serde_json::json;

use crate::client::Api;
use crate::error::CliResult;
use crate::output::{items, joined, table, text, Output};

pub fn create(api: &Api, name: &str, role: &str, products: &[String], o: Output) -> CliResult<()> {
    let v = api.post(
        "/api/v1/people",
        &json!({"name": name, "role": role, "products": products}),
    )?;
    o.emit(&v, || {
        format!(
            "created {} {} ({})\none-time initial password (shown once; they choose their own at the first sign-in): {}",
            text(&v["person"], "role"),
            text(&v["person"], "name"),
            text(&v["person"], "id"),
            text(&v, "initial_password")
        )
    });
    Ok(())
}

fn state(p: &serde_json::Value) -> &'static str {
    if !p["disabled_at"].is_null() {
        "disabled"
    } else if !p["locked_until"].is_null() {
        "locked out"
    } else if p["must_change_password"] == true {
        "initial password"
    } else {
        "active"
    }
}

pub fn list(api: &Api, limit: Option<usize>, o: Output) -> CliResult<()> {
    let v = api.get_all("/api/v1/people", "people", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "people")
            .iter()
            .map(|p| {
                vec![
                    text(p, "name"),
                    text(p, "role"),
                    joined(&p["products"], ","),
                    text(p, "last_sign_in_at"),
                    state(p).into(),
                ]
            })
            .collect();
        table(
            &["name", "role", "products", "last sign-in", "state"],
            &rows,
        )
    });
    Ok(())
}

pub fn disable(api: &Api, name: &str, o: Output) -> CliResult<()> {
    let v = api.post(
        &format!(
            "/api/v1/people/{}/disable",
            super::product::percent_encode(name)
        ),
        &json!({}),
    )?;
    o.emit(&v, || {
        format!("disabled {name}; their sessions ended and they cannot sign in")
    });
    Ok(())
}
