//! `/v2/metadefs/…` handlers (namespaces, their properties, objects, tags and resource-type
//! associations; the resource types) and `/v2/schemas/metadefs/…`: thin, as the other
//! handlers are. Bodies are checked against Glance's schemas in `wire`.

mod wire;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiContext, ApiError};
use crate::domain::caller::Caller;
use crate::domain::metadef::{
    DefinitionKind, NamespaceFilter, NamespaceVisibility, Page, SortKey, parse_sort_dir,
};
use crate::service::NewNamespace;

/// Glance's `limit_param_default` and `api_limit_max`.
const LIMIT_DEFAULT: usize = 25;
const LIMIT_MAX: usize = 1000;

fn params(query: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `limit`, `marker`, `sort_key` and `sort_dir` as Glance reads them for a list.
fn page(
    params: &[(String, String)],
    sort_key: fn(&str) -> Result<SortKey, crate::domain::DomainError>,
) -> Result<Page, ApiError> {
    let limit = match param(params, "limit") {
        None => LIMIT_DEFAULT,
        Some(text) => {
            let limit: i64 = text
                .parse()
                .map_err(|_| ApiError::BadRequest("limit param must be an integer".into()))?;
            if limit < 0 {
                return Err(ApiError::BadRequest("limit param must be positive".into()));
            }
            usize::try_from(limit).unwrap_or(LIMIT_MAX).min(LIMIT_MAX)
        }
    };
    Ok(Page {
        sort_key: sort_key(param(params, "sort_key").unwrap_or("created_at"))?,
        ascending: parse_sort_dir(param(params, "sort_dir").unwrap_or("desc"))?,
        limit,
        marker: param(params, "marker").map(str::to_string),
    })
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (status, Json(value)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A namespace body (create or PUT) as the service takes it.
fn new_namespace(fields: &Map<String, Value>) -> Result<NewNamespace, ApiError> {
    let namespace = wire::text(fields, "namespace").ok_or_else(|| {
        ApiError::BadRequest(
            "Provided object does not match schema 'namespace': 'namespace' is a required property"
                .into(),
        )
    })?;
    let visibility = wire::text(fields, "visibility")
        .map(|v| {
            NamespaceVisibility::parse(&v)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid visibility value: {v}")))
        })
        .transpose()?;
    let associations = fields
        .get("resource_type_associations")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .map(|a| {
                    (
                        wire::text(a, "name").unwrap_or_default(),
                        wire::text(a, "prefix"),
                        wire::text(a, "properties_target"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let properties = fields
        .get("properties")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(name, d)| {
                    let d = d.as_object().map(wire::property_definition);
                    (name.clone(), d.unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    let objects = fields
        .get("objects")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .map(|o| {
                    (
                        wire::text(o, "name").unwrap_or_default(),
                        wire::object_definition(o),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tags = fields
        .get("tags")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(NewNamespace {
        namespace,
        display_name: wire::text(fields, "display_name"),
        description: wire::text(fields, "description"),
        visibility,
        protected: fields.get("protected").and_then(Value::as_bool),
        owner: wire::text(fields, "owner"),
        associations,
        properties,
        objects,
        tags,
    })
}

pub async fn schema(Path(name): Path<String>) -> Result<Response, ApiError> {
    let body = wire::schema(&name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "The resource /v2/schemas/metadefs/{name} could not be found."
        ))
    })?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn list_namespaces(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query);
    let page = page(&params, SortKey::for_namespaces)?;
    let visibility = param(&params, "visibility")
        .map(|v| {
            NamespaceVisibility::parse(v)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid visibility value: {v}")))
        })
        .transpose()?;
    let filter = NamespaceFilter {
        visibility,
        resource_types: param(&params, "resource_types")
            .map(|types| types.split(',').map(str::to_string).collect()),
    };
    let found = ctx
        .catalog
        .metadef_namespaces(&caller, &filter, &page)
        .await?;
    let namespaces: Vec<Value> = found
        .namespaces
        .iter()
        .map(|(ns, associations)| {
            let contents = crate::domain::metadef::Contents {
                associations: associations.clone(),
                ..Default::default()
            };
            wire::namespace(ns, Some(&contents), false)
        })
        .collect();
    let kept: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "marker")
        .cloned()
        .collect();
    let encode = |pairs: &[(String, String)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    let mut body = Map::new();
    body.insert("namespaces".into(), Value::Array(namespaces));
    let first = if kept.is_empty() {
        "/v2/metadefs/namespaces".to_string()
    } else {
        format!("/v2/metadefs/namespaces?{}", encode(&kept))
    };
    body.insert("first".into(), json!(first));
    body.insert("schema".into(), json!("/v2/schemas/metadefs/namespaces"));
    if let Some(next) = found.next {
        let mut with_marker = kept.clone();
        with_marker.push(("marker".into(), next));
        body.insert(
            "next".into(),
            json!(format!("/v2/metadefs/namespaces?{}", encode(&with_marker))),
        );
    }
    Ok(Json(Value::Object(body)).into_response())
}

pub async fn create_namespace(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = wire::NAMESPACE_BODY.check(&body)?;
    let new = new_namespace(&fields)?;
    let (namespace, contents) = ctx.catalog.create_metadef_namespace(&caller, new).await?;
    let mut response = json_response(
        StatusCode::CREATED,
        wire::namespace(&namespace, Some(&contents), true),
    );
    if let Ok(location) = HeaderValue::from_str(&format!(
        "/v2/metadefs/namespaces/{}",
        namespace.attrs.namespace
    )) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

pub async fn show_namespace(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query);
    let (namespace, contents) = ctx
        .catalog
        .metadef_namespace(&caller, &name, param(&params, "resource_type"))
        .await?;
    Ok(Json(wire::namespace(&namespace, Some(&contents), false)).into_response())
}

pub async fn update_namespace(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = wire::NAMESPACE_BODY.check(&body)?;
    let new = new_namespace(&fields)?;
    let namespace = ctx
        .catalog
        .update_metadef_namespace(&caller, &name, new)
        .await?;
    Ok(Json(wire::namespace(&namespace, None, false)).into_response())
}

pub async fn delete_namespace(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ctx.catalog.delete_metadef_namespace(&caller, &name).await?;
    Ok(no_content())
}

pub async fn list_properties(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query);
    let properties = ctx
        .catalog
        .metadef_definitions(
            &caller,
            &name,
            DefinitionKind::Property,
            param(&params, "resource_type"),
        )
        .await?;
    Ok(Json(json!({"properties": wire::properties(&properties)})).into_response())
}

/// A property's name and definition from a checked body.
fn property_body(body: &[u8]) -> Result<(String, Map<String, Value>), ApiError> {
    let fields = wire::PROPERTY_BODY.check(body)?;
    let name = wire::text(&fields, "name").unwrap_or_default();
    Ok((name, wire::property_definition(&fields)))
}

/// An object's name and definition from a checked body.
fn object_body(body: &[u8]) -> Result<(String, Map<String, Value>), ApiError> {
    let fields = wire::OBJECT_BODY.check(body)?;
    let name = wire::text(&fields, "name").ok_or_else(|| {
        ApiError::BadRequest(
            "Provided object does not match schema 'object': 'name' is a required property".into(),
        )
    })?;
    Ok((name, wire::object_definition(&fields)))
}

pub async fn create_property(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (property, definition) = property_body(&body)?;
    let created = ctx
        .catalog
        .add_metadef_definition(
            &caller,
            &name,
            DefinitionKind::Property,
            property,
            definition,
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, wire::property(&created)))
}

pub async fn show_property(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, property)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query);
    let found = ctx
        .catalog
        .metadef_definition(
            &caller,
            &name,
            DefinitionKind::Property,
            &property,
            param(&params, "resource_type"),
        )
        .await?;
    Ok(Json(wire::property(&found)).into_response())
}

pub async fn update_property(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, property)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (new_name, definition) = property_body(&body)?;
    let updated = ctx
        .catalog
        .replace_metadef_definition(
            &caller,
            &name,
            DefinitionKind::Property,
            &property,
            new_name,
            definition,
        )
        .await?;
    Ok(Json(wire::property(&updated)).into_response())
}

pub async fn delete_property(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, property)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ctx.catalog
        .delete_metadef_definition(&caller, &name, DefinitionKind::Property, &property)
        .await?;
    Ok(no_content())
}

pub async fn delete_properties(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ctx.catalog
        .delete_metadef_definitions(&caller, &name, DefinitionKind::Property)
        .await?;
    Ok(no_content())
}

pub async fn list_objects(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query);
    let page = page(&params, SortKey::for_tags)?;
    let (objects, _) = ctx.catalog.metadef_objects(&caller, &name, &page).await?;
    let objects: Vec<Value> = objects
        .iter()
        .map(|o| wire::object(&name, o, true))
        .collect();
    Ok(Json(json!({"objects": objects, "schema": "v2/schemas/metadefs/objects"})).into_response())
}

pub async fn create_object(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (object, definition) = object_body(&body)?;
    let created = ctx
        .catalog
        .add_metadef_definition(&caller, &name, DefinitionKind::Object, object, definition)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        wire::object(&name, &created, true),
    ))
}

