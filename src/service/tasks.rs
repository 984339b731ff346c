//! Where background tasks run: each generation's `Executor` spawns them on its tracker (so
//! a draining generation waits for them), and the process-wide `TaskBoard` knows which
//! tasks run right now and which generation is live, so a task cut at a drain deadline is
//! handed on to the live generation, and a stop leaves every task at its last checkpoint.
//! What a task does is `import`'s; this knows only ids and futures. Tasks, and the release
//! of a dropped claim, run on the board's own runtime: never on the thread that owns the
//! lifecycle, and never on a worker pool that a reload may retire.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::FutureExt;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Catalog;
use super::data::{Releases, TransferSlots};

/// Threads of the task runtime: tasks mostly wait on the network, the database and the
/// blocking pool.
const TASK_THREADS: usize = 2;

/// Shared by every generation of one process.
pub struct TaskBoard {
    /// This node's identity among the glint processes sharing the database: the holder
    /// of its claims and task leases.
    node: String,
    running: Mutex<HashSet<String>>,
    live: Mutex<Option<Catalog>>,
    /// Cancelled by a stop: every task ends at its checkpoint and nothing is handed on.
    stop: CancellationToken,
    /// The board's own runtime; it outlives every worker pool and generation.
    runtime: Option<Runtime>,
    handle: Handle,
    /// Whether `upkeep` runs.
    upkeep: std::sync::atomic::AtomicBool,
    /// Whether the image cache's prefetcher runs.
    prefetching: std::sync::atomic::AtomicBool,
    /// Whether the last round of upkeep failed.
    upkeep_failed: std::sync::atomic::AtomicBool,
    /// Images a transfer of this process holds now (claimed, neither committed nor
    /// released yet): the uploads whose claims the upkeep renews, and the stages it leaves
    /// alone.
    held: Mutex<HashSet<String>>,
    /// `server.max_transfers`, across generations.
    pub transfers: Arc<TransferSlots>,
    /// Dropped claims being released now.
    pub(super) releases: Releases,
}

impl TaskBoard {
    pub fn new(node: String, max_transfers: usize) -> std::io::Result<Arc<TaskBoard>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(TASK_THREADS)
            .thread_name("glint-tasks")
            .enable_all()
            .build()?;
        Ok(Arc::new(TaskBoard {
            node,
            running: Mutex::default(),
            live: Mutex::default(),
            stop: CancellationToken::new(),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            transfers: TransferSlots::new(max_transfers),
            releases: Releases::default(),
            upkeep: std::sync::atomic::AtomicBool::new(false),
            prefetching: std::sync::atomic::AtomicBool::new(false),
            upkeep_failed: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::default(),
        }))
    }

    /// Runs `work` on the board's runtime, detached.
    pub(super) fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(work);
    }

    fn running(&self) -> MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> MutexGuard<'_, Option<Catalog>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation live now.
    pub(super) fn live_catalog(&self) -> Option<Catalog> {
        self.live().clone()
    }

    /// Marks the prefetcher as running; false when it already was.
    pub(super) fn begin_prefetching(&self) -> bool {
        !self
            .prefetching
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn end_prefetching(&self) {
        self.prefetching
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many tasks run now, in every generation.
    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    /// The board's runtime: where work that must outlive a request's runtime goes.
    pub fn runtime(&self) -> &Handle {
        &self.handle
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records whether this round of upkeep failed; returns whether the last one did.
    pub(super) fn upkeep_failing(&self, now: bool) -> bool {
        self.upkeep_failed
            .swap(now, std::sync::atomic::Ordering::SeqCst)
    }

    fn held_set(&self) -> MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A transfer of this process holds image `id` from now.
    pub(super) fn hold(&self, id: &str) {
        self.held_set().insert(id.to_string());
    }

    /// The transfer holding image `id` has ended (its outcome recorded or not).
    pub(super) fn let_go(&self, id: &str) {
        self.held_set().remove(id);
    }

    /// Whether a transfer of this process holds image `id` now.
    pub(super) fn is_held(&self, id: &str) -> bool {
        self.held_set().contains(id)
    }

    /// The images transfers of this process hold now.
    pub(super) fn held(&self) -> HashSet<String> {
        self.held_set().clone()
    }

    /// Makes `catalog` the generation tasks are handed on to. The first time, starts the
    /// node's upkeep on the board's runtime.
    pub(super) fn set_live(self: &Arc<Self>, catalog: Catalog) {
        *self.live() = Some(catalog);
        if !self.upkeep.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let board = self.clone();
            self.handle.spawn(async move { board.upkeep().await });
        }
    }

    /// While the process lives, every `Catalog::upkeep_interval`: renews this node's
    /// claims and task leases, takes up the tasks it is to run (handed to it, or whose
    /// node died), and returns to `queued` the images of nodes that died mid-transfer.
    async fn upkeep(self: Arc<Self>) {
        loop {
            let Some(catalog) = self.live().clone() else {
                return;
            };
            catalog.upkeep().await;
            tokio::select! {
                () = tokio::time::sleep(catalog.upkeep_interval()) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Asks every task to stop at its checkpoint; their state stays in the database for
    /// the next process.
    pub fn stop(&self) {
        self.stop.cancel();
        self.live().take();
    }
}

/// One generation's side of the board.
#[derive(Clone)]
pub struct Executor {
    board: Arc<TaskBoard>,
    tracker: TaskTracker,
    /// The generation's cut: its drain deadline passed.
    cut: CancellationToken,
}

enum Ending {
    Finished,
    Panicked,
    Cut,
    Stopped,
}

impl Executor {
    pub fn new(board: Arc<TaskBoard>, tracker: TaskTracker, cut: CancellationToken) -> Self {
        Executor {
            board,
            tracker,
            cut,
        }
    }

    pub fn board(&self) -> &Arc<TaskBoard> {
        &self.board
    }

    /// Runs task `id` unless it already runs somewhere in this process (`false` then).
    /// When this generation is cut before the task ends, the task is handed on to the live
    /// one, which takes it up from its persisted state.
    pub fn spawn<F>(&self, id: String, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.board.stop.is_cancelled() || !self.board.running().insert(id.clone()) {
            return false;
        }
        let board = self.board.clone();
        let cut = self.cut.clone();
        self.tracker.spawn_on(
            async move {
                let ending = tokio::select! {
                    finished = AssertUnwindSafe(work).catch_unwind() => match finished {
                        Ok(()) => Ending::Finished,
                        Err(_) => Ending::Panicked,
                    },
                    () = cut.cancelled() => Ending::Cut,
                    () = board.stop.cancelled() => Ending::Stopped,
                };
                board.running().remove(&id);
                match ending {
                    Ending::Finished => {}
                    Ending::Panicked => {
                        tracing::error!(task_id = %id, "task panicked; it fails and its image is released");
                        let live = board.live().clone();
                        if let Some(catalog) = live {
                            catalog.abandon(&id, "Internal error while importing".into()).await;
                        }
                    }
                    Ending::Stopped => {
                        tracing::info!(task_id = %id, "task stopped at its checkpoint");
                    }
                    Ending::Cut => {
                        let live = board.live().clone();
                        match live {
                            Some(catalog) => {
                                tracing::info!(task_id = %id, "task handed on to the live generation");
                                catalog.resume(&id).await;
                            }
                            None => tracing::warn!(task_id = %id, "task cut; it resumes at the next start"),
                        }
                    }
                }
            },
            &self.board.handle,
        );
        true
    }
}

impl Drop for TaskBoard {
    /// The last generation may drop the board inside the control runtime, where dropping
    /// a runtime the blocking way panics.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
