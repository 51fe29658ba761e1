//! The pool's decisions, as a state machine with no I/O: events in,
//! actions out, time passed in by the caller.
//!
//! Every rule about spawning, queueing, rejecting and retiring lives here,
//! so it can be unit-tested with a fake clock; the driver (`pool/mod.rs`)
//! only carries actions out and turns I/O into events. A worker holds up to
//! `threads` sessions (`--threads-per-worker`, one connection and one Ruby
//! thread each; 1 by default, when "least busy" means "idle"). A request
//! goes to the worker with the fewest sessions in use that has room;
//! among those, the most recently used one, which keeps a hot working set
//! and lets the others go idle long enough to be retired. A worker whose
//! sessions are all in use is busy: requests queue only when every worker
//! is.
//!
//! Rules (Passenger's as a baseline):
//! - spawn while fewer than `desired` workers (the minimum, moved by
//!   TTIN/TTOU) or while requests wait and none is idle, up to
//!   `max_pool_size`, one spawn at a time;
//! - queue up to `max_queue` requests (FIFO), then reject; a request that
//!   waited longer than `max_queue_time` is rejected too;
//! - retire idle workers after `pool_idle_time` down to `desired`, workers
//!   that served their `max_requests` (plus a per-worker jitter), and
//!   workers over `memory_limit`; a busy worker is retired only after its
//!   request, so no request is dropped;
//! - a spawn that has not greeted within `start_timeout` is abandoned
//!   (its process, if any, is killed) and counts as a failed spawn;
//! - a failed spawn backs off (0.5 s doubling to 30 s); workers that die
//!   within a second of starting, `CRASH_LOOP` times in a row, stop
//!   respawning for a minute instead of spinning; whenever no worker exists
//!   and none may be started yet, waiting and new requests are rejected at
//!   once (503 with the seconds until the next try) rather than left hanging;
//! - a rolling restart bumps the generation, then spawns new-generation
//!   workers one at a time, retiring one old worker each time a new one is
//!   ready (the pool may hold one worker over its maximum meanwhile);
//! - refork (`refork_after`): when an idle worker of the current
//!   generation has served the next threshold of requests, it is promoted
//!   to be the template new workers fork from (a mold); once it is up, the
//!   generation moves on and its workers replace the older ones one at a
//!   time, as in a rolling restart. A worker that refuses (a live thread)
//!   is not asked again; a mold that dies or whose worker fails to start
//!   is dropped and the preloader serves again (no retry of that
//!   generation; the next threshold may promote again);
//! - several apps in one instance (application groups) share a global
//!   process limit: each group's machine is told its `room` (processes it
//!   may add) before every event. A group whose requests wait with no room
//!   says so (`waiting_for_room`); someone outside (the pool's capacity
//!   arbiter) then evicts another group's idle worker (`Event::Evict`,
//!   least recently used first, never the last worker of a group that is
//!   serving). Spawns to keep `min_instances` yield to a group that waits;
//! - the preloader is asked to stop after `max_preloader_idle_time`
//!   without a spawn (the spawner starts a new one for the next spawn).
//!   Whether a preloader runs is the spawner's business, not the machine's:
//!   the machine only remembers when it last needed one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub type WorkerId = u64;
pub type Ticket = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub min_instances: usize,
    pub max_pool_size: usize,
    pub max_queue: usize,
    pub max_queue_time: Option<Duration>,
    pub pool_idle_time: Option<Duration>,
    pub max_preloader_idle_time: Option<Duration>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: u64,
    /// Bytes of private dirty + swap.
    pub memory_limit: Option<u64>,
    /// How long a spawn may take to greet.
    pub start_timeout: Option<Duration>,
    /// Requests after which a worker is promoted to mold: the first value
    /// for the first refork, the next for the next; the last repeats.
    /// Empty: no refork.
    pub refork_after: Vec<u64>,
    /// Sessions (requests at once) per worker: `--threads-per-worker`.
    pub threads: u32,
}

