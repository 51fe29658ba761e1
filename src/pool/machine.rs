//! The pool's decisions, as a state machine with no I/O: events in,
//! actions out, time passed in by the caller.
//!
//! This is where "spawn or queue or reject" lives, so that the rules can be
//! unit-tested with a fake clock and the driver (`pool/mod.rs`) only carries
//! actions out. A worker serves one request at a time (Ruby's GVL makes the
//! process the unit of parallelism), so "least busy" means "idle"; among
//! idle workers the most recently used one is picked, which keeps a hot
//! working set and lets the others go idle long enough to be retired.
//!
//! Rules (Passenger's, as a baseline):
//! - spawn while below `min_instances`, or while requests wait and every
//!   worker is busy, up to `max_pool_size`, one spawn at a time;
//! - otherwise queue, up to `max_request_queue_size`, then reject (503);
//! - a failed spawn backs off exponentially (0.5 s doubling to 30 s) so a
//!   broken app does not fork-bomb the machine, and when no worker is left
//!   to serve them, waiting requests are rejected rather than left hanging.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub type WorkerId = u64;
pub type Ticket = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_instances: usize,
    pub max_pool_size: usize,
    pub max_queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Begin: spawn up to the minimum.
    Start,
    Request(Ticket),
    /// A worker finished its request and is idle again.
    Done(WorkerId),
    /// A spawned worker greeted the front end.
    Ready(WorkerId),
    /// A worker's process or connection is gone.
    Lost(WorkerId),
    SpawnFailed(WorkerId),
    /// Periodic: lets backoffs expire.
    Tick,
    /// Stop spawning; let queued and in-flight requests finish.
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    QueueFull,
    /// No worker is running and none can be started right now.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Dispatch { ticket: Ticket, worker: WorkerId },
    Reject { ticket: Ticket, reason: Reject },
    Spawn(WorkerId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Spawning,
    Idle,
    Busy,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    state: SlotState,
    last_used: Instant,
}

