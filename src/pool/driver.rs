//! The driver: carries out what the machine decides, and turns what happens
//! into machine events.
//!
//! Two kinds of input reach it. Leases come back synchronously from the
//! request path (`release`, `unused`), so a freed worker takes the next
//! waiting request without a task hop. Everything else arrives as an
//! [`Event`] on one channel, handled in order by `run`: workers forked and
//! greeting, spawns failing, processes exiting, memory samples, and a tick
//! every 250 ms for the machine's timers.
//!
//! The driver only ever signals a process through `Processes`, which holds
//! each by pidfd.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use super::machine::{self, Action, Config, Machine, Reject, Retire, SlotState, Ticket, WorkerId};
use super::processes::{Exit, Role};
use super::sampler::Samples;
use super::{Event, Lease, Outcome, Pool, Readiness, Rejection, WorkerConn};
use crate::control::describe_exit;
use crate::procfs::Memory;

const TICK: Duration = Duration::from_millis(250);
/// How long a timed-out worker gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub(super) struct Waiter {
    pub reply: oneshot::Sender<Result<Lease, Rejection>>,
    pub enqueued: Instant,
}

pub(super) struct WorkerInfo {
    pub pid: Option<u32>,
    pub generation: u64,
    pub spawn_started: Instant,
    pub ready_at: Option<Instant>,
    pub spawn_duration: Option<Duration>,
    pub processed: u64,
    pub last_used: Instant,
    /// The connections of its sessions that are not lent out (all of them
    /// while it is idle); one per Ruby thread (`--threads-per-worker`).
    pub conns: Vec<WorkerConn>,
    /// Sessions that have greeted; the worker is ready once all have.
    pub greeted: u32,
    pub memory: Option<Memory>,
    /// CPU ticks at the previous timer sample, and when.
    pub cpu: Option<(u64, Instant)>,
    pub cpu_percent: Option<f64>,
}

pub(super) struct Inner {
    pub machine: Machine,
    next_ticket: Ticket,
    pub pending: HashMap<Ticket, Waiter>,
    pub workers: BTreeMap<WorkerId, WorkerInfo>,
    pub processed_total: u64,
    pub last_spawn_error: Option<String>,
    pub last_restart_error: Option<String>,
    pub restarts_by_reason: BTreeMap<&'static str, u64>,
    /// The current template's memory at the last sample.
    pub template_memory: Option<(u32, Memory)>,
    /// Workers promoted to mold, with the requests each had served.
    pub molds: BTreeMap<WorkerId, u64>,
    /// Starts from zero workers with requests waiting, and how long the
    /// first of them waited the last time.
    pub cold_starts: u64,
    pub last_cold_start: Option<Duration>,
}

impl Inner {
    pub fn new(config: Config) -> Self {
        Inner {
            machine: Machine::new(config),
            next_ticket: 1,
            pending: HashMap::new(),
            workers: BTreeMap::new(),
            processed_total: 0,
            last_spawn_error: None,
            last_restart_error: None,
            restarts_by_reason: BTreeMap::new(),
            template_memory: None,
            molds: BTreeMap::new(),
            cold_starts: 0,
            last_cold_start: None,
        }
    }
}

/// Handles events in order, and ticks the machine's timers.
pub(super) async fn run(pool: Arc<Pool>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => pool.on_event(event),
                None => return,
            },
            _ = tick.tick() => pool.machine_event(machine::Event::Tick),
        }
    }
}

impl Pool {
    /// The machine's decision on `event`, under the limit shared with other
    /// apps when there is one.
    pub(super) fn decide(
        &self,
        inner: &mut Inner,
        now: Instant,
        event: machine::Event,
    ) -> Vec<Action> {
        match &self.share {
            Some(share) => share.decide(&mut inner.machine, now, event),
            None => inner.machine.handle(now, event),
        }
    }

    pub(super) fn machine_event(self: &Arc<Self>, event: machine::Event) {
        let mut inner = self.inner.lock().unwrap();
        let actions = self.decide(&mut inner, Instant::now(), event);
        self.apply(&mut inner, actions);
    }

