//! `rustrack status`: asks a running instance for its pool over the admin
//! socket and prints it as a table (like `passenger-status`) or JSON.

use std::path::Path;

use anyhow::Result;

use super::{admin_call, human_bytes, human_duration, resolve};
use crate::cli::StatusArgs;
use crate::procfs::Memory;
use crate::report::{AdminRequest, StatusReport, TlsStatus};

pub fn run(args: StatusArgs) -> Result<i32> {
    let dir = resolve(&args.client)?;
    let value = admin_call(&dir, &AdminRequest::Status)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    // Only an instance started with --ssl adds "tls".
    let tls: Option<TlsStatus> = match value.get("tls") {
        Some(v) => Some(serde_json::from_value(v.clone())?),
        None => None,
    };
    let report: StatusReport = serde_json::from_value(value)?;
    print!("{}", render(&report, tls.as_ref(), &dir));
    Ok(0)
}

fn mem(m: &Option<Memory>, f: fn(&Memory) -> u64) -> String {
    m.as_ref()
        .map(|m| human_bytes(f(m)))
        .unwrap_or_else(|| "-".into())
}

/// Like `passenger-status`: general information, then (with several apps)
/// a section per application group, each with its processes.
fn render(r: &StatusReport, tls: Option<&TlsStatus>, dir: &Path) -> String {
    let mut out = String::new();
    out += "----------- General information -----------\n";
    out += &format!("rustrack version : {}\n", r.version);
    out += &format!("Instance         : {} (pid {})\n", dir.display(), r.pid);
    if r.groups.is_empty() {
        out += &format!("App root         : {}\n", r.app_root.display());
        out += &app_lines(r);
    } else {
        out += &format!(
            "Apps             : {} (under {})\n",
            r.groups.len(),
            r.app_root.display()
        );
        out += &format!(
            "Max pool size    : {} (shared by the apps)\n",
            r.max_pool_size
        );
        out += &format!("Processes        : {}\n", r.processes);
        out += &format!("Requests in queue: {}\n", r.requests_in_queue);
        out += &format!("Processed        : {}\n", r.processed_total);
    }
    if let Some(t) = tls {
        out += &format!(
            "TLS certificate  : {} (loaded {} ago{})\n",
            t.certificate.display(),
            human_duration(unix_now().saturating_sub(t.loaded_at) as f64),
            match t.reloads {
                0 => String::new(),
                n => format!(", reloads: {n}"),
            }
        );
        if let Some(e) = &t.error {
            out += &format!(
                "TLS reload error : {} (the previous certificate is still in use)\n",
                e.lines().next().unwrap_or("")
            );
        }
    }
    if r.groups.is_empty() {
        out += "\n----------- Processes -----------\n";
        out += &processes(r);
    }
    for g in &r.groups {
        out += &format!(
            "\n----------- App {} ({}) -----------\n",
            g.app.as_deref().unwrap_or("?"),
            g.route.as_deref().unwrap_or("?")
        );
        out += &format!("App root         : {}\n", g.app_root.display());
        out += &app_lines(g);
        out += &processes(g);
    }
    out
}

/// One app's pool: what `status` shows about it besides its processes.
fn app_lines(r: &StatusReport) -> String {
    let mut out = String::new();
    out += &format!("Spawn method     : {}\n", r.spawn_method);
    out += &format!("Max pool size    : {}\n", r.max_pool_size);
    out += &format!("Min instances    : {}\n", r.min_instances);
    if r.threads_per_worker > 1 {
        out += &format!("Threads / worker : {}\n", r.threads_per_worker);
    }
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
    if let Some(t) = &r.template {
        let huge = t.memory.map(|m| m.anon_huge).unwrap_or(0);
        let what = match (t.worker, t.promoted_after) {
            (Some(w), Some(n)) => format!("mold (worker {w}, promoted after {n} requests)"),
            (Some(w), None) => format!("mold (worker {w})"),
            _ => "preloader".to_string(),
        };
        out += &format!(
            "Template         : {what}, pid {}, RSS {}, PSS {}{}\n",
            t.pid,
            mem(&t.memory, |m| m.rss),
            mem(&t.memory, |m| m.pss),
            if huge > 0 {
                format!(", {} in huge pages", mem(&t.memory, |m| m.anon_huge))
            } else {
                String::new()
            }
        );
    }
    if r.reforks > 0 {
        out += &format!("Reforks          : {}\n", r.reforks);
    }
    if let Some(ms) = r.last_cold_start_ms {
        out += &format!(
            "Started from zero: {} time(s); the last time the first request waited {ms:.0} ms\n",
            r.cold_starts
        );
    }
    if let Some(e) = &r.last_spawn_error {
        out += &format!("Last spawn error : {}\n", e.lines().next().unwrap_or(""));
    }
    if let Some(e) = &r.last_restart_error {
        out += &format!("Restart failed   : {}\n", e.lines().next().unwrap_or(""));
    }
    out
}

fn processes(r: &StatusReport) -> String {
    let mut out = format!(
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
            w.state.as_str(),
            if r.threads_per_worker > 1 {
                format!("{}/{}", w.sessions, r.threads_per_worker)
            } else {
                w.sessions.to_string()
            },
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
