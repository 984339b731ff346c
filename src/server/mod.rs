//! The one owner of the lifecycle: listeners, generations, worker pools, reload, drain and
//! stop, driven by a closed enum of `Control` events. It reads no environment variable and
//! installs no signal handler: the supervisor, the log level and the events are passed in.

mod conn;
mod connections;
mod gauges;
mod generation;
pub mod handover;
pub mod listeners;
mod pool;
pub mod status;
pub mod supervisor;
#[cfg(test)]
mod tests;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::app::{App, AppError};
use crate::config::{self, ConfigError, ConfigSource, LoadedConfig};
use crate::metrics::endpoint::MetricsEndpoint;
use crate::metrics::{self, ReloadResult};
use crate::service::handover::PausedUpload;
use conn::ResumedConnection;
use connections::Connections;
use generation::{Draining, Generation};
use handover::{Handover, PassedConnection, TransferRecord};
use listeners::{ListenerError, ListenerSet, Origin, PassedListener};
use pool::WorkerPool;
use status::{
    GenerationStatus, LastReload, ListenerStatus, PoolStatus, ReloadOutcome, StatusReport,
};
use supervisor::{LogLevel, Notice, Supervisor};
use tls::{Tls, TlsError};

/// What the lifecycle can be asked to do. Signals and the control socket become these.
#[derive(Debug)]
pub enum Control {
    /// Re-read the config and swap in a new generation; the reply gets the outcome.
    Reload(Option<oneshot::Sender<ReloadOutcome>>),
    Status(oneshot::Sender<StatusReport>),
    Stop,
}

/// Everything `run` needs, built by the composition root.
pub struct RunArgs {
    pub source: ConfigSource,
    pub config: LoadedConfig,
    pub passed: Vec<PassedListener>,
    /// Keep-alive connections a previous process parked in the fd store.
    pub parked: Vec<PassedConnection>,
    pub supervisor: Arc<dyn Supervisor>,
    pub log_level: Arc<dyn LogLevel>,
    pub controls: mpsc::Receiver<Control>,
    /// `WATCHDOG_USEC`, when the supervisor wants keep-alive pings.
    pub watchdog: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("cannot start the worker pool: {0}")]
    Pool(std::io::Error),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("metrics.listen = {0}: cannot listen: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("metrics.listen = {0}: cannot listen: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("cannot start the new worker pool: {0}")]
    Pool(std::io::Error),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// State every connection task sees.
pub(crate) struct Shared {
    current: ArcSwap<Generation>,
    stopping: AtomicBool,
    /// Every open connection, across pools: admission at `server.max_connections`.
    connections: Arc<Connections>,
    /// Set by the stop, before `stopping`, when idle connections go to the next process.
    handover: OnceLock<Handover>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn handover(&self) -> Option<&Handover> {
        self.handover.get()
    }

    /// A `[server]` setting of the current generation.
    fn server_setting<T>(&self, read: impl FnOnce(&config::ServerConfig) -> T) -> T {
        read(&self.current.load().config.config.server)
    }
}

/// The time systemd grants beyond our own shutdown deadline, so that we, not it, decide
/// what is cut.
const STOP_SLACK: Duration = Duration::from_secs(5);
/// How often stop renews EXTEND_TIMEOUT_USEC while work drains.
const EXTEND_EVERY: Duration = Duration::from_secs(1);
/// EINVAL: what a rejected reload reports as ERRNO=.
const EINVAL: i32 = 22;

struct Lifecycle {
    source: ConfigSource,
    shared: Arc<Shared>,
    listeners: ListenerSet,
    pool: Arc<ArcSwap<WorkerPool>>,
    retired_pools: Arc<Mutex<Vec<Arc<WorkerPool>>>>,
    draining: Arc<Draining>,
    supervisor: Arc<dyn Supervisor>,
    log_level: Arc<dyn LogLevel>,
    next_pool: u64,
    reloads_applied: u64,
    reloads_rejected: u64,
    last_reload: Option<LastReload>,
    /// The metrics listener, while `metrics.listen` is set.
    metrics: Option<MetricsEndpoint>,
}