    pub(super) fn enqueue(self: &Arc<Self>, reply: oneshot::Sender<Result<Lease, Rejection>>) {
        let mut inner = self.inner.lock().unwrap();
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        let now = Instant::now();
        inner.pending.insert(
            ticket,
            Waiter {
                reply,
                enqueued: now,
            },
        );
        let actions = self.decide(&mut inner, now, machine::Event::Request(ticket));
        self.apply(&mut inner, actions);
    }

    /// Whether workers hold several sessions (`--threads-per-worker` > 1):
    /// one session failing then need not cost the others.
    fn threaded(&self) -> bool {
        self.options.machine.threads > 1
    }

    /// A lease handed back (see `Outcome`).
    pub(super) fn release(self: &Arc<Self>, worker: WorkerId, conn: WorkerConn, outcome: Outcome) {
        let _in_app = self.span.enter();
        match outcome {
            Outcome::Done { memory } => {
                let now = Instant::now();
                let mut inner = self.inner.lock().unwrap();
                inner.processed_total += 1;
                let Some(info) = inner.workers.get_mut(&worker) else {
                    return; // it died meanwhile; dropping conn closes it
                };
                info.processed += 1;
                info.last_used = now;
                info.conns.push(conn);
                // Over its memory limit: retire it before it takes another.
                let mut actions = match memory {
                    Some(bytes) => {
                        self.decide(&mut inner, now, machine::Event::Memory(worker, bytes))
                    }
                    None => Vec::new(),
                };
                actions.extend(self.decide(&mut inner, now, machine::Event::Done(worker)));
                self.apply(&mut inner, actions);
            }
            Outcome::Unsent if self.threaded() => {
                // One session closed while idle: the worker is stopping on
                // its own (TERM, `exit` in a request) and finishes what its
                // other threads serve; or it died, and the reaper says so.
                drop(conn);
                tracing::info!(
                    worker,
                    "a session of the worker closed before it got the request; sending it to \
                     another, and the worker takes no new request"
                );
                self.machine_event(machine::Event::Dropped(worker, Retire::Died));
            }
            Outcome::Unsent => {
                drop(conn);
                tracing::warn!(
                    worker,
                    "worker was gone before it got the request; sending it to another"
                );
                self.processes.signal_worker(worker, Signal::SIGKILL);
                self.lost(worker, "died");
            }
            Outcome::TimedOut { interrupted: true } => {
                tracing::error!(
                    worker,
                    pid = self.processes.pid_of(worker),
                    "request exceeded --worker-timeout; the worker interrupted it \
                     (Rustrack::RequestTimeout) and is replaced once its other requests are done"
                );
                let mut inner = self.inner.lock().unwrap();
                if let Some(info) = inner.workers.get_mut(&worker) {
                    info.conns.push(conn);
                }
                let actions = inner.machine.handle(
                    Instant::now(),
                    machine::Event::Dropped(worker, Retire::Timeout),
                );
                self.apply(&mut inner, actions);
            }
            Outcome::Broken(msg) => {
                drop(conn);
                self.broken(worker, &msg);
            }
            Outcome::TimedOut { interrupted: false } => {
                drop(conn);
                tracing::error!(
                    worker,
                    pid = self.processes.pid_of(worker),
                    "{}",
                    if self.threaded() {
                        "request exceeded --worker-timeout and could not be interrupted; \
                         stopping the worker (its other requests fail)"
                    } else {
                        "request exceeded --worker-timeout; stopping the worker"
                    }
                );
                self.lost(worker, "timeout");
                if self.threaded() {
                    // It ignored the RequestTimeout raised into the request
                    // for the whole grace: a TERM would only start a
                    // graceful stop that waits for that request forever.
                    self.processes.signal_worker(worker, Signal::SIGKILL);
                    return;
                }
                // Gently first (an app that traps TERM can log where it was
                // stuck), then for sure. The pidfd makes the late KILL safe
                // even if the worker has long exited.
                self.processes.signal_worker(worker, Signal::SIGTERM);
                let processes = self.processes.clone();
                tokio::spawn(
                    async move {
                        tokio::time::sleep(KILL_GRACE).await;
                        processes.signal_worker(worker, Signal::SIGKILL);
                    }
                    .in_current_span(),
                );
            }
            Outcome::OverHardLimit(bytes) => {
                drop(conn);
                tracing::error!(
                    worker,
                    "worker reached --memory-limit-hard ({} MB private dirty + swap) mid-request; killing it",
                    bytes >> 20
                );
                self.processes.signal_worker(worker, Signal::SIGKILL);
                self.lost(worker, "memory limit (hard)");
            }
        }
    }

