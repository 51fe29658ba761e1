//! The process pool: carries out what the state machine decides.
//!
//! `machine.rs` decides; this module owns what the decisions are about:
//! the requests waiting for a worker (with the channel to answer each),
//! the workers' connections and bookkeeping, and the child processes. It
//! turns I/O outcomes (a spawn finished, an exchange ended, a process
//! exited) into machine events, and machine actions into tasks. All state
//! sits behind one mutex held only for bookkeeping, never across an await.

pub mod acceptor;
pub mod exchange;
pub mod machine;
pub mod reaper;
pub mod spawner;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::Response;
use tokio::sync::{oneshot, watch};

use crate::control::{describe_exit, Report};
use crate::status::{StatusReport, WorkerStatus};
use exchange::{Failure, ProxyError, ProxyRequest, Reply, ResponseBody, WorkerConn};
use machine::{Action, Event, Limits, Machine, Reject, SlotState, Ticket, WorkerId};
use spawner::Spawner;

/// A request that is not yet given to a worker sends on to another worker
/// at most this many times when the one it was given to turns out dead.
const MAX_ATTEMPTS: u32 = 3;

struct Pending {
    req: ProxyRequest,
    reply: Reply,
    attempts: u32,
}

struct WorkerInfo {
    pid: Option<u32>,
    spawn_started: Instant,
    ready_at: Option<Instant>,
    spawn_duration: Option<Duration>,
    processed: u64,
    last_used: Instant,
    /// Present while the worker is idle.
    conn: Option<WorkerConn>,
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
    readiness: watch::Sender<Readiness>,
    started: Instant,
    started_at: SystemTime,
}

impl Pool {
    pub fn new(limits: Limits, spawner: Spawner) -> Arc<Self> {
        Arc::new(Pool {
            inner: Mutex::new(Inner {
                machine: Machine::new(limits),
                next_ticket: 1,
                pending: HashMap::new(),
                workers: BTreeMap::new(),
                children: HashMap::new(),
                processed_total: 0,
                last_spawn_error: None,
            }),
            spawner,
            readiness: watch::channel(Readiness::Starting).0,
            started: Instant::now(),
            started_at: SystemTime::now(),
        })
    }

