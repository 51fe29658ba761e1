//! The process pool: workers lent out one request at a time.
//!
//! The pool knows requests only as waiting tickets and workers only as
//! processes with a connection; it never sees HTTP. A caller (the upstream
//! module) asks for a worker with [`Pool::checkout`], which waits in the
//! pool's queue and returns a [`Lease`]: the worker's connection, lent out
//! until the caller hands it back with an [`Outcome`] (or drops it).
//!
//! Who does what:
//! - `machine.rs` decides: every rule (queueing, spawning, retiring,
//!   limits, restarts) as a pure state machine;
//! - `driver.rs` carries decisions out and keeps the I/O state (waiting
//!   callers, idle connections, per-worker bookkeeping). It is driven by
//!   calls from leases and by [`Event`]s that the spawner, the reaper, the
//!   worker acceptor and the sampler post on one channel; none of them
//!   holds a reference to the pool;
//! - `processes.rs` holds every process by pidfd and is the only place
//!   that signals one;
//! - `spawner.rs` starts workers and preloaders; `acceptor.rs` takes
//!   workers' greetings; `reaper.rs` collects exits; `sampler.rs` reads
//!   `/proc` on a timer, off the event loop; `introspect.rs` builds the
//!   reports `status` and `memory` print.
//!
//! All mutable state sits behind one mutex, held only for bookkeeping and
//! never across an await.

pub mod acceptor;
pub mod capacity;
pub mod conn;
mod driver;
mod introspect;
pub mod machine;
pub mod processes;
mod promote;
pub mod reaper;
mod sampler;
pub mod spawner;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::config::SpawnMethod;
use crate::metrics::AppMetrics;
use crate::protocol::Hello;
use capacity::Share;
pub use conn::WorkerConn;
use driver::Inner;
pub use introspect::Health;
use machine::{Config, WorkerId};
use processes::{Exit, Processes};
use spawner::{Launcher, SpawnerHandle};

/// Options the pool needs besides the machine's rules.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub machine: Config,
    /// How often worker memory and CPU are sampled.
    pub sample_interval: Duration,
    /// How long a worker told to stop may take to exit (its
    /// `stopping_worker_process` handlers, `at_exit`) before it is killed:
    /// `--shutdown-timeout`.
    pub stop_grace: Duration,
}

/// Why a checkout got no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue is full.
    QueueFull,
    /// The request waited longer than `--max-request-queue-time`.
    QueueTimeout,
    /// No worker exists and none can start for `retry_after` seconds (a
    /// failing app backing off, a crash loop), or the pool is stopping.
    Unavailable { retry_after: u64 },
}

/// How a lent worker's request went.
#[derive(Debug)]
pub enum Outcome {
    /// Served. `memory` is private dirty + swap when a check after the
    /// request found it over `--memory-limit`.
    Done { memory: Option<u64> },
    /// The worker was gone before it could have read anything: the caller
    /// may send the request elsewhere.
    Unsent,
    /// The worker failed mid-request or broke the protocol.
    Broken(String),
    /// The worker outran `--worker-timeout`. `interrupted`: it interrupted
    /// the request itself and answered it (a worker with several threads
    /// does), so it can finish its other requests before it is replaced.
    TimedOut { interrupted: bool },
    /// The worker passed `--memory-limit-hard` mid-request (bytes).
    OverHardLimit(u64),
}

/// What the pool's helpers report to the driver.
#[derive(Debug)]
pub enum Event {
    /// A worker process exists (its pidfd is filed in `Processes`).
    Forked {
        worker: WorkerId,
        pid: u32,
    },
    SpawnFailed {
        worker: WorkerId,
        message: String,
    },
    /// A worker greeted on the worker socket.
    Hello {
        hello: Hello,
        conn: WorkerConn,
    },
    /// A template takes spawns: a preloader that loaded the app, or (with
    /// `mold`) a promoted worker.
    TemplateUp {
        pid: u32,
        mold: Option<WorkerId>,
    },
    /// The mold's control channel closed without anyone asking it to go.
    MoldLost {
        worker: WorkerId,
        pid: u32,
    },
    /// A worker asked to become the mold did not make it.
    PromotionFailed {
        worker: WorkerId,
        message: String,
    },
    Exits(Vec<Exit>),
    Samples(sampler::Samples),
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
    processes: Processes,
    spawner: SpawnerHandle,
    events: mpsc::UnboundedSender<Event>,
    pub metrics: AppMetrics,
    options: PoolOptions,
    method: SpawnMethod,
    app_root: std::path::PathBuf,
    app_name: String,
    /// The process limit shared with other apps, when there are others.
    share: Option<Share>,
    /// With several apps, names the app in every log line of this pool.
    span: tracing::Span,
    readiness: watch::Sender<Readiness>,
    /// Wakes the sampler early (a worker just became ready).
    sample_now: tokio::sync::Notify,
    /// Serialises rolling restarts.
    restart_lock: tokio::sync::Mutex<()>,
    started: Instant,
    started_at: SystemTime,
}

