//! The image: its attributes, statuses and transitions, visibility, and the rules for
//! creating one from the attributes a client sent (read-only and reserved keys, defaults,
//! custom properties as strings).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::DomainError;
use super::caller::Caller;
use super::time::Timestamp;

/// Glance's defaults for how many custom properties, tags and members an image may have.
pub const PROPERTY_QUOTA: usize = 128;
pub const TAG_QUOTA: usize = 128;
pub const MEMBER_QUOTA: usize = 128;

/// Per-image limits (Glance's `image_property_quota`, `image_tag_quota`,
/// `image_member_quota`, `image_location_quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub properties: usize,
    pub tags: usize,
    pub members: usize,
    pub locations: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            properties: PROPERTY_QUOTA,
            tags: TAG_QUOTA,
            members: MEMBER_QUOTA,
            locations: 10,
        }
    }
}
/// Longest name, tag, owner or custom key.
pub const MAX_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Queued,
    Saving,
    Active,
    Killed,
    Deleted,
    PendingDelete,
    Deactivated,
    Uploading,
    Importing,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::Saving,
        Status::Active,
        Status::Killed,
        Status::Deleted,
        Status::PendingDelete,
        Status::Deactivated,
        Status::Uploading,
        Status::Importing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Saving => "saving",
            Status::Active => "active",
            Status::Killed => "killed",
            Status::Deleted => "deleted",
            Status::PendingDelete => "pending_delete",
            Status::Deactivated => "deactivated",
            Status::Uploading => "uploading",
            Status::Importing => "importing",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Glance's status machine (`glance/domain/__init__.py`).
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Queued, Saving | Uploading | Importing | Active | Deleted)
                | (Saving, Active | Killed | Deleted | Queued)
                | (Uploading, Importing | Queued | Deleted)
                | (Importing, Active | Deleted | Queued)
                | (Active, PendingDelete | Deleted | Deactivated)
                | (Killed, Deleted)
                | (PendingDelete, Deleted | Active)
                | (Deactivated, Active | Deleted)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    Public,
    Private,
    Shared,
    Community,
}

impl Visibility {
    pub const ALL: [Visibility; 4] = [
        Visibility::Public,
        Visibility::Private,
        Visibility::Shared,
        Visibility::Community,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Shared => "shared",
            Visibility::Community => "community",
        }
    }

    pub fn parse(text: &str) -> Option<Visibility> {
        Visibility::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

/// The disk and container formats a deployment takes (`images.disk_formats`,
/// `images.container_formats`), checked where a request names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formats {
    pub disk: Vec<String>,
    pub container: Vec<String>,
}

impl Default for Formats {
    fn default() -> Self {
        Formats {
            disk: DISK_FORMATS.iter().map(|f| f.to_string()).collect(),
            container: CONTAINER_FORMATS.iter().map(|f| f.to_string()).collect(),
        }
    }
}

impl Formats {
    /// Refuses a `disk_format` or `container_format` value this deployment does not take,
    /// in the words of Glance's schema check; other keys pass.
    pub fn check(&self, key: &str, value: &Value) -> Result<(), DomainError> {
        let (allowed, kind) = match key {
            "disk_format" => (&self.disk, "disk formats"),
            "container_format" => (&self.container, "container formats"),
            _ => return Ok(()),
        };
        match value {
            Value::String(name) if !allowed.contains(name) => Err(DomainError::Invalid(format!(
                "Provided object does not match schema 'image': {value} is not one of the \
                 {kind} {allowed:?} (attribute '{key}')"
            ))),
            _ => Ok(()),
        }
    }
}