    /// Spawns up to the minimum and starts the periodic tick.
    pub fn start(self: &Arc<Self>) {
        self.event(Event::Start);
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.event(Event::Tick),
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
                    let info = inner
                        .workers
                        .get_mut(&worker)
                        .expect("dispatched worker exists");
                    let conn = info
                        .conn
                        .take()
                        .expect("an idle worker holds its connection");
                    info.last_used = Instant::now();
                    tokio::spawn(run_exchange(self.clone(), worker, conn, pending));
                }
                Action::Reject { ticket, reason } => {
                    if let Some(p) = inner.pending.remove(&ticket) {
                        let err = match reason {
                            Reject::QueueFull => ProxyError::QueueFull,
                            Reject::Unavailable => ProxyError::Unavailable,
                        };
                        let _ = p.reply.send(Err(err));
                    }
                }
                Action::Spawn(worker) => {
                    let now = Instant::now();
                    inner.workers.insert(
                        worker,
                        WorkerInfo {
                            pid: None,
                            spawn_started: now,
                            ready_at: None,
                            spawn_duration: None,
                            processed: 0,
                            last_used: now,
                            conn: None,
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
            method = self.spawner.method.as_str(),
            "worker ready in {:.1} ms",
            (now - info.spawn_started).as_secs_f64() * 1000.0
        );
        inner.last_spawn_error = None;
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
            kill(pid);
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
    fn lost(self: &Arc<Self>, worker: WorkerId) {
        let mut inner = self.inner.lock().unwrap();
        if inner.workers.remove(&worker).is_none() {
            return;
        }
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

    /// Kills a worker outright (it is stuck or out of step).
    pub fn kill_worker(&self, worker: WorkerId) {
        if let Some(pid) = self
            .inner
            .lock()
            .unwrap()
            .workers
            .get(&worker)
            .and_then(|w| w.pid)
        {
            kill(pid);
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
        let (worker, known) = {
            let mut inner = self.inner.lock().unwrap();
            let worker = inner.children.remove(&pid).flatten();
            let known = worker
                .and_then(|id| inner.workers.get(&id))
                .map(|w| w.ready_at.is_some());
            (worker, known)
        };
        if self.spawner.preloader_exited(pid) {
            let stopping = self.inner.lock().unwrap().machine.drained();
            if !stopping {
                tracing::warn!(pid, "the preloader {how}; the next spawn starts a new one");
            }
            self.spawner.fail_all(&format!("the preloader {how}"));
            return;
        }
        let Some(id) = worker else {
            tracing::debug!(pid, "reaped process {how}");
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
                if code == Some(0) && signal.is_none() {
                    tracing::info!(worker = id, pid, "worker {how}");
                } else {
                    tracing::warn!(worker = id, pid, "worker {how}");
                }
                if known.is_some() {
                    self.lost(id);
                }
            }
        }
    }

    pub fn status(&self) -> StatusReport {
        let inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let limits = inner.machine.limits();
        let workers = inner
            .workers
            .iter()
            .map(|(id, w)| {
                let state = match inner.machine.state_of(*id) {
                    Some(SlotState::Spawning) | None => "spawning",
                    Some(SlotState::Idle) => "ready",
                    Some(SlotState::Busy) => "busy",
                };
                WorkerStatus {
                    id: *id,
                    pid: w.pid,
                    spawn_method: self.spawner.method.as_str().to_string(),
                    state: state.to_string(),
                    sessions: u32::from(state == "busy"),
                    processed: w.processed,
                    uptime_secs: w.ready_at.map(|t| (now - t).as_secs_f64()).unwrap_or(0.0),
                    last_used_secs_ago: (now - w.last_used).as_secs_f64(),
                    spawn_ms: w.spawn_duration.map(|d| d.as_secs_f64() * 1000.0),
                    memory: w.pid.and_then(|p| crate::procfs::memory(p).ok()),
                }
            })
            .collect();
        let preloader_pid = self.spawner.preloader_pid();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            app_root: self.spawner.spec().app_root.clone(),
            spawn_method: self.spawner.method.as_str().to_string(),
            min_instances: limits.min_instances,
            max_pool_size: limits.max_pool_size,
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
            workers,
        }
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
        let busy: Vec<u32> = {
            let mut inner = self.inner.lock().unwrap();
            for w in inner.workers.values_mut() {
                w.conn = None;
            }
            for (_, p) in inner.pending.drain() {
                let _ = p.reply.send(Err(ProxyError::Unavailable));
            }
            inner.workers.values().filter_map(|w| w.pid).collect()
        };
        if !self.inner.lock().unwrap().machine.drained() {
            tracing::warn!(
                "shutdown timeout: stopping {} worker(s) with requests in flight",
                busy.len()
            );
            for pid in &busy {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
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
                // reparented to us (subreaper) or to init: trust /proc.
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
                    kill(pid);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                reaper::reap_all(self);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills every child at once (second Ctrl-C).
    pub fn kill_all(&self) {
        let inner = self.inner.lock().unwrap();
        for pid in inner.children.keys() {
            kill(*pid);
        }
    }
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

async fn run_exchange(pool: Arc<Pool>, worker: WorkerId, mut conn: WorkerConn, pending: Pending) {
    let Pending {
        req,
        reply,
        attempts,
    } = pending;
    match exchange::run(&mut conn, req, reply).await {
        Ok(()) => pool.finished(worker, conn),
        Err(Failure::Unsent(req, reply)) => {
            tracing::warn!(
                worker,
                "worker was gone before it got the request; sending it to another"
            );
            pool.lost(worker);
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
            pool.lost(worker);
        }
    }
}
