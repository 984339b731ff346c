//! The image model, free of I/O and of HTTP: ids, statuses and their transitions,
//! visibility, the rules for creating and patching images and for listing them, and who
//! may see or change what. It imports nothing of the crate.

pub mod caller;
pub mod image;
pub mod import;
pub mod member;
pub mod metadef;
pub mod patch;
pub mod query;
pub mod task;
pub mod time;

/// A rule the request broke. Each kind has one meaning for every layer above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed or a value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (read-only or reserved attributes, policy).
    #[error("{0}")]
    Forbidden(String),
    /// Not there, or not visible to the caller.
    #[error("{0}")]
    NotFound(String),
    /// The current state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A quota or limit would be exceeded.
    #[error("{0}")]
    OverLimit(String),
    /// The image went away while the request worked on it.
    #[error("{0}")]
    Gone(String),
    /// The data is not what its image says, or is not safe to keep (Glance's 415).
    #[error("{0}")]
    UnacceptableData(String),
}
