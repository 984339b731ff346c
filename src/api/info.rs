//! Discovery under /v2: schemas (served verbatim from Glance 33, the same documents the
//! request validation follows), import methods, stores and usage, truthful to what this
//! server implements.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use serde_json::json;

use super::ApiError;

const IMAGE: &str = include_str!("schemas/schema-image.json");
const IMAGES: &str = include_str!("schemas/schema-images.json");
const MEMBER: &str = include_str!("schemas/schema-member.json");
const MEMBERS: &str = include_str!("schemas/schema-members.json");
const TASK: &str = include_str!("schemas/schema-task.json");
const TASKS: &str = include_str!("schemas/schema-tasks.json");

pub async fn schema(Path(name): Path<String>) -> Result<Response, ApiError> {
    let body = match name.as_str() {
        "image" => IMAGE,
        "images" => IMAGES,
        "member" => MEMBER,
        "members" => MEMBERS,
        "task" => TASK,
        "tasks" => TASKS,
        _ => {
            return Err(ApiError::NotFound(format!(
                "The resource /v2/schemas/{name} could not be found."
            )));
        }
    };
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// No import method is implemented yet, so none is advertised.
pub async fn import() -> Response {
    Json(json!({"import-methods": {
        "description": "Import methods available.",
        "type": "array",
        "value": [],
    }}))
    .into_response()
}

/// One unnamed store: Glance answers 404 when multistore is off, and clients read it so.
pub async fn stores() -> ApiError {
    ApiError::NotFound("Multi backend is not supported at this site.".into())
}

/// Unified limits are not enforced, so there is no usage to report.
pub async fn usage() -> Response {
    Json(json!({"usage": {}})).into_response()
}
