//! Keep-alive connections handed from one process of the service to the next across a
//! restart: the fd-store names they travel under, how many the store may take, and taking
//! them back. What happens on a connection at stop (waiting for it to be idle, taking its
//! socket from hyper) is `conn.rs`'s; talking to systemd is the `Supervisor`'s.
//!
//! A connection is parked only while idle between requests, with nothing of a next request
//! read: whatever its client sends during the swap waits in the kernel's buffer and is read
//! by the next process. An upload paused at stop (`server.handover_transfers`) is parked
//! with its connection as a transfer: a `TransferRecord` beside it in the state directory
//! says where the upload stands, what was read from the socket and not served, and how much
//! of the body is still to come; the next process reads that first, as the request that
//! carries the upload on.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::supervisor::Supervisor;
use crate::metrics;
use crate::service::handover::PausedUpload;

/// What every parked connection's fd-store name starts with.
pub const PREFIX: &str = "conn-";
/// What a connection parked with its paused upload is named with instead.
pub const TRANSFER_PREFIX: &str = "xfer-";
/// Where transfer records are kept, under the state directory.
const RECORDS: &str = "handover";
/// The layout of the records this version writes and reads: a record of another (an
/// upgrade or a downgrade between two versions that lay them out differently) is not
/// carried on, and its upload fails cleanly.
const RECORD_FORMAT: u32 = 1;

/// A connection parked longer ago than this when the next process starts is closed, not
/// served: a restart takes a second or two, so its client waited through a failed start (the
/// store keeps connections until a process takes them) and has most likely given up; a
/// request it sent that long ago is better refused by the close than carried out late.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The fd-store name of a parked connection: `conn-<seq>-<parked at, seconds since the
/// epoch>`. Short, because systemd passes every name in one environment variable
/// (`LISTEN_FDNAMES`, at most 128 KiB): 4096 of them take about 86 KB. Which listener and
/// which peer come from the socket itself; the next process has one pool.
pub fn name(prefix: &str, seq: u64, parked_at: SystemTime) -> String {
    let secs = parked_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{prefix}{seq}-{secs}")
}

/// Whether `name` is a connection parked with its paused upload.
pub fn is_transfer(name: &str) -> bool {
    name.starts_with(TRANSFER_PREFIX)
}

/// When a connection was parked, from the name `name` gave it; `None` for any other name.
pub fn parked_at(name: &str) -> Option<SystemTime> {
    let rest = name
        .strip_prefix(PREFIX)
        .or_else(|| name.strip_prefix(TRANSFER_PREFIX))?;
    let (seq, secs) = rest.split_once('-')?;
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

    /// A name for the next connection parked, under `prefix`.
    pub fn next_name(&self, prefix: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        name(prefix, seq, SystemTime::now())
    }

    /// Parks `socket` under `name` (`next_name`). The caller closes its own fd after.
    pub fn park(&self, name: &str, socket: impl AsFd) -> io::Result<()> {
        self.supervisor.store_fd(name, socket.as_fd())?;
        self.parked.fetch_add(1, Ordering::Relaxed);
        metrics::global().record_handover("parked", 1);
        Ok(())
    }

    /// How many connections were parked.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}

/// A paused upload parked with its connection, as the next process carries it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRecord {
    /// `RECORD_FORMAT` of the version that wrote it.
    pub format: u32,
    pub upload: PausedUpload,
    /// Bytes of the request body the upload has not received, counted from the first byte
    /// of `unread`.
    pub body_left: u64,
    /// What was read from the socket and not served (the body's next bytes, and whatever
    /// the client sent after them), in hex.
    pub unread: String,
    /// The client asked for the connection to close after the response.
    pub close: bool,
}

impl TransferRecord {
    pub fn new(upload: PausedUpload, body_left: u64, unread: &[u8], close: bool) -> Self {
        TransferRecord {
            format: RECORD_FORMAT,
            upload,
            body_left,
            unread: hex::encode(unread),
            close,
        }
    }

    fn path(state_dir: &Path, name: &str) -> PathBuf {
        state_dir.join(RECORDS).join(format!("{name}.json"))
    }

