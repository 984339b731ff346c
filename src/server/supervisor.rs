//! The server's view of its service manager: the notifications it sends and the fd store.
//! The systemd implementation lives in `crate::systemd`; tests use fakes.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// One state change told to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    /// A reload has begun (the implementation adds the monotonic timestamp).
    Reloading,
    Stopping,
    Status(String),
    /// The errno of a failed operation, sent beside `Status`.
    Errno(i32),
    /// Stop or start needs this much more time from now.
    ExtendTimeout(Duration),
    Watchdog,
}

pub trait Supervisor: Send + Sync + 'static {
    /// Sends the notices as one message. Failures are logged by the implementation:
    /// a supervisor that cannot be told is not a reason to stop serving.
    fn notify(&self, notices: &[Notice]);
    /// How many fds the store keeps in all; `None` when the manager does not say it has one
    /// (fds sent to a store that is not there are dropped).
    fn fd_store_capacity(&self) -> Option<usize>;
    /// Keeps `fd` under `name` so that the next process of this service receives it.
    fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Drops the fd stored under `name`.
    fn remove_fd(&self, name: &str);
}

/// Lets a reload apply `log.level` without the server knowing how logging is wired.
pub trait LogLevel: Send + Sync + 'static {
    fn set_level(&self, directive: &str) -> Result<(), String>;
}
