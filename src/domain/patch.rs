//! Glance's JSON-patch dialects for images (v2.1 RFC 6902 style, v2.0 draft style): the
//! whole request is parsed and checked before any operation is applied.

use serde_json::Value;

use super::DomainError;
use super::caller::Caller;
use super::image::{self, BASE_KEYS, Image, READ_ONLY, Status, check_value, is_reserved};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `application/openstack-images-v2.0-json-patch`
    V20,
    /// `application/openstack-images-v2.1-json-patch`
    V21,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    /// The attribute the single-segment path names.
    pub key: String,
    pub value: Option<Value>,
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn parse_op(name: &str) -> Result<Op, DomainError> {
    match name {
        "add" => Ok(Op::Add),
        "replace" => Ok(Op::Replace),
        "remove" => Ok(Op::Remove),
        other => Err(invalid(format!(
            "Invalid operation: `{other}`. It must be one of the following: add, remove, replace."
        ))),
    }
}

/// A change to an image's locations, as Glance's `/locations` paths spell it (only with
/// `show_multiple_locations`). Carried out by the service, which knows the stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationChange {
    /// `add /locations/<n|->`: `position` `None` is the end.
    Add {
        position: Option<usize>,
        url: String,
    },
    /// `replace /locations`.
    Replace { urls: Vec<String> },
    /// `remove /locations/<n>`.
    Remove { position: usize },
}

/// A checked patch: attribute operations, and location changes when locations are shown.
#[derive(Debug, Default)]
pub struct Patch {
    pub operations: Vec<Operation>,
    pub locations: Vec<LocationChange>,
}

/// Refuses a patch that sets a disk or container format this deployment does not take.
pub fn check_formats(
    operations: &[Operation],
    formats: &image::Formats,
) -> Result<(), DomainError> {
    operations
        .iter()
        .filter_map(|operation| Some((&operation.key, operation.value.as_ref()?)))
        .try_for_each(|(key, value)| formats.check(key, value))
}

/// Parses and checks a patch document with locations hidden; nothing is applied.
pub fn parse(body: &Value, dialect: Dialect) -> Result<Vec<Operation>, DomainError> {
    parse_patch(body, dialect, false).map(|patch| patch.operations)
}

