//! Rollouts: the list (`/ui/rollouts`), the form that creates one with a preview of each
//! stage (`/ui/rollouts/new`; the preview is computed by the server on "Preview", and by
//! `pages.js` as the form changes), and a rollout's live page (`/ui/rollouts/{id}`), which
//! `pages.js` refreshes from `/ui/rollouts/{id}/progress.json` without reloading. Pause,
//! resume, advance and abort are forms that ask for confirmation; they go through the API's
//! handlers, so viewers and publishers of other products are refused the same way.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::csrf::CsrfForm;
use super::layout::{Layout, Section};
use super::overview_page::stage_counts;
use super::pages::{may_change, scope_of, when};
use super::session::SignedIn;
use super::{render, render_status, PageError, PageResult};
use crate::auth::Role;
use crate::db::DeviceState;
use crate::db::ReleaseFilter;
use crate::error::{ApiError, Json};
use crate::routes::preview::{Preview, PreviewQuery};
use crate::routes::rollouts::{CreateRollout, Rollout};
use crate::{audit, pagination, AppState};

/// Rollouts a page lists.
const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pub cursor: Option<String>,
}

struct Row {
    id: String,
    product: String,
    version: String,
    target: String,
    state: String,
    stage: String,
    created: String,
    by: String,
}

#[derive(Template)]
#[template(path = "dashboard/rollouts.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    next: Option<String>,
    can_create: bool,
}

/// `GET /ui/rollouts`.
pub async fn list(
    State(state): State<AppState>,
    who: SignedIn,
    Query(lq): Query<ListQuery>,
) -> PageResult {
    let scope = scope_of(&who.principal);
    let mut only: Option<Vec<i64>> = None;
    if who.principal.role == Role::Publisher {
        only = Some(
            state
                .db
                .list_products()
                .await?
                .into_iter()
                .filter(|p| scope.holds(&p.name))
                .map(|p| p.id)
                .collect(),
        );
    }
    let after = match lq.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(pagination::decode("rollouts", c, 1)?.remove(0)),
        None => None,
    };
    let rows = state
        .db
        .list_rollouts(only.as_deref(), after.as_deref(), PAGE + 1)
        .await?;
    let (rows, next) = pagination::page(rows, PAGE, |r| {
        pagination::encode("rollouts", std::slice::from_ref(&r.id))
    });
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let rel = state.db.get_release(&r.release_id).await?;
        out.push(Row {
            product: rel.product,
            version: rel.version,
            target: format!("{} {}", r.target_kind, r.target),
            state: r.state.clone(),
            stage: format!("{} of {}", r.current_stage + 1, r.stages.len()),
            created: when(r.created_at),
            by: r.created_by.clone(),
            id: r.id,
        });
    }
    Ok(render(&ListPage {
        layout: Layout::new("Rollouts", Section::Rollouts, &who),
        rows: out,
        next: next.map(|c| format!("/ui/rollouts?cursor={}", super::pages::q(&c))),
        can_create: who.principal.role != Role::Viewer,
    }))
}

/// The create form's fields (also its query, for the preview without script).
#[derive(Deserialize, Default, Clone)]
pub struct NewForm {
    pub release_id: Option<String>,
    /// `channel`, `tag`, `group` or `filter`.
    pub kind: Option<String>,
    pub target: Option<String>,
    pub stages: Option<String>,
    pub failure_threshold: Option<String>,
    pub min_finished: Option<String>,
    pub success_threshold: Option<String>,
    pub auto_advance: Option<String>,
    pub soak_s: Option<String>,
    pub optional: Option<String>,
    pub window: Option<String>,
    pub rate_per_minute: Option<String>,
    pub preview_id: Option<String>,
}

fn val(s: &Option<String>) -> &str {
    s.as_deref().map(str::trim).unwrap_or("")
}

fn opt(s: &Option<String>) -> Option<String> {
    Some(val(s).to_string()).filter(|s| !s.is_empty())
}

impl NewForm {
    /// The four target fields, one of them set.
    fn target(
        &self,
    ) -> (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        let t = opt(&self.target);
        match val(&self.kind) {
            "tag" => (None, t, None, None),
            "group" => (None, None, t, None),
            "filter" => (None, None, None, t),
            _ => (t, None, None, None),
        }
    }

