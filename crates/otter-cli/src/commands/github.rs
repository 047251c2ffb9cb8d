//! `otter product follow-github|unfollow-github`, and the follow shown by `otter product show`.

use serde_json::{json, Value};

use crate::client::Api;
use crate::error::{CliError, CliResult};
use crate::output::{items, text, Output};

/// What `follow-github` sets.
pub struct FollowArgs<'a> {
    pub repo: &'a str,
    pub asset_pattern: &'a str,
    pub channel: &'a str,
    pub token_env: Option<&'a str>,
    pub sign_on_import: bool,
}

pub fn follow(api: &Api, product: &str, a: &FollowArgs<'_>, o: Output) -> CliResult<()> {
    let token = match a.token_env {
        None => None,
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "--github-token-env {var}: the environment variable {var} is not set or empty"
                    ))
                })?
                .trim()
                .to_string(),
        ),
    };
    let v = api.put(
        &format!("/api/v1/products/{product}/github"),
        &json!({
            "repo": a.repo,
            "asset_pattern": a.asset_pattern,
            "channel": a.channel,
            "token": token,
            "sign_on_import": a.sign_on_import,
        }),
    )?;
    o.emit(&v, || {
        format!(
            "{product} follows github.com/{} (assets {}, channel {}{}); the server polls it now, then every github_poll_interval_s",
            text(&v, "repo"),
            text(&v, "asset_pattern"),
            text(&v, "channel"),
            if v["token_set"] == true { ", with a token" } else { "" }
        )
    });
    Ok(())
}

pub fn unfollow(api: &Api, product: &str, o: Output) -> CliResult<()> {
    api.delete(&format!("/api/v1/products/{product}/github"))?;
    let v = json!({"product": product, "follows_github": false});
    o.emit(&v, || {
        format!("{product} no longer follows a GitHub repository")
    });
    Ok(())
}

/// The follow as `otter product show` prints it.
pub fn describe(f: &Value) -> String {
    let mut t = format!(
        "GitHub: follows {} (assets {}, channel {}{})\n",
        text(f, "repo"),
        text(f, "asset_pattern"),
        text(f, "channel"),
        if f["token_set"] == true {
            ", token set"
        } else {
            ""
        }
    );
    t += &match (&f["last_poll_at"], f["last_error"].as_str()) {
        (Value::Null, _) => "  not polled yet\n".to_string(),
        (_, Some(e)) => format!("  last poll FAILED: {e}\n"),
        (_, None) => "  last poll worked\n".to_string(),
    };
    for i in items(f, "imports") {
        if i["imported"] == true {
            t += &format!(
                "  {} {}: imported as {}\n",
                text(i, "tag_name"),
                text(i, "asset_name"),
                text(i, "release_id")
            );
        } else {
            t += &format!(
                "  {} {}: REFUSED: {}\n",
                text(i, "tag_name"),
                text(i, "asset_name"),
                text(i, "reason")
            );
        }
    }
    t
}
