//! Rules the database checks across rows, whose transactions must take turns.

/// A rule checked across rows: under PostgreSQL's default isolation two transactions could each
/// see the state before the other's write, so each backend's `serialize` makes them take turns
/// (an advisory lock per rule on PostgreSQL; nothing on SQLite, which runs one writer at a
/// time).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Serial {
    /// The first admin token is created only when there is no token at all.
    FirstStart,
    /// The last active admin token is never revoked.
    Admins,
}