    fn number(&self, name: &str, v: &Option<String>) -> Result<Option<u32>, ApiError> {
        match val(v) {
            "" => Ok(None),
            s => s.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name} must be a whole number, not {s:?}"))
            }),
        }
    }

    fn body(&self) -> Result<CreateRollout, ApiError> {
        let (channel, tag, group, filter) = self.target();
        Ok(CreateRollout {
            release_id: val(&self.release_id).to_string(),
            channel,
            tag,
            group,
            filter,
            stages: val(&self.stages).to_string(),
            failure_threshold: opt(&self.failure_threshold).unwrap_or_else(|| "10%".into()),
            min_finished: self
                .number("min_finished", &self.min_finished)?
                .unwrap_or(0),
            success_threshold: opt(&self.success_threshold),
            auto_advance: !val(&self.auto_advance).is_empty(),
            soak_s: self.number("soak_s", &self.soak_s)?.unwrap_or(0),
            rollback: false,
            optional: !val(&self.optional).is_empty(),
            window: opt(&self.window),
            rate_per_minute: self.number("rate_per_minute", &self.rate_per_minute)?,
            preview_id: opt(&self.preview_id),
        })
    }

    fn preview_query(&self) -> PreviewQuery {
        let (channel, tag, group, filter) = self.target();
        PreviewQuery {
            release_id: val(&self.release_id).to_string(),
            channel,
            tag,
            group,
            filter,
            stages: val(&self.stages).to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/rollout_new.html")]
struct NewPage {
    layout: Layout,
    f: NewForm,
    /// (release id, label).
    releases: Vec<(String, String)>,
    preview: Option<Preview>,
    error: Option<String>,
}

async fn new_page(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    mut f: NewForm,
    want_preview: bool,
    error: Option<String>,
) -> PageResult {
    if who.principal.role == Role::Viewer {
        return Err(PageError::forbidden("Viewers cannot create rollouts."));
    }
    let releases = state
        .db
        .list_releases(&ReleaseFilter {
            product: None,
            channel: None,
            limit: 200,
        })
        .await?
        .into_iter()
        .filter(|r| may_change(&who.principal, &r.product))
        .map(|r| {
            (
                r.id.clone(),
                format!("{} {} ({})", r.product, r.version, r.channel),
            )
        })
        .collect();
    let mut error = error;
    let mut preview = None;
    if want_preview && !val(&f.release_id).is_empty() && !val(&f.stages).is_empty() {
        match crate::routes::preview::preview(
            State(state.clone()),
            who.principal.clone(),
            Query(f.preview_query()),
        )
        .await
        {
            Ok(Json(p)) => {
                f.preview_id = Some(p.rollout_id.clone());
                preview = Some(p);
            }
            Err(e) if e.status.is_client_error() => error = error.or(Some(e.message)),
            Err(e) => return Err(e.into()),
        }
    }
    if f.stages.is_none() {
        f.stages = Some("10,50,100".into());
    }
    if f.failure_threshold.is_none() {
        f.failure_threshold = Some("10%".into());
    }
    let status = if error.is_some() && status == StatusCode::OK {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    Ok(render_status(
        status,
        &NewPage {
            layout: Layout::new("New rollout", Section::Rollouts, who),
            f,
            releases,
            preview,
            error,
        },
    ))
}

/// `GET /ui/rollouts/new`: the form; with its fields filled, also their preview.
pub async fn new_form(
    State(state): State<AppState>,
    who: SignedIn,
    Query(f): Query<NewForm>,
) -> PageResult {
    new_page(&state, &who, StatusCode::OK, f, true, None).await
}

/// `POST /ui/rollouts/new`: the form's "Preview" button without script: the form again, with
/// the preview of what it holds (a post, so the CSRF token never lands in a URL).
pub async fn preview_form(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(f): CsrfForm<NewForm>,
) -> PageResult {
    new_page(&state, &who, StatusCode::OK, f, true, None).await
}

/// `GET /ui/rollouts/preview.json`: the preview for `pages.js`, as the API answers it.
pub async fn preview_json(
    State(state): State<AppState>,
    who: SignedIn,
    Query(f): Query<NewForm>,
) -> Result<Json<Preview>, ApiError> {
    crate::routes::preview::preview(
        State(state),
        who.principal.clone(),
        Query(f.preview_query()),
    )
    .await
}

/// `POST /ui/rollouts`: creates the rollout, then shows it.
pub async fn create(
    State(state): State<AppState>,
    who: SignedIn,
    CsrfForm(f): CsrfForm<NewForm>,
) -> PageResult {
    let result = match f.body() {
        Ok(body) => {
            crate::routes::rollouts::create(State(state.clone()), who.principal.clone(), Json(body))
                .await
                .map(|(_, Json(r))| r)
        }
        Err(e) => Err(e),
    };
    let entry = match &result {
        Ok(r) => who.audit("rollout.create").target(&r.id).detail(format!(
            "release={} product={} (dashboard)",
            r.release_id, r.product
        )),
        Err(e) => who
            .audit("rollout.create")
            .target(val(&f.release_id))
            .detail(format!(
                "refused: {}",
                crate::error::bound_message(&e.message)
            )),
    };
    audit::record(state.db.as_ref(), entry).await?;
    match result {
        Ok(r) => Ok(Redirect::to(&format!("/ui/rollouts/{}", r.id)).into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            new_page(&state, &who, e.status, f, false, Some(e.message)).await
        }
        Err(e) => Err(e.into()),
    }
}

struct StageView {
    stage: usize,
    percent: u32,
    open: bool,
    counts: Vec<(String, i64)>,
    done: i64,
    failed: i64,
    active: i64,
    total: i64,
}

#[derive(Template)]
#[template(path = "dashboard/rollout.html")]
struct ShowPage {
    layout: Layout,
    r: Rollout,
    created: String,
    stages: Vec<StageView>,
    states: Vec<&'static str>,
    can_change: bool,
}

fn stage_views(r: &Rollout) -> Vec<StageView> {
    r.progress
        .iter()
        .map(|p| {
            let (done, failed, active) = stage_counts(&p.counts);
            StageView {
                stage: p.stage,
                percent: p.percent,
                open: p.stage as i64 <= r.current_stage,
                counts: DeviceState::DEPLOYMENT
                    .iter()
                    .map(|s| {
                        (
                            s.to_string(),
                            p.counts.get(s.as_str()).copied().unwrap_or(0),
                        )
                    })
                    .collect(),
                done,
                failed,
                active,
                total: p.counts.values().sum(),
            }
        })
        .collect()
}

async fn load(state: &AppState, who: &SignedIn, id: &str) -> Result<Rollout, PageError> {
    crate::routes::rollouts::show(
        State(state.clone()),
        who.principal.clone(),
        Path(id.to_string()),
    )
    .await
    .map(|Json(r)| r)
    .map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            PageError::new(StatusCode::NOT_FOUND, format!("There is no rollout {id}."))
        } else {
            e.into()
        }
    })
}

