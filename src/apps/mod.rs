//! The apps an instance serves: one, or several as Passenger's application
//! groups.
//!
//! Each app is a group with a pool of its own (preloader, workers, queue,
//! generation, restarts); see `pool/capacity.rs` for how several groups
//! share one `--max-pool-size`. This module holds the groups and answers
//! for all of them at once: status and memory reports (the instance's
//! totals with a report per group), metrics, restarts (of one app or all),
//! signals, and stopping. It knows nothing of HTTP: the front end routes a
//! request to a group with `routes.rs` and asks that group's pool.
//!
//! With one app everything reads as before: no `groups` in reports, no
//! `app` label on metrics, no shared limit.

pub mod decl;
pub mod routes;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use nix::sys::signal::Signal;

use crate::metrics::Metrics;
use crate::pool::capacity::Capacity;
use crate::pool::{Health, Pool};
use crate::report::{MemoryReport, StatusReport};
pub use decl::AppPlan;

pub struct Group {
    pub plan: AppPlan,
    pub pool: Arc<Pool>,
}

pub struct Apps {
    groups: Vec<Group>,
    /// Present with several apps.
    capacity: Option<Arc<Capacity>>,
    metrics: Arc<Metrics>,
    /// The instance's APP_ROOT (with several apps: the base of their roots).
    root: std::path::PathBuf,
}