impl Config {
    pub fn new(min_instances: usize, max_pool_size: usize, max_queue: usize) -> Self {
        Config {
            min_instances,
            max_pool_size,
            max_queue,
            max_queue_time: None,
            pool_idle_time: None,
            max_preloader_idle_time: None,
            max_requests: None,
            max_requests_jitter: 0,
            memory_limit: None,
            start_timeout: None,
            refork_after: Vec::new(),
            threads: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Begin: spawn up to the minimum.
    Start,
    Request(Ticket),
    /// A worker finished its request.
    Done(WorkerId),
    /// A worker was handed out but its request never went to it (the
    /// client left first): it is idle again, with nothing served.
    Unused(WorkerId),
    /// A spawned worker greeted the front end.
    Ready(WorkerId),
    /// A worker's process or connection is gone.
    Lost(WorkerId),
    /// One session of a worker with several ended badly while the process
    /// may still be finishing its others (its connection closed before a
    /// request could be sent; a request interrupted after
    /// `--worker-timeout`): it takes no new request and stops once the
    /// others are done.
    Dropped(WorkerId, Retire),
    /// Take a worker out of service: no new request; it stops once the
    /// ones in progress are done.
    Retiring(WorkerId, Retire),
    SpawnFailed(WorkerId),
    /// A memory sample: private dirty + swap, in bytes.
    Memory(WorkerId, u64),
    /// Begin a rolling restart (the new code is known to load).
    Restart,
    /// TTIN (+1) / TTOU (-1).
    Scale(i32),
    /// The worker being promoted is up as the mold.
    Promoted(WorkerId),
    /// The worker being promoted refused (a thread it runs would be lost);
    /// it serves on and is not asked again.
    PromotionRefused(WorkerId),
    /// The mold died, or its generation must not be used: fall back to
    /// the preloader.
    MoldFailed,
    /// A preloader finished loading the app (its idle clock starts).
    PreloaderUp,
    /// Periodic: timeouts, idle retirement, backoffs.
    Tick,
    /// Another app needs room under the global limit: stop the idle worker
    /// used least recently, if one may go (see [`Machine::evictable`]).
    Evict,
    /// Stop spawning; let queued and in-flight requests finish.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    QueueFull,
    /// Waited longer than `max_queue_time`.
    QueueTimeout,
    /// No worker is running and none can be started for `retry_after`
    /// seconds (spawn back-off, crash loop), or the pool is stopping.
    Unavailable {
        retry_after: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    Idle,
    MaxRequests,
    MemoryLimit,
    Restart,
    Refork,
    ScaleDown,
    /// Stopped to make room for another app's requests.
    Evicted,
    /// One of its requests outran `--worker-timeout` and was interrupted.
    Timeout,
    /// One of its sessions closed on its own (the worker is stopping).
    Died,
}

impl Retire {
    pub fn as_str(self) -> &'static str {
        match self {
            Retire::Idle => "idle",
            Retire::MaxRequests => "max requests",
            Retire::MemoryLimit => "memory limit",
            Retire::Restart => "rolling restart",
            Retire::Refork => "refork",
            Retire::ScaleDown => "scaled down",
            Retire::Evicted => "room for another app",
            Retire::Timeout => "timeout",
            Retire::Died => "died",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Dispatch {
        ticket: Ticket,
        worker: WorkerId,
    },
    Reject {
        ticket: Ticket,
        reason: Reject,
    },
    Spawn {
        worker: WorkerId,
        generation: u64,
    },
    /// Stop an idle worker (no request in progress): close it gracefully.
    Stop {
        worker: WorkerId,
        reason: Retire,
    },
    StopPreloader,
    /// Promote this idle worker to be the template (a mold).
    Promote {
        worker: WorkerId,
    },
    /// Stop the mold; the preloader serves spawns again.
    DropMold,
    /// A rolling replacement is over: templates older than the current
    /// one serve nobody now.
    RetireOldTemplates,
    /// A spawn did not greet within `start_timeout`: kill its process, if
    /// it has one. Counted as a failed spawn.
    Abandon {
        worker: WorkerId,
    },
    /// Workers keep dying right after starting: respawning pauses.
    CrashLoop {
        deaths: u32,
    },
}

/// A worker as the rest of the pool sees it. Idle and Busy are derived from
/// its sessions: Busy means at least one request in progress (use
/// [`Machine::sessions_of`] and [`Config::threads`] for how many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Spawning,
    Idle,
    Busy,
    /// Becoming the mold: serves no requests.
    Promoting,
}

/// Where a worker is in its life; how busy it is, is `Slot::sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Spawning,
    Serving,
    Promoting,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    phase: Phase,
    /// Requests in progress (at most `Config::threads`).
    sessions: u32,
    spawn_started: Instant,
    generation: u64,
    ready_at: Option<Instant>,
    last_used: Instant,
    processed: u64,
    /// Set on a busy worker that must stop once its requests are done.
    retire: Option<Retire>,
}

impl Slot {
    fn state(&self) -> SlotState {
        match self.phase {
            Phase::Spawning => SlotState::Spawning,
            Phase::Promoting => SlotState::Promoting,
            Phase::Serving if self.sessions == 0 => SlotState::Idle,
            Phase::Serving => SlotState::Busy,
        }
    }

    /// Serving with no request in progress.
    fn idle(&self) -> bool {
        self.phase == Phase::Serving && self.sessions == 0
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A worker that dies this soon after becoming ready counts as a crash.
pub const QUICK_DEATH: Duration = Duration::from_secs(1);
/// Quick deaths in a row that make a crash loop.
pub const CRASH_LOOP: u32 = 5;
const CRASH_LOOP_PAUSE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    desired: usize,
    workers: BTreeMap<WorkerId, Slot>,
    queue: VecDeque<(Ticket, Instant)>,
    next_worker: WorkerId,
    generation: u64,
    restarting: bool,
    /// Why old-generation workers are being replaced (restart or refork).
    rollout: Retire,
    failures: u32,
    quick_deaths: u32,
    retry_at: Option<Instant>,
    /// When a preloader was last needed (started, or asked to fork); `None`
    /// once it has been asked to stop.
    preloader_needed: Option<Instant>,
    shutting_down: bool,
    /// Molds promoted so far.
    reforks: u32,
    promoting: Option<WorkerId>,
    /// Workers that refused promotion.
    refused: BTreeSet<WorkerId>,
    /// The generation whose workers fork from a mold, if any.
    mold_generation: Option<u64>,
    /// Processes this group may add under a global limit shared with other
    /// groups; `None` when it has the limit to itself.
    room: Option<usize>,
    /// Another group has requests waiting for room.
    others_wait: bool,
}

impl Machine {
    pub fn new(cfg: Config) -> Self {
        Machine {
            desired: cfg.min_instances,
            cfg,
            workers: BTreeMap::new(),
            queue: VecDeque::new(),
            next_worker: 1,
            generation: 1,
            restarting: false,
            rollout: Retire::Restart,
            failures: 0,
            quick_deaths: 0,
            retry_at: None,
            preloader_needed: None,
            shutting_down: false,
            reforks: 0,
            promoting: None,
            refused: BTreeSet::new(),
            mold_generation: None,
            room: None,
            others_wait: false,
        }
    }

    /// Sets this group's share of a global limit before an event: `room`
    /// more processes may start, and whether another group waits for room.
    pub fn set_room(&mut self, room: usize, others_wait: bool) {
        self.room = Some(room);
        self.others_wait = others_wait;
    }

    /// Processes that count against a global limit: every slot, leaving or
    /// not (a retiring worker still holds its memory).
    pub fn size(&self) -> usize {
        self.workers.len()
    }

    /// Requests wait, no worker of ours is idle or starting, our own limit
    /// would allow one more, and only the global limit stands in the way.
    pub fn waiting_for_room(&self, now: Instant) -> bool {
        self.room == Some(0)
            && !self.shutting_down
            && !self.queue.is_empty()
            && self.count(SlotState::Idle) == 0
            && self.count(SlotState::Spawning) == 0
            && self.workers.len() < self.cfg.max_pool_size
            && self.retry_at.is_none_or(|t| now >= t)
    }

    /// When the worker an eviction would stop was last used: the idle
    /// worker used least recently, unless it is the last one left while
    /// this group is serving (busy workers or waiting requests).
    pub fn evictable(&self) -> Option<Instant> {
        let worker = self.least_recently_used_idle()?;
        let serving = self.count(SlotState::Busy) > 0 || !self.queue.is_empty();
        if serving && self.active() <= 1 {
            return None;
        }
        Some(self.workers[&worker].last_used)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Molds promoted so far.
    pub fn reforks(&self) -> u32 {
        self.reforks
    }

    /// Whether respawning is paused after a crash loop.
    pub fn crash_looping(&self, now: Instant) -> bool {
        self.quick_deaths >= CRASH_LOOP && self.retry_at.is_some_and(|t| now < t)
    }

    /// Whether the current generation's workers fork from a mold.
    pub fn on_mold(&self) -> bool {
        self.mold_generation == Some(self.generation)
    }

    /// The process count the pool keeps at least (min, moved by TTIN/TTOU).
    pub fn desired(&self) -> usize {
        self.desired
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn restarting(&self) -> bool {
        self.restarting
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn state_of(&self, worker: WorkerId) -> Option<SlotState> {
        self.workers.get(&worker).map(Slot::state)
    }

    /// Requests in progress on `worker`.
    pub fn sessions_of(&self, worker: WorkerId) -> u32 {
        self.workers.get(&worker).map_or(0, |s| s.sessions)
    }

    /// Requests in progress on every worker.
    pub fn sessions(&self) -> u32 {
        self.workers.values().map(|s| s.sessions).sum()
    }

    /// Whether every session of `worker` is in use.
    pub fn full(&self, worker: WorkerId) -> bool {
        self.workers
            .get(&worker)
            .is_some_and(|s| s.sessions >= self.cfg.threads)
    }

    pub fn retiring(&self, worker: WorkerId) -> bool {
        self.workers
            .get(&worker)
            .is_some_and(|s| s.retire.is_some())
    }

    pub fn count(&self, state: SlotState) -> usize {
        self.workers.values().filter(|s| s.state() == state).count()
    }

    /// Consecutive failed spawns (0 once a spawn succeeds).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True once shutting down with nothing in flight or waiting.
    pub fn drained(&self) -> bool {
        self.shutting_down && self.queue.is_empty() && self.sessions() == 0
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The number of requests after which `worker` retires: the limit plus
    /// a per-worker jitter, so workers started together don't all restart
    /// together. Deterministic (a hash of the id) to keep tests exact.
    pub fn request_limit(&self, worker: WorkerId) -> Option<u64> {
        self.cfg.max_requests.map(|n| {
            let jitter = self.cfg.max_requests_jitter;
            n + worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (jitter + 1)
        })
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {}
            Event::Tick => self.tick(now, &mut out),
            Event::Request(ticket) => {
                if let Some(worker) = self.pick() {
                    self.occupy(worker, now);
                    out.push(Action::Dispatch { ticket, worker });
                } else if self.queue.len() >= self.cfg.max_queue {
                    out.push(Action::Reject {
                        ticket,
                        reason: Reject::QueueFull,
                    });
                } else {
                    self.queue.push_back((ticket, now));
                }
            }
            Event::Ready(worker) => {
                if let Some(slot) = self
                    .workers
                    .get_mut(&worker)
                    .filter(|s| s.phase == Phase::Spawning)
                {
                    slot.phase = Phase::Serving;
                    slot.ready_at = Some(now);
                    slot.last_used = now;
                    let generation = slot.generation;
                    self.failures = 0;
                    self.retry_at = None;
                    if self.restarting && generation == self.generation {
                        self.retire_one_old(&mut out);
                    }
                    self.assign(worker, now, &mut out);
                }
            }
            Event::Done(worker) => {
                let limit = self.request_limit(worker);
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.processed += 1;
                    slot.last_used = now;
                    slot.sessions = slot.sessions.saturating_sub(1);
                    if slot.retire.is_none() && limit.is_some_and(|l| slot.processed >= l) {
                        slot.retire = Some(Retire::MaxRequests);
                    }
                    self.session_ended(worker, now, &mut out);
                }
            }
            Event::Unused(worker) => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.sessions = slot.sessions.saturating_sub(1);
                    self.session_ended(worker, now, &mut out);
                }
            }
            Event::Dropped(worker, reason) => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.sessions = slot.sessions.saturating_sub(1);
                    slot.retire.get_or_insert(reason);
                    self.session_ended(worker, now, &mut out);
                }
            }
            Event::Lost(worker) => {
                if self.promoting == Some(worker) {
                    self.promoting = None;
                }
                if let Some(slot) = self.workers.remove(&worker) {
                    let quick = slot
                        .ready_at
                        .is_some_and(|t| now.duration_since(t) < QUICK_DEATH);
                    if quick && slot.retire.is_none() {
                        self.quick_deaths += 1;
                        if self.quick_deaths >= CRASH_LOOP {
                            self.retry_at = Some(now + CRASH_LOOP_PAUSE);
                            out.push(Action::CrashLoop {
                                deaths: self.quick_deaths,
                            });
                        }
                    } else if !quick {
                        self.quick_deaths = 0;
                    }
                }
            }
            Event::SpawnFailed(worker) => {
                if let Some(slot) = self.workers.remove(&worker) {
                    if Some(slot.generation) == self.mold_generation {
                        // The mold cannot make workers: not a reason to back
                        // off, a reason to go back to the preloader.
                        self.drop_mold(&mut out);
                    } else {
                        self.spawn_failed(now);
                    }
                }
            }
            Event::Promoted(worker) => {
                if self.promoting == Some(worker) {
                    self.promoting = None;
                    self.workers.remove(&worker);
                    self.reforks += 1;
                    self.generation += 1;
                    self.mold_generation = Some(self.generation);
                    self.restarting = self.workers.values().any(|s| s.retire.is_none());
                    self.rollout = Retire::Refork;
                    if !self.restarting {
                        out.push(Action::RetireOldTemplates);
                    }
                    self.quick_deaths = 0;
                }
            }
            Event::PromotionRefused(worker) => {
                if self.promoting == Some(worker) {
                    self.promoting = None;
                    self.refused.insert(worker);
                    if let Some(slot) = self.workers.get_mut(&worker) {
                        slot.phase = Phase::Serving;
                        self.session_ended(worker, now, &mut out);
                    }
                }
            }
            Event::MoldFailed => {
                if self.on_mold() {
                    self.drop_mold(&mut out);
                }
            }
            Event::Retiring(worker, reason) => self.retire(worker, reason, &mut out),
            Event::Memory(worker, bytes) => {
                if self.cfg.memory_limit.is_some_and(|limit| bytes > limit) {
                    self.retire(worker, Retire::MemoryLimit, &mut out);
                }
            }
            Event::Restart => {
                // New code comes from a fresh preloader: no mold of the
                // old code serves any more, and all may be asked again.
                self.mold_generation = None;
                self.refused.clear();
                if !self.workers.is_empty() {
                    self.generation += 1;
                    self.restarting = true;
                    self.rollout = Retire::Restart;
                    // Crash-loop and backoff state belong to the old code.
                    self.quick_deaths = 0;
                    self.retry_at = None;
                }
            }
            Event::Scale(delta) => {
                let desired = self.desired as i64 + delta as i64;
                let floor = self.cfg.min_instances as i64;
                let ceiling = self.cfg.max_pool_size as i64;
                self.desired = desired.clamp(floor.min(ceiling), ceiling) as usize;
                if delta < 0 {
                    while self.active() > self.desired {
                        let Some(worker) = self.least_recently_used_idle() else {
                            break;
                        };
                        self.workers.remove(&worker);
                        out.push(Action::Stop {
                            worker,
                            reason: Retire::ScaleDown,
                        });
                    }
                }
            }
            Event::Evict => {
                if self.evictable().is_some() {
                    let worker = self.least_recently_used_idle().expect("evictable");
                    self.workers.remove(&worker);
                    out.push(Action::Stop {
                        worker,
                        reason: Retire::Evicted,
                    });
                }
            }
            Event::PreloaderUp => self.preloader_needed = Some(now),
            Event::Shutdown => self.shutting_down = true,
        }
        self.maybe_refork(&mut out);
        self.maybe_spawn(now, &mut out);
        self.reject_if_unavailable(now, &mut out);
        out
    }

    /// Falls back from a mold to the preloader: a new generation (workers
    /// of the mold's keep serving, none is replaced for it).
    fn drop_mold(&mut self, out: &mut Vec<Action>) {
        self.mold_generation = None;
        self.generation += 1;
        self.restarting = false;
        out.push(Action::DropMold);
    }

    /// The requests after which the next refork happens, if reforking.
    fn refork_threshold(&self) -> Option<u64> {
        let list = &self.cfg.refork_after;
        let at = (self.reforks as usize).min(list.len().checked_sub(1)?);
        Some(list[at])
    }

    /// Promotes the warmest idle worker of the current generation once it
    /// has served the next threshold: one promotion at a time, never during
    /// a rolling replacement or a stop.
    fn maybe_refork(&mut self, out: &mut Vec<Action>) {
        let Some(threshold) = self.refork_threshold() else {
            return;
        };
        if self.shutting_down || self.restarting || self.promoting.is_some() {
            return;
        }
        let current = self.generation;
        let candidate = self
            .workers
            .iter()
            .filter(|(id, s)| {
                s.idle()
                    && s.retire.is_none()
                    && s.generation == current
                    && s.processed >= threshold
                    && !self.refused.contains(id)
            })
            .max_by_key(|(id, s)| (s.processed, **id))
            .map(|(id, _)| *id);
        if let Some(worker) = candidate {
            self.workers
                .get_mut(&worker)
                .expect("candidate exists")
                .phase = Phase::Promoting;
            self.promoting = Some(worker);
            out.push(Action::Promote { worker });
        }
    }

    fn spawn_failed(&mut self, now: Instant) {
        self.failures += 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(MAX_BACKOFF);
        let retry = now + backoff;
        // A crash-loop pause already set runs its course.
        self.retry_at = Some(self.retry_at.map_or(retry, |t| t.max(retry)));
        // New code that cannot start: keep serving with the old.
        self.restarting = false;
    }

    /// Seconds until a worker may exist again, when none exists now and
    /// none may be started yet; requests waiting for one would only hang.
    fn unavailable_for(&self, now: Instant) -> Option<u64> {
        if !self.workers.is_empty() {
            return None;
        }
        if self.shutting_down {
            return Some(1);
        }
        let wait = self.retry_at?.checked_duration_since(now)?;
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn reject_if_unavailable(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.queue.is_empty() {
            return;
        }
        if let Some(retry_after) = self.unavailable_for(now) {
            for (ticket, _) in self.queue.drain(..) {
                out.push(Action::Reject {
                    ticket,
                    reason: Reject::Unavailable { retry_after },
                });
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(limit) = self.cfg.start_timeout {
            let late: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, s)| {
                    s.phase == Phase::Spawning && now.duration_since(s.spawn_started) > limit
                })
                .map(|(id, _)| *id)
                .collect();
            for worker in late {
                let slot = self.workers.remove(&worker).expect("late slot exists");
                out.push(Action::Abandon { worker });
                if Some(slot.generation) == self.mold_generation {
                    self.drop_mold(out);
                } else {
                    self.spawn_failed(now);
                }
            }
        }
        if let Some(limit) = self.cfg.max_queue_time {
            while let Some(&(ticket, since)) = self.queue.front() {
                if now.duration_since(since) <= limit {
                    break;
                }
                self.queue.pop_front();
                out.push(Action::Reject {
                    ticket,
                    reason: Reject::QueueTimeout,
                });
            }
        }
        if let Some(idle) = self.cfg.pool_idle_time {
            while self.active() > self.desired {
                let Some(worker) = self.least_recently_used_idle() else {
                    break;
                };
                if now.duration_since(self.workers[&worker].last_used) < idle {
                    break;
                }
                self.workers.remove(&worker);
                out.push(Action::Stop {
                    worker,
                    reason: Retire::Idle,
                });
            }
        }
        if let (Some(idle), Some(last)) = (self.cfg.max_preloader_idle_time, self.preloader_needed)
        {
            if now.duration_since(last) >= idle && self.count(SlotState::Spawning) == 0 {
                self.preloader_needed = None;
                out.push(Action::StopPreloader);
            }
        }
    }

    /// Workers that count toward the pool's size: not leaving.
    fn active(&self) -> usize {
        self.workers.values().filter(|s| s.retire.is_none()).count()
    }

    fn retire(&mut self, worker: WorkerId, reason: Retire, out: &mut Vec<Action>) {
        let Some(slot) = self.workers.get_mut(&worker) else {
            return;
        };
        match slot.state() {
            SlotState::Idle => {
                self.workers.remove(&worker);
                out.push(Action::Stop { worker, reason });
            }
            SlotState::Busy | SlotState::Promoting => {
                slot.retire.get_or_insert(reason);
            }
            SlotState::Spawning => {}
        }
    }

    /// During a rolling restart: retire one old-generation worker, an idle
    /// one if there is any. Ends the restart when none is left to retire.
    fn retire_one_old(&mut self, out: &mut Vec<Action>) {
        let current = self.generation;
        let old =
            |s: &Slot| s.generation < current && s.retire.is_none() && s.phase != Phase::Spawning;
        let pick = self
            .workers
            .iter()
            .filter(|(_, s)| old(s))
            .min_by_key(|(_, s)| (!s.idle(), s.sessions, s.last_used))
            .map(|(id, _)| *id);
        if let Some(worker) = pick {
            self.retire(worker, self.rollout, out);
        }
        if !self.workers.values().any(old) {
            self.restarting = false;
            out.push(Action::RetireOldTemplates);
        }
    }

    /// Whether `worker` can take one more request: serving, not leaving, a
    /// session free, and (with `max_requests`) not at its limit counting
    /// the requests it has in progress.
    fn has_room(&self, worker: WorkerId) -> bool {
        let Some(s) = self.workers.get(&worker) else {
            return false;
        };
        s.phase == Phase::Serving
            && s.retire.is_none()
            && s.sessions < self.cfg.threads
            && self
                .request_limit(worker)
                .is_none_or(|limit| s.processed + u64::from(s.sessions) < limit)
    }

    /// The least busy worker with room (fewest sessions in use); among
    /// those, the most recently used.
    fn pick(&self) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(id, _)| self.has_room(**id))
            .max_by_key(|(id, s)| (std::cmp::Reverse(s.sessions), s.last_used, **id))
            .map(|(id, _)| *id)
    }

