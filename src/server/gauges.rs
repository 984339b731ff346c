//! The server's side of a metrics scrape: what is open, alive and draining now, read from
//! the shared state the lifecycle already keeps (nothing is counted twice).

use std::sync::Arc;

use super::Shared;
use super::generation::Draining;
use crate::metrics::{LiveState, Snapshot};

pub(super) struct LiveView {
    pub shared: Arc<Shared>,
    pub draining: Arc<Draining>,
}

impl LiveState for LiveView {
    fn snapshot(&self) -> Snapshot {
        let current = self.shared.current.load_full();
        let draining = self.draining.snapshot();
        let (connections_open, connections_idle) = self.shared.connections.counts();
        let app = current.app.gauges();
        Snapshot {
            connections_open,
            connections_idle,
            generations_alive: 1 + draining.len(),
            generations_draining: draining.len(),
            requests_in_flight: current.in_flight()
                + draining.iter().map(|g| g.in_flight()).sum::<usize>(),
            transfers_in_flight: app.transfers_in_flight,
            transfers_limit: app.transfers_limit,
            tasks_running: current.app.running_tasks(),
            store_free_bytes: app.store_free_bytes,
            db_connections_open: app.pools.open,
            db_connections_idle: app.pools.idle,
            db_connections_max: app.pools.max,
        }
    }
}