/// The URL of a location value (`{"url": …, "metadata": {…}}`).
fn location_url(value: Option<&Value>) -> Result<String, DomainError> {
    value
        .and_then(|v| v.get("url"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid("Invalid location: a location is {\"url\": …, \"metadata\": {…}}"))
}

/// A `/locations` operation, when `shown`; Glance's 403 otherwise.
fn location_change(
    op: Op,
    path: &str,
    value: Option<&Value>,
    shown: bool,
) -> Result<LocationChange, DomainError> {
    if !shown {
        let verb = match op {
            Op::Add => "add",
            Op::Replace => "update",
            Op::Remove => "remove",
        };
        return Err(DomainError::Forbidden(format!(
            "It's not allowed to {verb} locations if locations are invisible."
        )));
    }
    let bad = || invalid(format!("Invalid JSON pointer for this resource: '{path}'"));
    let position = path.strip_prefix("/locations/");
    match (op, position) {
        (Op::Replace, None) => {
            let Some(Value::Array(items)) = value else {
                return Err(invalid(
                    "Invalid locations: a list of locations is expected",
                ));
            };
            let urls = items
                .iter()
                .map(|item| location_url(Some(item)))
                .collect::<Result<_, _>>()?;
            Ok(LocationChange::Replace { urls })
        }
        (Op::Add, Some("-")) => Ok(LocationChange::Add {
            position: None,
            url: location_url(value)?,
        }),
        (Op::Add, Some(n)) => Ok(LocationChange::Add {
            position: Some(
                n.parse()
                    .map_err(|_| invalid("Invalid position for adding a location."))?,
            ),
            url: location_url(value)?,
        }),
        (Op::Remove, Some(n)) => Ok(LocationChange::Remove {
            position: n
                .parse()
                .map_err(|_| invalid("Invalid position for removing a location."))?,
        }),
        _ => Err(bad()),
    }
}

/// Parses and checks a patch document; `/locations` paths are changes of their own when
/// `locations_shown` (Glance's `show_multiple_locations`), else Glance's 403. Nothing is
/// applied.
pub fn parse_patch(
    body: &Value,
    dialect: Dialect,
    locations_shown: bool,
) -> Result<Patch, DomainError> {
    let Value::Array(items) = body else {
        return Err(invalid(
            "Request body must be a JSON array of operation objects.",
        ));
    };
    let mut operations = Vec::with_capacity(items.len());
    let mut locations = Vec::new();
    for item in items {
        let Value::Object(fields) = item else {
            return Err(invalid("Operations must be JSON objects."));
        };
        let (op, path) = match dialect {
            Dialect::V21 => {
                let op = fields.get("op").and_then(Value::as_str).ok_or_else(|| {
                    invalid("Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.")
                })?;
                let path = fields
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("Unable to find 'path' in JSON Schema change"))?;
                (parse_op(op)?, path)
            }
            Dialect::V20 => {
                let found: Vec<_> = ["add", "replace", "remove"]
                    .into_iter()
                    .filter(|k| fields.contains_key(*k))
                    .collect();
                let [name] = found[..] else {
                    return Err(invalid(
                        "Operation objects must contain exactly one member named \"add\", \"remove\", or \"replace\".",
                    ));
                };
                let path = fields.get(name).and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!("Unable to find '{name}' in JSON Schema change"))
                })?;
                (parse_op(name)?, path)
            }
        };
        if path == "/locations" || path.starts_with("/locations/") {
            let value = fields.get("value");
            if op != Op::Remove && value.is_none() {
                let name = if op == Op::Add { "add" } else { "replace" };
                return Err(invalid(format!(
                    "Operation \"{name}\" requires a member named \"value\"."
                )));
            }
            locations.push(location_change(op, path, value, locations_shown)?);
            continue;
        }
        let key = pointer_key(path)?;
        let value = fields.get("value").cloned();
        if op != Op::Remove && value.is_none() {
            let name = if op == Op::Add { "add" } else { "replace" };
            return Err(invalid(format!(
                "Operation \"{name}\" requires a member named \"value\"."
            )));
        }
        if READ_ONLY.contains(&key.as_str()) {
            return Err(image::read_only(&key));
        }
        if is_reserved(&key) {
            return Err(DomainError::Forbidden(format!(
                "Attribute '{key}' is reserved."
            )));
        }
        if let Some(value) = &value {
            check_value(&key, value)?;
        }
        operations.push(Operation { op, key, value });
    }
    Ok(Patch {
        operations,
        locations,
    })
}

/// A JSON pointer with exactly one segment, unescaped.
fn pointer_key(path: &str) -> Result<String, DomainError> {
    let bad = || invalid(format!("Invalid JSON pointer for this resource: '{path}'"));
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| invalid(format!("Pointer `{path}` does not start with \"/\".")))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(bad());
    }
    let mut key = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => key.push('~'),
                Some('1') => key.push('/'),
                _ => {
                    return Err(invalid(format!(
                        "Pointer `{path}` contains \"~\" not part of a recognized escape sequence."
                    )));
                }
            }
        } else {
            key.push(c);
        }
    }
    Ok(key.trim().to_string())
}

