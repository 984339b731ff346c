//! Rows as SQLite stores them, and their conversion to domain types. Images are read as
//! JSON that SQLite assembles (`IMAGE_JSON`): one value per page instead of a row per image
//! and per tag and property, since sqlx hands each row across threads.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sqlx::FromRow;

use super::DbError;
use crate::domain::image::{Image, Location, Status, Visibility};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::task::{Task, TaskStatus};

/// One image of alias `i` as a JSON object, with its tags and properties.
pub const IMAGE_JSON: &str = "json_object('id', i.id, 'name', i.name, 'status', i.status, \
     'visibility', i.visibility, 'protected', i.protected, 'os_hidden', i.os_hidden, \
     'checksum', i.checksum, 'os_hash_algo', i.os_hash_algo, 'os_hash_value', i.os_hash_value, \
     'owner', i.owner, 'size', i.size, 'virtual_size', i.virtual_size, 'min_ram', i.min_ram, \
     'min_disk', i.min_disk, 'disk_format', i.disk_format, 'container_format', i.container_format, \
     'created_at', i.created_at, 'updated_at', i.updated_at, \
     'locations', json((SELECT json_group_array(json_object('store', l.store, 'url', l.url)) \
                        FROM (SELECT * FROM image_locations l WHERE l.image_id = i.id \
                              ORDER BY l.position, l.store) l)), \
     'tags', json((SELECT json_group_array(t.value) FROM image_tags t WHERE t.image_id = i.id)), \
     'properties', json((SELECT json_group_object(p.name, p.value) FROM image_properties p \
                         WHERE p.image_id = i.id)))";

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
            locations: self
                .locations
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
}

pub const TASK_COLUMNS: &str = "id, type, status, owner, image_id, request_id, user_id, input, \
     result, message, created_at, updated_at, expires_at";

#[derive(Debug, FromRow)]
pub struct TaskRow {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub status: String,
    pub owner: Option<String>,
    pub image_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub input: String,
    pub result: Option<String>,
    pub message: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
}

impl TaskRow {
    pub fn into_task(self) -> Result<Task, DbError> {
        let corrupt = |what: &str| DbError::Corrupt(format!("task {}: {what}", self.id));
        let status = TaskStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?;
        let input = serde_json::from_str(&self.input).map_err(|_| corrupt("input"))?;
        let result = match &self.result {
            Some(text) => Some(serde_json::from_str(text).map_err(|_| corrupt("result"))?),
            None => None,
        };
        Ok(Task {
            id: self.id,
            kind: self.kind,
            status,
            owner: self.owner,
            image_id: self.image_id,
            request_id: self.request_id,
            user_id: self.user_id,
            input,
            result,
            message: self.message,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        })
    }
}

#[derive(Debug, FromRow)]
pub struct MemberRow {
    pub image_id: String,
    pub member: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl MemberRow {
    pub fn into_member(self) -> Result<Member, DbError> {
        let status = MemberStatus::parse(&self.status).map_err(|_| {
            DbError::Corrupt(format!("member {}: status {}", self.member, self.status))
        })?;
        Ok(Member {
            image_id: self.image_id,
            member_id: self.member,
            status,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
