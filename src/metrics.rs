//! Prometheus metrics (`--metrics-address`), in the text exposition format
//! via the `prometheus-client` crate.
//!
//! One registry per instance ([`Metrics`]); each app's pool and requests
//! count through an [`AppMetrics`] handle. With several apps every series
//! carries an `app` label; with one app it carries none, so single-app
//! dashboards are unchanged. A handle resolves its per-app series once, so
//! counting a request is an atomic add, not a label lookup.
//!
//! Counters and histograms are updated where things happen (the HTTP
//! service, the pool); gauges that describe the pool's state (processes by
//! state, queue length, per-worker memory) are set from status snapshots
//! just before each scrape, so they cost nothing between scrapes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::report::{StatusReport, WorkerState};

/// A series' labels: the app's (when there are several apps) and its own.
type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A series that has no labels of its own: one series with one app, one
/// per app (by the `app` label) with several. (An empty label set would
/// print as `name{}`.)
enum Single<M, F> {
    One(M),
    PerApp(F),
}

impl<M: Clone> Single<M, Family<Labels, M>>
where
    M: prometheus_client::metrics::TypedMetric + Default,
{
    fn for_app(&self, base: &Labels) -> M {
        match self {
            Single::One(m) => m.clone(),
            Single::PerApp(f) => f.get_or_create(base).clone(),
        }
    }
}

impl Single<Histogram, HistogramFamily> {
    fn histogram_for(&self, base: &Labels) -> Histogram {
        match self {
            Single::One(m) => m.clone(),
            Single::PerApp(f) => f.get_or_create(base).clone(),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_duration: Single<Histogram, HistogramFamily>,
    queue_wait: Single<Histogram, HistogramFamily>,
    spawns: Family<Labels, Counter>,
    spawn_duration: HistogramFamily,
    queue_length: Single<Gauge, Family<Labels, Gauge>>,
    processes: Family<Labels, Gauge>,
    sessions: Single<Gauge, Family<Labels, Gauge>>,
    session_capacity: Single<Gauge, Family<Labels, Gauge>>,
    restarts: Family<Labels, Counter>,
    reforks: Single<Counter, Family<Labels, Counter>>,
    template: Family<Labels, Gauge>,
    worker_pss: Family<Labels, Gauge<u64, AtomicU64>>,
    worker_private_dirty: Family<Labels, Gauge<u64, AtomicU64>>,
    /// The last minute of the whole instance, for the live status page.
    pub recent: crate::recent::Recent,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

fn histograms() -> HistogramFamily {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// Registers a series without labels of its own (see [`Single`]).
fn single<M>(
    registry: &mut Registry,
    several: bool,
    name: &str,
    help: &str,
) -> Single<M, Family<Labels, M>>
where
    M: prometheus_client::encoding::EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    match several {
        true => {
            let f = Family::<Labels, M>::default();
            registry.register(name, help, f.clone());
            Single::PerApp(f)
        }
        false => {
            let m = M::default();
            registry.register(name, help, m.clone());
            Single::One(m)
        }
    }
}

fn single_histogram(
    registry: &mut Registry,
    several: bool,
    name: &str,
    help: &str,
) -> Single<Histogram, HistogramFamily> {
    match several {
        true => {
            let f = histograms();
            registry.register(name, help, f.clone());
            Single::PerApp(f)
        }
        false => {
            let m = latency_histogram();
            registry.register(name, help, m.clone());
            Single::One(m)
        }
    }
}

impl Metrics {
    /// `several`: the instance serves several apps, and every series
    /// carries an `app` label.
    pub fn new(several: bool) -> Self {
        let mut registry = Registry::with_prefix("rustrack");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests answered, by status class",
            requests.clone(),
        );
        let request_duration = single_histogram(
            &mut registry,
            several,
            "request_duration_seconds",
            "Time from the request's head to the response's head",
        );
        let queue_wait = single_histogram(
            &mut registry,
            several,
            "queue_wait_seconds",
            "Time requests waited for a worker",
        );
        let spawns = Family::default();
        registry.register("spawns", "Workers started, by spawn method", spawns.clone());
        let spawn_duration = histograms();
        registry.register(
            "spawn_duration_seconds",
            "Time from a spawn decision to the worker being ready",
            spawn_duration.clone(),
        );
        let queue_length = single(
            &mut registry,
            several,
            "queue_length",
            "Requests waiting for a worker",
        );
        let processes = Family::default();
        registry.register("processes", "Worker processes, by state", processes.clone());
        let sessions = single(
            &mut registry,
            several,
            "sessions",
            "Requests in progress on workers",
        );
        let session_capacity = single(
            &mut registry,
            several,
            "session_capacity",
            "Requests the serving workers can run at once (workers ready or busy x --threads-per-worker)",
        );
        let restarts = Family::default();
        registry.register(
            "worker_restarts",
            "Workers stopped or lost, by reason",
            restarts.clone(),
        );
        let reforks = single(
            &mut registry,
            several,
            "reforks",
            "Workers promoted to be the template new workers fork from",
        );
        let template = Family::default();
        registry.register(
            "template",
            "The template new workers fork from (1 for the current one), by kind",
            template.clone(),
        );
        let worker_pss = Family::default();
        registry.register(
            "worker_pss_bytes",
            "Proportional set size of each worker",
            worker_pss.clone(),
        );
        let worker_private_dirty = Family::default();
        registry.register(
            "worker_private_dirty_bytes",
            "Private dirty memory of each worker (what copy-on-write could not share)",
            worker_private_dirty.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            queue_wait,
            spawns,
            spawn_duration,
            queue_length,
            processes,
            sessions,
            session_capacity,
            restarts,
            reforks,
            template,
            worker_pss,
            worker_private_dirty,
            recent: crate::recent::Recent::default(),
        }
    }

    /// The handle one app counts through; `app` is `None` when the
    /// instance serves one app (no `app` label).
    pub fn app(self: &Arc<Self>, app: Option<&str>) -> AppMetrics {
        let base: Labels = app.map(|a| ("app", a.to_string())).into_iter().collect();
        let with = |name: &'static str, value: &str| {
            let mut l = base.clone();
            l.push((name, value.to_string()));
            l
        };
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| self.requests.get_or_create(&with("class", class)).clone());
        AppMetrics {
            classes,
            request_duration: self.request_duration.histogram_for(&base),
            queue_wait: self.queue_wait.histogram_for(&base),
            reforks: self.reforks.for_app(&base),
            queue_length: self.queue_length.for_app(&base),
            sessions: self.sessions.for_app(&base),
            session_capacity: self.session_capacity.for_app(&base),
            base,
            all: self.clone(),
        }
    }

