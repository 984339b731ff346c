//! Prometheus metrics: the process's counters and histograms (one set for the process's
//! life, across generations, as a scraper expects), the gauges read from live state at
//! each scrape, and their text exposition (`prometheus-client`). It depends on nothing of
//! glint: the server hands it a `LiveState` to read, the API and the lifecycle record into
//! `global()`. Serving the text on `metrics.listen` is `endpoint.rs`.

pub mod endpoint;

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// What a request is counted under: its route template (`/v2/images/{id}`), not its path,
/// so that the number of series stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Cow<'static, str>,
    pub method: Method,
    pub status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Cow<'static, str>,
    pub method: Method,
}

/// The methods the API has; anything else is `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Method {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OTHER,
}

impl From<&http::Method> for Method {
    fn from(method: &http::Method) -> Self {
        match *method {
            http::Method::GET => Method::GET,
            http::Method::HEAD => Method::HEAD,
            http::Method::POST => Method::POST,
            http::Method::PUT => Method::PUT,
            http::Method::PATCH => Method::PATCH,
            http::Method::DELETE => Method::DELETE,
            _ => Method::OTHER,
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

/// Label values written as the given names rather than as the variants' names.
macro_rules! label_values {
    ($type:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                let name = match self {
                    $(Self::$variant => $name),+
                };
                EncodeLabelValue::encode(&name, encoder)
            }
        }
    };
}

label_values!(StatusClass {
    Informational => "1xx",
    Success => "2xx",
    Redirection => "3xx",
    ClientError => "4xx",
    ServerError => "5xx",
});
label_values!(ReloadResult { Applied => "applied", Rejected => "rejected" });
label_values!(CutReason { Deadline => "deadline", Bound => "bound" });

impl From<http::StatusCode> for StatusClass {
    fn from(status: http::StatusCode) -> Self {
        match status.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    Applied,
    Rejected,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub outcome: ReloadResult,
}

/// Why a draining generation's remaining work was cut.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CutReason {
    /// `server.drain_timeout` passed.
    Deadline,
    /// More than `server.max_draining_generations` were draining.
    Bound,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CutLabels {
    pub reason: CutReason,
}

/// What the running process is made of at the moment of a scrape, read from it then
/// rather than mirrored in counters that could drift.
pub trait LiveState: Send + Sync {
    fn snapshot(&self) -> Snapshot;
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub connections_open: usize,
    pub connections_idle: usize,
    /// The current generation and the draining ones.
    pub generations_alive: usize,
    pub generations_draining: usize,
    /// Requests not yet answered, in every generation.
    pub requests_in_flight: usize,
    /// Data transfers holding a slot (`server.max_transfers`).
    pub transfers_in_flight: usize,
    pub transfers_limit: usize,
    pub tasks_running: usize,
    /// `(store id, free bytes)` of each store that has a local filesystem.
    pub store_free_bytes: Vec<(String, u64)>,
    /// The current generation's database pools.
    pub db_connections_open: usize,
    pub db_connections_idle: usize,
    pub db_connections_max: usize,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    reload_duration: Histogram,
    drain_cuts: Family<CutLabels, Counter>,
    store_read: Family<StoreLabels, Counter>,
    store_written: Family<StoreLabels, Counter>,
    tasks: Family<TaskLabels, Counter>,
    cache: Family<ResultLabels, Counter>,
    keystone_validations: Family<ResultLabels, Counter>,
    keystone_cache_hits: Counter,
    tls_handshakes: Family<ResultLabels, Counter>,
    handover: Family<ResultLabels, Counter>,
    live: Arc<LiveCollector>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub method: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics: what every generation records into.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("glint");
        let requests = registered(
            &mut registry,
            "http_requests",
            "HTTP requests answered, by route template, method and status class",
            Family::<RequestLabels, Counter>::default(),
        );
        let request_duration = registered(
            &mut registry,
            "http_request_duration_seconds",
            "Time from a request's head to its response's head, by route template and method",
            Family::<RouteLabels, Histogram>::new_with_constructor(duration_histogram),
        );
        let reloads = registered(
            &mut registry,
            "reloads",
            "Reloads, by outcome",
            Family::<ReloadLabels, Counter>::default(),
        );
        let reload_duration = registered(
            &mut registry,
            "reload_duration_seconds",
            "Time from a reload's start to its outcome",
            Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        );
        let drain_cuts = registered(
            &mut registry,
            "drain_cuts",
            "Draining generations whose remaining work was cut, by reason",
            Family::<CutLabels, Counter>::default(),
        );
        let store_read = registered(
            &mut registry,
            "store_read_bytes",
            "Image data read from each store (downloads, cache fills, copies)",
            Family::<StoreLabels, Counter>::default(),
        );
        let store_written = registered(
            &mut registry,
            "store_written_bytes",
            "Image data written into each store (uploads, stages, imports, copies)",
            Family::<StoreLabels, Counter>::default(),
        );
        let tasks = registered(
            &mut registry,
            "tasks",
            "Background tasks (imports) finished on this node, by import method and status",
            Family::<TaskLabels, Counter>::default(),
        );
        let cache = registered(
            &mut registry,
            "cache_requests",
            "Downloads the image cache was asked for: hit or miss",
            Family::<ResultLabels, Counter>::default(),
        );
        let keystone_validations = registered(
            &mut registry,
            "keystone_validations",
            "Tokens asked of Keystone, by answer: valid, invalid, unavailable",
            Family::<ResultLabels, Counter>::default(),
        );
        let keystone_cache_hits = registered(
            &mut registry,
            "keystone_cache_hits",
            "Tokens answered from the cache of validated tokens",
            Counter::default(),
        );
        let tls_handshakes = registered(
            &mut registry,
            "tls_handshakes",
            "TLS handshakes on glint's own listeners (server.tls), by result: ok, failed",
            Family::<ResultLabels, Counter>::default(),
        );
        let handover = registered(
            &mut registry,
            "connections_handed_over",
            "Keep-alive connections across restarts: parked at stop, taken back and served at \
             start, or closed at start (too old, gone)",
            Family::<ResultLabels, Counter>::default(),
        );
        // Every series whose labels are known ahead is shown from the start, at zero: a
        // rate or an alert over it works before the first event.
        for outcome in [ReloadResult::Applied, ReloadResult::Rejected] {
            let _ = reloads.get_or_create(&ReloadLabels { outcome });
        }
        for reason in [CutReason::Deadline, CutReason::Bound] {
            let _ = drain_cuts.get_or_create(&CutLabels { reason });
        }
        for result in ["hit", "miss"] {
            let _ = cache.get_or_create(&ResultLabels { result });
        }
        for result in ["valid", "invalid", "unavailable"] {
            let _ = keystone_validations.get_or_create(&ResultLabels { result });
        }
        for result in ["ok", "failed"] {
            let _ = tls_handshakes.get_or_create(&ResultLabels { result });
        }
        for result in ["parked", "taken_back", "closed"] {
            let _ = handover.get_or_create(&ResultLabels { result });
        }
        let live = Arc::new(LiveCollector::default());
        registry.register_collector(Box::new(live.clone()));
        Metrics {
            registry,
            requests,
            request_duration,
            reloads,
            reload_duration,
            drain_cuts,
            store_read,
            store_written,
            tasks,
            cache,
            keystone_validations,
            keystone_cache_hits,
            tls_handshakes,
            handover,
            live,
        }
    }

