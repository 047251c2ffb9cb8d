//! Releases: the list (`/ui/releases`), a release's page (`/ui/releases/{id}`) and the upload
//! of a release file `otter sign` made (`/ui/releases/upload`). The upload is a plain
//! multipart form; `pages.js` sends the same form with a progress bar and shows the server's
//! answer. The page never asks for a private key: releases are signed before they get here.

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::{Buf, Bytes, BytesMut};
use otter_core::manifest::BundleHead;
use otter_core::manifest::BUNDLE_HEAD_LEN;
use serde::Deserialize;

use super::layout::{Layout, Section};
use super::pages::{may_change, q, scope_of, size, when};
use super::session::SignedIn;
use super::{render, render_status, PageError, PageResult};
use crate::auth::Role;
use crate::db::{DbError, ReleaseFilter, ReleaseRow};
use crate::error::ApiError;
use crate::pagination;
use crate::services::dashboard;
use crate::services::release::{self, Outcome};
use crate::{audit, AppState};

/// Releases a page lists.
const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pub product: Option<String>,
    pub channel: Option<String>,
    pub cursor: Option<String>,
}

struct Row {
    id: String,
    product: String,
    version: String,
    channel: String,
    chip: String,
    size: String,
    published: String,
    running: i64,
}

#[derive(Template)]
#[template(path = "dashboard/releases.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    product: String,
    channel: String,
    next: Option<String>,
    can_upload: bool,
}

fn empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// `GET /ui/releases`.
pub async fn list(
    State(state): State<AppState>,
    who: SignedIn,
    Query(lq): Query<ListQuery>,
) -> PageResult {
    let product = empty(lq.product);
    let channel = empty(lq.channel);
    if let Some(p) = &product {
        if !who.principal.may_read_product(p) {
            return Err(PageError::forbidden(format!(
                "You may not read product {p:?}."
            )));
        }
    }
    let after = empty(lq.cursor)
        .map(|c| {
            let p = pagination::decode("releases", &c, 2)?;
            match (p[0].parse(), p[1].parse()) {
                (Ok(at), Ok(seq)) => Ok((at, seq)),
                _ => Err(pagination::bad_cursor()),
            }
        })
        .transpose()?;
    let filter = ReleaseFilter {
        product: product.clone(),
        channel: channel.clone(),
        limit: PAGE,
    };
    let only = (who.principal.role == Role::Publisher).then_some(who.principal.products.as_slice());
    let rows = state
        .db
        .page_releases(&filter, only, after, PAGE + 1)
        .await?;
    let (rows, next) = pagination::page(rows, PAGE, |(seq, r)| {
        pagination::encode("releases", &[r.published_at.to_string(), seq.to_string()])
    });
    let mut out = Vec::with_capacity(rows.len());
    for (_, r) in &rows {
        out.push(Row {
            id: r.id.clone(),
            product: r.product.clone(),
            version: r.version.clone(),
            channel: r.channel.clone(),
            chip: r.chip.name().to_string(),
            size: size(r.size),
            published: when(r.published_at),
            running: dashboard::running(state.db.as_ref(), r).await?,
        });
    }
    let next = next.map(|c| {
        format!(
            "/ui/releases?product={}&channel={}&cursor={}",
            q(product.as_deref().unwrap_or("")),
            q(channel.as_deref().unwrap_or("")),
            q(&c)
        )
    });
    Ok(render(&ListPage {
        layout: Layout::new("Releases", Section::Releases, &who),
        rows: out,
        product: product.unwrap_or_default(),
        channel: channel.unwrap_or_default(),
        next,
        can_upload: who.principal.role != Role::Viewer,
    }))
}

struct Signature {
    key_id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "dashboard/release.html")]
struct ShowPage {
    layout: Layout,
    r: ReleaseRow,
    size: String,
    published: String,
    created: String,
    expires: String,
    signatures: Vec<Signature>,
    /// Channels holding this image (this release's and promoted copies), with their release ids.
    channels: Vec<(String, String)>,
    running: i64,
    devices_link: String,
    can_roll_out: bool,
}

