//! The worker pool: a multi-thread runtime of `server.workers` threads that accepts and
//! serves connections. A connection lives on the pool that accepted it; each request on it
//! uses the generation current when the request starts. A pool is replaced only when
//! `workers` changes; the replaced pool stops accepting at once and ends when its
//! connections have.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::conn::{self, PoolState};
use super::listeners::Listener;

/// One accept loop: how to stop it and how to know it has.
struct Acceptor {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub struct WorkerPool {
    pub id: u64,
    pub workers: usize,
    runtime: Mutex<Option<Runtime>>,
    accepting: Mutex<HashMap<String, Acceptor>>,
    /// The accept loops: waited for before counting connections, since a loop that is
    /// being cancelled may still hand over one last connection.
    acceptors: TaskTracker,
    connections: TaskTracker,
    state: Arc<PoolState>,
}

/// How long an accept loop waits after a failed accept (EMFILE, ENOBUFS …) before trying
/// again; spinning on it would starve the pool.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl WorkerPool {
    pub fn new(id: u64, workers: usize) -> io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(format!("glint-p{id}"))
            .enable_all()
            .build()?;
        Ok(Arc::new(WorkerPool {
            id,
            workers,
            runtime: Mutex::new(Some(runtime)),
            accepting: Mutex::new(HashMap::new()),
            acceptors: TaskTracker::new(),
            connections: TaskTracker::new(),
            state: Arc::new(PoolState::new()),
        }))
    }

    fn accepting(&self) -> MutexGuard<'_, HashMap<String, Acceptor>> {
        self.accepting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rt| rt.handle().clone())
    }

    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    pub fn retired(&self) -> bool {
        self.state.retired()
    }

    /// Number of worker threads the runtime really runs.
    pub fn live_workers(&self) -> usize {
        self.handle().map_or(0, |h| h.metrics().num_workers())
    }

    /// Starts accepting on a duplicate of `listener`'s fd, registered with this pool's
    /// reactor. The listener itself stays with the server.
    pub fn accept(&self, listener: &Listener, shared: Arc<Shared>) -> io::Result<()> {
        let handle = self
            .handle()
            .ok_or_else(|| io::Error::other("worker pool already shut down"))?;
        let socket = listener.socket.try_clone()?;
        let tokio_listener = {
            let _entered = handle.enter();
            tokio::net::TcpListener::from_std(socket)?
        };
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        let connections = self.connections.clone();
        let state = self.state.clone();
        let name = listener.name.clone();
        let task = handle.spawn(self.acceptors.track_future(async move {
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    accepted = tokio_listener.accept() => accepted,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        // At `server.max_connections` this one waits for room (made by
                        // closing an idle connection), and while it waits no other is
                        // accepted: the rest wait in the backlog. A connection taken from
                        // the backlog is served even when a stop or retire comes meanwhile:
                        // dropping it would reset a client.
                        let entry = tokio::select! {
                            biased;
                            entry = shared.connections.admit() => entry,
                            _ = stop.cancelled() => shared.connections.admit_over_cap(),
                        };
                        // The generation current at accept decides: TLS, and with which
                        // certificate.
                        let tls = shared.current.load().tls.as_ref().and_then(|t| t.on(&name));
                        connections.spawn(conn::serve(
                            stream,
                            tls,
                            peer,
                            shared.clone(),
                            state.clone(),
                            entry,
                            None,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }));
        self.accepting()
            .insert(listener.name.clone(), Acceptor { stop: cancel, task });
        Ok(())
    }

    /// Serves a connection a previous process parked (`handover`) as if this pool had
    /// accepted it (plain HTTP: TLS connections are never parked), reading `resumed`'s
    /// request first if it was parked with a paused upload. Taken back over
    /// `server.max_connections` if need be: refusing it would close a client's connection.
    pub fn adopt(
        &self,
        stream: std::net::TcpStream,
        shared: Arc<Shared>,
        resumed: Option<conn::ResumedConnection>,
    ) -> io::Result<()> {
        let handle = self
            .handle()
            .ok_or_else(|| io::Error::other("worker pool already shut down"))?;
        let peer = stream.peer_addr()?;
        let stream = {
            let _entered = handle.enter();
            tokio::net::TcpStream::from_std(stream)?
        };
        let entry = shared.connections.admit_over_cap();
        let state = self.state.clone();
        handle.spawn(self.connections.track_future(conn::serve(
            stream, None, peer, shared, state, entry, resumed,
        )));
        Ok(())
    }

    /// Stops accepting on `name` and returns once the accept loop has ended, so its
    /// duplicate of the listener's fd is closed: a removed address refuses connections as
    /// soon as the reload that removed it is done.
    pub async fn stop_accepting(&self, name: &str) {
        let acceptor = self.accepting().remove(name);
        if let Some(acceptor) = acceptor {
            acceptor.stop.cancel();
            let _ = acceptor.task.await;
        }
    }

    /// Stops accepting on every listener; live connections carry on.
    pub fn retire(&self) {
        self.state.retire();
        for (_, acceptor) in self.accepting().drain() {
            acceptor.stop.cancel();
        }
        self.acceptors.close();
        self.connections.close();
    }

    /// After `retire`: returns once every accept loop has ended and closed its fds.
    pub async fn accepting_stopped(&self) {
        self.acceptors.wait().await;
    }

    /// Retires the pool and asks every connection to close after its request in flight.
    pub fn close_connections(&self) {
        self.retire();
        self.state.closing.cancel();
    }

    /// Waits until the pool's connections are gone, or `deadline` passed; returns how many
    /// remain.
    pub async fn wait_connections(&self, deadline: Duration) -> usize {
        let all_gone = async {
            self.acceptors.wait().await;
            self.connections.wait().await;
        };
        let _ = tokio::time::timeout(deadline, all_gone).await;
        self.connections.len()
    }

    /// Ends the runtime; connections still on it are dropped.
    pub fn shut_down(&self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }

    /// Whether the pool runs tasks: a probe task scheduled on it completes within `limit`.
    pub async fn responsive(&self, limit: Duration) -> bool {
        let Some(handle) = self.handle() else {
            return false;
        };
        let probe = handle.spawn(async {});
        matches!(tokio::time::timeout(limit, probe).await, Ok(Ok(())))
    }
}

impl Drop for WorkerPool {
    /// A pool dropped without `shut_down` (a reload that failed after building it) must not
    /// drop its runtime the blocking way: that panics inside the control runtime.
    fn drop(&mut self) {
        self.shut_down();
    }
}