    pub fn record_request(
        &self,
        route: Cow<'static, str>,
        method: &http::Method,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        let method = Method::from(method);
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.into(),
            })
            .inc();
    }

    pub fn record_reload(&self, outcome: ReloadResult, elapsed: Duration) {
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
        self.reload_duration.observe(elapsed.as_secs_f64());
    }

    pub fn record_drain_cut(&self, reason: CutReason) {
        self.drain_cuts.get_or_create(&CutLabels { reason }).inc();
    }

    /// A task of import `method` that ended with `status` (`success`, `failure`).
    pub fn record_task(&self, method: &'static str, status: &'static str) {
        self.tasks
            .get_or_create(&TaskLabels { method, status })
            .inc();
    }

    /// A download asked of the image cache: `hit` or `miss`.
    pub fn record_cache(&self, result: &'static str) {
        self.cache.get_or_create(&ResultLabels { result }).inc();
    }

    /// A token asked of Keystone: `valid`, `invalid` or `unavailable`.
    pub fn record_keystone_validation(&self, result: &'static str) {
        self.keystone_validations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn record_keystone_cache_hit(&self) {
        self.keystone_cache_hits.inc();
    }

    /// A TLS handshake: `ok` or `failed`.
    pub fn record_tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Connections handed across a restart: `parked` (at stop), `taken_back` or `closed`
    /// (at start).
    pub fn record_handover(&self, result: &'static str, connections: u64) {
        self.handover
            .get_or_create(&ResultLabels { result })
            .inc_by(connections);
    }

    /// The counter of bytes read from `store`, to count a stream with.
    pub fn store_read(&self, store: &str) -> Counter {
        self.store_read
            .get_or_create(&StoreLabels {
                store: store.to_string(),
            })
            .clone()
    }

    /// The counter of bytes written into `store`.
    pub fn store_written(&self, store: &str) -> Counter {
        self.store_written
            .get_or_create(&StoreLabels {
                store: store.to_string(),
            })
            .clone()
    }

    /// Where the gauges are read from; the server sets it once it runs.
    pub fn set_live(&self, state: Arc<dyn LiveState>) {
        self.live.state.store(Some(Arc::new(state)));
    }

    /// The text exposition format (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `metric`, registered under `name`; the registry keeps a handle of it.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Request latencies from 0.1 ms to about 13 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

#[derive(Default)]
struct LiveCollector {
    state: ArcSwapOption<Arc<dyn LiveState>>,
}

impl std::fmt::Debug for LiveCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.state.load_full() else {
            return Ok(());
        };
        let snapshot = state.snapshot();
        let gauges: [(&str, &str, usize); 12] = [
            (
                "connections_open",
                "Client connections open",
                snapshot.connections_open,
            ),
            (
                "connections_idle",
                "Client connections idle between requests",
                snapshot.connections_idle,
            ),
            (
                "generations_alive",
                "Generations serving or draining",
                snapshot.generations_alive,
            ),
            (
                "generations_draining",
                "Old generations finishing their work",
                snapshot.generations_draining,
            ),
            (
                "requests_in_flight",
                "Requests and background tasks not finished, in every generation",
                snapshot.requests_in_flight,
            ),
            (
                "transfers_in_flight",
                "Data transfers holding a slot",
                snapshot.transfers_in_flight,
            ),
            (
                "transfers_limit",
                "Data transfers allowed at once (server.max_transfers)",
                snapshot.transfers_limit,
            ),
            (
                "tasks_running",
                "Background tasks (imports) running",
                snapshot.tasks_running,
            ),
            (
                "db_connections_open",
                "Database connections open in the current generation's pools",
                snapshot.db_connections_open,
            ),
            (
                "db_connections_idle",
                "Database connections idle in the current generation's pools",
                snapshot.db_connections_idle,
            ),
            (
                "db_connections_in_use",
                "Database connections in use in the current generation's pools",
                snapshot
                    .db_connections_open
                    .saturating_sub(snapshot.db_connections_idle),
            ),
            (
                "db_connections_max",
                "Database connections the current generation's pools may open",
                snapshot.db_connections_max,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if !snapshot.store_free_bytes.is_empty() {
            let mut family = encoder.encode_descriptor(
                "store_free_bytes",
                "Free space where a filesystem store writes",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (store, free) in snapshot.store_free_bytes {
                let gauge = ConstGauge::new(i64::try_from(free).unwrap_or(i64::MAX));
                let labels = StoreLabels { store };
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
