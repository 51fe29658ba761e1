//! The process pool: carries out what the state machine decides.
//!
//! `machine.rs` decides; this module owns what the decisions are about:
//! the requests waiting for a worker (with the channel to answer each),
//! the workers' connections and bookkeeping, and the child processes. It
//! turns I/O outcomes (a spawn finished, an exchange ended, a process
//! exited, a memory sample) into machine events, and machine actions into
//! tasks. All state sits behind one mutex held only for bookkeeping, never
//! across an await.

pub mod acceptor;
pub mod exchange;
pub mod machine;
pub mod reaper;
pub mod spawner;
pub mod spool;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use http::Response;
use tokio::sync::{oneshot, watch};

use crate::config::SpawnMethod;
use crate::control::{describe_exit, Report};
use crate::metrics::Metrics;
use crate::procfs::Memory;
use crate::status::{StatusReport, WorkerStatus};
use exchange::{
    ExchangeOptions, Failure, ProxyError, ProxyRequest, Reply, ResponseBody, WorkerConn,
};
use machine::{Action, Config, Event, Machine, Reject, SlotState, Ticket, WorkerId};
use spawner::Spawner;

/// A request that is not yet given to a worker sends on to another worker
/// at most this many times when the one it was given to turns out dead.
const MAX_ATTEMPTS: u32 = 3;
/// How long a timed-out worker gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Options the pool needs besides the machine's rules.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub machine: Config,
    pub exchange: ExchangeOptions,
    /// How often worker memory and CPU are sampled.
    pub sample_interval: Duration,
}

struct Pending {
    req: ProxyRequest,
    reply: Reply,
    attempts: u32,
    enqueued: Instant,
}

struct WorkerInfo {
    pid: Option<u32>,
    generation: u64,
    spawn_started: Instant,
    ready_at: Option<Instant>,
    spawn_duration: Option<Duration>,
    processed: u64,
    last_used: Instant,
    /// Present while the worker is idle.
    conn: Option<WorkerConn>,
    memory: Option<Memory>,
    /// CPU ticks at the previous sample, and when.
    cpu: Option<(u64, Instant)>,
    cpu_percent: Option<f64>,
}

struct Inner {
    machine: Machine,
    next_ticket: Ticket,
    pending: HashMap<Ticket, Pending>,
    workers: BTreeMap<WorkerId, WorkerInfo>,
    /// Every live child process we started (preloader, workers), with the
    /// worker id when it is a worker; removed when reaped.
    children: HashMap<u32, Option<WorkerId>>,
    processed_total: u64,
    last_spawn_error: Option<String>,
    last_restart_error: Option<String>,
    restarts_by_reason: BTreeMap<&'static str, u64>,
}

/// Whether the pool has ever had a worker ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Starting,
    Ready,
    Failed(String),
}

pub struct Pool {
    inner: Mutex<Inner>,
    pub spawner: Spawner,
    pub metrics: Arc<Metrics>,
    options: PoolOptions,
    readiness: watch::Sender<Readiness>,
    /// Serialises rolling restarts.
    restart_lock: tokio::sync::Mutex<()>,
    started: Instant,
    started_at: SystemTime,
}

