//! Keep-alive connections handed from one process of the service to the next across a
//! restart: the fd-store names they travel under, how many the store may take, and taking
//! them back. What happens on a connection at stop (waiting for it to be idle, taking its
//! socket from hyper) is `conn.rs`'s; talking to systemd is the `Supervisor`'s.
//!
//! A connection is parked only while idle between requests, with nothing of a next request
//! read: whatever its client sends during the swap waits in the kernel's buffer and is read
//! by the next process.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::supervisor::Supervisor;
use crate::metrics;

/// What every parked connection's fd-store name starts with.
pub const PREFIX: &str = "conn-";

/// A connection parked longer ago than this when the next process starts is closed, not
/// served: a restart takes a second or two, so its client waited through a failed start (the
/// store keeps connections until a process takes them) and has most likely given up; a
/// request it sent that long ago is better refused by the close than carried out late.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The fd-store name of a parked connection: `conn-<seq>-<parked at, seconds since the
/// epoch>`. Short, because systemd passes every name in one environment variable
/// (`LISTEN_FDNAMES`, at most 128 KiB): 4096 of them take about 86 KB. Which listener and
/// which peer come from the socket itself; the next process has one pool.
pub fn name(seq: u64, parked_at: SystemTime) -> String {
    let secs = parked_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{PREFIX}{seq}-{secs}")
}

/// When a connection was parked, from the name `name` gave it; `None` for any other name.
pub fn parked_at(name: &str) -> Option<SystemTime> {
    let (seq, secs) = name.strip_prefix(PREFIX)?.split_once('-')?;
    seq.parse::<u64>().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs.parse().ok()?))
}

/// A connection the service manager passed back, under its fd-store name.
#[derive(Debug)]
pub struct PassedConnection {
    pub name: String,
    pub fd: OwnedFd,
}

/// Why a passed connection is not served.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not a name glint parks connections under")]
    Name,
    #[error("parked {0:?} ago, beyond the {DEADLINE:?} deadline")]
    Stale(Duration),
    #[error("not a connected TCP socket: {0}")]
    Socket(io::Error),
}

impl PassedConnection {
    /// The connection as a socket to serve, or why it is closed instead.
    pub fn take(self, now: SystemTime) -> Result<TcpStream, Refused> {
        let parked_at = parked_at(&self.name).ok_or(Refused::Name)?;
        let age = now.duration_since(parked_at).unwrap_or_default();
        if age > DEADLINE {
            return Err(Refused::Stale(age));
        }
        let stream = TcpStream::from(self.fd);
        // A listener, or a socket whose peer reset meanwhile, has no peer.
        stream.peer_addr().map_err(Refused::Socket)?;
        stream.set_nonblocking(true).map_err(Refused::Socket)?;
        Ok(stream)
    }
}

/// The stop's hand-over: where parked connections go and how many more the store takes.
pub struct Handover {
    supervisor: Arc<dyn Supervisor>,
    left: AtomicUsize,
    seq: AtomicU64,
    parked: AtomicUsize,
}

impl Handover {
    /// Up to `budget` connections, parked with `supervisor`.
    pub fn new(supervisor: Arc<dyn Supervisor>, budget: usize) -> Self {
        Handover {
            supervisor,
            left: AtomicUsize::new(budget),
            seq: AtomicU64::new(0),
            parked: AtomicUsize::new(0),
        }
    }

    /// Takes one place in the store; `false` once they are all taken.
    pub fn reserve(&self) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives back a place `reserve` took for a connection that was not parked after all.
    pub fn release(&self) {
        self.left.fetch_add(1, Ordering::AcqRel);
    }

    /// Parks `socket`. The caller closes its own fd after.
    pub fn park(&self, socket: impl AsFd) -> io::Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = name(seq, SystemTime::now());
        self.supervisor.store_fd(&name, socket.as_fd())?;
        self.parked.fetch_add(1, Ordering::Relaxed);
        metrics::global().record_handover("parked", 1);
        Ok(())
    }

    /// How many connections were parked.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_says_when() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let written = name(4095, at);
        assert_eq!(written, "conn-4095-1795000000");
        assert_eq!(parked_at(&written), Some(at));
        assert!(!written.contains(':'), "a valid FDNAME");
        for other in [
            "api",
            "conn-",
            "conn-x-1",
            "conn-1-x",
            "conn-1",
            "tcp-127.0.0.1_9292",
        ] {
            assert_eq!(parked_at(other), None, "{other}");
        }
    }

    #[test]
    fn the_budget_is_taken_and_given_back() {
        struct Nowhere;
        impl Supervisor for Nowhere {
            fn notify(&self, _: &[super::super::supervisor::Notice]) {}
            fn fd_store_capacity(&self) -> Option<usize> {
                None
            }
            fn store_fd(&self, _: &str, _: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
                Ok(())
            }
            fn remove_fd(&self, _: &str) {}
        }
        let handover = Handover::new(Arc::new(Nowhere), 2);
        assert!(handover.reserve() && handover.reserve());
        assert!(!handover.reserve());
        handover.release();
        assert!(handover.reserve());
    }

    #[test]
    fn a_connection_parked_too_long_ago_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let passed = PassedConnection {
            name: name(1, SystemTime::now() - DEADLINE * 2),
            fd: OwnedFd::from(a),
        };
        assert!(matches!(
            passed.take(SystemTime::now()),
            Err(Refused::Stale(_))
        ));
    }
}
