//! The metadata repository: images, their properties, tags, members and locations, and
//! tasks, on SQLite, PostgreSQL or MariaDB/MySQL (`engine`: pools, migrations, dialect,
//! errors). Every statement is written once, with `?` placeholders, and runs on each engine
//! through `engine::read!` (bounded by the deadline) and `engine::write_tx!` (a transaction,
//! retried when another writer won). The interface speaks domain types only. The SQL of an
//! image list is built in `list` (`list_images` here runs it); the task queries are in
//! `tasks`.

mod copy;
mod engine;
mod list;
mod rows;
mod tasks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crate::domain::caller::Caller;
use crate::domain::image::{Image, Location, Status};
use crate::domain::member::{Member, MemberStatus};
use crate::domain::query::ListQuery;
use crate::domain::time::Timestamp;
pub use copy::{CopyError, TableCopy, copy};
pub use engine::{Engine, Settings};
use engine::{Pools, read, write_tx};
use rows::{ImageRow, MemberRow, Text};
pub use tasks::{TaskUpdate, TaskWrite};
use tasks::{insert_task, update_task};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Query(sqlx::Error),
    /// The database cannot answer now: down, restarting, out of connections, or slower than
    /// the deadline. Nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection went as COMMIT was sent: the change may have been made or not.
    #[error("database unavailable while committing: {0}")]
    CommitUnknown(String),
    /// Other writers won every retry.
    #[error("database: concurrent writers, retries exhausted: {0}")]
    Contention(sqlx::Error),
    /// The engine refused a value (too long for its column, not encodable).
    #[error("the database refused a value: {0}")]
    Invalid(String),
    #[error("a row with this key exists")]
    Duplicate,
    #[error("database holds an invalid row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        engine::classify(error)
    }
}

/// `Duplicate` for a unique-key violation, else what the error means.
fn duplicate_or(error: sqlx::Error) -> DbError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => DbError::Duplicate,
        _ => engine::classify(error),
    }
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

/// A node holding a claim on an image or a lease on a task, until a time (its lease is
/// renewed while it lives).
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub node: &'a str,
    pub until: Timestamp,
}

/// How often a transaction that lost to another writer runs again before the request
/// fails with 503.
const RETRIES: u32 = 8;

#[derive(Debug, Clone)]
pub struct Database {
    pools: Pools,
    engine: Engine,
    settings: Settings,
}

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

/// The schema state of the database (none applied if it does not exist yet), without
/// changing it. For `glint db version`.
pub async fn schema_state(settings: &Settings) -> Result<SchemaState, DbError> {
    let engine = Engine::of(&settings.url).ok_or_else(|| DbError::Open {
        url: settings.shown(),
        reason: "not a sqlite://, postgres:// or mysql:// URL".into(),
    })?;
    Ok(SchemaState {
        known: engine::known_migrations(engine),
        applied: engine::applied_migrations(settings).await?,
    })
}

/// Brings the database up to date (creating an SQLite file if needed), as every start
/// does; returns the versions this applied. For `glint db upgrade`.
pub async fn upgrade(settings: &Settings) -> Result<Vec<i64>, DbError> {
    let before = schema_state(settings).await?;
    let database = Database::open(settings).await?;
    database.close().await;
    Ok(before.pending().into_iter().map(|(v, _)| *v).collect())
}

impl Database {
    /// Opens the database's pools and brings its schema up to date.
    pub async fn open(settings: &Settings) -> Result<Database, DbError> {
        let (engine, pools) = engine::open(settings).await?;
        Ok(Database {
            pools,
            engine,
            settings: settings.clone(),
        })
    }

