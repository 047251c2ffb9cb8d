//! What a stock Arduino update client (ESP8266 `ESP8266httpUpdate`, arduino-esp32 `HTTPUpdate`)
//! gets from `GET /arduino/v1/{product}` (docs/arduino.md), kept free of HTTP types: the route
//! (`routes::arduino`) reads the request into a [`ClientReport`] and turns a [`Decision`] into
//! a response.

use otter_core::version::Version;

use crate::db::ReleaseRow;
use crate::services::assignment::fits_partition;

/// Which core sent the request: its headers are `x-ESP8266-*` or `x-ESP32-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Esp8266,
    Esp32,
}

impl Family {
    /// Whether a product of this chip (`Chip::name`) is served to this family.
    pub fn serves(self, product_chip: otter_core::Chip) -> bool {
        (product_chip == otter_core::Chip::Esp8266) == (self == Family::Esp8266)
    }
}

/// `x-ESP*-mode`: what the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An application image (`update()`).
    Sketch,
    /// Only whether there is a newer version (ESP8266 `getAvailableVersion()`).
    Version,
    /// A filesystem image (`updateFS()`): Otter releases are application images, so never one.
    Filesystem,
}

/// What the client says about itself, from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReport {
    pub family: Family,
    /// The STA MAC (or, without Wi-Fi, the base MAC), upper case with colons.
    pub mac: String,
    pub mode: Mode,
    /// `x-ESP*-version`, sent only when the sketch passes a current version.
    pub version: Option<String>,
    /// `x-ESP*-sketch-md5`, lower case.
    pub sketch_md5: Option<String>,
    /// `x-ESP32-sketch-sha256`, lower case.
    pub sketch_sha256: Option<String>,
    /// `x-ESP*-free-space`: the largest image the client will write.
    pub free_space: Option<u64>,
}

/// Normalises a MAC to `AA:BB:CC:DD:EE:FF`; `None` if it is not six hex pairs.
pub fn normalise_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_uppercase())
}

fn hex_of_len(s: &str, len: usize) -> Option<String> {
    let s = s.trim();
    (s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// Reads a client's headers (`name`, `value` pairs; names in any case). Errors say what is
/// missing or malformed.
pub fn parse_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<ClientReport, String> {
    let mut family = None;
    let mut fields = std::collections::HashMap::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let (f, field) = if let Some(f) = name.strip_prefix("x-esp8266-") {
            (Family::Esp8266, f)
        } else if let Some(f) = name.strip_prefix("x-esp32-") {
            (Family::Esp32, f)
        } else {
            continue;
        };
        match family {
            None => family = Some(f),
            Some(seen) if seen != f => {
                return Err("the request mixes x-ESP8266-* and x-ESP32-* headers".into())
            }
            Some(_) => {}
        }
        fields.insert(field.to_string(), value.trim().to_string());
    }
    let family = family.ok_or(
        "not an Arduino update client: no x-ESP8266-* or x-ESP32-* headers (docs/arduino.md)",
    )?;
    let raw_mac = fields
        .get("sta-mac")
        .or_else(|| fields.get("base-mac"))
        .ok_or("the request has no x-ESP*-STA-MAC (or x-ESP32-BASE-MAC) header")?;
    let mac = normalise_mac(raw_mac).ok_or("the STA MAC is not of the form AA:BB:CC:DD:EE:FF")?;
    let mode = match fields
        .get("mode")
        .map(|m| m.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("sketch") => Mode::Sketch,
        Some("version") => Mode::Version,
        Some(_) => Mode::Filesystem,
    };
    let free_space = match fields.get("free-space") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| "x-ESP*-free-space is not a number of bytes")?,
        ),
    };
    Ok(ClientReport {
        family,
        mac,
        mode,
        version: fields
            .get("version")
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(64).collect()),
        sketch_md5: fields.get("sketch-md5").and_then(|v| hex_of_len(v, 32)),
        sketch_sha256: fields.get("sketch-sha256").and_then(|v| hex_of_len(v, 64)),
        free_space,
    })
}

/// A release a client could get, with the MD5 of its image (the digest these clients know).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub release: ReleaseRow,
    pub md5: String,
}

/// The version the client runs: the one it sends, else that of the release whose MD5 it reports.
pub fn running_version(candidates: &[Candidate], report: &ClientReport) -> Option<String> {
    report.version.clone().or_else(|| {
        let md5 = report.sketch_md5.as_deref()?;
        candidates
            .iter()
            .find(|c| c.md5 == md5)
            .map(|c| c.release.version.clone())
    })
}