/// Applies checked operations in order. Base attributes are set by add and replace and
/// cannot be removed; custom properties follow add/replace/remove with existence rules.
pub fn apply(
    image: &mut Image,
    operations: &[Operation],
    dialect: Dialect,
    caller: &Caller,
    quotas: &image::Quotas,
) -> Result<(), DomainError> {
    for operation in operations {
        let key = operation.key.as_str();
        let is_base = BASE_KEYS.contains(&key);
        match (operation.op, &operation.value) {
            (Op::Remove, _) if is_base => {
                return Err(DomainError::Forbidden(format!(
                    "Property {key} may not be removed."
                )));
            }
            (Op::Remove, _) => {
                if image.properties.remove(key).is_none() {
                    return Err(DomainError::Conflict(format!(
                        "Property {key} does not exist."
                    )));
                }
            }
            (op, Some(value)) if is_base => {
                if op == Op::Add && dialect == Dialect::V20 && base_is_set(image, key) {
                    return Err(DomainError::Conflict(format!(
                        "Property {key} already present."
                    )));
                }
                set_checked_base(image, key, value, caller)?;
            }
            (op, Some(Value::String(text))) => {
                let exists = image.properties.contains_key(key);
                match op {
                    Op::Replace if !exists => {
                        return Err(DomainError::Conflict(format!(
                            "Property {key} does not exist."
                        )));
                    }
                    Op::Add if exists && dialect == Dialect::V20 => {
                        return Err(DomainError::Conflict(format!(
                            "Property {key} already present."
                        )));
                    }
                    _ => {
                        image.properties.insert(key.to_string(), text.clone());
                    }
                }
            }
            _ => {
                return Err(invalid(format!(
                    "Provided object does not match schema 'image': value of '{key}' is not of type 'string'"
                )));
            }
        }
    }
    image::check_quotas(image, quotas)
}

fn base_is_set(image: &Image, key: &str) -> bool {
    match key {
        "name" => image.name.is_some(),
        "owner" => image.owner.is_some(),
        "disk_format" => image.disk_format.is_some(),
        "container_format" => image.container_format.is_some(),
        "tags" => !image.tags.is_empty(),
        _ => true,
    }
}