impl Pool {
    pub fn new(options: PoolOptions, spawner: Spawner, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Pool {
            inner: Mutex::new(Inner {
                machine: Machine::new(options.machine),
                next_ticket: 1,
                pending: HashMap::new(),
                workers: BTreeMap::new(),
                children: HashMap::new(),
                processed_total: 0,
                last_spawn_error: None,
                last_restart_error: None,
                restarts_by_reason: BTreeMap::new(),
            }),
            spawner,
            metrics,
            options,
            readiness: watch::channel(Readiness::Starting).0,
            restart_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            started_at: SystemTime::now(),
        })
    }

    /// Spawns up to the minimum and starts the periodic tick and sampler.
    pub fn start(self: &Arc<Self>) {
        self.event(Event::Start);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(pool) => pool.event(Event::Tick),
                    None => return,
                }
            }
        });
        let weak = Arc::downgrade(self);
        let every = self.options.sample_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(pool) => pool.sample(),
                    None => return,
                }
            }
        });
    }

    /// Waits until the first worker is ready, or the first spawn failed.
    pub async fn wait_ready(&self) -> Readiness {
        let mut rx = self.readiness.subscribe();
        let state = rx
            .wait_for(|r| *r != Readiness::Starting)
            .await
            .map(|r| r.clone());
        state.unwrap_or(Readiness::Failed("pool stopped".into()))
    }

    fn event(self: &Arc<Self>, event: Event) {
        let mut inner = self.inner.lock().unwrap();
        let actions = inner.machine.handle(Instant::now(), event);
        self.apply(&mut inner, actions);
    }

    fn apply(self: &Arc<Self>, inner: &mut Inner, actions: Vec<Action>) {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Dispatch { ticket, worker } => {
                    let pending = inner
                        .pending
                        .remove(&ticket)
                        .expect("dispatched ticket is pending");
                    if pending.reply.is_closed() {
                        // The client gave up while waiting: the worker is free.
                        actions.extend(inner.machine.handle(Instant::now(), Event::Done(worker)));
                        continue;
                    }
                    self.metrics
                        .queue_wait
                        .observe(pending.enqueued.elapsed().as_secs_f64());
                    let info = inner
                        .workers
                        .get_mut(&worker)
                        .expect("dispatched worker exists");
                    let conn = info
                        .conn
                        .take()
                        .expect("an idle worker holds its connection");
                    info.last_used = Instant::now();
                    tokio::spawn(run_exchange(
                        self.clone(),
                        worker,
                        conn,
                        pending,
                        self.options.exchange.clone(),
                    ));
                }
                Action::Reject { ticket, reason } => {
                    if let Some(p) = inner.pending.remove(&ticket) {
                        let err = match reason {
                            Reject::QueueFull => ProxyError::QueueFull,
                            Reject::QueueTimeout => ProxyError::QueueTimeout,
                            Reject::Unavailable => ProxyError::Unavailable,
                        };
                        let _ = p.reply.send(Err(err));
                    }
                }
                Action::Spawn { worker, generation } => {
                    let now = Instant::now();
                    inner.workers.insert(
                        worker,
                        WorkerInfo {
                            pid: None,
                            generation,
                            spawn_started: now,
                            ready_at: None,
                            spawn_duration: None,
                            processed: 0,
                            last_used: now,
                            conn: None,
                            memory: None,
                            cpu: None,
                            cpu_percent: None,
                        },
                    );
                    let pool = self.clone();
                    tokio::spawn(async move {
                        match pool.spawner.spawn(&pool, worker).await {
                            Ok(conn) => pool.worker_ready(worker, conn),
                            Err(e) => pool.spawn_failed(worker, format!("{e:#}")),
                        }
                    });
                }
                Action::Stop { worker, reason } => {
                    // Closing its connection tells an idle worker to exit
                    // gracefully (stopping_worker_process, at_exit).
                    if let Some(info) = inner.workers.remove(&worker) {
                        tracing::info!(
                            worker,
                            pid = info.pid,
                            processed = info.processed,
                            "retiring worker ({})",
                            reason.as_str()
                        );
                        *inner.restarts_by_reason.entry(reason.as_str()).or_default() += 1;
                        self.metrics.observe_restart(reason.as_str());
                    }
                }
                Action::StopPreloader => {
                    tracing::info!("stopping the idle preloader (--max-preloader-idle-time)");
                    let pool = self.clone();
                    tokio::spawn(async move { pool.spawner.stop_preloader().await });
                }
                Action::CrashLoop { deaths } => {
                    let msg = format!(
                        "workers died within {:?} of starting {deaths} times in a row; \
                         not respawning for a minute (see the app's errors above)",
                        machine::QUICK_DEATH
                    );
                    tracing::error!("{msg}");
                    inner.last_spawn_error = Some(msg);
                }
            }
        }
    }

    /// Queues a request and waits for its response.
    pub async fn submit(
        self: &Arc<Self>,
        req: ProxyRequest,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(req, tx, 0);
        rx.await
            .unwrap_or_else(|_| Err(ProxyError::WorkerFailed("the request was dropped".into())))
    }

    fn enqueue(self: &Arc<Self>, req: ProxyRequest, reply: Reply, attempts: u32) {
        let mut inner = self.inner.lock().unwrap();
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        inner.pending.insert(
            ticket,
            Pending {
                req,
                reply,
                attempts,
                enqueued: Instant::now(),
            },
        );
        let actions = inner.machine.handle(Instant::now(), Event::Request(ticket));
        self.apply(&mut inner, actions);
    }

    fn worker_ready(self: &Arc<Self>, worker: WorkerId, conn: WorkerConn) {
        let mut inner = self.inner.lock().unwrap();
        let Some(info) = inner.workers.get_mut(&worker) else {
            return; // lost while spawning; dropping conn stops it
        };
        let now = Instant::now();
        info.conn = Some(conn);
        info.ready_at = Some(now);
        info.spawn_duration = Some(now - info.spawn_started);
        tracing::info!(
            worker,
            pid = info.pid,
            generation = info.generation,
            method = self.spawner.method.as_str(),
            "worker ready in {:.1} ms",
            (now - info.spawn_started).as_secs_f64() * 1000.0
        );
        inner.last_spawn_error = None;
        self.metrics.observe_spawn(
            self.spawner.method.as_str(),
            (now - info_spawn_started(&inner, worker)).as_secs_f64(),
        );
        let actions = inner.machine.handle(now, Event::Ready(worker));
        self.apply(&mut inner, actions);
        drop(inner);
        self.readiness.send_if_modified(|r| {
            let changed = *r != Readiness::Ready;
            *r = Readiness::Ready;
            changed
        });
    }

    fn spawn_failed(self: &Arc<Self>, worker: WorkerId, msg: String) {
        tracing::error!(worker, "spawning a worker failed: {msg}");
        let mut inner = self.inner.lock().unwrap();
        if let Some(pid) = inner.workers.remove(&worker).and_then(|w| w.pid) {
            kill(pid, libc::SIGKILL);
        }
        inner.last_spawn_error = Some(msg.clone());
        let actions = inner
            .machine
            .handle(Instant::now(), Event::SpawnFailed(worker));
        self.apply(&mut inner, actions);
        drop(inner);
        self.readiness.send_if_modified(|r| {
            if *r == Readiness::Starting {
                *r = Readiness::Failed(msg);
                true
            } else {
                false
            }
        });
    }

    fn finished(self: &Arc<Self>, worker: WorkerId, conn: WorkerConn) {
        let mut inner = self.inner.lock().unwrap();
        inner.processed_total += 1;
        let Some(info) = inner.workers.get_mut(&worker) else {
            return;
        };
        info.processed += 1;
        info.last_used = Instant::now();
        info.conn = Some(conn);
        let actions = inner.machine.handle(Instant::now(), Event::Done(worker));
        self.apply(&mut inner, actions);
    }

    /// Forgets a worker whose process or connection is gone.
    fn lost(self: &Arc<Self>, worker: WorkerId, reason: &'static str) {
        let mut inner = self.inner.lock().unwrap();
        if inner.workers.remove(&worker).is_none() {
            return;
        }
        *inner.restarts_by_reason.entry(reason).or_default() += 1;
        self.metrics.observe_restart(reason);
        let actions = inner.machine.handle(Instant::now(), Event::Lost(worker));
        self.apply(&mut inner, actions);
    }

    pub fn track_child(&self, pid: u32, worker: Option<WorkerId>) {
        let mut inner = self.inner.lock().unwrap();
        inner.children.insert(pid, worker);
        if let Some(info) = worker.and_then(|w| inner.workers.get_mut(&w)) {
            info.pid = Some(pid);
        }
    }

    pub(crate) fn preloader_started(self: &Arc<Self>) {
        self.event(Event::PreloaderUp);
    }

    fn pid_of(&self, worker: WorkerId) -> Option<u32> {
        self.inner
            .lock()
            .unwrap()
            .workers
            .get(&worker)
            .and_then(|w| w.pid)
    }

    /// Kills a worker outright (it is out of step, or never greeted).
    pub fn kill_worker(&self, worker: WorkerId) {
        if let Some(pid) = self.pid_of(worker) {
            kill(pid, libc::SIGKILL);
        }
    }

    pub fn preloader_report(self: &Arc<Self>, report: Report) {
        match report {
            Report::Spawned { worker_id, pid } => self.track_child(pid, Some(worker_id)),
            Report::SpawnFailed { worker_id, message } => self.spawner.fail(worker_id, message),
            Report::Exited { pid, code, signal } => self.process_exited(pid, code, signal),
            Report::Ready { .. } | Report::LoadError { .. } => {}
        }
    }

    /// A child process ended (reported by the reaper, or by the preloader
    /// for the workers it forked).
    pub fn process_exited(self: &Arc<Self>, pid: u32, code: Option<i32>, signal: Option<i32>) {
        let how = describe_exit(code, signal);
        let (worker, known, was_child) = {
            let mut inner = self.inner.lock().unwrap();
            let role = inner.children.remove(&pid);
            let worker = role.flatten();
            let known = worker
                .and_then(|id| inner.workers.get(&id))
                .map(|w| w.ready_at.is_some());
            (worker, known, role.is_some())
        };
        if self.spawner.preloader_exited(pid) {
            let stopping = self.inner.lock().unwrap().machine.shutting_down();
            if !stopping {
                tracing::warn!(pid, "the preloader {how}; the next spawn starts a new one");
            }
            self.event(Event::PreloaderDown);
            self.spawner.fail_all(&format!("the preloader {how}"));
            return;
        }
        let Some(id) = worker else {
            if was_child {
                tracing::debug!(pid, "old preloader {how}");
            }
            return;
        };
        match known {
            Some(false) => {
                self.spawner.fail(
                    id,
                    format!("worker {id} (pid {pid}) {how} before it was ready"),
                );
            }
            _ => {
                let stopping = self.inner.lock().unwrap().machine.shutting_down();
                if stopping || (code == Some(0) && signal.is_none()) {
                    tracing::info!(worker = id, pid, "worker {how}");
                } else {
                    tracing::warn!(worker = id, pid, "worker {how}");
                }
                if known.is_some() {
                    self.lost(id, "died");
                }
            }
        }
    }

    /// Reads every worker's memory and CPU; feeds the memory limit.
    pub fn sample(self: &Arc<Self>) {
        let pids: Vec<(WorkerId, u32)> = {
            let inner = self.inner.lock().unwrap();
            inner
                .workers
                .iter()
                .filter_map(|(id, w)| w.pid.map(|p| (*id, p)))
                .collect()
        };
        // /proc reads happen outside the lock: they walk page tables.
        let now = Instant::now();
        let samples: Vec<_> = pids
            .into_iter()
            .map(|(id, pid)| {
                (
                    id,
                    crate::procfs::memory(pid).ok(),
                    crate::procfs::stat(pid).ok(),
                )
            })
            .collect();
        let limit_on = self.options.machine.memory_limit.is_some();
        let mut inner = self.inner.lock().unwrap();
        let mut events = Vec::new();
        for (id, memory, stat) in samples {
            let Some(info) = inner.workers.get_mut(&id) else {
                continue;
            };
            if let Some(m) = memory {
                info.memory = Some(m);
                if limit_on {
                    events.push(Event::Memory(id, m.private_dirty + m.swap));
                }
            }
            if let Some(stat) = stat {
                if let Some((ticks, at)) = info.cpu {
                    let secs = now.duration_since(at).as_secs_f64();
                    if secs > 0.0 {
                        let used = stat.cpu_ticks.saturating_sub(ticks) as f64
                            / crate::procfs::ticks_per_second();
                        info.cpu_percent = Some(100.0 * used / secs);
                    }
                }
                info.cpu = Some((stat.cpu_ticks, now));
            }
        }
        for event in events {
            let actions = inner.machine.handle(now, event);
            self.apply(&mut inner, actions);
        }
    }

    /// Rolling restart: with smart spawning a new preloader loads the
    /// current code first; if that fails the old workers keep serving and
    /// the error is returned (and shown by `status`).
    pub async fn restart(self: &Arc<Self>) -> Result<()> {
        let _one_at_a_time = self.restart_lock.lock().await;
        tracing::info!("rolling restart: loading the current code");
        if self.spawner.method == SpawnMethod::Smart {
            if let Err(e) = self.spawner.replace_preloader(self).await {
                let msg = format!("{e:#}");
                tracing::error!("rolling restart aborted, old workers keep serving: {msg}");
                self.inner.lock().unwrap().last_restart_error = Some(msg);
                return Err(e);
            }
        }
        self.inner.lock().unwrap().last_restart_error = None;
        self.event(Event::Restart);
        Ok(())
    }

    /// TTIN/TTOU: one more or one fewer process, within [min, max].
    pub fn scale(self: &Arc<Self>, delta: i32) -> usize {
        self.event(Event::Scale(delta));
        self.inner.lock().unwrap().machine.desired()
    }

    pub fn status(self: &Arc<Self>) -> StatusReport {
        // Fresh memory figures on demand.
        self.sample();
        let inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let cfg = inner.machine.config();
        let workers = inner
            .workers
            .iter()
            .map(|(id, w)| {
                let state = match inner.machine.state_of(*id) {
                    _ if inner.machine.retiring(*id) => "retiring",
                    Some(SlotState::Spawning) | None => "spawning",
                    Some(SlotState::Idle) => "ready",
                    Some(SlotState::Busy) => "busy",
                };
                WorkerStatus {
                    id: *id,
                    pid: w.pid,
                    generation: w.generation,
                    spawn_method: self.spawner.method.as_str().to_string(),
                    state: state.to_string(),
                    sessions: u32::from(matches!(state, "busy" | "retiring")),
                    processed: w.processed,
                    uptime_secs: w.ready_at.map(|t| (now - t).as_secs_f64()).unwrap_or(0.0),
                    last_used_secs_ago: (now - w.last_used).as_secs_f64(),
                    spawn_ms: w.spawn_duration.map(|d| d.as_secs_f64() * 1000.0),
                    cpu_percent: w.cpu_percent,
                    memory: w.memory,
                }
            })
            .collect();
        let preloader_pid = self.spawner.preloader_pid();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            app_root: self.spawner.spec().app_root.clone(),
            spawn_method: self.spawner.method.as_str().to_string(),
            min_instances: cfg.min_instances,
            max_pool_size: cfg.max_pool_size,
            desired_instances: inner.machine.desired(),
            generation: inner.machine.generation(),
            restarting: inner.machine.restarting(),
            processes: inner.workers.len(),
            requests_in_queue: inner.machine.queue_len(),
            processed_total: inner.processed_total,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            started_at: self
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            preloader_pid,
            preloader_memory: preloader_pid.and_then(|p| crate::procfs::memory(p).ok()),
            last_spawn_error: inner.last_spawn_error.clone(),
            last_restart_error: inner.last_restart_error.clone(),
            worker_restarts: inner
                .restarts_by_reason
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            workers,
        }
    }

    /// Every process of the instance with its memory, for `rustrack memory`.
    pub fn memory_report(&self) -> crate::memory::MemoryReport {
        use crate::memory::{MemoryReport, ProcessMemory};
        let me = std::process::id();
        let mut list = vec![(me, "front end", None)];
        if let Some(pid) = self.spawner.preloader_pid() {
            list.push((pid, "preloader", None));
        }
        {
            let inner = self.inner.lock().unwrap();
            for (id, w) in &inner.workers {
                if let Some(pid) = w.pid {
                    list.push((pid, "worker", Some(*id)));
                }
            }
        }
        let processes = list
            .into_iter()
            .map(|(pid, role, worker_id)| ProcessMemory {
                pid,
                ppid: crate::procfs::stat(pid).ok().map(|s| s.ppid),
                role: role.to_string(),
                worker_id,
                memory: crate::procfs::memory(pid).ok(),
            })
            .collect();
        MemoryReport::new(self.spawner.method.as_str().to_string(), processes)
    }

    /// Graceful stop: no more spawns; wait up to `timeout` for queued and
    /// in-flight requests; then close every worker's connection (they exit
    /// on EOF, running their at_exit blocks), stop the preloader, and wait
    /// for all children, killing what is left after a grace period.
    pub async fn shutdown(self: &Arc<Self>, timeout: Duration) {
        self.event(Event::Shutdown);
        let deadline = Instant::now() + timeout;
        while !self.inner.lock().unwrap().machine.drained() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (busy, drained) = {
            let mut inner = self.inner.lock().unwrap();
            for w in inner.workers.values_mut() {
                w.conn = None;
            }
            for (_, p) in inner.pending.drain() {
                let _ = p.reply.send(Err(ProxyError::Unavailable));
            }
            let busy: Vec<u32> = inner.workers.values().filter_map(|w| w.pid).collect();
            (busy, inner.machine.drained())
        };
        if !drained {
            tracing::warn!(
                "shutdown timeout: stopping {} worker(s) with requests in flight",
                busy.len()
            );
            for pid in &busy {
                kill(*pid, libc::SIGTERM);
            }
        }
        self.spawner.stop_preloader().await;
        self.wait_children(Duration::from_secs(10)).await;
    }

    /// Waits for every child to be reaped; SIGKILLs the rest after `grace`.
    pub async fn wait_children(self: &Arc<Self>, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            reaper::reap_all(self);
            let left: Vec<u32> = {
                let mut inner = self.inner.lock().unwrap();
                // Children of a preloader that is already gone were
                // re-parented to us (subreaper) or to init: trust /proc.
                inner
                    .children
                    .retain(|pid, _| crate::procfs::is_alive(*pid));
                inner.children.keys().copied().collect()
            };
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "killing {} process(es) that did not stop: {left:?}",
                    left.len()
                );
                for pid in left {
                    kill(pid, libc::SIGKILL);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                reaper::reap_all(self);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs `pid` if it is still a child we have not seen exit. Checking
    /// /proc instead would be wrong: once a child is reaped its PID can be
    /// reused (within seconds where pid_max is 32768), and a late kill would
    /// hit an unrelated process. A PID stays in `children` until its exit
    /// has been handled, and cannot be reused before it is reaped.
    pub fn kill_child(&self, pid: u32) {
        let inner = self.inner.lock().unwrap();
        if inner.children.contains_key(&pid) {
            kill(pid, libc::SIGKILL);
        }
    }

    /// Sends `sig` to the preloader and every worker.
    pub fn signal_all(&self, sig: i32) {
        let inner = self.inner.lock().unwrap();
        for pid in inner.children.keys() {
            kill(*pid, sig);
        }
    }

    /// Kills every child at once (`rustrack stop`, second Ctrl-C). The
    /// pool is marked as shutting down first, or the pool task would see
    /// the preloader and workers die and start new ones while we exit.
    pub fn kill_all(self: &Arc<Self>) {
        self.event(Event::Shutdown);
        let inner = self.inner.lock().unwrap();
        for pid in inner.children.keys() {
            kill(*pid, libc::SIGKILL);
        }
    }
}

