//! A generation: one `App` built from one config, with the bookkeeping that lets it drain.
//! It tracks every request and background task it started; it does not know about
//! connections or worker pools.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::Tls;
use crate::app::App;
use crate::config::LoadedConfig;

pub struct Generation {
    pub id: u64,
    pub app: App,
    pub config: LoadedConfig,
    pub created: SystemTime,
    /// The app's: every in-flight request holds a token of it, and its background tasks
    /// run on it.
    pub tracker: TaskTracker,
    /// Cancelled when the drain deadline (or the draining bound) cuts the remaining work.
    pub cut: CancellationToken,
    /// The id as a header value, made once rather than per response.
    pub header: HeaderValue,
    /// `server.tls` as read for this generation: connections accepted while it is current
    /// shake hands with it.
    pub tls: Option<Arc<Tls>>,
}

impl Generation {
    pub fn new(id: u64, app: App, config: LoadedConfig, tls: Option<Arc<Tls>>) -> Self {
        Generation {
            id,
            tls,
            tracker: app.tracker().clone(),
            cut: app.cut().clone(),
            app,
            config,
            created: SystemTime::now(),
            header: HeaderValue::from(id),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }
}

/// The old generations still finishing their work, oldest first, at most `bound` of them.
#[derive(Default)]
pub struct Draining {
    list: Mutex<Vec<Arc<Generation>>>,
}

impl Draining {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Generation>>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> Vec<Arc<Generation>> {
        self.lock().clone()
    }

    /// Starts draining `old`. If that makes more than `bound` draining generations, the
    /// oldest is cut now: the bound holds at every instant, not eventually.
    pub fn start(self: &Arc<Self>, old: Arc<Generation>, bound: usize, timeout: Duration) {
        old.tracker.close();
        let evicted = {
            let mut list = self.lock();
            list.push(old.clone());
            if list.len() > bound {
                Some(list.remove(0))
            } else {
                None
            }
        };
        if let Some(oldest) = evicted {
            // Logged here, before the reload reports READY, so the journal says why the
            // work was cut by the time anyone looks.
            tracing::warn!(
                generation = oldest.id,
                cut = oldest.in_flight(),
                bound,
                "old generation cut with work in flight: too many draining generations"
            );
            crate::metrics::global().record_drain_cut(crate::metrics::CutReason::Bound);
            oldest.cut.cancel();
        }
        let registry = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = old.tracker.wait() => {
                    tracing::info!(generation = old.id, "old generation drained");
                }
                // Cut for the bound, and already logged above.
                _ = old.cut.cancelled() => {}
                _ = tokio::time::sleep(timeout) => {
                    tracing::warn!(
                        generation = old.id,
                        cut = old.in_flight(),
                        "old generation cut with work in flight: drain_timeout passed"
                    );
                    crate::metrics::global().record_drain_cut(crate::metrics::CutReason::Deadline);
                    old.cut.cancel();
                }
            }
            registry.lock().retain(|g| g.id != old.id);
        });
    }
}