pub async fn show_object(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, object)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let found = ctx
        .catalog
        .metadef_definition(&caller, &name, DefinitionKind::Object, &object, None)
        .await?;
    Ok(Json(wire::object(&name, &found, true)).into_response())
}

pub async fn update_object(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, object)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (new_name, definition) = object_body(&body)?;
    let updated = ctx
        .catalog
        .replace_metadef_definition(
            &caller,
            &name,
            DefinitionKind::Object,
            &object,
            new_name,
            definition,
        )
        .await?;
    Ok(Json(wire::object(&name, &updated, true)).into_response())
}

pub async fn delete_object(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, object)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ctx.catalog
        .delete_metadef_definition(&caller, &name, DefinitionKind::Object, &object)
        .await?;
    Ok(no_content())
}

pub async fn delete_objects(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ctx.catalog
        .delete_metadef_definitions(&caller, &name, DefinitionKind::Object)
        .await?;
    Ok(no_content())
}

pub async fn list_tags(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(query);
    let page = page(&params, SortKey::for_tags)?;
    let (tags, _) = ctx.catalog.metadef_tags(&caller, &name, &page).await?;
    let tags: Vec<Value> = tags.iter().map(|t| json!({"name": t.name})).collect();
    Ok(Json(json!({ "tags": tags })).into_response())
}

