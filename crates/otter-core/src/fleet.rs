//! Choosing devices: the facts a device has, and filters over them.
//!
//! A [`DeviceFilter`] is what an operator writes to pick devices (`otter device list --filter`,
//! a saved group, a rollout's target): terms joined by `,`, all of which must hold.
//!
//! | term | holds when |
//! |---|---|
//! | `tag=lab` / `tag!=lab` | the device has / lacks the tag |
//! | `channel=beta`, `chip=esp32c3`, `state=failure`, `hardware_id=…`, `sha256=…` | the reported or set value is equal (`!=`: differs, or is unknown) |
//! | `version=1.2.0`, `version<1.2.0` (also `<=`, `>`, `>=`, `!=`) | the reported version compares so in Otter's version order |
//! | `counter>=3` (also `=`, `!=`, `<`, `<=`, `>`) | the reported security counter compares so |
//! | `seen<1h` / `seen>7d` | last seen less than / more than this long ago (never seen counts as more) |
//!
//! A term about a fact the device has not reported yet (a device that never checked in has no
//! version) holds only for `!=` and for `seen>`. Durations take `s`, `m`, `h` or `d`.

use std::fmt;
use std::str::FromStr;

use crate::version::Version;

/// What is known of one device: what it reported and what people set.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts<'a> {
    /// The hardware id it enrolled with.
    pub hardware_id: &'a str,
    /// Its channel.
    pub channel: &'a str,
    /// Chip it reported at its last check-in.
    pub chip: Option<&'a str>,
    /// Version it reported.
    pub version: Option<&'a str>,
    /// Security counter it reported.
    pub security_counter: Option<i64>,
    /// SHA-256 (hex) of the image it runs.
    pub image_sha256: Option<&'a str>,
    /// Last state it reported (`success`, `failure`, ...).
    pub last_state: Option<&'a str>,
    /// Unix seconds of its last check-in.
    pub last_seen_at: Option<i64>,
    /// Its tags.
    pub tags: &'a [String],
}

/// A field a term tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `tag`: whether the device carries a tag.
    Tag,
    /// `channel`.
    Channel,
    /// `chip`.
    Chip,
    /// `state`: the last reported state.
    State,
    /// `hardware_id`.
    HardwareId,
    /// `sha256`: the running image's hash.
    Sha256,
    /// `version`, in Otter's version order.
    Version,
    /// `counter`: the security counter.
    Counter,
    /// `seen`: how long ago the device last checked in.
    Seen,
}

impl Field {
    /// The name used in filters.
    pub fn name(self) -> &'static str {
        match self {
            Field::Tag => "tag",
            Field::Channel => "channel",
            Field::Chip => "chip",
            Field::State => "state",
            Field::HardwareId => "hardware_id",
            Field::Sha256 => "sha256",
            Field::Version => "version",
            Field::Counter => "counter",
            Field::Seen => "seen",
        }
    }

    const ALL: [Field; 9] = [
        Field::Tag,
        Field::Channel,
        Field::Chip,
        Field::State,
        Field::HardwareId,
        Field::Sha256,
        Field::Version,
        Field::Counter,
        Field::Seen,
    ];

    fn allows(self, op: Op) -> bool {
        match self {
            Field::Version | Field::Counter => true,
            Field::Seen => matches!(op, Op::Lt | Op::Gt),
            _ => matches!(op, Op::Eq | Op::Ne),
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
        }
    }
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// What it tests.
    pub field: Field,
    /// How.
    pub op: Op,
    /// Against what, as written (for `seen`: [`Term::seconds`] holds the duration).
    pub value: String,
    /// `counter`: the number; `seen`: the duration in seconds.
    pub seconds: i64,
}

/// Terms that must all hold. The empty filter matches every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// The terms, in the order written.
    pub terms: Vec<Term>,
}

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 1024;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter term {term:?}: {why}")]
pub struct FilterError {
    /// The term that was refused.
    pub term: String,
    /// Why, and what would be accepted.
    pub why: String,
}

fn err(term: &str, why: impl Into<String>) -> FilterError {
    FilterError {
        term: term.chars().take(64).collect(),
        why: why.into(),
    }
}

/// Parses `30s`, `15m`, `2h`, `7d` into seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let unit = match s.as_bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86_400,
        _ => return None,
    };
    let n: i64 = s[..s.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(unit)
}

impl FromStr for DeviceFilter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, FilterError> {
        if s.len() > MAX_FILTER_LEN {
            return Err(err(
                s,
                format!("a filter is limited to {MAX_FILTER_LEN} bytes"),
            ));
        }
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let at = raw
                .find(['=', '!', '<', '>'])
                .ok_or_else(|| err(raw, "expected FIELD=VALUE (or !=, <, <=, >, >=)"))?;
            let (name, rest) = raw.split_at(at);
            let (op, value) = [
                ("!=", Op::Ne),
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("=", Op::Eq),
                ("<", Op::Lt),
                (">", Op::Gt),
            ]
            .iter()
            .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (*op, v.trim())))
            .ok_or_else(|| err(raw, "expected one of =, !=, <, <=, >, >="))?;
            let name = name.trim();
            let field = Field::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    let names: Vec<_> = Field::ALL.iter().map(|f| f.name()).collect();
                    err(
                        raw,
                        format!("unknown field; use one of {}", names.join(", ")),
                    )
                })?;
            if !field.allows(op) {
                return Err(err(
                    raw,
                    match field {
                        Field::Seen => "seen takes < or > and a duration, e.g. seen<1h",
                        _ => "this field takes = or != only",
                    },
                ));
            }
            if value.is_empty() || value.len() > 128 || value.contains(['=', '<', '>', '!']) {
                return Err(err(
                    raw,
                    "the value must be 1 to 128 characters without = ! < >",
                ));
            }
            let seconds = match field {
                Field::Seen => parse_duration(value)
                    .ok_or_else(|| err(raw, "a duration is a number with s, m, h or d"))?,
                Field::Counter => value
                    .parse::<i64>()
                    .map_err(|_| err(raw, "the counter is a whole number"))?,
                _ => 0,
            };
            terms.push(Term {
                field,
                op,
                value: value.to_string(),
                seconds,
            });
        }
        Ok(DeviceFilter { terms })
    }
}

