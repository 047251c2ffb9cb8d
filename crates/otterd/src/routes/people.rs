//! People who sign in to the dashboard (issue 11): create (with a one-time initial password,
//! shown once), list, disable. Admins only.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::rfc3339;
use crate::auth::{Principal, Role};
use crate::db::people::PersonRow;
use crate::error::{ApiError, ApiResult, Json};
use crate::pagination::{self, ListQuery};
use crate::services::people::{self as svc, PeopleError};
use crate::{now, AppState};

/// The answer of a refused people operation.
pub fn api_error(e: PeopleError) -> ApiError {
    match e {
        PeopleError::Invalid(m) => ApiError::bad_request(m),
        PeopleError::NotFound(m) => ApiError::not_found(m),
        PeopleError::Conflict(m) => ApiError::conflict(m),
        PeopleError::Db(e) => e.into(),
        PeopleError::Hash(m) => ApiError::internal(m),
    }
}

/// A person, as the API shows them (never their password or its hash).
#[derive(Serialize, ToSchema)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub products: Vec<String>,
    /// Their password is the one-time initial one, to be changed at the next sign-in.
    pub must_change_password: bool,
    pub created_at: String,
    pub created_by: String,
    pub last_sign_in_at: Option<String>,
    /// Locked out after wrong passwords until then.
    pub locked_until: Option<String>,
    pub disabled_at: Option<String>,
}

impl From<&PersonRow> for Person {
    fn from(p: &PersonRow) -> Self {
        Person {
            id: p.id.clone(),
            name: p.name.clone(),
            role: p.role,
            products: p.products.clone(),
            must_change_password: p.must_change_password,
            created_at: rfc3339(p.created_at),
            created_by: p.created_by.clone(),
            last_sign_in_at: p.last_sign_in_at.map(rfc3339),
            locked_until: p.locked_until.filter(|t| *t > now()).map(rfc3339),
            disabled_at: p.disabled_at.map(rfc3339),
        }
    }
}

/// Body of `POST /api/v1/people`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub products: Vec<String>,
}

/// Answer of `POST /api/v1/people`: the one-time initial password, shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedPerson {
    pub person: Person,
    /// To be changed at the first sign-in; stored nowhere (only its hash).
    pub initial_password: String,
}

/// A page of people, by name.
#[derive(Serialize, ToSchema)]
pub struct PersonList {
    pub people: Vec<Person>,
    /// The cursor of the next page; `null` after the last.
    pub next: Option<String>,
}

#[utoipa::path(operation_id = "people_create", post, path = "/api/v1/people", request_body = NewPerson, tag = "people",
    responses((status = 201, body = CreatedPerson), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    Json(body): Json<NewPerson>,
) -> ApiResult<(StatusCode, Json<CreatedPerson>)> {
    who.require_admin()?;
    let (row, password) = svc::create(
        state.db.as_ref(),
        &body.name,
        body.role,
        body.products,
        &who.name,
        now(),
    )
    .await
    .map_err(api_error)?;
    tracing::info!(person_id = %row.id, name = ?row.name, role = %row.role, by = ?who.name, "person created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedPerson {
            person: Person::from(&row),
            initial_password: password,
        }),
    ))
}

#[utoipa::path(operation_id = "people_list", get, path = "/api/v1/people", tag = "people",
    params(("limit" = Option<i64>, Query, description = "items per page, 1 to 1000 (default 100)"),
           ("cursor" = Option<String>, Query, description = "`next` of the previous page")),
    responses((status = 200, body = PersonList), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<PersonList>> {
    who.require_admin()?;
    let limit = pagination::limit(q.limit.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| pagination::decode("people", c, 1).map(|mut p| p.remove(0)))
        .transpose()?;
    let rows = state.db.page_people(after.as_deref(), limit + 1).await?;
    let (rows, next) = pagination::page(rows, limit, |p| {
        pagination::encode("people", std::slice::from_ref(&p.name))
    });
    Ok(Json(PersonList {
        people: rows.iter().map(Person::from).collect(),
        next,
    }))
}

#[utoipa::path(operation_id = "people_disable", post, path = "/api/v1/people/{name}/disable", tag = "people",
    params(("name" = String, Path, description = "the person's name")),
    responses((status = 200, body = Person), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "disabled already", body = crate::error::ErrorBody)))]
pub async fn disable(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Person>> {
    who.require_admin()?;
    let row = svc::disable(state.db.as_ref(), &name, now())
        .await
        .map_err(api_error)?;
    tracing::info!(person_id = %row.id, name = ?row.name, by = ?who.name, "person disabled");
    Ok(Json(Person::from(&row)))
}
