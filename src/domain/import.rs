//! The body of `POST /v2/images/{id}/import` and Glance's rules for it: which method, which
//! stores, whether every store must succeed. Whether a method is enabled and a store
//! exists is the service's to check; this only reads the request. No I/O.

use serde_json::Value;

use super::DomainError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    GlanceDirect,
    WebDownload { uri: String },
    CopyImage,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::GlanceDirect => "glance-direct",
            Method::WebDownload { .. } => "web-download",
            Method::CopyImage => "copy-image",
        }
    }
}

/// Which stores an import writes to, as the request asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Neither `stores` nor `all_stores` nor the header: the default store.
    Default,
    Named(Vec<String>),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    pub method: Method,
    pub targets: Targets,
    pub all_stores_must_succeed: bool,
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

/// Reads an import request; `header_store` is `X-Image-Meta-Store`. `known` says whether a
/// method name is one this server has (an unknown one is Glance's 400, not a 404).
pub fn parse(
    body: &Value,
    header_store: Option<&str>,
    known: impl Fn(&str) -> bool,
) -> Result<ImportRequest, DomainError> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("Import request body must be a JSON object."))?;
    let method = body
        .get("method")
        .ok_or_else(|| invalid("Import request requires a 'method' field."))?
        .as_object()
        .ok_or_else(|| invalid("Import request requires a 'method' field."))?;
    let name = method
        .get("name")
        .ok_or_else(|| invalid("Import request requires a 'name' field."))?
        .as_str()
        .ok_or_else(|| invalid("Import request requires a 'name' field."))?;
    if !known(name) {
        return Err(invalid(format!("Unknown import method name '{name}'.")));
    }
    let method = match name {
        "glance-direct" => Method::GlanceDirect,
        "copy-image" => Method::CopyImage,
        "web-download" => {
            let uri = method
                .get("uri")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| invalid("Import method web-download requires a 'uri'."))?;
            Method::WebDownload {
                uri: uri.to_string(),
            }
        }
        other => return Err(invalid(format!("Unknown import method name '{other}'."))),
    };
    let flag = |key: &str, default: bool| match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(format!(
            "Invalid value for '{key}': {other} is not a boolean."
        ))),
    };
    let all_stores = flag("all_stores", false)?;
    let all_stores_must_succeed = flag("all_stores_must_succeed", true)?;
    let stores = match body.get("stores") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut stores = Vec::with_capacity(items.len());
            for item in items {
                let id = item
                    .as_str()
                    .ok_or_else(|| invalid("'stores' must be a list of store ids."))?;
                if !stores.iter().any(|s| s == id) {
                    stores.push(id.to_string());
                }
            }
            Some(stores)
        }
        Some(_) => return Err(invalid("'stores' must be a list of store ids.")),
    };
    if header_store.is_some() && (stores.is_some() || all_stores) {
        return Err(invalid(
            "X-Image-Meta-Store header cannot be combined with 'stores' or 'all_stores'.",
        ));
    }
    let targets = match (stores, all_stores, header_store) {
        (Some(_), true, _) => {
            return Err(invalid("'stores' cannot be combined with 'all_stores'."));
        }
        (_, true, _) => Targets::All,
        (Some(stores), false, _) if stores.is_empty() => {
            return Err(invalid("'stores' must name at least one store."));
        }
        (Some(stores), false, _) => Targets::Named(stores),
        (None, false, Some(store)) => Targets::Named(vec![store.to_string()]),
        (None, false, None) => Targets::Default,
    };
    Ok(ImportRequest {
        method,
        targets,
        all_stores_must_succeed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known(name: &str) -> bool {
        matches!(name, "glance-direct" | "web-download" | "copy-image")
    }

    #[test]
    fn reads_methods_and_targets() {
        let request = parse(&json!({"method": {"name": "glance-direct"}}), None, known).unwrap();
        assert_eq!(request.method, Method::GlanceDirect);
        assert_eq!(request.targets, Targets::Default);
        assert!(request.all_stores_must_succeed);
        let request = parse(
            &json!({"method": {"name": "web-download", "uri": "http://x/y"},
                    "all_stores": true, "all_stores_must_succeed": false}),
            None,
            known,
        )
        .unwrap();
        assert_eq!(
            request.method,
            Method::WebDownload {
                uri: "http://x/y".into()
            }
        );
        assert_eq!(request.targets, Targets::All);
        assert!(!request.all_stores_must_succeed);
        let request = parse(
            &json!({"method": {"name": "copy-image"}}),
            Some("fast"),
            known,
        )
        .unwrap();
        assert_eq!(request.targets, Targets::Named(vec!["fast".into()]));
    }

    #[test]
    fn refuses_what_glance_refuses() {
        let message = |body: Value, header: Option<&str>| match parse(&body, header, known) {
            Err(DomainError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(message(json!({}), None).contains("'method'"));
        assert!(message(json!({"method": {}}), None).contains("'name'"));
        assert!(message(json!({"method": {"name": "glance-download"}}), None).contains("Unknown"));
        assert!(message(json!({"method": {"name": "web-download"}}), None).contains("uri"));
        assert!(
            message(
                json!({"method": {"name": "copy-image"}, "all_stores": "yes"}),
                None
            )
            .contains("all_stores")
        );
        assert!(
            message(
                json!({"method": {"name": "copy-image"}, "stores": ["a"]}),
                Some("b")
            )
            .contains("X-Image-Meta-Store")
        );
        assert!(
            message(
                json!({"method": {"name": "copy-image"}, "stores": []}),
                None
            )
            .contains("at least")
        );
    }
}
