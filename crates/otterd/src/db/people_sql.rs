//! [`PeopleStore`] on every backend, written once: each backend module compiles this file as a
//! module of its own (`#[path = "people_sql.rs"] mod people_store;`), like `shared.rs`. The SQL
//! is portable (`$N` placeholders, `RETURNING`, booleans as BOOLEAN).

use async_trait::async_trait;
use sqlx::Row;

use super::shared::map_err;
use super::{Backend, BackendRow};
use crate::db::people::{PeopleStore, PersonRow, SessionRow};
use crate::db::types::parse_stored;
use crate::db::{DbError, DbResult};

const PERSON_COLUMNS: &str = "id, name, role, products, password_hash, must_change_password, \
     failed_sign_ins, locked_until, created_at, created_by, last_sign_in_at, disabled_at";

const SESSION_COLUMNS: &str =
    "id_hash, person_id, csrf, created_at, last_seen_at, expires_at, address";

fn person(r: &BackendRow) -> Result<PersonRow, sqlx::Error> {
    let products: String = r.try_get("products")?;
    let role: String = r.try_get("role")?;
    Ok(PersonRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: parse_stored("people", "role", &role)?,
        products: serde_json::from_str(&products).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        password_hash: r.try_get("password_hash")?,
        must_change_password: r.try_get("must_change_password")?,
        failed_sign_ins: r.try_get("failed_sign_ins")?,
        locked_until: r.try_get("locked_until")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        last_sign_in_at: r.try_get("last_sign_in_at")?,
        disabled_at: r.try_get("disabled_at")?,
    })
}

fn session(r: &BackendRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id_hash: r.try_get("id_hash")?,
        person_id: r.try_get("person_id")?,
        csrf: r.try_get("csrf")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        expires_at: r.try_get("expires_at")?,
        address: r.try_get("address")?,
    })
}

fn one_row(done: u64) -> DbResult<()> {
    if done == 0 {
        Err(DbError::NotFound)
    } else {
        Ok(())
    }
}

#[async_trait]
impl PeopleStore for Backend {
    async fn create_person(&self, p: &PersonRow) -> DbResult<()> {
        let products = serde_json::to_string(&p.products).map_err(super::shared::backend)?;
        sqlx::query(
            "INSERT INTO people (id, name, role, products, password_hash, must_change_password, \
             failed_sign_ins, locked_until, created_at, created_by, last_sign_in_at, disabled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, $7, $8, NULL, NULL)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.role.as_str())
        .bind(products)
        .bind(&p.password_hash)
        .bind(p.must_change_password)
        .bind(p.created_at)
        .bind(&p.created_by)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_person(&self, id: &str) -> DbResult<PersonRow> {
        let row = sqlx::query(&format!(
            "SELECT {PERSON_COLUMNS} FROM people WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        person(&row).map_err(map_err)
    }

    async fn find_person(&self, name: &str) -> DbResult<PersonRow> {
        let row = sqlx::query(&format!(
            "SELECT {PERSON_COLUMNS} FROM people WHERE name = $1"
        ))
        .bind(name)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        person(&row).map_err(map_err)
    }

    async fn list_people(&self) -> DbResult<Vec<PersonRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {PERSON_COLUMNS} FROM people ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        rows.iter().map(|r| person(r).map_err(map_err)).collect()
    }

    async fn page_people(&self, after: Option<&str>, limit: i64) -> DbResult<Vec<PersonRow>> {
        let rows = match after {
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {PERSON_COLUMNS} FROM people WHERE name > $1 ORDER BY name LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {PERSON_COLUMNS} FROM people ORDER BY name LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.pool())
                .await
            }
        }
        .map_err(map_err)?;
        rows.iter().map(|r| person(r).map_err(map_err)).collect()
    }

    async fn set_password(&self, id: &str, hash: &str, must_change: bool) -> DbResult<()> {
        let done = sqlx::query(
            "UPDATE people SET password_hash = $2, must_change_password = $3, \
             failed_sign_ins = 0, locked_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(hash)
        .bind(must_change)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        one_row(done.rows_affected())
    }

    async fn add_failed_sign_in(&self, id: &str) -> DbResult<i64> {
        let row = sqlx::query(
            "UPDATE people SET failed_sign_ins = failed_sign_ins + 1 WHERE id = $1 \
             RETURNING failed_sign_ins",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        row.try_get("failed_sign_ins").map_err(map_err)
    }

    async fn lock_person(&self, id: &str, until: i64) -> DbResult<()> {
        let done = sqlx::query("UPDATE people SET locked_until = $2 WHERE id = $1")
            .bind(id)
            .bind(until)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        one_row(done.rows_affected())
    }

    async fn record_sign_in(&self, id: &str, at: i64) -> DbResult<()> {
        let done = sqlx::query(
            "UPDATE people SET failed_sign_ins = 0, locked_until = NULL, last_sign_in_at = $2 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        one_row(done.rows_affected())
    }

    async fn disable_person(&self, id: &str, at: i64) -> DbResult<()> {
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        let done =
            sqlx::query("UPDATE people SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        one_row(done.rows_affected())?;
        sqlx::query("DELETE FROM sessions WHERE person_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn create_session(&self, s: &SessionRow) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&s.id_hash)
        .bind(&s.person_id)
        .bind(&s.csrf)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(&s.address)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn find_session(&self, id_hash: &str) -> DbResult<SessionRow> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1"
        ))
        .bind(id_hash)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        session(&row).map_err(map_err)
    }

    async fn touch_session(&self, id_hash: &str, at: i64) -> DbResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(at)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_person_sessions(&self, person_id: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE person_id = $1")
            .bind(person_id)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn purge_sessions(&self, now: i64) -> DbResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