    /// After one of `worker`'s sessions ended: a retiring worker stops once
    /// none is left; otherwise free sessions take waiting requests.
    fn session_ended(&mut self, worker: WorkerId, now: Instant, out: &mut Vec<Action>) {
        let Some(slot) = self.workers.get(&worker) else {
            return;
        };
        match slot.retire {
            Some(reason) if slot.sessions == 0 && slot.phase == Phase::Serving => {
                self.workers.remove(&worker);
                out.push(Action::Stop { worker, reason });
            }
            Some(_) => {}
            None => self.assign(worker, now, out),
        }
    }

    fn least_recently_used_idle(&self) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, s)| s.idle() && s.retire.is_none())
            .min_by_key(|(id, s)| (s.last_used, **id))
            .map(|(id, _)| *id)
    }

    fn occupy(&mut self, worker: WorkerId, now: Instant) {
        let slot = self.workers.get_mut(&worker).expect("picked worker exists");
        slot.sessions += 1;
        slot.last_used = now;
    }

    /// Gives `worker` the oldest waiting requests, as many as it has room
    /// for.
    fn assign(&mut self, worker: WorkerId, now: Instant, out: &mut Vec<Action>) {
        while self.has_room(worker) {
            let Some((ticket, _)) = self.queue.pop_front() else {
                break;
            };
            self.occupy(worker, now);
            out.push(Action::Dispatch { ticket, worker });
        }
    }

    fn maybe_spawn(&mut self, now: Instant, out: &mut Vec<Action>) {
        let limit = self.cfg.max_pool_size + usize::from(self.restarting);
        if self.shutting_down
            || self.count(SlotState::Spawning) > 0
            || self.workers.len() >= limit
            || self.retry_at.is_some_and(|t| now < t)
        {
            return;
        }
        let current = self.generation;
        let below_min = self.active() < self.desired;
        let starved = !self.queue.is_empty() && !self.workers.keys().any(|w| self.has_room(*w));
        let replacing = self.restarting
            && self
                .workers
                .values()
                .any(|s| s.generation < current && s.retire.is_none());
        // Under a shared limit: a rolling replacement may go one over, as
        // it may over our own maximum; the minimum waits while another
        // group's requests need the room.
        let (starved, below_min) = match self.room {
            None => (starved, below_min),
            Some(0) => (false, false),
            Some(_) => (starved, below_min && !self.others_wait),
        };
        if below_min || starved || replacing {
            let worker = self.next_worker;
            self.next_worker += 1;
            self.workers.insert(
                worker,
                Slot {
                    phase: Phase::Spawning,
                    sessions: 0,
                    spawn_started: now,
                    generation: current,
                    ready_at: None,
                    last_used: now,
                    processed: 0,
                    retire: None,
                },
            );
            if self.cfg.max_preloader_idle_time.is_some() {
                self.preloader_needed = Some(now);
            }
            out.push(Action::Spawn {
                worker,
                generation: current,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn spawn(worker: WorkerId) -> Action {
        Action::Spawn {
            worker,
            generation: 1,
        }
    }

    fn dispatch(ticket: Ticket, worker: WorkerId) -> Action {
        Action::Dispatch { ticket, worker }
    }

    fn stop(worker: WorkerId, reason: Retire) -> Action {
        Action::Stop { worker, reason }
    }

    /// Workers 1..=`deaths` each become ready and die 10 ms later; returns
    /// the time of the last death (ms).
    fn quick_deaths(m: &mut Machine, c: &Clock, deaths: u64) -> u64 {
        let mut t = 0;
        for id in 1..=deaths {
            t += 10;
            m.handle(c.at(t), Event::Ready(id));
            t += 10;
            m.handle(c.at(t), Event::Lost(id));
        }
        t
    }

    /// A machine with `n` ready workers (ids 1..=n) at time 0–n ms.
    fn ready(cfg: Config, n: u64, c: &Clock) -> Machine {
        let mut m = Machine::new(cfg);
        m.handle(c.at(0), Event::Start);
        for id in 1..=n {
            m.handle(c.at(id), Event::Ready(id));
        }
        m
    }

    /// Groups sharing a global limit, as the pool's capacity runs them:
    /// each event is handled with the group's room set first.
    struct Groups {
        machines: Vec<Machine>,
        max: usize,
    }

    impl Groups {
        fn new(cfgs: Vec<Config>, max: usize) -> Self {
            let machines = cfgs.into_iter().map(Machine::new).collect();
            Groups { machines, max }
        }

        fn handle(&mut self, at: Instant, group: usize, event: Event) -> Vec<Action> {
            let used: usize = self.machines.iter().map(Machine::size).sum();
            let others_wait = self
                .machines
                .iter()
                .enumerate()
                .any(|(g, m)| g != group && m.waiting_for_room(at));
            let m = &mut self.machines[group];
            m.set_room(self.max.saturating_sub(used), others_wait);
            m.handle(at, event)
        }

        /// What the arbiter does: evict from the group whose evictable
        /// worker was used least recently, other than `for_group`.
        fn evict_for(&mut self, at: Instant, for_group: usize) -> Option<(usize, Vec<Action>)> {
            let victim = (0..self.machines.len())
                .filter(|g| *g != for_group)
                .filter_map(|g| self.machines[g].evictable().map(|t| (t, g)))
                .min()?
                .1;
            Some((victim, self.handle(at, victim, Event::Evict)))
        }
    }

    #[test]
    fn with_no_room_requests_wait_and_say_so_and_spawn_once_room_frees() {
        let c = Clock(Instant::now());
        let mut g = Groups::new(vec![Config::new(1, 4, 10), Config::new(1, 4, 10)], 2);
        assert_eq!(g.handle(c.at(0), 0, Event::Start), vec![spawn(1)]);
        g.handle(c.at(1), 0, Event::Ready(1));
        assert_eq!(g.handle(c.at(2), 1, Event::Start), vec![spawn(1)]);
        g.handle(c.at(3), 1, Event::Ready(1));
        // Group 0 is busy and full under the global limit of 2.
        assert_eq!(
            g.handle(c.at(4), 0, Event::Request(1)),
            vec![dispatch(1, 1)]
        );
        assert_eq!(g.handle(c.at(5), 0, Event::Request(2)), vec![]);
        assert!(g.machines[0].waiting_for_room(c.at(5)));
        // Group 1's idle worker is the one to go; then group 0 spawns.
        let (victim, actions) = g.evict_for(c.at(6), 0).unwrap();
        assert_eq!(victim, 1);
        assert_eq!(actions, vec![stop(1, Retire::Evicted)]);
        assert_eq!(g.handle(c.at(7), 0, Event::Tick), vec![spawn(2)]);
        assert!(!g.machines[0].waiting_for_room(c.at(7)));
        // Group 1's minimum waits while group 0 still has a request waiting.
        assert_eq!(g.handle(c.at(8), 1, Event::Tick), vec![]);
    }

    #[test]
    fn the_minimum_yields_to_another_group_that_waits_for_room() {
        let c = Clock(Instant::now());
        let mut g = Groups::new(vec![Config::new(0, 4, 10), Config::new(1, 4, 10)], 1);
        assert_eq!(g.handle(c.at(0), 1, Event::Start), vec![spawn(1)]);
        g.handle(c.at(1), 1, Event::Ready(1));
        g.handle(c.at(2), 0, Event::Request(1));
        assert!(g.machines[0].waiting_for_room(c.at(2)));
        g.evict_for(c.at(3), 0).unwrap();
        // Room for one: group 0 (requests waiting) takes it, even though
        // group 1 is now below its minimum and ticks first.
        assert_eq!(g.handle(c.at(4), 1, Event::Tick), vec![]);
        assert_eq!(g.handle(c.at(5), 0, Event::Tick), vec![spawn(1)]);
        assert_eq!(g.handle(c.at(6), 0, Event::Ready(1)), vec![dispatch(1, 1)]);
        // Group 0 done and idle, nobody waits: group 1 gets its minimum back
        // once group 0's idle worker is evicted or retired; with no room it waits.
        g.handle(c.at(7), 0, Event::Done(1));
        assert_eq!(g.handle(c.at(8), 1, Event::Tick), vec![]);
    }

    #[test]
    fn eviction_takes_the_least_recently_used_idle_worker_but_never_the_last_one_serving() {
        let c = Clock(Instant::now());
        // Eviction ignores the minimum: another app's requests come first.
        let mut m = ready(Config::new(2, 4, 10), 2, &c);
        m.set_room(0, false);
        // Worker 2 used more recently than 1.
        m.handle(c.at(10), Event::Request(1));
        m.handle(c.at(11), Event::Done(2));
        assert_eq!(m.evictable(), Some(c.at(1)));
        assert_eq!(
            m.handle(c.at(12), Event::Evict),
            vec![stop(1, Retire::Evicted)]
        );
        // One worker left and it is serving: it stays.
        m.handle(c.at(13), Event::Request(2));
        assert_eq!(m.evictable(), None);
        assert_eq!(m.handle(c.at(14), Event::Evict), vec![]);
        // Idle and nobody waiting: even the last one may go.
        m.handle(c.at(15), Event::Done(2));
        assert_eq!(m.evictable(), Some(c.at(15)));
        // A busy worker is never evicted.
        let mut busy = ready(Config::new(1, 4, 10), 1, &c);
        busy.handle(c.at(20), Event::Request(1));
        assert_eq!(busy.evictable(), None);
    }

    #[test]
    fn starts_the_minimum_one_spawn_at_a_time() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(Config::new(2, 4, 10));
        assert_eq!(m.handle(c.at(0), Event::Start), vec![spawn(1)]);
        assert_eq!(m.handle(c.at(1), Event::Tick), vec![]);
        assert_eq!(m.handle(c.at(5), Event::Ready(1)), vec![spawn(2)]);
        assert_eq!(m.handle(c.at(9), Event::Ready(2)), vec![]);
        assert_eq!(m.count(SlotState::Idle), 2);
    }

    #[test]
    fn busy_pool_queues_and_spawns_up_to_max() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(1, 2, 10), 1, &c);
        assert_eq!(m.handle(c.at(2), Event::Request(10)), vec![dispatch(10, 1)]);
        // Worker 1 busy: the next request waits and triggers a spawn.
        assert_eq!(m.handle(c.at(3), Event::Request(11)), vec![spawn(2)]);
        assert_eq!(m.handle(c.at(4), Event::Request(12)), vec![]);
        assert_eq!(m.queue_len(), 2);
        // The new worker takes the oldest waiting request.
        assert_eq!(m.handle(c.at(5), Event::Ready(2)), vec![dispatch(11, 2)]);
        // At max size: no further spawn, more requests just wait.
        assert_eq!(m.handle(c.at(6), Event::Request(13)), vec![]);
        assert_eq!(m.handle(c.at(7), Event::Done(1)), vec![dispatch(12, 1)]);
    }

    #[test]
    fn full_queue_rejects() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(1, 1, 1), 1, &c);
        m.handle(c.at(2), Event::Request(1));
        assert_eq!(m.handle(c.at(3), Event::Request(2)), vec![]);
        assert_eq!(
            m.handle(c.at(4), Event::Request(3)),
            vec![Action::Reject {
                ticket: 3,
                reason: Reject::QueueFull
            }]
        );
    }

    #[test]
    fn requests_waiting_too_long_are_rejected() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 1, 10);
        cfg.max_queue_time = Some(Duration::from_millis(100));
        let mut m = ready(cfg, 1, &c);
        m.handle(c.at(10), Event::Request(1));
        m.handle(c.at(20), Event::Request(2));
        m.handle(c.at(90), Event::Request(3));
        assert_eq!(m.handle(c.at(100), Event::Tick), vec![]);
        assert_eq!(
            m.handle(c.at(125), Event::Tick),
            vec![Action::Reject {
                ticket: 2,
                reason: Reject::QueueTimeout
            }]
        );
        assert_eq!(m.handle(c.at(150), Event::Done(1)), vec![dispatch(3, 1)]);
    }

    #[test]
    fn idle_worker_most_recently_used_is_picked() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(2, 2, 10), 2, &c);
        m.handle(c.at(3), Event::Request(1)); // worker 2 (newest)
        m.handle(c.at(4), Event::Request(2)); // worker 1
        m.handle(c.at(5), Event::Done(1));
        m.handle(c.at(6), Event::Done(2));
        assert_eq!(m.handle(c.at(7), Event::Request(3)), vec![dispatch(3, 2)]);
    }

    #[test]
    fn idle_workers_retire_down_to_the_minimum() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 3, 10);
        cfg.pool_idle_time = Some(Duration::from_secs(10));
        let mut m = ready(cfg, 1, &c);
        // Traffic grows the pool to 3.
        m.handle(c.at(10), Event::Request(1));
        m.handle(c.at(11), Event::Request(2));
        m.handle(c.at(12), Event::Ready(2));
        m.handle(c.at(13), Event::Request(3));
        m.handle(c.at(14), Event::Ready(3));
        for w in 1..=3 {
            m.handle(c.at(20 + w), Event::Done(w));
        }
        assert_eq!(m.handle(c.at(9_000), Event::Tick), vec![]);
        // After 10 s idle, the two least recently used go; one stays.
        assert_eq!(
            m.handle(c.at(10_030), Event::Tick),
            vec![stop(1, Retire::Idle), stop(2, Retire::Idle)]
        );
        assert_eq!(m.handle(c.at(99_000), Event::Tick), vec![]);
        assert_eq!(m.count(SlotState::Idle), 1);
    }

    #[test]
    fn max_requests_retires_after_the_request_and_respawns() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 2, 10);
        cfg.max_requests = Some(2);
        let mut m = ready(cfg, 1, &c);
        m.handle(c.at(2), Event::Request(1));
        assert_eq!(m.handle(c.at(3), Event::Done(1)), vec![]);
        m.handle(c.at(4), Event::Request(2));
        assert_eq!(
            m.handle(c.at(5), Event::Done(1)),
            vec![stop(1, Retire::MaxRequests), spawn(2)]
        );
    }

    #[test]
    fn max_requests_jitter_spreads_the_limits() {
        let mut cfg = Config::new(1, 2, 10);
        cfg.max_requests = Some(100);
        cfg.max_requests_jitter = 50;
        let m = Machine::new(cfg);
        let limits: std::collections::HashSet<u64> =
            (1..=10).map(|w| m.request_limit(w).unwrap()).collect();
        assert!(limits.len() > 3, "{limits:?}");
        assert!(limits.iter().all(|l| (100..=150).contains(l)));
    }

    #[test]
    fn memory_limit_retires_idle_at_once_and_busy_after_its_request() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(2, 3, 10);
        cfg.memory_limit = Some(1000);
        let mut m = ready(cfg, 2, &c);
        assert_eq!(m.handle(c.at(5), Event::Memory(1, 999)), vec![]);
        m.handle(c.at(6), Event::Request(1)); // worker 2
                                              // Busy: marked, and its successor starts while it finishes.
        assert_eq!(m.handle(c.at(7), Event::Memory(2, 5000)), vec![spawn(3)]);
        assert!(m.retiring(2));
        assert_eq!(
            m.handle(c.at(8), Event::Memory(1, 5000)),
            vec![stop(1, Retire::MemoryLimit)]
        );
        assert_eq!(
            m.handle(c.at(9), Event::Done(2)),
            vec![stop(2, Retire::MemoryLimit)]
        );
        assert_eq!(m.handle(c.at(10), Event::Ready(3)), vec![spawn(4)]);
    }

    #[test]
    fn lost_worker_is_replaced_below_minimum() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(1, 3, 10), 1, &c);
        assert_eq!(m.handle(c.at(5_000), Event::Lost(1)), vec![spawn(2)]);
    }

    #[test]
    fn failed_spawns_back_off_and_reject_waiters() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(Config::new(1, 3, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Request(7));
        assert_eq!(
            m.handle(c.at(2), Event::SpawnFailed(1)),
            vec![Action::Reject {
                ticket: 7,
                reason: Reject::Unavailable { retry_after: 1 }
            }]
        );
        assert_eq!(m.handle(c.at(100), Event::Tick), vec![]);
        // With no worker and none allowed yet, a new request does not wait.
        assert_eq!(
            m.handle(c.at(200), Event::Request(8)),
            vec![Action::Reject {
                ticket: 8,
                reason: Reject::Unavailable { retry_after: 1 }
            }]
        );
        assert_eq!(m.handle(c.at(502), Event::Tick), vec![spawn(2)]);
        m.handle(c.at(503), Event::SpawnFailed(2));
        assert_eq!(m.failures(), 2);
        // The second backoff is twice as long.
        assert_eq!(m.handle(c.at(1400), Event::Tick), vec![]);
        assert_eq!(m.handle(c.at(1504), Event::Tick), vec![spawn(3)]);
        m.handle(c.at(1505), Event::Ready(3));
        assert_eq!(m.failures(), 0);
    }

    #[test]
    fn a_crash_loop_stops_respawning() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(Config::new(1, 3, 10));
        m.handle(c.at(0), Event::Start);
        let mut t = 0;
        for id in 1..CRASH_LOOP as u64 {
            t += 10;
            m.handle(c.at(t), Event::Ready(id));
            t += 10;
            assert_eq!(m.handle(c.at(t), Event::Lost(id)), vec![spawn(id + 1)]);
        }
        let last = CRASH_LOOP as u64;
        m.handle(c.at(t + 10), Event::Ready(last));
        assert_eq!(
            m.handle(c.at(t + 20), Event::Lost(last)),
            vec![Action::CrashLoop { deaths: CRASH_LOOP }]
        );
        assert_eq!(m.handle(c.at(t + 30_000), Event::Tick), vec![]);
        assert_eq!(
            m.handle(c.at(t + 61_000), Event::Tick),
            vec![spawn(last + 1)]
        );
    }

    #[test]
    fn a_worker_that_lived_resets_the_crash_count() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(Config::new(1, 3, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Ready(1));
        m.handle(c.at(2), Event::Lost(1));
        m.handle(c.at(3), Event::Ready(2));
        m.handle(c.at(5_000), Event::Lost(2));
        assert_eq!(m.quick_deaths, 0);
    }

    #[test]
    fn rolling_restart_replaces_workers_one_by_one() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(2, 2, 10), 2, &c);
        m.handle(c.at(3), Event::Request(1)); // worker 2 busy
                                              // The pool is at its max; a restart may go one over.
        assert_eq!(
            m.handle(c.at(10), Event::Restart),
            vec![Action::Spawn {
                worker: 3,
                generation: 2
            }]
        );
        // New worker ready: the idle old one (1) goes, the next new spawns.
        assert_eq!(
            m.handle(c.at(20), Event::Ready(3)),
            vec![
                stop(1, Retire::Restart),
                Action::Spawn {
                    worker: 4,
                    generation: 2
                }
            ]
        );
        // Worker 2 is busy: it is marked, and stops after its request.
        assert_eq!(
            m.handle(c.at(30), Event::Ready(4)),
            vec![Action::RetireOldTemplates]
        );
        assert!(m.retiring(2));
        assert!(!m.restarting());
        assert_eq!(
            m.handle(c.at(40), Event::Done(2)),
            vec![stop(2, Retire::Restart)]
        );
        assert_eq!(m.count(SlotState::Idle), 2);
        assert_eq!(m.generation(), 2);
    }

    #[test]
    fn a_restart_whose_workers_fail_keeps_the_old_ones() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(1, 2, 10), 1, &c);
        m.handle(c.at(10), Event::Restart);
        assert_eq!(m.handle(c.at(20), Event::SpawnFailed(2)), vec![]);
        assert!(!m.restarting());
        assert_eq!(m.handle(c.at(30), Event::Request(1)), vec![dispatch(1, 1)]);
    }

    #[test]
    fn scaling_moves_the_desired_count_within_bounds() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(1, 3, 10), 1, &c);
        assert_eq!(m.handle(c.at(10), Event::Scale(1)), vec![spawn(2)]);
        m.handle(c.at(20), Event::Ready(2));
        assert_eq!(m.handle(c.at(30), Event::Scale(1)), vec![spawn(3)]);
        m.handle(c.at(40), Event::Ready(3));
        assert_eq!(m.handle(c.at(50), Event::Scale(1)), vec![]);
        assert_eq!(m.desired(), 3);
        assert_eq!(
            m.handle(c.at(60), Event::Scale(-1)),
            vec![stop(1, Retire::ScaleDown)]
        );
        m.handle(c.at(70), Event::Scale(-1));
        assert_eq!(m.handle(c.at(80), Event::Scale(-1)), vec![]);
        assert_eq!(m.desired(), 1);
    }

    #[test]
    fn a_crash_loop_rejects_requests_at_once_until_the_pause_ends() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(Config::new(1, 3, 10));
        m.handle(c.at(0), Event::Start);
        let t = quick_deaths(&mut m, &c, CRASH_LOOP as u64);
        assert_eq!(m.count(SlotState::Spawning), 0);
        let out = m.handle(c.at(t + 1_000), Event::Request(1));
        assert_eq!(
            out,
            vec![Action::Reject {
                ticket: 1,
                reason: Reject::Unavailable { retry_after: 59 }
            }]
        );
        assert_eq!(m.queue_len(), 0);
    }

    #[test]
    fn waiting_requests_are_rejected_when_the_last_worker_dies_in_a_crash_loop() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(Config::new(1, 1, 10));
        m.handle(c.at(0), Event::Start);
        let t = quick_deaths(&mut m, &c, CRASH_LOOP as u64 - 1);
        let last = CRASH_LOOP as u64;
        m.handle(c.at(t + 10), Event::Ready(last));
        m.handle(c.at(t + 11), Event::Request(1)); // dispatched to the last
        m.handle(c.at(t + 12), Event::Request(2)); // waits
        assert_eq!(m.queue_len(), 1);
        let out = m.handle(c.at(t + 20), Event::Lost(last));
        assert!(out.contains(&Action::Reject {
            ticket: 2,
            reason: Reject::Unavailable { retry_after: 60 }
        }));
    }

    #[test]
    fn a_spawn_that_never_greets_is_abandoned_and_backs_off() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 2, 10);
        cfg.start_timeout = Some(Duration::from_secs(5));
        let mut m = Machine::new(cfg);
        assert_eq!(m.handle(c.at(0), Event::Start), vec![spawn(1)]);
        assert_eq!(m.handle(c.at(4_000), Event::Tick), vec![]);
        assert_eq!(
            m.handle(c.at(5_001), Event::Tick),
            vec![Action::Abandon { worker: 1 }]
        );
        assert_eq!(m.failures(), 1);
        // A late greeting from the abandoned spawn changes nothing.
        assert_eq!(m.handle(c.at(5_002), Event::Ready(1)), vec![]);
        assert_eq!(m.handle(c.at(5_600), Event::Tick), vec![spawn(2)]);
    }

    #[test]
    fn an_unused_worker_is_idle_again_without_counting_a_request() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 1, 10);
        cfg.max_requests = Some(1);
        let mut m = ready(cfg, 1, &c);
        assert_eq!(m.handle(c.at(2), Event::Request(1)), vec![dispatch(1, 1)]);
        assert_eq!(m.handle(c.at(3), Event::Request(2)), vec![]);
        // The first client left before its request was sent: the worker
        // takes the next one, and has still served nothing.
        assert_eq!(m.handle(c.at(4), Event::Unused(1)), vec![dispatch(2, 1)]);
        assert_eq!(
            m.handle(c.at(5), Event::Done(1)),
            vec![stop(1, Retire::MaxRequests), spawn(2)]
        );
    }

    /// A machine with `n` ready workers and refork after `after`.
    fn reforking(n: u64, after: &[u64], c: &Clock) -> Machine {
        let mut cfg = Config::new(n as usize, n as usize, 10);
        cfg.refork_after = after.to_vec();
        ready(cfg, n, c)
    }

    /// Worker `w` serves one request at `t`; returns the actions of its end.
    fn serve(m: &mut Machine, c: &Clock, t: u64, ticket: Ticket) -> Vec<Action> {
        let out = m.handle(c.at(t), Event::Request(ticket));
        let Some(Action::Dispatch { worker, .. }) = out.first().copied() else {
            panic!("no dispatch: {out:?}");
        };
        m.handle(c.at(t + 1), Event::Done(worker))
    }

    #[test]
    fn the_warmest_worker_is_promoted_at_the_threshold_and_its_children_replace_the_rest() {
        let c = Clock(Instant::now());
        let mut m = reforking(2, &[3], &c);
        // The most recently used idle worker (2) takes every request.
        assert_eq!(serve(&mut m, &c, 10, 1), vec![]);
        assert_eq!(serve(&mut m, &c, 20, 2), vec![]);
        assert_eq!(
            serve(&mut m, &c, 30, 3),
            vec![Action::Promote { worker: 2 }]
        );
        assert_eq!(m.state_of(2), Some(SlotState::Promoting));
        // Requests meanwhile go to the other worker.
        assert_eq!(m.handle(c.at(40), Event::Request(4)), vec![dispatch(4, 1)]);
        m.handle(c.at(41), Event::Done(1));
        // Up as the mold: it leaves the pool; a new generation replaces the
        // old one worker by worker, retiring for "refork".
        assert_eq!(
            m.handle(c.at(50), Event::Promoted(2)),
            vec![Action::Spawn {
                worker: 3,
                generation: 2
            }]
        );
        assert_eq!(m.reforks(), 1);
        assert!(m.on_mold());
        assert_eq!(
            m.handle(c.at(60), Event::Ready(3)),
            vec![
                stop(1, Retire::Refork),
                Action::RetireOldTemplates,
                Action::Spawn {
                    worker: 4,
                    generation: 2
                }
            ]
        );
    }

    #[test]
    fn thresholds_advance_per_refork_and_the_last_repeats() {
        let c = Clock(Instant::now());
        let mut m = reforking(1, &[1, 2], &c);
        assert_eq!(
            serve(&mut m, &c, 10, 1),
            vec![Action::Promote { worker: 1 }]
        );
        m.handle(c.at(20), Event::Promoted(1));
        m.handle(c.at(30), Event::Ready(2));
        // The second refork needs 2 requests, and so does every later one.
        assert_eq!(serve(&mut m, &c, 40, 2), vec![]);
        assert_eq!(
            serve(&mut m, &c, 50, 3),
            vec![Action::Promote { worker: 2 }]
        );
        m.handle(c.at(60), Event::Promoted(2));
        m.handle(c.at(70), Event::Ready(3));
        assert_eq!(serve(&mut m, &c, 80, 4), vec![]);
        assert_eq!(
            serve(&mut m, &c, 90, 5),
            vec![Action::Promote { worker: 3 }]
        );
    }

    #[test]
    fn a_worker_that_refuses_is_not_asked_again_and_serves_on() {
        let c = Clock(Instant::now());
        let mut m = reforking(1, &[1], &c);
        assert_eq!(
            serve(&mut m, &c, 10, 1),
            vec![Action::Promote { worker: 1 }]
        );
        // A request waits while it is asked; it gets it back on refusal.
        assert_eq!(m.handle(c.at(11), Event::Request(2)), vec![]);
        assert_eq!(
            m.handle(c.at(12), Event::PromotionRefused(1)),
            vec![dispatch(2, 1)]
        );
        assert_eq!(m.handle(c.at(13), Event::Done(1)), vec![]);
        assert_eq!(serve(&mut m, &c, 20, 3), vec![]);
        assert_eq!(m.reforks(), 0);
    }

    #[test]
    fn a_failing_mold_falls_back_to_the_preloader_without_back_off() {
        let c = Clock(Instant::now());
        let mut m = reforking(2, &[1], &c);
        assert_eq!(
            serve(&mut m, &c, 10, 1),
            vec![Action::Promote { worker: 2 }]
        );
        assert_eq!(
            m.handle(c.at(20), Event::Promoted(2)),
            vec![Action::Spawn {
                worker: 3,
                generation: 2
            }]
        );
        // The mold's worker fails to start: drop the mold, a new generation
        // from the preloader, spawning again at once.
        assert_eq!(
            m.handle(c.at(30), Event::SpawnFailed(3)),
            vec![
                Action::DropMold,
                Action::Spawn {
                    worker: 4,
                    generation: 3
                }
            ]
        );
        assert!(!m.on_mold());
        assert!(!m.restarting());
        assert_eq!(m.failures(), 0);
        // Worker 1 (generation 1) is kept: no rollout for a fallback.
        m.handle(c.at(40), Event::Ready(4));
        assert_eq!(m.count(SlotState::Idle), 2);
    }

    #[test]
    fn a_lost_mold_falls_back_and_a_restart_forgets_molds_and_refusals() {
        let c = Clock(Instant::now());
        let mut m = reforking(1, &[1], &c);
        serve(&mut m, &c, 10, 1);
        m.handle(c.at(20), Event::Promoted(1));
        m.handle(c.at(30), Event::Ready(2));
        assert_eq!(
            m.handle(c.at(40), Event::MoldFailed),
            vec![Action::DropMold]
        );
        assert!(!m.on_mold());
        // A second MoldFailed (an old mold) changes nothing.
        assert_eq!(m.handle(c.at(50), Event::MoldFailed), vec![]);
        m.handle(c.at(60), Event::Restart);
        assert!(m.restarting());
        // No promotion during the restart's rollout.
        let out = serve(&mut m, &c, 70, 2);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Promote { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn an_idle_preloader_is_stopped() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 3, 10);
        cfg.max_preloader_idle_time = Some(Duration::from_secs(5));
        let mut m = Machine::new(cfg);
        m.handle(c.at(0), Event::PreloaderUp);
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(10), Event::Ready(1));
        assert_eq!(m.handle(c.at(4_000), Event::Tick), vec![]);
        assert_eq!(
            m.handle(c.at(5_100), Event::Tick),
            vec![Action::StopPreloader]
        );
        assert_eq!(m.handle(c.at(9_000), Event::Tick), vec![]);
    }

    #[test]
    fn shutdown_stops_spawning_and_reports_drained() {
        let c = Clock(Instant::now());
        let mut m = ready(Config::new(1, 2, 10), 1, &c);
        m.handle(c.at(2), Event::Request(1));
        m.handle(c.at(3), Event::Shutdown);
        assert!(!m.drained());
        assert_eq!(m.handle(c.at(4), Event::Request(2)), vec![]);
        assert_eq!(m.handle(c.at(5), Event::Done(1)), vec![dispatch(2, 1)]);
        assert_eq!(m.handle(c.at(6), Event::Done(1)), vec![]);
        assert!(m.drained());
    }
    /// A machine whose workers hold `threads` sessions each, with `n` ready.
    fn threaded(threads: u32, min: usize, max: usize, n: u64, c: &Clock) -> Machine {
        let mut cfg = Config::new(min, max, 10);
        cfg.threads = threads;
        ready(cfg, n, c)
    }

    #[test]
    fn requests_go_to_the_least_busy_worker_and_queue_only_when_all_are_full() {
        let c = Clock(Instant::now());
        let mut m = threaded(2, 2, 2, 2, &c);
        // Both idle: the most recently used (2) first, then the other,
        // which has fewer sessions in use.
        assert_eq!(m.handle(c.at(10), Event::Request(1)), vec![dispatch(1, 2)]);
        assert_eq!(m.handle(c.at(11), Event::Request(2)), vec![dispatch(2, 1)]);
        // One session each: the most recently used again.
        assert_eq!(m.handle(c.at(12), Event::Request(3)), vec![dispatch(3, 1)]);
        assert_eq!(m.handle(c.at(13), Event::Request(4)), vec![dispatch(4, 2)]);
        assert!(m.full(1) && m.full(2));
        assert_eq!(m.sessions(), 4);
        assert_eq!(m.state_of(1), Some(SlotState::Busy));
        // Every session in use: the next waits (the pool is at its max).
        assert_eq!(m.handle(c.at(14), Event::Request(5)), vec![]);
        assert_eq!(m.queue_len(), 1);
        // A session frees up: it takes the waiting request.
        assert_eq!(m.handle(c.at(15), Event::Done(2)), vec![dispatch(5, 2)]);
        assert_eq!(m.sessions_of(2), 2);
        assert_eq!(m.sessions_of(1), 2);
    }

    #[test]
    fn a_worker_with_a_free_session_is_not_busy_for_scaling_but_a_full_one_is() {
        let c = Clock(Instant::now());
        let mut m = threaded(2, 1, 2, 1, &c);
        assert_eq!(m.handle(c.at(10), Event::Request(1)), vec![dispatch(1, 1)]);
        // One session of two in use: no reason to spawn.
        assert_eq!(m.handle(c.at(11), Event::Request(2)), vec![dispatch(2, 1)]);
        // Full: the next request waits and a second worker starts.
        assert_eq!(m.handle(c.at(12), Event::Request(3)), vec![spawn(2)]);
        assert_eq!(m.handle(c.at(13), Event::Request(4)), vec![]);
        // The new worker takes every waiting request it has room for.
        assert_eq!(
            m.handle(c.at(20), Event::Ready(2)),
            vec![dispatch(3, 2), dispatch(4, 2)]
        );
        assert_eq!(m.queue_len(), 0);
    }

    #[test]
    fn max_requests_counts_the_requests_in_progress_so_a_worker_serves_exactly_its_limit() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 2, 10);
        cfg.threads = 4;
        cfg.max_requests = Some(5);
        let mut m = ready(cfg, 1, &c);
        for t in 1..=4 {
            assert_eq!(
                m.handle(c.at(10 + t), Event::Request(t)),
                vec![dispatch(t, 1)]
            );
        }
        // Full: request 5 waits, and a second worker starts.
        assert_eq!(m.handle(c.at(20), Event::Request(5)), vec![spawn(2)]);
        // One done: 1 served + 3 in progress, so room for exactly one more.
        assert_eq!(m.handle(c.at(21), Event::Done(1)), vec![dispatch(5, 1)]);
        assert_eq!(m.handle(c.at(22), Event::Request(6)), vec![]);
        assert_eq!(m.handle(c.at(23), Event::Done(1)), vec![]);
        assert_eq!(m.queue_len(), 1, "at its limit counting those in progress");
        m.handle(c.at(24), Event::Done(1));
        m.handle(c.at(25), Event::Done(1));
        assert_eq!(m.sessions_of(1), 1);
        // The fifth request done, nothing left in progress: it stops.
        assert_eq!(
            m.handle(c.at(26), Event::Done(1)),
            vec![stop(1, Retire::MaxRequests)]
        );
        assert_eq!(m.handle(c.at(27), Event::Ready(2)), vec![dispatch(6, 2)]);
    }

    #[test]
    fn over_the_memory_limit_a_worker_takes_no_new_session_and_stops_when_all_are_done() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 2, 10);
        cfg.threads = 2;
        cfg.memory_limit = Some(1000);
        let mut m = ready(cfg, 1, &c);
        m.handle(c.at(10), Event::Request(1));
        m.handle(c.at(11), Event::Request(2));
        // Sampled over the limit after one request: retiring, with one left.
        m.handle(c.at(12), Event::Done(1));
        assert_eq!(m.handle(c.at(12), Event::Memory(1, 5000)), vec![spawn(2)]);
        assert!(m.retiring(1));
        // A free session, but the worker is leaving: the request waits.
        assert_eq!(m.handle(c.at(13), Event::Request(3)), vec![]);
        assert_eq!(
            m.handle(c.at(14), Event::Done(1)),
            vec![stop(1, Retire::MemoryLimit)]
        );
        assert_eq!(m.handle(c.at(15), Event::Ready(2)), vec![dispatch(3, 2)]);
    }

    #[test]
    fn a_dropped_session_retires_its_worker_after_the_other_requests() {
        let c = Clock(Instant::now());
        let mut m = threaded(3, 1, 2, 1, &c);
        for t in 1..=3 {
            m.handle(c.at(10 + t), Event::Request(t));
        }
        // Request 1 outran the worker timeout and was interrupted; 2 and 3
        // go on. The worker takes no new request, and a successor starts.
        assert_eq!(
            m.handle(c.at(20), Event::Dropped(1, Retire::Timeout)),
            vec![spawn(2)]
        );
        assert_eq!(m.sessions_of(1), 2);
        assert_eq!(m.handle(c.at(21), Event::Request(4)), vec![]);
        assert_eq!(m.handle(c.at(22), Event::Done(1)), vec![]);
        assert_eq!(
            m.handle(c.at(23), Event::Done(1)),
            vec![stop(1, Retire::Timeout)]
        );
        assert_eq!(m.handle(c.at(24), Event::Ready(2)), vec![dispatch(4, 2)]);
    }

    #[test]
    fn only_a_worker_with_no_session_in_use_is_promoted() {
        let c = Clock(Instant::now());
        let mut cfg = Config::new(1, 1, 10);
        cfg.threads = 2;
        cfg.refork_after = vec![2];
        let mut m = ready(cfg, 1, &c);
        m.handle(c.at(10), Event::Request(1));
        m.handle(c.at(11), Event::Request(2));
        assert_eq!(m.handle(c.at(12), Event::Done(1)), vec![]);
        assert_eq!(m.handle(c.at(13), Event::Request(3)), vec![dispatch(3, 1)]);
        // Past the threshold, but a request is still in progress.
        assert_eq!(m.handle(c.at(14), Event::Done(1)), vec![]);
        assert_eq!(
            m.handle(c.at(15), Event::Done(1)),
            vec![Action::Promote { worker: 1 }]
        );
        // While it becomes the mold, it takes nothing.
        assert_eq!(m.handle(c.at(16), Event::Request(4)), vec![]);
        assert_eq!(m.sessions_of(1), 0);
    }

    #[test]
    fn a_rolling_restart_retires_idle_workers_first_and_busy_ones_after_all_their_requests() {
        let c = Clock(Instant::now());
        let mut m = threaded(2, 2, 2, 2, &c);
        m.handle(c.at(10), Event::Request(1)); // worker 2
        m.handle(c.at(11), Event::Request(2)); // worker 1
        m.handle(c.at(12), Event::Request(3)); // worker 1 (more recent)
        m.handle(c.at(13), Event::Done(2)); // worker 2 idle
        assert_eq!(
            m.handle(c.at(20), Event::Restart),
            vec![Action::Spawn {
                worker: 3,
                generation: 2
            }]
        );
        let out = m.handle(c.at(30), Event::Ready(3));
        assert_eq!(out[0], stop(2, Retire::Restart), "{out:?}");
        m.handle(c.at(40), Event::Ready(4));
        assert!(m.retiring(1));
        assert_eq!(m.handle(c.at(41), Event::Done(1)), vec![]);
        assert_eq!(
            m.handle(c.at(42), Event::Done(1)),
            vec![stop(1, Retire::Restart)]
        );
    }

    #[test]
    fn shutdown_is_drained_only_when_every_session_is_done() {
        let c = Clock(Instant::now());
        let mut m = threaded(4, 1, 1, 1, &c);
        m.handle(c.at(10), Event::Request(1));
        m.handle(c.at(11), Event::Request(2));
        m.handle(c.at(12), Event::Shutdown);
        m.handle(c.at(13), Event::Done(1));
        assert!(!m.drained());
        m.handle(c.at(14), Event::Done(1));
        assert!(m.drained());
    }
}
