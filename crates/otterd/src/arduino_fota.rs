//! esp32FOTA (chrisjoyce911/esp32FOTA) manifests, kept free of HTTP types: the route
//! (`routes::arduino_fota`) authenticates, finds the releases and writes what this module builds.
//!
//! The library fetches a JSON manifest, keeps the first entry whose `type` equals its configured
//! firmware name and whose `version` is newer than its own, and downloads that entry's `url`.
//! It reads `version` as an integer (`uint16`) or a string parsed by `semver_parse_version`:
//! up to three dot-separated decimal numbers and nothing else (`1.2.3-rc1` or `v1.2.3` are not
//! numbers there and become `0.0.0`). So Otter sends only releases whose version it can write
//! in that form, as `"MAJOR.MINOR.PATCH"`.

use otter_core::version::Version;

use crate::db::ReleaseRow;

/// Largest manifest the library parses (`DynamicJsonDocument(2048)`); ours is one entry.
pub const MANIFEST_MAX_BYTES: usize = 2048;

/// The MAC of `ESP.getEfuseMac()` printed in decimal (the `?id=` the library appends when
/// `use_device_id` is set): its six low bytes, first MAC byte lowest. `None` if not a number
/// of at most 48 bits.
pub fn mac_of_device_id(id: &str) -> Option<String> {
    let n: u64 = id.trim().parse().ok()?;
    if n >> 48 != 0 {
        return None;
    }
    let b = n.to_le_bytes();
    Some(
        b[..6]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// A release's version as esp32FOTA compares it (`"MAJOR.MINOR.PATCH"`), or `None` when the
/// library would read it as `0.0.0` (anything but one to three decimal numbers, an optional
/// leading `v` aside, each fitting an `int`).
pub fn esp32fota_version(version: &str) -> Option<String> {
    let v = version.strip_prefix(['v', 'V']).unwrap_or(version);
    let parts: Vec<&str> = v.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut nums = [0i32; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nums[i] = p.parse().ok()?;
    }
    Some(format!("{}.{}.{}", nums[0], nums[1], nums[2]))
}

/// The release to list: the newest (Otter's version order, then publication) of those whose
/// version esp32FOTA can compare.
pub fn choose(candidates: &[ReleaseRow]) -> Option<&ReleaseRow> {
    candidates
        .iter()
        .filter(|r| esp32fota_version(&r.version).is_some())
        .max_by(|a, b| {
            Version::new(&a.version)
                .cmp(&Version::new(&b.version))
                .then(a.published_at.cmp(&b.published_at))
        })
}

/// The manifest: one entry for `release`, or an empty array (no update) without one.
pub fn manifest(firmware_type: &str, release: Option<(&ReleaseRow, String)>) -> serde_json::Value {
    match release {
        Some((r, url)) => serde_json::json!({
            "type": firmware_type,
            "version": esp32fota_version(&r.version).unwrap_or_default(),
            "url": url,
        }),
        None => serde_json::json!([]),
    }
}

/// Whether `s` is a usable firmware type (the library's `cfg.name`): 1 to 64 printable ASCII
/// characters.
pub fn valid_type(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_efuse_macs_low_byte_first() {
        // MAC 24:0A:C4:12:34:56 is 0x563412C40A24 from ESP.getEfuseMac().
        assert_eq!(
            mac_of_device_id(&0x5634_12C4_0A24u64.to_string()).as_deref(),
            Some("24:0A:C4:12:34:56")
        );
        assert_eq!(mac_of_device_id("0").as_deref(), Some("00:00:00:00:00:00"));
        assert_eq!(mac_of_device_id(&(1u64 << 48).to_string()), None);
        assert_eq!(mac_of_device_id("12ab"), None);
        assert_eq!(mac_of_device_id("-1"), None);
    }

    #[test]
    fn versions_are_written_as_the_library_parses_them() {
        assert_eq!(esp32fota_version("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(esp32fota_version("v2.10").as_deref(), Some("2.10.0"));
        assert_eq!(esp32fota_version("7").as_deref(), Some("7.0.0"));
        for bad in [
            "1.2.3-rc1",
            "1.2.3+build",
            "1.2.3.4",
            "",
            "1..2",
            "abc",
            "99999999999",
        ] {
            assert_eq!(esp32fota_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn types_are_bounded_printable_ascii() {
        assert!(valid_type("esp32-fota-http"));
        assert!(!valid_type(""));
        assert!(!valid_type("a b"));
        assert!(!valid_type(&"x".repeat(65)));
    }
}
