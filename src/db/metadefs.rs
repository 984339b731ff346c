//! Metadata definitions in the repository: namespaces and their properties, objects, tags and
//! resource-type associations, and the resource types. Who may see or change what is the
//! service's; here a namespace is found by name or id, and a namespace's contents go with it.

use serde_json::{Map, Value};

use super::engine::{read, write_tx};
use super::rows::Text;
use super::{Database, DbError, duplicate_or};
use crate::domain::metadef::{
    Association, Contents, Definition, DefinitionKind, Namespace, NamespaceAttrs,
    NamespaceVisibility, ResourceType, Tag,
};
use crate::domain::time::Timestamp;

/// The statements a namespace's creation shares with the single writes, as macros: a write
/// transaction's connection and dialect are of a different type on each engine.
macro_rules! insert_definition {
    ($tx:ident, $sql:ident, $kind:expr, $namespace_id:expr, $definition:expr) => {
        sqlx::query(&$sql(&format!(
            "INSERT INTO {} (namespace_id, name, definition, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?)",
            table($kind)
        )))
        .bind($namespace_id)
        .bind(&$definition.name)
        .bind(Value::Object($definition.body.clone()).to_string())
        .bind($definition.created_at)
        .bind($definition.updated_at)
        .execute(&mut *$tx)
        .await
        .map(|_| ())
        .map_err(duplicate_or)
    };
}

macro_rules! insert_tag {
    ($tx:ident, $sql:ident, $namespace_id:expr, $tag:expr) => {
        sqlx::query(&$sql(
            "INSERT INTO metadef_tags (namespace_id, name, created_at, updated_at) \
             VALUES (?, ?, ?, ?)",
        ))
        .bind($namespace_id)
        .bind(&$tag.name)
        .bind($tag.created_at)
        .bind($tag.updated_at)
        .execute(&mut *$tx)
        .await
        .map(|_| ())
        .map_err(duplicate_or)
    };
}

