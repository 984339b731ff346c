//! Glance's cache API (`/v2/cache`, Images API 2.14 and later): this node's cached and queued
//! images, prefetching, removal, clean and prune. Answered only while the cache is on.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{ApiContext, ApiError};
use crate::domain::caller::Caller;
use crate::service::ClearTarget;

/// `GET /v2/cache`.
pub async fn state(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let state = ctx.catalog.cache_state(&caller)?;
    let cached: Vec<_> = state
        .cached
        .iter()
        .map(|entry| {
            json!({
                "id": entry.id,
                "image_id": entry.image_id,
                "hits": entry.hits,
                "last_accessed": entry.last_accessed,
                "last_modified": entry.last_modified,
                "size": entry.size,
                "checksum": entry.checksum,
            })
        })
        .collect();
    Ok(Json(json!({"cached_images": cached, "queued_images": state.queued})).into_response())
}

/// `PUT /v2/cache/{image_id}`: 202, queued for prefetching.
pub async fn queue(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.queue_for_cache(&caller, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /v2/cache/{image_id}`.
pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.delete_cache_entry(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v2/cache`: what `x-image-cache-clear-target` names (`cache`, `queue`, or both
/// when empty or absent).
pub async fn clear(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let value = headers
        .get("x-image-cache-clear-target")
        .map(|v| v.to_str().unwrap_or("?"))
        .unwrap_or("");
    let target = ClearTarget::parse(value.trim());
    ctx.catalog.clear_cache(&caller, target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/cache/clean`.
pub async fn clean(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
) -> Result<StatusCode, ApiError> {
    ctx.catalog.clean_cache(&caller).await?;
    Ok(StatusCode::OK)
}

/// `POST /v2/cache/prune`.
pub async fn prune(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let (files, bytes) = ctx.catalog.prune_cache(&caller).await?;
    Ok(Json(json!({"total_files_pruned": files, "total_bytes_pruned": bytes})).into_response())
}

/// `GET /v2/cache/nodes/{image_id}`.
pub async fn nodes(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(_id): Path<String>,
) -> Result<Response, ApiError> {
    ctx.catalog.cached_nodes(&caller)?;
    Ok(StatusCode::OK.into_response())
}