/// A worker lent to one request. Hand it back with [`Lease::finish`];
/// dropping it instead returns the worker unused if its connection was
/// never touched, and otherwise kills it (it may be mid-frame).
pub struct Lease {
    pool: Arc<Pool>,
    worker: WorkerId,
    pid: Option<u32>,
    conn: Option<WorkerConn>,
    touched: bool,
}

impl Lease {
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// The worker's PID (for reading its memory), when known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The worker's connection, to send a request on.
    pub fn conn(&mut self) -> &mut WorkerConn {
        self.touched = true;
        self.conn.as_mut().expect("a lease holds its connection")
    }

    /// The connection, for a look that sends nothing (the lease stays
    /// untouched: dropping it returns the worker unused).
    pub fn peek(&mut self) -> &mut WorkerConn {
        self.conn.as_mut().expect("a lease holds its connection")
    }

    /// Moves the worker's connection to the calling task's event loop
    /// (`conn.rs`). On failure the connection is gone, and with it the
    /// worker: it is stopped and the lease is spent.
    fn settle(mut self) -> Option<Lease> {
        let conn = self.conn.take().expect("a lease holds its connection");
        match conn.settle() {
            Ok(conn) => {
                if conn.just_moved() {
                    tracing::debug!(worker = self.worker, "worker connection moved event loops");
                }
                self.conn = Some(conn);
                Some(self)
            }
            Err(e) => {
                let msg = format!("moving the worker's connection to this event loop: {e}");
                self.pool.broken(self.worker, &msg);
                None
            }
        }
    }

    /// Takes the worker out of service: it gets no new request, and stops
    /// once its requests (this one included) are done.
    pub fn retire_worker(&self, reason: machine::Retire) {
        self.pool
            .machine_event(machine::Event::Retiring(self.worker, reason));
    }

    pub fn finish(mut self, outcome: Outcome) {
        let conn = self.conn.take().expect("a lease holds its connection");
        self.pool.release(self.worker, conn, outcome);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.touched {
                let outcome = Outcome::Broken("the exchange was dropped mid-request".into());
                self.pool.release(self.worker, conn, outcome);
            } else {
                self.pool.unused(self.worker, conn);
            }
        }
    }
}

/// Everything the pool starts with.
pub struct PoolSetup {
    pub options: PoolOptions,
    pub launcher: Launcher,
    pub metrics: AppMetrics,
    /// This group's view of the instance's process table (whose reaper
    /// runs elsewhere, once for all groups).
    pub processes: Processes,
    /// A process limit shared with other apps.
    pub share: Option<Share>,
}

impl Pool {
    /// Builds the pool and starts its tasks: the spawner, the driver's event
    /// loop, the sampler, and the acceptor on `worker_listener`.
    pub fn start(setup: PoolSetup, worker_listener: tokio::net::UnixListener) -> Arc<Pool> {
        let span = match &setup.share {
            Some(_) => tracing::info_span!("app", app = %setup.launcher.spec.app_name),
            None => tracing::Span::none(),
        };
        // Tasks spawned from here on carry the span (`in_current_span`).
        let _in_app = span.clone().entered();
        let app_name = setup.launcher.spec.app_name.clone();
        let (events, rx) = mpsc::unbounded_channel();
        let processes = setup.processes;
        processes.route_exits(events.clone());
        let method = setup.launcher.method;
        let app_root = setup.launcher.spec.app_root.clone();
        let spawner = spawner::start(setup.launcher, processes.clone(), events.clone());
        let mut pool = Pool::new(
            setup.options,
            setup.metrics,
            (method, app_root),
            spawner,
            processes,
            events,
        );
        let p = Arc::get_mut(&mut pool).expect("nobody else holds the pool yet");
        p.app_name = app_name;
        p.span = span;
        if let Some(share) = setup.share {
            let p = Arc::get_mut(&mut pool).expect("nobody else holds the pool yet");
            p.share = Some(share.clone());
            share.register(&pool);
        }
        tokio::spawn(acceptor::run(worker_listener, pool.events.clone()).in_current_span());
        pool.run(rx);
        pool
    }

