//! Devices: the table (`/ui/devices`, search, filters, keyset paging through the fleet
//! service, so the 1,000th page costs what the first does) and a device's page
//! (`/ui/devices/{id}`: what it reported, its tags, editable, its deployments and events).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::csrf::CsrfForm;
use super::layout::{Layout, Section};
use super::pages::{ago, may_change, q, scope_of, when, when_opt};
use super::session::SignedIn;
use super::{PageError, PageResult};
use crate::db::DbError;
use crate::error::Json;
use crate::services::{dashboard, fleet};
use crate::{audit, now, pagination, AppState};

/// Devices a page of the table shows.
const PAGE: i64 = 50;

/// The table's query: every field optional; empty ones are ignored.
#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    pub q: Option<String>,
    pub product: Option<String>,
    pub group: Option<String>,
    pub tag: Option<String>,
    pub version: Option<String>,
    pub state: Option<String>,
    /// `<1h`, `<1d`, `>1d`, `>7d`: seen within, or not within.
    pub seen: Option<String>,
    /// A device filter (docs/devices.md).
    pub filter: Option<String>,
    pub cursor: Option<String>,
}

fn val(s: &Option<String>) -> &str {
    s.as_deref().map(str::trim).unwrap_or("")
}

impl ListQuery {
    /// The query as the API's parameters.
    fn pairs(&self) -> Result<Vec<(String, String)>, PageError> {
        let mut pairs = Vec::new();
        let mut filter: Vec<String> = Vec::new();
        for (k, v) in [
            ("product", &self.product),
            ("group", &self.group),
            ("tag", &self.tag),
            ("version", &self.version),
            ("state", &self.state),
        ] {
            if !val(v).is_empty() {
                pairs.push((k.to_string(), val(v).to_string()));
            }
        }
        match val(&self.seen) {
            "" => {}
            s @ ("<1h" | "<1d" | ">1d" | ">7d") => filter.push(format!("seen{s}")),
            other => {
                return Err(PageError::bad_request(format!(
                    "Last seen {other:?} is not one of the choices."
                )))
            }
        }
        let search = val(&self.q);
        if !search.is_empty() {
            if search.contains(',') {
                return Err(PageError::bad_request("A hardware id has no commas."));
            }
            filter.push(format!("hardware_id={search}"));
        }
        if !val(&self.filter).is_empty() {
            filter.push(val(&self.filter).to_string());
        }
        if !filter.is_empty() {
            pairs.push(("filter".into(), filter.join(",")));
        }
        Ok(pairs)
    }

    /// This query as a link, with another cursor.
    fn link(&self, cursor: &str) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("q", &self.q),
            ("product", &self.product),
            ("group", &self.group),
            ("tag", &self.tag),
            ("version", &self.version),
            ("state", &self.state),
            ("seen", &self.seen),
            ("filter", &self.filter),
        ] {
            if !val(v).is_empty() {
                parts.push(format!("{k}={}", q(val(v))));
            }
        }
        parts.push(format!("cursor={}", q(cursor)));
        format!("/ui/devices?{}", parts.join("&"))
    }
}

struct Row {
    id: String,
    hardware_id: String,
    product: String,
    channel: String,
    version: String,
    state: String,
    tags: String,
    seen: String,
    seen_at: String,
}

#[derive(Template)]
#[template(path = "dashboard/devices.html")]
struct ListPage {
    layout: Layout,
    f: ListQuery,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
    seen_choices: Vec<(&'static str, &'static str)>,
}

/// `GET /ui/devices`.
pub async fn list(
    State(state): State<AppState>,
    who: SignedIn,
    Query(f): Query<ListQuery>,
) -> PageResult {
    let at = now();
    // A device id in the search box goes to its page.
    let search = val(&f.q);
    if search.starts_with("dev_") {
        if let Ok(d) = state.db.get_device(search).await {
            if scope_of(&who.principal).holds(&d.product) {
                return Ok(Redirect::to(&format!("/ui/devices/{}", d.id)).into_response());
            }
        }
    }
    let result = async {
        let pq = crate::routes::fleet::parse_device_query(
            &f.pairs()
                .map_err(|e| crate::error::ApiError::bad_request(e.message))?,
        )?;
        let product = match &pq.product {
            Some(name) => {
                if !who.principal.may_read_product(name) {
                    return Err(crate::error::ApiError::forbidden(format!(
                        "you may not read product {name:?}"
                    )));
                }
                Some(crate::routes::products::load(&state, name).await?)
            }
            None => {
                who.principal.require_reader()?;
                None
            }
        };
        let cursor = f.cursor.as_deref().filter(|c| !c.is_empty());
        let after = pagination::decode_num_text("devices", cursor)?;
        let query = fleet::DeviceQuery {
            product,
            filter: pq.filter,
            group: pq.group,
        };
        fleet::list_devices(
            state.db.as_ref(),
            &query,
            after,
            PAGE,
            state.settings.device_filter_scan_max,
            at,
        )
        .await
        .map_err(crate::routes::fleet::api_error)
    }
    .await;
    let (rows, next, error, status) = match result {
        Ok(page) => (
            page.devices
                .into_iter()
                .map(|(d, e)| Row {
                    seen: ago(d.last_seen_at, at),
                    seen_at: when_opt(d.last_seen_at),
                    id: d.id,
                    hardware_id: d.hardware_id,
                    product: d.product,
                    channel: d.channel,
                    version: d.version.unwrap_or_default(),
                    state: d.last_state.map(|s| s.to_string()).unwrap_or_default(),
                    tags: e.tags.join(", "),
                })
                .collect(),
            page.next
                .map(|(t, id)| f.link(&pagination::encode("devices", &[t.to_string(), id]))),
            None,
            StatusCode::OK,
        ),
        Err(e) if e.status.is_client_error() => (Vec::new(), None, Some(e.message), e.status),
        Err(e) => return Err(e.into()),
    };
    let page = ListPage {
        layout: Layout::new("Devices", Section::Devices, &who),
        f,
        rows,
        next,
        error,
        seen_choices: vec![
            ("", "any time"),
            ("<1h", "within the last hour"),
            ("<1d", "within the last day"),
            (">1d", "not for a day"),
            (">7d", "not for a week"),
        ],
    };
    Ok(super::render_status(status, &page))
}

