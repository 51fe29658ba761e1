//! Prometheus metrics (`--metrics-address`), in the text exposition format
//! via the `prometheus-client` crate.
//!
//! Counters and histograms are updated where things happen (the HTTP
//! service, the pool); gauges that describe the pool's state (processes by
//! state, queue length, per-worker memory) are set from a status snapshot
//! just before each scrape, so they cost nothing between scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::report::{StatusReport, WorkerState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusClass {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabel {
    pub kind: &'static str,
    pub pid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: String,
    pub pid: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusClass, Counter>,
    pub request_duration: Histogram,
    pub queue_wait: Histogram,
    pub spawns: Family<MethodLabel, Counter>,
    pub spawn_duration: Family<MethodLabel, Histogram>,
    queue_length: Gauge,
    processes: Family<StateLabel, Gauge>,
    sessions: Gauge,
    session_capacity: Gauge,
    pub restarts: Family<ReasonLabel, Counter>,
    reforks: Counter,
    template: Family<TemplateLabel, Gauge>,
    worker_pss: Family<WorkerLabel, Gauge<u64, AtomicU64>>,
    worker_private_dirty: Family<WorkerLabel, Gauge<u64, AtomicU64>>,
    /// The last minute, for the live status page.
    pub recent: crate::recent::Recent,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rustrack");
        let requests = Family::<StatusClass, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by status class",
            requests.clone(),
        );
        let request_duration = latency_histogram();
        registry.register(
            "request_duration_seconds",
            "Time from the request's head to the response's head",
            request_duration.clone(),
        );
        let queue_wait = latency_histogram();
        registry.register(
            "queue_wait_seconds",
            "Time requests waited for a worker",
            queue_wait.clone(),
        );
        let spawns = Family::<MethodLabel, Counter>::default();
        registry.register("spawns", "Workers started, by spawn method", spawns.clone());
        let spawn_duration = Family::<MethodLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "spawn_duration_seconds",
            "Time from a spawn decision to the worker being ready",
            spawn_duration.clone(),
        );
        let queue_length = Gauge::default();
        registry.register(
            "queue_length",
            "Requests waiting for a worker",
            queue_length.clone(),
        );
        let processes = Family::<StateLabel, Gauge>::default();
        registry.register("processes", "Worker processes, by state", processes.clone());
        let sessions = Gauge::default();
        registry.register(
            "sessions",
            "Requests in progress on workers",
            sessions.clone(),
        );
        let session_capacity = Gauge::default();
        registry.register(
            "session_capacity",
            "Requests the serving workers can run at once (workers ready or busy x --threads-per-worker)",
            session_capacity.clone(),
        );
        let restarts = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "worker_restarts",
            "Workers stopped or lost, by reason",
            restarts.clone(),
        );
        let reforks = Counter::default();
        registry.register(
            "reforks",
            "Workers promoted to be the template new workers fork from",
            reforks.clone(),
        );
        let template = Family::<TemplateLabel, Gauge>::default();
        registry.register(
            "template",
            "The template new workers fork from (1 for the current one), by kind",
            template.clone(),
        );
        let worker_pss = Family::<WorkerLabel, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "worker_pss_bytes",
            "Proportional set size of each worker",
            worker_pss.clone(),
        );
        let worker_private_dirty = Family::<WorkerLabel, Gauge<u64, AtomicU64>>::default();
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

    pub fn observe_request(&self, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.get_or_create(&StatusClass { class }).inc();
        self.request_duration.observe(seconds);
        self.recent.record(seconds);
    }

    pub fn observe_restart(&self, reason: &'static str) {
        self.restarts.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn observe_refork(&self) {
        self.reforks.inc();
    }

    pub fn observe_spawn(&self, method: &'static str, seconds: f64) {
        let label = MethodLabel { method };
        self.spawns.get_or_create(&label).inc();
        self.spawn_duration.get_or_create(&label).observe(seconds);
    }

    /// Renders the exposition text from a fresh status snapshot.
    pub fn render(&self, status: &StatusReport) -> String {
        self.queue_length.set(status.requests_in_queue as i64);
        for state in WorkerState::ALL {
            let n = status.workers.iter().filter(|w| w.state == state).count();
            self.processes
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(n as i64);
        }
        self.sessions
            .set(status.workers.iter().map(|w| i64::from(w.sessions)).sum());
        let serving = status.workers.iter().filter(|w| w.state.serves()).count() as i64;
        self.session_capacity
            .set(serving * i64::from(status.threads_per_worker));
        self.template.clear();
        if let Some(t) = &status.template {
            let label = TemplateLabel {
                kind: t.kind.as_str(),
                pid: t.pid.to_string(),
            };
            self.template.get_or_create(&label).set(1);
        }
        // Workers come and go: rebuild the per-worker series each scrape.
        self.worker_pss.clear();
        self.worker_private_dirty.clear();
        for w in &status.workers {
            let (Some(pid), Some(mem)) = (w.pid, w.memory) else {
                continue;
            };
            let label = WorkerLabel {
                worker: w.id.to_string(),
                pid: pid.to_string(),
            };
            self.worker_pss.get_or_create(&label).set(mem.pss);
            self.worker_private_dirty
                .get_or_create(&label)
                .set(mem.private_dirty);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
