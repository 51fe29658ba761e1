//! Memory and CPU of the pool's processes, read from `/proc` on a timer.
//!
//! Reading `/proc/PID/smaps_rollup` walks the process's page tables (about
//! a millisecond for a 200 MB worker), so it never runs on the event loop
//! and never per scrape: every `--sample-interval` the sampler reads every
//! worker and the preloader on a blocking thread and posts the figures to
//! the driver, which caches them for `status` and `/metrics` and applies
//! `--memory-limit`. CPU % is the CPU time used between two timer samples
//! over the wall time between them, so it does not depend on how often
//! anyone looks. A worker that just became ready is sampled at once
//! (memory only), so `status` shows its memory without waiting a period.

use std::sync::Arc;
use std::time::Instant;

use super::machine::WorkerId;
use super::{Event, Pool};
use crate::procfs::{self, Memory};

#[derive(Debug)]
pub struct Samples {
    pub at: Instant,
    pub workers: Vec<Sample>,
    /// The current template (preloader or mold).
    pub template: Option<(u32, Memory)>,
}

#[derive(Debug)]
pub struct Sample {
    pub worker: WorkerId,
    pub memory: Option<Memory>,
    /// utime + stime; only in timer samples.
    pub cpu_ticks: Option<u64>,
}

pub(super) async fn run(pool: Arc<Pool>) {
    let every = pool.options.sample_interval;
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let with_cpu = tokio::select! {
            _ = timer.tick() => true,
            _ = pool.sample_now.notified() => false,
        };
        let targets: Vec<(WorkerId, u32)> = {
            let inner = pool.inner.lock().unwrap();
            inner
                .workers
                .iter()
                .filter_map(|(id, w)| w.pid.filter(|_| w.ready_at.is_some()).map(|p| (*id, p)))
                .collect()
        };
        let template = pool.spawner.current().map(|c| c.pid);
        let read = tokio::task::spawn_blocking(move || read(targets, template, with_cpu)).await;
        match read {
            Ok(samples) => {
                let _ = pool.events.send(Event::Samples(samples));
            }
            Err(e) => tracing::error!("sampling /proc: {e}"),
        }
    }
}

fn read(targets: Vec<(WorkerId, u32)>, template: Option<u32>, with_cpu: bool) -> Samples {
    let workers = targets
        .into_iter()
        .map(|(worker, pid)| Sample {
            worker,
            memory: procfs::memory(pid).ok(),
            cpu_ticks: if with_cpu {
                procfs::stat(pid).ok().map(|s| s.cpu_ticks)
            } else {
                None
            },
        })
        .collect();
    Samples {
        at: Instant::now(),
        workers,
        template: template.and_then(|pid| procfs::memory(pid).ok().map(|m| (pid, m))),
    }
}