/// Deletes everything a namespace holds (not the namespace): its delete's cascade and a
/// load's overwrite.
macro_rules! delete_contents {
    ($tx:ident, $sql:ident, $namespace_id:expr) => {
        for table in [
            "metadef_tags",
            "metadef_objects",
            "metadef_properties",
            "metadef_namespace_resource_types",
        ] {
            sqlx::query(&$sql(&format!(
                "DELETE FROM {table} WHERE namespace_id = ?"
            )))
            .bind($namespace_id)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

/// Associates, creating the resource type (not protected) when it is new.
macro_rules! associate {
    ($tx:ident, $sql:ident, $namespace_id:expr, $association:expr) => {{
        let known: Option<Text> = sqlx::query_scalar(&$sql(
            "SELECT name FROM metadef_resource_types WHERE name = ?",
        ))
        .bind(&$association.resource_type)
        .fetch_optional(&mut *$tx)
        .await?;
        if known.is_none() {
            sqlx::query(&$sql(
                "INSERT INTO metadef_resource_types (name, protected, created_at, updated_at) \
                 VALUES (?, 0, ?, ?)",
            ))
            .bind(&$association.resource_type)
            .bind($association.created_at)
            .bind($association.created_at)
            .execute(&mut *$tx)
            .await?;
        }
        sqlx::query(&$sql(
            "INSERT INTO metadef_namespace_resource_types (namespace_id, resource_type, prefix, \
             properties_target, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind($namespace_id)
        .bind(&$association.resource_type)
        .bind(&$association.prefix)
        .bind(&$association.properties_target)
        .bind($association.created_at)
        .bind($association.updated_at)
        .execute(&mut *$tx)
        .await
        .map(|_| ())
        .map_err(duplicate_or)
    }};
}

type NamespaceRow = (
    Text,
    Text,
    Option<Text>,
    Option<Text>,
    Text,
    i64,
    Text,
    i64,
    i64,
);

/// resource_type, prefix, properties_target, created_at, updated_at
type AssociationRow = (Text, Option<Text>, Option<Text>, i64, i64);

/// An association with its namespace's id first.
type NamespaceAssociationRow = (Text, Text, Option<Text>, Option<Text>, i64, i64);

const NAMESPACE_COLUMNS: &str = "id, namespace, display_name, description, visibility, protected, owner, created_at, updated_at";

fn namespace_of(row: NamespaceRow) -> Result<Namespace, DbError> {
    let (id, namespace, display_name, description, visibility, protected, owner, created, updated) =
        row;
    let visibility = NamespaceVisibility::parse(&visibility.0).ok_or_else(|| {
        DbError::Corrupt(format!(
            "metadef namespace {}: visibility {}",
            namespace.0, visibility.0
        ))
    })?;
    Ok(Namespace {
        id: id.0,
        attrs: NamespaceAttrs {
            namespace: namespace.0,
            display_name: display_name.map(String::from),
            description: description.map(String::from),
            visibility,
            protected: protected != 0,
            owner: owner.0,
        },
        created_at: created,
        updated_at: updated,
    })
}

fn table(kind: DefinitionKind) -> &'static str {
    match kind {
        DefinitionKind::Property => "metadef_properties",
        DefinitionKind::Object => "metadef_objects",
    }
}

fn definition_of(
    (name, body, created, updated): (Text, Text, i64, i64),
) -> Result<Definition, DbError> {
    let body: Map<String, Value> = serde_json::from_str(&body.0)
        .map_err(|e| DbError::Corrupt(format!("metadef definition {}: {e}", name.0)))?;
    Ok(Definition {
        name: name.0,
        body,
        created_at: created,
        updated_at: updated,
    })
}

fn association_of(
    (resource_type, prefix, target, created, updated): (Text, Option<Text>, Option<Text>, i64, i64),
) -> Association {
    Association {
        resource_type: resource_type.0,
        prefix: prefix.map(String::from),
        properties_target: target.map(String::from),
        created_at: created,
        updated_at: updated,
    }
}

/// Why a namespace's creation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefused {
    /// A namespace of this name exists.
    Namespace,
    /// Two of the namespace's own properties, objects or tags share a name.
    Child(DefinitionOrTag, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionOrTag {
    Definition(DefinitionKind),
    Tag,
}

/// Everything a new namespace holds, written with it.
#[derive(Debug, Clone, Copy)]
pub struct NewContents<'a> {
    pub associations: &'a [Association],
    pub properties: &'a [Definition],
    pub objects: &'a [Definition],
    pub tags: &'a [Tag],
}

impl Database {
    pub async fn metadef_namespace(&self, name: &str) -> Result<Option<Namespace>, DbError> {
        let row: Option<NamespaceRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(&format!(
                "SELECT {NAMESPACE_COLUMNS} FROM metadef_namespaces WHERE namespace = ?"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?
        })?;
        row.map(namespace_of).transpose()
    }

    /// Every namespace a caller may see (admins all; others the public ones and those
    /// `project` owns), with each one's resource-type associations: two statements whatever
    /// the number of namespaces.
    pub async fn metadef_namespaces(
        &self,
        is_admin: bool,
        project: Option<&str>,
    ) -> Result<Vec<(Namespace, Vec<Association>)>, DbError> {
        let seen = if is_admin {
            "1 = 1"
        } else {
            "(visibility = 'public' OR owner = ?)"
        };
        let project = project.unwrap_or("");
        let (rows, associations): (Vec<NamespaceRow>, Vec<NamespaceAssociationRow>) =
            read!(self, |pool, sql| {
                let statement =
                    format!("SELECT {NAMESPACE_COLUMNS} FROM metadef_namespaces WHERE {seen}");
                let statement = sql(&statement);
                let mut query = sqlx::query_as(&statement);
                if !is_admin {
                    query = query.bind(project);
                }
                let rows = query.fetch_all(pool).await?;
                let associations = sqlx::query_as(&sql(
                    "SELECT namespace_id, resource_type, prefix, properties_target, created_at, \
                     updated_at FROM metadef_namespace_resource_types \
                     ORDER BY created_at, resource_type",
                ))
                .fetch_all(pool)
                .await?;
                (rows, associations)
            })?;
        let mut by_namespace: std::collections::HashMap<String, Vec<Association>> =
            std::collections::HashMap::new();
        for (namespace_id, resource_type, prefix, target, created, updated) in associations {
            by_namespace
                .entry(namespace_id.0)
                .or_default()
                .push(association_of((
                    resource_type,
                    prefix,
                    target,
                    created,
                    updated,
                )));
        }
        rows.into_iter()
            .map(|row| {
                let namespace = namespace_of(row)?;
                let associations = by_namespace.remove(&namespace.id).unwrap_or_default();
                Ok((namespace, associations))
            })
            .collect()
    }

    /// Creates a namespace and everything it holds in one transaction.
    pub async fn create_metadef_namespace(
        &self,
        namespace: &Namespace,
        contents: NewContents<'_>,
    ) -> Result<Result<(), CreateRefused>, DbError> {
        write_tx!(self, |tx, sql| {
            let exists: Option<Text> = sqlx::query_scalar(&sql(
                "SELECT id FROM metadef_namespaces WHERE namespace = ?",
            ))
            .bind(&namespace.attrs.namespace)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() {
                return Ok(Err(CreateRefused::Namespace));
            }
            let a = &namespace.attrs;
            sqlx::query(&sql(&format!(
                "INSERT INTO metadef_namespaces ({NAMESPACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(&namespace.id)
            .bind(&a.namespace)
            .bind(&a.display_name)
            .bind(&a.description)
            .bind(a.visibility.as_str())
            .bind(i64::from(a.protected))
            .bind(&a.owner)
            .bind(namespace.created_at)
            .bind(namespace.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            for association in contents.associations {
                associate!(tx, sql, &namespace.id, association)?;
            }
            for (kind, definitions) in [
                (DefinitionKind::Property, contents.properties),
                (DefinitionKind::Object, contents.objects),
            ] {
                for definition in definitions {
                    match insert_definition!(tx, sql, kind, &namespace.id, definition) {
                        Err(DbError::Duplicate) => {
                            return Ok(Err(CreateRefused::Child(
                                DefinitionOrTag::Definition(kind),
                                definition.name.clone(),
                            )));
                        }
                        other => other?,
                    }
                }
            }
            for tag in contents.tags {
                match insert_tag!(tx, sql, &namespace.id, tag) {
                    Err(DbError::Duplicate) => {
                        return Ok(Err(CreateRefused::Child(
                            DefinitionOrTag::Tag,
                            tag.name.clone(),
                        )));
                    }
                    other => other?,
                }
            }
            Ok(())
        })
    }

    /// Replaces a namespace's attributes (a rename included); `Duplicate` when the new name
    /// is another namespace's. `false` when it is gone.
    pub async fn update_metadef_namespace(
        &self,
        id: &str,
        attrs: &NamespaceAttrs,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let other: Option<Text> = sqlx::query_scalar(&sql(
                "SELECT id FROM metadef_namespaces WHERE namespace = ? AND id <> ?",
            ))
            .bind(&attrs.namespace)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if other.is_some() {
                return Err(DbError::Duplicate);
            }
            let updated = sqlx::query(&sql(
                "UPDATE metadef_namespaces SET namespace = ?, display_name = ?, description = ?, \
                 visibility = ?, protected = ?, owner = ?, updated_at = ? WHERE id = ?",
            ))
            .bind(&attrs.namespace)
            .bind(&attrs.display_name)
            .bind(&attrs.description)
            .bind(attrs.visibility.as_str())
            .bind(i64::from(attrs.protected))
            .bind(&attrs.owner)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            updated.rows_affected() > 0
        })
    }

    /// Deletes a namespace and everything it holds.
    pub async fn delete_metadef_namespace(&self, id: &str) -> Result<(), DbError> {
        write_tx!(self, |tx, sql| {
            delete_contents!(tx, sql, id);
            sqlx::query(&sql("DELETE FROM metadef_namespaces WHERE id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        })
    }

    /// Everything a namespace holds, as Glance shows it: properties and objects by name,
    /// tags newest first.
    pub async fn metadef_contents(&self, id: &str) -> Result<Contents, DbError> {
        let associations = self.metadef_associations(id).await?;
        let properties = self
            .metadef_definitions(id, DefinitionKind::Property)
            .await?;
        let objects = self.metadef_definitions(id, DefinitionKind::Object).await?;
        let tags = self.metadef_tags(id).await?;
        Ok(Contents {
            associations,
            properties,
            objects,
            tags,
        })
    }

    pub async fn metadef_definitions(
        &self,
        namespace_id: &str,
        kind: DefinitionKind,
    ) -> Result<Vec<Definition>, DbError> {
        let rows: Vec<(Text, Text, i64, i64)> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(&format!(
                "SELECT name, definition, created_at, updated_at FROM {} \
                 WHERE namespace_id = ? ORDER BY name",
                table(kind)
            )))
            .bind(namespace_id)
            .fetch_all(pool)
            .await?
        })?;
        rows.into_iter().map(definition_of).collect()
    }

    pub async fn metadef_definition(
        &self,
        namespace_id: &str,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Definition>, DbError> {
        let row: Option<(Text, Text, i64, i64)> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(&format!(
                "SELECT name, definition, created_at, updated_at FROM {} \
                 WHERE namespace_id = ? AND name = ?",
                table(kind)
            )))
            .bind(namespace_id)
            .bind(name)
            .fetch_optional(pool)
            .await?
        })?;
        row.map(definition_of).transpose()
    }

    /// Adds a definition; `Duplicate` when the namespace has one of that name.
    pub async fn add_metadef_definition(
        &self,
        namespace_id: &str,
        kind: DefinitionKind,
        definition: &Definition,
    ) -> Result<(), DbError> {
        write_tx!(self, |tx, sql| {
            insert_definition!(tx, sql, kind, namespace_id, definition)?
        })
    }

    /// Replaces the definition `name` (its name may change: `Duplicate` when the new one is
    /// taken); `false` when there is none.
    pub async fn replace_metadef_definition(
        &self,
        namespace_id: &str,
        kind: DefinitionKind,
        name: &str,
        definition: &Definition,
    ) -> Result<bool, DbError> {
        let body = Value::Object(definition.body.clone()).to_string();
        let body = body.as_str();
        write_tx!(self, |tx, sql| {
            if definition.name != name {
                let taken: Option<Text> = sqlx::query_scalar(&sql(&format!(
                    "SELECT name FROM {} WHERE namespace_id = ? AND name = ?",
                    table(kind)
                )))
                .bind(namespace_id)
                .bind(&definition.name)
                .fetch_optional(&mut *tx)
                .await?;
                if taken.is_some() {
                    return Err(DbError::Duplicate);
                }
            }
            let updated = sqlx::query(&sql(&format!(
                "UPDATE {} SET name = ?, definition = ?, updated_at = ? \
                 WHERE namespace_id = ? AND name = ?",
                table(kind)
            )))
            .bind(&definition.name)
            .bind(body)
            .bind(definition.updated_at)
            .bind(namespace_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            updated.rows_affected() > 0
        })
    }

    /// Deletes the definition `name`, or every one of the kind when `name` is `None`;
    /// whether anything went.
    pub async fn delete_metadef_definitions(
        &self,
        namespace_id: &str,
        kind: DefinitionKind,
        name: Option<&str>,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let deleted = match name {
                Some(name) => {
                    sqlx::query(&sql(&format!(
                        "DELETE FROM {} WHERE namespace_id = ? AND name = ?",
                        table(kind)
                    )))
                    .bind(namespace_id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                }
                None => {
                    sqlx::query(&sql(&format!(
                        "DELETE FROM {} WHERE namespace_id = ?",
                        table(kind)
                    )))
                    .bind(namespace_id)
                    .execute(&mut *tx)
                    .await?
                }
            };
            deleted.rows_affected() > 0
        })
    }

    pub async fn metadef_tags(&self, namespace_id: &str) -> Result<Vec<Tag>, DbError> {
        let rows: Vec<(Text, i64, i64)> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT name, created_at, updated_at FROM metadef_tags \
                 WHERE namespace_id = ? ORDER BY created_at DESC, name DESC",
            ))
            .bind(namespace_id)
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, created_at, updated_at)| Tag {
                name: name.0,
                created_at,
                updated_at,
            })
            .collect())
    }

    /// Adds `tags`, after removing every other tag of the namespace unless `append` (an empty
    /// list changes nothing);
    /// `Err(name)` names the first that exists already (nothing is written then).
    pub async fn add_metadef_tags(
        &self,
        namespace_id: &str,
        tags: &[Tag],
        append: bool,
    ) -> Result<Result<(), String>, DbError> {
        if tags.is_empty() {
            return Ok(Ok(()));
        }
        write_tx!(self, |tx, sql| {
            if !append {
                sqlx::query(&sql("DELETE FROM metadef_tags WHERE namespace_id = ?"))
                    .bind(namespace_id)
                    .execute(&mut *tx)
                    .await?;
            }
            for tag in tags {
                match insert_tag!(tx, sql, namespace_id, tag) {
                    Err(DbError::Duplicate) => return Ok(Err(tag.name.clone())),
                    other => other?,
                }
            }
            Ok(())
        })
    }

    /// Renames the tag `name`; `Duplicate` when the new name is taken, `false` when there is
    /// no such tag.
    pub async fn rename_metadef_tag(
        &self,
        namespace_id: &str,
        name: &str,
        to: &str,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            if to != name {
                let taken: Option<Text> = sqlx::query_scalar(&sql(
                    "SELECT name FROM metadef_tags WHERE namespace_id = ? AND name = ?",
                ))
                .bind(namespace_id)
                .bind(to)
                .fetch_optional(&mut *tx)
                .await?;
                if taken.is_some() {
                    return Err(DbError::Duplicate);
                }
            }
            let updated = sqlx::query(&sql(
                "UPDATE metadef_tags SET name = ?, updated_at = ? WHERE namespace_id = ? AND name = ?",
            ))
            .bind(to)
            .bind(now)
            .bind(namespace_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            updated.rows_affected() > 0
        })
    }

    /// Deletes the tag `name`, or every tag when `None`; whether anything went.
    pub async fn delete_metadef_tags(
        &self,
        namespace_id: &str,
        name: Option<&str>,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let deleted = match name {
                Some(name) => {
                    sqlx::query(&sql(
                        "DELETE FROM metadef_tags WHERE namespace_id = ? AND name = ?",
                    ))
                    .bind(namespace_id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                }
                None => {
                    sqlx::query(&sql("DELETE FROM metadef_tags WHERE namespace_id = ?"))
                        .bind(namespace_id)
                        .execute(&mut *tx)
                        .await?
                }
            };
            deleted.rows_affected() > 0
        })
    }

    pub async fn metadef_resource_types(&self) -> Result<Vec<ResourceType>, DbError> {
        let rows: Vec<(Text, i64, i64, i64)> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT name, protected, created_at, updated_at FROM metadef_resource_types \
                 ORDER BY name",
            ))
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, protected, created_at, updated_at)| ResourceType {
                name: name.0,
                protected: protected != 0,
                created_at,
                updated_at,
            })
            .collect())
    }

    pub async fn metadef_associations(
        &self,
        namespace_id: &str,
    ) -> Result<Vec<Association>, DbError> {
        let rows: Vec<AssociationRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT resource_type, prefix, properties_target, created_at, updated_at \
                 FROM metadef_namespace_resource_types WHERE namespace_id = ? \
                 ORDER BY created_at, resource_type",
            ))
            .bind(namespace_id)
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows.into_iter().map(association_of).collect())
    }

    /// Associates a namespace with a resource type, creating the resource type (not
    /// protected) if it is new; `Duplicate` when they are associated already.
    pub async fn add_metadef_association(
        &self,
        namespace_id: &str,
        association: &Association,
    ) -> Result<(), DbError> {
        write_tx!(self, |tx, sql| {
            associate!(tx, sql, namespace_id, association)?
        })
    }

    /// Whether the association was there to remove.
    pub async fn remove_metadef_association(
        &self,
        namespace_id: &str,
        resource_type: &str,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let deleted = sqlx::query(&sql("DELETE FROM metadef_namespace_resource_types \
                 WHERE namespace_id = ? AND resource_type = ?"))
            .bind(namespace_id)
            .bind(resource_type)
            .execute(&mut *tx)
            .await?;
            deleted.rows_affected() > 0
        })
    }
}

