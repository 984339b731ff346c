//! Interoperable import and tasks over HTTP: `POST /v2/images/{id}/import` (202, the work
//! continues as a task), `GET /v2/images/{id}/tasks`, `GET /v2/tasks[/{id}]`, the legacy
//! `POST /v2/tasks` (an import from a URL), and
//! `DELETE /v2/stores/{store}/{id}` (a copy made by an import goes again). Staging is a
//! data transfer and lives with the other transfers in `images`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::images::{header_store, json_body};
use super::{ApiContext, ApiError, RequestId, wire};
use crate::domain::caller::Caller;
use crate::domain::task::TaskStatus;

pub async fn import(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let request = json_body(&body)?;
    ctx.catalog
        .import(&caller, &id, &request, header_store(&headers)?, &request_id)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// The top-level keys Glance's task schema has (any other is refused).
const TASK_KEYS: [&str; 15] = [
    "id",
    "type",
    "status",
    "input",
    "result",
    "owner",
    "message",
    "image_id",
    "request_id",
    "user_id",
    "expires_at",
    "created_at",
    "updated_at",
    "self",
    "schema",
];

/// `POST /v2/tasks`: the legacy import task (type `import`), checked as Glance checks it;
/// 201 with the task and its `Location`.
pub async fn create_task(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = json_body(&body)?;
    let Some(fields) = request.as_object() else {
        return Err(ApiError::BadRequest("Task 'type' is required".into()));
    };
    let schema_error = |reason: String| {
        ApiError::BadRequest(format!(
            "Provided object does not match schema 'task': {reason}"
        ))
    };
    let kind = match fields.get("type") {
        None => return Err(ApiError::BadRequest("Task 'type' is required".into())),
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => return Err(schema_error(format!("{other} is not of type 'string'"))),
    };
    let Some(input) = fields.get("input") else {
        return Err(ApiError::BadRequest("Task 'input' is required".into()));
    };
    if let Some(key) = fields.keys().find(|k| !TASK_KEYS.contains(&k.as_str())) {
        return Err(schema_error(format!(
            "Additional properties are not allowed ('{key}' was unexpected)"
        )));
    }
    if !(input.is_object() || input.is_null()) {
        return Err(schema_error(format!(
            "{input} is not of type 'null', 'object'"
        )));
    }
    match kind.as_str() {
        "import" => {}
        "api_image_import" | "location_import" => {
            return Err(ApiError::BadRequest(format!(
                "Task type '{kind}' is not created through the tasks API: use POST \
                 /v2/images/{{image_id}}/import"
            )));
        }
        other => {
            return Err(schema_error(format!(
                "'{other}' is not one of ['import', 'api_image_import', 'location_import']"
            )));
        }
    }
    let task = ctx
        .catalog
        .create_legacy_task(&caller, input, &request_id)
        .await?;
    let mut response = (StatusCode::CREATED, Json(wire::task(&task))).into_response();
    if let Ok(location) = http::HeaderValue::from_str(&format!("/v2/tasks/{}", task.id)) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    Ok(response)
}

pub async fn image_tasks(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tasks = ctx.catalog.image_tasks(&caller, &id).await?;
    Ok(Json(wire::image_tasks(&tasks)).into_response())
}

/// Largest page of `GET /v2/tasks`, and the default one.
const TASK_PAGE_MAX: u32 = 1000;
const TASK_PAGE_DEFAULT: u32 = 25;

pub async fn tasks(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let limit = match param("limit") {
        None => TASK_PAGE_DEFAULT,
        Some(text) => text
            .parse::<u32>()
            .map_err(|_| ApiError::BadRequest(format!("Invalid limit value: {text}")))?
            .min(TASK_PAGE_MAX),
    };
    if let Some(status) = param("status") {
        if TaskStatus::parse(status).is_none() {
            return Err(ApiError::BadRequest(format!(
                "Invalid status value: {status}"
            )));
        }
    }
    let tasks = ctx
        .catalog
        .tasks(
            &caller,
            param("type"),
            param("status"),
            param("marker"),
            limit,
        )
        .await?;
    let full = limit > 0 && tasks.len() == limit as usize;
    Ok(Json(wire::task_list(&tasks, &params, full)).into_response())
}

pub async fn delete_from_store(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((store, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.delete_from_store(&caller, &store, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn task(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = ctx.catalog.task(&caller, &id).await?;
    Ok(Json(wire::task(&task)).into_response())
}
