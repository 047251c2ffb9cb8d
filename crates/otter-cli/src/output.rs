//! Printing results: human text by default, one JSON document on stdout with `--json`.

use std::io::Write;

use serde_json::Value;

use crate::error::CliError;

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints a result: `value` as JSON, or the text `human` builds for people.
    pub fn emit(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            stdout_line(&serde_json::to_string_pretty(value).expect("JSON values serialise"));
        } else {
            let text = human();
            if !text.is_empty() {
                stdout_line(text.trim_end());
            }
        }
    }

    /// A side note for people (stderr), silent in JSON mode.
    pub fn note(&self, text: &str) {
        if !self.json {
            stderr_line(text);
        }
    }

    /// Prints an error on stderr: `{"error", "message"}` in JSON mode.
    pub fn error(&self, err: &CliError) {
        if self.json {
            stderr_line(
                &serde_json::json!({"error": err.code, "message": err.message}).to_string(),
            );
        } else {
            stderr_line(&format!("error: {}", err.message));
        }
    }
}

/// Writes bytes on stdout as they are (a completion script), ending as [`stdout_line`] does when
/// the reader has gone.
pub fn raw(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        stderr_line(&format!("error: cannot write the output: {e}"));
        std::process::exit(2);
    }
}

/// Writes a line on stdout. When the reader has gone (`otter inspect fw.bin | head`), the command
/// ends quietly with exit code 0, as Unix tools do; any other write error ends it with exit code 2.
fn stdout_line(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        stderr_line(&format!("error: cannot write the output: {e}"));
        std::process::exit(2);
    }
}

/// Writes a line on stderr; a closed stderr is ignored (there is nowhere left to say so).
fn stderr_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Formats rows as aligned columns, with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(clean(cell).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(|c| clean(c)).collect())),
    );
    out.join("\n")
}

/// A JSON field as display text ("-" when missing or null), with control characters escaped.
pub fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// Text from a server made safe for a terminal: control characters (newline, ESC, NUL, C1...)
/// and bidirectional overrides are shown as `\u{..}` escapes instead of acting on the terminal
/// (issue 8, item 13: names set before the server refused them, or by another server).
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let formatting = matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        if c.is_control() || formatting {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON array of strings as one escaped, comma-separated cell.
pub fn joined(v: &Value, sep: &str) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(clean)
                .collect::<Vec<_>>()
                .join(sep)
        })
        .unwrap_or_default()
}

/// The array under `key` (empty when missing).
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Unix seconds as ISO 8601 UTC (`2026-11-30T23:35:42Z`), the form of every time in human output.
pub fn iso8601(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (Unix seconds)"))
}

/// A JSON field holding Unix seconds, as ISO 8601 UTC text ("-" when missing or null).
pub fn time_text(v: &Value, key: &str) -> String {
    v[key].as_i64().map_or_else(|| text(v, key), iso8601)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal_raw() {
        assert_eq!(clean("ci\nINFO forged"), "ci\\u{a}INFO forged");
        assert_eq!(clean("\u{1b}[2J\u{0}"), "\\u{1b}[2J\\u{0}");
        assert_eq!(clean("Küche \u{202e}gpj.exe"), "Küche \\u{202e}gpj.exe");
        let t = table(&["name"], &[vec!["a\u{1b}b".into()]]);
        assert!(!t.contains('\u{1b}'), "{t}");
    }
}
