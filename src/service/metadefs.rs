//! The metadata definitions use-cases (Glance's metadefs): namespaces and what they hold,
//! with Glance's visibility (a namespace the caller may not see is 404, whatever was asked),
//! its `metadef` policy rules and `protected` namespaces. Bodies arrive checked against
//! Glance's schemas by the API; here they are names and definitions.

use crate::db::{CreateRefused, DbError, DefinitionOrTag, NewContents};
use crate::domain::DomainError;
use crate::domain::caller::Caller;
use crate::domain::metadef::{
    Association, Contents, Definition, DefinitionKind, Namespace, NamespaceAttrs, NamespaceFilter,
    NamespaceVisibility, Page, ResourceType, SortKey, Tag, check_name, prefixed,
};
use crate::domain::time::{Timestamp, now};

use super::authz::ImageTarget;
use super::{Catalog, Result};

/// A namespace as its creator describes it, with what it holds.
#[derive(Debug, Clone)]
pub struct NewNamespace {
    pub namespace: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub visibility: Option<NamespaceVisibility>,
    pub protected: Option<bool>,
    pub owner: Option<String>,
    pub associations: Vec<(String, Option<String>, Option<String>)>,
    pub properties: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    pub objects: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    pub tags: Vec<String>,
}

/// The owner of a namespace created by a caller without a project (no authentication), as
/// `glance-manage db load_metadefs` names the owner of what it loads.
pub const NO_PROJECT_OWNER: &str = "admin";

/// One page of namespaces, each with its resource-type associations, and the marker of
/// the next page when this one is full.
pub struct NamespacePage {
    pub namespaces: Vec<(Namespace, Vec<Association>)>,
    pub next: Option<String>,
}

fn not_found(name: &str) -> DomainError {
    DomainError::NotFound(format!("Namespace {name} not found"))
}

fn kind_name(kind: DefinitionKind) -> &'static str {
    match kind {
        DefinitionKind::Property => "property",
        DefinitionKind::Object => "object",
    }
}

fn definition_not_found(kind: DefinitionKind, name: &str, namespace: &str) -> DomainError {
    DomainError::NotFound(format!(
        "The metadata definition {} with name={name} was not found in namespace={namespace}.",
        kind_name(kind)
    ))
}

fn duplicate_definition(kind: DefinitionKind, name: &str, namespace: &str) -> DomainError {
    let what = match kind {
        DefinitionKind::Property => "A metadata definition property",
        DefinitionKind::Object => "A metadata definition object",
    };
    DomainError::Conflict(format!(
        "{what} with name={name} already exists in namespace={namespace}."
    ))
}

fn duplicate_tag(name: &str, namespace: &str) -> DomainError {
    DomainError::Conflict(format!(
        "A metadata tag with name={name} already exists in namespace={namespace}. (Please note \
         that metadata tag names are case insensitive)."
    ))
}

fn tag_not_found(name: &str, namespace: &str) -> DomainError {
    DomainError::NotFound(format!(
        "The metadata definition tag with name={name} was not found in namespace={namespace}."
    ))
}

/// The prefix of `resource_type`'s association among `associations`, if it has one.
fn prefix_of(associations: &[Association], resource_type: &str) -> Option<String> {
    associations
        .iter()
        .find(|a| a.resource_type == resource_type)
        .and_then(|a| a.prefix.clone())
}

/// The first of `names` that appears twice.
fn repeated<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().find(|name| !seen.insert(*name))
}

