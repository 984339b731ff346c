//! The three engines the catalogue runs on — SQLite, PostgreSQL, MariaDB/MySQL — and where
//! they differ: which one a URL names, opening its pools with the session settings glint
//! relies on (timeouts, isolation, WAL), its embedded migrations (run under the engine's
//! migration lock), the SQL dialect (placeholders, integer casts) and what its errors mean
//! to the service (retry, unavailable, bad input). It holds no query of the catalogue:
//! those are written once, in `?`-placeholder SQL, and run on every engine through the
//! `read!` and `write_tx!` macros below.

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor};

use super::DbError;

/// Which engine a `database.url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    MySql,
}

impl Engine {
    pub fn of(url: &str) -> Option<Engine> {
        let scheme = url.split_once("://")?.0;
        match scheme {
            "sqlite" => Some(Engine::Sqlite),
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" => Some(Engine::MySql),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgresql",
            Engine::MySql => "mysql",
        }
    }
}

/// How to reach the database and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `sqlite:///ABSOLUTE/PATH`, `postgres://…` or `mysql://…`.
    pub url: String,
    /// Connections per pool (SQLite: readers; it writes through one connection).
    pub max_connections: u32,
    /// How long a request waits for a connection, which includes opening one.
    pub connect_timeout: Duration,
    /// How long one statement may run (or, on SQLite, wait for the write lock).
    pub statement_timeout: Duration,
}

impl Settings {
    /// The URL without its password, for messages and logs.
    pub fn shown(&self) -> String {
        crate::redact_url(&self.url)
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let path = self.url.strip_prefix("sqlite://")?;
        (!path.is_empty()).then(|| PathBuf::from(path))
    }
}

/// The connections of one database. SQLite reads through a pool of read-only connections
/// and writes through one connection, so concurrent writers queue in the process instead
/// of failing with "database is locked"; the servers take both through one pool.
#[derive(Debug, Clone)]
pub(super) enum Pools {
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// Asks whether anything was committed (`Database::commit_marker`).
        version: Arc<super::commits::CommitProbe>,
    },
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// A database's connection pools at one moment (all of them, for SQLite's reader and writer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: usize,
    pub idle: usize,
    pub max: usize,
}

impl PoolStats {
    fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> PoolStats {
        PoolStats {
            open: pool.size() as usize,
            idle: pool.num_idle(),
            max: pool.options().get_max_connections() as usize,
        }
    }
}

impl Pools {
    pub(super) fn stats(&self) -> PoolStats {
        match self {
            Pools::Sqlite { read, write, .. } => {
                let (read, write) = (PoolStats::of(read), PoolStats::of(write));
                PoolStats {
                    open: read.open + write.open,
                    idle: read.idle + write.idle,
                    max: read.max + write.max,
                }
            }
            Pools::Postgres(pool) => PoolStats::of(pool),
            Pools::MySql(pool) => PoolStats::of(pool),
        }
    }

