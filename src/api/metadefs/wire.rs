//! The metadefs' JSON as Glance reads and writes it: request bodies checked against Glance's
//! own schemas (the documents `/v2/schemas/metadefs/…` serves), read-only attributes refused,
//! and the responses' shapes (what is left out when unset, `self` and `schema` links).

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::api::ApiError;
use crate::domain::metadef::{Association, Contents, Definition, Namespace, ResourceType, Tag};
use crate::domain::time::format;

pub const NAMESPACE: &str = include_str!("../schemas/metadefs/namespace.json");
pub const NAMESPACES: &str = include_str!("../schemas/metadefs/namespaces.json");
pub const OBJECT: &str = include_str!("../schemas/metadefs/object.json");
pub const OBJECTS: &str = include_str!("../schemas/metadefs/objects.json");
pub const PROPERTY: &str = include_str!("../schemas/metadefs/property.json");
pub const PROPERTIES: &str = include_str!("../schemas/metadefs/properties.json");
pub const RESOURCE_TYPE: &str = include_str!("../schemas/metadefs/resource_type.json");
pub const RESOURCE_TYPES: &str = include_str!("../schemas/metadefs/resource_types.json");
pub const TAG: &str = include_str!("../schemas/metadefs/tag.json");
pub const TAGS: &str = include_str!("../schemas/metadefs/tags.json");

/// The schema document `/v2/schemas/metadefs/{name}` serves.
pub fn schema(name: &str) -> Option<&'static str> {
    Some(match name {
        "namespace" => NAMESPACE,
        "namespaces" => NAMESPACES,
        "object" => OBJECT,
        "objects" => OBJECTS,
        "property" => PROPERTY,
        "properties" => PROPERTIES,
        "resource_type" => RESOURCE_TYPE,
        "resource_types" => RESOURCE_TYPES,
        "tag" => TAG,
        "tags" => TAGS,
        _ => return None,
    })
}

/// A request body's schema: its name (for messages), the read-only attributes it refuses,
/// and its validator, built once.
pub struct BodySchema {
    name: &'static str,
    read_only: &'static [&'static str],
    validator: LazyLock<Result<jsonschema::Validator, String>>,
}

macro_rules! body_schema {
    ($name:literal, $text:expr, $read_only:expr) => {
        BodySchema {
            name: $name,
            read_only: $read_only,
            validator: LazyLock::new(|| {
                let schema: Value = serde_json::from_str($text).map_err(|e| e.to_string())?;
                jsonschema::draft4::new(&schema).map_err(|e| e.to_string())
            }),
        }
    };
}

/// The attributes a client may not send (Glance's `_disallowed_properties`): namespaces and
/// objects have links, the others only timestamps.
const WITH_LINKS: &[&str] = &["self", "schema", "created_at", "updated_at"];
const TIMES: &[&str] = &["created_at", "updated_at"];

pub static NAMESPACE_BODY: BodySchema = body_schema!("namespace", NAMESPACE, WITH_LINKS);
pub static OBJECT_BODY: BodySchema = body_schema!("object", OBJECT, WITH_LINKS);
pub static PROPERTY_BODY: BodySchema = body_schema!("property", PROPERTY, TIMES);
pub static RESOURCE_TYPE_BODY: BodySchema =
    body_schema!("resource_type_association", RESOURCE_TYPE, TIMES);

impl BodySchema {
    /// `body` as a JSON object that passes the schema: 403 for a read-only attribute, 400
    /// naming the schema and the first violation otherwise.
    pub fn check(&self, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
        if body.is_empty() {
            return Err(ApiError::BadRequest("Body expected in request.".into()));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::BadRequest("Malformed JSON in request body.".into()))?;
        let Value::Object(fields) = value else {
            return Err(ApiError::BadRequest(format!(
                "Provided object does not match schema '{}': the body is not an object",
                self.name
            )));
        };
        if let Some(key) = self.read_only.iter().find(|key| fields.contains_key(**key)) {
            return Err(ApiError::Forbidden(format!(
                "Attribute '{key}' is read-only."
            )));
        }
        let validator = self
            .validator
            .as_ref()
            .map_err(|e| ApiError::Internal(format!("built-in schema {}: {e}", self.name)))?;
        let instance = Value::Object(fields);
        if let Some(error) = validator.iter_errors(&instance).next() {
            return Err(ApiError::BadRequest(format!(
                "Provided object does not match schema '{}': {error}",
                self.name
            )));
        }
        match instance {
            Value::Object(fields) => Ok(fields),
            _ => Err(ApiError::Internal("a checked body is an object".into())),
        }
    }
}

/// The attributes of a property definition Glance keeps (its `PropertyType`); others are
/// dropped, as Glance's model drops them.
const PROPERTY_FIELDS: [&str; 18] = [
    "type",
    "title",
    "description",
    "operators",
    "default",
    "readonly",
    "minimum",
    "maximum",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "confidential",
    "items",
    "uniqueItems",
    "minItems",
    "maxItems",
    "additionalItems",
];