struct DeploymentView {
    rollout_id: String,
    release_id: String,
    version: String,
    stage: i64,
    state: String,
    reason: String,
    assigned: String,
    finished: String,
}

struct EventView {
    at: String,
    state: String,
    release_id: String,
    reason: String,
    progress: String,
}

#[derive(Template)]
#[template(path = "dashboard/device.html")]
struct ShowPage {
    layout: Layout,
    d: crate::db::DeviceRow,
    chip: String,
    enrolled: String,
    seen: String,
    seen_ago: String,
    tags: Vec<String>,
    last_reason: String,
    deployments: Vec<DeploymentView>,
    events: Vec<EventView>,
    can_edit: bool,
    error: Option<String>,
}

async fn device_page(
    state: &AppState,
    who: &SignedIn,
    id: &str,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let at = now();
    let p = match dashboard::device(state.db.as_ref(), &scope_of(&who.principal), id).await {
        Ok(p) => p,
        Err(DbError::NotFound) => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                format!("There is no device {id}."),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let page = ShowPage {
        layout: Layout::new(
            format!("Device {}", p.device.hardware_id),
            Section::Devices,
            who,
        ),
        chip: p
            .device
            .chip
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        enrolled: when(p.device.enrolled_at),
        seen: when_opt(p.device.last_seen_at),
        seen_ago: ago(p.device.last_seen_at, at),
        tags: p.extras.tags.clone(),
        last_reason: p.extras.last_reason.clone().unwrap_or_default(),
        deployments: p
            .deployments
            .into_iter()
            .map(|x| DeploymentView {
                rollout_id: x.row.rollout_id,
                release_id: x.row.release_id,
                version: x.version,
                stage: x.row.stage + 1,
                state: x.row.state.to_string(),
                reason: x.row.reason.unwrap_or_default(),
                assigned: when(x.row.assigned_at),
                finished: when_opt(x.row.finished_at),
            })
            .collect(),
        events: p
            .events
            .into_iter()
            .map(|e| EventView {
                at: when(e.at),
                state: e.state.to_string(),
                release_id: e.release_id.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                progress: e.progress_bytes.map(|b| b.to_string()).unwrap_or_default(),
            })
            .collect(),
        can_edit: may_change(&who.principal, &p.device.product),
        d: p.device,
        error,
    };
    Ok(super::render_status(status, &page))
}

/// `GET /ui/devices/{id}`.
pub async fn show(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    device_page(&state, &who, &id, StatusCode::OK, None).await
}

/// The tag forms.
#[derive(Deserialize)]
pub struct TagForm {
    /// Tags separated by commas or spaces.
    pub tags: Option<String>,
    pub tag: Option<String>,
}

async fn change_tags(
    state: AppState,
    who: SignedIn,
    id: String,
    tags: Vec<String>,
    add: bool,
) -> PageResult {
    let body = Json(crate::routes::fleet::TagsBody { tags: tags.clone() });
    let result = if add {
        crate::routes::fleet::add_tags(
            State(state.clone()),
            who.principal.clone(),
            Path(id.clone()),
            body,
        )
        .await
        .map(|_| ())
    } else {
        crate::routes::fleet::remove_tags(
            State(state.clone()),
            who.principal.clone(),
            Path(id.clone()),
            body,
        )
        .await
        .map(|_| ())
    };
    let action = if add { "device.tag" } else { "device.untag" };
    let entry = who.audit(action).target(&id).detail(match &result {
        Ok(()) => format!("tags={}", tags.join(",")),
        Err(e) => format!("refused: {}", crate::error::bound_message(&e.message)),
    });
    audit::record(state.db.as_ref(), entry).await?;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/ui/devices/{id}")).into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            device_page(&state, &who, &id, e.status, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /ui/devices/{id}/tags`: adds tags.
pub async fn add_tags(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<TagForm>,
) -> PageResult {
    let tags: Vec<String> = form
        .tags
        .unwrap_or_default()
        .split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    change_tags(state, who, id, tags, true).await
}

/// `POST /ui/devices/{id}/tags/remove`: removes one tag.
pub async fn remove_tag(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<TagForm>,
) -> PageResult {
    let tags = form.tag.into_iter().filter(|t| !t.is_empty()).collect();
    change_tags(state, who, id, tags, false).await
}
