//! `rustrack status`: asks a running instance for its pool over the admin
//! socket and prints it as a table or JSON. The report type is shared with
//! the front end, which produces it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cli::{ClientArgs, StatusArgs};
use crate::instance;
use crate::procfs::Memory;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub app_root: PathBuf,
    pub spawn_method: String,
    pub min_instances: usize,
    pub max_pool_size: usize,
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
    pub preloader_pid: Option<u32>,
    pub preloader_memory: Option<Memory>,
    pub last_spawn_error: Option<String>,
    pub last_restart_error: Option<String>,
    /// Workers stopped or lost, by reason (idle, max requests, died, …).
    pub worker_restarts: std::collections::BTreeMap<String, u64>,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: u64,
    pub pid: Option<u32>,
    pub generation: u64,
    pub spawn_method: String,
    /// spawning, ready (idle), busy, or retiring (busy, stops after it).
    pub state: String,
    /// Requests in progress (0 or 1).
    pub sessions: u32,
    pub processed: u64,
    pub uptime_secs: f64,
    pub last_used_secs_ago: f64,
    /// Time from the spawn decision to the worker's greeting.
    pub spawn_ms: Option<f64>,
    /// CPU use since the previous sample, in percent of one core.
    pub cpu_percent: Option<f64>,
    pub memory: Option<Memory>,
}

/// The admin protocol: one JSON request line, one JSON response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    Status,
    Memory,
    Restart,
    Stop { graceful: bool },
    Scale { delta: i32 },
}

pub fn admin_call(instance_dir: &Path, request: &AdminRequest) -> Result<serde_json::Value> {
    let socket = instance_dir.join("admin.sock");
    let mut stream = UnixStream::connect(&socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    // A rolling restart answers once the new code has loaded.
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut response = String::new();
    BufReader::new(stream).read_line(&mut response)?;
    if response.is_empty() {
        bail!("the instance closed the admin connection without answering");
    }
    Ok(serde_json::from_str(&response)?)
}

/// The instance directory a client command means.
pub fn resolve(args: &ClientArgs) -> Result<PathBuf> {
    match &args.instance {
        Some(dir) => Ok(dir.clone()),
        None => instance::find(
            &instance::registry_dir(args.instance_registry_dir.as_deref()),
            &args.app_root,
        ),
    }
}

/// `restart`, `stop` and `scale`: one admin call, print its answer.
pub fn run_command(client: &ClientArgs, request: AdminRequest) -> Result<i32> {
    let dir = resolve(client)?;
    let value = admin_call(&dir, &request)?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        eprintln!("rustrack: {err}");
        return Ok(1);
    }
    if let Some(msg) = value.get("message").and_then(|e| e.as_str()) {
        println!("{msg}");
    }
    Ok(0)
}

/// `rustrack memory`.
pub fn run_memory(args: StatusArgs) -> Result<i32> {
    let dir = resolve(&args.client)?;
    let value = admin_call(&dir, &AdminRequest::Memory)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let report: crate::memory::MemoryReport = serde_json::from_value(value)?;
        print!("{}", report.render());
    }
    Ok(0)
}

pub fn run(args: StatusArgs) -> Result<i32> {
    let dir = resolve(&args.client)?;
    let value = admin_call(&dir, &AdminRequest::Status)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    let report: StatusReport = serde_json::from_value(value)?;
    print!("{}", render(&report, &dir));
    Ok(0)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn render(r: &StatusReport, dir: &Path) -> String {
    let mut out = String::new();
    let mem = |m: &Option<Memory>, f: fn(&Memory) -> u64| {
        m.as_ref()
            .map(|m| human_bytes(f(m)))
            .unwrap_or_else(|| "-".into())
    };
    out += "----------- General information -----------\n";
    out += &format!("rustrack version : {}\n", r.version);
    out += &format!("Instance         : {} (pid {})\n", dir.display(), r.pid);
    out += &format!("App root         : {}\n", r.app_root.display());
    out += &format!("Spawn method     : {}\n", r.spawn_method);
    out += &format!("Max pool size    : {}\n", r.max_pool_size);
    out += &format!("Min instances    : {}\n", r.min_instances);
    out += &format!(
        "Processes        : {} (desired {})\n",
        r.processes, r.desired_instances
    );
    out += &format!(
        "Generation       : {}{}\n",
        r.generation,
        if r.restarting {
            " (rolling restart in progress)"
        } else {
            ""
        }
    );
    out += &format!("Requests in queue: {}\n", r.requests_in_queue);
    out += &format!("Processed        : {}\n", r.processed_total);
    if let Some(pid) = r.preloader_pid {
        let huge = r.preloader_memory.map(|m| m.anon_huge).unwrap_or(0);
        out += &format!(
            "Preloader        : pid {pid}, RSS {}, PSS {}{}\n",
            mem(&r.preloader_memory, |m| m.rss),
            mem(&r.preloader_memory, |m| m.pss),
            if huge > 0 {
                format!(
                    ", {} in huge pages",
                    mem(&r.preloader_memory, |m| m.anon_huge)
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(e) = &r.last_spawn_error {
        out += &format!("Last spawn error : {}\n", e.lines().next().unwrap_or(""));
    }
    if let Some(e) = &r.last_restart_error {
        out += &format!("Restart failed   : {}\n", e.lines().next().unwrap_or(""));
    }
    out += "\n----------- Processes -----------\n";
    out += &format!(
        "{:<4} {:<8} {:<4} {:<9} {:<8} {:>9} {:>8} {:>10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}\n",
        "ID", "PID", "GEN", "STATE", "SESSIONS", "PROCESSED", "UPTIME", "LAST USED", "CPU", "RSS", "PSS",
        "PRIV DIRTY", "SHARED", "SWAP"
    );
    for w in &r.workers {
        out += &format!(
            "{:<4} {:<8} {:<4} {:<9} {:<8} {:>9} {:>8} {:>10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}\n",
            w.id,
            w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            w.generation,
            w.state,
            w.sessions,
            w.processed,
            human_duration(w.uptime_secs),
            format!("{} ago", human_duration(w.last_used_secs_ago)),
            w.cpu_percent
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "-".into()),
            mem(&w.memory, |m| m.rss),
            mem(&w.memory, |m| m.pss),
            mem(&w.memory, |m| m.private_dirty),
            mem(&w.memory, |m| m.shared()),
            mem(&w.memory, |m| m.swap),
        );
    }
    out
}
