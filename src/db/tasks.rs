//! Tasks in the metadata repository: the rows background work (imports) records, read and
//! written on their own or, through `TaskWrite`, in the same transaction as an image change.

use super::engine::{read, write_tx};
use super::list::Statement;
use super::rows::{TASK_COLUMNS, TaskRow, Text};
use super::{Database, DbError, Holder, bind_params};
use crate::domain::task::{Task, TaskStatus};
use crate::domain::time::Timestamp;

/// What `change_image` writes to the tasks table in the same transaction.
#[derive(Clone, Copy)]
pub enum TaskWrite<'a> {
    None,
    /// A new task, leased to the node that is to run it.
    Insert(&'a Task, Holder<'a>),
    Update(&'a TaskUpdate),
}

#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub id: String,
    pub status: TaskStatus,
    pub message: Option<String>,
    pub result: Option<serde_json::Value>,
}

impl Database {
    /// Writes a task's progress on its own (the image it worked on may be gone).
    pub async fn update_task(&self, update: &TaskUpdate, now: Timestamp) -> Result<(), DbError> {
        write_tx!(self, |tx, sql| {
            update_task!(tx, sql, update, now);
        })
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, DbError> {
        let row: Option<TaskRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        })?;
        row.map(TaskRow::into_task).transpose()
    }

    /// An image's tasks, newest first.
    pub async fn tasks_of_image(&self, image_id: &str) -> Result<Vec<Task>, DbError> {
        let rows: Vec<TaskRow> = read!(self, |pool, sql| {
            sqlx::query_as(&sql(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE image_id = ? \
                 ORDER BY created_at DESC, id DESC"
            )))
            .bind(image_id)
            .fetch_all(pool)
            .await?
        })?;
        rows.into_iter().map(TaskRow::into_task).collect()
    }

    /// Tasks newest first, optionally of one type and status, after task `marker`.
    pub async fn list_tasks(
        &self,
        kind: Option<&str>,
        status: Option<&str>,
        marker: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Task>, DbError> {
        let mut statement = Statement::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
        if let Some(kind) = kind {
            statement.push(" AND type = ").push_bind(kind);
        }
        if let Some(status) = status {
            statement.push(" AND status = ").push_bind(status);
        }
        if let Some(marker) = marker {
            statement
                .push(" AND (created_at, id) < (SELECT created_at, id FROM tasks WHERE id = ")
                .push_bind(marker)
                .push(")");
        }
        statement
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let statement = &statement;
        let rows: Vec<TaskRow> = read!(self, |pool, sql| {
            let text = sql(&statement.text);
            bind_params!(sqlx::query_as(&text), statement)
                .fetch_all(pool)
                .await?
        })?;
        rows.into_iter().map(TaskRow::into_task).collect()
    }

    /// Forgets finished tasks whose time to live has passed; returns how many.
    pub async fn purge_expired_tasks(&self, now: Timestamp) -> Result<u64, DbError> {
        write_tx!(self, |tx, sql| {
            sqlx::query(&sql(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at < ?",
            ))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        })
    }

    /// Unfinished tasks `node` is to run: those leased to it (a previous process of this
    /// node, or a node that handed one over), unleased ones, and those whose lease expired
    /// (their node died). Oldest first.
    pub async fn tasks_for(&self, node: &str, now: Timestamp) -> Result<Vec<String>, DbError> {
        let ids: Vec<Text> = read!(self, |pool, sql| {
            sqlx::query_scalar(&sql(
                "SELECT id FROM tasks WHERE status IN ('pending', 'processing') \
                 AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < ?) \
                 ORDER BY created_at, id",
            ))
            .bind(node)
            .bind(now)
            .fetch_all(pool)
            .await?
        })?;
        Ok(ids.into_iter().map(String::from).collect())
    }

    /// Takes task `id`'s lease for `holder`, if the task is unfinished and its lease is
    /// free, expired or `holder`'s already: of two nodes, one gets `true`.
    pub async fn lease_task(
        &self,
        id: &str,
        holder: Holder<'_>,
        now: Timestamp,
    ) -> Result<bool, DbError> {
        write_tx!(self, |tx, sql| {
            sqlx::query(&sql(
                "UPDATE tasks SET lease_owner = ?, lease_expires_at = ? \
                 WHERE id = ? AND status IN ('pending', 'processing') \
                 AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < ?)",
            ))
            .bind(holder.node)
            .bind(holder.until)
            .bind(id)
            .bind(holder.node)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1
        })
    }
}

/// Inserts `$task`, leased to `$holder`, inside transaction `$tx`.
macro_rules! insert_task {
    ($tx:ident, $sql:ident, $task:expr, $holder:expr) => {{
        sqlx::query(&$sql(
            "INSERT INTO tasks (id, type, status, owner, image_id, request_id, user_id, input, \
             result, message, created_at, updated_at, expires_at, lease_owner, \
             lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&$task.id)
        .bind(&$task.kind)
        .bind($task.status.as_str())
        .bind(&$task.owner)
        .bind(&$task.image_id)
        .bind(&$task.request_id)
        .bind(&$task.user_id)
        .bind($task.input.to_string())
        .bind($task.result.as_ref().map(|r| r.to_string()))
        .bind(&$task.message)
        .bind($task.created_at)
        .bind($task.updated_at)
        .bind($task.expires_at)
        .bind($holder.node)
        .bind($holder.until)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Writes `$update` to its task inside transaction `$tx`; a final status starts the
/// task's time to live.
macro_rules! update_task {
    ($tx:ident, $sql:ident, $update:expr, $now:expr) => {{
        sqlx::query(&$sql(
            "UPDATE tasks SET status = ?, message = COALESCE(?, message), \
             result = COALESCE(?, result), updated_at = ?, expires_at = ? WHERE id = ?",
        ))
        .bind($update.status.as_str())
        .bind(&$update.message)
        .bind($update.result.as_ref().map(|r| r.to_string()))
        .bind($now)
        .bind(
            $update
                .status
                .is_final()
                .then_some($now + $crate::domain::task::TIME_TO_LIVE),
        )
        .bind(&$update.id)
        .execute(&mut *$tx)
        .await?;
    }};
}

pub(super) use {insert_task, update_task};