    /// What it was opened with: a generation whose settings are the same keeps it.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub async fn close(&self) {
        self.pools.close().await;
    }

    /// Whether the database answers now, within the deadline. For `/healthcheck` and
    /// before a reload commits to a generation.
    /// Bounded by `connect_timeout` (and a second): answering `SELECT 1` takes no time.
    pub async fn ping(&self) -> Result<(), DbError> {
        let limit = self.settings.connect_timeout + Duration::from_secs(1);
        let answer = async {
            read!(self, |pool, sql| {
                let _: i64 = sqlx::query_scalar(&sql("SELECT CAST(1 AS BIGINT)"))
                    .fetch_one(pool)
                    .await?;
            })
        };
        tokio::time::timeout(limit, answer)
            .await
            .unwrap_or_else(|_| Err(DbError::Unavailable(format!("no answer within {limit:?}"))))
    }

    /// How long one database call may take, waiting for a connection included, before it
    /// fails as unavailable: the engine's own statement timeout should have ended it.
    fn deadline(&self) -> Duration {
        self.settings.connect_timeout + self.settings.statement_timeout + Duration::from_secs(1)
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let deadline = self.deadline();
        match tokio::time::timeout(deadline, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DbError::Unavailable(format!(
                "no answer within {deadline:?}"
            ))),
        }
    }

    /// Runs a write transaction until it commits, or fails otherwise than by losing to
    /// another writer, or has lost `RETRIES` times. Backs off with jitter between tries.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, DbError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut lost = 0;
        loop {
            match self.bounded(attempt()).await {
                Err(DbError::Contention(e)) if lost < RETRIES => {
                    lost += 1;
                    tracing::debug!(error = %e, lost, "transaction lost to another writer; again");
                    let base = 2_u64.pow(lost.min(6));
                    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % base.max(1);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Inserts a new image with its tags and properties. `Duplicate` if the id was ever
    /// used, deleted images included.
    /// Should the connection go as it commits, the insert is settled by looking for the
    /// image once the database answers again (`settle`).
    pub async fn insert_image(&self, image: &Image) -> Result<(), DbError> {
        let outcome = self.write_image(image).await;
        self.settle(outcome, &image.id, image.updated_at, || ())
            .await
    }

    /// A write to image `id` that stamped it `written_at` and whose COMMIT lost its
    /// connection (`CommitUnknown`) is settled once the database answers again, within the
    /// deadline: the stamp there means it committed (`committed()`), another stamp that it
    /// did not (unavailable: a client told 503 finds nothing of it afterwards). Any other
    /// outcome is returned as it is.
    async fn settle<T>(
        &self,
        outcome: Result<T, DbError>,
        id: &str,
        written_at: Timestamp,
        committed: impl FnOnce() -> T,
    ) -> Result<T, DbError> {
        let Err(DbError::CommitUnknown(reason)) = outcome else {
            return outcome;
        };
        let deadline = tokio::time::Instant::now() + self.deadline();
        while tokio::time::Instant::now() < deadline {
            match self.updated_at_of(id).await {
                Ok(Some(at)) if at == written_at => return Ok(committed()),
                Ok(_) => return Err(DbError::Unavailable(reason)),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(DbError::CommitUnknown(reason))
    }

    async fn updated_at_of(&self, id: &str) -> Result<Option<Timestamp>, DbError> {
        read!(self, |pool, sql| {
            sqlx::query_scalar(&sql("SELECT updated_at FROM images WHERE id = ?"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        })
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

    /// Moves the image from `from` to `to` only if it is still in `from`, claimed by
    /// `holder`: of two racing uploads (on any nodes), exactly one gets `true`.
    pub async fn claim_image(
        &self,
        id: &str,
        from: &str,
        to: &str,
        holder: Holder<'_>,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        let outcome = write_tx!(self, |tx, sql| {
            let moved = sqlx::query(&sql(
                "UPDATE images SET status = ?, updated_at = ?, claimed_by = ?, \
                 claim_expires_at = ? WHERE id = ? AND status = ? AND deleted = 0",
            ))
            .bind(to)
            .bind(now)
            .bind(holder.node)
            .bind(holder.until)
            .bind(id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
            moved.rows_affected() == 1
        });
        self.settle(outcome, id, now, || true).await
    }

    /// Images whose upload was cut in `saving` go back to `queued` (their partial data is
    /// gone with the temporary files): those `node` held (a previous process of this node,
    /// at its start) and those whose holder's claim expired (a node that died). `uploading`
    /// is also a completed stage's status: the service tells those apart by their staged
    /// data.
    pub async fn requeue_interrupted(
        &self,
        node: Option<&str>,
        now: Timestamp,
    ) -> Result<u64, DbError> {
        let lock = self.row_lock();
        let requeued = write_tx!(self, |tx, sql| {
            let ids: Vec<Text> = sqlx::query_scalar(&sql(&format!(
                "SELECT id FROM images WHERE status = 'saving' AND deleted = 0 \
                 AND (claimed_by = ? OR claim_expires_at < ? \
                      OR (claimed_by IS NULL AND ? IS NOT NULL)){lock}"
            )))
            .bind(node)
            .bind(now)
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
            for Text(id) in &ids {
                sqlx::query(&sql(
                    "UPDATE images SET status = 'queued', size = NULL, virtual_size = NULL, \
                     checksum = NULL, os_hash_algo = NULL, os_hash_value = NULL, \
                     updated_at = ?, claimed_by = NULL, claim_expires_at = NULL \
                     WHERE id = ? AND status = 'saving'",
                ))
                .bind(now)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                sqlx::query(&sql("DELETE FROM image_locations WHERE image_id = ?"))
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            ids.len()
        })?;
        Ok(requeued as u64)
    }

    /// Stages held by a node whose claim expired (it died with the staged data on its
    /// disk): their images go back to `queued`, as a stage cut part-way does. Returns
    /// their ids.
    pub async fn requeue_abandoned_stages(&self, now: Timestamp) -> Result<Vec<String>, DbError> {
        let ids: Vec<Text> = write_tx!(self, |tx, sql| {
            let ids: Vec<Text> = sqlx::query_scalar(&sql(
                "SELECT id FROM images WHERE status = 'uploading' AND deleted = 0 \
                 AND claim_expires_at < ?",
            ))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for Text(id) in &ids {
                sqlx::query(&sql(
                    "UPDATE images SET status = 'queued', size = NULL, checksum = NULL, \
                     os_hash_algo = NULL, os_hash_value = NULL, updated_at = ?, \
                     claimed_by = NULL, claim_expires_at = NULL \
                     WHERE id = ? AND status = 'uploading' AND claim_expires_at < ?",
                ))
                .bind(now)
                .bind(id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            ids
        })?;
        Ok(ids.into_iter().map(String::from).collect())
    }

    /// Extends `holder.node`'s task leases, its completed stages' claims (the staged data
    /// is on its disk while it lives) and the claims of the uploads in `uploading` (those
    /// its transfers hold now) to `holder.until`. An upload claim not renewed expires.
    pub async fn renew(&self, holder: Holder<'_>, uploading: &[String]) -> Result<(), DbError> {
        let mut images = list::Statement::new(String::new());
        images
            .push("UPDATE images SET claim_expires_at = ")
            .push_bind(holder.until)
            .push(" WHERE claimed_by = ")
            .push_bind(holder.node)
            .push(" AND deleted = 0 AND (status = 'uploading'");
        if !uploading.is_empty() {
            images.push(" OR (status = 'saving' AND id IN (");
            for (i, id) in uploading.iter().enumerate() {
                if i > 0 {
                    images.push(", ");
                }
                images.push_bind(id.as_str());
            }
            images.push("))");
        }
        images.push(")");
        let images = &images;
        write_tx!(self, |tx, sql| {
            let text = sql(&images.text);
            bind_params!(sqlx::query(&text), images)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&sql(
                "UPDATE tasks SET lease_expires_at = ? WHERE lease_owner = ? \
                 AND status IN ('pending', 'processing')",
            ))
            .bind(holder.until)
            .bind(holder.node)
            .execute(&mut *tx)
            .await?;
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
                     os_hash_value = ?, virtual_size = NULL WHERE id = ?",
                ))
                .bind(data.size)
                .bind(&data.checksum)
                .bind(&data.os_hash_algo)
                .bind(&data.os_hash_value)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            let replaced = change.set_properties.iter().map(|(name, _)| *name);
            for name in change.remove_properties.iter().copied().chain(replaced) {
                sqlx::query(&sql(
                    "DELETE FROM image_properties WHERE image_id = ? AND name = ?",
                ))
                .bind(id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            }
            for (name, value) in &change.set_properties {
                sqlx::query(&sql(
                    "INSERT INTO image_properties (image_id, name, value) VALUES (?, ?, ?)",
                ))
                .bind(id)
                .bind(*name)
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

    /// ` FOR UPDATE` where the engine has it: SQLite has one writer at a time anyway.
    fn row_lock(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres | Engine::MySql => " FOR UPDATE",
        }
    }

    /// The live images in `status` that `node` holds (or that no node holds: a database
    /// from before nodes were recorded).
    pub async fn image_ids_held(&self, status: &str, node: &str) -> Result<Vec<String>, DbError> {
        let ids: Vec<Text> = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT id FROM images WHERE status = ? AND deleted = 0 \
                 AND (claimed_by IS NULL OR claimed_by = ?)",
            ))
            .bind(status)
            .bind(node)
            .fetch_all(pool)
            .await?
        })?;
        Ok(ids.into_iter().map(String::from).collect())
    }

    /// The node holding image `id`'s upload or stage, if one does.
    pub async fn claim_holder(&self, id: &str) -> Result<Option<String>, DbError> {
        let holder: Option<Option<Text>> = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT claimed_by FROM images WHERE id = ? AND deleted = 0",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        })?;
        Ok(holder.flatten().map(String::from))
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

    pub async fn member(&self, image_id: &str, member: &str) -> Result<Option<Member>, DbError> {
        let row: Option<MemberRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT image_id, member_id, status, created_at, updated_at FROM image_members \
                 WHERE image_id = ? AND member_id = ?",
            ))
            .bind(image_id)
            .bind(member)
            .fetch_optional(pool)
            .await?
        })?;
        row.map(MemberRow::into_member).transpose()
    }

    pub async fn members(&self, image_id: &str) -> Result<Vec<Member>, DbError> {
        let rows: Vec<MemberRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(
                "SELECT image_id, member_id, status, created_at, updated_at FROM image_members \
                 WHERE image_id = ? ORDER BY created_at, member_id",
            ))
            .bind(image_id)
            .fetch_all(pool)
            .await?
        })?;
        rows.into_iter().map(MemberRow::into_member).collect()
    }

    /// Adds a member unless it exists (`Duplicate`) or the image has `quota` members.
    /// Returns `Ok(false)` when the quota is reached. The image's row is locked first, so
    /// two nodes adding members at once cannot both pass the quota.
    pub async fn add_member(&self, member: &Member, quota: usize) -> Result<bool, DbError> {
        let lock = self.row_lock();
        write_tx!(self, |tx, sql| {
            let _: Option<Text> =
                sqlx::query_scalar(&sql(&format!("SELECT id FROM images WHERE id = ?{lock}")))
                    .bind(&member.image_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let count: i64 = sqlx::query_scalar(&sql(
                "SELECT COUNT(*) FROM image_members WHERE image_id = ?",
            ))
            .bind(&member.image_id)
            .fetch_one(&mut *tx)
            .await?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= quota {
                return Ok(false);
            }
            sqlx::query(&sql(
                "INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?)",
            ))
            .bind(&member.image_id)
            .bind(&member.member_id)
            .bind(member.status.as_str())
            .bind(member.created_at)
            .bind(member.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or)?;
            true
        })
    }

    pub async fn set_member_status(
        &self,
        image_id: &str,
        member: &str,
        status: MemberStatus,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let updated = sqlx::query(&sql("UPDATE image_members SET status = ?, updated_at = ? \
                 WHERE image_id = ? AND member_id = ?"))
            .bind(status.as_str())
            .bind(now)
            .bind(image_id)
            .bind(member)
            .execute(&mut *tx)
            .await?;
            updated.rows_affected() > 0
        })
    }

    pub async fn remove_member(&self, image_id: &str, member: &str) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            let deleted = sqlx::query(&sql(
                "DELETE FROM image_members WHERE image_id = ? AND member_id = ?",
            ))
            .bind(image_id)
            .bind(member)
            .execute(&mut *tx)
            .await?;
            deleted.rows_affected() > 0
        })
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

