//! Discovery under /v2: schemas (Glance 33's, the same documents the request validation
//! follows, with the format enums of this generation's config), import methods, stores and
//! usage, truthful to what this server implements.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::{ApiContext, ApiError};
use crate::domain::caller::Caller;
use crate::service::{StoreDetail, StoreInfo};

const IMAGE: &str = include_str!("schemas/schema-image.json");
const IMAGES: &str = include_str!("schemas/schema-images.json");
const MEMBER: &str = include_str!("schemas/schema-member.json");
const MEMBERS: &str = include_str!("schemas/schema-members.json");
const TASK: &str = include_str!("schemas/schema-task.json");
const TASKS: &str = include_str!("schemas/schema-tasks.json");

/// Glance's schemas, with the `disk_format` and `container_format` enums this generation's
/// config allows (as Glance builds them from its config): clients validate against them.
pub async fn schema(
    State(ctx): State<ApiContext>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let body = match name.as_str() {
        "image" | "images" => {
            let text = if name == "image" { IMAGE } else { IMAGES };
            let mut schema: Value = serde_json::from_str(text)
                .map_err(|e| ApiError::Internal(format!("built-in schema {name}: {e}")))?;
            let formats = ctx.catalog.formats();
            let image = if name == "image" {
                &mut schema["properties"]
            } else {
                &mut schema["properties"]["images"]["items"]["properties"]
            };
            for (key, allowed) in [
                ("disk_format", &formats.disk),
                ("container_format", &formats.container),
            ] {
                let values = std::iter::once(Value::Null).chain(allowed.iter().map(|f| json!(f)));
                image[key]["enum"] = Value::Array(values.collect());
            }
            return Ok(Json(schema).into_response());
        }
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

/// The import methods this generation's config offers, each implemented.
pub async fn import(State(ctx): State<ApiContext>) -> Response {
    Json(json!({"import-methods": {
        "description": "Import methods available.",
        "type": "array",
        "value": ctx.catalog.import_methods(),
    }}))
    .into_response()
}

/// Every store, Glance's multi-store way: `default` and `read-only` are the string
/// `"true"`, present only when true. A config without `[stores.*]` has one, `default`.
pub async fn stores(State(ctx): State<ApiContext>) -> Response {
    let stores: Vec<Value> = ctx.catalog.store_infos().iter().map(describe).collect();
    Json(json!({"stores": stores})).into_response()
}

/// The stores with their type and driver properties; for admins.
pub async fn stores_detail(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    if !caller.is_admin {
        return Err(ApiError::Forbidden(
            "You are not authorized to complete stores_info_detail action.".into(),
        ));
    }
    let stores: Vec<Value> = ctx
        .catalog
        .store_infos()
        .iter()
        .map(|store| {
            let mut entry = describe(store);
            match &store.detail {
                StoreDetail::Files(dirs) => {
                    let dirs: Vec<String> = dirs
                        .iter()
                        .map(|(path, priority)| format!("{}:{priority}", path.display()))
                        .collect();
                    entry["type"] = json!("file");
                    entry["properties"] = json!({
                        "data_dir": dirs.join(","),
                        "chunk_size": 65536,
                        "thin_provisioning": false,
                    });
                }
                StoreDetail::Objects {
                    endpoint,
                    bucket,
                    prefix,
                    part_size,
                } => {
                    entry["type"] = json!("s3");
                    entry["properties"] = json!({
                        "endpoint": endpoint,
                        "bucket": bucket,
                        "prefix": prefix,
                        "chunk_size": part_size,
                    });
                }
            }
            entry["weight"] = json!(0);
            entry
        })
        .collect();
    Ok(Json(json!({"stores": stores})).into_response())
}

fn describe(store: &StoreInfo) -> Value {
    let mut entry = json!({"id": store.id});
    if let Some(description) = &store.description {
        entry["description"] = json!(description);
    }
    if store.default {
        entry["default"] = json!("true");
    }
    if store.read_only {
        entry["read-only"] = json!("true");
    }
    entry
}

/// The caller's project's unified limits and usage (`images.use_keystone_limits`); empty
/// without them.
pub async fn usage(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let mut usage = serde_json::Map::new();
    for (resource, limit, used) in ctx.catalog.usage(&caller).await? {
        usage.insert(resource.into(), json!({"limit": limit, "usage": used}));
    }
    Ok(Json(json!({"usage": usage})).into_response())
}
