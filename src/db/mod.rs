//! The metadata repository: images, their properties, tags, members and locations, and
//! tasks, on SQLite, PostgreSQL or MariaDB/MySQL (`engine`: pools, migrations, dialect,
//! errors). Every statement is written once, with `?` placeholders, and runs on each engine
//! through `engine::read!` (bounded by the deadline) and `engine::write_tx!` (a transaction,
//! retried when another writer won). The interface speaks domain types only. Here: the
//! `Database` itself (open, deadline, retries, settling a commit whose answer was lost) and
//! the schema's state; the queries live by subject in `images` (with `list`, which builds a
//! page's SQL), `claims`, `members` and `tasks`; `copy` copies a catalogue between
//! databases.

mod claims;
mod commits;
mod copy;
mod engine;
mod images;
mod list;
mod members;
mod metadefs;
mod rows;
mod tasks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::time::Timestamp;

pub use claims::Holder;
pub use commits::CommitMarker;
pub use copy::{CopyError, TableCopy, copy};
pub use engine::{Engine, PoolStats, Settings};
use engine::{Pools, read, write_tx};
pub use images::{ImageChange, ImageData, ProjectUsage};
pub use metadefs::{CreateRefused, DefinitionOrTag, LoadMode, Loaded, NewContents};
pub use tasks::{TaskUpdate, TaskWrite};

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

/// How often a transaction that lost to another writer runs again before the request
/// fails with 503.
const RETRIES: u32 = 8;

#[derive(Debug, Clone)]
pub struct Database {
    pools: Pools,
    engine: Engine,
    settings: Settings,
    /// The commit marker, asked once for the lists waiting at that moment (`commit_marker`).
    commit_marker: Arc<commits::SharedMarker>,
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
    let engine = engine::engine_of(settings)?;
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
            commit_marker: Arc::default(),
        })
    }

    /// What it was opened with: a generation whose settings are the same keeps it.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Its pools' connections now.
    pub fn pool_stats(&self) -> PoolStats {
        self.pools.stats()
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

    /// A value that changes with every commit to the catalogue's images, by this process
    /// or any other: SQLite's `data_version` (with the count of connections it was asked
    /// on), the servers' count of such commits (`catalogue_commits`, kept by triggers);
    /// `None` when it cannot be asked now. A read that starts after it changed sees the
    /// commit that changed it.
    pub async fn commit_marker(&self) -> Option<CommitMarker> {
        let ask = || async {
            let counted = match &self.pools {
                engine::Pools::Sqlite { version, .. } => return version.marker().await,
                engine::Pools::Postgres(pool) => {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT COALESCE(SUM(n), 0)::BIGINT FROM catalogue_commits",
                    )
                    .fetch_one(pool)
                    .await
                }
                engine::Pools::MySql(pool) => {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM catalogue_commits",
                    )
                    .fetch_one(pool)
                    .await
                }
            };
            counted
                .map(|commits| CommitMarker::new(0, commits))
                .map_err(|e| tracing::debug!(error = %e, "catalogue_commits not answered"))
                .ok()
        };
        let asked = self.commit_marker.marker(ask);
        tokio::time::timeout(self.settings.statement_timeout, asked)
            .await
            .ok()?
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

    /// A write to image `id` that stamped it `written_at` and whose COMMIT lost its
    /// connection (`CommitUnknown`) is settled once the database answers again, within the
    /// deadline: the stamp there means it committed (`committed()`), another stamp that it
    /// did not (unavailable: a client told 503 finds nothing of it afterwards). Any other
    /// outcome is returned as it is.
    ///
    /// The stamp is read with the row's lock (`committed_stamp_of`): a server shutting down
    /// finishes a COMMIT it has begun after it has closed that client's connection, and a
    /// plain read on another connection could come before the commit shows and call it lost
    /// (seen on MariaDB). The lock waits for that transaction to end either way.
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
            match self.committed_stamp_of(id).await {
                Ok(Some(at)) if at == written_at => return Ok(committed()),
                Ok(_) => return Err(DbError::Unavailable(reason)),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(DbError::CommitUnknown(reason))
    }

    /// Image `id`'s `updated_at`, read under the row's lock, so after any transaction that
    /// holds it (an update's row lock, an insert's record lock on InnoDB) has ended.
    /// PostgreSQL's `FOR UPDATE` does not wait for a row another transaction is still
    /// inserting: there, an insert settled at that very moment reads as not committed.
    async fn committed_stamp_of(&self, id: &str) -> Result<Option<Timestamp>, DbError> {
        let lock = self.row_lock();
        write_tx!(self, |tx, sql| {
            sqlx::query_scalar(&sql(&format!(
                "SELECT updated_at FROM images WHERE id = ?{lock}"
            )))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        })
    }

    /// ` FOR UPDATE` where the engine has it: SQLite has one writer at a time anyway.
    fn row_lock(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite => "",
            Engine::Postgres | Engine::MySql => " FOR UPDATE",
        }
    }
}