    pub(super) async fn close(&self) {
        match self {
            Pools::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
            Pools::MySql(pool) => pool.close().await,
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

fn migrator(engine: Engine) -> &'static sqlx::migrate::Migrator {
    match engine {
        Engine::Sqlite => &SQLITE_MIGRATIONS,
        Engine::Postgres => &POSTGRES_MIGRATIONS,
        Engine::MySql => &MYSQL_MIGRATIONS,
    }
}

/// `(version, description)` of every migration the binary carries for `engine`.
pub(super) fn known_migrations(engine: Engine) -> Vec<(i64, String)> {
    migrator(engine)
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}

fn open_error(settings: &Settings) -> impl Fn(sqlx::Error) -> DbError + '_ {
    move |source| DbError::Open {
        url: settings.shown(),
        reason: crate::chain(&source),
    }
}

/// The engine `settings.url` names, or the error that says it names none.
pub(super) fn engine_of(settings: &Settings) -> Result<Engine, DbError> {
    Engine::of(&settings.url).ok_or_else(|| DbError::Open {
        url: settings.shown(),
        reason: "not a sqlite://, postgres:// or mysql:// URL".into(),
    })
}

/// Opens the pools (creating an SQLite file if needed) and brings the schema up to date.
/// Two processes doing this at once against one database migrate it once: PostgreSQL and
/// MySQL take an advisory lock around the migrations, SQLite a lock on a file beside the
/// database.
pub(super) async fn open(settings: &Settings) -> Result<(Engine, Pools), DbError> {
    let engine = engine_of(settings)?;
    // SQLite: from creating the file and switching it to WAL to the last migration, under
    // the lock, so that processes opening a new database together see it whole.
    let lock = match settings.sqlite_path() {
        Some(path) => {
            Some(lock_file(PathBuf::from(format!("{}.migrate-lock", path.display()))).await?)
        }
        None => None,
    };
    let pools = connect(engine, settings, false).await?;
    match &pools {
        Pools::Sqlite { write, .. } => {
            SQLITE_MIGRATIONS.run(write).await?;
            drop(lock);
        }
        Pools::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        Pools::MySql(pool) => {
            // sqlx's own lock asks GET_LOCK to wait -1 s, which MariaDB takes as not at all
            // (and sqlx ignores the answer): two processes would then both migrate.
            let mut conn = pool.acquire().await?;
            let locked: Option<i64> = sqlx::query_scalar(
                "SELECT GET_LOCK(CONCAT('glint-migrations:', MD5(DATABASE())), ?)",
            )
            .bind(MIGRATION_LOCK_WAIT.as_secs())
            .fetch_one(&mut *conn)
            .await?;
            if locked != Some(1) {
                return Err(DbError::Unavailable(format!(
                    "another process held the migration lock for {MIGRATION_LOCK_WAIT:?}"
                )));
            }
            let migrated = MYSQL_MIGRATIONS.run_direct(&mut *conn).await;
            sqlx::query("SELECT RELEASE_LOCK(CONCAT('glint-migrations:', MD5(DATABASE())))")
                .execute(&mut *conn)
                .await?;
            migrated?;
        }
    }
    Ok((engine, pools))
}

/// How long a process waits for another one's migrations.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(300);

/// An exclusive lock on `path` (created if needed), held until the file is dropped.
async fn lock_file(path: PathBuf) -> Result<std::fs::File, DbError> {
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<_, String>(file)
    })
    .await
    .map_err(|e| DbError::Unavailable(e.to_string()))?;
    locked.map_err(DbError::Unavailable)
}

/// The applied migration versions, or none if the database (or its migration table) does
/// not exist yet. Changes nothing.
pub(super) async fn applied_migrations(settings: &Settings) -> Result<Vec<i64>, DbError> {
    let engine = engine_of(settings)?;
    if let Some(path) = settings.sqlite_path() {
        if !path.exists() {
            return Ok(Vec::new());
        }
    }
    let pools = connect(engine, settings, true).await?;
    let exists = match engine {
        Engine::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Engine::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
        Engine::MySql => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
        }
    };
    let versions = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    // The same two queries on each engine's pool.
    macro_rules! applied_on {
        ($pool:expr) => {{
            let tables: i64 = sqlx::query_scalar(exists).fetch_one($pool).await?;
            match tables {
                0 => Vec::new(),
                _ => sqlx::query_scalar(versions).fetch_all($pool).await?,
            }
        }};
    }
    let applied = async {
        Ok::<_, DbError>(match &pools {
            Pools::Sqlite { read, .. } => applied_on!(read),
            Pools::Postgres(pool) => applied_on!(pool),
            Pools::MySql(pool) => applied_on!(pool),
        })
    }
    .await;
    pools.close().await;
    applied
}