    /// Writes the record for the connection parked as `name`. Blocking.
    pub fn write(&self, state_dir: &Path, name: &str) -> io::Result<()> {
        let path = Self::path(state_dir, name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = path.with_extension("partial");
        std::fs::write(
            &partial,
            serde_json::to_vec(self).map_err(io::Error::other)?,
        )?;
        std::fs::rename(partial, path)
    }

    /// The record of the connection passed back as `name`. Blocking.
    pub fn read(state_dir: &Path, name: &str) -> io::Result<TransferRecord> {
        let bytes = std::fs::read(Self::path(state_dir, name))?;
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let written: Format = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        if written.format != RECORD_FORMAT {
            return Err(io::Error::other(format!(
                "written in record format {}, this version reads {RECORD_FORMAT}",
                written.format
            )));
        }
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    pub fn remove(state_dir: &Path, name: &str) {
        let _ = std::fs::remove_file(Self::path(state_dir, name));
    }

    /// Removes every record but those of `kept`: a record whose connection did not come
    /// back is of an upload no one carries on. Blocking.
    pub fn remove_all_but(state_dir: &Path, kept: &[String]) {
        let Ok(entries) = std::fs::read_dir(state_dir.join(RECORDS)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".json").unwrap_or(&name);
            if !kept.iter().any(|k| k == name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// What the next process reads first on the connection: the request that carries the
    /// upload on (its body the `body_left` bytes to come), then what was read and not
    /// served. `None` if `unread` is not what `write` made it.
    pub fn request_head(&self) -> Option<Bytes> {
        let unread = hex::decode(&self.unread).ok()?;
        let close = if self.close {
            "Connection: close\r\n"
        } else {
            ""
        };
        let mut head = format!(
            "PUT /v2/images/{}/file HTTP/1.1\r\nHost: glint\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n{close}\r\n",
            self.upload.image_id, self.body_left
        )
        .into_bytes();
        head.extend_from_slice(&unread);
        Some(Bytes::from(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_says_when() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let written = name(PREFIX, 4095, at);
        assert_eq!(written, "conn-4095-1795000000");
        assert_eq!(parked_at(&name(TRANSFER_PREFIX, 7, at)), Some(at));
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

    /// The request a paused upload is carried on by: its head, then what was read and not
    /// served, byte for byte.
    #[test]
    fn a_transfer_record_makes_the_request_that_carries_it_on() {
        let dir = tempfile::tempdir().unwrap();
        let record = TransferRecord::new(
            PausedUpload {
                image_id: "0b1c".into(),
                store: "default".into(),
                temp: "/data/.upload-n-0b1c-x".into(),
                written: 10,
                hashes: crate::store::HashState {
                    size: 10,
                    md5: String::new(),
                    hash_algo: "sha512".into(),
                    hash: String::new(),
                },
                inspector: crate::inspect::Inspector::new(),
                declared: Some(30),
                caller: crate::service::handover::PausedCaller::of(
                    &crate::domain::caller::Caller::default(),
                ),
                request_id: Some("req-1".into()),
            },
            20,
            b"\x00rest",
            true,
        );
        record.write(dir.path(), "xfer-1-2").unwrap();
        let read = TransferRecord::read(dir.path(), "xfer-1-2").unwrap();
        let head = read.request_head().unwrap();
        assert_eq!(
            &head[..],
            &b"PUT /v2/images/0b1c/file HTTP/1.1\r\nHost: glint\r\n\
               Content-Type: application/octet-stream\r\nContent-Length: 20\r\n\
               Connection: close\r\n\r\n\x00rest"[..]
        );
        TransferRecord::remove_all_but(dir.path(), &["xfer-1-2".into()]);
        assert!(TransferRecord::read(dir.path(), "xfer-1-2").is_ok());
        TransferRecord::remove_all_but(dir.path(), &[]);
        assert!(TransferRecord::read(dir.path(), "xfer-1-2").is_err());
        let other = TransferRecord {
            format: 2,
            ..record
        };
        other.write(dir.path(), "xfer-3-4").unwrap();
        let refused = TransferRecord::read(dir.path(), "xfer-3-4").unwrap_err();
        assert!(refused.to_string().contains("record format 2"), "{refused}");
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
            name: name(PREFIX, 1, SystemTime::now() - DEADLINE * 2),
            fd: OwnedFd::from(a),
        };
        assert!(matches!(
            passed.take(SystemTime::now()),
            Err(Refused::Stale(_))
        ));
    }
}