/// Glance's default `disk_formats` and `container_formats`.
pub const DISK_FORMATS: [&str; 11] = [
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const CONTAINER_FORMATS: [&str; 8] = [
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

/// Attributes a client may never set.
pub const READ_ONLY: [&str; 15] = [
    "created_at",
    "updated_at",
    "status",
    "checksum",
    "size",
    "virtual_size",
    "direct_url",
    "self",
    "file",
    "schema",
    "stores",
    "os_hash_algo",
    "os_hash_value",
    "locations",
    "id",
];

/// Whether `key` is reserved for the service itself.
pub fn is_reserved(key: &str) -> bool {
    matches!(key, "location" | "deleted" | "deleted_at") || key.starts_with("os_glance")
}

/// The attributes of Glance's image table, as opposed to custom properties.
pub const BASE_KEYS: [&str; 17] = [
    "checksum",
    "created_at",
    "container_format",
    "disk_format",
    "id",
    "min_disk",
    "min_ram",
    "name",
    "size",
    "virtual_size",
    "status",
    "tags",
    "owner",
    "updated_at",
    "visibility",
    "protected",
    "os_hidden",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub status: Status,
    pub visibility: Visibility,
    pub protected: bool,
    pub os_hidden: bool,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub owner: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub min_ram: i64,
    pub min_disk: i64,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub tags: BTreeSet<String>,
    pub properties: BTreeMap<String, String>,
    /// Where the stores keep the data, one per store; shown to clients only as `stores`.
    pub locations: Vec<Location>,
}

/// A copy of an image's data in one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub store: String,
    pub url: String,
}

impl Image {
    /// Glance's `is_image_visible` for a single image; `member_status` is the caller's
    /// membership of this image, if any.
    pub fn visible_to(&self, caller: &Caller, member_status: Option<&str>) -> bool {
        caller.is_admin
            || self.owner.is_none()
            || matches!(self.visibility, Visibility::Public | Visibility::Community)
            || caller.owns(self.owner.as_deref())
            || (self.visibility == Visibility::Shared && member_status.is_some())
    }

    /// The ids of the stores holding the data, as Glance's `stores` attribute lists them.
    pub fn stores(&self) -> String {
        self.locations
            .iter()
            .map(|l| l.store.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn location_in(&self, store: &str) -> Option<&Location> {
        self.locations.iter().find(|l| l.store == store)
    }

    pub fn not_found(id: &str) -> DomainError {
        DomainError::NotFound(format!("No image found with ID {id}"))
    }

    /// Moves to `next` if the machine allows it.
    pub fn transition(&mut self, next: Status) -> Result<(), DomainError> {
        if !self.status.can_become(next) {
            return Err(DomainError::Conflict(format!(
                "Image status transition from {} to {} is not allowed",
                self.status.as_str(),
                next.as_str()
            )));
        }
        if next == Status::Queued {
            self.size = None;
            self.virtual_size = None;
            self.checksum = None;
            self.os_hash_algo = None;
            self.os_hash_value = None;
            self.locations.clear();
        }
        self.status = next;
        Ok(())
    }
}

/// Checks one attribute value the way the image schema types it. `key` is a base or
/// custom attribute; custom values must be strings.
pub fn check_value(key: &str, value: &Value) -> Result<(), DomainError> {
    let bad = |why: &str| {
        Err(DomainError::Invalid(format!(
            "Provided object does not match schema 'image': {value} {why} (attribute '{key}')"
        )))
    };
    match key {
        "name" | "owner" => match value {
            Value::Null => Ok(()),
            Value::String(s) if s.chars().count() <= MAX_LEN => Ok(()),
            Value::String(_) => bad("is too long"),
            _ => bad("is not of type 'null', 'string'"),
        },
        "id" | "kernel_id" | "ramdisk_id" => match value {
            Value::Null if key != "id" => Ok(()),
            Value::String(s) if is_uuid(s) => Ok(()),
            _ => bad("does not match the UUID pattern"),
        },
        "visibility" => match value.as_str().and_then(Visibility::parse) {
            Some(_) => Ok(()),
            None => bad("is not one of ['community', 'public', 'private', 'shared']"),
        },
        "protected" | "os_hidden" => match value {
            Value::Bool(_) => Ok(()),
            _ => bad("is not of type 'boolean'"),
        },
        "min_ram" | "min_disk" => match value.as_i64() {
            Some(n) if n >= 0 && value.is_i64() => Ok(()),
            Some(_) => Err(DomainError::Invalid(format!(
                "Cannot set {key} to a negative value"
            ))),
            None => bad("is not of type 'integer'"),
        },
        // Which names a deployment takes is `Formats`' to say.
        "disk_format" | "container_format" => match value {
            Value::Null | Value::String(_) => Ok(()),
            _ => bad("is not of type 'null', 'string'"),
        },
        "tags" => match value {
            Value::Array(items)
                if items
                    .iter()
                    .all(|t| t.as_str().is_some_and(|t| t.chars().count() <= MAX_LEN)) =>
            {
                Ok(())
            }
            _ => bad("is not an array of strings of at most 255 characters"),
        },
        "cinder_encryption_key_deletion_policy" => match value.as_str() {
            Some("on_image_deletion" | "do_not_delete") => Ok(()),
            _ => bad("is not one of ['on_image_deletion', 'do_not_delete']"),
        },
        _ => match value {
            Value::String(_) => Ok(()),
            _ => bad("is not of type 'string'"),
        },
    }
}

pub fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Sets one base attribute (already checked) on the image; false if `key` is not base.
pub fn set_base(image: &mut Image, key: &str, value: &Value) -> bool {
    let text = || value.as_str().map(str::to_string);
    match key {
        "name" => image.name = text(),
        "owner" => image.owner = text(),
        "visibility" => {
            if let Some(v) = value.as_str().and_then(Visibility::parse) {
                image.visibility = v;
            }
        }
        "protected" => image.protected = value.as_bool().unwrap_or(false),
        "os_hidden" => image.os_hidden = value.as_bool().unwrap_or(false),
        "min_ram" => image.min_ram = value.as_i64().unwrap_or(0),
        "min_disk" => image.min_disk = value.as_i64().unwrap_or(0),
        "disk_format" => image.disk_format = text(),
        "container_format" => image.container_format = text(),
        "tags" => {
            image.tags = value
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
        }
        _ => return false,
    }
    true
}

/// Builds a new image from a create request's attributes, with Glance's defaults and
/// checks in Glance's order.
pub fn new_image(
    attributes: Map<String, Value>,
    caller: &Caller,
    now: Timestamp,
    fresh_id: String,
    quotas: &Quotas,
) -> Result<Image, DomainError> {
    for key in ["direct_url", "self", "file", "schema", "stores"] {
        if attributes.contains_key(key) {
            return Err(read_only(key));
        }
    }
    for (key, value) in &attributes {
        check_value(key, value)?;
    }
    for (key, _) in &attributes {
        if key.chars().count() > MAX_LEN {
            return Err(DomainError::Invalid(
                "Custom property should not be greater than 255 characters.".into(),
            ));
        }
        if is_reserved(key) || key == "locations" {
            return Err(DomainError::Forbidden(format!(
                "Attribute '{key}' is reserved."
            )));
        }
        if READ_ONLY.contains(&key.as_str()) && key != "id" {
            return Err(read_only(key));
        }
    }
    let id = match attributes.get("id") {
        Some(Value::String(id)) => id.to_lowercase(),
        _ => fresh_id,
    };
    let mut image = Image {
        id,
        name: None,
        status: Status::Queued,
        visibility: Visibility::Shared,
        protected: false,
        os_hidden: false,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        owner: caller.project.clone(),
        size: None,
        virtual_size: None,
        min_ram: 0,
        min_disk: 0,
        disk_format: None,
        container_format: None,
        created_at: now,
        updated_at: now,
        tags: BTreeSet::new(),
        properties: BTreeMap::new(),
        locations: Vec::new(),
    };
    for (key, value) in attributes {
        if key == "id" {
            continue;
        }
        if !set_base(&mut image, &key, &value) {
            if let Value::String(text) = value {
                image.properties.insert(key, text);
            }
        }
    }
    if !caller.is_admin && image.owner != caller.project {
        return Err(DomainError::Forbidden(format!(
            "You are not permitted to create images owned by '{}'.",
            image.owner.as_deref().unwrap_or("None")
        )));
    }
    check_quotas(&image, quotas)?;
    Ok(image)
}

pub fn read_only(key: &str) -> DomainError {
    DomainError::Forbidden(format!("Attribute '{key}' is read-only."))
}

pub fn check_quotas(image: &Image, quotas: &Quotas) -> Result<(), DomainError> {
    if image.properties.len() > quotas.properties {
        return Err(DomainError::OverLimit(format!(
            "Maximum number of properties exceeded ({})",
            quotas.properties
        )));
    }
    if image.tags.len() > quotas.tags {
        return Err(DomainError::OverLimit(format!(
            "Maximum number of tags exceeded ({})",
            quotas.tags
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(project: &str, admin: bool) -> Caller {
        Caller {
            project: Some(project.into()),
            user: None,
            is_admin: admin,
            ..Caller::default()
        }
    }

    fn attrs(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults_follow_glance() {
        let image = new_image(
            attrs(json!({"name": "x"})),
            &caller("p", false),
            7,
            "id".into(),
            &Quotas::default(),
        )
        .unwrap();
        assert_eq!(image.status, Status::Queued);
        assert_eq!(image.visibility, Visibility::Shared);
        assert_eq!(image.owner.as_deref(), Some("p"));
        assert_eq!((image.min_ram, image.min_disk), (0, 0));
    }

    #[test]
    fn read_only_reserved_and_typed_attributes() {
        let c = caller("p", false);
        let err =
            |v: Value| new_image(attrs(v), &c, 0, "id".into(), &Quotas::default()).unwrap_err();
        assert!(matches!(
            err(json!({"status": "active"})),
            DomainError::Forbidden(_)
        ));
        assert!(matches!(
            err(json!({"self": "x"})),
            DomainError::Forbidden(_)
        ));
        assert!(matches!(
            err(json!({"os_glance_x": "1"})),
            DomainError::Forbidden(_)
        ));
        assert!(matches!(err(json!({"foo": 1})), DomainError::Invalid(_)));
        assert!(matches!(
            err(json!({"min_ram": -1})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(json!({"disk_format": 3})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            Formats::default().check("disk_format", &json!("tar")),
            Err(DomainError::Invalid(_))
        ));
        assert!(
            Formats::default()
                .check("disk_format", &json!("qcow2"))
                .is_ok()
        );
        assert!(matches!(
            err(json!({"id": "not-a-uuid"})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            err(json!({"owner": "other"})),
            DomainError::Forbidden(_)
        ));
        let image = new_image(
            attrs(json!({"foo": "bar", "tags": ["a", "a", "b"]})),
            &c,
            0,
            "id".into(),
            &Quotas::default(),
        )
        .unwrap();
        assert_eq!(image.properties["foo"], "bar");
        assert_eq!(image.tags.len(), 2);
    }

    #[test]
    fn status_machine() {
        assert!(Status::Queued.can_become(Status::Saving));
        assert!(Status::Saving.can_become(Status::Queued));
        assert!(!Status::Active.can_become(Status::Queued));
        assert!(!Status::Deleted.can_become(Status::Active));
        assert!(Status::Deactivated.can_become(Status::Active));
    }

    #[test]
    fn visibility_of_one_image() {
        let mut image = new_image(
            Map::new(),
            &caller("owner", false),
            0,
            "id".into(),
            &Quotas::default(),
        )
        .unwrap();
        let other = caller("other", false);
        assert!(!image.visible_to(&other, None));
        assert!(image.visible_to(&other, Some("pending")));
        image.visibility = Visibility::Private;
        assert!(!image.visible_to(&other, Some("accepted")));
        image.visibility = Visibility::Community;
        assert!(image.visible_to(&other, None));
    }
}