/// The release to serve, or none. The rule of check-ins (`assignment::choose_release`) with
/// what these clients can report: releases larger than the client's free space are left out
/// (as check-ins leave out those larger than the partition); the newest of the rest (version
/// order, then publication) is offered when it is newer than the version the client sends. A
/// client that sends no version is known by its sketch MD5: when that is a release here, the
/// release's version stands in; when it is an image the server does not know, the newest is
/// offered. A client that sends neither is offered nothing (we could not tell it from one
/// that runs the newest). Equal versions are never offered again: the MD5 a client reports can
/// differ from the file's (the ESP8266 core may patch the flash-mode byte), which would loop.
pub fn decide<'a>(candidates: &'a [Candidate], report: &ClientReport) -> Option<&'a Candidate> {
    let room = report.free_space.map(|f| f.min(u64::from(u32::MAX)) as i64);
    let newest = candidates
        .iter()
        .filter(|c| fits_partition(&c.release, room))
        .max_by(|a, b| {
            Version::new(&a.release.version)
                .cmp(&Version::new(&b.release.version))
                .then(a.release.published_at.cmp(&b.release.published_at))
        })?;
    match running_version(candidates, report) {
        Some(v) => (Version::new(&newest.release.version) > Version::new(&v)).then_some(newest),
        None => report.sketch_md5.is_some().then_some(newest),
    }
}

/// What became of an update served at the previous request, judged from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// The client now reports the served release's version or MD5: it installed it. Otherwise it
/// still runs something else: the write failed, the client refused the image, or it did not boot.
pub fn infer_outcome(served: &Candidate, report: &ClientReport) -> Outcome {
    let by_version = report
        .version
        .as_deref()
        .is_some_and(|v| Version::new(v) == Version::new(&served.release.version));
    let by_md5 = report.sketch_md5.as_deref() == Some(served.md5.as_str());
    if by_version || by_md5 {
        return Outcome::Success;
    }
    Outcome::Failure(format!(
        "release {} (version {}) was served, but at its next request the client still reports version {} and sketch MD5 {}: the write failed, the client refused the image, or the image did not boot",
        served.release.id,
        served.release.version,
        report.version.as_deref().unwrap_or("(none)"),
        report.sketch_md5.as_deref().unwrap_or("(none)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(version: &str, md5: &str, size: i64, published_at: i64) -> Candidate {
        Candidate {
            release: ReleaseRow {
                id: format!("rel_{version}"),
                product_id: 1,
                product: "p".into(),
                channel: "stable".into(),
                version: version.into(),
                chip: otter_core::Chip::Esp8266,
                security_counter: 0,
                size,
                sha256: crate::db::Sha256::of(version.as_bytes()),
                manifest_created_at: 0,
                expires_at: None,
                envelope: vec![],
                signed_by: String::new(),
                project_name: None,
                idf_version: None,
                published_at,
                published_by: "t".into(),
            },
            md5: md5.into(),
        }
    }

    fn report(version: Option<&str>, md5: Option<&str>, free: Option<u64>) -> ClientReport {
        ClientReport {
            family: Family::Esp8266,
            mac: "AA:BB:CC:DD:EE:FF".into(),
            mode: Mode::Sketch,
            version: version.map(Into::into),
            sketch_md5: md5.map(Into::into),
            sketch_sha256: None,
            free_space: free,
        }
    }

    #[test]
    fn offers_only_a_newer_version_that_fits() {
        let c = [cand("1.10.0", "b", 500, 1), cand("1.9.0", "a", 100, 2)];
        let pick = |r| decide(&c, &r).map(|c| c.release.version.clone());
        assert_eq!(
            pick(report(Some("1.0.0"), None, None)).as_deref(),
            Some("1.10.0")
        );
        assert_eq!(pick(report(Some("1.10.0"), Some("zz"), None)), None);
        assert_eq!(
            pick(report(Some("1.0.0"), None, Some(200))).as_deref(),
            Some("1.9.0")
        );
        assert_eq!(pick(report(Some("1.0.0"), None, Some(50))), None);
    }

    #[test]
    fn without_a_version_the_md5_names_the_running_release() {
        let c = [cand("2.0.0", "new", 1, 2), cand("1.0.0", "old", 1, 1)];
        let pick = |r| decide(&c, &r).map(|c| c.release.version.clone());
        assert_eq!(
            pick(report(None, Some("old"), None)).as_deref(),
            Some("2.0.0")
        );
        assert_eq!(pick(report(None, Some("new"), None)), None);
        assert_eq!(
            pick(report(None, Some("other"), None)).as_deref(),
            Some("2.0.0")
        );
        assert_eq!(pick(report(None, None, None)), None);
    }

    #[test]
    fn headers_are_read_in_any_case() {
        let r = parse_headers([
            ("X-ESP8266-STA-MAC", "18:fe:aa:aa:aa:aa"),
            ("x-esp8266-MODE", "version"),
            ("x-Esp8266-Version", "1.2.3"),
            ("x-ESP8266-free-space", "671744"),
            ("x-ESP8266-sketch-md5", "0123456789ABCDEF0123456789abcdef"),
        ])
        .unwrap();
        assert_eq!(r.mac, "18:FE:AA:AA:AA:AA");
        assert_eq!(r.mode, Mode::Version);
        assert_eq!(r.version.as_deref(), Some("1.2.3"));
        assert_eq!(r.free_space, Some(671744));
        assert_eq!(
            r.sketch_md5.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(parse_headers([("user-agent", "x")]).is_err());
        assert!(parse_headers([("x-ESP32-STA-MAC", "nope")]).is_err());
    }
}
