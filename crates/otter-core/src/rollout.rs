//! Staged rollouts as pure rules: which stage a device falls in, and when a stage has failed or
//! succeeded (docs/rollouts.md).
//!
//! - [`bucket`]: a device's place in a rollout, `0..10000`, from SHA-256 of the rollout id and
//!   the device id, so it is the same on every instance and after every restart, and
//!   independent between rollouts.
//! - [`Stages`]: cumulative percentages such as `10,50,100`; [`Stages::stage_of`] maps a bucket
//!   to the first stage whose percentage covers it.
//! - [`Threshold`]: `20%` or `5` failed devices; [`failure_tripped`] and [`success_met`] decide
//!   from counts.
//! - [`Window`]: a daily UTC maintenance window such as `01:00-05:00`.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Buckets per rollout: a stage of `p` percent holds buckets below `p * 100`.
pub const BUCKETS: u32 = 10_000;

/// Most stages a rollout may have.
pub const MAX_STAGES: usize = 20;

/// A device's bucket in a rollout, in `0..BUCKETS`.
pub fn bucket(rollout_id: &str, device_id: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(rollout_id.as_bytes());
    h.update([0u8]);
    h.update(device_id.as_bytes());
    let d = h.finalize();
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes of a digest"));
    (n % u64::from(BUCKETS)) as u32
}

/// A rule that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// The cumulative percentages of a rollout's stages, strictly increasing, each 1 to 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(Vec<u32>);

impl Stages {
    /// Checks a list of percentages.
    pub fn new(percents: Vec<u32>) -> Result<Stages, RuleError> {
        if percents.is_empty() || percents.len() > MAX_STAGES {
            return Err(RuleError(format!(
                "a rollout has 1 to {MAX_STAGES} stages, e.g. 10,50,100"
            )));
        }
        let mut last = 0;
        for &p in &percents {
            if p == 0 || p > 100 {
                return Err(RuleError(format!(
                    "stage percentage {p} is not between 1 and 100"
                )));
            }
            if p <= last {
                return Err(RuleError(format!(
                    "stage percentages are cumulative and must increase: {p} follows {last}"
                )));
            }
            last = p;
        }
        Ok(Stages(percents))
    }

    /// The percentages.
    pub fn percents(&self) -> &[u32] {
        &self.0
    }

    /// How many stages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a rollout has at least one stage.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first stage (0-based) whose cumulative percentage covers `bucket`; `None` when the
    /// last stage is below 100 % and the bucket lies beyond it.
    pub fn stage_of(&self, bucket: u32) -> Option<usize> {
        self.0.iter().position(|&p| bucket < p * (BUCKETS / 100))
    }

    /// Whether a device with this bucket is in the rollout once stage `current` (0-based) is
    /// open: its stage is `current` or earlier.
    pub fn admits(&self, bucket: u32, current: usize) -> bool {
        self.stage_of(bucket).is_some_and(|s| s <= current)
    }
}

