//! Images in the metadata repository: creating, saving (compare-and-set on the status a
//! client read), the targeted changes uploads and imports make (`ImageChange`, with a task
//! in the same transaction), deleting, reading one or a page (`list` builds its SQL), and
//! what a store or a project holds. Claims on images (which node's transfer holds one) are
//! `claims`'.

use std::path::Path;

use super::engine::{read, write_tx};
use super::rows::{self, ImageRow, Text};
use super::tasks::{insert_task, update_task};
use super::{Database, DbError, Engine, TaskWrite, bind_params, duplicate_or, list};
use crate::domain::caller::Caller;
use crate::domain::image::{Image, Location, Status};
use crate::domain::query::ListQuery;
use crate::domain::time::Timestamp;

/// A targeted change to one image: what an upload or an import writes as it goes, without
/// rewriting (and racing) what clients edit.
#[derive(Debug, Default)]
pub struct ImageChange {
    /// Write only if the image is in one of these statuses.
    pub expect_status: Option<&'static [&'static str]>,
    /// Write only if the image has no property of this name (the import lock).
    pub require_absent: Option<&'static str>,
    pub status: Option<Status>,
    pub data: Option<ImageData>,
    /// New `disk_format` and `container_format` (what an import's conversion made).
    pub formats: Option<(String, String)>,
    pub set_properties: Vec<(&'static str, String)>,
    /// Properties named by the operator's config (import's `inject_metadata`), set or
    /// replaced like `set_properties`.
    pub custom_properties: Vec<(String, String)>,
    pub remove_properties: Vec<&'static str>,
    pub clear_locations: bool,
    /// Stores whose locations go.
    pub remove_locations: Vec<String>,
    pub add_location: Option<Location>,
}

/// Size and hashes of an image's data (all `None` clears them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageData {
    pub size: Option<i64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// The disk's size as its format declares it.
    pub virtual_size: Option<i64>,
}

/// A project's usage of what Glance's unified limits limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectUsage {
    pub images: u64,
    pub stored_bytes: u64,
    pub uploading: u64,
    pub staged_bytes: u64,
}

impl Database {
    /// Inserts a new image with its tags and properties. `Duplicate` if the id was ever
    /// used, deleted images included.
    /// Should the connection go as it commits, the insert is settled by looking for the
    /// image once the database answers again (`settle`).
    pub async fn insert_image(&self, image: &Image) -> Result<(), DbError> {
        let outcome = self.write_image(image).await;
        self.settle(outcome, &image.id, image.updated_at, || ())
            .await
    }