/// What a reload does with the metrics listener.
enum MetricsMove {
    Keep,
    /// Listening already on the new address; the old one closes at the publish.
    Start(MetricsEndpoint),
    Stop,
}

/// Serves until a `Control::Stop` (or the end of the control channel), then drains under
/// `server.shutdown_timeout`. Must run inside a Tokio runtime: the control plane.
pub async fn run(mut args: RunArgs) -> Result<(), ServerError> {
    let transfers = take_transfers(
        std::mem::take(&mut args.parked),
        &args.config.config.state_dir,
        &*args.supervisor,
    )
    .await;
    let settings = &args.config.config;
    let listeners = ListenerSet::establish(
        std::mem::take(&mut args.passed),
        &settings.server.listen,
        &*args.supervisor,
    )?;
    config::check_exposure(&args.config, listeners.iter().map(|l| l.addr))?;
    let named: Vec<(&str, SocketAddr)> = listeners
        .iter()
        .map(|l| (l.name.as_str(), l.addr))
        .collect();
    let tls = Tls::load(&settings.server.tls, &named)?;
    let metrics = match settings.metrics.listen {
        Some(addr) => {
            Some(MetricsEndpoint::start(addr).map_err(|e| ServerError::Metrics(addr, e))?)
        }
        None => None,
    };
    let handed_over: Vec<PausedUpload> = transfers
        .uploads
        .iter()
        .map(|t| t.record.upload.clone())
        .collect();
    let app = App::build(settings, 1, None, &handed_over).await?;
    let workers = settings.server.workers;
    let connections = Connections::new(max_connections(&settings.server));
    let generation = Arc::new(Generation::new(1, app, args.config, tls));
    generation.app.activate().await;
    let shared = Arc::new(Shared {
        current: ArcSwap::from(generation),
        stopping: AtomicBool::new(false),
        connections,
        handover: OnceLock::new(),
    });
    let pool = WorkerPool::new(1, workers).map_err(ServerError::Pool)?;
    for listener in listeners.iter() {
        pool.accept(listener, shared.clone())
            .map_err(ServerError::Pool)?;
        tracing::info!(name = %listener.name, addr = %listener.addr, origin = ?listener.origin, "listening");
    }
    take_back(
        transfers.connections,
        transfers.uploads,
        &pool,
        &shared,
        &*args.supervisor,
    );
    let retired_pools: Arc<Mutex<Vec<Arc<WorkerPool>>>> = Arc::default();
    let draining: Arc<Draining> = Arc::default();
    let pool = Arc::new(ArcSwap::from(pool));
    metrics::global().set_live(Arc::new(gauges::LiveView {
        shared: shared.clone(),
        draining: draining.clone(),
    }));
    let mut lifecycle = Lifecycle {
        source: args.source,
        shared,
        listeners,
        pool,
        retired_pools,
        draining,
        supervisor: args.supervisor,
        log_level: args.log_level,
        next_pool: 2,
        reloads_applied: 0,
        reloads_rejected: 0,
        last_reload: None,
        metrics,
    };
    let serving = format!("serving generation 1 with {workers} workers");
    lifecycle
        .supervisor
        .notify(&[Notice::Ready, Notice::Status(serving.clone())]);
    tracing::info!(generation = 1, workers, "{serving}");
    if let Some(interval) = args.watchdog {
        lifecycle.spawn_watchdog(interval);
    }

    let controls = &mut args.controls;
    while let Some(event) = controls.recv().await {
        match event {
            Control::Status(reply) => {
                let _ = reply.send(lifecycle.status());
            }
            Control::Stop => break,
            Control::Reload(reply) => {
                if lifecycle.reload_coalescing(reply, controls).await {
                    break;
                }
            }
        }
    }
    lifecycle.stop().await;
    Ok(())
}

/// The connections the previous process parked, with the uploads among them told apart.
struct PassedBack {
    connections: Vec<PassedConnection>,
    uploads: Vec<PassedUpload>,
}

/// A connection parked with its paused upload, to be carried on here.
struct PassedUpload {
    name: String,
    stream: std::net::TcpStream,
    record: TransferRecord,
}