/// Writes an image's tags and (client) properties inside transaction `$tx`.
macro_rules! write_children {
    ($tx:ident, $sql:ident, $image:expr) => {
        for tag in &$image.tags {
            sqlx::query(&$sql(
                "INSERT INTO image_tags (image_id, value) VALUES (?, ?)",
            ))
            .bind(&$image.id)
            .bind(tag)
            .execute(&mut *$tx)
            .await
            .map_err(same_but_for_spaces)?;
        }
        for (name, value) in $image
            .properties
            .iter()
            .filter(|(name, _)| !is_service_property(name))
        {
            sqlx::query(&$sql(
                "INSERT INTO image_properties (image_id, name, value) VALUES (?, ?, ?)",
            ))
            .bind(&$image.id)
            .bind(name)
            .bind(value)
            .execute(&mut *$tx)
            .await
            .map_err(same_but_for_spaces)?;
        }
    };
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

/// Binds the parameters of a built statement (`list::Statement`) to a query of any kind.
macro_rules! bind_params {
    ($query:expr, $statement:expr) => {{
        let mut query = $query;
        for param in &$statement.params {
            query = match param {
                list::Param::Int(n) => query.bind(*n),
                list::Param::Text(text) => query.bind(Some(text.as_str())),
                list::Param::Null => query.bind(None::<&str>),
            };
        }
        query
    }};
}
use bind_params;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{self, SECOND};
    use sqlx::SqlitePool;
    use sqlx::sqlite::SqliteConnectOptions;

    /// A database an older glint wrote (whole-second timestamps) opens with its times
    /// intact: the migration to microseconds converts every stored time.
    #[tokio::test]
    async fn times_of_a_database_from_before_microseconds_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
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

        let db = Database::open(&Settings {
            url: format!("sqlite://{}", path.display()),
            max_connections: 1,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
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