    /// The pool around a given spawner (the real one, or a test's fake).
    fn new(
        options: PoolOptions,
        metrics: AppMetrics,
        (method, app_root): (SpawnMethod, std::path::PathBuf),
        spawner: SpawnerHandle,
        processes: Processes,
        events: mpsc::UnboundedSender<Event>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            inner: Mutex::new(Inner::new(options.machine.clone())),
            processes,
            spawner,
            events,
            metrics,
            options,
            method,
            app_name: crate::config::AppSpec::app_name_of(&app_root),
            app_root,
            share: None,
            span: tracing::Span::none(),
            readiness: watch::channel(Readiness::Starting).0,
            sample_now: tokio::sync::Notify::new(),
            restart_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            started_at: SystemTime::now(),
        })
    }

    /// Starts the driver's event loop and the sampler, then the machine.
    fn run(self: &Arc<Self>, events: mpsc::UnboundedReceiver<Event>) {
        tokio::spawn(driver::run(self.clone(), events).in_current_span());
        tokio::spawn(sampler::run(self.clone()).in_current_span());
        self.machine_event(machine::Event::Start);
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

    pub fn spawn_method(&self) -> SpawnMethod {
        self.method
    }

    pub fn app_root(&self) -> &std::path::Path {
        &self.app_root
    }

    /// The app's short name (its directory's), for logs and labels.
    pub fn app_name(&self) -> &str {
        &self.app_name
    }

    /// When the worker an eviction would stop was last used (see
    /// [`machine::Machine::evictable`]).
    pub fn evictable(&self) -> Option<Instant> {
        self.inner.lock().unwrap().machine.evictable()
    }

    /// Waits in the queue for a worker. Dropping the future gives up the
    /// place (a worker picked meanwhile goes to the next in line).
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, Rejection> {
        loop {
            let (tx, rx) = oneshot::channel();
            self.enqueue(tx);
            let lease = rx
                .await
                .unwrap_or(Err(Rejection::Unavailable { retry_after: 1 }))?;
            if let Some(lease) = lease.settle() {
                return Ok(lease);
            }
        }
    }

    /// Rolling restart: with smart spawning a new preloader loads the
    /// current code first; if that fails the old workers keep serving and
    /// the error is returned (and shown by `status`).
    pub async fn restart(self: &Arc<Self>) -> Result<()> {
        let _one_at_a_time = self.restart_lock.lock().await;
        tracing::info!("rolling restart: loading the current code");
        if let Err(e) = self.spawner.restart().await {
            let msg = format!("{e:#}");
            tracing::error!("rolling restart aborted, old workers keep serving: {msg}");
            self.inner.lock().unwrap().last_restart_error = Some(msg);
            return Err(e);
        }
        self.inner.lock().unwrap().last_restart_error = None;
        self.machine_event(machine::Event::Restart);
        Ok(())
    }

    /// TTIN/TTOU: one more or one fewer process, within [min, max].
    pub fn scale(self: &Arc<Self>, delta: i32) -> usize {
        self.machine_event(machine::Event::Scale(delta));
        self.inner.lock().unwrap().machine.desired()
    }

    /// Sends `sig` to the preloader and every worker (USR1: reopen logs).
    pub fn signal_all(&self, sig: Signal) {
        self.processes.signal_all(sig);
    }

    /// Graceful stop: no more spawns; wait up to `timeout` for queued and
    /// in-flight requests; then close every worker's connection (they exit
    /// on EOF, running their at_exit blocks), stop the preloader, and wait
    /// for every process, killing what is left after a grace period.
    pub async fn shutdown(self: &Arc<Self>, timeout: Duration) {
        self.machine_event(machine::Event::Shutdown);
        let deadline = Instant::now() + timeout;
        while !self.inner.lock().unwrap().machine.drained() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (busy, drained) = {
            let mut inner = self.inner.lock().unwrap();
            for w in inner.workers.values_mut() {
                w.conns.clear();
            }
            for (_, waiter) in inner.pending.drain() {
                let _ = waiter
                    .reply
                    .send(Err(Rejection::Unavailable { retry_after: 1 }));
            }
            let busy: Vec<WorkerId> = inner.workers.keys().copied().collect();
            (busy, inner.machine.drained())
        };
        if !drained {
            tracing::warn!(
                "shutdown timeout: stopping {} worker(s) with requests in flight",
                busy.len()
            );
            for worker in busy {
                self.processes.signal_worker(worker, Signal::SIGTERM);
            }
        }
        self.spawner.send(spawner::Command::Shutdown);
        self.wait_for_processes(Duration::from_secs(10)).await;
    }

    /// Waits until every process has exited; SIGKILLs the rest after
    /// `grace`.
    pub async fn wait_for_processes(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.processes.live() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "killing process(es) that did not stop: {:?}",
                    self.processes.list()
                );
                self.processes.signal_all(Signal::SIGKILL);
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Our own children are zombies until reaped.
        self.processes.reap();
    }

    /// Reaps whatever of ours has exited, now (on the way out).
    pub fn reap_now(&self) {
        self.processes.reap();
    }

    /// Kills every process at once (`rustrack stop`, a second Ctrl-C). The
    /// pool is marked as shutting down first, or it would see the preloader
    /// and workers die and start new ones while we exit.
    pub fn kill_all(self: &Arc<Self>) {
        self.machine_event(machine::Event::Shutdown);
        self.spawner.send(spawner::Command::Shutdown);
        self.processes.signal_all(Signal::SIGKILL);
    }
}
