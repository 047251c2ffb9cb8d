//! Coalesced last-seen times (issue 10): a check-in that reports nothing new is not a database
//! write of its own.
//!
//! A check-in whose chip, version, security counter, image hash and partition size equal what
//! the device row holds changes only `last_seen_at`. That time is kept in memory and written
//! for all such devices together, in transactions of 256 devices, every `last_seen_flush_s` seconds (and
//! at shutdown). A check-in that reports anything new is written at once, as before; status
//! events and a check-in's `last_outcome` are never deferred. A crash (kill -9, power cut)
//! loses at most the last window's last-seen times: those devices look as seen up to
//! `last_seen_flush_s` seconds earlier than they were (docs/configuration.md).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::db::{CheckinReport, Database, DbResult, DeviceRow};

/// Devices whose last-seen times one transaction writes.
pub const BATCH: usize = 256;

/// Last-seen times waiting to be written, one per device (the newest).
#[derive(Debug, Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<String, i64>>,
}

impl LastSeen {
    /// Notes that `device_id` was seen at `at`.
    pub fn note(&self, device_id: &str, at: i64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(device_id) {
            Some(t) => *t = (*t).max(at),
            None => {
                p.insert(device_id.to_owned(), at);
            }
        }
    }

    /// Devices waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes the times noted so far, [`BATCH`] devices a transaction, letting other work run
    /// between batches (one long transaction would stall check-ins that must write). On failure
    /// the times not yet written are kept for the next flush. Returns how many were written.
    pub async fn flush(&self, db: &dyn Database) -> DbResult<usize> {
        let all: Vec<(String, i64)> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.drain().collect()
        };
        for (i, batch) in all.chunks(BATCH).enumerate() {
            if let Err(e) = db.touch_devices(batch).await {
                for (id, at) in &all[i * BATCH..] {
                    self.note(id, *at);
                }
                return Err(e);
            }
            tokio::task::yield_now().await;
        }
        Ok(all.len())
    }
}

/// Whether a check-in reports exactly what `device` holds (then only its last-seen time moves).
pub fn unchanged(device: &DeviceRow, r: &CheckinReport) -> bool {
    device.last_seen_at.is_some()
        && device.chip == Some(r.chip)
        && device.version.as_deref() == Some(r.version.as_str())
        && device.security_counter == Some(r.security_counter)
        && device.image_sha256 == r.image_sha256
        && r.partition_size
            .is_none_or(|p| device.partition_size == Some(p))
}

/// Records a check-in: at once when it reports something new or coalescing is off
/// (`flush_s == 0`), otherwise its last-seen time waits for the next flush.
pub async fn record_checkin(
    db: &dyn Database,
    last_seen: &LastSeen,
    flush_s: u64,
    device: &DeviceRow,
    r: &CheckinReport,
) -> DbResult<()> {
    if flush_s > 0 && unchanged(device, r) {
        last_seen.note(&device.id, r.at);
        metrics::counter!("otter_checkins_coalesced_total").increment(1);
        return Ok(());
    }
    db.record_checkin(&device.id, r).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Sha256;
    use otter_core::Chip;

    fn device() -> DeviceRow {
        DeviceRow {
            id: "dev_1".into(),
            product_id: 1,
            product: "p".into(),
            hardware_id: "hw".into(),
            channel: "stable".into(),
            token_hash: "t".into(),
            enrollment_nonce_hash: None,
            chip: Some(Chip::Esp32),
            version: Some("1.0.0".into()),
            security_counter: Some(1),
            image_sha256: Some(Sha256::of(b"aa")),
            partition_size: Some(100),
            last_state: None,
            enrolled_at: 0,
            last_seen_at: Some(5),
        }
    }

    fn report() -> CheckinReport {
        CheckinReport {
            chip: Chip::Esp32,
            version: "1.0.0".into(),
            security_counter: 1,
            image_sha256: Some(Sha256::of(b"aa")),
            partition_size: Some(100),
            at: 10,
        }
    }

    #[test]
    fn only_a_report_equal_to_the_row_is_unchanged() {
        let d = device();
        assert!(unchanged(&d, &report()));
        assert!(unchanged(
            &d,
            &CheckinReport {
                partition_size: None,
                ..report()
            }
        ));
        for r in [
            CheckinReport {
                version: "1.0.1".into(),
                ..report()
            },
            CheckinReport {
                security_counter: 2,
                ..report()
            },
            CheckinReport {
                image_sha256: Some(Sha256::of(b"bb")),
                ..report()
            },
            CheckinReport {
                chip: Chip::Esp32S3,
                ..report()
            },
            CheckinReport {
                partition_size: Some(99),
                ..report()
            },
        ] {
            assert!(!unchanged(&d, &r), "{r:?}");
        }
        let never_seen = DeviceRow {
            last_seen_at: None,
            ..device()
        };
        assert!(!unchanged(&never_seen, &report()));
    }

    #[test]
    fn notes_keep_the_newest_time_per_device() {
        let l = LastSeen::default();
        l.note("a", 10);
        l.note("a", 7);
        l.note("b", 3);
        assert_eq!(l.pending(), 2);
        let p = l.pending.lock().unwrap();
        assert_eq!(p["a"], 10);
    }
}
