//! The order of release versions.
//!
//! Firmware versions in the wild are rarely strict SemVer: ESP-IDF takes them from `git describe`
//! (`v1.0-7-ge346e28`), Arduino sketches use whatever the author wrote. Otter orders them the way
//! a person would:
//! 1. an optional leading `v` is ignored;
//! 2. the string is split into the release part and an optional pre-release part at the first
//!    `-` (build metadata after `+` is ignored, as in SemVer);
//! 3. release parts compare piecewise: runs of digits numerically, other runs bytewise;
//! 4. a version with a pre-release part orders before the same release without one
//!    (`1.2.0-rc1 < 1.2.0`), pre-release parts compare piecewise too.
//!
//! Versions that compare equal but are spelled differently (`v1.2` and `1.2`) fall back to a
//! bytewise comparison, so the order is total and consistent with `Eq`.

use std::cmp::Ordering;
use std::fmt;

/// A release version with Otter's ordering. Any non-empty string is a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// Wraps a version string.
    pub fn new(s: impl Into<String>) -> Self {
        Version(s.into())
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Piece<'a> {
    // Numbers order before words at the same position, as in SemVer pre-release identifiers.
    Num(&'a str),
    Word(&'a str),
}

fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let digit = bytes[i].is_ascii_digit();
        if !digit && !bytes[i].is_ascii_alphanumeric() {
            i += 1; // separators (., -, _) only split pieces
            continue;
        }
        while i < bytes.len()
            && bytes[i].is_ascii_alphanumeric()
            && bytes[i].is_ascii_digit() == digit
        {
            i += 1;
        }
        let run = &s[start..i];
        out.push(if digit {
            Piece::Num(run)
        } else {
            Piece::Word(run)
        });
    }
    out
}

fn cmp_num(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn cmp_pieces(a: &[Piece<'_>], b: &[Piece<'_>]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let o = match (x, y) {
            (Piece::Num(x), Piece::Num(y)) => cmp_num(x, y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn split(s: &str) -> (&str, Option<&str>) {
    let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
    let s = s.split('+').next().unwrap_or(s);
    match s.split_once('-') {
        Some((rel, pre)) => (rel, Some(pre)),
        None => (s, None),
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let (ra, pa) = split(&self.0);
        let (rb, pb) = split(&other.0);
        cmp_pieces(&pieces(ra), &pieces(rb))
            .then_with(|| match (pa, pb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => cmp_pieces(&pieces(a), &pieces(b)),
            })
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::new(s)
    }

    #[test]
    fn orders_like_a_person_would() {
        let ordered = [
            "0.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc1",
            "1.0.0",
            "v1.0.1",
            "1.2",
            "1.2.0",
            "1.10.0",
            "v2.0-7-ge346e28",
            "2.0.0",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert!(v("v1.2.3") != v("1.2.3"));
        assert_eq!(v("1.2.3+build5").cmp(&v("1.2.3+build5")), Ordering::Equal);
        assert!(v("010") > v("9"));
    }

    proptest! {
        #[test]
        fn order_is_total_and_consistent(a in "[v]?[0-9a-z.+-]{0,12}", b in "[v]?[0-9a-z.+-]{0,12}", c in "[0-9a-z.-]{0,12}") {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
            if a <= b && b <= c { prop_assert!(a <= c); }
            prop_assert_eq!(Version::new(a.to_string()), a);
        }
    }
}
