//! What a running instance reports over its admin socket: the types the
//! server builds (`pool::introspect`) and the clients print (`client`).
//! Neither side depends on the other; both depend on this.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::procfs::Memory;

/// The admin protocol: one JSON request line, one JSON response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    Status,
    Memory,
    /// `app`: the root of one app of several (`rustrack restart APP_ROOT`);
    /// `None` restarts every app.
    Restart {
        #[serde(default)]
        app: Option<PathBuf>,
    },
    Stop {
        graceful: bool,
    },
    Scale {
        delta: i32,
        #[serde(default)]
        app: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    /// The app's name, in a group's report of an instance serving several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Where the app's requests come from (`--app ROUTE=…`), likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub app_root: PathBuf,
    pub spawn_method: String,
    pub min_instances: usize,
    pub max_pool_size: usize,
    /// Sessions (requests at once, each on its own Ruby thread) per worker.
    #[serde(default = "one")]
    pub threads_per_worker: u32,
    /// The count TTIN/TTOU moved the minimum to.
    pub desired_instances: usize,
    /// Code generation: bumped by each rolling restart.
    pub generation: u64,
    pub restarting: bool,
    pub processes: usize,
    pub requests_in_queue: usize,
    pub processed_total: u64,
    pub uptime_secs: f64,
    pub started_at: u64,
    /// The preloader's PID, when it is the template.
    pub preloader_pid: Option<u32>,
    /// The preloader's memory at the last sample, when it is the template.
    pub preloader_memory: Option<Memory>,
    /// The process new workers fork from (smart spawning), if one runs.
    #[serde(default)]
    pub template: Option<TemplateStatus>,
    /// Workers promoted to mold so far (`--refork-after`).
    #[serde(default)]
    pub reforks: u32,
    /// Times the app went from no worker to one with requests waiting
    /// (an app scaled to zero, or just started), and how long the first
    /// waiting request waited the last time.
    #[serde(default)]
    pub cold_starts: u64,
    #[serde(default)]
    pub last_cold_start_ms: Option<f64>,
    pub last_spawn_error: Option<String>,
    pub last_restart_error: Option<String>,
    /// Workers stopped or lost, by reason (idle, max requests, died, …).
    pub worker_restarts: BTreeMap<String, u64>,
    /// With several apps: every app's workers, each naming its app.
    pub workers: Vec<WorkerStatus>,
    /// With several apps (application groups): one report per app. The
    /// fields above then describe the whole instance: sums, the global
    /// `max_pool_size`, and the instance's APP_ROOT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<StatusReport>,
}

fn one() -> u32 {
    1
}

/// The TLS certificate of an instance started with `--ssl`: the front end
/// adds it to the status answer as `"tls"` (the pool's report knows
/// nothing of listeners).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsStatus {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// When the pair in use was loaded (Unix seconds).
    pub loaded_at: u64,
    /// Successful reloads since start.
    pub reloads: u64,
    /// The last reload's error, until a reload succeeds: the previous pair
    /// is still in use.
    pub error: Option<String>,
    pub error_at: Option<u64>,
}

/// What kind of process a template is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    /// Loaded the app from scratch.
    Preloader,
    /// A worker promoted after serving traffic (refork).
    Mold,
}

impl TemplateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateKind::Preloader => "preloader",
            TemplateKind::Mold => "mold",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateStatus {
    pub kind: TemplateKind,
    pub pid: u32,
    /// For a mold: the worker it was, and the requests it had served.
    pub worker: Option<u64>,
    pub promoted_after: Option<u64>,
    /// At the last sample.
    pub memory: Option<Memory>,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Started, not yet greeted.
    Spawning,
    /// Can take a request: idle, or (with several threads) a session free.
    Ready,
    /// Every session in use.
    Busy,
    /// Takes no new request, and stops once those in progress are done.
    Retiring,
    /// Becoming the mold new workers fork from.
    Promoting,
}

