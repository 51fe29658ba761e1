//! `rustrack memory`: what every process of an instance costs, and how much
//! each worker shares with its preloader through copy-on-write.
//!
//! The front end lists its processes (itself, the preloader, the workers)
//! and reads `/proc/PID/smaps_rollup` for each when asked; the client
//! renders the table. PSS is the fair share of each page (a page shared by
//! five processes counts a fifth in each), so the PSS total is what the app
//! really costs; private dirty is what copy-on-write could not share.

use serde::{Deserialize, Serialize};

use crate::procfs::Memory;
use crate::status::human_bytes;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessMemory {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// "front end", "preloader" or "worker".
    pub role: String,
    pub worker_id: Option<u64>,
    pub memory: Option<Memory>,
}

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

    fn preloader(&self) -> Option<&ProcessMemory> {
        self.processes.iter().find(|p| p.role == "preloader")
    }

    /// The fraction of the preloader's resident memory a worker shares
    /// with it (shared pages / preloader RSS).
    pub fn sharing(&self, worker: &ProcessMemory) -> Option<f64> {
        let preloader = self.preloader()?;
        if worker.ppid != Some(preloader.pid) {
            return None;
        }
        let (w, p) = (worker.memory?, preloader.memory?);
        (p.rss > 0).then(|| w.shared() as f64 / p.rss as f64)
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<8} {:<8} {:<12} {:>10} {:>10} {:>12} {:>12} {:>12} {:>8}\n",
            "PID",
            "PPID",
            "ROLE",
            "RSS",
            "PSS",
            "PRIV DIRTY",
            "SHARED CLEAN",
            "SHARED DIRTY",
            "COW"
        );
        for p in &self.processes {
            let m = p.memory.unwrap_or_default();
            let role = match p.worker_id {
                Some(id) => format!("worker {id}"),
                None => p.role.clone(),
            };
            let cow = self
                .sharing(p)
                .map(|f| format!("{:.0}%", f * 100.0))
                .unwrap_or_else(|| "-".into());
            out += &format!(
                "{:<8} {:<8} {:<12} {:>10} {:>10} {:>12} {:>12} {:>12} {:>8}\n",
                p.pid,
                p.ppid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                role,
                human_bytes(m.rss),
                human_bytes(m.pss),
                human_bytes(m.private_dirty),
                human_bytes(m.shared_clean),
                human_bytes(m.shared_dirty),
                cow,
            );
        }
        out += &format!(
            "\nTotal PSS: {}   Total private dirty: {}   ({} spawning)\n",
            human_bytes(self.total_pss),
            human_bytes(self.total_private_dirty),
            self.spawn_method
        );
        out +=
            "PSS counts each shared page once across processes: the total is what the app costs.\n";
        if self.preloader().is_some() {
            out += "COW: how much of the preloader's memory a worker still shares with it.\n";
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(rss: u64, shared: u64, pss: u64, dirty: u64) -> Option<Memory> {
        Some(Memory {
            rss,
            pss,
            shared_clean: shared,
            private_dirty: dirty,
            ..Memory::default()
        })
    }

    #[test]
    fn totals_and_sharing() {
        let report = MemoryReport::new(
            "smart".into(),
            vec![
                ProcessMemory {
                    pid: 10,
                    ppid: Some(1),
                    role: "preloader".into(),
                    worker_id: None,
                    memory: mem(100, 90, 40, 10),
                },
                ProcessMemory {
                    pid: 11,
                    ppid: Some(10),
                    role: "worker".into(),
                    worker_id: Some(1),
                    memory: mem(100, 75, 45, 25),
                },
            ],
        );
        assert_eq!(report.total_pss, 85);
        assert_eq!(report.total_private_dirty, 35);
        assert_eq!(report.sharing(&report.processes[1]), Some(0.75));
        assert!(report.render().contains("75%"));
    }
}