    /// A worker whose connection failed or is out of step.
    pub(super) fn broken(self: &Arc<Self>, worker: WorkerId, msg: &str) {
        let _in_app = self.span.enter();
        tracing::warn!(worker, "request failed: {msg}");
        // Out of step or dead: make sure it is gone.
        self.processes.signal_worker(worker, Signal::SIGKILL);
        self.lost(worker, "died");
    }

    /// A lease dropped before anything was sent: the worker is idle again.
    pub(super) fn unused(self: &Arc<Self>, worker: WorkerId, conn: WorkerConn) {
        let mut inner = self.inner.lock().unwrap();
        let Some(info) = inner.workers.get_mut(&worker) else {
            return;
        };
        info.conns.push(conn);
        let actions = self.decide(&mut inner, Instant::now(), machine::Event::Unused(worker));
        self.apply(&mut inner, actions);
    }

    /// A worker told to stop has left the pool and its count (another may
    /// take its place at once); its process must not outlive it for long.
    /// An app's exit hooks that hang (a flush to a dead service) would
    /// otherwise keep it forever, unseen by the pool's limits. The pidfd
    /// makes the late KILL safe if the worker has long exited.
    fn kill_if_still_there(&self, worker: WorkerId, pid: u32) {
        let processes = self.processes.clone();
        let grace = self.options.stop_grace;
        tokio::spawn(
            async move {
                tokio::time::sleep(grace).await;
                if processes.signal_pid(pid, Signal::SIGKILL) {
                    tracing::warn!(
                        worker,
                        pid,
                        "worker still running {grace:?} after it was told to stop \
                         (--shutdown-timeout); killed it"
                    );
                }
            }
            .in_current_span(),
        );
    }

    /// Forgets a worker whose process or connection is gone.
    pub(super) fn lost(self: &Arc<Self>, worker: WorkerId, reason: &'static str) {
        let mut inner = self.inner.lock().unwrap();
        if inner.workers.remove(&worker).is_none() {
            return;
        }
        *inner.restarts_by_reason.entry(reason).or_default() += 1;
        self.metrics.observe_restart(reason);
        let actions = self.decide(&mut inner, Instant::now(), machine::Event::Lost(worker));
        self.apply(&mut inner, actions);
    }

