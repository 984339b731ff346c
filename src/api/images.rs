//! `/v2/images` handlers: create, list, show, patch, delete, tags and the
//! deactivate/reactivate actions. Thin: parse, call the catalogue, shape the reply.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use super::{ApiContext, ApiError, wire};
use crate::domain::caller::Caller;
use crate::domain::patch::Dialect;
use crate::domain::query::ListQuery;

/// Parses a JSON request body the way Glance's deserializer does.
pub fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("Body expected in request.".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("Malformed JSON in request body.".into()))?;
    if !value.is_object() && !value.is_array() {
        return Err(ApiError::BadRequest(
            "Unexpected body type. Expected list/dict.".into(),
        ));
    }
    Ok(value)
}

pub async fn create(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Value::Object(attributes) = json_body(&body)? else {
        return Err(ApiError::BadRequest(
            "Provided object does not match schema 'image': the body must be a JSON object".into(),
        ));
    };
    let image = ctx.catalog.create(&caller, attributes).await?;
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let mut response = (StatusCode::CREATED, Json(wire::image(&image))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("http://{host}/v2/images/{}", image.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

pub async fn list(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let list_query = ListQuery::parse(&params)?;
    let page = ctx.catalog.list(&caller, &list_query).await?;
    Ok(Json(wire::image_list(&page.images, &params, page.full)).into_response())
}

pub async fn show(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let image = ctx.catalog.get(&caller, &id).await?;
    Ok(Json(wire::image(&image)).into_response())
}

pub async fn update(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let dialect = match media.as_deref() {
        Some("application/openstack-images-v2.1-json-patch") => Dialect::V21,
        Some("application/openstack-images-v2.0-json-patch") => Dialect::V20,
        _ => return Err(ApiError::PatchMediaType),
    };
    let patch = json_body(&body)?;
    let image = ctx.catalog.update(&caller, &id, &patch, dialect).await?;
    Ok(Json(wire::image(&image)).into_response())
}

pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.add_tag(&caller, &id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.remove_tag(&caller, &id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn deactivate(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.set_active(&caller, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reactivate(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.set_active(&caller, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}