fn info_spawn_started(inner: &Inner, worker: WorkerId) -> Instant {
    inner
        .workers
        .get(&worker)
        .map(|w| w.spawn_started)
        .unwrap_or_else(Instant::now)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; the PID is one of our children.
    unsafe { libc::kill(pid as i32, sig) };
}

async fn run_exchange(
    pool: Arc<Pool>,
    worker: WorkerId,
    mut conn: WorkerConn,
    pending: Pending,
    options: ExchangeOptions,
) {
    let Pending {
        req,
        reply,
        attempts,
        ..
    } = pending;
    match exchange::run(&mut conn, req, reply, &options).await {
        Ok(()) => pool.finished(worker, conn),
        Err(Failure::Unsent(req, reply)) => {
            tracing::warn!(
                worker,
                "worker was gone before it got the request; sending it to another"
            );
            pool.lost(worker, "died");
            if attempts + 1 >= MAX_ATTEMPTS {
                let _ = reply.send(Err(ProxyError::WorkerFailed("workers keep dying".into())));
            } else {
                pool.enqueue(req, reply, attempts + 1);
            }
        }
        Err(Failure::Broken(msg)) => {
            tracing::warn!(worker, "request failed: {msg}");
            // Out of step or dead: make sure it is gone before forgetting it.
            pool.kill_worker(worker);
            pool.lost(worker, "died");
        }
        Err(Failure::TimedOut) => {
            let pid = pool.pid_of(worker);
            tracing::error!(
                worker,
                pid,
                "request exceeded --worker-timeout ({:?}); stopping the worker",
                options.timeout.unwrap_or_default()
            );
            pool.lost(worker, "timeout");
            drop(conn);
            if let Some(pid) = pid {
                // Gently first (TERM lets an app that traps it log where it
                // was stuck), then for sure.
                kill(pid, libc::SIGTERM);
                tokio::spawn(async move {
                    tokio::time::sleep(KILL_GRACE).await;
                    pool.kill_child(pid);
                });
            }
        }
    }
}
