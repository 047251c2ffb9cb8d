//! The audit log (issue 9) on every backend, written once: each backend module compiles this
//! file as a module of its own (`#[path = "audit_sql.rs"] mod audit;`), like `shared.rs`. The
//! SQL is portable (`$N` placeholders, no dialect idioms).

use sqlx::{Pool, Row};

use super::shared::{all, map_err};
use super::{BackendDb, BackendRow};
use crate::db::types::parse_stored_opt;
use crate::db::{AuditFilter, AuditRow, DbResult};

fn entry(r: &BackendRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        role: parse_stored_opt("audit_log", "role", r.try_get("role")?)?,
        token_id: r.try_get("token_id")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        detail: r.try_get("detail")?,
        method: r.try_get("method")?,
        route: r.try_get("route")?,
        address: r.try_get("address")?,
        forwarded_for: r.try_get("forwarded_for")?,
        status: r.try_get("status")?,
    })
}

pub(super) async fn append(pool: &Pool<BackendDb>, e: &AuditRow) -> DbResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log \
         (at, actor, role, token_id, action, target, detail, method, route, address, \
          forwarded_for, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(e.at)
    .bind(&e.actor)
    .bind(e.role.map(|r| r.as_str()))
    .bind(&e.token_id)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.detail)
    .bind(&e.method)
    .bind(&e.route)
    .bind(&e.address)
    .bind(&e.forwarded_for)
    .bind(e.status)
    .fetch_one(pool)
    .await
    .map_err(map_err)
}

/// A value bound to a condition of the page query.
enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

pub(super) async fn page(
    pool: &Pool<BackendDb>,
    f: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> DbResult<Vec<AuditRow>> {
    // Only the conditions asked for, each with its own placeholder (explicit branches rather
    // than `$1 IS NULL OR ...`, which PostgreSQL cannot type).
    let mut conds: Vec<(&str, Arg)> = Vec::new();
    if let Some(v) = &f.actor {
        conds.push(("actor =", Arg::Text(v)));
    }
    if let Some(v) = &f.action {
        conds.push(("action =", Arg::Text(v)));
    }
    if let Some(v) = &f.target {
        conds.push(("target =", Arg::Text(v)));
    }
    if let Some(v) = f.since {
        conds.push(("at >=", Arg::Int(v)));
    }
    if let Some(v) = f.until {
        conds.push(("at <=", Arg::Int(v)));
    }
    if let Some(v) = before {
        conds.push(("id <", Arg::Int(v)));
    }
    let mut sql = String::from("SELECT * FROM audit_log");
    for (i, (cond, _)) in conds.iter().enumerate() {
        sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        sql.push_str(&format!("{cond} ${}", i + 1));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", conds.len() + 1));
    let mut q = sqlx::query(&sql);
    for (_, arg) in &conds {
        q = match arg {
            Arg::Text(v) => q.bind(*v),
            Arg::Int(v) => q.bind(*v),
        };
    }
    let rows = q.bind(limit).fetch_all(pool).await.map_err(map_err)?;
    all(rows, entry)
}
