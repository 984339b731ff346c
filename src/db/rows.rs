//! Rows as the engines store them, and their conversion to domain types. Images are read
//! as JSON that the engine assembles (`image_json`): one value per image (on SQLite, per
//! page) instead of a row per image and per tag, property and location.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde::Deserialize;
use sqlx::mysql::{MySql, MySqlTypeInfo, MySqlValueRef};
use sqlx::postgres::{PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, FromRow, Type};

use super::{DbError, Engine};
use crate::domain::image::{Image, Location, Status, Visibility};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::task::{Task, TaskStatus};

/// A text column as every engine returns it. MySQL flags a `utf8mb4_bin` column (text
/// compared byte by byte) as binary, and sqlx will not read those as `String`; the bytes are
/// UTF-8 all the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

impl Type<MySql> for Text {
    fn type_info() -> MySqlTypeInfo {
        <str as Type<MySql>>::type_info()
    }

    fn compatible(ty: &MySqlTypeInfo) -> bool {
        <str as Type<MySql>>::compatible(ty) || <[u8] as Type<MySql>>::compatible(ty)
    }
}

impl<'r> Decode<'r, MySql> for Text {
    fn decode(value: MySqlValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let bytes = <&[u8] as Decode<MySql>>::decode(value)?;
        Ok(Text(String::from_utf8(bytes.to_vec())?))
    }
}