impl fmt::Display for DeviceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}{}{}", t.field.name(), t.op.symbol(), t.value)?;
        }
        Ok(())
    }
}

impl Term {
    /// Whether the term holds for a device at time `now` (Unix seconds).
    pub fn matches(&self, d: &DeviceFacts<'_>, now: i64) -> bool {
        let text = |v: Option<&str>| match v {
            Some(v) => self.op.holds(v.cmp(self.value.as_str())),
            None => self.op == Op::Ne,
        };
        match self.field {
            Field::Tag => d.tags.contains(&self.value) == (self.op == Op::Eq),
            Field::Channel => text(Some(d.channel)),
            Field::HardwareId => text(Some(d.hardware_id)),
            Field::Chip => text(d.chip),
            Field::State => text(d.last_state),
            Field::Sha256 => match d.image_sha256 {
                Some(v) => self
                    .op
                    .holds(v.to_ascii_lowercase().cmp(&self.value.to_ascii_lowercase())),
                None => self.op == Op::Ne,
            },
            Field::Version => match d.version.filter(|v| !v.is_empty()) {
                Some(v) => self
                    .op
                    .holds(Version::new(v).cmp(&Version::new(self.value.as_str()))),
                None => self.op == Op::Ne,
            },
            Field::Counter => match d.security_counter {
                Some(c) => self.op.holds(c.cmp(&self.seconds)),
                None => self.op == Op::Ne,
            },
            Field::Seen => match d.last_seen_at {
                Some(at) => self.op.holds((now - at).cmp(&self.seconds)),
                None => self.op == Op::Gt,
            },
        }
    }
}

impl DeviceFilter {
    /// Whether every term holds for a device at time `now` (Unix seconds).
    pub fn matches(&self, d: &DeviceFacts<'_>, now: i64) -> bool {
        self.terms.iter().all(|t| t.matches(d, now))
    }

    /// Whether the filter has no terms (and so matches every device).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(tags: &[String]) -> DeviceFacts<'_> {
        DeviceFacts {
            hardware_id: "aa:bb",
            channel: "stable",
            chip: Some("esp32c3"),
            version: Some("1.2.0"),
            security_counter: Some(2),
            image_sha256: Some("AB12"),
            last_state: Some("success"),
            last_seen_at: Some(1_000),
            tags,
        }
    }

    fn f(s: &str) -> DeviceFilter {
        s.parse().unwrap()
    }

    #[test]
    fn every_term_must_hold() {
        let tags = vec!["lab".to_string(), "eu".to_string()];
        let d = device(&tags);
        assert!(f("tag=lab,channel=stable,chip=esp32c3").matches(&d, 1_000));
        assert!(!f("tag=lab,channel=beta").matches(&d, 1_000));
        assert!(f("tag!=us").matches(&d, 1_000));
        assert!(!f("tag!=eu").matches(&d, 1_000));
        assert!(f("").matches(&d, 1_000));
    }

    #[test]
    fn versions_compare_in_otters_order_not_bytewise() {
        let d = device(&[]);
        assert!(f("version<1.10.0").matches(&d, 0));
        assert!(f("version>=1.2").matches(&d, 0));
        assert!(!f("version>1.2.0").matches(&d, 0));
        assert!(f("version=1.2.0,counter>=2,counter<3").matches(&d, 0));
        assert!(f("sha256=ab12").matches(&d, 0));
    }

    #[test]
    fn unknown_facts_hold_only_for_not_equal_and_long_unseen() {
        let d = DeviceFacts {
            hardware_id: "x",
            channel: "stable",
            ..Default::default()
        };
        assert!(!f("version<9").matches(&d, 0));
        assert!(f("version!=9").matches(&d, 0));
        assert!(!f("state=success").matches(&d, 0));
        assert!(f("seen>1d").matches(&d, 100));
        assert!(!f("seen<1d").matches(&d, 100));
    }

    #[test]
    fn seen_is_measured_from_now() {
        let d = device(&[]);
        assert!(f("seen<1h").matches(&d, 1_000 + 3_599));
        assert!(!f("seen<1h").matches(&d, 1_000 + 3_601));
        assert!(f("seen>1h").matches(&d, 1_000 + 3_601));
    }

    #[test]
    fn bad_terms_are_refused_naming_the_term() {
        for (bad, says) in [
            ("colour=red", "unknown field"),
            ("tag<lab", "= or != only"),
            ("seen=1h", "seen takes"),
            ("seen<soon", "duration"),
            ("counter>=two", "whole number"),
            ("version", "expected FIELD=VALUE"),
            ("tag=", "1 to 128"),
        ] {
            let e = bad.parse::<DeviceFilter>().unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        assert!("tag=x,".repeat(200).parse::<DeviceFilter>().is_err());
    }

    #[test]
    fn display_round_trips() {
        let s = "tag=lab,version>=1.2.0,seen<2h,counter!=3";
        assert_eq!(f(s).to_string(), s);
        assert_eq!(f(&f(s).to_string()), f(s));
    }
}