async fn connect(engine: Engine, settings: &Settings, read_only: bool) -> Result<Pools, DbError> {
    let error = open_error(settings);
    let connections = settings.max_connections.max(1);
    let statement_ms = settings.statement_timeout.as_millis().max(1);
    match engine {
        Engine::Sqlite => {
            let Some(path) = settings.sqlite_path() else {
                return Err(DbError::Open {
                    url: settings.shown(),
                    reason: "names no file".into(),
                });
            };
            // WAL is set by the writer: it stays with the file, and a read-only connection
            // cannot set it (while another process creates the database, it would try).
            let options = SqliteConnectOptions::from_str("sqlite://")
                .map_err(&error)?
                .filename(&path)
                .create_if_missing(!read_only)
                .synchronous(SqliteSynchronous::Normal)
                // A writer waits this long for another process's write lock.
                .busy_timeout(settings.statement_timeout)
                .foreign_keys(true);
            // Writers queue on the one connection: waiting for it is waiting for the
            // write lock, bounded like a statement.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(settings.statement_timeout)
                .after_release(|conn, _| Box::pin(async move { Ok(settled(conn)) }))
                .connect_with(match read_only {
                    true => options.clone().read_only(true),
                    false => options.clone().journal_mode(SqliteJournalMode::Wal),
                })
                .await
                .map_err(&error)?;
            let read = SqlitePoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(settings.statement_timeout)
                .after_release(|conn, _| Box::pin(async move { Ok(settled(conn)) }))
                .connect_with(options.clone().read_only(true))
                .await
                .map_err(&error)?;
            let version = Arc::new(super::commits::CommitProbe::new(options.read_only(true)));
            Ok(Pools::Sqlite {
                read,
                write,
                version,
            })
        }
        Engine::Postgres => {
            let idle_in_transaction = (statement_ms * 2).to_string();
            let options = PgConnectOptions::from_str(&settings.url)
                .map_err(&error)?
                .application_name("glint")
                .options([
                    ("statement_timeout", statement_ms.to_string()),
                    // A transaction whose client vanished does not hold its locks forever.
                    (
                        "idle_in_transaction_session_timeout",
                        idle_in_transaction.clone(),
                    ),
                ]);
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(settings.connect_timeout)
                .after_release(|conn, _| Box::pin(async move { Ok(settled(conn)) }))
                .connect_with(options.clone())
                .await;
            match pool {
                Ok(pool) => Ok(Pools::Postgres(pool)),
                Err(e) => Err(error(why_not(e, options, settings).await)),
            }
        }
        Engine::MySql => {
            let options = MySqlConnectOptions::from_str(&settings.url)
                .map_err(&error)?
                .charset("utf8mb4");
            let statement_timeout = settings.statement_timeout;
            let pool = MySqlPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(settings.connect_timeout)
                .after_release(|conn, _| Box::pin(async move { Ok(settled(conn)) }))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        mysql_session(conn, statement_timeout).await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
                .await;
            match pool {
                Ok(pool) => Ok(Pools::MySql(pool)),
                Err(e) => Err(error(why_not(e, options, settings).await)),
            }
        }
    }
}

/// Whether a connection coming back to its pool may serve again. A request cut while its
/// transaction began (its client hung up) can return the connection still inside that
/// transaction, which sqlx does not roll back: the next transaction on it would fail, and
/// on SQLite it would keep the write lock. Such a connection is closed instead (the server
/// rolls back), and the pool opens a fresh one.
fn settled(conn: &mut impl Connection) -> bool {
    let idle = !conn.is_in_transaction();
    if !idle {
        tracing::debug!("a connection came back inside a transaction; closed");
    }
    idle
}

/// A pool that timed out opening its first connection says only that: one connection
/// attempt, bounded like the pool's, says why (refused, unknown host, bad password).
async fn why_not<O>(error: sqlx::Error, options: O, settings: &Settings) -> sqlx::Error
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    if !matches!(error, sqlx::Error::PoolTimedOut) {
        return error;
    }
    match tokio::time::timeout(settings.connect_timeout, options.connect()).await {
        Ok(Err(cause)) => cause,
        _ => error,
    }
}

/// Every MySQL/MariaDB session: READ COMMITTED (PostgreSQL's default: the compare-and-set
/// updates see the latest committed row, and InnoDB takes no gap locks that make unrelated
/// writers deadlock) and the statement timeout, which the two servers name differently.
async fn mysql_session(
    conn: &mut sqlx::MySqlConnection,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut *conn)
        .await?;
    let seconds = statement_timeout.as_secs().max(1);
    let limit = if version.contains("MariaDB") {
        format!(
            "SET SESSION max_statement_time = {}",
            statement_timeout.as_secs_f64()
        )
    } else {
        format!(
            "SET SESSION max_execution_time = {}",
            statement_timeout.as_millis()
        )
    };
    conn.execute(limit.as_str()).await?;
    conn.execute(format!("SET SESSION innodb_lock_wait_timeout = {seconds}").as_str())
        .await?;
    conn.ping().await
}

