//! The reports `rustrack status`, `memory` and `/metrics` are built from.
//!
//! `status` is a snapshot of the driver's bookkeeping with the memory and
//! CPU figures the sampler cached: it reads no `/proc` file, so a scrape
//! costs the event loop a lock and a copy. `memory` reads every process's
//! `smaps_rollup` fresh (it is asked for rarely, by a person), on a
//! blocking thread.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::machine::SlotState;
use super::Pool;
use crate::report::{
    MemoryReport, ProcessMemory, ProcessRole, StatusReport, TemplateKind, TemplateStatus,
    WorkerState, WorkerStatus,
};

impl Pool {
    pub fn status(self: &Arc<Self>) -> StatusReport {
        let inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let cfg = inner.machine.config();
        let workers = inner
            .workers
            .iter()
            .map(|(id, w)| {
                // Busy: every session in use (with one thread, the one);
                // a worker with a free session is ready for a request.
                let state = match inner.machine.state_of(*id) {
                    _ if inner.machine.retiring(*id) => WorkerState::Retiring,
                    Some(SlotState::Spawning) | None => WorkerState::Spawning,
                    Some(SlotState::Idle) => WorkerState::Ready,
                    Some(SlotState::Busy) if inner.machine.full(*id) => WorkerState::Busy,
                    Some(SlotState::Busy) => WorkerState::Ready,
                    Some(SlotState::Promoting) => WorkerState::Promoting,
                };
                WorkerStatus {
                    app: None,
                    id: *id,
                    pid: w.pid,
                    generation: w.generation,
                    spawn_method: self.method.as_str().to_string(),
                    state,
                    sessions: inner.machine.sessions_of(*id),
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
        let current = self.spawner.current();
        let template_memory = inner
            .template_memory
            .filter(|(pid, _)| Some(*pid) == current.map(|c| c.pid))
            .map(|(_, m)| m);
        let template = current.map(|c| TemplateStatus {
            kind: if c.mold.is_some() {
                TemplateKind::Mold
            } else {
                TemplateKind::Preloader
            },
            pid: c.pid,
            worker: c.mold,
            promoted_after: c.mold.and_then(|w| inner.molds.get(&w).copied()),
            memory: template_memory,
        });
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            app: None,
            route: None,
            app_root: self.app_root.clone(),
            spawn_method: self.method.as_str().to_string(),
            min_instances: cfg.min_instances,
            max_pool_size: cfg.max_pool_size,
            threads_per_worker: cfg.threads,
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
            preloader_memory: template_memory.filter(|_| preloader_pid.is_some()),
            template,
            reforks: inner.machine.reforks(),
            cold_starts: inner.cold_starts,
            last_cold_start_ms: inner.last_cold_start.map(|d| d.as_secs_f64() * 1000.0),
            last_spawn_error: inner.last_spawn_error.clone(),
            last_restart_error: inner.last_restart_error.clone(),
            worker_restarts: inner
                .restarts_by_reason
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            workers,
            groups: Vec::new(),
        }
    }

    /// Every process of the instance with its memory, read now.
    pub async fn memory_report(self: &Arc<Self>) -> MemoryReport {
        let mut list = vec![(std::process::id(), ProcessRole::FrontEnd, None)];
        if let Some(current) = self.spawner.current() {
            let role = match current.mold {
                Some(_) => ProcessRole::Mold,
                None => ProcessRole::Preloader,
            };
            list.push((current.pid, role, current.mold));
        }
        for (id, w) in &self.inner.lock().unwrap().workers {
            if let Some(pid) = w.pid {
                list.push((pid, ProcessRole::Worker, Some(*id)));
            }
        }
        let method = self.method.as_str().to_string();
        let read = tokio::task::spawn_blocking(move || {
            let processes = list
                .into_iter()
                .map(|(pid, role, worker_id)| ProcessMemory {
                    app: None,
                    pid,
                    ppid: crate::procfs::stat(pid).ok().map(|s| s.ppid),
                    role,
                    worker_id,
                    memory: crate::procfs::memory(pid).ok(),
                })
                .collect();
            MemoryReport::new(method.clone(), processes)
        });
        read.await
            .unwrap_or_else(|_| MemoryReport::new(self.method.as_str().to_string(), Vec::new()))
    }
}

/// What a load balancer's health check needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// Workers greeted and serving (idle or busy).
    pub ready: usize,
    pub queue: usize,
    pub generation: u64,
    /// Respawning paused after a crash loop.
    pub crash_loop: bool,
}

impl Pool {
    /// A cheap snapshot for the health check: a lock, no `/proc`.
    pub fn health(&self) -> Health {
        let inner = self.inner.lock().unwrap();
        let m = &inner.machine;
        Health {
            ready: m.count(SlotState::Idle) + m.count(SlotState::Busy),
            queue: m.queue_len(),
            generation: m.generation(),
            crash_loop: m.crash_looping(Instant::now()),
        }
    }
}