    /// Renders the exposition text from fresh status snapshots, one per
    /// app, each with the handle it counts through.
    pub fn render(&self, apps: &[(&AppMetrics, &StatusReport)]) -> String {
        self.template.clear();
        // Workers come and go: rebuild the per-worker series each scrape.
        self.worker_pss.clear();
        self.worker_private_dirty.clear();
        for (handle, status) in apps {
            handle.set_gauges(status);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// One app's series (see [`Metrics::app`]).
#[derive(Clone)]
pub struct AppMetrics {
    all: Arc<Metrics>,
    base: Labels,
    classes: [Counter; 5],
    request_duration: Histogram,
    pub queue_wait: Histogram,
    reforks: Counter,
    queue_length: Gauge,
    sessions: Gauge,
    session_capacity: Gauge,
}

impl AppMetrics {
    /// A handle on a registry of its own, for tests.
    pub fn standalone() -> AppMetrics {
        Arc::new(Metrics::new(false)).app(None)
    }

    pub fn registry(&self) -> &Arc<Metrics> {
        &self.all
    }

    fn labels(&self, name: &'static str, value: &str) -> Labels {
        let mut l = self.base.clone();
        l.push((name, value.to_string()));
        l
    }

    pub fn observe_request(&self, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.classes[class].inc();
        self.request_duration.observe(seconds);
        self.all.recent.record(seconds);
    }

    pub fn observe_restart(&self, reason: &'static str) {
        self.all
            .restarts
            .get_or_create(&self.labels("reason", reason))
            .inc();
    }

    pub fn observe_refork(&self) {
        self.reforks.inc();
    }

    pub fn observe_spawn(&self, method: &'static str, seconds: f64) {
        let label = self.labels("method", method);
        self.all.spawns.get_or_create(&label).inc();
        self.all
            .spawn_duration
            .get_or_create(&label)
            .observe(seconds);
    }

    fn set_gauges(&self, status: &StatusReport) {
        let all = &self.all;
        self.queue_length.set(status.requests_in_queue as i64);
        self.sessions
            .set(status.workers.iter().map(|w| i64::from(w.sessions)).sum());
        let serving = status.workers.iter().filter(|w| w.state.serves()).count() as i64;
        self.session_capacity
            .set(serving * i64::from(status.threads_per_worker));
        for state in WorkerState::ALL {
            let n = status.workers.iter().filter(|w| w.state == state).count();
            all.processes
                .get_or_create(&self.labels("state", state.as_str()))
                .set(n as i64);
        }
        if let Some(t) = &status.template {
            let mut label = self.labels("kind", t.kind.as_str());
            label.push(("pid", t.pid.to_string()));
            all.template.get_or_create(&label).set(1);
        }
        for w in &status.workers {
            let (Some(pid), Some(mem)) = (w.pid, w.memory) else {
                continue;
            };
            let mut label = self.labels("worker", &w.id.to_string());
            label.push(("pid", pid.to_string()));
            all.worker_pss.get_or_create(&label).set(mem.pss);
            all.worker_private_dirty
                .get_or_create(&label)
                .set(mem.private_dirty);
        }
    }
}
