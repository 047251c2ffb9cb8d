//! `otter rollout create|list|show|pause|resume|abort|advance` (docs/rollouts.md).

use serde_json::{json, Value};

use super::signing::parse_duration;
use crate::client::Api;
use crate::error::CliResult;
use crate::output::{items, table, text, Output};

/// What `otter rollout create` sends.
pub struct CreateArgs<'a> {
    pub release: &'a str,
    /// (`channel` | `tag` | `group` | `filter`, value).
    pub target: (&'static str, &'a str),
    pub stages: &'a str,
    pub failure_threshold: &'a str,
    pub min_finished: u32,
    pub success_threshold: Option<&'a str>,
    pub auto_advance: bool,
    pub soak: Option<&'a str>,
    pub rollback: bool,
    pub optional: bool,
    pub window: Option<&'a str>,
    pub rate: Option<u32>,
}

pub fn create(api: &Api, a: CreateArgs<'_>, o: Output) -> CliResult<()> {
    let soak_s = a.soak.map(parse_duration).transpose()?.unwrap_or(0);
    let mut body = json!({
        "release_id": a.release,
        "stages": a.stages,
        "failure_threshold": a.failure_threshold,
        "min_finished": a.min_finished,
        "auto_advance": a.auto_advance,
        "soak_s": soak_s,
        "rollback": a.rollback,
        "optional": a.optional,
    });
    body[a.target.0] = json!(a.target.1);
    if let Some(s) = a.success_threshold {
        body["success_threshold"] = json!(s);
    }
    if let Some(w) = a.window {
        body["window"] = json!(w);
    }
    if let Some(r) = a.rate {
        body["rate_per_minute"] = json!(r);
    }
    let v = api.post("/api/v1/rollouts", &body)?;
    o.emit(&v, || describe(&v));
    Ok(())
}

pub fn list(api: &Api, product: Option<&str>, limit: Option<usize>, o: Output) -> CliResult<()> {
    let path = match product {
        Some(p) => format!("/api/v1/rollouts?product={p}"),
        None => "/api/v1/rollouts".into(),
    };
    let v = api.get_all(&path, "rollouts", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "rollouts")
            .iter()
            .map(|r| {
                vec![
                    text(r, "id"),
                    text(r, "product"),
                    text(r, "version"),
                    target(r),
                    format!("{}/{}", text(r, "current_stage"), stage_list(r)),
                    text(r, "state"),
                ]
            })
            .collect();
        if rows.is_empty() {
            return "no rollouts".into();
        }
        table(
            &["id", "product", "version", "target", "stage", "state"],
            &rows,
        )
    });
    Ok(())
}

pub fn show(api: &Api, id: &str, o: Output) -> CliResult<()> {
    let v = api.get(&format!("/api/v1/rollouts/{id}"))?;
    o.emit(&v, || describe(&v));
    Ok(())
}

/// `pause`, `resume`, `abort` or `advance`.
pub fn act(api: &Api, id: &str, what: &str, reason: Option<&str>, o: Output) -> CliResult<()> {
    let body = match reason {
        Some(r) => json!({"reason": r}),
        None => json!({}),
    };
    let body = if what == "resume" || what == "advance" {
        Value::Null
    } else {
        body
    };
    let v = api.post(&format!("/api/v1/rollouts/{id}/{what}"), &body)?;
    o.emit(&v, || describe(&v));
    Ok(())
}

fn target(r: &Value) -> String {
    format!(
        "{}={}",
        text(&r["target"], "kind"),
        text(&r["target"], "value")
    )
}

fn stage_list(r: &Value) -> String {
    r["stages"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|p| format!("{p}%"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn describe(v: &Value) -> String {
    let mut t = vec![
        format!("rollout          {}", text(v, "id")),
        format!(
            "release          {} {} ({})",
            text(v, "product"),
            text(v, "version"),
            text(v, "release_id")
        ),
        format!("target           {}", target(v)),
        format!(
            "stages           {} (open: {})",
            stage_list(v),
            text(v, "current_stage")
        ),
        format!("state            {}", text(v, "state")),
    ];
    if v["pause_reason"].is_string() {
        t.push(format!("reason           {}", text(v, "pause_reason")));
    }
    t.push(format!(
        "thresholds       failure {} (after {} finished), success {}",
        text(v, "failure_threshold"),
        text(v, "min_finished"),
        text(v, "success_threshold")
    ));
    let states = [
        "assigned",
        "downloading",
        "installing",
        "success",
        "failure",
        "rolled_back",
        "refused",
        "cancelled",
    ];
    let rows: Vec<Vec<String>> = items(v, "progress")
        .iter()
        .map(|p| {
            let mut row = vec![text(p, "stage"), format!("{}%", text(p, "percent"))];
            row.extend(states.iter().map(|s| text(&p["counts"], s)));
            row
        })
        .collect();
    let mut header = vec!["stage", "share"];
    header.extend(states);
    t.push(table(&header, &rows));
    t.join("\n")
}