/// `GET /ui/rollouts/{id}`.
pub async fn show(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    let r = load(&state, &who, &id).await?;
    Ok(render(&ShowPage {
        layout: Layout::new(format!("Rollout {id}"), Section::Rollouts, &who),
        created: when(r.created_at),
        stages: stage_views(&r),
        states: DeviceState::DEPLOYMENT.iter().map(|s| s.as_str()).collect(),
        can_change: may_change(&who.principal, &r.product),
        r,
    }))
}

/// `GET /ui/rollouts/{id}/progress.json`: the rollout as the API shows it, for the live view.
pub async fn progress_json(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    crate::routes::rollouts::show(State(state), who.principal.clone(), Path(id)).await
}

/// The pause and abort forms.
#[derive(Deserialize)]
pub struct ActForm {
    pub reason: Option<String>,
}

/// `POST /ui/rollouts/{id}/{pause|resume|advance|abort}`.
pub async fn act(
    State(state): State<AppState>,
    who: SignedIn,
    Path((id, action)): Path<(String, String)>,
    CsrfForm(form): CsrfForm<ActForm>,
) -> PageResult<Response> {
    let reason = opt(&form.reason);
    let body = match &reason {
        Some(r) => Bytes::from(serde_json::json!({ "reason": r }).to_string()),
        None => Bytes::new(),
    };
    let (s, p, i) = (
        State(state.clone()),
        who.principal.clone(),
        Path(id.clone()),
    );
    let result = match action.as_str() {
        "pause" => crate::routes::rollouts::pause(s, p, i, body).await,
        "resume" => crate::routes::rollouts::resume(s, p, i).await,
        "advance" => crate::routes::rollouts::advance(s, p, i).await,
        "abort" => crate::routes::rollouts::abort(s, p, i, body).await,
        _ => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                "There is no such action.",
            ))
        }
    };
    let entry = who.audit(&format!("rollout.{action}")).target(&id);
    let entry = match &result {
        Ok(Json(r)) => entry.detail(match &r.pause_reason {
            Some(why) if action != "resume" => format!("{why} (dashboard)"),
            _ => "(dashboard)".into(),
        }),
        Err(e) => entry.detail(format!(
            "refused: {}",
            crate::error::bound_message(&e.message)
        )),
    };
    audit::record(state.db.as_ref(), entry).await?;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/ui/rollouts/{id}")).into_response()),
        Err(e) => Err(e.into()),
    }
}
