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