fn set_checked_base(
    image: &mut Image,
    key: &str,
    value: &Value,
    caller: &Caller,
) -> Result<(), DomainError> {
    match key {
        "owner" if !caller.is_admin => {
            return Err(DomainError::Forbidden(
                "Owner can't be updated by non admin.".into(),
            ));
        }
        "disk_format" | "container_format"
            if !matches!(image.status, Status::Queued | Status::Importing) =>
        {
            return Err(DomainError::Forbidden(format!(
                "Attribute {key} can be only replaced for a queued image."
            )));
        }
        _ => {}
    }
    image::set_base(image, key, value);
    Ok(())
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::image::new_image;
    use serde_json::json;

    fn owner() -> Caller {
        Caller {
            project: Some("p".into()),
            user: None,
            is_admin: false,
            ..Caller::default()
        }
    }

    fn image_with(props: &[(&str, &str)]) -> Image {
        let mut image = new_image(
            serde_json::Map::new(),
            &owner(),
            0,
            "id".into(),
            &image::Quotas::default(),
        )
        .unwrap();
        for (k, v) in props {
            image.properties.insert(k.to_string(), v.to_string());
        }
        image
    }

    fn run(image: &mut Image, body: Value) -> Result<(), DomainError> {
        let ops = parse(&body, Dialect::V21)?;
        apply(
            image,
            &ops,
            Dialect::V21,
            &owner(),
            &image::Quotas::default(),
        )
    }

    #[test]
    fn location_operations_are_refused_as_glance_refuses_them_with_locations_hidden() {
        for (body, verb) in [
            (
                json!([{"op": "add", "path": "/locations/-", "value": {"url": "x", "metadata": {}}}]),
                "add",
            ),
            (
                json!([{"op": "replace", "path": "/locations", "value": []}]),
                "update",
            ),
            (json!([{"op": "remove", "path": "/locations/0"}]), "remove"),
        ] {
            match parse(&body, Dialect::V21) {
                Err(DomainError::Forbidden(message)) => {
                    assert!(message.contains(verb), "{message}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn add_on_a_base_property_sets_it_as_the_sdk_expects() {
        let mut image = image_with(&[]);
        run(
            &mut image,
            json!([{"op": "add", "path": "/name", "value": "x"}]),
        )
        .unwrap();
        assert_eq!(image.name.as_deref(), Some("x"));
        run(
            &mut image,
            json!([{"op": "replace", "path": "/name", "value": "y"}]),
        )
        .unwrap();
        assert_eq!(image.name.as_deref(), Some("y"));
    }

    #[test]
    fn custom_property_existence_rules() {
        let mut image = image_with(&[("a", "1")]);
        assert!(matches!(
            run(
                &mut image,
                json!([{"op": "replace", "path": "/b", "value": "2"}])
            ),
            Err(DomainError::Conflict(_))
        ));
        assert!(matches!(
            run(&mut image, json!([{"op": "remove", "path": "/b"}])),
            Err(DomainError::Conflict(_))
        ));
        run(
            &mut image,
            json!([{"op": "add", "path": "/a", "value": "3"}]),
        )
        .unwrap();
        assert_eq!(image.properties["a"], "3");
        run(&mut image, json!([{"op": "remove", "path": "/a"}])).unwrap();
        assert!(image.properties.is_empty());
    }

    #[test]
    fn forbidden_and_invalid_operations() {
        let mut image = image_with(&[]);
        let err = |image: &mut Image, body| run(image, body).unwrap_err();
        assert!(matches!(
            err(&mut image, json!([{"op": "remove", "path": "/name"}])),
            DomainError::Forbidden(_)
        ));
        assert!(matches!(
            err(
                &mut image,
                json!([{"op": "replace", "path": "/status", "value": "active"}])
            ),
            DomainError::Forbidden(_)
        ));
        assert!(matches!(
            err(
                &mut image,
                json!([{"op": "add", "path": "/os_glance_x", "value": "1"}])
            ),
            DomainError::Forbidden(_)
        ));
        assert!(matches!(
            err(&mut image, json!([{"op": "move", "path": "/name"}])),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(
                &mut image,
                json!([{"op": "add", "path": "/a/b", "value": "1"}])
            ),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(&mut image, json!([{"op": "add", "path": "/a"}])),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(&mut image, json!([{"op": "add", "path": "/a", "value": 1}])),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(&mut image, json!({"op": "add"})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(
                &mut image,
                json!([{"op": "replace", "path": "/owner", "value": "q"}])
            ),
            DomainError::Forbidden(_)
        ));
        image.status = Status::Active;
        assert!(matches!(
            err(
                &mut image,
                json!([{"op": "replace", "path": "/disk_format", "value": "raw"}])
            ),
            DomainError::Forbidden(_)
        ));
    }

    #[test]
    fn the_whole_patch_is_checked_before_anything_applies() {
        let mut image = image_with(&[]);
        let body = json!([
            {"op": "add", "path": "/name", "value": "x"},
            {"op": "replace", "path": "/size", "value": 1}
        ]);
        assert!(run(&mut image, body).is_err());
        assert_eq!(image.name, None);
    }

    #[test]
    fn v20_dialect() {
        let mut image = image_with(&[("a", "1")]);
        let ops = parse(&json!([{"add": "/a", "value": "2"}]), Dialect::V20).unwrap();
        assert!(matches!(
            apply(
                &mut image,
                &ops,
                Dialect::V20,
                &owner(),
                &image::Quotas::default()
            ),
            Err(DomainError::Conflict(_))
        ));
        let ops = parse(&json!([{"replace": "/a", "value": "2"}]), Dialect::V20).unwrap();
        apply(
            &mut image,
            &ops,
            Dialect::V20,
            &owner(),
            &image::Quotas::default(),
        )
        .unwrap();
        assert_eq!(image.properties["a"], "2");
    }

    #[test]
    fn escaped_pointers() {
        let mut image = image_with(&[]);
        run(
            &mut image,
            json!([{"op": "add", "path": "/a~1b~0c", "value": "1"}]),
        )
        .unwrap();
        assert_eq!(image.properties["a/b~c"], "1");
    }
}