/// What `load_metadef_namespace` does with a namespace the database holds already
/// (`glance-manage db load_metadefs`' flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Leave it as it is.
    Skip,
    /// Add what it lacks; change nothing it has (`--merge`).
    Merge,
    /// Add what it lacks and replace what it has from the file (`--merge --prefer_new`).
    PreferNew,
    /// Replace it and everything it holds (`--merge --overwrite`).
    Overwrite,
}

/// What loading one namespace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Created,
    Skipped,
    Merged,
    Replaced,
}

impl Database {
    /// Loads a namespace from a definition file, in one transaction. A new namespace is
    /// created with everything it holds; an existing one is treated as `mode` says (its id,
    /// and so its place for the API, is kept). Resource types the file names are created
    /// protected, as Glance's loader creates them.
    pub async fn load_metadef_namespace(
        &self,
        namespace: &Namespace,
        contents: NewContents<'_>,
        mode: LoadMode,
    ) -> Result<Loaded, DbError> {
        write_tx!(self, |tx, sql| {
            let existing: Option<Text> = sqlx::query_scalar(&sql(
                "SELECT id FROM metadef_namespaces WHERE namespace = ?",
            ))
            .bind(&namespace.attrs.namespace)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, loaded) = match (existing, mode) {
                (Some(_), LoadMode::Skip) => return Ok(Loaded::Skipped),
                (Some(id), LoadMode::Overwrite) => {
                    delete_contents!(tx, sql, &id.0);
                    (id.0, Loaded::Replaced)
                }
                (Some(id), _) => (id.0, Loaded::Merged),
                (None, _) => {
                    sqlx::query(&sql(&format!(
                        "INSERT INTO metadef_namespaces ({NAMESPACE_COLUMNS}) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    )))
                    .bind(&namespace.id)
                    .bind(&namespace.attrs.namespace)
                    .bind(&namespace.attrs.display_name)
                    .bind(&namespace.attrs.description)
                    .bind(namespace.attrs.visibility.as_str())
                    .bind(i64::from(namespace.attrs.protected))
                    .bind(&namespace.attrs.owner)
                    .bind(namespace.created_at)
                    .bind(namespace.updated_at)
                    .execute(&mut *tx)
                    .await?;
                    (namespace.id.clone(), Loaded::Created)
                }
            };
            let replace = matches!(loaded, Loaded::Replaced) || mode == LoadMode::PreferNew;
            if replace && loaded != Loaded::Created {
                let a = &namespace.attrs;
                sqlx::query(&sql(
                    "UPDATE metadef_namespaces SET display_name = ?, description = ?, \
                     visibility = ?, protected = ?, owner = ?, updated_at = ? WHERE id = ?",
                ))
                .bind(&a.display_name)
                .bind(&a.description)
                .bind(a.visibility.as_str())
                .bind(i64::from(a.protected))
                .bind(&a.owner)
                .bind(namespace.updated_at)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
            let id = id.as_str();
            for association in contents.associations {
                let known: Option<Text> = sqlx::query_scalar(&sql(
                    "SELECT name FROM metadef_resource_types WHERE name = ?",
                ))
                .bind(&association.resource_type)
                .fetch_optional(&mut *tx)
                .await?;
                if known.is_none() {
                    sqlx::query(&sql(
                        "INSERT INTO metadef_resource_types (name, protected, created_at, \
                         updated_at) VALUES (?, 1, ?, ?)",
                    ))
                    .bind(&association.resource_type)
                    .bind(association.created_at)
                    .bind(association.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                let there: Option<Text> = sqlx::query_scalar(&sql(
                    "SELECT resource_type FROM metadef_namespace_resource_types \
                     WHERE namespace_id = ? AND resource_type = ?",
                ))
                .bind(id)
                .bind(&association.resource_type)
                .fetch_optional(&mut *tx)
                .await?;
                if there.is_none() {
                    associate!(tx, sql, id, association)?;
                } else if replace {
                    sqlx::query(&sql(
                        "UPDATE metadef_namespace_resource_types SET prefix = ?, \
                         properties_target = ?, updated_at = ? \
                         WHERE namespace_id = ? AND resource_type = ?",
                    ))
                    .bind(&association.prefix)
                    .bind(&association.properties_target)
                    .bind(association.updated_at)
                    .bind(id)
                    .bind(&association.resource_type)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for (kind, definitions) in [
                (DefinitionKind::Property, contents.properties),
                (DefinitionKind::Object, contents.objects),
            ] {
                for definition in definitions {
                    let there: Option<Text> = sqlx::query_scalar(&sql(&format!(
                        "SELECT name FROM {} WHERE namespace_id = ? AND name = ?",
                        table(kind)
                    )))
                    .bind(id)
                    .bind(&definition.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if there.is_none() {
                        insert_definition!(tx, sql, kind, id, definition)?;
                    } else if replace {
                        sqlx::query(&sql(&format!(
                            "UPDATE {} SET definition = ?, updated_at = ? \
                             WHERE namespace_id = ? AND name = ?",
                            table(kind)
                        )))
                        .bind(Value::Object(definition.body.clone()).to_string())
                        .bind(definition.updated_at)
                        .bind(id)
                        .bind(&definition.name)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            for tag in contents.tags {
                let there: Option<Text> = sqlx::query_scalar(&sql(
                    "SELECT name FROM metadef_tags WHERE namespace_id = ? AND name = ?",
                ))
                .bind(id)
                .bind(&tag.name)
                .fetch_optional(&mut *tx)
                .await?;
                if there.is_none() {
                    insert_tag!(tx, sql, id, tag)?;
                }
            }
            loaded
        })
    }

    /// Every namespace with everything it holds, by name: what an export writes out.
    pub async fn all_metadef_namespaces(&self) -> Result<Vec<(Namespace, Contents)>, DbError> {
        let mut namespaces = self.metadef_namespaces(true, None).await?;
        namespaces.sort_by(|(a, _), (b, _)| a.attrs.namespace.cmp(&b.attrs.namespace));
        let mut all = Vec::with_capacity(namespaces.len());
        for (namespace, _) in namespaces {
            let contents = self.metadef_contents(&namespace.id).await?;
            all.push((namespace, contents));
        }
        Ok(all)
    }
}
