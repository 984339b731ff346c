//! Metadata definitions (Glance's metadefs), pure: namespaces and what they hold (property
//! and object definitions, tags, the resource types they apply to), who sees a namespace, and
//! the parameters of the namespace list. The definitions' own JSON (a property's type, enum…;
//! an object's properties and required list) is kept as the client sent it, once the API has
//! checked it against Glance's schema; this module does not look inside it.

use serde_json::{Map, Value};

use super::DomainError;
use super::time::Timestamp;

/// The longest name of a namespace, object, property, tag or resource type (Glance's
/// columns are `String(80)`).
pub const NAME_MAX: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceVisibility {
    Public,
    Private,
}

impl NamespaceVisibility {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceVisibility::Public => "public",
            NamespaceVisibility::Private => "private",
        }
    }

    pub fn parse(text: &str) -> Option<NamespaceVisibility> {
        match text {
            "public" => Some(NamespaceVisibility::Public),
            "private" => Some(NamespaceVisibility::Private),
            _ => None,
        }
    }
}

/// A namespace's own attributes (what PUT replaces).
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceAttrs {
    pub namespace: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub visibility: NamespaceVisibility,
    pub protected: bool,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    /// Never shown: children refer to it, so a rename changes one row.
    pub id: String,
    pub attrs: NamespaceAttrs,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Namespace {
    /// Glance's `_is_namespace_visible`: admins see every namespace, others the public ones
    /// and their project's.
    pub fn visible_to(&self, is_admin: bool, project: Option<&str>) -> bool {
        is_admin
            || self.attrs.visibility == NamespaceVisibility::Public
            || project.is_some_and(|p| p == self.attrs.owner)
    }
}

/// A property or object definition: its name and the rest of its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub name: String,
    pub body: Map<String, Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which kind of definition a `Definition` is; they are stored and listed alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionKind {
    Property,
    Object,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub name: String,
    pub protected: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A namespace applied to a resource type: its properties appear there with `prefix`, as
/// `properties_target` (e.g. Cinder's `image` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub resource_type: String,
    pub prefix: Option<String>,
    pub properties_target: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Everything a namespace holds, as its GET shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contents {
    pub associations: Vec<Association>,
    pub properties: Vec<Definition>,
    pub objects: Vec<Definition>,
    pub tags: Vec<Tag>,
}

/// What may be sorted on, in lists of namespaces and of tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    CreatedAt,
    UpdatedAt,
    Name,
}

impl SortKey {
    /// A namespace list's `sort_key` (Glance allows the namespace's columns; its name
    /// is `namespace`).
    pub fn for_namespaces(text: &str) -> Result<SortKey, DomainError> {
        match text {
            "created_at" => Ok(SortKey::CreatedAt),
            "updated_at" => Ok(SortKey::UpdatedAt),
            "namespace" => Ok(SortKey::Name),
            other => Err(DomainError::Invalid(format!(
                "Invalid sort key: {other}. It must be one of the following: namespace, created_at, updated_at."
            ))),
        }
    }

    /// A tag list's `sort_key`.
    pub fn for_tags(text: &str) -> Result<SortKey, DomainError> {
        match text {
            "created_at" => Ok(SortKey::CreatedAt),
            "updated_at" => Ok(SortKey::UpdatedAt),
            "name" => Ok(SortKey::Name),
            other => Err(DomainError::Invalid(format!(
                "Invalid sort key: {other}. It must be one of the following: name, created_at, updated_at."
            ))),
        }
    }
}

/// `sort_dir`: `asc` or `desc`.
pub fn parse_sort_dir(text: &str) -> Result<bool, DomainError> {
    match text {
        "asc" => Ok(true),
        "desc" => Ok(false),
        other => Err(DomainError::Invalid(format!(
            "Invalid sort direction: {other}"
        ))),
    }
}

/// One page of a list: after the marker's row, in the sort, at most `limit` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub sort_key: SortKey,
    pub ascending: bool,
    pub limit: usize,
    /// The row to start after (its name).
    pub marker: Option<String>,
}

/// The namespace list's filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceFilter {
    pub visibility: Option<NamespaceVisibility>,
    /// Only namespaces associated with one of these resource types.
    pub resource_types: Option<Vec<String>>,
}

/// A name of something in a namespace (or the namespace itself): not empty, at most
/// `NAME_MAX` characters.
pub fn check_name(what: &str, name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::Invalid(format!(
            "The {what} name must not be empty."
        )));
    }
    if name.chars().count() > NAME_MAX {
        return Err(DomainError::Invalid(format!(
            "The {what} name is longer than {NAME_MAX} characters."
        )));
    }
    Ok(())
}

/// A property name as a resource type sees it: with the association's prefix.
pub fn prefixed(prefix: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(visibility: NamespaceVisibility, owner: &str) -> Namespace {
        Namespace {
            id: "1".into(),
            attrs: NamespaceAttrs {
                namespace: "OS::Test".into(),
                display_name: None,
                description: None,
                visibility,
                protected: false,
                owner: owner.into(),
            },
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn private_namespaces_are_seen_by_their_project_and_admins_only() {
        let private = namespace(NamespaceVisibility::Private, "p1");
        assert!(private.visible_to(false, Some("p1")));
        assert!(!private.visible_to(false, Some("p2")));
        assert!(!private.visible_to(false, None));
        assert!(private.visible_to(true, None));
        let public = namespace(NamespaceVisibility::Public, "p1");
        assert!(public.visible_to(false, None));
    }

    #[test]
    fn names_are_bounded_and_sort_parameters_checked() {
        assert!(check_name("tag", "x").is_ok());
        assert!(check_name("tag", " ").is_err());
        assert!(check_name("tag", &"é".repeat(80)).is_ok());
        assert!(check_name("tag", &"é".repeat(81)).is_err());
        assert_eq!(SortKey::for_namespaces("namespace"), Ok(SortKey::Name));
        assert!(SortKey::for_namespaces("name").is_err());
        assert_eq!(SortKey::for_tags("name"), Ok(SortKey::Name));
        assert_eq!(parse_sort_dir("asc"), Ok(true));
        assert!(parse_sort_dir("up").is_err());
        assert_eq!(prefixed(Some("hw_"), "cpu"), "hw_cpu");
    }
}