/// A property definition as stored: its kept attributes, without its name.
pub fn property_definition(fields: &Map<String, Value>) -> Map<String, Value> {
    fields
        .iter()
        .filter(|(key, value)| PROPERTY_FIELDS.contains(&key.as_str()) && !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// An object definition as stored: description, required and its properties (each kept
/// as a property definition).
pub fn object_definition(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut kept = Map::new();
    for key in ["description", "required"] {
        if let Some(value) = fields.get(key).filter(|v| !v.is_null()) {
            kept.insert(key.into(), value.clone());
        }
    }
    if let Some(Value::Object(properties)) = fields.get("properties") {
        let properties: Map<String, Value> = properties
            .iter()
            .map(|(name, definition)| {
                let definition = match definition {
                    Value::Object(d) => property_definition(d),
                    _ => Map::new(),
                };
                (name.clone(), Value::Object(definition))
            })
            .collect();
        kept.insert("properties".into(), Value::Object(properties));
    }
    kept
}

/// A string attribute of a checked body (the schema said it is a string when present).
pub fn text(fields: &Map<String, Value>, key: &str) -> Option<String> {
    fields.get(key).and_then(Value::as_str).map(str::to_string)
}

fn href(namespace: &str) -> String {
    format!("/v2/metadefs/namespaces/{namespace}")
}

fn times(into: &mut Map<String, Value>, created_at: i64, updated_at: i64) {
    into.insert("created_at".into(), json!(format(created_at)));
    into.insert("updated_at".into(), json!(format(updated_at)));
}

pub fn association(a: &Association, with_times: bool) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(a.resource_type));
    if let Some(prefix) = &a.prefix {
        out.insert("prefix".into(), json!(prefix));
    }
    if let Some(target) = &a.properties_target {
        out.insert("properties_target".into(), json!(target));
    }
    if with_times {
        times(&mut out, a.created_at, a.updated_at);
    }
    Value::Object(out)
}

/// A property with its name (one property's GET, POST and PUT).
pub fn property(d: &Definition) -> Value {
    let mut out = d.body.clone();
    out.insert("name".into(), json!(d.name));
    Value::Object(out)
}

/// Properties by name, as a namespace and the properties list show them.
pub fn properties(definitions: &[Definition]) -> Value {
    Value::Object(
        definitions
            .iter()
            .map(|d| (d.name.clone(), Value::Object(d.body.clone())))
            .collect(),
    )
}

pub fn object(namespace: &str, d: &Definition, with_times: bool) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(d.name));
    for (key, value) in &d.body {
        out.insert(key.clone(), value.clone());
    }
    if with_times {
        times(&mut out, d.created_at, d.updated_at);
        out.insert(
            "self".into(),
            json!(format!("{}/objects/{}", href(namespace), d.name)),
        );
        out.insert("schema".into(), json!("/v2/schemas/metadefs/object"));
    }
    Value::Object(out)
}

pub fn tag(t: &Tag) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(t.name));
    times(&mut out, t.created_at, t.updated_at);
    Value::Object(out)
}

pub fn resource_type(r: &ResourceType) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(r.name));
    times(&mut out, r.created_at, r.updated_at);
    Value::Object(out)
}

/// A namespace: its attributes and links, and what it holds when `contents` is given
/// (each part only when not empty, as Glance leaves unset parts out). `fresh` is a
/// creation's answer, which repeats the contents as they were sent.
pub fn namespace(ns: &Namespace, contents: Option<&Contents>, fresh: bool) -> Value {
    let a = &ns.attrs;
    let mut out = Map::new();
    out.insert("namespace".into(), json!(a.namespace));
    if let Some(display_name) = &a.display_name {
        out.insert("display_name".into(), json!(display_name));
    }
    if let Some(description) = &a.description {
        out.insert("description".into(), json!(description));
    }
    out.insert("visibility".into(), json!(a.visibility.as_str()));
    out.insert("protected".into(), json!(a.protected));
    out.insert("owner".into(), json!(a.owner));
    times(&mut out, ns.created_at, ns.updated_at);
    if let Some(contents) = contents {
        if !contents.associations.is_empty() {
            out.insert(
                "resource_type_associations".into(),
                contents
                    .associations
                    .iter()
                    .map(|x| association(x, !fresh))
                    .collect(),
            );
        }
        if !contents.properties.is_empty() {
            out.insert("properties".into(), properties(&contents.properties));
        }
        if !contents.objects.is_empty() {
            out.insert(
                "objects".into(),
                contents
                    .objects
                    .iter()
                    .map(|o| object(&a.namespace, o, !fresh))
                    .collect(),
            );
        }
        if !contents.tags.is_empty() {
            out.insert(
                "tags".into(),
                contents
                    .tags
                    .iter()
                    .map(|t| json!({"name": t.name}))
                    .collect(),
            );
        }
    }
    out.insert("self".into(), json!(href(&a.namespace)));
    out.insert("schema".into(), json!("/v2/schemas/metadefs/namespace"));
    Value::Object(out)
}
