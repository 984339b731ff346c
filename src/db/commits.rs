//! Knowing when the catalogue changed, as a `CommitMarker` that any commit of any process
//! moves: on SQLite its `data_version`, asked on a connection of its own (here); on the
//! servers the sum of `catalogue_commits`, which triggers keep (the migrations, and
//! `Database::commit_marker`). What is kept until the next commit (the list pages) is the
//! service's; this only answers the question.

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// What `Database::commit_marker` answers: equal twice only if nothing was committed
/// in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitMarker(u64, i64);

impl CommitMarker {
    /// The marker of answer `data_version` on the `connection`-th connection.
    pub(crate) fn new(connection: u64, data_version: i64) -> Self {
        CommitMarker(connection, data_version)
    }
}

/// One SQLite connection of its own, outside any pool (a pool pings a connection each time
/// it comes back, a second trip to its thread), that only asks `PRAGMA data_version`: the
/// answer changes with every commit of any other connection, of this process or another,
/// and is comparable only within one connection, hence the count of connections made.
pub(super) struct CommitProbe {
    options: SqliteConnectOptions,
    connection: tokio::sync::Mutex<(u64, Option<sqlx::SqliteConnection>)>,
}

impl std::fmt::Debug for CommitProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitProbe")
    }
}

impl CommitProbe {
    pub(super) fn new(options: SqliteConnectOptions) -> Self {
        CommitProbe {
            options,
            connection: tokio::sync::Mutex::new((0, None)),
        }
    }

    /// The marker now; `None` when the database cannot be asked (the connection is made
    /// again next time).
    pub(super) async fn marker(&self) -> Option<CommitMarker> {
        let mut guard = self.connection.lock().await;
        let (connects, connection) = &mut *guard;
        if connection.is_none() {
            *connection = Some(self.options.connect().await.ok()?);
            *connects += 1;
        }
        let asked = match connection.as_mut() {
            Some(connection) => {
                sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(connection)
                    .await
            }
            None => return None,
        };
        match asked {
            Ok(data_version) => Some(CommitMarker::new(*connects, data_version)),
            Err(e) => {
                tracing::debug!(error = %e, "data_version not answered; connecting again");
                *connection = None;
                None
            }
        }
    }
}