    async fn write_image(&self, image: &Image) -> Result<(), DbError> {
        write_tx!(self, |tx, sql| {
            bind_attributes(
                sqlx::query(&sql(
                    "INSERT INTO images (name, status, visibility, protected, os_hidden, \
                     checksum, os_hash_algo, os_hash_value, owner, size, virtual_size, min_ram, \
                     min_disk, disk_format, container_format, created_at, updated_at, id) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )),
                image,
            )
            .bind(image.created_at)
            .bind(image.updated_at)
            .bind(&image.id)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            write_children!(tx, sql, image);
        })
    }

    /// Writes the attributes, tags and custom properties of an existing image read while
    /// it was in status `read_in`. `Ok(false)` if it is gone or its status moved meanwhile
    /// (an upload or import finished): the caller reads it again. Locations and the
    /// service's own `os_glance_*` properties are left alone; `change_image` writes those.
    pub async fn save_image(&self, image: &Image, read_in: Status) -> Result<bool, DbError> {
        let outcome = self.write_save(image, read_in).await;
        self.settle(outcome, &image.id, image.updated_at, || true)
            .await
    }

    async fn write_save(&self, image: &Image, read_in: Status) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let updated = bind_attributes(
                sqlx::query(&sql(
                    "UPDATE images SET name = ?, status = ?, visibility = ?, protected = ?, \
                     os_hidden = ?, checksum = ?, os_hash_algo = ?, os_hash_value = ?, \
                     owner = ?, size = ?, virtual_size = ?, min_ram = ?, min_disk = ?, \
                     disk_format = ?, container_format = ?, updated_at = ? \
                     WHERE id = ? AND deleted = 0 AND status = ?",
                )),
                image,
            )
            .bind(image.updated_at)
            .bind(&image.id)
            .bind(read_in.as_str())
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(&sql("DELETE FROM image_tags WHERE image_id = ?"))
                .bind(&image.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&sql(&format!(
                "DELETE FROM image_properties WHERE image_id = ? AND NOT {SERVICE_PROPERTY}"
            )))
            .bind(&image.id)
            .execute(&mut *tx)
            .await?;
            write_children!(tx, sql, image);
            true
        })
    }

    /// Applies `change` to image `id` and writes `task`, in one transaction. `Ok(false)`
    /// (and nothing written) if the image is gone or a precondition of `change` fails.
    /// The image's row is locked first, so that of two nodes changing one image the second
    /// sees what the first wrote.
    pub async fn change_image(
        &self,
        id: &str,
        change: &ImageChange,
        task: TaskWrite<'_>,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        let lock = self.row_lock();
        let outcome = write_tx!(self, |tx, sql| {
            let status: Option<Text> = sqlx::query_scalar(&sql(&format!(
                "SELECT status FROM images WHERE id = ? AND deleted = 0{lock}"
            )))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(Text(status)) = status else {
                return Ok(false);
            };
            if change
                .expect_status
                .is_some_and(|expected| !expected.contains(&status.as_str()))
            {
                return Ok(false);
            }
            if let Some(name) = change.require_absent {
                let present: Option<Text> = sqlx::query_scalar(&sql(
                    "SELECT value FROM image_properties WHERE image_id = ? AND name = ?",
                ))
                .bind(id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                if present.is_some() {
                    return Ok(false);
                }
            }
            sqlx::query(&sql(
                "UPDATE images SET status = COALESCE(?, status), updated_at = ? WHERE id = ?",
            ))
            .bind(change.status.map(Status::as_str))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if let Some(data) = &change.data {
                sqlx::query(&sql(
                    "UPDATE images SET size = ?, checksum = ?, os_hash_algo = ?, \
                     os_hash_value = ?, virtual_size = ? WHERE id = ?",
                ))
                .bind(data.size)
                .bind(&data.checksum)
                .bind(&data.os_hash_algo)
                .bind(&data.os_hash_value)
                .bind(data.virtual_size)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            if let Some((disk_format, container_format)) = &change.formats {
                sqlx::query(&sql(
                    "UPDATE images SET disk_format = ?, container_format = ? WHERE id = ?",
                ))
                .bind(disk_format)
                .bind(container_format)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            let set = || {
                let named = change
                    .set_properties
                    .iter()
                    .map(|(name, value)| (*name, value));
                let custom = change.custom_properties.iter();
                named.chain(custom.map(|(name, value)| (name.as_str(), value)))
            };
            let replaced = set().map(|(name, _)| name);
            for name in change.remove_properties.iter().copied().chain(replaced) {
                sqlx::query(&sql(
                    "DELETE FROM image_properties WHERE image_id = ? AND name = ?",
                ))
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
            for (name, value) in set() {
                sqlx::query(&sql(
                    "INSERT INTO image_properties (image_id, name, value) VALUES (?, ?, ?)",
                ))
                .bind(id)
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            if change.clear_locations {
                sqlx::query(&sql("DELETE FROM image_locations WHERE image_id = ?"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for store in &change.remove_locations {
                sqlx::query(&sql(
                    "DELETE FROM image_locations WHERE image_id = ? AND store = ?",
                ))
                .bind(id)
                .bind(store)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(location) = &change.add_location {
                // A store keeps its place in the order when its copy is replaced.
                let replaced = sqlx::query(&sql(
                    "UPDATE image_locations SET url = ? WHERE image_id = ? AND store = ?",
                ))
                .bind(&location.url)
                .bind(id)
                .bind(&location.store)
                .execute(&mut *tx)
                .await?;
                if replaced.rows_affected() == 0 {
                    let next: i64 = sqlx::query_scalar(&sql(
                        "SELECT CAST(COALESCE(MAX(position) + 1, 0) AS BIGINT) \
                         FROM image_locations WHERE image_id = ?",
                    ))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(&sql(
                        "INSERT INTO image_locations (image_id, store, url, position) \
                         VALUES (?, ?, ?, ?)",
                    ))
                    .bind(id)
                    .bind(&location.store)
                    .bind(&location.url)
                    .bind(next)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            match task {
                TaskWrite::None => {}
                TaskWrite::Insert(task, holder) => insert_task!(tx, sql, task, holder),
                TaskWrite::Update(update) => update_task!(tx, sql, update, now),
            }
            true
        });
        self.settle(outcome, id, now, || true).await
    }

    /// How many live images have data in store `store`.
    pub async fn images_in_store(&self, store: &str) -> Result<i64, DbError> {
        read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT COUNT(*) FROM image_locations l JOIN images i ON i.id = l.image_id \
                 WHERE i.deleted = 0 AND l.store = ?",
            ))
            .bind(store)
            .fetch_one(pool)
            .await?
        })
    }

    /// Bytes of image data a project's live images hold.
    pub async fn stored_by(&self, owner: &str) -> Result<u64, DbError> {
        let total: i64 = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM images i \
                 WHERE owner = ? AND deleted = 0 \
                 AND EXISTS (SELECT 1 FROM image_locations l WHERE l.image_id = i.id)",
            ))
            .bind(owner)
            .fetch_one(pool)
            .await?
        })?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// What a project uses, as Glance's unified limits count it: images, bytes of image
    /// data in stores, images with data on the way in, bytes staged.
    pub async fn usage(&self, owner: &str) -> Result<ProjectUsage, DbError> {
        let (images, stored, uploading, staged): (i64, i64, i64, i64) =
            read!(self, |pool, sql| {
                sqlx::query_as(&sql("SELECT COUNT(*), \
                 CAST(COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM image_locations l \
                     WHERE l.image_id = i.id) THEN size ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN status IN ('saving', 'uploading', 'importing') \
                     THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN status IN ('uploading', 'importing') \
                     AND NOT EXISTS (SELECT 1 FROM image_locations l WHERE l.image_id = i.id) \
                     THEN COALESCE(size, 0) ELSE 0 END), 0) AS BIGINT) \
                 FROM images i WHERE owner = ? AND deleted = 0"))
                .bind(owner)
                .fetch_one(pool)
                .await?
            })?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(ProjectUsage {
            images: count(images),
            stored_bytes: count(stored),
            uploading: count(uploading),
            staged_bytes: count(staged),
        })
    }

    /// How many live images keep their data under `dir`.
    pub async fn images_in(&self, dir: &Path) -> Result<i64, DbError> {
        // Every URL under `file://DIR/` sorts from that prefix up to `file://DIR0` ('0'
        // follows '/'), byte by byte as every engine here compares text.
        let from = format!("file://{}/", dir.display());
        let until = format!("file://{}0", dir.display());
        let (from, until) = (from.as_str(), until.as_str());
        read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT COUNT(*) FROM image_locations l JOIN images i ON i.id = l.image_id \
                 WHERE i.deleted = 0 AND l.url >= ? AND l.url < ?",
            ))
            .bind(from)
            .bind(until)
            .fetch_one(pool)
            .await?
        })
    }

    /// Marks the image deleted; its id stays taken. `Ok(false)` if it was already gone.
    pub async fn delete_image(&self, id: &str, now: Timestamp) -> Result<bool, DbError> {
        let outcome = write_tx!(self, |tx, sql| {
            let deleted = sqlx::query(&sql(
                "UPDATE images SET deleted = 1, deleted_at = ?, status = 'deleted', \
                 updated_at = ? WHERE id = ? AND deleted = 0",
            ))
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            for table in [
                "image_tags",
                "image_properties",
                "image_members",
                "image_locations",
            ] {
                sqlx::query(&sql(&format!("DELETE FROM {table} WHERE image_id = ?")))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            deleted.rows_affected() > 0
        });
        self.settle(outcome, id, now, || true).await
    }

    pub async fn get_image(&self, id: &str) -> Result<Option<Image>, DbError> {
        let image_json = rows::image_json(self.engine);
        let json: Option<String> = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(&format!(
                "SELECT {image_json} FROM images i WHERE i.id = ? AND i.deleted = 0"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        })?;
        match json {
            Some(json) => Ok(Some(parse::<ImageRow>(&json)?.into_image()?)),
            None => Ok(None),
        }
    }

    /// One page of the images `caller` may list, in `query`'s order, after `marker`.
    pub async fn list_images(
        &self,
        query: &ListQuery,
        caller: &Caller,
        marker: Option<&Image>,
    ) -> Result<Vec<Image>, DbError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let statement = list::page_query(self.engine, query, caller, marker);
        let statement = &statement;
        let rows: Vec<ImageRow> = match self.engine {
            // SQLite hands each row across threads: the page comes as one JSON array.
            Engine::Sqlite => {
                let json: String = read!(self, |pool, sql| {
                    let text = sql(&statement.text);
                    bind_params!(sqlx::query_scalar(&text), statement)
                        .fetch_one(pool)
                        .await?
                })?;
                parse(&json)?
            }
            Engine::Postgres | Engine::MySql => {
                let images: Vec<String> = read!(self, |pool, sql| {
                    let text = sql(&statement.text);
                    bind_params!(sqlx::query_scalar(&text), statement)
                        .fetch_all(pool)
                        .await?
                })?;
                images
                    .iter()
                    .map(|json| parse(json))
                    .collect::<Result<_, _>>()?
            }
        };
        rows.into_iter().map(ImageRow::into_image).collect()
    }
}