/// SQLite's SQL is the catalogue's as written.
pub(super) fn as_is(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

/// PostgreSQL numbers its placeholders: the n-th `?` becomes `$n`. (No statement of the
/// catalogue has a `?` inside a string literal.)
pub(super) fn numbered(sql: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// MySQL casts to `SIGNED`, not `BIGINT`; otherwise `?` placeholders as written.
pub(super) fn mysql(sql: &str) -> Cow<'_, str> {
    if sql.contains(" AS BIGINT)") {
        Cow::Owned(sql.replace(" AS BIGINT)", " AS SIGNED)"))
    } else {
        Cow::Borrowed(sql)
    }
}

/// A COMMIT that got no answer may have committed or not: the connection went at the
/// moment it was sent (a server shutting down commits what it has, then closes).
pub(super) fn commit_failed(error: sqlx::Error) -> DbError {
    match classify(error) {
        DbError::Unavailable(reason) => DbError::CommitUnknown(reason),
        other => other,
    }
}

/// What an error of the engine means to the service.
pub(super) fn classify(error: sqlx::Error) -> DbError {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbError::Unavailable(crate::chain(&error)),
        sqlx::Error::Database(db) => {
            let meaning = if let Some(mysql) = db.try_downcast_ref::<MySqlDatabaseError>() {
                mysql_meaning(mysql.number())
            } else {
                let code = db.code().unwrap_or_default();
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    postgres_meaning(&code)
                } else {
                    sqlite_meaning(&code)
                }
            };
            match meaning {
                Meaning::Retry => DbError::Contention(error),
                Meaning::Unavailable => DbError::Unavailable(db.message().to_string()),
                Meaning::Invalid => DbError::Invalid(db.message().to_string()),
                Meaning::Other => DbError::Query(error),
            }
        }
        _ => DbError::Query(error),
    }
}

enum Meaning {
    /// Another transaction won: run it again.
    Retry,
    /// The database cannot answer now (down, restarting, overloaded, too slow).
    Unavailable,
    /// The engine refused the data itself (too long, not encodable).
    Invalid,
    Other,
}

fn postgres_meaning(sqlstate: &str) -> Meaning {
    match sqlstate {
        // serialization_failure, deadlock_detected, lock_not_available
        "40001" | "40P01" | "55P03" => Meaning::Retry,
        // admin/crash shutdown, cannot connect now, too many connections, query canceled
        // (statement_timeout), idle-in-transaction timeout
        "57P01" | "57P02" | "57P03" | "53300" | "57014" | "25P03" => Meaning::Unavailable,
        code if code.starts_with("08") => Meaning::Unavailable,
        code if code.starts_with("22") => Meaning::Invalid,
        _ => Meaning::Other,
    }
}

fn mysql_meaning(number: u16) -> Meaning {
    match number {
        // deadlock (also a Galera certification failure), lock wait timeout
        1213 | 1205 => Meaning::Retry,
        // too many connections, shutdown in progress, node not ready (Galera), connection
        // killed, gone away, lost, statement timeout (MySQL, MariaDB), idle disconnect
        1040 | 1053 | 1047 | 1927 | 2006 | 2013 | 3024 | 1969 | 4031 => Meaning::Unavailable,
        // data too long, incorrect string value, out of range
        1406 | 1366 | 1264 => Meaning::Invalid,
        _ => Meaning::Other,
    }
}

fn sqlite_meaning(code: &str) -> Meaning {
    // SQLITE_BUSY_SNAPSHOT: another process wrote since this transaction read.
    if code == "517" {
        return Meaning::Retry;
    }
    // Extended result codes carry the primary code in their low byte.
    match code.parse::<i32>().map(|c| c & 0xff) {
        // SQLITE_BUSY, SQLITE_LOCKED: the busy timeout passed; SQLITE_FULL: disk full.
        Ok(5 | 6 | 13) => Meaning::Unavailable,
        // SQLITE_TOOBIG
        Ok(18) => Meaning::Invalid,
        _ => Meaning::Other,
    }
}

/// Runs `$body` against the engine's pool for reads, with `$pool` that pool and `$sql` the
/// engine's dialect function (`$sql("… ? …")`), bounded by the database's deadline. The body
/// evaluates to the value and may use `?` on sqlx errors.
macro_rules! read {
    ($db:expr, |$pool:ident, $sql:ident| $body:expr) => {
        $db.bounded(async {
            match &$db.pools {
                $crate::db::engine::Pools::Sqlite { read: $pool, .. } => {
                    let $sql = $crate::db::engine::as_is;
                    Ok::<_, $crate::db::DbError>($body)
                }
                $crate::db::engine::Pools::Postgres($pool) => {
                    let $sql = $crate::db::engine::numbered;
                    Ok::<_, $crate::db::DbError>($body)
                }
                $crate::db::engine::Pools::MySql($pool) => {
                    let $sql = $crate::db::engine::mysql;
                    Ok::<_, $crate::db::DbError>($body)
                }
            }
        })
        .await
    };
}