/// SQLite and PostgreSQL read text as text.
macro_rules! text_as_string {
    ($db:ty, $info:ty, $value:ty) => {
        impl Type<$db> for Text {
            fn type_info() -> $info {
                <String as Type<$db>>::type_info()
            }

            fn compatible(ty: &$info) -> bool {
                <String as Type<$db>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, $db> for Text {
            fn decode(value: $value) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(Text(<String as Decode<$db>>::decode(value)?))
            }
        }
    };
}

text_as_string!(Sqlite, SqliteTypeInfo, SqliteValueRef<'r>);
text_as_string!(Postgres, PgTypeInfo, PgValueRef<'r>);

/// The columns of `images` an image is read with, in `IMAGE_JSON`'s key order.
const IMAGE_COLUMNS: [&str; 18] = [
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "min_ram",
    "min_disk",
    "disk_format",
    "container_format",
    "created_at",
    "updated_at",
];

/// One image of alias `i` as JSON text, with its locations, tags and properties, as the
/// engine's JSON functions build it.
pub fn image_json(engine: Engine) -> &'static str {
    static SQLITE: LazyLock<String> = LazyLock::new(|| {
        build_image_json(
            "json_object",
            ["json((SELECT json_group_array(", "))"],
            "json((SELECT json_group_array(t.value) FROM image_tags t WHERE t.image_id = i.id))",
            "json((SELECT json_group_object(p.name, p.value) FROM image_properties p \
             WHERE p.image_id = i.id))",
            ["", ""],
        )
    });
    static POSTGRES: LazyLock<String> = LazyLock::new(|| {
        build_image_json(
            "json_build_object",
            ["COALESCE((SELECT json_agg(", "), '[]'::json)"],
            "COALESCE((SELECT json_agg(t.value) FROM image_tags t WHERE t.image_id = i.id), \
             '[]'::json)",
            "COALESCE((SELECT json_object_agg(p.name, p.value) FROM image_properties p \
             WHERE p.image_id = i.id), '{}'::json)",
            ["", "::text"],
        )
    });
    // MariaDB nests a subquery's JSON as a string unless JSON_EXTRACT marks it as JSON.
    static MYSQL: LazyLock<String> = LazyLock::new(|| {
        build_image_json(
            "JSON_OBJECT",
            [
                "JSON_EXTRACT(COALESCE((SELECT JSON_ARRAYAGG(",
                "), '[]'), '$')",
            ],
            "JSON_EXTRACT(COALESCE((SELECT JSON_ARRAYAGG(t.value) FROM image_tags t \
             WHERE t.image_id = i.id), '[]'), '$')",
            "JSON_EXTRACT(COALESCE((SELECT JSON_OBJECTAGG(p.name, p.value) FROM \
             image_properties p WHERE p.image_id = i.id), '{}'), '$')",
            ["CAST(", " AS CHAR)"],
        )
    });
    match engine {
        Engine::Sqlite => &SQLITE,
        Engine::Postgres => &POSTGRES,
        Engine::MySql => &MYSQL,
    }
}

/// `object(...)` of the image's columns, then `locations` (an aggregate of an object per
/// location, `around` its opening and its closing after the subquery), `tags` and
/// `properties`; `outer` wraps it all.
fn build_image_json(
    object: &str,
    around: [&str; 2],
    tags: &str,
    properties: &str,
    outer: [&str; 2],
) -> String {
    let columns = IMAGE_COLUMNS
        .iter()
        .map(|c| format!("'{c}', i.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let location = format!("{object}('store', l.store, 'url', l.url, 'position', l.position)");
    let locations = format!(
        "{}{location}) FROM image_locations l WHERE l.image_id = i.id{}",
        around[0], around[1]
    );
    format!(
        "{}{object}({columns}, 'locations', {locations}, 'tags', {tags}, \
         'properties', {properties}){}",
        outer[0], outer[1]
    )
}

#[derive(Debug, Deserialize)]
pub struct ImageRow {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
    pub protected: i64,
    pub os_hidden: i64,
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
    pub created_at: i64,
    pub updated_at: i64,
    pub locations: Vec<LocationRow>,
    pub tags: BTreeSet<String>,
    pub properties: BTreeMap<String, String>,
}

impl ImageRow {
    pub fn into_image(self) -> Result<Image, DbError> {
        let status = Status::parse(&self.status).ok_or_else(|| {
            DbError::Corrupt(format!("image {}: status {}", self.id, self.status))
        })?;
        let visibility = Visibility::parse(&self.visibility).ok_or_else(|| {
            DbError::Corrupt(format!("image {}: visibility {}", self.id, self.visibility))
        })?;
        Ok(Image {
            id: self.id,
            name: self.name,
            status,
            visibility,
            protected: self.protected != 0,
            os_hidden: self.os_hidden != 0,
            checksum: self.checksum,
            os_hash_algo: self.os_hash_algo,
            os_hash_value: self.os_hash_value,
            owner: self.owner,
            size: self.size,
            virtual_size: self.virtual_size,
            min_ram: self.min_ram,
            min_disk: self.min_disk,
            disk_format: self.disk_format,
            container_format: self.container_format,
            created_at: self.created_at,
            updated_at: self.updated_at,
            tags: self.tags,
            properties: self.properties,
            locations: {
                let mut locations = self.locations;
                // Aggregates keep no order on every engine: the first copy made is read first.
                locations.sort_by(|a, b| (a.position, &a.store).cmp(&(b.position, &b.store)));
                locations
            }
            .into_iter()
            .map(|l| Location {
                store: l.store,
                url: l.url,
            })
            .collect(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct LocationRow {
    pub store: String,
    pub url: String,
    pub position: i64,
}

pub const TASK_COLUMNS: &str = "id, type, status, owner, image_id, request_id, user_id, input, \
     result, message, created_at, updated_at, expires_at";

#[derive(Debug, FromRow)]
pub struct TaskRow {
    pub id: Text,
    #[sqlx(rename = "type")]
    pub kind: Text,
    pub status: Text,
    pub owner: Option<Text>,
    pub image_id: Option<Text>,
    pub request_id: Option<Text>,
    pub user_id: Option<Text>,
    pub input: Text,
    pub result: Option<Text>,
    pub message: Text,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
}

impl TaskRow {
    pub fn into_task(self) -> Result<Task, DbError> {
        let corrupt = |what: &str| DbError::Corrupt(format!("task {}: {what}", self.id.0));
        let status = TaskStatus::parse(&self.status.0).ok_or_else(|| corrupt("status"))?;
        let input = serde_json::from_str(&self.input.0).map_err(|_| corrupt("input"))?;
        let result = match &self.result {
            Some(text) => Some(serde_json::from_str(&text.0).map_err(|_| corrupt("result"))?),
            None => None,
        };
        let text = |t: Option<Text>| t.map(String::from);
        Ok(Task {
            id: self.id.0,
            kind: self.kind.0,
            status,
            owner: text(self.owner),
            image_id: text(self.image_id),
            request_id: text(self.request_id),
            user_id: text(self.user_id),
            input,
            result,
            message: self.message.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        })
    }
}

#[derive(Debug, FromRow)]
pub struct MemberRow {
    pub image_id: Text,
    pub member_id: Text,
    pub status: Text,
    pub created_at: i64,
    pub updated_at: i64,
}

impl MemberRow {
    pub fn into_member(self) -> Result<Member, DbError> {
        let status = MemberStatus::parse(&self.status.0).map_err(|_| {
            DbError::Corrupt(format!(
                "member {}: status {}",
                self.member_id.0, self.status.0
            ))
        })?;
        Ok(Member {
            image_id: self.image_id.0,
            member_id: self.member_id.0,
            status,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
