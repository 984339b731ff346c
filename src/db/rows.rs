//! Rows as SQLite stores them, and their conversion to and from domain types.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::FromRow;

use super::DbError;
use crate::domain::image::{Image, Status, Visibility};
use crate::domain::member::{Member, MemberStatus};

/// The columns of `images` a query selects, in this order.
pub const IMAGE_COLUMNS: &str = "i.id, i.name, i.status, i.visibility, i.protected, i.os_hidden, \
     i.checksum, i.os_hash_algo, i.os_hash_value, i.owner, i.size, i.virtual_size, i.min_ram, \
     i.min_disk, i.disk_format, i.container_format, i.created_at, i.updated_at";

#[derive(Debug, FromRow)]
pub struct ImageRow {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
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
    pub created_at: i64,
    pub updated_at: i64,
}

impl ImageRow {
    pub fn into_image(
        self,
        tags: BTreeSet<String>,
        properties: BTreeMap<String, String>,
    ) -> Result<Image, DbError> {
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
            protected: self.protected,
            os_hidden: self.os_hidden,
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
            tags,
            properties,
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
