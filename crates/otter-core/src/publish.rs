//! Rules a release must meet before it is published, shared by the server (at upload) and the
//! CLI (before it uploads), so that both refuse the same thing with the same words.
//!
//! These are not format rules (a manifest that breaks them still decodes and verifies): they
//! refuse releases that no device could install, or that would strand devices.
//! - [`check_installable`]: what every device refuses (today: delta payloads).
//! - [`check_counter`]: a release must not lower the channel's security counter, or devices
//!   that took the higher one are never offered anything newer that they accept, and devices
//!   below it are offered the lower one and never reach the higher.
//! - [`check_created_at`]: a creation time in the future means a wrong clock where it was
//!   signed (or a manifest made to look newer than it is).

use crate::manifest::Manifest;

/// Default bound, in seconds, on how far in the future a manifest's creation time may lie.
pub const DEFAULT_MAX_FUTURE_S: u64 = 600;

/// Refuses a manifest that no device can install.
pub fn check_installable(m: &Manifest) -> Result<(), String> {
    if let Some(base) = m.delta_base_sha256 {
        return Err(format!(
            "the manifest is marked as a delta against base image {}, but delta releases are not supported yet: every device refuses them and installs whole images only; sign the full image without a delta base",
            hex::encode(base)
        ));
    }
    Ok(())
}

/// The release of a channel holding the highest security counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighestCounter {
    /// Its version.
    pub version: String,
    /// Its security counter.
    pub security_counter: u32,
}

/// Refuses a counter lower than the highest one already published on the channel, unless the
/// publisher explicitly allows it (`allow_lower`).
pub fn check_counter(
    channel: &str,
    new_counter: u32,
    highest: Option<&HighestCounter>,
    allow_lower: bool,
) -> Result<(), String> {
    match highest {
        Some(h) if new_counter < h.security_counter && !allow_lower => Err(format!(
            "security counter {new_counter} is lower than {} of release {} on channel {channel:?}: devices that installed {} refuse this release, and devices below {} are offered this one instead and never reach {}; sign it with --security-counter {} or more, or pass --allow-lower-counter (API: allow_lower_counter=true) if this is really meant",
            h.security_counter,
            h.version,
            h.version,
            h.security_counter,
            h.version,
            h.security_counter,
        )),
        _ => Ok(()),
    }
}

/// Refuses a creation time more than `max_future_s` seconds after `now` (both Unix seconds).
pub fn check_created_at(created_at: u64, now: u64, max_future_s: u64) -> Result<(), String> {
    if created_at > now.saturating_add(max_future_s) {
        return Err(format!(
            "the manifest's creation time {created_at} is {} s in the future (more than the {max_future_s} s allowed); the clock where it was signed is wrong: fix it and sign again",
            created_at - now
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_counter_is_refused_unless_allowed() {
        let h = HighestCounter {
            version: "5.0.0".into(),
            security_counter: 5,
        };
        let e = check_counter("stable", 2, Some(&h), false).unwrap_err();
        assert!(
            e.contains("lower than 5") && e.contains("5.0.0") && e.contains("allow-lower-counter"),
            "{e}"
        );
        assert!(check_counter("stable", 2, Some(&h), true).is_ok());
        assert!(check_counter("stable", 5, Some(&h), false).is_ok());
        assert!(check_counter("stable", 6, Some(&h), false).is_ok());
        assert!(check_counter("stable", 0, None, false).is_ok());
    }

    #[test]
    fn a_delta_manifest_is_not_installable() {
        let mut m = Manifest {
            product: "p".into(),
            chip: crate::Chip::Esp32,
            version: "1.0.0".into(),
            security_counter: 0,
            image_size: 1,
            image_sha256: [1; 32],
            created_at: 0,
            expires_at: None,
            delta_base_sha256: None,
        };
        assert!(check_installable(&m).is_ok());
        m.delta_base_sha256 = Some([2; 32]);
        let e = check_installable(&m).unwrap_err();
        assert!(
            e.contains("not supported") && e.contains(&"02".repeat(32)),
            "{e}"
        );
    }

    #[test]
    fn creation_time_may_be_ahead_only_by_the_skew() {
        assert!(check_created_at(1_000, 1_000, 600).is_ok());
        assert!(check_created_at(1_600, 1_000, 600).is_ok());
        assert!(check_created_at(1, 1_000, 600).is_ok());
        let e = check_created_at(1_601, 1_000, 600).unwrap_err();
        assert!(e.contains("601 s in the future"), "{e}");
        assert!(check_created_at(u64::MAX, u64::MAX - 1, 0).is_err());
    }
}