impl WorkerState {
    pub const ALL: [WorkerState; 5] = [
        WorkerState::Spawning,
        WorkerState::Ready,
        WorkerState::Busy,
        WorkerState::Retiring,
        WorkerState::Promoting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Spawning => "spawning",
            WorkerState::Ready => "ready",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
            WorkerState::Promoting => "promoting",
        }
    }

    /// Serving: greeted and not leaving.
    pub fn serves(self) -> bool {
        matches!(self, WorkerState::Ready | WorkerState::Busy)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The app it serves, when the instance serves several; ids are per app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub id: u64,
    pub pid: Option<u32>,
    pub generation: u64,
    pub spawn_method: String,
    pub state: WorkerState,
    /// Requests in progress (at most `threads_per_worker`).
    pub sessions: u32,
    pub processed: u64,
    pub uptime_secs: f64,
    pub last_used_secs_ago: f64,
    /// Time from the spawn decision to the worker's greeting.
    pub spawn_ms: Option<f64>,
    /// CPU use over the last sampling period, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// At the last sample.
    pub memory: Option<Memory>,
}

/// What a process is to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessRole {
    #[serde(rename = "front end")]
    FrontEnd,
    #[serde(rename = "preloader")]
    Preloader,
    #[serde(rename = "worker")]
    Worker,
    #[serde(rename = "mold")]
    Mold,
}

impl ProcessRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::FrontEnd => "front end",
            ProcessRole::Preloader => "preloader",
            ProcessRole::Worker => "worker",
            ProcessRole::Mold => "mold",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessMemory {
    /// The app it belongs to, when the instance serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub role: ProcessRole,
    pub worker_id: Option<u64>,
    pub memory: Option<Memory>,
}

/// `rustrack memory`: every process of an instance, read when asked. PSS
/// is the fair share of each page (a page shared by five processes counts
/// a fifth in each), so the PSS total is what the app really costs; private
/// dirty is what copy-on-write could not share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryReport {
    pub spawn_method: String,
    pub processes: Vec<ProcessMemory>,
    pub total_pss: u64,
    pub total_private_dirty: u64,
}

impl MemoryReport {
    pub fn new(spawn_method: String, processes: Vec<ProcessMemory>) -> Self {
        let sum = |f: fn(&Memory) -> u64| {
            processes
                .iter()
                .filter_map(|p| p.memory.as_ref())
                .map(f)
                .sum()
        };
        MemoryReport {
            total_pss: sum(|m| m.pss),
            total_private_dirty: sum(|m| m.private_dirty),
            spawn_method,
            processes,
        }
    }

    pub fn preloader(&self) -> Option<&ProcessMemory> {
        self.processes
            .iter()
            .find(|p| p.role == ProcessRole::Preloader)
    }

    /// Templates: the preloader and molds.
    pub fn templates(&self) -> impl Iterator<Item = &ProcessMemory> {
        self.processes
            .iter()
            .filter(|p| matches!(p.role, ProcessRole::Preloader | ProcessRole::Mold))
    }

    /// The fraction of its template's resident memory a worker shares with
    /// it (shared pages / template RSS); the template is its parent.
    pub fn sharing(&self, worker: &ProcessMemory) -> Option<f64> {
        let template = self.templates().find(|t| worker.ppid == Some(t.pid))?;
        let (w, p) = (worker.memory?, template.memory?);
        (p.rss > 0).then(|| w.shared() as f64 / p.rss as f64)
    }
}

/// A preloader and one worker sharing 75 of its 100 bytes, for tests here
/// and of the client's rendering.
#[cfg(test)]
pub(crate) fn sample_memory_report() -> MemoryReport {
    let mem = |rss, shared, pss, dirty| {
        Some(Memory {
            rss,
            pss,
            shared_clean: shared,
            private_dirty: dirty,
            ..Memory::default()
        })
    };
    MemoryReport::new(
        "smart".into(),
        vec![
            ProcessMemory {
                app: None,
                pid: 10,
                ppid: Some(1),
                role: ProcessRole::Preloader,
                worker_id: None,
                memory: mem(100, 90, 40, 10),
            },
            ProcessMemory {
                app: None,
                pid: 11,
                ppid: Some(10),
                role: ProcessRole::Worker,
                worker_id: Some(1),
                memory: mem(100, 75, 45, 25),
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_sharing() {
        let report = sample_memory_report();
        assert_eq!(report.total_pss, 85);
        assert_eq!(report.total_private_dirty, 35);
        assert_eq!(report.sharing(&report.processes[1]), Some(0.75));
        assert_eq!(report.sharing(&report.processes[0]), None);
    }

    #[test]
    fn states_and_roles_keep_their_wire_names() {
        assert_eq!(
            serde_json::to_string(&WorkerState::Retiring).unwrap(),
            "\"retiring\""
        );
        assert_eq!(
            serde_json::to_string(&ProcessRole::FrontEnd).unwrap(),
            "\"front end\""
        );
        for s in WorkerState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
