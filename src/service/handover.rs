//! Uploads paused at a stop and resumed by the next process (`server.handover_transfers`):
//! the pause a connection asks of its upload (`TransferPause`), granted between two chunks
//! once everything received is in the store's temporary file, and the record of where a
//! paused upload stands (`PausedUpload`), from which the next process carries on. Passing
//! the connection itself through the fd store, and what its client sent that no one read,
//! are the server's. Nothing of the data is read again: the hashes' and the inspection's
//! states travel in the record.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::domain::caller::Caller;
use crate::inspect::Inspector;
use crate::store::HashState;

/// Where a paused upload stands: what the next process needs to read the rest of its body
/// into the same temporary file and finish it as the upload would have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PausedUpload {
    pub image_id: String,
    pub store: String,
    /// The store's temporary file, holding the first `written` bytes of the data.
    pub temp: PathBuf,
    pub written: u64,
    /// Where the hashes of those bytes stand.
    pub hashes: HashState,
    /// Where their inspection stands.
    pub inspector: Inspector,
    /// The size the client declared (`x-openstack-image-size` or `Content-Length`).
    pub declared: Option<u64>,
    pub caller: PausedCaller,
    pub request_id: Option<String>,
}

/// The caller of a paused upload, as the policy saw it when the upload began.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PausedCaller {
    pub project: Option<String>,
    pub user: Option<String>,
    pub roles: Vec<String>,
    pub system_scope: Option<String>,
    pub service_roles: Vec<String>,
}

impl PausedCaller {
    pub fn of(caller: &Caller) -> Self {
        PausedCaller {
            project: caller.project.clone(),
            user: caller.user.clone(),
            roles: caller.roles.clone(),
            system_scope: caller.system_scope.clone(),
            service_roles: caller.service_roles.clone(),
        }
    }

    /// The caller again; whether it is an admin is the policy's to say anew.
    pub fn caller(&self) -> Caller {
        Caller {
            project: self.project.clone(),
            user: self.user.clone(),
            is_admin: false,
            roles: self.roles.clone(),
            system_scope: self.system_scope.clone(),
            service_roles: self.service_roles.clone(),
        }
    }
}

/// What a request body gives instead of its next bytes once it stopped for a pause: not a
/// failure of the client's, and the upload does not treat it as one.
#[derive(Debug, thiserror::Error)]
#[error("paused for the next process")]
pub struct Paused;

/// Marks the request that carries on a paused upload in the process that took it over:
/// authenticated already, by the record's caller.
#[derive(Debug, Clone)]
pub struct Resumed(pub Arc<PausedUpload>);

/// The pause of one upload request, shared by its connection (which asks for it at stop)
/// and the upload (which grants it once it can be resumed elsewhere).
#[derive(Debug, Default)]
pub struct TransferPause {
    requested: CancellationToken,
    /// The upload writes where another process can carry on (a filesystem store).
    resumable: AtomicBool,
    /// The request body stopped giving data for the pause.
    body_stopped: AtomicBool,
    /// Bytes the request body gave the upload.
    given: AtomicU64,
    state: Mutex<PauseState>,
}

#[derive(Debug, Default)]
struct PauseState {
    request_id: Option<String>,
    paused: Option<PausedUpload>,
    /// What the body had received from the connection and not given to the upload.
    unread: Vec<u8>,
}

impl TransferPause {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn state(&self) -> MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the upload to pause (the process is stopping).
    pub fn request(&self) {
        self.requested.cancel();
    }

    /// Cancelled once a pause is asked for.
    pub fn requested(&self) -> &CancellationToken {
        &self.requested
    }

    /// For the request body, before it gives its next chunk: whether it stops here for the
    /// pause instead (asked for, and the upload can be resumed elsewhere).
    pub fn stop_body(&self) -> bool {
        let stop = self.requested.is_cancelled() && self.resumable.load(Ordering::Acquire);
        if stop {
            self.body_stopped.store(true, Ordering::Release);
        }
        stop
    }

    /// Whether the body ended for the pause (its error is not the client's).
    pub fn body_stopped(&self) -> bool {
        self.body_stopped.load(Ordering::Acquire)
    }

    /// The request body gave the upload `bytes` more.
    pub fn gave(&self, bytes: usize) {
        self.given.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes the request body gave the upload.
    pub fn given(&self) -> u64 {
        self.given.load(Ordering::Relaxed)
    }

    /// Whether the upload can be carried on by another process from its temporary file:
    /// from when it writes there until it stops reading its body (a refused upload's body
    /// is still drained, so that its client gets the answer).
    pub fn set_resumable(&self, resumable: bool) {
        self.resumable.store(resumable, Ordering::Release);
    }

    pub fn set_request_id(&self, id: &str) {
        self.state().request_id = Some(id.to_string());
    }

    pub fn request_id(&self) -> Option<String> {
        self.state().request_id.clone()
    }

    /// Keeps bytes the body had taken from the connection but not given out.
    pub fn keep_unread(&self, bytes: &[u8]) {
        self.state().unread.extend_from_slice(bytes);
    }

    pub fn is_paused(&self) -> bool {
        self.state().paused.is_some()
    }

    /// The paused upload and the bytes its body held unread, once paused.
    pub fn take_paused(&self) -> Option<(PausedUpload, Vec<u8>)> {
        let mut state = self.state();
        let paused = state.paused.take()?;
        Some((paused, std::mem::take(&mut state.unread)))
    }

    /// Records the paused upload, then waits for the connection to take the request away
    /// (it drops this future with the request): the next process answers it.
    pub(super) async fn hand_over(&self, paused: PausedUpload) {
        self.state().paused = Some(paused);
        std::future::pending::<()>().await;
    }
}
