//! Offline administration on the server's host (issue 8, item 7): `otterd admin create-token`
//! makes a new admin token straight in the database, for when every admin token is lost.
//!
//! It works whether or not the server runs: SQLite in WAL mode takes a second writer process
//! (each write waits for the other's lock), and the server reads tokens from the database on
//! every request, so the new token works at once.

use anyhow::Context;

use crate::auth;
use crate::config::Settings;
use crate::db;

/// Creates an admin token named `name` in the database of `settings`; returns the token, which
/// exists nowhere else (only its hash is stored).
pub async fn create_admin_token(settings: &Settings, name: &str) -> anyhow::Result<String> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        anyhow::bail!("a token name is 1 to 64 characters, without control characters");
    }
    if settings.database_url.is_none() {
        let file = settings.data_dir.join("otter.db");
        anyhow::ensure!(
            file.exists(),
            "no database at {}: give the server's data directory with --data-dir (or OTTER_DATA_DIR, or `data_dir` in the config file)",
            file.display()
        );
    }
    let db = db::connect::open(settings).await?;
    let token = auth::new_secret(auth::TOKEN_PREFIX);
    let row = db::TokenRow {
        id: auth::new_id("tok_"),
        name: name.to_string(),
        role: auth::Role::Admin,
        products: vec![],
        token_hash: auth::hash_secret(&token),
        created_at: crate::now(),
        last_used_at: None,
        revoked_at: None,
    };
    db.create_token(&row).await?;
    crate::audit::record(
        db.as_ref(),
        db::AuditRow::offline_admin("token.create")
            .target(&row.id)
            .detail(format!("name={} role={}", row.name, row.role)),
    )
    .await
    .context("recording the new token in the audit log")?;
    tracing::warn!(token_id = %row.id, name = ?row.name, "admin token created offline with `otterd admin create-token`");
    Ok(token)
}

/// Creates an admin person named `name` in the database of `settings` (issue 11), for the
/// dashboard when nobody can sign in; returns their one-time initial password (changed at the
/// first sign-in).
pub async fn create_admin_person(settings: &Settings, name: &str) -> anyhow::Result<String> {
    if settings.database_url.is_none() {
        let file = settings.data_dir.join("otter.db");
        anyhow::ensure!(
            file.exists(),
            "no database at {}: give the server's data directory with --data-dir (or OTTER_DATA_DIR, or `data_dir` in the config file)",
            file.display()
        );
    }
    let db = db::connect::open(settings).await?;
    let (row, password) = crate::services::people::create(
        db.as_ref(),
        name,
        auth::Role::Admin,
        vec![],
        crate::audit::OFFLINE_ADMIN_ACTOR,
        crate::now(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::audit::record(
        db.as_ref(),
        db::AuditRow::offline_admin("person.create")
            .target(&row.id)
            .detail(format!("name={} role=admin", row.name)),
    )
    .await
    .context("recording the new person in the audit log")?;
    tracing::warn!(person_id = %row.id, name = ?row.name, "admin person created offline with `otterd admin create-person`");
    Ok(password)
}