/// Runs `$body` in a write transaction, `$tx` the transaction (use `&mut *$tx`), committed
/// when the body evaluates to its value; an early `return` rolls back. A transaction that
/// lost to another writer (deadlock, serialisation failure) runs again, a bounded number of
/// times. Every value the body uses from outside must be `Copy` (references are). If the
/// request is dropped part-way (its client hung up), the connection is closed rather than
/// returned to the pool in an unknown state (`Held`).
macro_rules! write_tx {
    ($db:expr, |$tx:ident, $sql:ident| $body:expr) => {
        $db.retrying(move || async move {
            match &$db.pools {
                // The write lock at once: a transaction that read first and then wants to
                // write cannot wait for another process's writer.
                $crate::db::engine::Pools::Sqlite { write, .. } => write_tx!(
                    @on write, "BEGIN IMMEDIATE", $crate::db::engine::as_is, $tx, $sql, $body
                ),
                $crate::db::engine::Pools::Postgres(pool) => write_tx!(
                    @on pool, "BEGIN", $crate::db::engine::numbered, $tx, $sql, $body
                ),
                $crate::db::engine::Pools::MySql(pool) => write_tx!(
                    @on pool, "BEGIN", $crate::db::engine::mysql, $tx, $sql, $body
                ),
            }
        })
        .await
    };
    (@on $pool:expr, $begin:expr, $dialect:path, $tx:ident, $sql:ident, $body:expr) => {{
        let mut held = $crate::db::engine::Held::new($pool.acquire().await?);
        let outcome = async {
            let mut $tx = sqlx::Connection::begin_with(held.connection(), $begin).await?;
            let $sql = $dialect;
            let value = $body;
            $tx.commit()
                .await
                .map_err($crate::db::engine::commit_failed)?;
            Ok::<_, $crate::db::DbError>(value)
        }
        .await;
        held.finished();
        outcome
    }};
}

/// A pooled connection a write transaction runs on. Dropped before `finished` (the future
/// running the transaction was dropped at an await: the client hung up, a deadline passed),
/// the connection is closed, so the server rolls back whatever it had begun, instead of
/// going back to the pool with a transaction sqlx may not know is open.
pub(crate) struct Held<DB: sqlx::Database> {
    connection: sqlx::pool::PoolConnection<DB>,
    finished: bool,
}

impl<DB: sqlx::Database> Held<DB> {
    pub(crate) fn new(connection: sqlx::pool::PoolConnection<DB>) -> Self {
        Held {
            connection,
            finished: false,
        }
    }

    pub(crate) fn connection(&mut self) -> &mut DB::Connection {
        &mut self.connection
    }

    pub(crate) fn finished(&mut self) {
        self.finished = true;
    }
}

impl<DB: sqlx::Database> Drop for Held<DB> {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close_on_drop();
        }
    }
}

pub(crate) use {read, write_tx};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = ? WHERE c = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE c = $3"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn mysql_casts_to_signed() {
        assert_eq!(
            mysql("SELECT CAST(SUM(size) AS BIGINT) FROM images"),
            "SELECT CAST(SUM(size) AS SIGNED) FROM images"
        );
    }

    #[test]
    fn engines_are_named_by_the_url_scheme() {
        assert_eq!(
            Engine::of("sqlite:///var/lib/glint/glint.db"),
            Some(Engine::Sqlite)
        );
        assert_eq!(Engine::of("postgres://u:p@h/db"), Some(Engine::Postgres));
        assert_eq!(Engine::of("postgresql://h/db"), Some(Engine::Postgres));
        assert_eq!(Engine::of("mysql://u@h:3306/db"), Some(Engine::MySql));
        assert_eq!(Engine::of("mariadb://u@h/db"), Some(Engine::MySql));
        assert_eq!(Engine::of("oracle://h/db"), None);
        assert_eq!(Engine::of("glint.db"), None);
    }

    #[test]
    fn passwords_are_not_shown() {
        let shown = |url: &str| crate::redact_url(url);
        assert_eq!(
            shown("postgres://glint:s3cret@db.example:5432/glint"),
            "postgres://glint:***@db.example:5432/glint"
        );
        assert_eq!(shown("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