/// `GET /ui/releases/{id}`.
pub async fn show(
    State(state): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
) -> PageResult {
    let missing = || PageError::new(StatusCode::NOT_FOUND, format!("There is no release {id}."));
    let r = match state.db.get_release(&id).await {
        Ok(r) => r,
        Err(DbError::NotFound) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if !scope_of(&who.principal).holds(&r.product) {
        return Err(missing());
    }
    let keys = state.db.list_keys(r.product_id).await?;
    let signatures = r
        .signed_by
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|k| Signature {
            key_id: k.to_string(),
            name: keys
                .iter()
                .find(|x| x.key_id == k)
                .map(|x| x.name.clone())
                .unwrap_or_else(|| "(key removed since)".into()),
        })
        .collect();
    let siblings = state
        .db
        .list_releases(&ReleaseFilter {
            product: Some(r.product.clone()),
            channel: None,
            limit: 1000,
        })
        .await?;
    let channels = siblings
        .iter()
        .filter(|s| s.sha256 == r.sha256)
        .map(|s| (s.channel.clone(), s.id.clone()))
        .collect();
    Ok(render(&ShowPage {
        layout: Layout::new(
            format!("{} {}", r.product, r.version),
            Section::Releases,
            &who,
        ),
        size: size(r.size),
        published: when(r.published_at),
        created: when(r.manifest_created_at),
        expires: r.expires_at.map(when).unwrap_or_else(|| "never".into()),
        signatures,
        channels,
        running: dashboard::running(state.db.as_ref(), &r).await?,
        devices_link: format!(
            "/ui/devices?product={}&filter={}",
            q(&r.product),
            q(&format!("sha256={}", r.sha256))
        ),
        can_roll_out: may_change(&who.principal, &r.product),
        r,
    }))
}

#[derive(Template)]
#[template(path = "dashboard/upload.html")]
struct UploadPage {
    layout: Layout,
    products: Vec<String>,
    product: String,
    channel: String,
    error: Option<String>,
    max: String,
}

async fn upload_page(
    state: &AppState,
    who: &SignedIn,
    status: StatusCode,
    product: &str,
    channel: &str,
    error: Option<String>,
) -> PageResult {
    if who.principal.role == Role::Viewer {
        return Err(PageError::forbidden(
            "Viewers cannot upload releases; ask an admin for the publisher role.",
        ));
    }
    let products = state
        .db
        .list_products()
        .await?
        .into_iter()
        .map(|p| p.name)
        .filter(|p| may_change(&who.principal, p))
        .collect();
    Ok(render_status(
        status,
        &UploadPage {
            layout: Layout::new("Upload a release", Section::Releases, who),
            products,
            product: product.to_string(),
            channel: if channel.is_empty() {
                "stable".into()
            } else {
                channel.to_string()
            },
            error,
            max: size(state.settings.max_upload_bytes.min(i64::MAX as u64) as i64),
        },
    ))
}

/// `GET /ui/releases/upload`.
pub async fn upload_form(
    State(state): State<AppState>,
    who: SignedIn,
    Query(lq): Query<ListQuery>,
) -> PageResult {
    upload_page(
        &state,
        &who,
        StatusCode::OK,
        lq.product.as_deref().unwrap_or(""),
        lq.channel.as_deref().unwrap_or(""),
        None,
    )
    .await
}

/// Whether the browser's script asked for a JSON answer.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Reads a short text field, refusing one longer than 256 bytes before reading it all.
async fn text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::bad_request(format!("the form could not be read: {e}")))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 256 {
            return Err(ApiError::bad_request(
                "a form field is longer than 256 bytes",
            ));
        }
    }
    String::from_utf8(bytes)
        .map(|t| t.trim().to_string())
        .map_err(|_| ApiError::bad_request("a form field is not UTF-8 text"))
}

