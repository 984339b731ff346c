//! Where background tasks run: each generation's `Executor` spawns them on its tracker (so
//! a draining generation waits for them), and the process-wide `TaskBoard` knows which
//! tasks run right now and which generation is live, so a task cut at a drain deadline is
//! handed on to the live generation, and a stop leaves every task at its last checkpoint.
//! What a task does is `import`'s; this knows only ids and futures.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Catalog;

/// Shared by every generation of one process.
pub struct TaskBoard {
    running: Mutex<HashSet<String>>,
    live: Mutex<Option<Catalog>>,
    /// Cancelled by a stop: every task ends at its checkpoint and nothing is handed on.
    stop: CancellationToken,
    /// Tasks run on the control runtime, which outlives every worker pool.
    runtime: Handle,
}

impl TaskBoard {
    /// Must be called inside the runtime tasks should run on.
    pub fn new() -> Arc<TaskBoard> {
        Arc::new(TaskBoard {
            running: Mutex::default(),
            live: Mutex::default(),
            stop: CancellationToken::new(),
            runtime: Handle::current(),
        })
    }

    fn running(&self) -> MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> MutexGuard<'_, Option<Catalog>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.running().contains(id)
    }

    /// How many tasks run now, in every generation.
    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    /// Makes `catalog` the generation tasks are handed on to.
    pub(super) fn set_live(&self, catalog: Catalog) {
        *self.live() = Some(catalog);
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

    /// Runs task `id` unless it already runs somewhere in this process. When this
    /// generation is cut before the task ends, the task is handed on to the live one,
    /// which takes it up from its persisted state.
    pub fn spawn<F>(&self, id: String, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.board.stop.is_cancelled() || !self.board.running().insert(id.clone()) {
            return;
        }
        let board = self.board.clone();
        let cut = self.cut.clone();
        self.tracker.spawn_on(
            async move {
                let ending = tokio::select! {
                    () = work => Ending::Finished,
                    () = cut.cancelled() => Ending::Cut,
                    () = board.stop.cancelled() => Ending::Stopped,
                };
                board.running().remove(&id);
                match ending {
                    Ending::Finished => {}
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
            &self.board.runtime,
        );
    }
}