impl FromStr for Stages {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Stages, RuleError> {
        let percents = s
            .split(',')
            .map(|p| {
                let p = p.trim().trim_end_matches('%');
                p.parse::<u32>().map_err(|_| {
                    RuleError(format!(
                        "stages are percentages separated by commas, e.g. 10,50,100; {p:?} is not a whole number"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Stages::new(percents)
    }
}

impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A failure threshold: a percentage of the finished devices, or a number of devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    /// More than this percentage (0 to 100) of the finished devices failed.
    Percent(u32),
    /// More than this many devices failed.
    Count(u64),
}

impl FromStr for Threshold {
    type Err = RuleError;

    /// `20%` (a percentage) or `5` (a number of devices).
    fn from_str(s: &str) -> Result<Threshold, RuleError> {
        let s = s.trim();
        let bad = || {
            RuleError(format!(
                "threshold {s:?}: write a percentage such as 20% or a number of devices such as 5"
            ))
        };
        match s.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(RuleError(format!(
                        "threshold {s:?}: a percentage is at most 100%"
                    )));
                }
                Ok(Threshold::Percent(p))
            }
            None => s.parse().map(Threshold::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Percent(p) => write!(f, "{p}%"),
            Threshold::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Whether `failed` of `finished` devices of stage `stage` (0-based) pass the threshold, with
/// at least `min_finished` finished; then the reason to pause, naming the figures, e.g.
/// `stage 1: 3 of 10 finished devices failed (30% > 20%)`.
pub fn failure_tripped(
    stage: usize,
    failed: u64,
    finished: u64,
    threshold: Threshold,
    min_finished: u64,
) -> Option<String> {
    if finished == 0 || finished < min_finished {
        return None;
    }
    let head = format!(
        "stage {}: {failed} of {finished} finished devices failed",
        stage + 1
    );
    match threshold {
        Threshold::Percent(p) if failed * 100 > u64::from(p) * finished => {
            let shown = failed * 100 / finished;
            Some(format!("{head} ({shown}% > {p}%)"))
        }
        Threshold::Count(n) if failed > n => Some(format!("{head} (more than {n})")),
        _ => None,
    }
}

/// Whether a stage of `members` devices has succeeded with `succeeded` of them: every one
/// (`percent` `None`), or at least `percent` of them. A stage without devices has succeeded.
pub fn success_met(succeeded: u64, members: u64, percent: Option<u32>) -> bool {
    match percent {
        None => succeeded >= members,
        Some(p) => succeeded * 100 >= u64::from(p) * members,
    }
}

/// A daily maintenance window in UTC, `hh:mm-hh:mm`; it may span midnight (`22:00-02:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, minutes after midnight UTC.
    pub start: u32,
    /// End (excluded), minutes after midnight UTC.
    pub end: u32,
}

impl Window {
    /// Whether the Unix time `at` lies in the window.
    pub fn contains(&self, at: i64) -> bool {
        let m = (at.rem_euclid(86_400) / 60) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&m)
        } else {
            m >= self.start || m < self.end
        }
    }
}

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl FromStr for Window {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Window, RuleError> {
        let bad = || {
            RuleError(format!(
                "window {s:?}: write hh:mm-hh:mm in UTC, e.g. 01:00-05:00"
            ))
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hhmm(a).ok_or_else(bad)?, hhmm(b).ok_or_else(bad)?);
        if start == end {
            return Err(RuleError(format!(
                "window {s:?} is empty: start and end must differ"
            )));
        }
        Ok(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_deterministic_and_depend_on_both_ids() {
        assert_eq!(bucket("ro_1", "dev_1"), bucket("ro_1", "dev_1"));
        let a: Vec<u32> = (0..50)
            .map(|i| bucket("ro_1", &format!("dev_{i}")))
            .collect();
        let b: Vec<u32> = (0..50)
            .map(|i| bucket("ro_2", &format!("dev_{i}")))
            .collect();
        assert_ne!(a, b, "another rollout orders devices differently");
        assert!(a.iter().all(|&x| x < BUCKETS));
        // No ambiguity between ("ab", "c") and ("a", "bc").
        assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
    }

    #[test]
    fn each_stage_holds_its_share_within_statistical_bounds() {
        let stages: Stages = "10,50,100".parse().unwrap();
        let n = 100_000u32;
        let mut per_stage = [0u32; 3];
        for i in 0..n {
            let s = stages
                .stage_of(bucket("ro_share", &format!("dev_{i}")))
                .unwrap();
            per_stage[s] += 1;
        }
        // Shares 10 %, 40 %, 50 %: allow 5 standard deviations of a binomial count.
        for (count, share) in per_stage.iter().zip([0.10, 0.40, 0.50]) {
            let mean = f64::from(n) * share;
            let sd = (f64::from(n) * share * (1.0 - share)).sqrt();
            assert!(
                (f64::from(*count) - mean).abs() < 5.0 * sd,
                "{per_stage:?}: {count} is too far from {mean}"
            );
        }
    }

    #[test]
    fn a_device_stays_in_once_admitted() {
        let stages: Stages = "5,20,100".parse().unwrap();
        for i in 0..2_000 {
            let b = bucket("ro_x", &format!("d{i}"));
            let first = (0..3).find(|&k| stages.admits(b, k)).unwrap();
            assert!((first..3).all(|k| stages.admits(b, k)));
        }
        let partial: Stages = "10,50".parse().unwrap();
        assert_eq!(partial.stage_of(4_999), Some(1));
        assert_eq!(partial.stage_of(5_000), None, "beyond the last stage");
    }

    #[test]
    fn stages_are_parsed_and_refused_with_reasons() {
        assert_eq!(
            "10, 50,100".parse::<Stages>().unwrap().percents(),
            [10, 50, 100]
        );
        assert_eq!("100".parse::<Stages>().unwrap().to_string(), "100");
        for (bad, says) in [
            ("", "whole number"),
            ("10,5,100", "must increase"),
            ("0,100", "between 1 and 100"),
            ("10,101", "between 1 and 100"),
            ("ten", "whole number"),
        ] {
            let e = bad.parse::<Stages>().unwrap_err().0;
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn thresholds_are_parsed_as_percentages_or_counts() {
        assert_eq!("20%".parse(), Ok(Threshold::Percent(20)));
        assert_eq!("5".parse(), Ok(Threshold::Count(5)));
        assert!("101%".parse::<Threshold>().is_err());
        assert!("-1".parse::<Threshold>().is_err());
        assert!("x%".parse::<Threshold>().is_err());
        assert_eq!(Threshold::Percent(20).to_string(), "20%");
    }

    #[test]
    fn failure_trips_past_the_threshold_and_not_before() {
        let t = Threshold::Percent(20);
        assert_eq!(failure_tripped(0, 2, 10, t, 5), None, "20% is not past 20%");
        assert_eq!(
            failure_tripped(0, 3, 10, t, 5).as_deref(),
            Some("stage 1: 3 of 10 finished devices failed (30% > 20%)")
        );
        assert_eq!(failure_tripped(1, 3, 4, t, 5), None, "too few finished");
        assert!(failure_tripped(1, 3, 5, t, 5).is_some());
        assert_eq!(failure_tripped(0, 0, 0, t, 0), None);
        let n = Threshold::Count(2);
        assert_eq!(failure_tripped(0, 2, 100, n, 0), None);
        assert_eq!(
            failure_tripped(2, 3, 100, n, 0).as_deref(),
            Some("stage 3: 3 of 100 finished devices failed (more than 2)")
        );
    }

    #[test]
    fn success_needs_every_device_or_the_percentage() {
        assert!(!success_met(9, 10, None));
        assert!(success_met(10, 10, None));
        assert!(success_met(0, 0, None), "an empty stage is done");
        assert!(success_met(9, 10, Some(90)));
        assert!(!success_met(8, 10, Some(90)));
    }

    #[test]
    fn windows_parse_and_span_midnight() {
        let w: Window = "01:00-05:00".parse().unwrap();
        assert_eq!((w.start, w.end), (60, 300));
        assert!(w.contains(3_600) && w.contains(86_400 + 4 * 3_600 + 3_599));
        assert!(!w.contains(5 * 3_600) && !w.contains(0));
        let night: Window = "22:00-02:00".parse().unwrap();
        assert!(night.contains(23 * 3_600) && night.contains(3_600));
        assert!(!night.contains(12 * 3_600));
        assert_eq!(night.to_string(), "22:00-02:00");
        for bad in [
            "1:00-05:00",
            "01:00",
            "25:00-01:00",
            "01:00-01:00",
            "aa:bb-cc:dd",
        ] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }
}
