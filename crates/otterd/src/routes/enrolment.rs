//! Bounds on enrolment (issue 8, item 6; docs/security.md, "Enrolment"): a product's cap and rate
//! of new devices, its allow-list of hardware ids imported from the factory's CSV, and the admin's
//! one-time permission for an enrolled hardware id to enrol again.
//!
//! The checks themselves run in `device_api::enroll`; this module is the admin side.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::products::load;
use super::views;
use crate::auth::Principal;
use crate::db::{DbError, EnrollmentPolicy};
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination::{self, ListQuery};
use crate::validate;
use crate::{now, AppState};

/// Most rows one CSV import may hold.
pub const IMPORT_ROWS_MAX: usize = 100_000;
/// Largest CSV body accepted, in bytes.
pub const IMPORT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most hardware ids one product's allow-list may hold.
pub const ALLOWLIST_MAX: i64 = 1_000_000;
/// Default and longest time a re-enrolment permission stays open, in seconds.
pub const REENROLL_DEFAULT_S: u64 = 3600;
pub const REENROLL_MAX_S: u64 = 7 * 86400;

/// A field that may be absent (unchanged), `null` (none) or a value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /api/v1/products/{product}`: only the fields given change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    /// Most devices that may be enrolled; `null`: no cap.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub max_devices: Option<Option<u32>>,
    /// New enrolments a minute; `null`: no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub enrollments_per_minute: Option<Option<u32>>,
    /// Only hardware ids on the allow-list may enrol.
    #[serde(default)]
    pub allowlist_required: Option<bool>,
}

#[utoipa::path(operation_id = "products_update", patch, path = "/api/v1/products/{product}", request_body = ProductPatch, tag = "products",
    responses((status = 200, body = views::Product), (status = 400, body = crate::error::ErrorBody)))]
pub async fn update_product(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    Json(body): Json<ProductPatch>,
) -> ApiResult<Json<views::Product>> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    let mut policy = EnrollmentPolicy {
        max_devices: p.max_devices,
        enrollments_per_minute: p.enrollments_per_minute,
        allowlist_required: p.allowlist_required,
    };
    if let Some(v) = body.max_devices {
        policy.max_devices = v.map(i64::from);
    }
    if let Some(v) = body.enrollments_per_minute {
        if v == Some(0) {
            return Err(ApiError::bad_request(
                "enrollments_per_minute must be at least 1, or null for no limit",
            ));
        }
        policy.enrollments_per_minute = v.map(i64::from);
    }
    if let Some(v) = body.allowlist_required {
        policy.allowlist_required = v;
    }
    state.db.set_enrollment_policy(p.id, &policy).await?;
    tracing::info!(product = %name, max_devices = ?policy.max_devices,
        enrollments_per_minute = ?policy.enrollments_per_minute,
        allowlist_required = policy.allowlist_required, by = ?who.name, "enrolment bounds changed");
    let p = load(&state, &name).await?;
    let keys = state.db.list_keys(p.id).await?;
    Ok(Json(views::Product::new(&p, &keys)))
}

/// Reads the hardware ids of a factory CSV (docs/security.md, "The allow-list CSV"): UTF-8,
/// comma-separated, RFC 4180 quoting; the first row is the header and one column is named
/// `hardware_id` (any case); other columns are ignored; blank lines are skipped. Any bad row
/// refuses the whole file, naming its line.
pub fn parse_allowlist_csv(text: &str) -> Result<Vec<String>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = csv_records(text)?.into_iter();
    let (_, header) = records
        .next()
        .ok_or("the file is empty: the first line must be a header naming a hardware_id column")?;
    let col = header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case("hardware_id"))
        .ok_or("the header (first line) has no hardware_id column")?;
    let mut ids = Vec::new();
    for (line, rec) in records {
        if rec.len() == 1 && rec[0].trim().is_empty() {
            continue;
        }
        let Some(id) = rec.get(col) else {
            return Err(format!(
                "line {line} has {} columns; the hardware_id column is number {}",
                rec.len(),
                col + 1
            ));
        };
        let id = id.trim();
        validate::hardware_id("hardware_id", id)
            .map_err(|e| format!("line {line}: {}", e.message))?;
        ids.push(id.to_string());
        if ids.len() > IMPORT_ROWS_MAX {
            return Err(format!(
                "the file has more than {IMPORT_ROWS_MAX} rows; split it"
            ));
        }
    }
    if ids.is_empty() {
        return Err("the file lists no hardware ids".into());
    }
    Ok(ids)
}