/// Binds the parameters of a built statement (`list::Statement`) to a query of any kind.
macro_rules! bind_params {
    ($query:expr, $statement:expr) => {{
        let mut query = $query;
        for param in &$statement.params {
            query = match param {
                $crate::db::list::Param::Int(n) => query.bind(*n),
                $crate::db::list::Param::Text(text) => query.bind(Some(text.as_str())),
                $crate::db::list::Param::Null => query.bind(None::<&str>),
            };
        }
        query
    }};
}
pub(crate) use bind_params;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{self, SECOND};
    use sqlx::SqlitePool;
    use sqlx::sqlite::SqliteConnectOptions;
    use std::path::Path;

    /// A fresh database on the server `TEST_DATABASE_SERVER` names, else SQLite in `dir`.
    async fn test_database(dir: &Path) -> Database {
        let url = match crate::db::testing::fresh_database().await.unwrap() {
            Some(url) => url,
            None => format!("sqlite://{}", dir.join("glint.db").display()),
        };
        Database::open(&Settings {
            url,
            max_connections: 4,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap()
    }

    /// The commit marker on the engine `TEST_DATABASE_SERVER` names (else SQLite): the same
    /// while nothing is committed, also while a write is under way in another transaction,
    /// and moved once it commits: by any write to the images or what is listed with them,
    /// however it was made.
    #[tokio::test]
    async fn the_commit_marker_moves_with_each_commit_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_database(dir.path()).await;
        let db = &db;
        let first = db.commit_marker().await.expect("a marker");
        assert_eq!(db.commit_marker().await, Some(first), "nothing committed");
        let (began, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let (began, release) = (&began, &release);
        let writer = async {
            write_tx!(db, |tx, sql| {
                sqlx::query(&sql(
                    "INSERT INTO images (id, status, visibility, created_at, updated_at) \
                     VALUES ('a', 'queued', 'shared', 1, 1)",
                ))
                .execute(&mut *tx)
                .await?;
                began.notify_one();
                release.notified().await;
            })
        };
        let reader = async {
            began.notified().await;
            let during = db.commit_marker().await;
            release.notify_one();
            during
        };
        let (written, during) = tokio::join!(writer, reader);
        written.unwrap();
        assert_eq!(during, Some(first), "a write not committed yet");
        let second = db.commit_marker().await.expect("a marker");
        assert_ne!(second, first, "moved by the commit");
        write_tx!(db, |tx, sql| {
            sqlx::query(&sql(
                "INSERT INTO image_tags (image_id, value) VALUES ('a', 't')",
            ))
            .execute(&mut *tx)
            .await?;
        })
        .unwrap();
        assert_ne!(
            db.commit_marker().await,
            Some(second),
            "a tag is listed too"
        );
    }

    /// A write whose COMMIT lost its connection is settled only once the transaction that
    /// holds the image's row has ended: here that transaction is still open (as on a server
    /// that finishes a commit after closing the connection), so `settle` must wait for it,
    /// and then find the stamp and call the write committed. A plain read would have found
    /// the old stamp and answered "not committed" for a write that then landed. On the
    /// server `TEST_DATABASE_SERVER` names, else SQLite.
    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_is_settled_after_its_transaction_ends() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_database(dir.path()).await;
        let db = &db;
        let (before, written) = (1_000 * SECOND, 2_000 * SECOND);
        write_tx!(db, |tx, sql| {
            sqlx::query(&sql(
                "INSERT INTO images (id, status, visibility, created_at, updated_at) \
                 VALUES ('a', 'queued', 'shared', ?, ?)",
            ))
            .bind(before)
            .bind(before)
            .execute(&mut *tx)
            .await?;
        })
        .unwrap();

        let (began, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let (began, release) = (&began, &release);
        let writer = async {
            write_tx!(db, |tx, sql| {
                sqlx::query(&sql("UPDATE images SET updated_at = ? WHERE id = 'a'"))
                    .bind(written)
                    .execute(&mut *tx)
                    .await?;
                began.notify_one();
                release.notified().await;
            })
        };
        let settling = async {
            began.notified().await;
            let lost = Err(DbError::CommitUnknown("connection lost at COMMIT".into()));
            let mut settle = std::pin::pin!(db.settle(lost, "a", written, || "committed"));
            let early = tokio::time::timeout(Duration::from_millis(500), &mut settle).await;
            assert!(
                early.is_err(),
                "settled while the transaction was still open: {early:?}"
            );
            release.notify_one();
            settle.await
        };
        let (written_by, settled) = tokio::join!(writer, settling);
        written_by.unwrap();
        assert_eq!(settled.unwrap(), "committed");
    }

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