impl Apps {
    pub fn new(
        groups: Vec<Group>,
        capacity: Option<Arc<Capacity>>,
        metrics: Arc<Metrics>,
        root: std::path::PathBuf,
    ) -> Apps {
        Apps {
            groups,
            capacity,
            metrics,
            root,
        }
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub fn several(&self) -> bool {
        self.groups.len() > 1
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The group serving `root`, by its canonical path.
    fn by_root(&self, root: &Path) -> Result<&Group> {
        let wanted = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        match self.groups.iter().find(|g| g.plan.root == wanted) {
            Some(g) => Ok(g),
            None => bail!(
                "this instance does not serve {} (it serves {})",
                root.display(),
                self.groups
                    .iter()
                    .map(|g| g.plan.root.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The groups a command for `app` means: that one, or all (no app
    /// named, one app served, or the instance's own APP_ROOT named).
    fn chosen(&self, app: Option<&Path>) -> Result<Vec<&Group>> {
        match app {
            Some(root) if self.several() && root != self.root => Ok(vec![self.by_root(root)?]),
            _ => Ok(self.groups.iter().collect()),
        }
    }

    /// Rolling restart of `app`, or of every app; the first error is
    /// returned after every restart chosen has run.
    pub async fn restart(&self, app: Option<&Path>) -> Result<()> {
        let tasks: Vec<_> = self
            .chosen(app)?
            .into_iter()
            .map(|g| {
                let pool = g.pool.clone();
                tokio::spawn(async move { pool.restart().await })
            })
            .collect();
        let mut result = Ok(());
        for task in tasks {
            let outcome = task.await.unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }

    /// Whether a rolling restart is still replacing workers anywhere.
    pub fn restarting(&self) -> bool {
        self.groups.iter().any(|g| g.pool.status().restarting)
    }

    /// TTIN/TTOU. With several apps a signal means nothing precise, so it
    /// is refused unless an app is named (`rustrack scale ±N APP_ROOT`).
    pub fn scale(&self, delta: i32, app: Option<&Path>) -> Result<usize> {
        match self.chosen(app)?.as_slice() {
            [one] => Ok(one.pool.scale(delta)),
            _ => bail!("this instance serves several apps: name the one to scale"),
        }
    }

    pub fn signal_all(&self, sig: Signal) {
        for g in &self.groups {
            g.pool.signal_all(sig);
        }
    }

    /// Graceful stop of every group at once.
    pub async fn shutdown(&self, timeout: Duration) {
        let tasks: Vec<_> = self
            .groups
            .iter()
            .map(|g| {
                let pool = g.pool.clone();
                tokio::spawn(async move { pool.shutdown(timeout).await })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    pub fn kill_all(&self) {
        for g in &self.groups {
            g.pool.kill_all();
        }
    }

    /// Waits for every group's processes (they share one deadline).
    pub async fn wait_for_processes(&self, grace: Duration) {
        for g in &self.groups {
            g.pool.wait_for_processes(grace).await;
        }
    }

    pub fn reap_now(&self) {
        for g in &self.groups {
            g.pool.reap_now();
        }
    }

    /// The instance's status: the one app's, or the totals with a report
    /// per group.
    pub fn status(&self) -> StatusReport {
        if !self.several() {
            return self.groups[0].pool.status();
        }
        let groups: Vec<StatusReport> = self
            .groups
            .iter()
            .map(|g| {
                let mut r = g.pool.status();
                r.app = Some(g.plan.name.clone());
                r.route = Some(g.plan.route.to_string());
                for w in &mut r.workers {
                    w.app = Some(g.plan.name.clone());
                }
                r
            })
            .collect();
        let first = &groups[0];
        let sum = |f: fn(&StatusReport) -> usize| groups.iter().map(f).sum::<usize>();
        let mut worker_restarts = std::collections::BTreeMap::new();
        for g in &groups {
            for (reason, n) in &g.worker_restarts {
                *worker_restarts.entry(reason.clone()).or_insert(0) += n;
            }
        }
        let methods: std::collections::BTreeSet<&str> =
            groups.iter().map(|g| g.spawn_method.as_str()).collect();
        StatusReport {
            version: first.version.clone(),
            pid: first.pid,
            app: None,
            route: None,
            app_root: self.root.clone(),
            spawn_method: methods.into_iter().collect::<Vec<_>>().join("+"),
            min_instances: sum(|g| g.min_instances),
            max_pool_size: self.capacity.as_ref().map_or(0, |c| c.max()),
            threads_per_worker: first.threads_per_worker,
            desired_instances: sum(|g| g.desired_instances),
            generation: groups.iter().map(|g| g.generation).max().unwrap_or(1),
            restarting: groups.iter().any(|g| g.restarting),
            processes: sum(|g| g.processes),
            requests_in_queue: sum(|g| g.requests_in_queue),
            processed_total: groups.iter().map(|g| g.processed_total).sum(),
            uptime_secs: first.uptime_secs,
            started_at: first.started_at,
            preloader_pid: None,
            preloader_memory: None,
            template: None,
            reforks: groups.iter().map(|g| g.reforks).sum(),
            cold_starts: groups.iter().map(|g| g.cold_starts).sum(),
            last_cold_start_ms: None,
            last_spawn_error: None,
            last_restart_error: None,
            worker_restarts,
            workers: groups.iter().flat_map(|g| g.workers.clone()).collect(),
            groups,
        }
    }

    /// Every process with its memory; with several apps each names its app
    /// and the front end appears once.
    pub async fn memory_report(&self) -> MemoryReport {
        if !self.several() {
            return self.groups[0].pool.memory_report().await;
        }
        let mut processes = Vec::new();
        let mut methods = std::collections::BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let report = g.pool.memory_report().await;
            methods.insert(report.spawn_method);
            for mut p in report.processes {
                if p.role == crate::report::ProcessRole::FrontEnd {
                    if i > 0 {
                        continue;
                    }
                } else {
                    p.app = Some(g.plan.name.clone());
                }
                processes.push(p);
            }
        }
        MemoryReport::new(methods.into_iter().collect::<Vec<_>>().join("+"), processes)
    }

    /// The exposition text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let reports: Vec<StatusReport> = self.groups.iter().map(|g| g.pool.status()).collect();
        let pairs: Vec<_> = self
            .groups
            .iter()
            .zip(&reports)
            .map(|(g, r)| (&g.pool.metrics, r))
            .collect();
        self.metrics.render(&pairs)
    }

    pub fn recent(&self) -> crate::recent::RecentSummary {
        self.metrics.recent.summary()
    }

    /// What the health check says: with one app, its pool's health; with
    /// several, the instance is up as long as it serves (one app failing
    /// must not take the others out of a load balancer), so only the sum
    /// is reported.
    pub fn health(&self) -> Health {
        let mut all = self.groups.iter().map(|g| g.pool.health());
        let first = all.next().expect("an instance serves at least one app");
        if !self.several() {
            return first;
        }
        all.fold(
            Health {
                crash_loop: false,
                ..first
            },
            |a, h| Health {
                ready: a.ready + h.ready,
                queue: a.queue + h.queue,
                generation: a.generation.max(h.generation),
                crash_loop: false,
            },
        )
    }
}