fn page_of<T>(
    mut rows: Vec<T>,
    page: &Page,
    name: impl Fn(&T) -> &str,
    key: impl Fn(&T) -> (Timestamp, Timestamp),
) -> Result<(Vec<T>, Option<String>)> {
    rows.sort_by(|a, b| {
        let order = match page.sort_key {
            SortKey::CreatedAt => key(a).0.cmp(&key(b).0),
            SortKey::UpdatedAt => key(a).1.cmp(&key(b).1),
            SortKey::Name => name(a).cmp(name(b)),
        }
        .then_with(|| key(a).0.cmp(&key(b).0))
        .then_with(|| name(a).cmp(name(b)));
        if page.ascending {
            order
        } else {
            order.reverse()
        }
    });
    let start = match &page.marker {
        Some(marker) => {
            rows.iter()
                .position(|row| name(row) == marker)
                .ok_or_else(|| DomainError::NotFound(format!("Marker {marker} not found.")))?
                + 1
        }
        None => 0,
    };
    let rows: Vec<T> = rows.into_iter().skip(start).take(page.limit).collect();
    let next = (rows.len() == page.limit && page.limit > 0)
        .then(|| rows.last().map(|row| name(row).to_string()))
        .flatten();
    Ok((rows, next))
}

impl Catalog {
    /// The target of a metadef rule: the namespace's owner and visibility, or the caller's
    /// project before there is a namespace.
    fn metadef_target(caller: &Caller, namespace: Option<&Namespace>) -> ImageTarget {
        match namespace {
            Some(ns) => ImageTarget::metadef(
                Some(ns.attrs.owner.clone()),
                Some(ns.attrs.visibility.as_str()),
            ),
            None => ImageTarget::metadef(caller.project.clone(), None),
        }
    }

    /// The namespace `name` if the caller may see it (Glance's visibility: admins see every
    /// namespace, others the public ones and their project's); 404 otherwise. Each use-case
    /// then checks its own rule, which is 404 too when the caller may not read the namespace.
    async fn namespace_for(&self, caller: &Caller, name: &str) -> Result<Namespace> {
        self.db
            .metadef_namespace(name)
            .await?
            .filter(|ns| ns.visible_to(self.is_admin(caller), caller.project.as_deref()))
            .ok_or_else(|| not_found(name).into())
    }

    /// Glance's `MetadefAPIPolicy._enforce`: a rule denied on a namespace the caller may not
    /// even read is 404, so that its existence is not given away; otherwise 403.
    fn metadef_authorize(
        &self,
        caller: &Caller,
        rule: &str,
        namespace: Option<&Namespace>,
    ) -> Result<()> {
        let target = Self::metadef_target(caller, namespace);
        if self.permits(caller, rule, &target) {
            return Ok(());
        }
        if let Some(ns) = namespace {
            if rule == "get_metadef_namespace"
                || !self.permits(caller, "get_metadef_namespace", &target)
            {
                return Err(not_found(&ns.attrs.namespace).into());
            }
        }
        self.authorize(caller, rule, &target)
    }

    pub async fn metadef_namespaces(
        &self,
        caller: &Caller,
        filter: &NamespaceFilter,
        page: &Page,
    ) -> Result<NamespacePage> {
        self.metadef_authorize(caller, "get_metadef_namespaces", None)?;
        self.metadef_authorize(caller, "list_metadef_resource_types", None)?;
        let all = self
            .db
            .metadef_namespaces(self.is_admin(caller), caller.project.as_deref())
            .await?;
        let rows: Vec<(Namespace, Vec<Association>)> = all
            .into_iter()
            .filter(|(ns, associations)| {
                filter.visibility.is_none_or(|v| ns.attrs.visibility == v)
                    && filter.resource_types.as_ref().is_none_or(|types| {
                        associations
                            .iter()
                            .any(|a| types.contains(&a.resource_type))
                    })
                    && self.permits(
                        caller,
                        "get_metadef_namespace",
                        &Self::metadef_target(caller, Some(ns)),
                    )
            })
            .collect();
        let (namespaces, next) = page_of(
            rows,
            page,
            |(ns, _)| ns.attrs.namespace.as_str(),
            |(ns, _)| (ns.created_at, ns.updated_at),
        )?;
        Ok(NamespacePage { namespaces, next })
    }