/// Splits CSV text into records, each with the line it starts on.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            ',' => {
                rec.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                rec.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut rec)));
                was_quoted = false;
                line += 1;
                start = line;
            }
            _ if was_quoted => return Err(format!("line {line}: text after a closing quote")),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {start}: a quoted field never ends"));
    }
    if !field.is_empty() || !rec.is_empty() || was_quoted {
        rec.push(field);
        out.push((start, rec));
    }
    Ok(out)
}

/// Answer of an allow-list import.
#[derive(Serialize, ToSchema)]
pub struct Imported {
    /// Hardware ids in the file (repeats counted once).
    pub rows: usize,
    /// Of those, ids that were not listed before.
    pub added: u64,
    /// Ids on the list now.
    pub total: i64,
}

#[utoipa::path(operation_id = "allowlist_import", post, path = "/api/v1/products/{product}/allowlist", tag = "products",
    request_body(content = String, content_type = "text/csv", description = "a header row naming a hardware_id column, then one row per device"),
    responses((status = 200, body = Imported), (status = 400, body = crate::error::ErrorBody)))]
pub async fn import_allowlist(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Imported>> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the allow-list CSV must be UTF-8 text"))?;
    let mut ids = parse_allowlist_csv(text).map_err(|e| {
        ApiError::bad_request(format!("allow-list CSV refused, nothing imported: {e}"))
    })?;
    ids.sort_unstable();
    ids.dedup();
    let before = state.db.allowlist_count(p.id).await?;
    if before + ids.len() as i64 > ALLOWLIST_MAX {
        return Err(ApiError::bad_request(format!(
            "product {name:?} may list at most {ALLOWLIST_MAX} hardware ids; it has {before}"
        )));
    }
    let added = state.db.allowlist_add(p.id, &ids, now()).await?;
    let total = state.db.allowlist_count(p.id).await?;
    tracing::info!(product = %name, rows = ids.len(), added, total, by = ?who.name, "allow-list imported");
    Ok(Json(Imported {
        rows: ids.len(),
        added,
        total,
    }))
}

/// A page of a product's allow-list, in hardware id order.
#[derive(Serialize, ToSchema)]
pub struct Allowlist {
    pub hardware_ids: Vec<String>,
    /// Ids on the list in all.
    pub total: i64,
    /// Whether enrolment is limited to the list.
    pub required: bool,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

#[utoipa::path(operation_id = "allowlist_list", get, path = "/api/v1/products/{product}/allowlist", tag = "products",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = Allowlist), (status = 400, body = crate::error::ErrorBody)))]
pub async fn list_allowlist(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Allowlist>> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| pagination::decode("allowlist", c, 1).map(|mut v| v.remove(0)))
        .transpose()?;
    let rows = state
        .db
        .allowlist_page(p.id, after.as_deref(), limit + 1)
        .await?;
    let (hardware_ids, next) = pagination::page(rows, limit, |id| {
        pagination::encode("allowlist", std::slice::from_ref(id))
    });
    Ok(Json(Allowlist {
        hardware_ids,
        total: state.db.allowlist_count(p.id).await?,
        required: p.allowlist_required,
        next,
    }))
}