#[derive(Debug)]
pub struct Machine {
    limits: Limits,
    workers: BTreeMap<WorkerId, Slot>,
    queue: VecDeque<Ticket>,
    next_worker: WorkerId,
    failures: u32,
    retry_at: Option<Instant>,
    shutting_down: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Machine {
    pub fn new(limits: Limits) -> Self {
        Machine {
            limits,
            workers: BTreeMap::new(),
            queue: VecDeque::new(),
            next_worker: 1,
            failures: 0,
            retry_at: None,
            shutting_down: false,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn state_of(&self, worker: WorkerId) -> Option<SlotState> {
        self.workers.get(&worker).map(|s| s.state)
    }

    pub fn count(&self, state: SlotState) -> usize {
        self.workers.values().filter(|s| s.state == state).count()
    }

    /// Consecutive failed spawns (0 once a spawn succeeds).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// True once shutting down with nothing in flight or waiting.
    pub fn drained(&self) -> bool {
        self.shutting_down && self.queue.is_empty() && self.count(SlotState::Busy) == 0
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start | Event::Tick => {}
            Event::Request(ticket) => {
                if let Some(worker) = self.pick_idle() {
                    self.occupy(worker, now);
                    out.push(Action::Dispatch { ticket, worker });
                } else if self.queue.len() >= self.limits.max_queue {
                    out.push(Action::Reject {
                        ticket,
                        reason: Reject::QueueFull,
                    });
                } else {
                    self.queue.push_back(ticket);
                }
            }
            Event::Ready(worker) => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.state = SlotState::Idle;
                    slot.last_used = now;
                    self.failures = 0;
                    self.retry_at = None;
                    self.assign(worker, now, &mut out);
                }
            }
            Event::Done(worker) => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.state = SlotState::Idle;
                    slot.last_used = now;
                    self.assign(worker, now, &mut out);
                }
            }
            Event::Lost(worker) => {
                self.workers.remove(&worker);
            }
            Event::SpawnFailed(worker) => {
                self.workers.remove(&worker);
                self.failures += 1;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (self.failures - 1).min(16))
                    .min(MAX_BACKOFF);
                self.retry_at = Some(now + backoff);
                if self.workers.is_empty() {
                    for ticket in self.queue.drain(..) {
                        out.push(Action::Reject {
                            ticket,
                            reason: Reject::Unavailable,
                        });
                    }
                }
            }
            Event::Shutdown => self.shutting_down = true,
        }
        self.maybe_spawn(now, &mut out);
        out
    }

    /// The idle worker used most recently.
    fn pick_idle(&self) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, s)| s.state == SlotState::Idle)
            .max_by_key(|(id, s)| (s.last_used, **id))
            .map(|(id, _)| *id)
    }

    fn occupy(&mut self, worker: WorkerId, now: Instant) {
        let slot = self.workers.get_mut(&worker).expect("picked worker exists");
        slot.state = SlotState::Busy;
        slot.last_used = now;
    }

    /// Gives an idle worker the oldest waiting request, if any.
    fn assign(&mut self, worker: WorkerId, now: Instant, out: &mut Vec<Action>) {
        if let Some(ticket) = self.queue.pop_front() {
            self.occupy(worker, now);
            out.push(Action::Dispatch { ticket, worker });
        }
    }

    fn maybe_spawn(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutting_down
            || self.count(SlotState::Spawning) > 0
            || self.workers.len() >= self.limits.max_pool_size
            || self.retry_at.is_some_and(|t| now < t)
        {
            return;
        }
        let below_min = self.workers.len() < self.limits.min_instances;
        let starved = !self.queue.is_empty() && self.count(SlotState::Idle) == 0;
        if below_min || starved {
            let id = self.next_worker;
            self.next_worker += 1;
            self.workers.insert(
                id,
                Slot {
                    state: SlotState::Spawning,
                    last_used: now,
                },
            );
            out.push(Action::Spawn(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(min: usize, max: usize, queue: usize) -> Limits {
        Limits {
            min_instances: min,
            max_pool_size: max,
            max_queue: queue,
        }
    }

    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    #[test]
    fn starts_the_minimum_one_spawn_at_a_time() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(2, 4, 10));
        assert_eq!(m.handle(c.at(0), Event::Start), vec![Action::Spawn(1)]);
        assert_eq!(m.handle(c.at(1), Event::Tick), vec![]);
        assert_eq!(m.handle(c.at(5), Event::Ready(1)), vec![Action::Spawn(2)]);
        assert_eq!(m.handle(c.at(9), Event::Ready(2)), vec![]);
        assert_eq!(m.count(SlotState::Idle), 2);
    }

    #[test]
    fn busy_pool_queues_and_spawns_up_to_max() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(1, 2, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Ready(1));
        assert_eq!(
            m.handle(c.at(2), Event::Request(10)),
            vec![Action::Dispatch {
                ticket: 10,
                worker: 1
            }]
        );
        // Worker 1 busy: the next request waits and triggers a spawn.
        assert_eq!(
            m.handle(c.at(3), Event::Request(11)),
            vec![Action::Spawn(2)]
        );
        assert_eq!(m.handle(c.at(4), Event::Request(12)), vec![]);
        assert_eq!(m.queue_len(), 2);
        // The new worker takes the oldest waiting request.
        assert_eq!(
            m.handle(c.at(5), Event::Ready(2)),
            vec![Action::Dispatch {
                ticket: 11,
                worker: 2
            }]
        );
        // At max size: no further spawn, more requests just wait.
        assert_eq!(m.handle(c.at(6), Event::Request(13)), vec![]);
        assert_eq!(
            m.handle(c.at(7), Event::Done(1)),
            vec![Action::Dispatch {
                ticket: 12,
                worker: 1
            }]
        );
    }

    #[test]
    fn full_queue_rejects() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(1, 1, 1));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Ready(1));
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
    fn idle_worker_most_recently_used_is_picked() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(2, 2, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Ready(1));
        m.handle(c.at(2), Event::Ready(2));
        m.handle(c.at(3), Event::Request(1)); // worker 2 (newest)
        m.handle(c.at(4), Event::Request(2)); // worker 1
        m.handle(c.at(5), Event::Done(1));
        m.handle(c.at(6), Event::Done(2));
        assert_eq!(
            m.handle(c.at(7), Event::Request(3)),
            vec![Action::Dispatch {
                ticket: 3,
                worker: 2
            }]
        );
    }

    #[test]
    fn lost_worker_is_replaced_below_minimum() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(1, 3, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Ready(1));
        assert_eq!(m.handle(c.at(2), Event::Lost(1)), vec![Action::Spawn(2)]);
    }

    #[test]
    fn failed_spawns_back_off_and_reject_waiters() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(1, 3, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Request(7));
        // No worker left and the spawn failed: the waiter is told at once,
        // and no new spawn happens until the backoff passes.
        assert_eq!(
            m.handle(c.at(2), Event::SpawnFailed(1)),
            vec![Action::Reject {
                ticket: 7,
                reason: Reject::Unavailable
            }]
        );
        assert_eq!(m.handle(c.at(100), Event::Tick), vec![]);
        assert_eq!(m.handle(c.at(502), Event::Tick), vec![Action::Spawn(2)]);
        m.handle(c.at(503), Event::SpawnFailed(2));
        assert_eq!(m.failures(), 2);
        // The second backoff is twice as long.
        assert_eq!(m.handle(c.at(1400), Event::Tick), vec![]);
        assert_eq!(m.handle(c.at(1504), Event::Tick), vec![Action::Spawn(3)]);
        m.handle(c.at(1505), Event::Ready(3));
        assert_eq!(m.failures(), 0);
    }

    #[test]
    fn shutdown_stops_spawning_and_reports_drained() {
        let c = Clock(Instant::now());
        let mut m = Machine::new(limits(1, 2, 10));
        m.handle(c.at(0), Event::Start);
        m.handle(c.at(1), Event::Ready(1));
        m.handle(c.at(2), Event::Request(1));
        m.handle(c.at(3), Event::Shutdown);
        assert!(!m.drained());
        assert_eq!(m.handle(c.at(4), Event::Request(2)), vec![]);
        assert_eq!(
            m.handle(c.at(5), Event::Done(1)),
            vec![Action::Dispatch {
                ticket: 2,
                worker: 1
            }]
        );
        assert_eq!(m.handle(c.at(6), Event::Done(1)), vec![]);
        assert!(m.drained());
        assert_eq!(m.handle(c.at(7), Event::Lost(1)), vec![]);
    }
}
