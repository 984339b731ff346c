//! The metadata repository: images, their properties, tags and members, over sqlx and
//! SQLite (WAL, migrations embedded and run when a pool opens). Reads go through a pool;
//! writes through a single connection, so concurrent writers queue instead of failing
//! with "database is locked". The interface speaks domain types only. The SQL of an image
//! list is built in `list` (`list_images` here runs it); the task queries are in `tasks`.

mod list;
mod rows;
mod tasks;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::domain::caller::Caller;
use crate::domain::image::{Image, Location, Status};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::query::ListQuery;
use crate::domain::time::Timestamp;
use rows::{IMAGE_JSON, ImageRow, MemberRow};
pub use tasks::{TaskUpdate, TaskWrite};
use tasks::{insert_task, update_task};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {}: {source}", path.display())]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("a row with this key exists")]
    Duplicate,
    #[error("database holds an invalid row: {0}")]
    Corrupt(String),
}

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
    pub set_properties: Vec<(&'static str, String)>,
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
}

/// A project's usage of what Glance's unified limits limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectUsage {
    pub images: u64,
    pub stored_bytes: u64,
    pub uploading: u64,
    pub staged_bytes: u64,
}

/// How long a statement waits for a lock before failing: long enough that only a stuck
/// database, never ordinary contention, reaches it.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Database {
    read: SqlitePool,
    write: SqlitePool,
    path: PathBuf,
}

/// The schema migrations, embedded from `migrations/`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Where a database's schema stands against the migrations this binary carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// `(version, description)` of every migration the binary has, applied or not.
    pub known: Vec<(i64, String)>,
    /// The versions applied to the database.
    pub applied: Vec<i64>,
}

impl SchemaState {
    pub fn pending(&self) -> Vec<&(i64, String)> {
        self.known
            .iter()
            .filter(|(version, _)| !self.applied.contains(version))
            .collect()
    }
}

fn known_migrations() -> Vec<(i64, String)> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}

/// The schema state of the SQLite database at `path` (none applied if it does not exist
/// yet), without changing it. For `glint db version`.
pub async fn schema_state(path: &Path) -> Result<SchemaState, DbError> {
    let mut applied = Vec::new();
    if path.exists() {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&pool)
        .await?;
        if table.is_some() {
            applied = sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success = 1 ORDER BY version",
            )
            .fetch_all(&pool)
            .await?;
        }
        pool.close().await;
    }
    Ok(SchemaState {
        known: known_migrations(),
        applied,
    })
}

/// Brings the database at `path` up to date (creating it if needed), as every start does;
/// returns the versions this applied. For `glint db upgrade`.
pub async fn upgrade(path: &Path) -> Result<Vec<i64>, DbError> {
    let before = schema_state(path).await?;
    let database = Database::open(path, 1).await?;
    database.read.close().await;
    database.write.close().await;
    Ok(before.pending().into_iter().map(|(v, _)| *v).collect())
}