/// `POST …/tags`: `{"tags": [{"name": …}, …]}`, replacing the namespace's tags unless
/// `X-Openstack-Append` is true.
pub async fn create_tags(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = super::images::json_body(&body)?;
    let names: Vec<String> = match value.get("tags") {
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| match t.get("name") {
                Some(Value::String(n)) => Ok(n.clone()),
                _ => Err(ApiError::BadRequest(
                    "Provided object does not match schema 'tag': 'name' is a required property"
                        .into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::BadRequest(
                "Provided object does not match schema 'tags': 'tags' is a required property"
                    .into(),
            ));
        }
    };
    let append = headers
        .get("x-openstack-append")
        .and_then(|v| v.to_str().ok())
        .is_some_and(bool_from_string);
    let tags = ctx
        .catalog
        .add_metadef_tags(&caller, &name, names, true, append)
        .await?;
    let tags: Vec<Value> = tags.iter().map(|t| json!({"name": t.name})).collect();
    Ok(json_response(StatusCode::CREATED, json!({ "tags": tags })))
}

/// oslo's `strutils.bool_from_string` (not strict): what reads as true.
fn bool_from_string(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "on" | "y" | "yes"
    )
}

pub async fn create_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut tags = ctx
        .catalog
        .add_metadef_tags(&caller, &name, vec![tag], false, true)
        .await?;
    let tag = tags
        .pop()
        .ok_or_else(|| ApiError::Internal("a created tag is missing".into()))?;
    Ok(json_response(StatusCode::CREATED, wire::tag(&tag)))
}

pub async fn show_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tag = ctx.catalog.metadef_tag(&caller, &name, &tag).await?;
    Ok(Json(wire::tag(&tag)).into_response())
}

pub async fn update_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, tag)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = super::images::json_body(&body)?;
    let Some(Value::String(to)) = value.get("name") else {
        return Err(ApiError::BadRequest(
            "Provided object does not match schema 'tag': 'name' is a required property".into(),
        ));
    };
    let renamed = ctx
        .catalog
        .rename_metadef_tag(&caller, &name, &tag, to.clone())
        .await?;
    Ok(Json(wire::tag(&renamed)).into_response())
}

pub async fn delete_tag(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ctx.catalog.delete_metadef_tag(&caller, &name, &tag).await?;
    Ok(no_content())
}

pub async fn delete_tags(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    ctx.catalog.delete_metadef_tags(&caller, &name).await?;
    Ok(no_content())
}

pub async fn list_resource_types(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let types = ctx.catalog.metadef_resource_types(&caller).await?;
    let types: Vec<Value> = types.iter().map(wire::resource_type).collect();
    Ok(Json(json!({ "resource_types": types })).into_response())
}

pub async fn list_associations(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let associations = ctx.catalog.metadef_associations(&caller, &name).await?;
    let associations: Vec<Value> = associations
        .iter()
        .map(|a| wire::association(a, true))
        .collect();
    Ok(Json(json!({ "resource_type_associations": associations })).into_response())
}

pub async fn create_association(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = wire::RESOURCE_TYPE_BODY.check(&body)?;
    let resource_type = wire::text(&fields, "name").ok_or_else(|| {
        ApiError::BadRequest(
            "Provided object does not match schema 'resource_type_association': 'name' is a \
             required property"
                .into(),
        )
    })?;
    let association = ctx
        .catalog
        .add_metadef_association(
            &caller,
            &name,
            resource_type,
            wire::text(&fields, "prefix"),
            wire::text(&fields, "properties_target"),
        )
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        wire::association(&association, true),
    ))
}

pub async fn delete_association(
    State(ctx): State<ApiContext>,
    Extension(caller): Extension<Caller>,
    Path((name, resource_type)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ctx.catalog
        .remove_metadef_association(&caller, &name, &resource_type)
        .await?;
    Ok(no_content())
}
