//! This node among the glint processes that share one database: the holder it writes on
//! the images it claims and the tasks it runs, the upkeep that renews those while it lives,
//! and what it takes over from nodes that died (their leases expired). Which tasks run in
//! this process is `tasks`' business; what a task does is `import_task`'s.

use std::time::Duration;

use super::Catalog;
use crate::db::Holder;
use crate::domain::time::{self, Timestamp};

/// The longest pause between two rounds of upkeep: it is also how long a task handed to
/// this node by another (an import of data staged here) may wait to start.
const MAX_UPKEEP_INTERVAL: Duration = Duration::from_secs(2);

impl Catalog {
    /// This node as the holder of a claim or lease taken now.
    pub(super) fn holder(&self) -> Holder<'_> {
        self.holder_of(self.executor.board().node())
    }

    /// `node` as the holder of a claim or lease taken now.
    pub(super) fn holder_of<'a>(&self, node: &'a str) -> Holder<'a> {
        Holder {
            node,
            until: lease_end(time::now(), self.lease),
        }
    }

    pub(super) fn upkeep_interval(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_millis(100), MAX_UPKEEP_INTERVAL)
    }

    /// One round: renew, repair, take up, take over. Errors are logged (once while they
    /// last: the database may be down for a while, and a round runs every few seconds) and
    /// the next round tries again.
    pub(super) async fn upkeep(&self) {
        let mut failures = Vec::new();
        let held: Vec<String> = self.executor.board().held().into_iter().collect();
        if let Err(e) = self.db.renew(self.holder(), &held).await {
            failures.push(format!("claims and task leases not renewed: {e}"));
        }
        // Stages whose release the database refused (it was down) are released now.
        if let Err(e) = self.recover().await {
            failures.push(format!("stages not checked: {e}"));
        }
        if let Err(e) = self.take_up_tasks().await {
            failures.push(format!("unfinished tasks not read: {e}"));
        }
        let now = time::now();
        match self.db.requeue_interrupted(None, &[], now).await {
            Ok(0) => {}
            Ok(requeued) => {
                tracing::warn!(
                    requeued,
                    "uploads of a node that stopped renewing its claims: images queued again"
                );
            }
            Err(e) => failures.push(format!("abandoned uploads not checked: {e}")),
        }
        match self.db.requeue_abandoned_stages(now).await {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(image_id = %id, "staged on a node that stopped renewing its claim; image queued again");
                }
            }
            Err(e) => failures.push(format!("abandoned stages not checked: {e}")),
        }
        // Images queued for the cache before a restart, or while the prefetcher ended.
        self.prefetch();
        let board = self.executor.board();
        match (failures.first(), board.upkeep_failing(!failures.is_empty())) {
            (Some(first), false) => {
                tracing::warn!(error = %first, failed = failures.len(), "node upkeep failing; retried every round, logged again when it recovers");
            }
            (Some(first), true) => tracing::debug!(error = %first, "node upkeep still failing"),
            (None, true) => tracing::info!("node upkeep recovered"),
            (None, false) => {}
        }
    }

    /// Runs every unfinished task this node is to run and does not run yet: its own from
    /// a previous process, those handed to it, and those whose node died.
    pub(super) async fn take_up_tasks(&self) -> Result<(), crate::db::DbError> {
        let node = self.executor.board().node().to_string();
        for id in self.db.tasks_for(&node, time::now()).await? {
            // Started once, however many rounds (activation, upkeep) see it at once.
            if self.resume(&id).await {
                tracing::info!(task_id = %id, "resuming task");
            }
        }
        Ok(())
    }
}

fn lease_end(now: Timestamp, lease: Duration) -> Timestamp {
    now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX))
}

/// This node's identity, kept in `<state_dir>/node-id` (made at the first start): the
/// staging area and the temporary files a node's claims stand for live in its state
/// directory, so a restarted process is the same node and takes its own claims back at
/// once instead of waiting for their leases to expire.
pub fn node_id(state_dir: &std::path::Path) -> std::io::Result<String> {
    let path = state_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("{}", uuid::Uuid::new_v4());
    let temporary = state_dir.join(".node-id.new");
    std::fs::write(&temporary, format!("{id}\n"))?;
    std::fs::rename(&temporary, &path)?;
    Ok(id)
}
