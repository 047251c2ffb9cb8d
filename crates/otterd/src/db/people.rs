//! The storage seam of people and their dashboard sessions (issue 11).
//!
//! A separate trait from [`super::Database`] (which requires it), as [`super::github`] is.
//! Policy (password rules, lockout, expiry) lives in [`crate::services::people`]; these are
//! primitives.

use async_trait::async_trait;

use super::{DbResult, Role};

/// A person who signs in to the dashboard. Its `Debug` leaves the password hash out.
#[derive(Clone)]
pub struct PersonRow {
    /// `per_…`.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Products a publisher may push to (empty for other roles).
    pub products: Vec<String>,
    /// Argon2id, PHC string format.
    pub password_hash: String,
    /// The password is a one-time initial one: the next sign-in must change it.
    pub must_change_password: bool,
    /// Wrong passwords since the last good one.
    pub failed_sign_ins: i64,
    /// Sign-ins are refused until then (Unix seconds).
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub last_sign_in_at: Option<i64>,
    /// Disabled people cannot sign in, and have no sessions.
    pub disabled_at: Option<i64>,
}

impl std::fmt::Debug for PersonRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("products", &self.products)
            .field("must_change_password", &self.must_change_password)
            .field("failed_sign_ins", &self.failed_sign_ins)
            .field("locked_until", &self.locked_until)
            .field("disabled_at", &self.disabled_at)
            .finish_non_exhaustive()
    }
}

/// A signed-in browser (the session id itself is never stored).
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// SHA-256 (hex) of the session id in the cookie.
    pub id_hash: String,
    pub person_id: String,
    /// The session's form token (checked on every POST).
    pub csrf: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The absolute end.
    pub expires_at: i64,
    /// The address it was signed in from.
    pub address: Option<String>,
}

/// People and sessions.
#[async_trait]
pub trait PeopleStore: Send + Sync {
    /// `Conflict("people(name)")` when the name is taken.
    async fn create_person(&self, p: &PersonRow) -> DbResult<()>;
    async fn get_person(&self, id: &str) -> DbResult<PersonRow>;
    async fn find_person(&self, name: &str) -> DbResult<PersonRow>;
    /// Everyone, by name.
    async fn list_people(&self) -> DbResult<Vec<PersonRow>>;
    /// People by name after `after`, at most `limit`.
    async fn page_people(&self, after: Option<&str>, limit: i64) -> DbResult<Vec<PersonRow>>;
    /// Replaces a password (and whether it must be changed at the next sign-in); clears the
    /// failure count and lock.
    async fn set_password(&self, id: &str, hash: &str, must_change: bool) -> DbResult<()>;
    /// Adds one wrong password to the count; returns the new count.
    async fn add_failed_sign_in(&self, id: &str) -> DbResult<i64>;
    /// Refuses sign-ins until `until`.
    async fn lock_person(&self, id: &str, until: i64) -> DbResult<()>;
    /// A good sign-in: clears the failure count and lock.
    async fn record_sign_in(&self, id: &str, at: i64) -> DbResult<()>;
    /// Disables an enabled person and ends their sessions, in one transaction. `NotFound`
    /// when there is no enabled person with this id.
    async fn disable_person(&self, id: &str, at: i64) -> DbResult<()>;

    async fn create_session(&self, s: &SessionRow) -> DbResult<()>;
    async fn find_session(&self, id_hash: &str) -> DbResult<SessionRow>;
    async fn touch_session(&self, id_hash: &str, at: i64) -> DbResult<()>;
    async fn delete_session(&self, id_hash: &str) -> DbResult<()>;
    /// Ends every session of a person.
    async fn delete_person_sessions(&self, person_id: &str) -> DbResult<()>;
    /// Removes sessions whose absolute end is before `now`; returns how many.
    async fn purge_sessions(&self, now: i64) -> DbResult<u64>;
}
