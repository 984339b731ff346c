//! Tasks: background work recorded in the catalogue (Glance's `api_image_import` tasks),
//! their statuses and how long a finished one is kept. No I/O.

use serde_json::Value;

use super::time::{SECOND, Timestamp};

/// How long a finished task stays listed (Glance's `task_time_to_live`, 48 h).
pub const TIME_TO_LIVE: Timestamp = 48 * 3600 * SECOND;

/// The task type of every import.
pub const IMPORT: &str = "api_image_import";

/// The legacy task `POST /v2/tasks` creates: an image imported from `input.import_from`.
pub const LEGACY_IMPORT: &str = "import";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Pending,
    Processing,
    Success,
    Failure,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [
        TaskStatus::Pending,
        TaskStatus::Processing,
        TaskStatus::Success,
        TaskStatus::Failure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Processing => "processing",
            TaskStatus::Success => "success",
            TaskStatus::Failure => "failure",
        }
    }

    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Success | TaskStatus::Failure)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub kind: String,
    pub status: TaskStatus,
    pub owner: Option<String>,
    pub image_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub input: Value,
    pub result: Option<Value>,
    pub message: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}