    pub async fn create_metadef_namespace(
        &self,
        caller: &Caller,
        new: NewNamespace,
    ) -> Result<(Namespace, Contents)> {
        self.metadef_authorize(caller, "add_metadef_namespace", None)?;
        for (present, rule) in [
            (
                !new.associations.is_empty(),
                "add_metadef_resource_type_association",
            ),
            (!new.objects.is_empty(), "add_metadef_object"),
            (!new.properties.is_empty(), "add_metadef_property"),
            (!new.tags.is_empty(), "add_metadef_tag"),
        ] {
            if present {
                self.metadef_authorize(caller, rule, None)?;
            }
        }
        check_name("namespace", &new.namespace)?;
        let owner = new
            .owner
            .or_else(|| caller.project.clone())
            .unwrap_or_else(|| NO_PROJECT_OWNER.to_string());
        let at = now();
        let namespace = Namespace {
            id: uuid::Uuid::new_v4().to_string(),
            attrs: NamespaceAttrs {
                namespace: new.namespace,
                display_name: new.display_name,
                description: new.description,
                visibility: new.visibility.unwrap_or(NamespaceVisibility::Private),
                protected: new.protected.unwrap_or(false),
                owner,
            },
            created_at: at,
            updated_at: at,
        };
        let definition =
            |(name, body): (String, serde_json::Map<String, serde_json::Value>)| Definition {
                name,
                body,
                created_at: at,
                updated_at: at,
            };
        let contents = Contents {
            associations: new
                .associations
                .into_iter()
                .map(|(resource_type, prefix, properties_target)| Association {
                    resource_type,
                    prefix,
                    properties_target,
                    created_at: at,
                    updated_at: at,
                })
                .collect(),
            properties: new.properties.into_iter().map(definition).collect(),
            objects: new.objects.into_iter().map(definition).collect(),
            tags: new
                .tags
                .into_iter()
                .map(|name| Tag {
                    name,
                    created_at: at,
                    updated_at: at,
                })
                .collect(),
        };
        for association in &contents.associations {
            check_name("resource type", &association.resource_type)?;
        }
        if let Some(name) = repeated(
            contents
                .associations
                .iter()
                .map(|a| a.resource_type.as_str()),
        ) {
            return Err(DomainError::Conflict(format!(
                "The metadata definition resource-type association of resource-type={name} to \
                 namespace={} already exists.",
                namespace.attrs.namespace
            ))
            .into());
        }
        let written = self
            .db
            .create_metadef_namespace(
                &namespace,
                NewContents {
                    associations: &contents.associations,
                    properties: &contents.properties,
                    objects: &contents.objects,
                    tags: &contents.tags,
                },
            )
            .await?;
        let ns_name = &namespace.attrs.namespace;
        match written {
            Ok(()) => Ok((namespace, contents)),
            Err(CreateRefused::Namespace) => Err(DomainError::Conflict(format!(
                "The metadata definition namespace={ns_name} already exists."
            ))
            .into()),
            Err(CreateRefused::Child(DefinitionOrTag::Definition(kind), name)) => {
                Err(duplicate_definition(kind, &name, ns_name).into())
            }
            Err(CreateRefused::Child(DefinitionOrTag::Tag, name)) => {
                Err(duplicate_tag(&name, ns_name).into())
            }
        }
    }

