//! One validator for every string an admin sets (issue 8, item 13): token names, key names,
//! descriptions, hardware ids on allow-lists, and the lists that hold them.
//!
//! Such strings end up in logs, in CLI tables and in other people's terminals, so they are one
//! line of visible text of bounded length: no control characters (C0, DEL, C1: newline, ESC,
//! NUL...), no line or paragraph separators, and no bidirectional overrides, which make a line
//! display other than it reads. Errors name the field and the limit, never echo the value.

use crate::error::ApiError;

/// Longest token name, in characters.
pub const TOKEN_NAME_MAX: usize = 64;
/// Longest release key name, in characters.
pub const KEY_NAME_MAX: usize = 64;
/// Longest product description, in characters.
pub const DESCRIPTION_MAX: usize = 1024;
/// Most products a publisher token may be scoped to.
pub const TOKEN_PRODUCTS_MAX: usize = 64;
/// Longest hardware id (printable ASCII, as devices send it at enrolment).
pub const HARDWARE_ID_MAX: usize = 64;

fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Checks one line of text of 1 to `max` characters (`min` 0 allows it empty).
pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be {min} to {max} characters (it has {n})"
        )));
    }
    if let Some((i, c)) = value.chars().enumerate().find(|(_, c)| forbidden(*c)) {
        return Err(ApiError::bad_request(format!(
            "{field} must be one line of visible text: character {} is U+{:04X}, a control or formatting character",
            i + 1,
            c as u32
        )));
    }
    Ok(())
}

/// Checks a hardware id: 1 to 64 printable ASCII characters.
pub fn hardware_id(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = (1..=HARDWARE_ID_MAX).contains(&value.len())
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to {HARDWARE_ID_MAX} printable ASCII characters"
        )))
    }
}

/// Checks each item of a list with `each`, drops repeats (keeping the first), and bounds the
/// number of distinct items.
pub fn list(
    field: &str,
    items: Vec<String>,
    max: usize,
    each: impl Fn(&str) -> Result<(), ApiError>,
) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if out.contains(&item) {
            continue;
        }
        each(&item)?;
        out.push(item);
        if out.len() > max {
            return Err(ApiError::bad_request(format!(
                "{field} holds at most {max} distinct items"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_formatting_characters_and_length_are_refused_naming_the_field() {
        for bad in [
            "a\nb",
            "\u{1b}[31mred",
            "nul\0",
            "del\u{7f}",
            "\u{202e}txt.exe",
            "c1\u{85}",
        ] {
            let e = text("token name", bad, 1, 64).unwrap_err();
            assert!(
                e.message.starts_with("token name must be one line"),
                "{bad:?}: {}",
                e.message
            );
        }
        let e = text("key name", &"k".repeat(65), 1, 64).unwrap_err();
        assert!(
            e.message
                .contains("key name must be 1 to 64 characters (it has 65)"),
            "{}",
            e.message
        );
        assert!(text("key name", "", 1, 64).is_err());
        assert!(text("description", "", 0, 10).is_ok());
        assert!(text("token name", "CI für Küche – ok", 1, 64).is_ok());
        let l = list(
            "products",
            vec!["a".into(), "a".into(), "b".into()],
            2,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(l, ["a", "b"]);
        let e = list(
            "products",
            vec!["a".into(), "b".into(), "c".into()],
            2,
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(e.message.contains("at most 2"), "{}", e.message);
        assert!(hardware_id("hardware_id", "aa:bb").is_ok());
        assert!(hardware_id("hardware_id", "aa\tbb").is_err());
    }
}