impl Database {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, readers: u32) -> Result<Database, DbError> {
        let open_error = |source| DbError::Open {
            path: path.to_path_buf(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .connect_with(options.read_only(true))
            .await
            .map_err(open_error)?;
        Ok(Database {
            read,
            write,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts a new image with its tags and properties. `Duplicate` if the id was ever
    /// used, deleted images included.
    pub async fn insert_image(&self, image: &Image) -> Result<(), DbError> {
        let mut tx = self.write.begin().await?;
        let inserted = bind_attributes(
            sqlx::query(
                "INSERT INTO images (name, status, visibility, protected, os_hidden, checksum, \
                 os_hash_algo, os_hash_value, owner, size, virtual_size, min_ram, min_disk, \
                 disk_format, container_format, created_at, updated_at, id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO NOTHING",
            ),
            image,
        )
        .bind(image.created_at)
        .bind(image.updated_at)
        .bind(&image.id)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DbError::Duplicate);
        }
        write_children(&mut tx, image).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes the attributes, tags and custom properties of an existing image read while
    /// it was in status `read_in`. `Ok(false)` if it is gone or its status moved meanwhile
    /// (an upload or import finished): the caller reads it again. Locations and the
    /// service's own `os_glance_*` properties are left alone; `change_image` writes those.
    pub async fn save_image(&self, image: &Image, read_in: Status) -> Result<bool, DbError> {
        let mut tx = self.write.begin().await?;
        let updated = bind_attributes(
            sqlx::query(
                "UPDATE images SET name = ?, status = ?, visibility = ?, protected = ?, \
                 os_hidden = ?, checksum = ?, os_hash_algo = ?, os_hash_value = ?, owner = ?, \
                 size = ?, virtual_size = ?, min_ram = ?, min_disk = ?, disk_format = ?, \
                 container_format = ?, updated_at = ? WHERE id = ? AND deleted = 0 AND status = ?",
            ),
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
        sqlx::query("DELETE FROM image_tags WHERE image_id = ?")
            .bind(&image.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "DELETE FROM image_properties WHERE image_id = ? AND NOT {SERVICE_PROPERTY}"
        ))
        .bind(&image.id)
        .execute(&mut *tx)
        .await?;
        write_children(&mut tx, image).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves the image from `from` to `to` only if it is still in `from`: of two racing
    /// uploads, exactly one gets `true`.
    pub async fn transition(
        &self,
        id: &str,
        from: &str,
        to: &str,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        let moved = sqlx::query(
            "UPDATE images SET status = ?, updated_at = ? WHERE id = ? AND status = ? AND deleted = 0",
        )
        .bind(to)
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&self.write)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    /// Images whose upload a dead process left in `saving` go back to `queued` (their
    /// partial data is gone with the process's temporary files). `uploading` is also a
    /// completed stage's status: the service tells those apart by their staged data.
    pub async fn requeue_interrupted(&self, now: Timestamp) -> Result<u64, DbError> {
        let mut tx = self.write.begin().await?;
        let requeued = sqlx::query(
            "UPDATE images SET status = 'queued', size = NULL, virtual_size = NULL, \
             checksum = NULL, os_hash_algo = NULL, os_hash_value = NULL, updated_at = ? \
             WHERE status = 'saving' AND deleted = 0",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM image_locations WHERE image_id IN \
             (SELECT id FROM images WHERE status = 'queued' AND deleted = 0)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(requeued.rows_affected())
    }

    /// Applies `change` to image `id` and writes `task`, in one transaction. `Ok(false)`
    /// (and nothing written) if the image is gone or a precondition of `change` fails.
    pub async fn change_image(
        &self,
        id: &str,
        change: &ImageChange,
        task: TaskWrite<'_>,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        let mut tx = self.write.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM images WHERE id = ? AND deleted = 0")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(status) = status else {
            return Ok(false);
        };
        if change
            .expect_status
            .is_some_and(|expected| !expected.contains(&status.as_str()))
        {
            return Ok(false);
        }
        if let Some(name) = change.require_absent {
            let present: Option<String> = sqlx::query_scalar(
                "SELECT value FROM image_properties WHERE image_id = ? AND name = ?",
            )
            .bind(id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if present.is_some() {
                return Ok(false);
            }
        }
        sqlx::query("UPDATE images SET status = COALESCE(?, status), updated_at = ? WHERE id = ?")
            .bind(change.status.map(Status::as_str))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(data) = &change.data {
            sqlx::query(
                "UPDATE images SET size = ?, checksum = ?, os_hash_algo = ?, os_hash_value = ?, \
                 virtual_size = NULL WHERE id = ?",
            )
            .bind(data.size)
            .bind(&data.checksum)
            .bind(&data.os_hash_algo)
            .bind(&data.os_hash_value)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        for name in &change.remove_properties {
            sqlx::query("DELETE FROM image_properties WHERE image_id = ? AND name = ?")
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        for (name, value) in &change.set_properties {
            sqlx::query(
                "INSERT INTO image_properties (image_id, name, value) VALUES (?, ?, ?) \
                 ON CONFLICT (image_id, name) DO UPDATE SET value = excluded.value",
            )
            .bind(id)
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        }
        if change.clear_locations {
            sqlx::query("DELETE FROM image_locations WHERE image_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for store in &change.remove_locations {
            sqlx::query("DELETE FROM image_locations WHERE image_id = ? AND store = ?")
                .bind(id)
                .bind(store)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(location) = &change.add_location {
            sqlx::query(
                "INSERT INTO image_locations (image_id, store, url, position) VALUES (?, ?, ?, \
                 (SELECT COALESCE(MAX(position) + 1, 0) FROM image_locations WHERE image_id = ?)) \
                 ON CONFLICT (image_id, store) DO UPDATE SET url = excluded.url",
            )
            .bind(id)
            .bind(&location.store)
            .bind(&location.url)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        match task {
            TaskWrite::None => {}
            TaskWrite::Insert(task) => insert_task(&mut tx, task).await?,
            TaskWrite::Update(update) => update_task(&mut tx, update, now).await?,
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The live images in `status`.
    pub async fn image_ids_in(&self, status: &str) -> Result<Vec<String>, DbError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM images WHERE status = ? AND deleted = 0")
                .bind(status)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// How many live images have data in store `store`.
    pub async fn images_in_store(&self, store: &str) -> Result<i64, DbError> {
        let count = sqlx::query_scalar(
            "SELECT COUNT(*) FROM image_locations l JOIN images i ON i.id = l.image_id \
             WHERE i.deleted = 0 AND l.store = ?",
        )
        .bind(store)
        .fetch_one(&self.read)
        .await?;
        Ok(count)
    }

    /// Bytes of image data a project's live images hold.
    pub async fn stored_by(&self, owner: &str) -> Result<u64, DbError> {
        let total: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size), 0) FROM images i WHERE owner = ? AND deleted = 0 \
             AND EXISTS (SELECT 1 FROM image_locations l WHERE l.image_id = i.id)",
        )
        .bind(owner)
        .fetch_one(&self.read)
        .await?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// What a project uses, as Glance's unified limits count it: images, bytes of image
    /// data in stores, images with data on the way in, bytes staged.
    pub async fn usage(&self, owner: &str) -> Result<ProjectUsage, DbError> {
        let (images, stored, uploading, staged): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), \
             COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM image_locations l \
                 WHERE l.image_id = i.id) THEN size ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN status IN ('saving', 'uploading', 'importing') \
                 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN status IN ('uploading', 'importing') \
                 AND NOT EXISTS (SELECT 1 FROM image_locations l WHERE l.image_id = i.id) \
                 THEN COALESCE(size, 0) ELSE 0 END), 0) \
             FROM images i WHERE owner = ? AND deleted = 0",
        )
        .bind(owner)
        .fetch_one(&self.read)
        .await?;
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
        let prefix = format!("file://{}/", dir.display());
        let count = sqlx::query_scalar(
            "SELECT COUNT(*) FROM image_locations l JOIN images i ON i.id = l.image_id \
             WHERE i.deleted = 0 AND substr(l.url, 1, length(?)) = ?",
        )
        .bind(&prefix)
        .bind(&prefix)
        .fetch_one(&self.read)
        .await?;
        Ok(count)
    }

    /// Marks the image deleted; its id stays taken. `Ok(false)` if it was already gone.
    pub async fn delete_image(&self, id: &str, now: Timestamp) -> Result<bool, DbError> {
        let mut tx = self.write.begin().await?;
        let deleted = sqlx::query(
            "UPDATE images SET deleted = 1, deleted_at = ?, status = 'deleted', updated_at = ? \
             WHERE id = ? AND deleted = 0",
        )
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
            sqlx::query(&format!("DELETE FROM {table} WHERE image_id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    pub async fn get_image(&self, id: &str) -> Result<Option<Image>, DbError> {
        let json: Option<String> = sqlx::query_scalar(&format!(
            "SELECT {IMAGE_JSON} FROM images i WHERE i.id = ? AND i.deleted = 0"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
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
        let mut sql = list::page_query(query, caller, marker);
        let json: String = sql.build_query_scalar().fetch_one(&self.read).await?;
        parse::<Vec<ImageRow>>(&json)?
            .into_iter()
            .map(ImageRow::into_image)
            .collect()
    }

    pub async fn member(&self, image_id: &str, member: &str) -> Result<Option<Member>, DbError> {
        let row: Option<MemberRow> = sqlx::query_as(
            "SELECT image_id, member, status, created_at, updated_at FROM image_members \
             WHERE image_id = ? AND member = ?",
        )
        .bind(image_id)
        .bind(member)
        .fetch_optional(&self.read)
        .await?;
        row.map(MemberRow::into_member).transpose()
    }

    pub async fn members(&self, image_id: &str) -> Result<Vec<Member>, DbError> {
        let rows: Vec<MemberRow> = sqlx::query_as(
            "SELECT image_id, member, status, created_at, updated_at FROM image_members \
             WHERE image_id = ? ORDER BY created_at, member",
        )
        .bind(image_id)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(MemberRow::into_member).collect()
    }

    /// Adds a member unless it exists (`Duplicate`) or the image has `quota` members.
    /// Returns `Ok(false)` when the quota is reached.
    pub async fn add_member(&self, member: &Member, quota: usize) -> Result<bool, DbError> {
        let mut tx = self.write.begin().await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM image_members WHERE image_id = ?")
                .bind(&member.image_id)
                .fetch_one(&mut *tx)
                .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= quota {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO image_members (image_id, member, status, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (image_id, member) DO NOTHING",
        )
        .bind(&member.image_id)
        .bind(&member.member_id)
        .bind(member.status.as_str())
        .bind(member.created_at)
        .bind(member.updated_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DbError::Duplicate);
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn set_member_status(
        &self,
        image_id: &str,
        member: &str,
        status: MemberStatus,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        let updated = sqlx::query(
            "UPDATE image_members SET status = ?, updated_at = ? WHERE image_id = ? AND member = ?",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(image_id)
        .bind(member)
        .execute(&self.write)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    pub async fn remove_member(&self, image_id: &str, member: &str) -> Result<bool, DbError> {
        let deleted = sqlx::query("DELETE FROM image_members WHERE image_id = ? AND member = ?")
            .bind(image_id)
            .bind(member)
            .execute(&self.write)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }
}

type Statement<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds the mutable attributes of an image, in the column order both the INSERT and the
/// UPDATE of `images` list them.
fn bind_attributes<'q>(query: Statement<'q>, image: &'q Image) -> Statement<'q> {
    query
        .bind(&image.name)
        .bind(image.status.as_str())
        .bind(image.visibility.as_str())
        .bind(image.protected)
        .bind(image.os_hidden)
        .bind(&image.checksum)
        .bind(&image.os_hash_algo)
        .bind(&image.os_hash_value)
        .bind(&image.owner)
        .bind(image.size)
        .bind(image.virtual_size)
        .bind(image.min_ram)
        .bind(image.min_disk)
        .bind(&image.disk_format)
        .bind(&image.container_format)
}

async fn write_children(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    image: &Image,
) -> Result<(), DbError> {
    for tag in &image.tags {
        sqlx::query("INSERT INTO image_tags (image_id, value) VALUES (?, ?)")
            .bind(&image.id)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    for (name, value) in image
        .properties
        .iter()
        .filter(|(name, _)| !is_service_property(name))
    {
        sqlx::query("INSERT INTO image_properties (image_id, name, value) VALUES (?, ?, ?)")
            .bind(&image.id)
            .bind(name)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Properties only the service writes (`os_glance_*`, Glance's reserved namespace): a
/// client's save never overwrites them, so a PATCH cannot undo an import's progress.
const SERVICE_PROPERTY: &str = "name LIKE 'os\\_glance\\_%' ESCAPE '\\'";

fn is_service_property(name: &str) -> bool {
    name.starts_with("os_glance_")
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, DbError> {
    serde_json::from_str(json).map_err(|e| DbError::Corrupt(format!("image JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{self, SECOND};

    /// A database an older glint wrote (whole-second timestamps) opens with its times
    /// intact: the migration to microseconds converts every stored time.
    #[tokio::test]
    async fn times_of_a_database_from_before_microseconds_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for entry in std::fs::read_dir(&migrations).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().as_ref() < "20261127000001" {
                std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
            }
        }
        let path = dir.path().join("glint.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        let seconds = 1_448_835_702_i64;
        for statement in [
            "INSERT INTO images (id, status, visibility, created_at, updated_at) \
             VALUES ('a', 'active', 'shared', ?1, ?1 + 1)",
            "INSERT INTO image_members (image_id, member, status, created_at, updated_at) \
             VALUES ('a', 'p2', 'pending', ?1, ?1)",
            "INSERT INTO tasks (id, type, status, input, created_at, updated_at, expires_at) \
             VALUES ('t', 'api_image_import', 'success', '{}', ?1, ?1, ?1 + 172800)",
        ] {
            sqlx::query(statement)
                .bind(seconds)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let db = Database::open(&path, 1).await.unwrap();
        let image = db.get_image("a").await.unwrap().unwrap();
        assert_eq!(image.created_at, seconds * SECOND);
        assert_eq!(image.updated_at, (seconds + 1) * SECOND);
        assert_eq!(time::format(image.created_at), "2015-11-29T22:21:42Z");
        let members = db.members("a").await.unwrap();
        assert_eq!(members[0].created_at, seconds * SECOND);
        let task = db.get_task("t").await.unwrap().unwrap();
        assert_eq!(task.created_at, seconds * SECOND);
        assert_eq!(task.expires_at, Some((seconds + 172_800) * SECOND));
    }
}
