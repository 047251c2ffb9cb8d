//! The one check of what a device reports about an update, for both places it can report it:
//! `POST /device/v1/status` and the `last_outcome` of `POST /device/v1/checkin` (issue 8,
//! item 8). Whatever passes here is stored and shown to admins.

use crate::db::{DbError, DeviceState};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 256;

/// The state of a report, parsed once: one of [`DeviceState::REPORTED`], or a `400` naming
/// them. `what` prefixes the error.
pub fn parse_reported_state(what: &str, report_state: &str) -> ApiResult<DeviceState> {
    match report_state.parse::<DeviceState>() {
        Ok(s) if s.is_reported() => Ok(s),
        _ => {
            let shown: String = report_state.chars().take(64).collect();
            let allowed: Vec<&str> = DeviceState::REPORTED.iter().map(|s| s.as_str()).collect();
            Err(ApiError::bad_request(format!(
                "{what}state {shown:?} is not one of {}",
                allowed.join(", ")
            )))
        }
    }
}

/// Checks a report and returns its state: a state a device may report, a reason of at most
/// [`MAX_REASON_CHARS`] (required for `failure`, `rolled_back` and `refused`), and a release
/// id, if any, of the device's own product. `what` prefixes the errors (`""`, or
/// `"last_outcome: "` for a check-in).
pub async fn check_report(
    state: &AppState,
    device_product_id: i64,
    what: &str,
    release_id: Option<&str>,
    report_state: &str,
    reason: Option<&str>,
) -> ApiResult<DeviceState> {
    let parsed = parse_reported_state(what, report_state)?;
    let needs_reason = parsed.needs_reason();
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            return Err(ApiError::bad_request(format!(
                "{what}reason is limited to {MAX_REASON_CHARS} characters"
            )))
        }
        None if needs_reason => {
            return Err(ApiError::bad_request(format!(
                "{what}state {report_state:?} needs a reason"
            )))
        }
        _ => {}
    }
    if let Some(id) = release_id {
        // A device may only report on releases of its own product.
        let unknown = || {
            let shown: String = id.chars().take(64).collect();
            ApiError::not_found(format!("{what}no release {shown}"))
        };
        match state.db.get_release(id).await {
            Ok(r) if r.product_id == device_product_id => {}
            Ok(_) | Err(DbError::NotFound) => return Err(unknown()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(parsed)
}
