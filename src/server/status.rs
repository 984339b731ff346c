//! Values the lifecycle reports: the outcome of a reload and the status snapshot that
//! `glint ctl status` prints. Plain data, serialisable over the control socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::listeners::Origin;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ReloadOutcome {
    Applied {
        generation: u64,
        workers: usize,
        pool_rebuilt: bool,
        listeners_added: Vec<String>,
        listeners_removed: Vec<String>,
    },
    Rejected {
        reason: String,
    },
}

impl ReloadOutcome {
    /// The `STATUS=` line for the supervisor.
    pub fn status_line(&self) -> String {
        match self {
            ReloadOutcome::Applied {
                generation,
                workers,
                ..
            } => format!("serving generation {generation} with {workers} workers"),
            ReloadOutcome::Rejected { reason } => format!("reload failed: {reason}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub id: u64,
    pub in_flight: usize,
    pub age_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStatus {
    pub id: u64,
    pub workers: usize,
    pub live_workers: usize,
    pub connections: usize,
    pub retired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    pub addr: SocketAddr,
    pub origin: Origin,
    /// Whether it speaks TLS (`server.tls`).
    pub tls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastReload {
    /// Seconds since the Unix epoch.
    pub at: u64,
    #[serde(flatten)]
    pub outcome: ReloadOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    pub version: String,
    pub config_files: Vec<PathBuf>,
    pub current: GenerationStatus,
    pub draining: Vec<GenerationStatus>,
    pub max_draining_generations: usize,
    pub pools: Vec<PoolStatus>,
    pub listeners: Vec<ListenerStatus>,
    /// Open connections (accepted, or admitted and waiting in accept) and their cap.
    pub connections_open: usize,
    pub connections_idle: usize,
    pub max_connections: usize,
    /// Background tasks (imports) running now, in every generation.
    pub tasks_running: usize,
    /// This node's id among the nodes sharing the database (`<state_dir>/node-id`).
    pub node: String,
    /// The current generation's database, its password hidden.
    pub database: String,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    pub last_reload: Option<LastReload>,
    /// Where `GET /metrics` is served (the bound address), when `metrics.listen` is set.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}