/// Sorts out the uploads among `parked`: each with its record and its connection still
/// within the deadline is carried on; the others are closed and taken out of the fd store,
/// and records no connection came back for are removed (their images go back to `queued`
/// and their temporary files are removed by the first generation's clean-up).
async fn take_transfers(
    parked: Vec<PassedConnection>,
    state_dir: &std::path::Path,
    supervisor: &dyn Supervisor,
) -> PassedBack {
    let (transfers, connections): (Vec<_>, Vec<_>) = parked
        .into_iter()
        .partition(|c| handover::is_transfer(&c.name));
    let state_dir = state_dir.to_path_buf();
    let now = SystemTime::now();
    let read = tokio::task::spawn_blocking(move || {
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for connection in transfers {
            let name = connection.name.clone();
            let taken = TransferRecord::read(&state_dir, &name)
                .map_err(|e| format!("its record cannot be read: {e}"))
                .and_then(|record| {
                    let stream = connection.take(now).map_err(|e| e.to_string())?;
                    Ok(PassedUpload {
                        name: name.clone(),
                        stream,
                        record,
                    })
                });
            match taken {
                Ok(upload) => kept.push(upload),
                Err(reason) => refused.push((name, reason)),
            }
        }
        let names: Vec<String> = kept.iter().map(|u| u.name.clone()).collect();
        TransferRecord::remove_all_but(&state_dir, &names);
        (kept, refused)
    })
    .await;
    let (uploads, refused) = read.unwrap_or_default();
    for (name, reason) in refused {
        tracing::warn!(
            name,
            reason,
            "upload handed over by the previous process not carried on; its image goes back to queued"
        );
        supervisor.remove_fd(&name);
    }
    PassedBack {
        connections,
        uploads,
    }
}

/// Serves the connections the previous process parked on `pool` (those with a paused
/// upload carry it on first), and takes each out of the fd store once it is served here (or
/// closed: too old, or no longer a connection).
fn take_back(
    parked: Vec<PassedConnection>,
    uploads: Vec<PassedUpload>,
    pool: &WorkerPool,
    shared: &Arc<Shared>,
    supervisor: &dyn Supervisor,
) {
    if parked.is_empty() && uploads.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let (mut served, mut closed) = (0_usize, 0_usize);
    let state_dir = shared.current.load().config.config.state_dir.clone();
    for upload in uploads {
        let PassedUpload {
            name,
            stream,
            record,
        } = upload;
        let resumed = record
            .request_head()
            .map(|head| ResumedConnection {
                head,
                upload: Arc::new(record.upload.clone()),
            })
            .ok_or_else(|| "its record is damaged".to_string());
        let adopted = resumed.and_then(|resumed| {
            pool.adopt(stream, shared.clone(), Some(resumed))
                .map_err(|e| e.to_string())
        });
        match adopted {
            Ok(()) => {
                served += 1;
                tracing::info!(
                    image_id = %record.upload.image_id,
                    written = record.upload.written,
                    "carrying on an upload the previous process handed over"
                );
            }
            Err(reason) => {
                closed += 1;
                tracing::warn!(
                    name,
                    reason,
                    "upload handed over by the previous process not carried on"
                );
            }
        }
        TransferRecord::remove(&state_dir, &name);
        supervisor.remove_fd(&name);
    }
    for connection in parked {
        let name = connection.name.clone();
        let adopted = connection
            .take(now)
            .map_err(|e| e.to_string())
            .and_then(|stream| {
                pool.adopt(stream, shared.clone(), None)
                    .map_err(|e| e.to_string())
            });
        match adopted {
            Ok(()) => served += 1,
            Err(reason) => {
                closed += 1;
                tracing::info!(name, reason, "parked connection closed");
            }
        }
        supervisor.remove_fd(&name);
    }
    metrics::global().record_handover("taken_back", served as u64);
    metrics::global().record_handover("closed", closed as u64);
    tracing::info!(
        served,
        closed,
        "took back the connections the previous process parked"
    );
}

