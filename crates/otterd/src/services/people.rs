//! People who sign in to the dashboard (issue 11): accounts with the roles of API tokens,
//! Argon2id password hashes, lockout and back-off after wrong passwords, and sessions with an
//! idle and an absolute end. No HTTP here: the dashboard and the management API call it.
//!
//! - A person is created with a one-time initial password, shown once, that must be changed at
//!   the first sign-in.
//! - `failures_before_lockout` wrong passwords in a row lock a person out for `lockout_s`,
//!   doubling with each further lockout in a row (up to a day); a right password clears it.
//!   Failed sign-ins are also limited per client address, whatever name they try.
//! - A session id is 256 random bits, in the cookie only; the database keeps its SHA-256.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::auth::{hash_secret, new_id, Principal, Role};
use crate::config::Settings;
use crate::db::people::{PersonRow, SessionRow};
use crate::db::{Database, DbError};
use crate::ratelimit::Limiters;

/// Longest person name, in characters.
pub const NAME_MAX: usize = 64;
/// Longest password, in characters (Argon2 takes any length; this bounds the work).
pub const PASSWORD_MAX: usize = 256;
/// Longest lockout, in seconds, however many lockouts in a row.
pub const LOCKOUT_MAX_S: u64 = 24 * 3600;
/// Most products a publisher may be scoped to.
pub const PRODUCTS_MAX: usize = crate::validate::TOKEN_PRODUCTS_MAX;

/// Why a people operation was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    /// The input is wrong (a bad name, role or password).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
    /// Hashing failed (it does not, short of a broken parameter set).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Result of a people operation.
pub type PeopleResult<T> = Result<T, PeopleError>;

/// Why a sign-in was refused.
#[derive(Debug)]
pub enum SignInError {
    /// Unknown name or wrong password (the two are not told apart). `locked_for`: this
    /// failure locked the person out for so many seconds.
    Wrong {
        locked_for: Option<u64>,
    },
    /// The person is locked out for so many more seconds; the password was not checked.
    Locked(u64),
    /// Too many failed sign-ins from this address; retry after so many seconds.
    Throttled(u64),
    /// The password is right, but the person is disabled.
    Disabled,
    Db(DbError),
}

impl From<DbError> for SignInError {
    fn from(e: DbError) -> Self {
        SignInError::Db(e)
    }
}

/// Why a session is not valid.
#[derive(Debug)]
pub enum SessionEnd {
    /// No such session (never was, or signed out).
    Unknown,
    /// It was idle too long or reached its absolute end.
    Expired,
    /// Its person is disabled.
    Disabled,
    Db(DbError),
}

fn random_b64(bytes: usize) -> String {
    use base64::Engine;
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A new one-time initial password: 128 random bits.
pub fn new_initial_password() -> String {
    random_b64(16)
}

/// A person name: 1 to 64 of `A-Z a-z 0-9 . _ @ -`, starting with a letter or digit.
pub fn check_name(name: &str) -> PeopleResult<()> {
    let ok = (1..=NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PeopleError::Invalid(format!(
            "a person's name is 1 to {NAME_MAX} of letters, digits and . _ @ -, starting with a letter or digit"
        )))
    }
}

/// A password a person may choose.
pub fn check_password(settings: &Settings, name: &str, password: &str) -> PeopleResult<()> {
    let n = password.chars().count();
    let min = settings.dashboard_password_min_chars;
    if n < min || n > PASSWORD_MAX {
        return Err(PeopleError::Invalid(format!(
            "a password must be {min} to {PASSWORD_MAX} characters (this one has {n})"
        )));
    }
    if password.eq_ignore_ascii_case(name) {
        return Err(PeopleError::Invalid(
            "a password must not be the person's name".into(),
        ));
    }
    Ok(())
}

/// The Argon2id hash (PHC string) of a password, with a random salt. CPU- and memory-heavy:
/// runs on the blocking pool.
pub async fn hash_password(password: &str) -> PeopleResult<String> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| PeopleError::Hash(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PeopleError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PeopleError::Hash(e.to_string()))?
}

/// Whether `password` matches `hash` (a hash that does not parse matches nothing).
pub async fn verify_password(password: &str, hash: &str) -> bool {
    let password = password.to_string();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash no password is known for, checked against for unknown names so that they take as
/// long as known ones.
async fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DECOY.get() {
        return h;
    }
    let h = hash_password(&random_b64(32))
        .await
        .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    DECOY.get_or_init(|| h)
}

