//! Tasks in the metadata repository: the rows background work (imports) records, read and
//! written on their own or, through `TaskWrite`, in the same transaction as an image change.

use sqlx::{QueryBuilder, Sqlite};

use super::rows::{TASK_COLUMNS, TaskRow};
use super::{Database, DbError};
use crate::domain::task::{Task, TaskStatus};
use crate::domain::time::Timestamp;

/// What `change_image` writes to the tasks table in the same transaction.
pub enum TaskWrite<'a> {
    None,
    Insert(&'a Task),
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
        let mut tx = self.write.begin().await?;
        update_task(&mut tx, update, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, DbError> {
        let row: Option<TaskRow> =
            sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        row.map(TaskRow::into_task).transpose()
    }

    /// An image's tasks, newest first.
    pub async fn tasks_of_image(&self, image_id: &str) -> Result<Vec<Task>, DbError> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE image_id = ? ORDER BY created_at DESC, rowid DESC"
        ))
        .bind(image_id)
        .fetch_all(&self.read)
        .await?;
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
        let mut sql =
            QueryBuilder::<Sqlite>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
        if let Some(kind) = kind {
            sql.push(" AND type = ").push_bind(kind.to_string());
        }
        if let Some(status) = status {
            sql.push(" AND status = ").push_bind(status.to_string());
        }
        if let Some(marker) = marker {
            sql.push(" AND rowid < (SELECT rowid FROM tasks WHERE id = ")
                .push_bind(marker.to_string())
                .push(")");
        }
        sql.push(" ORDER BY rowid DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows: Vec<TaskRow> = sql.build_query_as().fetch_all(&self.read).await?;
        rows.into_iter().map(TaskRow::into_task).collect()
    }

    /// Forgets finished tasks whose time to live has passed; returns how many.
    pub async fn purge_expired_tasks(&self, now: Timestamp) -> Result<u64, DbError> {
        let purged =
            sqlx::query("DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at < ?")
                .bind(now)
                .execute(&self.write)
                .await?;
        Ok(purged.rows_affected())
    }

    /// Tasks neither succeeded nor failed: what a new process (or generation) takes over.
    pub async fn unfinished_tasks(&self) -> Result<Vec<Task>, DbError> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ('pending', 'processing') \
             ORDER BY created_at, id"
        ))
        .fetch_all(&self.write)
        .await?;
        rows.into_iter().map(TaskRow::into_task).collect()
    }
}

pub(super) async fn insert_task(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    task: &Task,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO tasks (id, type, status, owner, image_id, request_id, user_id, input, \
         result, message, created_at, updated_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&task.id)
    .bind(&task.kind)
    .bind(task.status.as_str())
    .bind(&task.owner)
    .bind(&task.image_id)
    .bind(&task.request_id)
    .bind(&task.user_id)
    .bind(task.input.to_string())
    .bind(task.result.as_ref().map(|r| r.to_string()))
    .bind(&task.message)
    .bind(task.created_at)
    .bind(task.updated_at)
    .bind(task.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn update_task(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    update: &TaskUpdate,
    now: Timestamp,
) -> Result<(), DbError> {
    let expires_at = update
        .status
        .is_final()
        .then_some(now + crate::domain::task::TIME_TO_LIVE);
    sqlx::query(
        "UPDATE tasks SET status = ?, message = COALESCE(?, message), \
         result = COALESCE(?, result), updated_at = ?, expires_at = ? WHERE id = ?",
    )
    .bind(update.status.as_str())
    .bind(&update.message)
    .bind(update.result.as_ref().map(|r| r.to_string()))
    .bind(now)
    .bind(expires_at)
    .bind(&update.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