/// `POST /ui/releases/upload`: a multipart form of `csrf`, `product`, `channel` and then
/// `file` (a release file from `otter sign`), streamed into the same publication as the API's.
pub async fn upload(
    State(state): State<AppState>,
    who: SignedIn,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let json = wants_json(&headers);
    let (mut csrf, mut product, mut channel) = (String::new(), String::new(), String::new());
    let outcome: Result<ReleaseRow, ApiError> = async {
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("the form could not be read: {e}")))?
        {
            match field.name().unwrap_or("") {
                "csrf" => csrf = text(field).await?,
                "product" => product = text(field).await?,
                "channel" => channel = text(field).await?,
                "file" => {
                    super::csrf::check_request(&headers, &who, &csrf)
                        .map_err(|e| ApiError::forbidden(e.message))?;
                    return publish(&state, &who, &product, &channel, field).await;
                }
                _ => {}
            }
        }
        Err(ApiError::bad_request(
            "choose a release file (release.otter from `otter sign`)",
        ))
    }
    .await;
    match outcome {
        Ok(r) => {
            let entry = who.audit("release.push").target(&r.id).detail(format!(
                "{} {} on {} (dashboard upload)",
                r.product, r.version, r.channel
            ));
            if let Err(e) = audit::record(state.db.as_ref(), entry).await {
                return PageError::from(e).into_response();
            }
            let to = format!("/ui/releases/{}", r.id);
            if json {
                (
                    StatusCode::CREATED,
                    axum::Json(serde_json::json!({"release_id": r.id, "url": to})),
                )
                    .into_response()
            } else {
                Redirect::to(&to).into_response()
            }
        }
        Err(e) => {
            if e.status.is_client_error() {
                let entry = who
                    .audit("release.push")
                    .target(if product.is_empty() {
                        "(no product)"
                    } else {
                        product.as_str()
                    })
                    .detail(format!(
                        "refused: {}",
                        crate::error::bound_message(&e.message)
                    ));
                let _ = audit::record(state.db.as_ref(), entry).await;
            }
            if json {
                return e.into_response();
            }
            match upload_page(
                &state,
                &who,
                e.status,
                &product,
                &channel,
                Some(e.message.clone()),
            )
            .await
            {
                Ok(r) => r,
                Err(p) => p.into_response(),
            }
        }
    }
}

/// Publishes the release file of a form field, as `POST /api/v1/products/{product}/releases`
/// does with a body.
async fn publish(
    state: &AppState,
    who: &SignedIn,
    product_name: &str,
    channel: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<ReleaseRow, ApiError> {
    let channel = if channel.is_empty() {
        "stable"
    } else {
        channel
    };
    who.principal.require_publish(product_name)?;
    crate::routes::devices::check_channel(channel)?;
    let product = crate::routes::products::load(state, product_name).await?;
    let mut buf = BytesMut::new();
    let read_err = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("reading the upload failed: {e}"))
    };
    let mut need = BUNDLE_HEAD_LEN;
    let mut head = None;
    while head.is_none() {
        while buf.len() < need {
            match field.chunk().await.map_err(read_err)? {
                Some(c) => buf.extend_from_slice(&c),
                None => {
                    return Err(ApiError::bad_release(format!(
                        "the file ended after {} bytes, inside the bundle head; is it a release.otter file from `otter sign`?",
                        buf.len()
                    )))
                }
            }
        }
        if need == BUNDLE_HEAD_LEN {
            let fixed: [u8; BUNDLE_HEAD_LEN] =
                buf[..BUNDLE_HEAD_LEN].try_into().expect("length checked");
            need = BUNDLE_HEAD_LEN
                + BundleHead::envelope_len(&fixed)
                    .map_err(|e| ApiError::bad_release(e.to_string()))?;
        } else {
            head =
                Some(BundleHead::decode(&buf).map_err(|e| ApiError::bad_release(e.to_string()))?);
        }
    }
    let head = head.expect("decoded above");
    let prepared = release::prepare(state, &product, channel, &head.envelope, false).await?;
    let envelope_bytes = buf[BUNDLE_HEAD_LEN..head.head_len].to_vec();
    buf.advance(head.head_len);
    let first: Bytes = buf.freeze();
    let rest = futures::stream::unfold(field, |mut f| async move {
        match f.chunk().await {
            Ok(Some(c)) => Some((Ok(c), f)),
            Ok(None) => None,
            Err(e) => Some((Err(e), f)),
        }
    });
    let image = futures::StreamExt::chain(futures::stream::once(async move { Ok(first) }), rest);
    let publication = release::Publication {
        product: &product,
        channel,
        envelope: &head.envelope,
        envelope_bytes,
        published_by: &who.person.name,
    };
    match release::publish(state, publication, prepared, Box::pin(image)).await? {
        Outcome::Published(r) | Outcome::Existing(r) => Ok(r),
    }
}