/// What a person may do, as the same [`Principal`] API tokens produce (its `token_id` is the
/// person's id, `per_…`).
pub fn principal(p: &PersonRow) -> Principal {
    Principal {
        token_id: p.id.clone(),
        name: p.name.clone(),
        role: p.role,
        products: p.products.clone(),
    }
}

/// Creates a person with a one-time initial password; returns the row and the password
/// (shown once, stored nowhere).
pub async fn create(
    db: &dyn Database,
    name: &str,
    role: Role,
    products: Vec<String>,
    by: &str,
    now: i64,
) -> PeopleResult<(PersonRow, String)> {
    check_name(name)?;
    let products = crate::validate::list("products", products, PRODUCTS_MAX, |p| {
        otter_core::manifest::check_product_name(p).map_err(crate::error::ApiError::bad_request)
    })
    .map_err(|e| PeopleError::Invalid(e.message))?;
    match role {
        Role::Publisher if products.is_empty() => {
            return Err(PeopleError::Invalid(
                "a publisher needs at least one product (least privilege)".into(),
            ))
        }
        Role::Admin | Role::Viewer if !products.is_empty() => {
            return Err(PeopleError::Invalid(
                "only publishers are scoped to products".into(),
            ))
        }
        _ => {}
    }
    for p in &products {
        match db.get_product(p).await {
            Ok(_) => {}
            Err(DbError::NotFound) => {
                return Err(PeopleError::Invalid(format!("no product named {p:?}")))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let password = new_initial_password();
    let row = PersonRow {
        id: new_id("per_"),
        name: name.to_string(),
        role,
        products,
        password_hash: hash_password(&password).await?,
        must_change_password: true,
        failed_sign_ins: 0,
        locked_until: None,
        created_at: now,
        created_by: by.to_string(),
        last_sign_in_at: None,
        disabled_at: None,
    };
    db.create_person(&row).await.map_err(|e| match e {
        DbError::Conflict(_) => {
            PeopleError::Conflict(format!("a person named {name:?} exists already"))
        }
        e => e.into(),
    })?;
    Ok((row, password))
}

/// Disables a person and ends their sessions.
pub async fn disable(db: &dyn Database, name: &str, now: i64) -> PeopleResult<PersonRow> {
    let person = match db.find_person(name).await {
        Ok(p) => p,
        Err(DbError::NotFound) => {
            return Err(PeopleError::NotFound(format!(
                "no person named {:?}",
                crate::error::clip(name)
            )))
        }
        Err(e) => return Err(e.into()),
    };
    match db.disable_person(&person.id, now).await {
        Ok(()) => {}
        Err(DbError::NotFound) => {
            return Err(PeopleError::Conflict(format!(
                "{name:?} is disabled already"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    db.get_person(&person.id).await.map_err(Into::into)
}

/// The lockout after `failures` wrong passwords in a row, if they reach one.
fn lockout_for(settings: &Settings, failures: i64) -> Option<u64> {
    let every = i64::from(settings.dashboard_failures_before_lockout);
    if every == 0 || failures < every || failures % every != 0 {
        return None;
    }
    let nth = (failures / every - 1).clamp(0, 16) as u32;
    Some(
        settings
            .dashboard_lockout_s
            .saturating_mul(1u64 << nth)
            .min(LOCKOUT_MAX_S),
    )
}

/// Sign-in password checks running at once in this process (`password_checks_at_once`): each
/// takes 19 MiB and a core for a moment, so a flood of sign-ins from many addresses queues
/// here instead of exhausting memory. Sized by the first sign-in's settings (one server a
/// process).
fn check_slots(n: usize) -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(n.max(1)))
}

/// The part of a client address one sign-in budget covers: the address itself for IPv4, its
/// /64 for IPv6 (one host commonly holds a whole /64).
pub fn address_key(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        _ => address.to_string(),
    }
}

/// Checks a name and password (with the lockout and the per-address limit); returns the person.
pub async fn authenticate(
    db: &dyn Database,
    limiters: &Limiters,
    settings: &Settings,
    name: &str,
    password: &str,
    address: &str,
    now: i64,
) -> Result<PersonRow, SignInError> {
    let per_minute = settings.dashboard_address_failures_per_minute;
    let burst = settings.dashboard_address_failures_burst;
    // Every attempt spends from the address's budget before it waits for a password check:
    // spending only after a failure let a burst of simultaneous attempts all pass the check.
    let key = format!("addr:{}", address_key(address));
    if let Err(retry) = limiters.sign_in_failures.take(&key, per_minute, burst) {
        return Err(SignInError::Throttled(retry));
    }
    let _slot = check_slots(settings.dashboard_password_checks_at_once)
        .acquire()
        .await
        .map_err(|e| SignInError::Db(DbError::Backend(Box::new(e))))?;
    let fail = |locked_for| SignInError::Wrong { locked_for };
    // The same work for every refusal (a password check), so that timing does not tell a
    // known name from an unknown one.
    if password.chars().count() > PASSWORD_MAX {
        verify_password("", decoy_hash().await).await;
        return Err(fail(None));
    }
    let person = match db.find_person(name).await {
        Ok(p) => p,
        Err(DbError::NotFound) => {
            verify_password(password, decoy_hash().await).await;
            return Err(fail(None));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(until) = person.locked_until.filter(|u| *u > now) {
        verify_password(password, decoy_hash().await).await;
        return Err(SignInError::Locked((until - now) as u64));
    }
    if !verify_password(password, &person.password_hash).await {
        let failures = db.add_failed_sign_in(&person.id).await?;
        let locked_for = lockout_for(settings, failures);
        if let Some(s) = locked_for {
            db.lock_person(&person.id, now + s as i64).await?;
        }
        return Err(fail(locked_for));
    }
    if person.disabled_at.is_some() {
        return Err(SignInError::Disabled);
    }
    db.record_sign_in(&person.id, now).await?;
    Ok(person)
}

/// Changes a person's own password after checking the current one; ends all their sessions
/// (the caller starts a new one).
pub async fn change_password(
    db: &dyn Database,
    settings: &Settings,
    person: &PersonRow,
    current: &str,
    new: &str,
) -> PeopleResult<()> {
    // The same limit on simultaneous checks as a sign-in, and wrong current passwords count
    // towards the same lockout: a stolen session must not become a way to guess the password.
    let _slot = check_slots(settings.dashboard_password_checks_at_once)
        .acquire()
        .await
        .map_err(|e| PeopleError::Db(DbError::Backend(Box::new(e))))?;
    if current.chars().count() > PASSWORD_MAX
        || !verify_password(current, &person.password_hash).await
    {
        let failures = db.add_failed_sign_in(&person.id).await?;
        if let Some(s) = lockout_for(settings, failures) {
            db.lock_person(&person.id, crate::now() + s as i64).await?;
            db.delete_person_sessions(&person.id).await?;
            return Err(PeopleError::Invalid(
                "the current password is wrong; after too many wrong passwords the account is locked and signed out".into(),
            ));
        }
        return Err(PeopleError::Invalid("the current password is wrong".into()));
    }
    check_password(settings, &person.name, new)?;
    if new == current {
        return Err(PeopleError::Invalid(
            "the new password must differ from the current one".into(),
        ));
    }
    let hash = hash_password(new).await?;
    db.set_password(&person.id, &hash, false).await?;
    db.delete_person_sessions(&person.id).await?;
    Ok(())
}

/// Starts a session; returns the session id for the cookie (stored nowhere) and the row.
pub async fn start_session(
    db: &dyn Database,
    settings: &Settings,
    person: &PersonRow,
    address: Option<String>,
    now: i64,
) -> Result<(String, SessionRow), DbError> {
    let id = random_b64(32);
    let row = SessionRow {
        id_hash: hash_secret(&id),
        person_id: person.id.clone(),
        csrf: random_b64(32),
        created_at: now,
        last_seen_at: now,
        expires_at: now.saturating_add(settings.dashboard_session_max_s as i64),
        address,
    };
    db.create_session(&row).await?;
    Ok((id, row))
}

/// The session of a cookie's id and its person, if it is still valid at `now`; marks it used.
pub async fn resolve_session(
    db: &dyn Database,
    settings: &Settings,
    session_id: &str,
    now: i64,
) -> Result<(SessionRow, PersonRow), SessionEnd> {
    let id_hash = hash_secret(session_id);
    let session = match db.find_session(&id_hash).await {
        Ok(s) => s,
        Err(DbError::NotFound) => return Err(SessionEnd::Unknown),
        Err(e) => return Err(SessionEnd::Db(e)),
    };
    let idle = settings.dashboard_session_idle_s as i64;
    if now >= session.expires_at || now - session.last_seen_at >= idle {
        let _ = db.delete_session(&id_hash).await;
        return Err(SessionEnd::Expired);
    }
    let person = match db.get_person(&session.person_id).await {
        Ok(p) => p,
        Err(DbError::NotFound) => return Err(SessionEnd::Unknown),
        Err(e) => return Err(SessionEnd::Db(e)),
    };
    if person.disabled_at.is_some() {
        let _ = db.delete_person_sessions(&person.id).await;
        return Err(SessionEnd::Disabled);
    }
    // Marked used at most every tenth of the idle time (and at most once a minute), so that a
    // busy page does not write on every request; the idle end is that much early at worst.
    let every = (idle / 10).clamp(0, 60);
    if now - session.last_seen_at > every {
        db.touch_session(&id_hash, now)
            .await
            .map_err(SessionEnd::Db)?;
    }
    Ok((session, person))
}

/// Ends a session (sign-out).
pub async fn end_session(db: &dyn Database, session_id: &str) -> Result<(), DbError> {
    db.delete_session(&hash_secret(session_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_address_is_budgeted_by_its_64() {
        assert_eq!(address_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            address_key("2001:db8:1:2:ffff:1:2:3"),
            address_key("2001:db8:1:2::9")
        );
        assert_ne!(
            address_key("2001:db8:1:3::1"),
            address_key("2001:db8:1:2::1")
        );
        assert_eq!(address_key("::ffff:198.51.100.1"), "198.51.100.1");
        assert_eq!(address_key(""), "");
    }

    #[test]
    fn lockouts_come_every_n_failures_and_double_up_to_a_day() {
        let s = Settings {
            dashboard_failures_before_lockout: 5,
            dashboard_lockout_s: 300,
            ..Settings::default()
        };
        let at: Vec<_> = (1..=16).map(|n| lockout_for(&s, n)).collect();
        assert_eq!(at[3], None);
        assert_eq!(at[4], Some(300));
        assert_eq!(at[5], None);
        assert_eq!(at[9], Some(600));
        assert_eq!(at[14], Some(1200));
        assert_eq!(lockout_for(&s, 5 * 40), Some(LOCKOUT_MAX_S));
        let never = Settings {
            dashboard_failures_before_lockout: 0,
            ..s
        };
        assert_eq!(lockout_for(&never, 5), None);
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("ada.lovelace@example.org").is_ok());
        for bad in ["", ".x", "a b", "ä", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let s = Settings::default();
        assert!(check_password(&s, "ada", "short").is_err());
        assert!(check_password(&s, "ada-lovelace", "ADA-LOVELACE").is_err());
        assert!(check_password(&s, "ada", "correct horse battery").is_ok());
    }

    #[test]
    fn dashboard_settings_that_make_no_sense_are_refused() {
        let ok = Settings::default();
        assert!(ok.validate().is_ok());
        for (s, key) in [
            (
                Settings {
                    dashboard_session_max_s: 10,
                    dashboard_session_idle_s: 20,
                    ..Settings::default()
                },
                "session_max_s",
            ),
            (
                Settings {
                    dashboard_session_idle_s: 0,
                    ..Settings::default()
                },
                "session_idle_s",
            ),
            (
                Settings {
                    dashboard_lockout_s: 0,
                    ..Settings::default()
                },
                "lockout_s",
            ),
            (
                Settings {
                    dashboard_address_failures_burst: 0,
                    ..Settings::default()
                },
                "address_failures_burst",
            ),
            (
                Settings {
                    dashboard_password_min_chars: 4,
                    ..Settings::default()
                },
                "password_min_chars",
            ),
            (
                Settings {
                    dashboard_password_checks_at_once: 0,
                    ..Settings::default()
                },
                "password_checks_at_once",
            ),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains("[dashboard]") && e.contains(key), "{e}");
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = hash_password("correct horse battery").await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h).await);
        assert!(!verify_password("correct horse batterY", &h).await);
        assert!(!verify_password("x", "not a hash").await);
    }
}
