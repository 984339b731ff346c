//! `glint db load-metadefs` and `glint db export-metadefs`: metadata definition files in
//! Glance's format (one namespace per `*.json` file, shaped as the API's namespace body, as
//! Glance's packages install them under `/etc/glance/metadefs/`), read into the database and
//! written back out. The merge rules are `db`'s (`LoadMode`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::db::{Database, LoadMode, Loaded, NewContents};
use crate::domain::metadef::{
    Association, Contents, Definition, Namespace, NamespaceAttrs, NamespaceVisibility, Tag,
    check_name,
};
use crate::domain::time::now;

/// One definition file, as Glance's loader reads it.
#[derive(Debug, Deserialize, Serialize)]
struct NamespaceFile {
    namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    visibility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protected: Option<bool>,
    #[serde(default, skip_serializing)]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    resource_type_associations: Vec<AssociationFile>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    properties: BTreeMap<String, Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    objects: Vec<ObjectFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<TagFile>,
}

#[derive(Debug, Deserialize, Serialize)]
struct AssociationFile {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties_target: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct ObjectFile {
    name: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize, Serialize)]
struct TagFile {
    name: String,
}

/// How a load went, file by file.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub lines: Vec<String>,
    pub failed: usize,
}

/// The `*.json` files `path` names: itself, or those directly in it, by name.
fn definition_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no *.json definition files", path.display()));
    }
    Ok(files)
}

/// A definition file as domain values, checked: names bounded, visibility known.
fn parse(text: &str) -> Result<(Namespace, Contents), String> {
    let file: NamespaceFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let check = |what: &str, name: &str| check_name(what, name).map_err(|e| e.to_string());
    check("namespace", &file.namespace)?;
    let visibility = match file.visibility.as_deref() {
        None => NamespaceVisibility::Private,
        Some(v) => NamespaceVisibility::parse(v)
            .ok_or_else(|| format!("visibility {v:?} is neither \"public\" nor \"private\""))?,
    };
    let at = now();
    let definition = |name: String, body: Map<String, Value>| Definition {
        name,
        body,
        created_at: at,
        updated_at: at,
    };
    let mut contents = Contents::default();
    for a in file.resource_type_associations {
        check("resource type", &a.name)?;
        contents.associations.push(Association {
            resource_type: a.name,
            prefix: a.prefix,
            properties_target: a.properties_target,
            created_at: at,
            updated_at: at,
        });
    }
    for (name, body) in file.properties {
        check("property", &name)?;
        contents.properties.push(definition(name, body));
    }
    for object in file.objects {
        check("object", &object.name)?;
        contents.objects.push(definition(object.name, object.rest));
    }
    for tag in file.tags {
        check("tag", &tag.name)?;
        contents.tags.push(Tag {
            name: tag.name,
            created_at: at,
            updated_at: at,
        });
    }
    let namespace = Namespace {
        id: uuid::Uuid::new_v4().to_string(),
        attrs: NamespaceAttrs {
            namespace: file.namespace,
            display_name: file.display_name,
            description: file.description,
            visibility,
            protected: file.protected.unwrap_or(false),
            owner: file.owner.unwrap_or_else(|| "admin".into()),
        },
        created_at: at,
        updated_at: at,
    };
    Ok((namespace, contents))
}

/// Loads every definition file `path` names; a file that cannot be read or loaded is
/// reported and the others are loaded still.
pub async fn load(database: &Database, path: &Path, mode: LoadMode) -> Result<LoadReport, String> {
    let mut report = LoadReport::default();
    for file in definition_files(path)? {
        let shown = file.display();
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text));
        let (namespace, contents) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                report.failed += 1;
                report.lines.push(format!("{shown}: not loaded: {e}"));
                continue;
            }
        };
        let loaded = database
            .load_metadef_namespace(
                &namespace,
                NewContents {
                    associations: &contents.associations,
                    properties: &contents.properties,
                    objects: &contents.objects,
                    tags: &contents.tags,
                },
                mode,
            )
            .await;
        let name = &namespace.attrs.namespace;
        report.lines.push(match loaded {
            Ok(Loaded::Created) => format!("{shown}: namespace {name} created"),
            Ok(Loaded::Skipped) => {
                format!("{shown}: namespace {name} exists already; skipped (see --merge)")
            }
            Ok(Loaded::Merged) => format!("{shown}: namespace {name} merged"),
            Ok(Loaded::Replaced) => format!("{shown}: namespace {name} replaced"),
            Err(e) => {
                report.failed += 1;
                format!("{shown}: namespace {name} not loaded: {e}")
            }
        });
    }
    Ok(report)
}

/// A file name for a namespace: its name with every character other than letters, digits,
/// `.`, `-` and `_` made `_`.
fn file_name(namespace: &str) -> String {
    let safe: String = namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

/// Writes every namespace into `dir` (made if need be), one file each, in the format `load`
/// reads (without owners, as Glance's export); the files written.
pub async fn export(database: &Database, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let namespaces = database
        .all_metadef_namespaces()
        .await
        .map_err(|e| e.to_string())?;
    let mut written = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (namespace, contents) in namespaces {
        let name = file_name(&namespace.attrs.namespace);
        if !names.insert(name.clone()) {
            return Err(format!(
                "namespaces {} and another one would both be written to {name}",
                namespace.attrs.namespace
            ));
        }
        let a = namespace.attrs;
        let file = NamespaceFile {
            namespace: a.namespace,
            display_name: a.display_name,
            description: a.description,
            visibility: Some(a.visibility.as_str().into()),
            protected: Some(a.protected),
            owner: None,
            resource_type_associations: contents
                .associations
                .into_iter()
                .map(|x| AssociationFile {
                    name: x.resource_type,
                    prefix: x.prefix,
                    properties_target: x.properties_target,
                })
                .collect(),
            properties: contents
                .properties
                .into_iter()
                .map(|d| (d.name, d.body))
                .collect(),
            objects: contents
                .objects
                .into_iter()
                .map(|d| ObjectFile {
                    name: d.name,
                    rest: d.body,
                })
                .collect(),
            tags: contents
                .tags
                .into_iter()
                .map(|t| TagFile { name: t.name })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
        let path = dir.join(&name);
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_file_is_read_as_glance_writes_it() {
        let (namespace, contents) = parse(
            r#"{"namespace": "OS::Compute::Watchdog", "display_name": "Watchdog Behavior",
                "visibility": "public", "protected": true,
                "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}],
                "properties": {"watchdog_action": {"title": "Watchdog Action", "type": "string"}},
                "objects": [{"name": "Quota", "required": ["a"], "properties": {}}],
                "tags": [{"name": "watchdog"}]}"#,
        )
        .unwrap();
        assert_eq!(namespace.attrs.owner, "admin");
        assert!(namespace.attrs.protected);
        assert_eq!(contents.associations[0].prefix.as_deref(), Some("hw_"));
        assert_eq!(contents.properties[0].body["type"], "string");
        assert_eq!(
            contents.objects[0].body["required"],
            serde_json::json!(["a"])
        );
        assert_eq!(contents.tags[0].name, "watchdog");
        for bad in [
            r#"{"display_name": "no namespace"}"#,
            r#"{"namespace": "x", "visibility": "shared"}"#,
            r#"{"namespace": "x", "tags": [{"title": "no name"}]}"#,
            r#"{"namespace": ""}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            file_name("OS::Compute::Watchdog"),
            "OS__Compute__Watchdog.json"
        );
    }
}