    pub(super) fn apply(self: &Arc<Self>, inner: &mut Inner, actions: Vec<Action>) {
        let _in_app = self.span.enter();
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Dispatch { ticket, worker } => {
                    let waiter = inner
                        .pending
                        .remove(&ticket)
                        .expect("dispatched ticket is pending");
                    let info = inner
                        .workers
                        .get_mut(&worker)
                        .expect("dispatched worker exists");
                    let conn = info
                        .conns
                        .pop()
                        .expect("a worker with a free session holds its connection");
                    info.last_used = Instant::now();
                    self.metrics
                        .queue_wait
                        .observe(waiter.enqueued.elapsed().as_secs_f64());
                    let lease = Lease {
                        pool: self.clone(),
                        worker,
                        pid: info.pid,
                        conn: Some(conn),
                        touched: false,
                    };
                    if let Err(Ok(mut lease)) = waiter.reply.send(Ok(lease)) {
                        // The caller gave up while waiting: the worker is
                        // free. (Taking the connection back by hand: a
                        // dropped lease would lock the pool, which we hold.)
                        info.conns.extend(lease.conn.take());
                        actions.extend(self.decide(
                            inner,
                            Instant::now(),
                            machine::Event::Unused(worker),
                        ));
                    }
                }
                Action::Reject { ticket, reason } => {
                    if let Some(waiter) = inner.pending.remove(&ticket) {
                        let rejection = match reason {
                            Reject::QueueFull => Rejection::QueueFull,
                            Reject::QueueTimeout => Rejection::QueueTimeout,
                            Reject::Unavailable { retry_after } => {
                                Rejection::Unavailable { retry_after }
                            }
                        };
                        let _ = waiter.reply.send(Err(rejection));
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
                            conns: Vec::new(),
                            greeted: 0,
                            memory: None,
                            cpu: None,
                            cpu_percent: None,
                        },
                    );
                    self.spawner.send(super::spawner::Command::Spawn(worker));
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
                        if let Some(pid) = info.pid {
                            self.processes.expect_exit(pid);
                            self.kill_if_still_there(worker, pid);
                        }
                        *inner.restarts_by_reason.entry(reason.as_str()).or_default() += 1;
                        self.metrics.observe_restart(reason.as_str());
                    }
                }
                Action::Abandon { worker } => {
                    inner.workers.remove(&worker);
                    self.processes.signal_worker(worker, Signal::SIGKILL);
                    let msg = format!(
                        "worker {worker} did not start within {:?} (--start-timeout)",
                        inner.machine.config().start_timeout.unwrap_or_default()
                    );
                    tracing::error!("{msg}");
                    self.spawn_error(inner, msg);
                }
                Action::StopPreloader => {
                    self.spawner.send(super::spawner::Command::StopPreloader);
                }
                Action::Promote { worker } => {
                    let info = inner
                        .workers
                        .get_mut(&worker)
                        .expect("the candidate exists");
                    // Any one of its sessions carries the PROMOTE: the worker
                    // stops and joins the threads of the others itself.
                    let conn = info
                        .conns
                        .pop()
                        .expect("an idle worker holds its connections");
                    tracing::info!(
                        worker,
                        pid = info.pid,
                        "refork: promoting the worker to mold after {} requests",
                        info.processed
                    );
                    let promote =
                        self.clone()
                            .promote(worker, info.pid, conn, self.spawner.restarts());
                    tokio::spawn(promote.in_current_span());
                }
                Action::DropMold => {
                    tracing::warn!(
                        "dropping the mold (see above): new workers come from the preloader \
                         again, and the current workers serve on"
                    );
                    self.spawner.send(super::spawner::Command::DropMold);
                }
                Action::RetireOldTemplates => {
                    self.spawner.send(super::spawner::Command::RetireOld);
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

    fn spawn_error(&self, inner: &mut Inner, msg: String) {
        inner.last_spawn_error = Some(msg.clone());
        self.readiness.send_if_modified(|r| {
            if *r == Readiness::Starting {
                *r = Readiness::Failed(msg);
                true
            } else {
                false
            }
        });
    }

    pub(super) fn on_event(self: &Arc<Self>, event: Event) {
        let _in_app = self.span.enter();
        match event {
            Event::Forked { worker, pid } => {
                let mut inner = self.inner.lock().unwrap();
                match inner.workers.get_mut(&worker) {
                    Some(info) => info.pid = Some(pid),
                    None => {
                        // Abandoned (too slow) or the pool is stopping.
                        drop(inner);
                        tracing::info!(worker, pid, "stopping a worker nobody waits for");
                        self.processes.signal_worker(worker, Signal::SIGKILL);
                    }
                }
            }
            Event::SpawnFailed { worker, message } => self.spawn_failed(worker, message),
            Event::Hello { hello, conn } => self.hello(hello, conn),
            Event::TemplateUp { mold: None, .. } => self.machine_event(machine::Event::PreloaderUp),
            Event::TemplateUp {
                pid,
                mold: Some(worker),
            } => self.mold_up(worker, pid),
            Event::MoldLost { worker, pid } => {
                tracing::warn!(
                    worker,
                    pid,
                    "the mold exited; new workers come from the preloader again"
                );
                self.machine_event(machine::Event::MoldFailed);
            }
            Event::PromotionFailed { worker, message } => {
                tracing::warn!(worker, "promoting the worker to mold failed: {message}");
                self.processes.signal_worker(worker, Signal::SIGKILL);
                self.processes.signal_mold(worker, Signal::SIGKILL);
                self.lost(worker, "died");
            }
            Event::Exits(exits) => {
                for exit in exits {
                    self.exited(exit);
                }
            }
            Event::Samples(samples) => self.samples(samples),
        }
    }

    /// A promoted worker is up as the mold: it serves no requests now.
    fn mold_up(self: &Arc<Self>, worker: WorkerId, pid: u32) {
        let mut inner = self.inner.lock().unwrap();
        let Some(info) = inner.workers.remove(&worker) else {
            return;
        };
        tracing::info!(
            worker,
            pid,
            "refork: worker {worker} is the mold; new workers fork from it and replace the others one by one"
        );
        inner.molds.insert(worker, info.processed);
        self.metrics.observe_refork();
        let actions = self.decide(&mut inner, Instant::now(), machine::Event::Promoted(worker));
        self.apply(&mut inner, actions);
    }

    fn spawn_failed(self: &Arc<Self>, worker: WorkerId, msg: String) {
        let mut inner = self.inner.lock().unwrap();
        if inner.machine.state_of(worker) != Some(SlotState::Spawning) {
            return;
        }
        tracing::error!(worker, "spawning a worker failed: {msg}");
        inner.workers.remove(&worker);
        self.processes.signal_worker(worker, Signal::SIGKILL);
        self.spawn_error(&mut inner, msg);
        let actions = self.decide(
            &mut inner,
            Instant::now(),
            machine::Event::SpawnFailed(worker),
        );
        self.apply(&mut inner, actions);
    }

    fn hello(self: &Arc<Self>, hello: crate::protocol::Hello, conn: WorkerConn) {
        let worker = hello.worker_id;
        if hello.version != crate::protocol::VERSION {
            tracing::error!(
                worker,
                pid = hello.pid,
                "worker speaks protocol version {} (the front end speaks {}): is an old binary running?",
                hello.version,
                crate::protocol::VERSION
            );
            return;
        }
        let threads = self.options.machine.threads;
        if hello.threads != threads || hello.slot >= threads {
            tracing::error!(
                worker,
                pid = hello.pid,
                "worker greeted as session {} of {} (the front end runs {threads} per worker); \
                 closing it",
                hello.slot,
                hello.threads
            );
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        let spawning = inner.machine.state_of(worker) == Some(SlotState::Spawning);
        let Some(info) = inner.workers.get_mut(&worker).filter(|_| spawning) else {
            tracing::warn!(
                worker,
                pid = hello.pid,
                "a worker greeted that no spawn waits for; closing it"
            );
            return;
        };
        info.pid.get_or_insert(hello.pid);
        info.conns.push(conn);
        info.greeted += 1;
        if info.greeted < threads {
            return; // ready once every session has greeted
        }
        let now = Instant::now();
        info.ready_at = Some(now);
        let took = now - info.spawn_started;
        info.spawn_duration = Some(took);
        tracing::info!(
            worker,
            pid = info.pid,
            generation = info.generation,
            method = self.method.as_str(),
            "worker ready in {:.1} ms",
            took.as_secs_f64() * 1000.0
        );
        inner.last_spawn_error = None;
        self.metrics
            .observe_spawn(self.method.as_str(), took.as_secs_f64());
        let serving = inner
            .workers
            .values()
            .filter(|w| w.ready_at.is_some())
            .count();
        if serving == 1 && inner.machine.count(SlotState::Busy) == 0 {
            if let Some(first) = inner.pending.values().map(|w| w.enqueued).min() {
                let waited = now.saturating_duration_since(first);
                inner.cold_starts += 1;
                inner.last_cold_start = Some(waited);
                tracing::info!(
                    "started from zero workers: {} request(s) waited, the first {:.0} ms",
                    inner.pending.len(),
                    waited.as_secs_f64() * 1000.0
                );
            }
        }
        let actions = self.decide(&mut inner, now, machine::Event::Ready(worker));
        self.apply(&mut inner, actions);
        drop(inner);
        self.readiness.send_if_modified(|r| {
            let changed = *r != Readiness::Ready;
            *r = Readiness::Ready;
            changed
        });
        self.sample_now.notify_one();
    }

    fn exited(self: &Arc<Self>, exit: Exit) {
        let how = describe_exit(exit.code, exit.signal);
        let pid = exit.pid;
        let worker = match exit.role {
            Role::Mold(worker) => {
                if exit.expected || self.inner.lock().unwrap().machine.shutting_down() {
                    tracing::info!(worker, pid, "the mold {how} (asked to stop)");
                } else {
                    tracing::warn!(worker, pid, "the mold {how}");
                }
                return;
            }
            Role::Preloader => {
                let stopping = self.inner.lock().unwrap().machine.shutting_down();
                if exit.expected || stopping {
                    tracing::info!(pid, "the preloader {how} (asked to stop)");
                } else {
                    tracing::warn!(pid, "the preloader {how}; the next spawn starts a new one");
                }
                return;
            }
            Role::Worker(id) => id,
        };
        let state = self.inner.lock().unwrap().machine.state_of(worker);
        let stopping = self.inner.lock().unwrap().machine.shutting_down();
        match state {
            Some(SlotState::Spawning) => self.spawn_failed(
                worker,
                format!("worker {worker} (pid {pid}) {how} before it was ready"),
            ),
            Some(_) => {
                if stopping || (exit.code == Some(0) && exit.signal.is_none()) {
                    tracing::info!(worker, pid, "worker {how}");
                } else {
                    tracing::warn!(worker, pid, "worker {how}");
                }
                self.lost(worker, "died");
            }
            None if exit.expected || stopping || exit.code == Some(0) => {
                tracing::info!(worker, pid, "worker {how}")
            }
            None => tracing::warn!(worker, pid, "worker {how}"),
        }
    }

    /// Fresh memory and CPU figures from the sampler; a worker over the
    /// memory limit is retired (after its request, if it has one).
    fn samples(self: &Arc<Self>, samples: Samples) {
        let limit_on = self.options.machine.memory_limit.is_some();
        let mut inner = self.inner.lock().unwrap();
        inner.template_memory = samples.template;
        let mut events = Vec::new();
        for s in samples.workers {
            let Some(info) = inner.workers.get_mut(&s.worker) else {
                continue;
            };
            if let Some(m) = s.memory {
                info.memory = Some(m);
                if limit_on {
                    events.push(machine::Event::Memory(s.worker, m.private_dirty + m.swap));
                }
            }
            if let Some(ticks) = s.cpu_ticks {
                // CPU % over the timer's window: samples are taken only on
                // the timer, so a status scrape never shortens it.
                if let Some((before, at)) = info.cpu {
                    let secs = samples.at.duration_since(at).as_secs_f64();
                    if secs > 0.0 {
                        let used =
                            ticks.saturating_sub(before) as f64 / crate::procfs::ticks_per_second();
                        info.cpu_percent = Some(100.0 * used / secs);
                    }
                }
                info.cpu = Some((ticks, samples.at));
            }
        }
        for event in events {
            let actions = self.decide(&mut inner, samples.at, event);
            self.apply(&mut inner, actions);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::super::machine::{Config, Retire};
    use super::super::processes::{Exit, Role};
    use super::super::testing::FakePool;
    use super::super::{Event, Outcome, Rejection};
    use crate::report::WorkerState;

    /// A pool of one, with its worker greeted.
    async fn one_worker(config: Config) -> (FakePool, tokio::net::UnixStream) {
        let mut fake = FakePool::start(config);
        let id = fake.spawn_asked().await;
        assert_eq!(id, 1);
        let worker = fake.greet(id);
        fake.until("worker 1 ready", |s| {
            s.workers.len() == 1 && s.workers[0].state == WorkerState::Ready
        })
        .await;
        (fake, worker)
    }

    #[tokio::test]
    async fn a_checkout_waits_for_the_first_worker_and_gets_it_back_after() {
        let mut fake = FakePool::start(Config::new(1, 1, 10));
        let pool = fake.pool.clone();
        let waiting = tokio::spawn(async move { pool.checkout().await.map(|l| l.worker()) });
        let id = fake.spawn_asked().await;
        let _worker = fake.greet(id);
        let lease_worker = waiting.await.unwrap().unwrap();
        assert_eq!(lease_worker, id);
        // Busy until handed back; then the next checkout gets it at once.
        let lease = fake.pool.checkout().await.unwrap();
        let status = fake.pool.status();
        assert_eq!(status.workers[0].state, WorkerState::Busy);
        lease.finish(Outcome::Done { memory: None });
        let status = fake.pool.status();
        assert_eq!(status.workers[0].state, WorkerState::Ready);
        assert_eq!(status.workers[0].processed, 1);
    }

    #[tokio::test]
    async fn a_lease_dropped_unused_leaves_the_worker_idle_and_unserved() {
        let (fake, _worker) = one_worker(Config::new(1, 1, 10)).await;
        let lease = fake.pool.checkout().await.unwrap();
        drop(lease);
        let status = fake.pool.status();
        assert_eq!(status.workers[0].state, WorkerState::Ready);
        assert_eq!(status.workers[0].processed, 0);
        assert_eq!(status.processed_total, 0);
    }

    #[tokio::test]
    async fn a_lease_dropped_mid_exchange_costs_the_worker() {
        let (mut fake, mut worker) = one_worker(Config::new(1, 1, 10)).await;
        let mut lease = fake.pool.checkout().await.unwrap();
        let _ = lease.conn(); // as if a request had started going out
        drop(lease);
        // Its connection is closed, and a replacement is asked for.
        let mut buf = [0u8; 1];
        assert_eq!(worker.read(&mut buf).await.unwrap(), 0);
        assert_eq!(fake.spawn_asked().await, 2);
        assert_eq!(fake.pool.status().worker_restarts["died"], 1);
    }

    #[tokio::test]
    async fn with_no_worker_and_a_back_off_a_checkout_is_refused_at_once() {
        let mut fake = FakePool::start(Config::new(1, 1, 10));
        let id = fake.spawn_asked().await;
        fake.event(Event::SpawnFailed {
            worker: id,
            message: "the app failed to load".into(),
        });
        fake.until("the failure to be recorded", |s| {
            s.last_spawn_error.is_some()
        })
        .await;
        let refused = tokio::time::timeout(Duration::from_secs(1), fake.pool.checkout())
            .await
            .expect("an answer at once");
        assert!(matches!(
            refused,
            Err(Rejection::Unavailable { retry_after: 1 })
        ));
        // After the back-off, the pool tries again.
        assert_eq!(fake.spawn_asked().await, 2);
    }

    #[tokio::test]
    async fn a_worker_that_exits_while_busy_is_replaced_and_its_lease_is_harmless() {
        let (mut fake, _worker) = one_worker(Config::new(1, 2, 10)).await;
        let lease = fake.pool.checkout().await.unwrap();
        fake.event(Event::Exits(vec![Exit {
            pid: 4242,
            role: Role::Worker(1),
            code: None,
            signal: Some(9),
            expected: false,
        }]));
        assert_eq!(fake.spawn_asked().await, 2);
        // The exchange notices afterwards; handing the lease back is a no-op.
        lease.finish(Outcome::Broken("EOF".into()));
        let status = fake.pool.status();
        assert_eq!(status.workers.len(), 1);
        assert_eq!(status.worker_restarts["died"], 1);
    }

    #[tokio::test]
    async fn a_timed_out_worker_is_counted_and_replaced() {
        let (mut fake, _worker) = one_worker(Config::new(1, 1, 10)).await;
        let lease = fake.pool.checkout().await.unwrap();
        lease.finish(Outcome::TimedOut { interrupted: false });
        assert_eq!(fake.spawn_asked().await, 2);
        assert_eq!(fake.pool.status().worker_restarts["timeout"], 1);
    }

    #[tokio::test]
    async fn a_request_that_crossed_the_memory_limit_retires_its_worker_at_once() {
        let mut config = Config::new(1, 1, 10);
        config.memory_limit = Some(100);
        let (mut fake, mut worker) = one_worker(config).await;
        // Someone else waits: the over-limit worker must not serve them.
        let lease = fake.pool.checkout().await.unwrap();
        let pool = fake.pool.clone();
        let next = tokio::spawn(async move { pool.checkout().await.map(|l| l.worker()) });
        fake.until("a waiting request", |s| s.requests_in_queue == 1)
            .await;
        lease.finish(Outcome::Done { memory: Some(500) });
        let mut buf = [0u8; 1];
        assert_eq!(worker.read(&mut buf).await.unwrap(), 0, "retired");
        let id = fake.spawn_asked().await;
        assert_eq!(id, 2);
        let _second = fake.greet(id);
        assert_eq!(next.await.unwrap().unwrap(), 2);
        assert_eq!(fake.pool.status().worker_restarts["memory limit"], 1);
    }

    #[tokio::test]
    async fn a_greeting_nobody_waits_for_is_closed() {
        let (fake, _worker) = one_worker(Config::new(1, 1, 10)).await;
        let mut stranger = fake.greet(77);
        let mut buf = [0u8; 1];
        assert_eq!(stranger.read(&mut buf).await.unwrap(), 0);
        assert_eq!(fake.pool.status().workers.len(), 1);
    }
    /// A pool of one worker with `threads` sessions, all greeted.
    async fn threaded_worker(threads: u32, max: usize) -> (FakePool, Vec<tokio::net::UnixStream>) {
        let mut config = Config::new(1, max, 10);
        config.threads = threads;
        let mut fake = FakePool::start(config);
        let id = fake.spawn_asked().await;
        let mut sessions = Vec::new();
        for slot in 0..threads {
            // Not ready until every session has greeted.
            assert!(fake.pool.status().workers[0].state == WorkerState::Spawning);
            sessions.push(fake.greet_session(id, slot, threads));
        }
        fake.until("the worker ready", |s| {
            s.workers.len() == 1 && s.workers[0].state == WorkerState::Ready
        })
        .await;
        (fake, sessions)
    }

    #[tokio::test]
    async fn a_worker_with_sessions_lends_one_connection_per_request_and_is_busy_when_all_are_out()
    {
        let (fake, _sessions) = threaded_worker(2, 1).await;
        let first = fake.pool.checkout().await.unwrap();
        let status = fake.pool.status();
        assert_eq!(status.threads_per_worker, 2);
        assert_eq!(status.workers[0].sessions, 1);
        assert_eq!(
            status.workers[0].state,
            WorkerState::Ready,
            "a session is free"
        );
        let second = fake.pool.checkout().await.unwrap();
        assert_eq!(first.worker(), second.worker());
        let status = fake.pool.status();
        assert_eq!(status.workers[0].sessions, 2);
        assert_eq!(status.workers[0].state, WorkerState::Busy);
        // A third waits until a session comes back.
        let pool = fake.pool.clone();
        let third = tokio::spawn(async move { pool.checkout().await.map(|l| l.worker()) });
        fake.until("a waiting request", |s| s.requests_in_queue == 1)
            .await;
        first.finish(Outcome::Done { memory: None });
        assert_eq!(third.await.unwrap().unwrap(), 1);
        second.finish(Outcome::Done { memory: None });
        let status = fake.pool.status();
        assert_eq!(status.workers[0].processed, 2);
    }

    #[tokio::test]
    async fn a_session_closed_before_its_request_retires_the_worker_without_killing_it() {
        let (mut fake, mut sessions) = threaded_worker(2, 2).await;
        let busy = fake.pool.checkout().await.unwrap();
        let idle = fake.pool.checkout().await.unwrap();
        // The worker is stopping on its own: one session closed unused.
        idle.finish(Outcome::Unsent);
        assert_eq!(fake.spawn_asked().await, 2, "a successor starts");
        let status = fake.pool.status();
        let old = status.workers.iter().find(|w| w.id == 1).unwrap();
        assert_eq!(old.state, WorkerState::Retiring);
        // Its other request is not cut off: its connection stays open
        // until that request is done, then the worker is let go.
        let mut buf = [0u8; 1];
        assert!(sessions[0].try_read(&mut buf).is_err(), "still open");
        busy.finish(Outcome::Done { memory: None });
        fake.until("the old worker gone", |s| {
            s.workers.iter().all(|w| w.id != 1)
        })
        .await;
        for session in &mut sessions {
            assert_eq!(session.read(&mut buf).await.unwrap(), 0, "closed");
        }
        assert_eq!(fake.pool.status().worker_restarts["died"], 1);
    }

    #[tokio::test]
    async fn an_interrupted_timeout_retires_the_worker_after_its_other_requests() {
        let (mut fake, _sessions) = threaded_worker(2, 2).await;
        let stuck = fake.pool.checkout().await.unwrap();
        let other = fake.pool.checkout().await.unwrap();
        stuck.retire_worker(Retire::Timeout);
        assert_eq!(fake.spawn_asked().await, 2);
        stuck.finish(Outcome::TimedOut { interrupted: true });
        assert!(fake.pool.status().workers.iter().any(|w| w.id == 1));
        other.finish(Outcome::Done { memory: None });
        fake.until("the old worker gone", |s| {
            s.workers.iter().all(|w| w.id != 1)
        })
        .await;
        assert_eq!(fake.pool.status().worker_restarts["timeout"], 1);
    }
}
