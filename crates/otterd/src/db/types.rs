//! Typed values of the storage rows (issue 9): decoded and checked once, at the storage
//! boundary, so that the rest of the server never handles a role as a string.
//!
//! A stored value that does not decode is refused with [`undecodable`], which names the table,
//! the column and the value (a [`DbError::Backend`](crate::db::DbError::Backend) once mapped),
//! never a panic.

use std::fmt;
use std::str::FromStr;

/// What a management token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Push releases to named products; read those products.
    Publisher,
    /// Read everything.
    Viewer,
}

impl Role {
    /// The stored name (the same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Viewer => "viewer",
        }
    }

    /// The role with this stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "publisher" => Some(Role::Publisher),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s)
            .ok_or_else(|| format!("unknown role {s:?} (expected one of admin, publisher, viewer)"))
    }
}

/// Where a device is with an update: what it reports (`POST /device/v1/status`, a check-in's
/// `last_outcome`), what its deployment in a rollout is, and what its history records. Stored
/// as its name (`rolled_back`, ...), the same text as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceState {
    /// A rollout assigned it a release (deployments only; never reported).
    Assigned,
    Downloading,
    Downloaded,
    Installing,
    Rebooting,
    Success,
    Failure,
    /// The new image did not stay: the bootloader went back to the old one.
    RolledBack,
    /// The device refused the release (a bad signature, a lower counter, ...).
    Refused,
    /// The rollout ended before the device did (deployments only; never reported).
    Cancelled,
    /// The device enrolled again after an admin allowed it (history only; never reported).
    Reenrolled,
}

impl DeviceState {
    /// Every state, in the order of a deployment's progress.
    pub const ALL: [DeviceState; 11] = [
        DeviceState::Assigned,
        DeviceState::Downloading,
        DeviceState::Downloaded,
        DeviceState::Installing,
        DeviceState::Rebooting,
        DeviceState::Success,
        DeviceState::Failure,
        DeviceState::RolledBack,
        DeviceState::Refused,
        DeviceState::Cancelled,
        DeviceState::Reenrolled,
    ];

    /// The states a device may report, in order.
    pub const REPORTED: [DeviceState; 8] = [
        DeviceState::Downloading,
        DeviceState::Downloaded,
        DeviceState::Installing,
        DeviceState::Rebooting,
        DeviceState::Success,
        DeviceState::Failure,
        DeviceState::RolledBack,
        DeviceState::Refused,
    ];

    /// The states of a deployment (docs/rollouts.md), in order.
    pub const DEPLOYMENT: [DeviceState; 10] = [
        DeviceState::Assigned,
        DeviceState::Downloading,
        DeviceState::Downloaded,
        DeviceState::Installing,
        DeviceState::Rebooting,
        DeviceState::Success,
        DeviceState::Failure,
        DeviceState::RolledBack,
        DeviceState::Refused,
        DeviceState::Cancelled,
    ];

    /// The name, as stored and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Assigned => "assigned",
            DeviceState::Downloading => "downloading",
            DeviceState::Downloaded => "downloaded",
            DeviceState::Installing => "installing",
            DeviceState::Rebooting => "rebooting",
            DeviceState::Success => "success",
            DeviceState::Failure => "failure",
            DeviceState::RolledBack => "rolled_back",
            DeviceState::Refused => "refused",
            DeviceState::Cancelled => "cancelled",
            DeviceState::Reenrolled => "reenrolled",
        }
    }

    /// Whether a device may report this state.
    pub fn is_reported(self) -> bool {
        Self::REPORTED.contains(&self)
    }

    /// Whether a deployment in this state has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceState::Success
                | DeviceState::Failure
                | DeviceState::RolledBack
                | DeviceState::Refused
                | DeviceState::Cancelled
        )
    }

    /// Whether this is a failed end (what a rollout's error threshold counts).
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            DeviceState::Failure | DeviceState::RolledBack | DeviceState::Refused
        )
    }

    /// Whether a report of this state must say why.
    pub fn needs_reason(self) -> bool {
        self.is_failed()
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceState::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown device state {s:?}"))
    }
}

/// A SHA-256 digest: 64 lowercase hex digits, checked once when parsed. Shown, stored and
/// serialised as that hex text. Release images and payloads are stored under it
/// (`images/<sha256>`), and a device reports the one of its running image.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(String);

impl Sha256 {
    /// The digest of these bytes.
    pub fn from_digest(digest: [u8; 32]) -> Sha256 {
        Sha256(hex::encode(digest))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256::from_digest(sha2::Sha256::digest(data).into())
    }

    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Checked at construction: 64 hex digits always decode.
        hex::decode_to_slice(&self.0, &mut out).unwrap_or_default();
        out
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.0)
    }
}