/// `server.max_connections`, or by default what the file descriptor limit leaves after a
/// reserve for data files, the database, the listeners and the control socket.
fn max_connections(server: &config::ServerConfig) -> usize {
    server.max_connections.unwrap_or_else(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let reserve = (limit / 4).clamp(64, 1024);
        limit.saturating_sub(reserve).max(1)
    })
}

impl Lifecycle {
    /// Runs one reload, then one more for all reload requests that arrived meanwhile (a
    /// SIGHUP storm becomes at most one extra reload). Returns whether a stop was asked.
    async fn reload_coalescing(
        &mut self,
        first: Option<oneshot::Sender<ReloadOutcome>>,
        controls: &mut mpsc::Receiver<Control>,
    ) -> bool {
        let mut replies = vec![first];
        loop {
            let outcome = self.reload().await;
            for reply in replies.drain(..).flatten() {
                let _ = reply.send(outcome.clone());
            }
            let mut again = false;
            let mut stop = false;
            while let Ok(event) = controls.try_recv() {
                match event {
                    Control::Reload(reply) => {
                        again = true;
                        replies.push(reply);
                    }
                    Control::Status(reply) => {
                        let _ = reply.send(self.status());
                    }
                    Control::Stop => stop = true,
                }
            }
            if stop {
                let refused = ReloadOutcome::Rejected {
                    reason: "glint is stopping".into(),
                };
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(refused.clone());
                }
                return true;
            }
            if !again {
                return false;
            }
        }
    }

    async fn reload(&mut self) -> ReloadOutcome {
        self.supervisor.notify(&[Notice::Reloading]);
        let started = Instant::now();
        let outcome = match self.try_reload().await {
            Ok(applied) => {
                self.reloads_applied += 1;
                metrics::global().record_reload(ReloadResult::Applied, started.elapsed());
                self.supervisor
                    .notify(&[Notice::Ready, Notice::Status(applied.status_line())]);
                tracing::info!(elapsed = ?started.elapsed(), outcome = ?applied, "reload applied");
                applied
            }
            Err(e) => {
                self.reloads_rejected += 1;
                metrics::global().record_reload(ReloadResult::Rejected, started.elapsed());
                let rejected = ReloadOutcome::Rejected {
                    reason: e.to_string(),
                };
                self.supervisor.notify(&[
                    Notice::Ready,
                    Notice::Status(rejected.status_line()),
                    Notice::Errno(EINVAL),
                ]);
                tracing::warn!(reason = %e, "reload rejected; the running generation keeps serving");
                rejected
            }
        };
        self.last_reload = Some(LastReload {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Build everything new off the request path, then publish; on any failure before the
    /// publish, what was built is dropped and the running generation is untouched.
    async fn try_reload(&mut self) -> Result<ReloadOutcome, ReloadError> {
        let loaded = config::load(&self.source)?;
        let current = self.shared.current.load_full();
        config::check_reloadable(
            &current.config.config,
            &loaded.config,
            self.listeners.socket_activated(),
        )?;
        let settings = loaded.config.clone();
        let change = self.listeners.prepare(&settings.server.listen)?;
        let kept = self
            .listeners
            .iter()
            .filter(|l| !change.removed.contains(&l.name))
            .map(|l| l.addr);
        config::check_exposure(&loaded, kept.chain(change.added.iter().map(|l| l.addr)))?;
        let named: Vec<(&str, SocketAddr)> = self
            .listeners
            .iter()
            .filter(|l| !change.removed.contains(&l.name))
            .chain(change.added.iter())
            .map(|l| (l.name.as_str(), l.addr))
            .collect();
        let tls = Tls::load(&settings.server.tls, &named)?;
        let metrics_move = match (settings.metrics.listen, &self.metrics) {
            (None, None) => MetricsMove::Keep,
            (None, Some(_)) => MetricsMove::Stop,
            (Some(addr), Some(running)) if running.configured == addr => MetricsMove::Keep,
            (Some(addr), _) => MetricsMove::Start(
                MetricsEndpoint::start(addr).map_err(|e| ReloadError::Metrics(addr, e))?,
            ),
        };
        let generation_id = current.id + 1;
        let app = App::build(&settings, generation_id, Some(&current.app), &[]).await?;

        let old_pool = self.pool.load_full();
        let new_pool = if settings.server.workers != old_pool.workers {
            let pool = WorkerPool::new(self.next_pool, settings.server.workers)
                .map_err(ReloadError::Pool)?;
            let kept = self
                .listeners
                .iter()
                .filter(|l| !change.removed.contains(&l.name));
            for listener in kept.chain(change.added.iter()) {
                pool.accept(listener, self.shared.clone())
                    .map_err(ReloadError::Pool)?;
            }
            Some(pool)
        } else {
            for (i, listener) in change.added.iter().enumerate() {
                if let Err(e) = old_pool.accept(listener, self.shared.clone()) {
                    for started in &change.added[..i] {
                        old_pool.stop_accepting(&started.name).await;
                    }
                    return Err(ReloadError::Pool(e));
                }
            }
            None
        };

        // Publish: nothing below can fail.
        self.shared
            .connections
            .set_limit(max_connections(&settings.server));
        if let Err(e) = self.log_level.set_level(&settings.log.level) {
            tracing::warn!(error = %e, "log.level not applied");
        }
        let generation = Arc::new(Generation::new(generation_id, app, loaded, tls));
        let old = self.shared.current.swap(generation.clone());
        generation.app.activate().await;
        let pool_rebuilt = new_pool.is_some();
        if let Some(pool) = new_pool {
            self.next_pool += 1;
            self.pool.store(pool);
            self.retire_pool(old_pool.clone(), settings.server.drain_timeout);
            old_pool.accepting_stopped().await;
        } else {
            for name in &change.removed {
                old_pool.stop_accepting(name).await;
            }
        }
        match metrics_move {
            MetricsMove::Keep => {}
            MetricsMove::Start(endpoint) => self.metrics = Some(endpoint),
            MetricsMove::Stop => self.metrics = None,
        }
        let listeners_added = change.added.iter().map(|l| l.name.clone()).collect();
        let listeners_removed = change.removed.clone();
        self.listeners.commit(change, &*self.supervisor);
        self.draining.start(
            old,
            settings.server.max_draining_generations,
            settings.server.drain_timeout,
        );
        Ok(ReloadOutcome::Applied {
            generation: generation_id,
            workers: settings.server.workers,
            pool_rebuilt,
            listeners_added,
            listeners_removed,
        })
    }

    /// A replaced pool stops accepting now and ends when its connections have; at
    /// `deadline` the idle ones are closed, and after another `deadline` the rest dropped.
    fn retire_pool(&self, pool: Arc<WorkerPool>, deadline: Duration) {
        pool.retire();
        self.retired_pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pool.clone());
        let retired = self.retired_pools.clone();
        tokio::spawn(async move {
            let remaining = pool.wait_connections(deadline).await;
            if remaining > 0 {
                tracing::info!(
                    pool = pool.id,
                    remaining,
                    "retired pool: closing connections after drain_timeout"
                );
                pool.close_connections();
                let left = pool.wait_connections(deadline).await;
                if left > 0 {
                    tracing::warn!(pool = pool.id, left, "retired pool: connections dropped");
                }
            }
            pool.shut_down();
            retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|p| p.id != pool.id);
            tracing::info!(pool = pool.id, "retired pool ended");
        });
    }

    fn all_pools(&self) -> Vec<Arc<WorkerPool>> {
        let mut pools = vec![self.pool.load_full()];
        pools.extend(
            self.retired_pools
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        pools
    }

    fn spawn_watchdog(&self, interval: Duration) {
        let pool = self.pool.clone();
        let shared = self.shared.clone();
        let supervisor = self.supervisor.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval / 2);
            loop {
                ticks.tick().await;
                if shared.stopping() {
                    return;
                }
                if pool.load().responsive(interval / 4).await {
                    supervisor.notify(&[Notice::Watchdog]);
                } else {
                    tracing::error!("worker pool unresponsive; withholding the watchdog ping");
                }
            }
        });
    }

    fn status(&self) -> StatusReport {
        let current = self.shared.current.load_full();
        let (connections_open, connections_idle) = self.shared.connections.counts();
        let describe = |g: &Generation| GenerationStatus {
            id: g.id,
            in_flight: g.in_flight(),
            age_secs: g.created.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        };
        StatusReport {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_files: current.config.files.clone(),
            current: describe(&current),
            draining: self
                .draining
                .snapshot()
                .iter()
                .map(|g| describe(g))
                .collect(),
            max_draining_generations: current.config.config.server.max_draining_generations,
            pools: self
                .all_pools()
                .iter()
                .map(|p| PoolStatus {
                    id: p.id,
                    workers: p.workers,
                    live_workers: p.live_workers(),
                    connections: p.connections(),
                    retired: p.retired(),
                })
                .collect(),
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    name: l.name.clone(),
                    addr: l.addr,
                    origin: l.origin,
                    tls: current
                        .tls
                        .as_ref()
                        .is_some_and(|t| t.on(&l.name).is_some()),
                })
                .collect(),
            connections_open,
            connections_idle,
            max_connections: self.shared.connections.limit(),
            tasks_running: current.app.running_tasks(),
            node: current.app.node().to_string(),
            database: current.app.database_shown(),
            reloads_applied: self.reloads_applied,
            reloads_rejected: self.reloads_rejected,
            last_reload: self.last_reload.clone(),
            metrics: self.metrics.as_ref().map(|m| m.bound),
        }
    }

    /// Stop accepting, let in-flight work finish under `shutdown_timeout` (renewing the
    /// supervisor's timeout meanwhile), cut what remains, end the pools.
    async fn stop(self) {
        let handover = self.handover_budget();
        if handover > 0 {
            let _ = self
                .shared
                .handover
                .set(Handover::new(self.supervisor.clone(), handover));
        }
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.supervisor.notify(&[
            Notice::Stopping,
            Notice::Status("stopping: finishing in-flight requests".into()),
        ]);
        let current = self.shared.current.load_full();
        let timeout = current.config.config.server.shutdown_timeout;
        tracing::info!(?timeout, "stopping");
        // Tasks do not hold the stop up: each ends at its checkpoint and the next start
        // takes it up again.
        current.app.stop_tasks();
        let pools = self.all_pools();
        for pool in &pools {
            pool.close_connections();
        }
        current.tracker.close();
        let draining = self.draining.snapshot();
        let work_done = async {
            for pool in &pools {
                pool.wait_connections(Duration::MAX).await;
            }
            current.tracker.wait().await;
            for old in &draining {
                old.tracker.wait().await;
            }
        };
        tokio::pin!(work_done);
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let cut: usize = std::iter::once(&current)
                    .chain(draining.iter())
                    .map(|g| {
                        g.cut.cancel();
                        g.in_flight()
                    })
                    .sum();
                tracing::warn!(cut, "shutdown_timeout passed; in-flight work cut");
                break;
            }
            // Polled once before anything is announced: a stop with nothing in flight
            // asks the supervisor for no extra time.
            if tokio::time::timeout(Duration::ZERO, &mut work_done)
                .await
                .is_ok()
            {
                tracing::info!("all in-flight work finished");
                break;
            }
            self.supervisor
                .notify(&[Notice::ExtendTimeout(remaining + STOP_SLACK)]);
            tokio::select! {
                _ = &mut work_done => {
                    tracing::info!("all in-flight work finished");
                    break;
                }
                _ = tokio::time::sleep(EXTEND_EVERY.min(remaining)) => {}
            }
        }
        for pool in &pools {
            pool.shut_down();
        }
        if let Some(handover) = self.shared.handover() {
            tracing::info!(
                parked = handover.parked(),
                "idle connections parked for the next process"
            );
        }
    }

    /// How many connections the stop may park: `server.handover_connections`, within what
    /// the fd store has room for beside the listeners kept there; 0 when the supervisor
    /// says of no store.
    fn handover_budget(&self) -> usize {
        let Some(capacity) = self.supervisor.fd_store_capacity() else {
            return 0;
        };
        let stored = self
            .listeners
            .iter()
            .filter(|l| l.origin != Origin::SocketUnit)
            .count();
        let wanted = self.shared.server_setting(|s| s.handover_connections);
        wanted.min(capacity.saturating_sub(stored))
    }
}
