//! The table of open connections across every worker pool, and the admission rule that
//! keeps it under `server.max_connections`: at the cap, the connections idle longest
//! (between requests, nothing begun) are asked to close to make room; with none idle, new
//! connections wait in the kernel's backlog. It knows connection states, not HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where a connection is between its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// A request in flight: never closed to make room.
    Busy = 0,
    /// Waiting for a request; no byte of one has arrived.
    Idle = 1,
    /// The first bytes of a request's head arrived; the head is not complete.
    Head = 2,
    /// Admitted, not serving yet.
    Accepting = 3,
}

/// One connection as the table sees it; its connection task moves it between phases.
pub struct Entry {
    id: u64,
    phase: AtomicU8,
    /// When the current phase began, as a tick of the table's phase clock: a counter, so
    /// that phases begun within one clock tick still order strictly.
    since: AtomicU64,
    /// Cancelled when the connection is asked to close to make room.
    pub evict: CancellationToken,
    /// Holds one of the stop's places in the fd store (`Handover::reserve`): goes to the
    /// next process once idle, so its responses do not ask the client to close.
    pub handover_place: AtomicBool,
    /// A TLS connection: never parked.
    pub tls: AtomicBool,
    /// Set once the connection is being parked for the next process: the end of its HTTP
    /// connection must leave the socket open (no FIN to the client).
    pub parking: AtomicBool,
    table: Arc<Connections>,
}

impl Entry {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Idle,
            2 => Phase::Head,
            3 => Phase::Accepting,
            _ => Phase::Busy,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.since.store(self.table.tick(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
        if phase == Phase::Idle && self.table.at_cap.load(Ordering::Relaxed) {
            // An admission waiting for room may close this one now.
            self.table.room.notify_waiters();
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.entries().remove(&self.id);
        self.table.room.notify_waiters();
    }
}

pub struct Connections {
    limit: AtomicUsize,
    entries: Mutex<HashMap<u64, std::sync::Weak<Entry>>>,
    next_id: AtomicU64,
    /// Notified when a connection ends or becomes idle.
    room: Notify,
    /// Whether the table is at its cap: logged once when an episode starts and ends.
    at_cap: AtomicBool,
    /// The phase clock.
    ticks: AtomicU64,
}

impl Connections {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Connections {
            limit: AtomicUsize::new(limit.max(1)),
            entries: Mutex::default(),
            next_id: AtomicU64::new(0),
            room: Notify::new(),
            at_cap: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, std::sync::Weak<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }

    /// `(open, idle)`: accepted connections, and those of them waiting for a request with
    /// nothing of one begun.
    pub fn counts(&self) -> (usize, usize) {
        let live: Vec<Arc<Entry>> = self
            .entries()
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let open = live
            .iter()
            .filter(|e| e.phase() != Phase::Accepting)
            .count();
        let idle = live.iter().filter(|e| e.phase() == Phase::Idle).count();
        (open, idle)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A reload changed the cap; a lower one closes idle connections as new ones arrive.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Registers a connection without waiting for room: one already accepted while its
    /// accept loop is stopping must still be served.
    pub fn admit_over_cap(self: &Arc<Self>) -> Arc<Entry> {
        let mut entries = self.entries();
        self.register(&mut entries)
    }

    fn register(
        self: &Arc<Self>,
        entries: &mut HashMap<u64, std::sync::Weak<Entry>>,
    ) -> Arc<Entry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            phase: AtomicU8::new(Phase::Accepting as u8),
            since: AtomicU64::new(self.tick()),
            evict: CancellationToken::new(),
            handover_place: AtomicBool::new(false),
            tls: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            table: self.clone(),
        });
        entries.insert(id, Arc::downgrade(&entry));
        entry
    }

    /// Waits until there is room for one more connection (one just accepted) and takes it.
    /// At the cap, asks the connections idle longest to close: only on demand, so idle
    /// connections are never closed while no one waits.
    pub async fn admit(self: &Arc<Self>) -> Arc<Entry> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let live: Vec<Arc<Entry>> = {
                let mut entries = self.entries();
                let limit = self.limit();
                if entries.len() < limit {
                    if self.at_cap.swap(false, Ordering::Relaxed) {
                        tracing::info!(limit, "below server.max_connections again");
                    }
                    return self.register(&mut entries);
                }
                if !self.at_cap.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit,
                        "at server.max_connections: closing the connections idle longest; new \
                         connections wait while none is idle"
                    );
                }
                entries
                    .values()
                    .filter_map(std::sync::Weak::upgrade)
                    .collect()
            };
            // Outside the lock: dropping the last reference to an entry takes it.
            let excess = (live.len() + 1).saturating_sub(self.limit());
            evict_longest_idle(live, excess);
            room.await;
        }
    }
}

/// Asks up to `count` idle connections, longest idle first, to close (those already asked
/// count too, so repeated calls do not close more than needed).
fn evict_longest_idle(mut idle: Vec<Arc<Entry>>, count: usize) {
    idle.retain(|e| e.phase() == Phase::Idle);
    let asked = idle.iter().filter(|e| e.evict.is_cancelled()).count();
    idle.retain(|e| !e.evict.is_cancelled());
    idle.sort_by_key(|e| e.since.load(Ordering::Relaxed));
    for entry in idle.iter().take(count.saturating_sub(asked)) {
        entry.evict.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_is_asked_to_close() {
        let table = Connections::new(2);
        let first = table.admit().await;
        let second = table.admit().await;
        first.set_phase(Phase::Idle);
        second.set_phase(Phase::Idle);
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.admit().await }
        });
        first.evict.cancelled().await;
        assert!(!second.evict.is_cancelled());
        drop(first);
        let third = waiting.await.unwrap();
        assert_eq!(third.phase(), Phase::Accepting);
        assert_eq!(table.counts(), (1, 1));
    }

    #[tokio::test]
    async fn with_none_idle_a_new_connection_waits() {
        let table = Connections::new(1);
        let busy = table.admit().await;
        busy.set_phase(Phase::Head);
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.admit().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(!busy.evict.is_cancelled());
        busy.set_phase(Phase::Idle);
        busy.evict.cancelled().await;
        drop(busy);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn a_raised_limit_admits_the_waiting() {
        let table = Connections::new(1);
        let busy = table.admit().await;
        busy.set_phase(Phase::Busy);
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.admit().await }
        });
        tokio::task::yield_now().await;
        table.set_limit(2);
        let second = waiting.await.unwrap();
        second.set_phase(Phase::Idle);
        assert_eq!(table.counts(), (2, 1));
    }
}
