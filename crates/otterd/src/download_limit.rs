//! Image downloads in progress, counted per device and in total (issue 8, item 17).
//!
//! A download's slot is taken before its response starts and given back when the response body
//! is finished or dropped (the client went away), so stalled downloads stay counted. Beyond
//! `max_downloads` (server) or `max_downloads_per_device`, the answer is `429` with
//! `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Seconds a device refused a download slot is asked to wait.
pub const RETRY_AFTER_S: u64 = 10;

/// The counters, shared by every request.
#[derive(Clone)]
pub struct Downloads {
    inner: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_device: usize,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_device: HashMap<String, usize>,
}

/// Why a slot was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// The server-wide limit.
    Server(usize),
    /// This device's limit.
    Device(usize),
}

/// A download slot; dropping it gives the slot back.
pub struct Slot {
    downloads: Downloads,
    device: String,
}

impl Downloads {
    /// Counters with these limits.
    pub fn new(max_total: usize, max_per_device: usize) -> Self {
        Downloads {
            inner: Arc::new(Mutex::new(Counts::default())),
            max_total,
            max_per_device,
        }
    }

    /// Takes a slot for `device`, or says which limit is reached.
    pub fn acquire(&self, device: &str) -> Result<Slot, Full> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_device.get(device).copied().unwrap_or(0);
        if mine >= self.max_per_device {
            return Err(Full::Device(self.max_per_device));
        }
        if c.total >= self.max_total {
            return Err(Full::Server(self.max_total));
        }
        c.total += 1;
        c.per_device.insert(device.to_string(), mine + 1);
        metrics::gauge!("otter_downloads_in_progress").set(c.total as f64);
        Ok(Slot {
            downloads: self.clone(),
            device: device.to_string(),
        })
    }

    /// Downloads in progress.
    pub fn in_progress(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .downloads
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_device.get_mut(&self.device) {
            *n -= 1;
            if *n == 0 {
                c.per_device.remove(&self.device);
            }
        }
        metrics::gauge!("otter_downloads_in_progress").set(c.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_device_and_in_total_and_given_back_on_drop() {
        let d = Downloads::new(3, 2);
        let a1 = d.acquire("a").unwrap();
        let _a2 = d.acquire("a").unwrap();
        assert_eq!(d.acquire("a").err(), Some(Full::Device(2)));
        let _b1 = d.acquire("b").unwrap();
        assert_eq!(d.acquire("c").err(), Some(Full::Server(3)));
        drop(a1);
        assert_eq!(d.in_progress(), 2);
        let _c1 = d.acquire("c").unwrap();
    }
}
