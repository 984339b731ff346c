//! Interoperable import and tasks over HTTP: `POST /v2/images/{id}/import` (202, the work
//! continues as a task), `GET /v2/images/{id}/tasks`, `GET /v2/tasks/{id}`. Staging is a
//! data transfer and lives with the other transfers in `images`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use super::images::{header_store, json_body};
use super::{ApiContext, ApiError, RequestId, wire};
use crate::domain::caller::Caller;

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

pub async fn image_tasks(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tasks = ctx.catalog.image_tasks(&caller, &id).await?;
    Ok(Json(wire::image_tasks(&tasks)).into_response())
}

pub async fn task(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let task = ctx.catalog.task(&caller, &id).await?;
    Ok(Json(wire::task(&task)).into_response())
}