#[utoipa::path(operation_id = "allowlist_remove", delete, path = "/api/v1/products/{product}/allowlist/{hardware_id}", tag = "products",
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn remove_from_allowlist(
    State(state): State<AppState>,
    who: Principal,
    Path((name, hardware_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    validate::hardware_id("hardware_id", &hardware_id)?;
    state
        .db
        .allowlist_remove(p.id, &hardware_id)
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!(
                "hardware id {hardware_id:?} is not on {name:?}'s allow-list"
            )),
            e => e.into(),
        })?;
    tracing::info!(product = %name, hardware_id = ?hardware_id, by = ?who.name, "removed from the allow-list");
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/v1/products/{product}/allow-reenroll`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowReenroll {
    pub hardware_id: String,
    /// Seconds the permission stays open (default 3600, at most 7 days).
    #[serde(default)]
    pub valid_for_s: Option<u64>,
}

/// Answer of `POST /api/v1/products/{product}/allow-reenroll`.
#[derive(Serialize, ToSchema)]
pub struct ReenrollAllowed {
    pub device_id: String,
    pub hardware_id: String,
    /// Until when (RFC 3339) the next enrolment with the product secret replaces the device's token.
    pub until: String,
}

#[utoipa::path(operation_id = "products_allow_reenroll", post, path = "/api/v1/products/{product}/allow-reenroll", request_body = AllowReenroll, tag = "products",
    responses((status = 200, body = ReenrollAllowed), (status = 404, body = crate::error::ErrorBody)))]
pub async fn allow_reenroll(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    Json(body): Json<AllowReenroll>,
) -> ApiResult<Json<ReenrollAllowed>> {
    who.require_admin()?;
    let p = load(&state, &name).await?;
    validate::hardware_id("hardware_id", &body.hardware_id)?;
    let valid_for = body.valid_for_s.unwrap_or(REENROLL_DEFAULT_S);
    if !(1..=REENROLL_MAX_S).contains(&valid_for) {
        return Err(ApiError::bad_request(format!(
            "valid_for_s must be 1 to {REENROLL_MAX_S} seconds"
        )));
    }
    let d = match state
        .db
        .find_device_by_hardware_id(p.id, &body.hardware_id)
        .await
    {
        Ok(d) => d,
        Err(DbError::NotFound) => {
            return Err(ApiError::not_found(format!(
                "hardware id {:?} is not enrolled in {name:?}; it can enrol as it is",
                body.hardware_id
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let until = now() + valid_for as i64;
    state.db.allow_reenroll(&d.id, until, &who.name).await?;
    tracing::warn!(product = %name, device = %d.id, hardware_id = ?body.hardware_id, until,
        by = ?who.name, "one re-enrolment allowed: the next enrolment with the product secret replaces this device's token");
    Ok(Json(ReenrollAllowed {
        device_id: d.id,
        hardware_id: body.hardware_id,
        until: views::rfc3339(until),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_csv_reads_the_hardware_id_column_and_refuses_bad_files_naming_the_line() {
        let ok = "serial,Hardware_ID,batch\r\n1,aa:bb:cc:00:00:01,7\n2,\"aa:bb:cc:00:00:02\",7\n\n3, aa:bb:cc:00:00:03 ,\"x,y\"\n";
        assert_eq!(
            parse_allowlist_csv(ok).unwrap(),
            [
                "aa:bb:cc:00:00:01",
                "aa:bb:cc:00:00:02",
                "aa:bb:cc:00:00:03"
            ]
        );
        assert_eq!(parse_allowlist_csv("hardware_id\nx").unwrap(), ["x"]);
        for (bad, why) in [
            ("", "empty"),
            ("serial\n1\n", "no hardware_id column"),
            ("hardware_id\n", "no hardware ids"),
            ("a,hardware_id\n1\n", "line 2 has 1 columns"),
            ("hardware_id\nok\n\"unterminated\n", "never ends"),
            ("hardware_id\nbad\u{1b}id\n", "line 2"),
            ("hardware_id\nab\"c\n", "line 2"),
        ] {
            let e = parse_allowlist_csv(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