    /// A namespace with everything it holds; with `resource_type`, property names carry
    /// that association's prefix.
    pub async fn metadef_namespace(
        &self,
        caller: &Caller,
        name: &str,
        resource_type: Option<&str>,
    ) -> Result<(Namespace, Contents)> {
        let shown_missing = |e| match e {
            super::ServiceError::Domain(DomainError::NotFound(_)) => DomainError::NotFound(
                format!("Metadata definition namespace={name} was not found."),
            )
            .into(),
            other => other,
        };
        let namespace = self
            .namespace_for(caller, name)
            .await
            .map_err(shown_missing)?;
        self.metadef_authorize(caller, "get_metadef_namespace", Some(&namespace))
            .map_err(shown_missing)?;
        for rule in [
            "list_metadef_resource_types",
            "get_metadef_objects",
            "get_metadef_properties",
            "get_metadef_tags",
        ] {
            self.metadef_authorize(caller, rule, Some(&namespace))?;
        }
        let mut contents = self.db.metadef_contents(&namespace.id).await?;
        let prefix = resource_type.and_then(|rt| prefix_of(&contents.associations, rt));
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            for property in &mut contents.properties {
                property.name = prefixed(Some(&prefix), &property.name);
            }
            for object in &mut contents.objects {
                if let Some(serde_json::Value::Object(properties)) =
                    object.body.get_mut("properties")
                {
                    *properties = std::mem::take(properties)
                        .into_iter()
                        .map(|(key, value)| (prefixed(Some(&prefix), &key), value))
                        .collect();
                }
            }
        }
        Ok((namespace, contents))
    }

    /// Replaces a namespace's attributes; what is left out takes the default it has at
    /// creation (Glance's PUT).
    pub async fn update_metadef_namespace(
        &self,
        caller: &Caller,
        name: &str,
        new: NewNamespace,
    ) -> Result<Namespace> {
        let mut namespace = self.namespace_for(caller, name).await?;
        self.metadef_authorize(caller, "modify_metadef_namespace", Some(&namespace))?;
        check_name("namespace", &new.namespace)?;
        let owner = new
            .owner
            .or_else(|| caller.project.clone())
            .unwrap_or_else(|| namespace.attrs.owner.clone());
        namespace.attrs = NamespaceAttrs {
            namespace: new.namespace,
            display_name: new.display_name,
            description: new.description,
            visibility: new.visibility.unwrap_or(NamespaceVisibility::Private),
            protected: new.protected.unwrap_or(false),
            owner,
        };
        namespace.updated_at = now();
        match self
            .db
            .update_metadef_namespace(&namespace.id, &namespace.attrs, namespace.updated_at)
            .await
        {
            Ok(true) => Ok(namespace),
            Ok(false) => Err(not_found(name).into()),
            Err(DbError::Duplicate) => Err(DomainError::Conflict(format!(
                "Invalid update. It would result in a duplicate metadata definition namespace \
                 with the same name of {}",
                namespace.attrs.namespace
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    fn refuse_if_protected(namespace: &Namespace) -> Result<()> {
        if namespace.attrs.protected {
            return Err(DomainError::Forbidden(format!(
                "Metadata definition namespace {} is protected and cannot be deleted.",
                namespace.attrs.namespace
            ))
            .into());
        }
        Ok(())
    }

    pub async fn delete_metadef_namespace(&self, caller: &Caller, name: &str) -> Result<()> {
        let namespace = self.namespace_for(caller, name).await?;
        self.metadef_authorize(caller, "delete_metadef_namespace", Some(&namespace))?;
        Self::refuse_if_protected(&namespace)?;
        Ok(self.db.delete_metadef_namespace(&namespace.id).await?)
    }

    /// Deletes every property or object of a namespace.
    pub async fn delete_metadef_definitions(
        &self,
        caller: &Caller,
        name: &str,
        kind: DefinitionKind,
    ) -> Result<()> {
        let namespace = self.namespace_for(caller, name).await?;
        self.metadef_authorize(caller, "delete_metadef_namespace", Some(&namespace))?;
        Self::refuse_if_protected(&namespace)?;
        self.db
            .delete_metadef_definitions(&namespace.id, kind, None)
            .await?;
        Ok(())
    }

    pub async fn delete_metadef_tags(&self, caller: &Caller, name: &str) -> Result<()> {
        let namespace = self.namespace_for(caller, name).await?;
        self.metadef_authorize(caller, "delete_metadef_namespace", Some(&namespace))?;
        self.metadef_authorize(caller, "delete_metadef_tags", Some(&namespace))?;
        Self::refuse_if_protected(&namespace)?;
        self.db.delete_metadef_tags(&namespace.id, None).await?;
        Ok(())
    }

    fn definition_rule(kind: DefinitionKind, action: &str) -> String {
        match (kind, action) {
            (DefinitionKind::Property, "list") => "get_metadef_properties".into(),
            (DefinitionKind::Object, "list") => "get_metadef_objects".into(),
            (DefinitionKind::Property, "delete") => "remove_metadef_property".into(),
            (DefinitionKind::Property, action) => format!("{action}_metadef_property"),
            (DefinitionKind::Object, action) => format!("{action}_metadef_object"),
        }
    }

    pub async fn metadef_definitions(
        &self,
        caller: &Caller,
        namespace: &str,
        kind: DefinitionKind,
        resource_type: Option<&str>,
    ) -> Result<Vec<Definition>> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            &Self::definition_rule(kind, "list"),
            Some(&namespace),
        )?;
        let mut definitions = self.db.metadef_definitions(&namespace.id, kind).await?;
        if let Some(rt) = resource_type {
            let associations = self.db.metadef_associations(&namespace.id).await?;
            if let Some(prefix) = prefix_of(&associations, rt) {
                for definition in &mut definitions {
                    definition.name = prefixed(Some(&prefix), &definition.name);
                }
            }
        }
        Ok(definitions)
    }

    /// A page of a namespace's objects.
    pub async fn metadef_objects(
        &self,
        caller: &Caller,
        namespace: &str,
        page: &Page,
    ) -> Result<(Vec<Definition>, Option<String>)> {
        let objects = self
            .metadef_definitions(caller, namespace, DefinitionKind::Object, None)
            .await?;
        page_of(
            objects,
            page,
            |o| o.name.as_str(),
            |o| (o.created_at, o.updated_at),
        )
    }

    /// One property or object; a property may be asked for with a resource type's prefix
    /// (`resource_type`), which is taken off its name.
    pub async fn metadef_definition(
        &self,
        caller: &Caller,
        namespace: &str,
        kind: DefinitionKind,
        name: &str,
        resource_type: Option<&str>,
    ) -> Result<Definition> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            &Self::definition_rule(kind, "get"),
            Some(&namespace),
        )?;
        let mut wanted = name.to_string();
        if let Some(rt) = resource_type {
            let associations = self.db.metadef_associations(&namespace.id).await?;
            let prefix = prefix_of(&associations, rt).unwrap_or_default();
            match name.strip_prefix(&prefix) {
                Some(bare) if !prefix.is_empty() => wanted = bare.to_string(),
                _ if prefix.is_empty() => {}
                _ => {
                    return Err(DomainError::NotFound(format!(
                        "Property {name} does not start with the expected resource type \
                         association prefix of '{prefix}'."
                    ))
                    .into());
                }
            }
        }
        self.db
            .metadef_definition(&namespace.id, kind, &wanted)
            .await?
            .ok_or_else(|| definition_not_found(kind, name, &namespace.attrs.namespace).into())
    }

    pub async fn add_metadef_definition(
        &self,
        caller: &Caller,
        namespace: &str,
        kind: DefinitionKind,
        name: String,
        body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Definition> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            &Self::definition_rule(kind, "add"),
            Some(&namespace),
        )?;
        check_name(kind_name(kind), &name)?;
        let at = now();
        let definition = Definition {
            name,
            body,
            created_at: at,
            updated_at: at,
        };
        match self
            .db
            .add_metadef_definition(&namespace.id, kind, &definition)
            .await
        {
            Ok(()) => Ok(definition),
            Err(DbError::Duplicate) => {
                Err(duplicate_definition(kind, &definition.name, &namespace.attrs.namespace).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn replace_metadef_definition(
        &self,
        caller: &Caller,
        namespace: &str,
        kind: DefinitionKind,
        name: &str,
        new_name: String,
        body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Definition> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            &Self::definition_rule(kind, "modify"),
            Some(&namespace),
        )?;
        check_name(kind_name(kind), &new_name)?;
        let before = self
            .db
            .metadef_definition(&namespace.id, kind, name)
            .await?
            .ok_or_else(|| definition_not_found(kind, name, &namespace.attrs.namespace))?;
        let definition = Definition {
            name: new_name,
            body,
            created_at: before.created_at,
            updated_at: now(),
        };
        match self
            .db
            .replace_metadef_definition(&namespace.id, kind, name, &definition)
            .await
        {
            Ok(true) => Ok(definition),
            Ok(false) => Err(definition_not_found(kind, name, &namespace.attrs.namespace).into()),
            Err(DbError::Duplicate) => {
                Err(duplicate_definition(kind, &definition.name, &namespace.attrs.namespace).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_metadef_definition(
        &self,
        caller: &Caller,
        namespace: &str,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<()> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            &Self::definition_rule(kind, "delete"),
            Some(&namespace),
        )?;
        if self
            .db
            .metadef_definition(&namespace.id, kind, name)
            .await?
            .is_none()
        {
            return Err(definition_not_found(kind, name, &namespace.attrs.namespace).into());
        }
        if namespace.attrs.protected {
            let what = match kind {
                DefinitionKind::Property => "property",
                DefinitionKind::Object => "object",
            };
            return Err(DomainError::Forbidden(format!(
                "Metadata definition {what} {name} is protected and cannot be deleted."
            ))
            .into());
        }
        self.db
            .delete_metadef_definitions(&namespace.id, kind, Some(name))
            .await?;
        Ok(())
    }

    pub async fn metadef_tags(
        &self,
        caller: &Caller,
        namespace: &str,
        page: &Page,
    ) -> Result<(Vec<Tag>, Option<String>)> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(caller, "get_metadef_tags", Some(&namespace))?;
        let tags = self.db.metadef_tags(&namespace.id).await?;
        page_of(
            tags,
            page,
            |tag| tag.name.as_str(),
            |tag| (tag.created_at, tag.updated_at),
        )
    }

    pub async fn metadef_tag(&self, caller: &Caller, namespace: &str, name: &str) -> Result<Tag> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(caller, "get_metadef_tag", Some(&namespace))?;
        self.db
            .metadef_tags(&namespace.id)
            .await?
            .into_iter()
            .find(|tag| tag.name == name)
            .ok_or_else(|| tag_not_found(name, &namespace.attrs.namespace).into())
    }

    /// Adds tags: one (`POST …/tags/{name}`) or several (`POST …/tags`, replacing the
    /// namespace's tags unless `append`).
    pub async fn add_metadef_tags(
        &self,
        caller: &Caller,
        namespace: &str,
        names: Vec<String>,
        bulk: bool,
        append: bool,
    ) -> Result<Vec<Tag>> {
        let namespace = self.namespace_for(caller, namespace).await?;
        let rule = if bulk {
            "add_metadef_tags"
        } else {
            "add_metadef_tag"
        };
        self.metadef_authorize(caller, rule, Some(&namespace))?;
        for name in &names {
            check_name("tag", name)?;
        }
        if let Some(name) = repeated(names.iter().map(String::as_str)) {
            return Err(duplicate_tag(name, &namespace.attrs.namespace).into());
        }
        let at = now();
        let tags: Vec<Tag> = names
            .into_iter()
            .map(|name| Tag {
                name,
                created_at: at,
                updated_at: at,
            })
            .collect();
        match self
            .db
            .add_metadef_tags(&namespace.id, &tags, append || !bulk)
            .await?
        {
            Ok(()) => Ok(tags),
            Err(name) => Err(duplicate_tag(&name, &namespace.attrs.namespace).into()),
        }
    }

    pub async fn rename_metadef_tag(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
        to: String,
    ) -> Result<Tag> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(caller, "modify_metadef_tag", Some(&namespace))?;
        check_name("tag", &to)?;
        let before = self
            .db
            .metadef_tags(&namespace.id)
            .await?
            .into_iter()
            .find(|tag| tag.name == name)
            .ok_or_else(|| tag_not_found(name, &namespace.attrs.namespace))?;
        let at = now();
        match self
            .db
            .rename_metadef_tag(&namespace.id, name, &to, at)
            .await
        {
            Ok(true) => Ok(Tag {
                name: to,
                created_at: before.created_at,
                updated_at: at,
            }),
            Ok(false) => Err(tag_not_found(name, &namespace.attrs.namespace).into()),
            Err(DbError::Duplicate) => Err(duplicate_tag(&to, &namespace.attrs.namespace).into()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_metadef_tag(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(caller, "delete_metadef_tag", Some(&namespace))?;
        // The tag is looked up first, as Glance does: a missing tag is 404 even in a
        // protected namespace.
        let tags = self.db.metadef_tags(&namespace.id).await?;
        if !tags.iter().any(|tag| tag.name == name) {
            return Err(tag_not_found(name, &namespace.attrs.namespace).into());
        }
        if namespace.attrs.protected {
            return Err(DomainError::Forbidden(format!(
                "Metadata definition tag {name} is protected and cannot be deleted."
            ))
            .into());
        }
        if !self
            .db
            .delete_metadef_tags(&namespace.id, Some(name))
            .await?
        {
            return Err(tag_not_found(name, &namespace.attrs.namespace).into());
        }
        Ok(())
    }

    pub async fn metadef_resource_types(&self, caller: &Caller) -> Result<Vec<ResourceType>> {
        self.metadef_authorize(caller, "list_metadef_resource_types", None)?;
        Ok(self.db.metadef_resource_types().await?)
    }

    pub async fn metadef_associations(
        &self,
        caller: &Caller,
        namespace: &str,
    ) -> Result<Vec<Association>> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(caller, "get_metadef_resource_type", Some(&namespace))?;
        Ok(self.db.metadef_associations(&namespace.id).await?)
    }

    pub async fn add_metadef_association(
        &self,
        caller: &Caller,
        namespace: &str,
        resource_type: String,
        prefix: Option<String>,
        properties_target: Option<String>,
    ) -> Result<Association> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            "add_metadef_resource_type_association",
            Some(&namespace),
        )?;
        check_name("resource type", &resource_type)?;
        let at = now();
        let association = Association {
            resource_type,
            prefix,
            properties_target,
            created_at: at,
            updated_at: at,
        };
        match self
            .db
            .add_metadef_association(&namespace.id, &association)
            .await
        {
            Ok(()) => Ok(association),
            Err(DbError::Duplicate) => Err(DomainError::Conflict(format!(
                "The metadata definition resource-type association of resource-type={} to \
                 namespace={} already exists.",
                association.resource_type, namespace.attrs.namespace
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn remove_metadef_association(
        &self,
        caller: &Caller,
        namespace: &str,
        resource_type: &str,
    ) -> Result<()> {
        let namespace = self.namespace_for(caller, namespace).await?;
        self.metadef_authorize(
            caller,
            "remove_metadef_resource_type_association",
            Some(&namespace),
        )?;
        let known = self.db.metadef_associations(&namespace.id).await?;
        if !known.iter().any(|a| a.resource_type == resource_type) {
            return Err(DomainError::NotFound(format!(
                "The metadata definition resource-type association of resource-type={resource_type} \
                 to namespace={}, was not found.",
                namespace.attrs.namespace
            ))
            .into());
        }
        if namespace.attrs.protected {
            return Err(DomainError::Forbidden(format!(
                "Metadata definition resource-type-association {resource_type} is protected and \
                 cannot be deleted."
            ))
            .into());
        }
        self.db
            .remove_metadef_association(&namespace.id, resource_type)
            .await?;
        Ok(())
    }
}