impl FromStr for Sha256 {
    type Err = String;
    /// Exactly 64 lowercase hex digits (callers that accept upper case lowercase first).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Sha256(s.to_string()))
        } else {
            Err("a SHA-256 is 64 lowercase hex digits".into())
        }
    }
}

impl PartialEq<str> for Sha256 {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored value that does not decode into its type.
#[derive(Debug, thiserror::Error)]
#[error("{table}.{column} holds {value:?}, which does not decode: {why}")]
pub struct Undecodable {
    pub table: &'static str,
    pub column: &'static str,
    pub value: String,
    pub why: String,
}

/// The error of a row decoder for a stored value that does not decode.
pub(crate) fn undecodable(
    table: &'static str,
    column: &'static str,
    value: &str,
    why: impl fmt::Display,
) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(Undecodable {
        table,
        column,
        value: value.to_string(),
        why: why.to_string(),
    }))
}

/// Parses a stored text value, naming table and column when it does not parse.
pub(crate) fn parse_stored<T>(
    table: &'static str,
    column: &'static str,
    value: &str,
) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value
        .parse()
        .map_err(|e| undecodable(table, column, value, e))
}

/// [`parse_stored`] for a nullable column.
pub(crate) fn parse_stored_opt<T>(
    table: &'static str,
    column: &'static str,
    value: Option<String>,
) -> Result<Option<T>, sqlx::Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.map(|v| parse_stored(table, column, &v)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_parses_its_stored_names_and_refuses_others() {
        for r in [Role::Admin, Role::Publisher, Role::Viewer] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        for bad in ["", "Admin", "root", "admin "] {
            let e = bad.parse::<Role>().unwrap_err();
            assert!(e.contains("unknown role"), "{e}");
        }
    }

    #[test]
    fn chip_decodes_every_stored_name_and_refuses_others() {
        for c in otter_core::Chip::all() {
            assert_eq!(
                parse_stored::<otter_core::Chip>("products", "chip", c.name()).unwrap(),
                c
            );
        }
        let e = parse_stored::<otter_core::Chip>("devices", "chip", "esp99").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("devices.chip") && text.contains("\"esp99\""),
            "{text}"
        );
    }

    #[test]
    fn device_state_round_trips_its_stored_names_and_refuses_others() {
        for d in DeviceState::ALL {
            assert_eq!(
                parse_stored::<DeviceState>("device_events", "state", d.as_str()).unwrap(),
                d
            );
            assert_eq!(d.to_string(), d.as_str());
        }
        assert_eq!(DeviceState::RolledBack.as_str(), "rolled_back");
        for d in DeviceState::REPORTED {
            assert!(
                d.is_reported() && DeviceState::DEPLOYMENT.contains(&d),
                "{d}"
            );
        }
        for d in [
            DeviceState::Assigned,
            DeviceState::Cancelled,
            DeviceState::Reenrolled,
        ] {
            assert!(!d.is_reported(), "{d}");
        }
        let finals: Vec<_> = DeviceState::ALL
            .into_iter()
            .filter(|d| d.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                DeviceState::Success,
                DeviceState::Failure,
                DeviceState::RolledBack,
                DeviceState::Refused,
                DeviceState::Cancelled
            ]
        );
        for bad in ["", "Success", "rolled-back", "done"] {
            let e = parse_stored::<DeviceState>("deployments", "state", bad).unwrap_err();
            assert!(e.to_string().contains("deployments.state"), "{e}");
        }
    }

    #[test]
    fn sha256_is_64_lowercase_hex_checked_once() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let s: Sha256 = hex.parse().unwrap();
        assert_eq!(s, Sha256::of(b"test"));
        assert_eq!(s.to_string(), hex);
        assert_eq!(hex::encode(s.to_bytes()), hex);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{hex}\""));
        assert_eq!(
            serde_json::from_str::<Sha256>(&format!("\"{hex}\"")).unwrap(),
            s
        );
        for bad in [
            "",
            &hex[1..],
            &hex.to_uppercase(),
            &format!("{}g", &hex[1..]),
        ] {
            assert!(bad.parse::<Sha256>().is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Sha256>(&format!("\"{bad}\"")).is_err());
        }
        let e = parse_stored::<Sha256>("releases", "sha256", "abc").unwrap_err();
        assert!(e.to_string().contains("releases.sha256"), "{e}");
    }

    #[test]
    fn an_undecodable_value_names_table_column_and_value() {
        let e = parse_stored::<Role>("tokens", "role", "root").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("tokens.role"), "{text}");
        assert!(text.contains("\"root\""), "{text}");
        assert_eq!(
            parse_stored_opt::<Role>("audit_log", "role", None).unwrap(),
            None
        );
    }
}
