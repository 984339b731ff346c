//! The only code that knows systemd: sd_notify messages and the fd store, the sockets
//! passed by socket activation (LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES), the watchdog
//! interval and whether stderr is the journal.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::server::handover::{self, PassedConnection};
use crate::server::listeners::PassedListener;
use crate::server::supervisor::{Notice, Supervisor};

/// Talks to the service manager over `$NOTIFY_SOCKET`; without it every call is a no-op.
pub struct Systemd;

impl Supervisor for Systemd {
    fn notify(&self, notices: &[Notice]) {
        // One datagram line per field: a newline would end STATUS= early.
        let statuses: Vec<Option<String>> = notices
            .iter()
            .map(|n| match n {
                Notice::Status(text) => Some(text.replace('\n', " ")),
                _ => None,
            })
            .collect();
        let mut states = Vec::with_capacity(notices.len() + 1);
        for (notice, status) in notices.iter().zip(&statuses) {
            match notice {
                Notice::Ready => states.push(NotifyState::Ready),
                Notice::Reloading => {
                    states.push(NotifyState::Reloading);
                    // Type=notify-reload ignores RELOADING=1 without the time it began.
                    match NotifyState::monotonic_usec_now() {
                        Ok(now) => states.push(now),
                        Err(e) => tracing::warn!(error = %e, "cannot read CLOCK_MONOTONIC"),
                    }
                }
                Notice::Stopping => states.push(NotifyState::Stopping),
                Notice::Status(_) => {
                    if let Some(text) = status {
                        states.push(NotifyState::Status(text));
                    }
                }
                Notice::Errno(errno) => states.push(NotifyState::Errno(*errno as u32)),
                Notice::ExtendTimeout(by) => states.push(NotifyState::ExtendTimeoutUsec(
                    u32::try_from(by.as_micros()).unwrap_or(u32::MAX),
                )),
                Notice::Watchdog => states.push(NotifyState::Watchdog),
            }
        }
        if let Err(e) = sd_notify::notify(&states) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    fn fd_store_capacity(&self) -> Option<usize> {
        std::env::var_os("NOTIFY_SOCKET")?;
        // `$FDSTORE` is `FileDescriptorStoreMax=` (systemd >= 254; the package's drop-in for
        // older systemd sets it). Without it there may be no store at all, and systemd
        // drops what it is sent: a connection parked there would be lost.
        std::env::var("FDSTORE")
            .ok()?
            .parse()
            .ok()
            .filter(|&n| n > 0)
    }

    fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Ok(());
        }
        sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd])
    }

    fn remove_fd(&self, name: &str) {
        if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)])
        {
            tracing::warn!(name, error = %e, "FDSTOREREMOVE failed");
        }
    }
}

/// Takes the sockets passed by the service manager, with their names: listeners, and the
/// keep-alive connections a previous process parked in the fd store (`handover::PREFIX`,
/// and `handover::TRANSFER_PREFIX` with a paused upload).
/// Clears the variables so that no child inherits them.
///
/// # Safety
/// Changes the environment: call before any other thread exists.
pub unsafe fn take_passed() -> io::Result<(Vec<PassedListener>, Vec<PassedConnection>)> {
    let names: Vec<String> = sd_notify::listen_fds_with_names()?
        .map(|(_, name)| name)
        .collect();
    let mut fds = listenfd::ListenFd::from_env();
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe { std::env::remove_var("LISTEN_FDNAMES") };
    let mut listeners = Vec::with_capacity(names.len());
    let mut connections = Vec::new();
    for (index, name) in names.into_iter().enumerate() {
        let taken = || io::Error::other(format!("passed fd {name} was already taken"));
        if name.starts_with(handover::PREFIX) || handover::is_transfer(&name) {
            let fd = fds.take_raw_fd(index)?.ok_or_else(taken)?;
            // SAFETY: the fd was passed to this process, and `take_raw_fd` hands it out once.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            connections.push(PassedConnection { name, fd });
            continue;
        }
        let socket = fds
            .take_tcp_listener(index)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("passed fd {name} is not a TCP listener: {e}"),
                )
            })?
            .ok_or_else(taken)?;
        listeners.push(PassedListener { name, socket });
    }
    Ok((listeners, connections))
}

/// `WATCHDOG_USEC`, when the watchdog is meant for this process.
pub fn watchdog() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Whether stderr is connected to the journal (`JOURNAL_STREAM` names its device and inode).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
