//! `/v2/images/{id}/members` handlers: sharing an image with other projects.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

use super::images::json_body;
use super::{ApiContext, ApiError, wire};
use crate::domain::caller::Caller;
use crate::domain::member::MemberStatus;

pub async fn create(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Value::Object(fields) = json_body(&body)? else {
        return Err(ApiError::BadRequest(
            "Expected a member in the form: {\"member\": \"image_id\"}".into(),
        ));
    };
    let member_id = match fields.get("member") {
        None => {
            return Err(ApiError::BadRequest(
                "Member to be added not specified".into(),
            ));
        }
        Some(Value::String(m)) if m.trim().is_empty() => {
            return Err(ApiError::BadRequest("Member can't be empty".into()));
        }
        Some(Value::String(m)) => m.trim().to_string(),
        Some(_) => return Err(ApiError::BadRequest("Member must be a string".into())),
    };
    let member = ctx.catalog.add_member(&caller, &id, &member_id).await?;
    Ok(Json(wire::member(&member)).into_response())
}

pub async fn list(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let members = ctx.catalog.members(&caller, &id).await?;
    Ok(Json(wire::members(&members)).into_response())
}

pub async fn show(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, member_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let member = ctx.catalog.member(&caller, &id, &member_id).await?;
    Ok(Json(wire::member(&member)).into_response())
}

pub async fn update(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, member_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let status = match body.get("status") {
        None => return Err(ApiError::BadRequest("Status not specified".into())),
        Some(Value::String(s)) => MemberStatus::parse(s)?,
        Some(_) => MemberStatus::parse("")?,
    };
    let member = ctx
        .catalog
        .set_member_status(&caller, &id, &member_id, status)
        .await?;
    Ok(Json(wire::member(&member)).into_response())
}

pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, member_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.remove_member(&caller, &id, &member_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
