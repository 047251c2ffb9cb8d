//! Token buckets in memory, one per key: a device's status reports, a product's new enrolments
//! (issue 8, items 6 and 14).
//!
//! A bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens a second; each
//! request takes one. When it is empty the caller answers `429` with `Retry-After`, the seconds
//! until a token is back. Buckets live in memory: a restart refills them, which bounds nothing
//! worse than one burst.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;

use crate::error::ApiError;

/// Buckets above this many are swept of the full ones (idle keys), so memory stays bounded by
/// the keys active in the last `burst / rate`.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One bucket per key.
#[derive(Debug, Default)]
pub struct Buckets<K> {
    inner: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    /// Takes one token from `key`'s bucket, or says how many seconds until one is back.
    pub fn take(&self, key: &K, per_minute: u32, burst: u32) -> Result<(), u64> {
        self.take_at(key, per_minute, burst, Instant::now())
    }

    /// Whether `key`'s bucket holds a token, without taking it (so failures alone can be
    /// counted: [`Buckets::take`] after a failure, `peek` before each attempt).
    pub fn peek(&self, key: &K, per_minute: u32, burst: u32) -> Result<(), u64> {
        self.peek_at(key, per_minute, burst, Instant::now())
    }

    fn peek_at(&self, key: &K, per_minute: u32, burst: u32, now: Instant) -> Result<(), u64> {
        if per_minute == 0 {
            return Ok(());
        }
        let rate = per_minute as f64 / 60.0;
        let burst = burst.max(1) as f64;
        let map = self.inner.lock().expect("no panic while holding the lock");
        let Some(b) = map.get(key) else {
            return Ok(());
        };
        let tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    fn take_at(&self, key: &K, per_minute: u32, burst: u32, now: Instant) -> Result<(), u64> {
        if per_minute == 0 {
            return Ok(());
        }
        let rate = per_minute as f64 / 60.0;
        let burst = burst.max(1) as f64;
        let mut map = self.inner.lock().expect("no panic while holding the lock");
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// The limiters of one server.
#[derive(Debug, Default)]
pub struct Limiters {
    /// Status reports, by device id.
    pub reports: Buckets<String>,
    /// New enrolments, by product id.
    pub enrollments: Buckets<i64>,
    /// Failed HTTP Basic attempts on `/arduino/v1`, by `product:NAME` and by `addr:IP`.
    pub arduino_auth_failures: Buckets<String>,
    /// Failed dashboard sign-ins, by client address (issue 11).
    pub sign_in_failures: Buckets<String>,
    /// Refused unauthenticated attempts recorded in the audit log this minute (issue 9).
    pub audit_unauthenticated: crate::audit::MinuteBudget,
}

/// `429 rate_limited` with `Retry-After`.
pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> ApiError {
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "rate_limited",
        message: message.into(),
        retry_after: Some(retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_then_retry_after_counts_down() {
        let b = Buckets::<u8>::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take_at(&1, 60, 3, t0), Ok(()));
        }
        assert_eq!(b.take_at(&1, 60, 3, t0), Err(1), "one a second");
        assert_eq!(b.take_at(&2, 60, 3, t0), Ok(()), "keys are separate");
        assert_eq!(b.take_at(&1, 60, 3, t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(b.take_at(&1, 6, 3, t0 + Duration::from_secs(1)), Err(10));
        assert_eq!(b.take_at(&1, 0, 3, t0), Ok(()), "0 is no limit");
    }

    #[test]
    fn peek_takes_nothing() {
        let b = Buckets::<u8>::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.peek_at(&1, 60, 2, t0), Ok(()), "an unknown key is full");
        }
        assert_eq!(b.take_at(&1, 60, 2, t0), Ok(()));
        assert_eq!(b.peek_at(&1, 60, 2, t0), Ok(()));
        assert_eq!(b.take_at(&1, 60, 2, t0), Ok(()));
        assert_eq!(b.peek_at(&1, 60, 2, t0), Err(1));
        assert_eq!(b.peek_at(&1, 60, 2, t0 + Duration::from_secs(1)), Ok(()));
    }
}
