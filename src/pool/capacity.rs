//! One process limit shared by several apps (application groups), as
//! Passenger's pool shares `max_pool_size` between its groups.
//!
//! Each group keeps its own pool (machine, driver, spawner, queue); what
//! they share is a count. Before a group's machine handles an event it is
//! told its room (the global maximum less every group's processes) and
//! whether another group waits for room; after the event the group's size
//! and its own waiting are written back. All of that happens under one
//! short lock, taken inside the group's own lock (always in that order),
//! so two groups can never both take the last place.
//!
//! A group that waits for room cannot make it itself: the arbiter task,
//! woken whenever some group waits, asks the other groups for the idle
//! worker each would give up (`Machine::evictable`), stops the one used
//! least recently, and pokes the waiting group, which then spawns into the
//! freed place. The arbiter locks one pool at a time and never holds the
//! shared lock while it does.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use super::machine::{self, Action, Machine};
use super::Pool;

/// The limit and what each group holds of it.
pub struct Capacity {
    max: usize,
    loads: Mutex<Vec<Load>>,
    pools: Mutex<Vec<Weak<Pool>>>,
    wake: Notify,
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    size: usize,
    waiting: bool,
}

/// A group's membership in a shared [`Capacity`].
#[derive(Clone)]
pub struct Share {
    capacity: Arc<Capacity>,
    group: usize,
}

impl Capacity {
    pub fn new(max: usize) -> Arc<Capacity> {
        Arc::new(Capacity {
            max,
            loads: Mutex::new(Vec::new()),
            pools: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for the next group; its pool is registered with
    /// [`Capacity::register`] once it exists.
    pub fn join(self: &Arc<Self>) -> Share {
        let mut loads = self.loads.lock().unwrap();
        loads.push(Load::default());
        Share {
            capacity: self.clone(),
            group: loads.len() - 1,
        }
    }

    /// Processes of every group.
    pub fn used(&self) -> usize {
        self.loads.lock().unwrap().iter().map(|l| l.size).sum()
    }

    /// Runs the arbiter until the process ends.
    pub fn start_arbiter(self: &Arc<Self>) {
        let capacity = self.clone();
        tokio::spawn(async move {
            loop {
                capacity.wake.notified().await;
                while capacity.make_room() {}
            }
        });
    }

    /// Stops one idle worker of another group for one group that waits;
    /// true when it did (there may be more to do).
    fn make_room(&self) -> bool {
        let waiting: Vec<usize> = {
            let loads = self.loads.lock().unwrap();
            (0..loads.len()).filter(|g| loads[*g].waiting).collect()
        };
        let pools: Vec<Option<Arc<Pool>>> = self
            .pools
            .lock()
            .unwrap()
            .iter()
            .map(Weak::upgrade)
            .collect();
        if self.used() < self.max {
            // Room freed on its own (a worker idled out or died): the
            // waiting groups need only look again.
            for group in waiting {
                if let Some(pool) = &pools[group] {
                    pool.machine_event(machine::Event::Tick);
                }
            }
            return false;
        }
        for group in waiting {
            let victim = pools
                .iter()
                .enumerate()
                .filter(|(g, _)| *g != group)
                .filter_map(|(g, p)| Some((p.as_ref()?.evictable()?, g)))
                .min();
            let Some((_, victim)) = victim else {
                continue;
            };
            let (Some(victim), Some(waiter)) = (&pools[victim], &pools[group]) else {
                continue;
            };
            tracing::info!(
                "{}: stopping an idle worker to make room for {}",
                victim.app_name(),
                waiter.app_name()
            );
            victim.machine_event(machine::Event::Evict);
            waiter.machine_event(machine::Event::Tick);
            return true;
        }
        false
    }
}

impl Share {
    /// Lets the arbiter find `pool` (this group's) when another group needs
    /// one of its workers.
    pub fn register(&self, pool: &Arc<Pool>) {
        let mut pools = self.capacity.pools.lock().unwrap();
        if pools.len() <= self.group {
            pools.resize(self.group + 1, Weak::new());
        }
        pools[self.group] = Arc::downgrade(pool);
    }

    /// Has `machine` handle `event` with its room under the shared limit
    /// set first, and records what it holds and whether it waits after.
    pub fn decide(
        &self,
        machine: &mut Machine,
        now: Instant,
        event: machine::Event,
    ) -> Vec<Action> {
        let mut loads = self.capacity.loads.lock().unwrap();
        let used: usize = loads.iter().map(|l| l.size).sum();
        let others_wait = loads
            .iter()
            .enumerate()
            .any(|(g, l)| g != self.group && l.waiting);
        machine.set_room(self.capacity.max.saturating_sub(used), others_wait);
        let actions = machine.handle(now, event);
        let waiting = machine.waiting_for_room(now);
        loads[self.group] = Load {
            size: machine.size(),
            waiting,
        };
        // Someone waits: this event may have freed room or an idle worker.
        if waiting || others_wait {
            self.capacity.wake.notify_one();
        }
        actions
    }
}