/// Binds the mutable attributes of an image, in the column order both the INSERT and the
/// UPDATE of `images` list them. Booleans are bound as 0/1, as every engine stores them.
fn bind_attributes<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    image: &'q Image,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(image.name.as_deref())
        .bind(image.status.as_str())
        .bind(image.visibility.as_str())
        .bind(i64::from(image.protected))
        .bind(i64::from(image.os_hidden))
        .bind(image.checksum.as_deref())
        .bind(image.os_hash_algo.as_deref())
        .bind(image.os_hash_value.as_deref())
        .bind(image.owner.as_deref())
        .bind(image.size)
        .bind(image.virtual_size)
        .bind(image.min_ram)
        .bind(image.min_disk)
        .bind(image.disk_format.as_deref())
        .bind(image.container_format.as_deref())
}

/// Writes an image's tags and (client) properties inside transaction `$tx`: one statement
/// per table, however many rows (the quotas keep them far below every engine's limit on
/// parameters).
macro_rules! write_children {
    ($tx:ident, $sql:ident, $image:expr) => {
        if !$image.tags.is_empty() {
            let statement = rows_insert("image_tags (image_id, value)", 2, $image.tags.len());
            let statement = $sql(&statement);
            let mut query = sqlx::query(&statement);
            for tag in &$image.tags {
                query = query.bind(&$image.id).bind(tag);
            }
            query
                .execute(&mut *$tx)
                .await
                .map_err(same_but_for_spaces)?;
        }
        let properties: Vec<(&String, &String)> = $image
            .properties
            .iter()
            .filter(|(name, _)| !is_service_property(name))
            .collect();
        if !properties.is_empty() {
            let statement = rows_insert(
                "image_properties (image_id, name, value)",
                3,
                properties.len(),
            );
            let statement = $sql(&statement);
            let mut query = sqlx::query(&statement);
            for (name, value) in properties {
                query = query.bind(&$image.id).bind(name).bind(value);
            }
            query
                .execute(&mut *$tx)
                .await
                .map_err(same_but_for_spaces)?;
        }
    };
}

/// `INSERT INTO {table} VALUES (?, …), …`: `rows` rows of `columns` placeholders.
fn rows_insert(table: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    format!("INSERT INTO {table} VALUES {}", vec![row; rows].join(", "))
}
use write_children;

/// Tags and property names are distinct by then; MySQL's `utf8mb4_bin` still compares
/// `a` and `a ` as equal (it pads with spaces), so there two such keys are refused.
fn same_but_for_spaces(error: sqlx::Error) -> DbError {
    match duplicate_or(error) {
        DbError::Duplicate => DbError::Invalid(
            "two tags or property names differ only by trailing spaces, which this database \
             compares as equal"
                .into(),
        ),
        other => other,
    }
}

/// Properties only the service writes (`os_glance_*`, Glance's reserved namespace): a
/// client's save never overwrites them, so a PATCH cannot undo an import's progress.
/// (`substr`, not `LIKE`: the same, case-sensitive, on every engine.)
const SERVICE_PROPERTY: &str = "substr(name, 1, 10) = 'os_glance_'";

fn is_service_property(name: &str) -> bool {
    name.starts_with("os_glance_")
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, DbError> {
    serde_json::from_str(json).map_err(|e| DbError::Corrupt(format!("image JSON: {e}")))
}
