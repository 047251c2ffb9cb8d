//! `otter audit list`: the server's audit log, newest first (issue 9; admin tokens only).

use crate::client::Api;
use crate::commands::signing::parse_duration;
use crate::error::{CliError, CliResult};
use crate::output::{items, table, text, Output};

/// Filters of `otter audit list`, as given on the command line.
pub struct Filters<'a> {
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub target: Option<&'a str>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
}

/// Unix seconds of a time argument: Unix seconds, RFC 3339 (`2026-01-31T12:00:00Z`), or a
/// duration back from now (`30m`, `24h`, `7d`).
pub fn parse_time(flag: &str, text: &str) -> CliResult<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.unix_timestamp());
    }
    let ago = parse_duration(text).map_err(|_| {
        CliError::usage(format!(
            "--{flag} {text:?} is not a time: give Unix seconds, an RFC 3339 time (2026-01-31T12:00:00Z) or a duration back from now (30m, 24h, 7d)"
        ))
    })?;
    Ok(time::OffsetDateTime::now_utc().unix_timestamp() - ago as i64)
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn list(api: &Api, f: &Filters, limit: Option<usize>, o: Output) -> CliResult<()> {
    let mut query = Vec::new();
    for (key, value) in [
        ("actor", f.actor),
        ("action", f.action),
        ("target", f.target),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", encode(v)));
        }
    }
    if let Some(t) = f.since {
        query.push(format!("since={}", parse_time("since", t)?));
    }
    if let Some(t) = f.until {
        query.push(format!("until={}", parse_time("until", t)?));
    }
    let path = if query.is_empty() {
        "/api/v1/audit".to_string()
    } else {
        format!("/api/v1/audit?{}", query.join("&"))
    };
    let v = api.get_all(&path, "entries", limit)?;
    o.emit(&v, || {
        let rows: Vec<Vec<String>> = items(&v, "entries")
            .iter()
            .map(|e| {
                // Behind a trusted proxy, the client it forwarded is where the request came from.
                let from = if e["forwarded_for"].is_string() {
                    "forwarded_for"
                } else {
                    "address"
                };
                ["at", "actor", "action", "target", "status", from, "detail"]
                    .iter()
                    .map(|k| text(e, k))
                    .collect()
            })
            .collect();
        table(
            &[
                "at", "actor", "action", "target", "status", "from", "detail",
            ],
            &rows,
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_query_values() {
        assert_eq!(parse_time("since", "1700000000").unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("since", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let day_ago = parse_time("since", "1d").unwrap();
        assert!((now - 86_400 - day_ago).abs() <= 2);
        assert!(parse_time("since", "yesterday").is_err());
        assert_eq!(
            encode("otterd admin (offline)"),
            "otterd%20admin%20%28offline%29"
        );
        assert_eq!(encode("token.revoke"), "token.revoke");
    }
}
