//! Pages of every list endpoint (issue 8, item 14; docs/api.md, "Pages").
//!
//! A list takes `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `cursor`, and answers
//! its items with `next`: the cursor of the following page, or `null` after the last. Cursors are
//! opaque to clients: base64url of the endpoint's name and the sort key of the last item, so a
//! page never repeats or skips an item while others are added.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::ApiError;

/// The query of a list without filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// Items on a page when the client does not say.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most items a page holds.
pub const MAX_LIMIT: i64 = 1000;
/// Longest cursor accepted (ours are far shorter).
const MAX_CURSOR: usize = 512;
const SEP: char = '\u{1f}';

/// Reads `limit`.
pub fn limit(raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError {
            code: "bad_limit",
            ..ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ))
        }),
    }
}

/// A cursor for `kind` after the item with these key parts.
pub fn encode(kind: &str, parts: &[String]) -> String {
    let mut s = String::from(kind);
    for p in parts {
        s.push(SEP);
        s.push_str(p);
    }
    URL_SAFE_NO_PAD.encode(s)
}

/// `400 bad_cursor`.
pub fn bad_cursor() -> ApiError {
    ApiError {
        code: "bad_cursor",
        ..ApiError::bad_request(
            "cursor is not one this list gave out; use the `next` value of the previous page, or start again without a cursor",
        )
    }
}

/// The key parts of a cursor of `kind` with `n` parts, or a clear `400 bad_cursor`.
pub fn decode(kind: &str, cursor: &str, n: usize) -> Result<Vec<String>, ApiError> {
    let bad = bad_cursor;
    if cursor.len() > MAX_CURSOR {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.split(SEP);
    if parts.next() != Some(kind) {
        return Err(bad());
    }
    let parts: Vec<String> = parts.map(String::from).collect();
    if parts.len() != n {
        return Err(bad());
    }
    Ok(parts)
}

/// A cursor of (number, text), e.g. (created_at, id).
pub fn decode_num_text(
    kind: &str,
    cursor: Option<&str>,
) -> Result<Option<(i64, String)>, ApiError> {
    cursor
        .map(|c| {
            let p = decode(kind, c, 2)?;
            let n = p[0].parse().map_err(|_| bad_cursor())?;
            Ok((n, p[1].clone()))
        })
        .transpose()
}

/// Cuts a fetch of `limit + 1` rows to `limit` and makes the next cursor from the last kept row.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(key);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        let c = encode("devices", &["12".into(), "dev_x".into()]);
        assert_eq!(decode("devices", &c, 2).unwrap(), ["12", "dev_x"]);
        assert_eq!(decode("tokens", &c, 2).unwrap_err().code, "bad_cursor");
        assert_eq!(decode("devices", "!!", 2).unwrap_err().code, "bad_cursor");
        assert_eq!(decode("devices", &c, 1).unwrap_err().code, "bad_cursor");
        assert!(decode_num_text(
            "devices",
            Some(&encode("devices", &["x".into(), "y".into()]))
        )
        .is_err());
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("0")).unwrap_err().code, "bad_limit");
        assert_eq!(limit(Some("1001")).unwrap_err().code, "bad_limit");
    }
}
