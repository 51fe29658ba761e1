//! `rustrack compare`: boots the same app with smart spawning, direct
//! spawning and smart spawning with refork (`--configs`), spawns N workers
//! each way, warms them with the same requests (one path, or a page mix
//! from `--paths-file`), and prints spawn times and memory side by side.
//!
//! Each run is a real `rustrack start` on an ephemeral loopback port with
//! its own instance registry, found through its `instance.json` (as every
//! client finds an instance); figures come from its admin socket (`status`
//! and `memory`), i.e. from `/proc/PID/smaps_rollup` of the app's own
//! processes. Totals include the template (the preloader, or the mold a
//! refork promoted), which is part of what smart spawning costs; the front
//! end is left out (the same process either way). The server's log goes to
//! our stderr only if it fails to start.
//!
//! Sharing erodes as workers serve their first requests, so the warm-up is
//! cut into steps of `--sample-every` requests: after each step the clients
//! wait while the total PSS is read (no request in flight), which gives a
//! series per configuration. After the warm-up the pool is left to settle
//! (a refork's rollout finishes) before the final `memory` report, whose
//! processes the chart shows one by one, shared against private.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::http::Connection;
use super::{admin_call, human_bytes};
use crate::cli::{CompareArgs, CompareConfig};
use crate::config::SpawnMethod;
use crate::instance::{self, InstanceInfo};
use crate::procfs::Memory;
use crate::report::{AdminRequest, MemoryReport, ProcessRole, StatusReport, WorkerState};

/// Total PSS after some requests of the warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Requests answered so far, all clients together.
    pub requests: usize,
    /// Of the app's processes (templates and workers).
    pub total_pss: u64,
    pub total_private_dirty: u64,
    /// App processes at that moment (a refork's rollout adds some).
    pub processes: usize,
    /// Of those, processes the admin `memory` report did not list.
    pub unlisted: usize,
    /// Workers promoted to mold so far.
    pub reforks: u32,
}

/// One process of the final `memory` report.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessBar {
    /// preloader, mold or worker.
    pub role: String,
    pub pid: u32,
    pub worker_id: Option<u64>,
    /// Not in the admin `memory` report (found under the front end).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unlisted: bool,
    pub rss: u64,
    pub pss: u64,
    /// Shared_Clean + Shared_Dirty: pages another process maps too.
    pub shared: u64,
    /// Private_Dirty + Private_Clean: pages only this process maps.
    pub private: u64,
    pub private_dirty: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// smart, direct or refork.
    pub config: String,
    pub spawn_method: String,
    /// The refork run's thresholds (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refork_after: Vec<u64>,
    pub workers: usize,
    pub requests: usize,
    /// Spawn times of the workers serving at the end: for a run that
    /// reforked, the children of the last mold.
    pub spawn_ms: Vec<f64>,
    pub spawn_ms_median: f64,
    pub spawn_ms_max: f64,
    pub total_pss: u64,
    pub total_private_dirty: u64,
    pub private_dirty_per_worker: u64,
    /// The template's PSS (included in the totals): the preloader's, or the
    /// mold's after a refork.
    pub preloader_pss: Option<u64>,
    /// preloader or mold, when the run has a template at the end.
    pub template: Option<String>,
    pub reforks: u32,
    /// Requests per second while warming (sampling pauses left out).
    pub requests_per_second: f64,
    pub series: Vec<Sample>,
    pub processes: Vec<ProcessBar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub app_root: PathBuf,
    pub preload_gc: String,
    #[serde(default)]
    pub preload_hugepages: bool,
    /// The paths each client walked (one unless --paths-file).
    pub paths: Vec<String>,
    pub sample_every: usize,
    /// The smart and refork runs' `--warmup-request`s, each served
    /// `warmup_rounds` times in their preloader (direct spawning has none).
    pub warmup_requests: Vec<String>,
    pub warmup_rounds: u32,
    /// The configurations run, in order.
    pub configs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smart: Option<RunResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<RunResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refork: Option<RunResult>,
    /// Smart against direct, when both ran.
    pub pss_saving_bytes: Option<i64>,
    pub pss_saving_percent: Option<f64>,
}

impl Comparison {
    /// The runs, in the order they ran.
    pub fn runs(&self) -> Vec<&RunResult> {
        self.configs
            .iter()
            .filter_map(|name| match name.as_str() {
                "smart" => self.smart.as_ref(),
                "direct" => self.direct.as_ref(),
                "refork" => self.refork.as_ref(),
                _ => None,
            })
            .collect()
    }
}

/// How one run is started and warmed.
struct Plan<'a> {
    args: &'a CompareArgs,
    app: &'a Path,
    paths: &'a [String],
    refork_after: Vec<u64>,
    checkpoints: Vec<usize>,
}

pub fn run(args: CompareArgs) -> Result<i32> {
    let app = args
        .app_root
        .canonicalize()
        .with_context(|| format!("{} does not exist", args.app_root.display()))?;
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let paths = match &args.paths_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let paths = parse_paths(&text);
            if paths.is_empty() {
                bail!("{} lists no path", file.display());
            }
            paths
        }
        None => vec![args.path.clone()],
    };
    let mut configs: Vec<CompareConfig> = Vec::new();
    for c in &args.configs {
        if !configs.contains(c) {
            configs.push(*c);
        }
    }
    let sample_every = args
        .sample_every
        .unwrap_or_else(|| default_sample_every(args.workers, args.requests));
    let plan = Plan {
        args: &args,
        app: &app,
        paths: &paths,
        refork_after: if args.refork_after.is_empty() {
            vec![default_refork_after(args.requests)]
        } else {
            args.refork_after.clone()
        },
        checkpoints: checkpoints(args.requests, args.workers, sample_every),
    };
    let mut comparison = Comparison {
        app_root: app.clone(),
        preload_gc: format!("{:?}", args.preload.preload_gc).to_lowercase(),
        preload_hugepages: args.preload.preload_hugepages,
        paths: paths.clone(),
        sample_every,
        warmup_requests: args
            .preload
            .warmup_requests
            .iter()
            .map(|r| r.to_string())
            .collect(),
        warmup_rounds: args.preload.warmup_rounds,
        configs: configs.iter().map(|c| c.as_str().to_string()).collect(),
        smart: None,
        direct: None,
        refork: None,
        pss_saving_bytes: None,
        pss_saving_percent: None,
    };
    for config in configs {
        let result = measure(&plan, config)?;
        match config {
            CompareConfig::Smart => comparison.smart = Some(result),
            CompareConfig::Direct => comparison.direct = Some(result),
            CompareConfig::Refork => comparison.refork = Some(result),
        }
    }
    if let (Some(s), Some(d)) = (&comparison.smart, &comparison.direct) {
        let saving = d.total_pss as i64 - s.total_pss as i64;
        comparison.pss_saving_bytes = Some(saving);
        comparison.pss_saving_percent = percent_of(saving, d.total_pss);
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&comparison))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", render(&comparison));
    }
    Ok(0)
}

/// The paths of a --paths-file: one per line; blank lines and # comments
/// skipped.
fn parse_paths(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// A quarter of each worker's requests: the refork happens early enough for
/// its children to serve most of the warm-up.
fn default_refork_after(requests_per_worker: usize) -> u64 {
    (requests_per_worker as u64 / 4).max(1)
}

/// About 20 samples over the warm-up.
fn default_sample_every(workers: usize, requests_per_worker: usize) -> usize {
    (workers * requests_per_worker / 20).max(workers)
}

/// The per-client request counts after which the total is sampled: every
/// `every / clients` requests (rounded, at least 1), and at the end.
fn checkpoints(per_client: usize, clients: usize, every: usize) -> Vec<usize> {
    if per_client == 0 {
        return Vec::new();
    }
    let clients = clients.max(1);
    let step = ((every + clients / 2) / clients).max(1);
    let mut out: Vec<usize> = (1..)
        .map(|i| i * step)
        .take_while(|&n| n < per_client)
        .collect();
    out.push(per_client);
    out
}

/// The `i`th request of client `client` of `clients`: each walks the list
/// from its own offset, so the clients spread over the mix.
fn path_index(client: usize, clients: usize, i: usize, len: usize) -> usize {
    (i + client * len / clients.max(1)) % len.max(1)
}

fn percent_of(part: i64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// Stops a `rustrack start` child however `measure` ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, not yet waited for: its PID is still its own.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(instance: &Path) -> Result<StatusReport> {
    Ok(serde_json::from_value(admin_call(
        instance,
        &AdminRequest::Status,
    )?)?)
}

fn memory(instance: &Path) -> Result<MemoryReport> {
    Ok(serde_json::from_value(admin_call(
        instance,
        &AdminRequest::Memory,
    )?)?)
}

/// One of the app's processes (the front end is the same either way).
#[derive(Debug, Clone)]
struct AppProcess {
    pid: u32,
    /// preloader, mold or worker.
    role: String,
    worker_id: Option<u64>,
    /// Not in the admin report: see `snapshot`.
    unlisted: bool,
    memory: Memory,
}

/// The app's processes now: those of the admin `memory` report, plus any
/// other process under the front end. The report lists the current
/// template and the workers in the pool's table; while a refork rolls out,
/// the old template and workers already retired but not yet exited run
/// too (measured on rails-large: the report then missed up to 175 MB of
/// 363), so the server's process tree is read as well, and each unlisted
/// process named by its title.
fn snapshot(instance: &Path, front_end: u32) -> Result<Vec<AppProcess>> {
    let report = memory(instance)?;
    let mut procs: Vec<AppProcess> = report
        .processes
        .iter()
        .filter(|p| p.role != ProcessRole::FrontEnd)
        .filter_map(|p| {
            Some(AppProcess {
                pid: p.pid,
                role: p.role.as_str().to_string(),
                worker_id: p.worker_id,
                unlisted: false,
                memory: p.memory?,
            })
        })
        .collect();
    let listed: Vec<u32> = report.processes.iter().map(|p| p.pid).collect();
    for pid in descendants(front_end, &process_table()) {
        if listed.contains(&pid) {
            continue;
        }
        let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let (role, worker_id) = role_from_title(&String::from_utf8_lossy(&title));
        // Gone (or a zombie) by now: nothing to count.
        if let Ok(memory) = crate::procfs::memory(pid) {
            procs.push(AppProcess {
                pid,
                role,
                worker_id,
                unlisted: true,
                memory,
            });
        }
    }
    Ok(procs)
}

/// Every process's (pid, parent pid), from /proc.
fn process_table() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, crate::procfs::stat(pid).ok()?.ppid)))
        .collect()
}

/// The descendants of `root` in a (pid, parent pid) table.
fn descendants(root: u32, table: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(parent) = todo.pop() {
        for &(pid, ppid) in table {
            if ppid == parent && pid != root && !out.contains(&pid) {
                out.push(pid);
                todo.push(pid);
            }
        }
    }
    out
}

/// The role and worker id in a process title ("rustrack worker 5 (app)",
/// "rustrack mold 9 (app): promoted after 15 requests", "rustrack
/// preloader (app)").
fn role_from_title(title: &str) -> (String, Option<u64>) {
    let mut words = title.split(|c: char| c.is_whitespace() || c == '\0');
    if words.next() != Some("rustrack") {
        return ("other".into(), None);
    }
    match words.next() {
        Some(role @ ("worker" | "mold")) => (
            role.into(),
            words.next().and_then(|id| id.parse::<u64>().ok()),
        ),
        Some("preloader") => ("preloader".into(), None),
        _ => ("other".into(), None),
    }
}

/// Total PSS and private dirty of the app's processes.
fn app_totals(procs: &[AppProcess]) -> (u64, u64) {
    procs.iter().fold((0, 0), |(pss, dirty), p| {
        (pss + p.memory.pss, dirty + p.memory.private_dirty)
    })
}

/// The processes as chart bars: templates first, then workers by id.
fn process_bars(procs: &[AppProcess]) -> Vec<ProcessBar> {
    let mut bars: Vec<ProcessBar> = procs
        .iter()
        .map(|p| ProcessBar {
            role: p.role.clone(),
            pid: p.pid,
            worker_id: p.worker_id,
            unlisted: p.unlisted,
            rss: p.memory.rss,
            pss: p.memory.pss,
            shared: p.memory.shared(),
            private: p.memory.private_dirty + p.memory.private_clean,
            private_dirty: p.memory.private_dirty,
        })
        .collect();
    bars.sort_by_key(|b| (b.role == "worker", b.worker_id, b.pid));
    bars
}

fn measure(plan: &Plan, config: CompareConfig) -> Result<RunResult> {
    let (args, app) = (plan.args, plan.app);
    let n = args.workers;
    let method = match config {
        CompareConfig::Direct => SpawnMethod::Direct,
        CompareConfig::Smart | CompareConfig::Refork => SpawnMethod::Smart,
    };
    let refork_after = if config == CompareConfig::Refork {
        plan.refork_after.clone()
    } else {
        Vec::new()
    };
    eprintln!(
        "==> {}: starting {} with {n} workers{}",
        config.as_str(),
        app.display(),
        if refork_after.is_empty() {
            String::new()
        } else {
            format!(", refork after {}", join(&refork_after))
        }
    );
    let registry = tempfile::tempdir()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("start")
        .arg(app)
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "info",
        ])
        .args([
            "--min-instances",
            &n.to_string(),
            "--max-pool-size",
            &n.to_string(),
        ])
        .args([
            "--spawn-method",
            method.as_str(),
            "--pool-idle-time",
            "0",
            "--max-preloader-idle-time",
            "0",
        ])
        .args(args.preload.to_args())
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if !refork_after.is_empty() {
        cmd.args(["--refork-after", &join(&refork_after)]);
    }
    if let Some(extra) = &args.start_args {
        cmd.args(extra.split_whitespace());
    }
    let log = tempfile::tempfile()?;
    cmd.stderr(log.try_clone()?);
    let child = cmd.spawn().context("starting rustrack")?;
    let mut server = Server(child);
    let (instance, info) = match wait_for_instance(&mut server, registry.path(), app) {
        Ok(found) => found,
        Err(e) => {
            let mut text = String::new();
            let mut log = log;
            use std::io::Seek;
            let _ = log.rewind();
            let _ = log.read_to_string(&mut text);
            bail!("{e}:\n{text}");
        }
    };
    let port = info
        .url
        .as_deref()
        .and_then(|u| u.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("the instance listens on no TCP port: {:?}", info.url))?;

    let started = Instant::now();
    let mut shown = usize::MAX;
    loop {
        let s = status(&instance)?;
        let ready = s.workers.iter().filter(|w| w.state.serves()).count();
        if ready != shown {
            eprintln!(
                "    {ready}/{n} workers ready ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            shown = ready;
        }
        if ready >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {ready} of {n} workers became ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let total = n * args.requests;
    eprintln!(
        "    warming: {total} requests over {} from {n} clients, total PSS read every {} requests",
        if plan.paths.len() == 1 {
            plan.paths[0].clone()
        } else {
            format!("{} paths", plan.paths.len())
        },
        plan.checkpoints.first().map_or(0, |c| c * n),
    );
    let front_end = server.0.id();
    let take_sample = |requests: usize| -> Result<Sample> {
        let procs = snapshot(&instance, front_end)?;
        let (total_pss, total_private_dirty) = app_totals(&procs);
        Ok(Sample {
            requests,
            total_pss,
            total_private_dirty,
            processes: procs.len(),
            unlisted: procs.iter().filter(|p| p.unlisted).count(),
            reforks: status(&instance)?.reforks,
        })
    };
    let mut series = vec![take_sample(0)?];
    let busy = warm(port, plan.paths, n, &plan.checkpoints, |requests| {
        series.push(take_sample(requests)?);
        Ok(())
    })?;
    let requests_per_second = if busy > Duration::ZERO {
        total as f64 / busy.as_secs_f64()
    } else {
        0.0
    };

    let (s, procs) = settle(&instance, front_end, n)?;
    drop(server);
    let workers: Vec<_> = procs.iter().filter(|p| p.role == "worker").collect();
    let worker_dirty: u64 = workers.iter().map(|p| p.memory.private_dirty).sum();
    let (total_pss, total_private_dirty) = app_totals(&procs);
    let mut spawn_ms: Vec<f64> = s.workers.iter().filter_map(|w| w.spawn_ms).collect();
    spawn_ms.sort_by(|a, b| a.total_cmp(b));
    let template = procs
        .iter()
        .find(|p| p.role == "mold")
        .or_else(|| procs.iter().find(|p| p.role == "preloader"));
    let result = RunResult {
        config: config.as_str().to_string(),
        spawn_method: method.as_str().to_string(),
        refork_after,
        workers: workers.len(),
        requests: total,
        spawn_ms_median: median(&spawn_ms),
        spawn_ms_max: spawn_ms.last().copied().unwrap_or(0.0),
        spawn_ms,
        total_pss,
        total_private_dirty,
        private_dirty_per_worker: worker_dirty / workers.len().max(1) as u64,
        preloader_pss: template.map(|p| p.memory.pss),
        template: template.map(|t| t.role.clone()),
        reforks: s.reforks,
        requests_per_second,
        series,
        processes: process_bars(&procs),
    };
    eprintln!(
        "    total PSS {}, private dirty {}, {:.0} req/s{}",
        human_bytes(result.total_pss),
        human_bytes(result.total_private_dirty),
        result.requests_per_second,
        if result.reforks > 0 {
            format!(", {} refork(s)", result.reforks)
        } else {
            String::new()
        }
    );
    Ok(result)
}

/// Waits (up to two minutes) until the pool is steady: `n` idle workers,
/// no rollout, promotion or spawn under way, one template, no process the
/// report does not list, the same twice in a row. A refork that began near
/// the end of the warm-up finishes first. Returns the last status and
/// processes.
fn settle(instance: &Path, front_end: u32, n: usize) -> Result<(StatusReport, Vec<AppProcess>)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut steady_since: Option<(u32, u64)> = None;
    loop {
        let s = status(instance)?;
        let procs = snapshot(instance, front_end)?;
        let templates = procs
            .iter()
            .filter(|p| p.role == "preloader" || p.role == "mold")
            .count();
        let steady = !s.restarting
            && s.workers.len() == n
            && s.workers.iter().all(|w| w.state == WorkerState::Ready)
            && templates <= 1
            && procs.iter().all(|p| !p.unlisted);
        let key = (s.reforks, s.generation);
        if steady && steady_since == Some(key) {
            return Ok((s, procs));
        }
        steady_since = steady.then_some(key);
        if Instant::now() > deadline {
            eprintln!("    warning: the pool did not settle in 120 s; measuring it as it is");
            return Ok((s, procs));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Sends `checkpoints.last()` GETs from each of `clients` keep-alive
/// connections, client `c` walking `paths` from its own offset. At each
/// checkpoint all clients stop, `sample(requests answered so far)` runs with
/// no request in flight, and they go on. Returns the time spent sending
/// (the pauses left out).
fn warm(
    port: u16,
    paths: &[String],
    clients: usize,
    checkpoints: &[usize],
    mut sample: impl FnMut(usize) -> Result<()>,
) -> Result<Duration> {
    let barrier = Barrier::new(clients + 1);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let failed = || failure.lock().unwrap().is_some();
    let fail = |e: anyhow::Error| {
        failure.lock().unwrap().get_or_insert(e);
    };
    let mut busy = Duration::ZERO;
    std::thread::scope(|s| {
        for client in 0..clients {
            let (barrier, failed, fail) = (&barrier, &failed, &fail);
            s.spawn(move || {
                let mut conn = Connection::open("127.0.0.1", port, Duration::from_secs(120))
                    .map_err(|e| fail(e.into()))
                    .ok();
                let mut sent = 0;
                for &checkpoint in checkpoints {
                    while sent < checkpoint && !failed() {
                        let Some(c) = conn.as_mut() else { break };
                        let path = &paths[path_index(client, clients, sent, paths.len())];
                        match c.get(path) {
                            Ok(r) if r.status >= 500 => {
                                fail(anyhow!("GET {path} answered {}", r.status))
                            }
                            Ok(_) => {}
                            Err(e) => fail(anyhow!("GET {path}: {e}")),
                        }
                        sent += 1;
                    }
                    barrier.wait(); // this step done
                    barrier.wait(); // sampled
                }
            });
        }
        for &checkpoint in checkpoints {
            let step = Instant::now();
            barrier.wait();
            busy += step.elapsed();
            if !failed() {
                if let Err(e) = sample(checkpoint * clients) {
                    fail(e);
                }
            }
            barrier.wait();
        }
    });
    match failure.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(busy),
    }
}

/// Waits until the server has written its `instance.json` (it does once it
/// serves) in `registry`, or has exited.
fn wait_for_instance(
    server: &mut Server,
    registry: &Path,
    app: &Path,
) -> Result<(PathBuf, InstanceInfo)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(dir) = instance::find(registry, app) {
            if let Ok(info) = instance::read_info(&dir) {
                return Ok((dir, info));
            }
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("rustrack start exited ({status})");
        }
        if Instant::now() > deadline {
            bail!("rustrack start did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn join(list: &[u64]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

pub fn render(c: &Comparison) -> String {
    let runs = c.runs();
    let Some(first) = runs.first() else {
        return "no configuration ran\n".into();
    };
    let row = |name: &str, cells: Vec<String>| {
        let mut line = format!("{name:<30}");
        for cell in cells {
            let _ = write!(line, " {cell:>14}");
        }
        line + "\n"
    };
    let cells = |f: &dyn Fn(&RunResult) -> String| runs.iter().map(|r| f(r)).collect();
    let warmed_with = if c.paths.len() == 1 {
        c.paths[0].clone()
    } else {
        format!("a mix of {} paths", c.paths.len())
    };
    let mut out = format!(
        "\n{} ({} workers, {} warm-up requests each over {warmed_with}, preload GC: {}, huge pages: {}{})\n\n",
        c.app_root.display(),
        first.workers,
        first.requests / first.workers.max(1),
        c.preload_gc,
        if c.preload_hugepages { "on" } else { "off" },
        if c.warmup_requests.is_empty() {
            String::new()
        } else {
            format!(
                ", preloader served {} × {}",
                c.warmup_requests.join(" "),
                c.warmup_rounds
            )
        }
    );
    out += &row("", cells(&|r| r.config.clone()));
    out += &row("spawn time, median", cells(&|r| ms(r.spawn_ms_median)));
    out += &row("spawn time, max", cells(&|r| ms(r.spawn_ms_max)));
    out += &row("total PSS", cells(&|r| human_bytes(r.total_pss)));
    if let Some(d) = &c.direct {
        out += &row(
            "total PSS, % of direct",
            cells(&|r| {
                percent_of(r.total_pss as i64, d.total_pss)
                    .map_or("-".into(), |p| format!("{p:.0}%"))
            }),
        );
    }
    out += &row(
        "total private dirty",
        cells(&|r| human_bytes(r.total_private_dirty)),
    );
    out += &row(
        "private dirty per worker",
        cells(&|r| human_bytes(r.private_dirty_per_worker)),
    );
    out += &row(
        "template PSS (included)",
        cells(&|r| match (&r.template, r.preloader_pss) {
            (Some(kind), Some(pss)) => format!("{} ({kind})", human_bytes(pss)),
            _ => "-".into(),
        }),
    );
    if c.refork.is_some() {
        out += &row(
            "reforks (refork after)",
            cells(&|r| {
                if r.refork_after.is_empty() {
                    "-".into()
                } else {
                    format!("{} ({})", r.reforks, join(&r.refork_after))
                }
            }),
        );
    }
    out += &row(
        "req/s while warming",
        cells(&|r| format!("{:.0}", r.requests_per_second)),
    );
    out += "\n";
    if let Some(d) = &c.direct {
        for r in runs.iter().filter(|r| r.config != "direct") {
            let saving = d.total_pss as i64 - r.total_pss as i64;
            let speedup = if r.spawn_ms_median > 0.0 {
                d.spawn_ms_median / r.spawn_ms_median
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "{} {} {} of PSS ({:.0}%) against direct and spawns {:.0}x faster.",
                r.config,
                if saving >= 0 { "saves" } else { "costs" },
                human_bytes(saving.unsigned_abs()),
                percent_of(saving, d.total_pss).unwrap_or(0.0).abs(),
                speedup
            );
        }
    }
    if c.refork.as_ref().is_some_and(|r| r.reforks > 0) {
        out += "(refork: spawn times are those of the last mold's children; the mold is the template.)\n";
    }
    out += "(The front end is left out of every total: it is the same process either way.)\n";
    out
}

// -- the chart ---------------------------------------------------------------

const WIDTH: f64 = 900.0;
const PLOT_LEFT: f64 = 90.0;
const PLOT_RIGHT: f64 = WIDTH - 30.0;
const MB: f64 = 1024.0 * 1024.0;

/// Each configuration's colour, and a light tint of it (shared memory).
fn colors(config: &str) -> (&'static str, &'static str) {
    match config {
        "smart" => ("#2b8a3e", "#b2f2bb"),
        "direct" => ("#c92a2a", "#ffc9c9"),
        "refork" => ("#1864ab", "#a5d8ff"),
        _ => ("#495057", "#dee2e6"),
    }
}

/// A round tick step for an axis from 0 to `max`, for about `ticks` ticks:
/// 1, 2, 2.5 or 5 times a power of ten.
fn nice_step(max: f64, ticks: usize) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / ticks.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

/// A linear axis from 0 to a round maximum at or above the data's, mapped
/// onto pixels `from`..`to` (either direction).
#[derive(Debug, Clone, Copy)]
struct Axis {
    max: f64,
    step: f64,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(data_max: f64, ticks: usize, from: f64, to: f64) -> Self {
        let step = nice_step(data_max, ticks);
        let max = ((data_max / step).ceil() * step).max(step);
        Axis {
            max,
            step,
            from,
            to,
        }
    }

    fn at(&self, v: f64) -> f64 {
        self.from + (self.to - self.from) * (v / self.max)
    }

    fn ticks(&self) -> Vec<f64> {
        let n = (self.max / self.step).round() as usize;
        (0..=n).map(|i| i as f64 * self.step).collect()
    }
}

/// A tick label without trailing zeros (250, 2.5, 0.25).
fn tick_label(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart: the totals and spawn medians as bars, total PSS against
/// requests served per configuration, and every process of the final
/// report as a bar of private and shared memory, grouped per configuration.
pub fn svg(c: &Comparison) -> String {
    let runs = c.runs();
    let mut body = String::new();
    let mut y = 20.0;
    let first = runs.first();
    let warmed_with = if c.paths.len() == 1 {
        format!("GET {}", c.paths[0])
    } else {
        format!("a mix of {} paths", c.paths.len())
    };
    let _ = write!(
        body,
        "<text x=\"20\" y=\"{}\" font-size=\"18\" font-weight=\"bold\">rustrack compare: {}</text>\n\
         <text x=\"20\" y=\"{}\" fill=\"#495057\">{}: {} workers, {} requests each ({warmed_with}), preload GC {}</text>\n",
        y + 12.0,
        esc(&c.configs.join(" vs ")),
        y + 34.0,
        esc(&c.app_root.display().to_string()),
        first.map_or(0, |r| r.workers),
        first.map_or(0, |r| r.requests / r.workers.max(1)),
        esc(&c.preload_gc),
    );
    y += 50.0;
    // Legend: one colour per configuration.
    let mut x = 20.0;
    for r in &runs {
        let (color, _) = colors(&r.config);
        let label = match r.config.as_str() {
            "refork" => format!("smart + refork (after {})", join(&r.refork_after)),
            other => other.to_string(),
        };
        let _ = writeln!(
            body,
            "<rect x=\"{x}\" y=\"{y}\" width=\"14\" height=\"14\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            x + 20.0,
            y + 12.0,
            esc(&label)
        );
        x += 40.0 + 8.0 * label.len() as f64;
    }
    y += 40.0;
    y = totals_section(&mut body, &runs, y);
    y = series_section(&mut body, &runs, y + 20.0);
    y = processes_section(&mut body, &runs, y + 20.0);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" viewBox=\"0 0 {WIDTH} {h}\" font-family=\"sans-serif\" font-size=\"14\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        h = y + 20.0
    )
}

/// Horizontal bars: total PSS, total private dirty, spawn median.
fn totals_section(out: &mut String, runs: &[&RunResult], mut y: f64) -> f64 {
    type Metric = (&'static str, fn(&RunResult) -> f64, &'static str);
    let metrics: [Metric; 3] = [
        (
            "total PSS of the app's processes",
            |r| r.total_pss as f64 / MB,
            "MB",
        ),
        (
            "total private dirty",
            |r| r.total_private_dirty as f64 / MB,
            "MB",
        ),
        (
            "worker spawn time, median (refork: from the mold)",
            |r| r.spawn_ms_median,
            "ms",
        ),
    ];
    let (bar_h, left) = (20.0, 100.0);
    for (title, value, unit) in metrics {
        let _ = writeln!(
            out,
            "<text x=\"20\" y=\"{}\" font-weight=\"bold\">{title} ({unit})</text>",
            y + 14.0
        );
        y += 24.0;
        let max = runs.iter().map(|r| value(r)).fold(0.0, f64::max);
        let axis = Axis::new(max, 5, left, PLOT_RIGHT - 90.0);
        for r in runs {
            let v = value(r);
            let (color, _) = colors(&r.config);
            let w = (axis.at(v) - left).max(1.0);
            let _ = writeln!(
                out,
                "<text x=\"20\" y=\"{}\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{} {unit}</text>",
                y + 15.0,
                esc(&r.config),
                left + w + 6.0,
                y + 15.0,
                if unit == "ms" && v < 100.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.0}")
                }
            );
            y += bar_h + 4.0;
        }
        y += 12.0;
    }
    y
}

/// Total PSS (MB) against requests served, one line per configuration;
/// triangles mark where a refork happened.
fn series_section(out: &mut String, runs: &[&RunResult], y: f64) -> f64 {
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"{}\" font-weight=\"bold\">Total PSS of the app's processes as the workers serve requests</text>",
        y + 14.0
    );
    let (top, bottom) = (y + 40.0, y + 300.0);
    let max_x = runs
        .iter()
        .flat_map(|r| r.series.iter().map(|s| s.requests))
        .max()
        .unwrap_or(0) as f64;
    let max_y = runs
        .iter()
        .flat_map(|r| r.series.iter().map(|s| s.total_pss as f64 / MB))
        .fold(0.0, f64::max);
    let xa = Axis::new(max_x, 8, PLOT_LEFT, PLOT_RIGHT);
    let ya = Axis::new(max_y, 6, bottom, top);
    axes(
        out,
        &xa,
        &ya,
        "requests served (all workers together)",
        "total PSS (MB)",
    );
    for r in runs {
        let (color, _) = colors(&r.config);
        let points: Vec<(f64, f64)> = r
            .series
            .iter()
            .map(|s| (xa.at(s.requests as f64), ya.at(s.total_pss as f64 / MB)))
            .collect();
        let list: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            out,
            "<polyline data-config=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" points=\"{}\"/>",
            esc(&r.config),
            list.join(" ")
        );
        for (sample, (x, y)) in r.series.iter().zip(&points) {
            // Hollow while a rollout runs (processes the report omits).
            let fill = if sample.unlisted > 0 { "white" } else { color };
            let _ = writeln!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{fill}\" stroke=\"{color}\"><title>{} requests: {:.0} MB in {} processes</title></circle>",
                sample.requests,
                sample.total_pss as f64 / MB,
                sample.processes
            );
        }
        // A dashed line at the first sample after each refork.
        for pair in r.series.windows(2).zip(points.iter().skip(1)) {
            let ([a, b], (x, _)) = pair else { continue };
            if b.reforks > a.reforks {
                let _ = writeln!(
                    out,
                    "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"{color}\" stroke-dasharray=\"4,3\"><title>refork {}</title></line>\
                     <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" font-size=\"11\">refork {}</text>",
                    b.reforks,
                    x + 3.0,
                    top + 10.0,
                    b.reforks
                );
            }
        }
        // The configuration's name at its line's end.
        if let Some((x, y)) = points.last() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
                x - 4.0,
                y - 8.0,
                esc(&r.config)
            );
        }
    }
    let mut ly = bottom + 52.0;
    if runs.iter().any(|r| r.reforks > 0) {
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#1864ab\" stroke-dasharray=\"4,3\"/><text x=\"{}\" y=\"{ly}\" font-size=\"12\">a refork: a worker became the mold and its fresh children replaced the others (hollow: the rollout still running)</text>",
            PLOT_LEFT,
            ly - 4.0,
            PLOT_LEFT + 14.0,
            ly - 4.0,
            PLOT_LEFT + 20.0,
        );
        ly += 18.0;
    }
    let _ = writeln!(
        out,
        "<text x=\"{PLOT_LEFT}\" y=\"{ly}\" font-size=\"12\" fill=\"#495057\">Read between steps of requests, none in flight; the template (preloader or mold) is included, the front end is not.</text>"
    );
    ly
}

/// Axes with ticks, grid lines and labels for a plot whose y axis runs
/// bottom (ya.from) to top (ya.to).
fn axes(out: &mut String, xa: &Axis, ya: &Axis, x_label: &str, y_label: &str) {
    for t in ya.ticks() {
        let y = ya.at(t);
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e9ecef\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            xa.from,
            xa.to,
            xa.from - 6.0,
            y + 4.0,
            tick_label(t)
        );
    }
    for t in xa.ticks() {
        let x = xa.at(t);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#868e96\"/><text x=\"{x:.1}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
            ya.from,
            ya.from + 5.0,
            ya.from + 18.0,
            tick_label(t)
        );
    }
    let (x0, x1, y0, y1) = (xa.from, xa.to, ya.from, ya.to);
    let _ = writeln!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate({:.1},{:.1}) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">{}</text>",
        (x0 + x1) / 2.0,
        y0 + 36.0,
        esc(x_label),
        x0 - 58.0,
        (y0 + y1) / 2.0,
        esc(y_label),
    );
}

/// Every process of each configuration's final report as a stacked bar:
/// private memory at the bottom, shared on top (the bar's height is RSS).
fn processes_section(out: &mut String, runs: &[&RunResult], y: f64) -> f64 {
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"{}\" font-weight=\"bold\">Each process after the warm-up: private vs shared memory</text>",
        y + 14.0
    );
    // Legend: solid = private, tint = shared, in every configuration's colour.
    let ly = y + 26.0;
    let _ = writeln!(
        out,
        "<rect x=\"20\" y=\"{ly}\" width=\"14\" height=\"14\" fill=\"#495057\"/><text x=\"40\" y=\"{}\" font-size=\"12\">private (Private_Dirty + Private_Clean): this process's own pages</text>\n\
         <rect x=\"470\" y=\"{ly}\" width=\"14\" height=\"14\" fill=\"#dee2e6\" stroke=\"#495057\"/><text x=\"490\" y=\"{}\" font-size=\"12\">shared (Shared_Clean + Shared_Dirty); bar = RSS</text>",
        ly + 12.0,
        ly + 12.0
    );
    let (top, bottom) = (y + 64.0, y + 324.0);
    let bars: usize = runs.iter().map(|r| r.processes.len()).sum();
    let max_y = runs
        .iter()
        .flat_map(|r| {
            r.processes
                .iter()
                .map(|p| (p.shared + p.private) as f64 / MB)
        })
        .fold(0.0, f64::max);
    let ya = Axis::new(max_y, 6, bottom, top);
    let gap = 30.0; // between groups
    let slots = bars as f64 + gap / 40.0 * runs.len().saturating_sub(1) as f64;
    let slot = ((PLOT_RIGHT - PLOT_LEFT - 10.0) / slots.max(1.0)).min(60.0);
    let bar_w = slot * 0.75;
    // The x axis is the processes: draw the y axis and grid only.
    for t in ya.ticks() {
        let y = ya.at(t);
        let _ = writeln!(
            out,
            "<line x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{y:.1}\" stroke=\"#e9ecef\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>",
            PLOT_LEFT - 6.0,
            y + 4.0,
            tick_label(t)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{PLOT_LEFT}\" y1=\"{bottom}\" x2=\"{PLOT_RIGHT}\" y2=\"{bottom}\" stroke=\"black\"/><line x1=\"{PLOT_LEFT}\" y1=\"{bottom}\" x2=\"{PLOT_LEFT}\" y2=\"{top}\" stroke=\"black\"/>\n\
         <text transform=\"translate({:.1},{:.1}) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\">memory per process (MB)</text>",
        PLOT_LEFT - 58.0,
        (top + bottom) / 2.0
    );
    let mut x = PLOT_LEFT + 10.0;
    for r in runs {
        let (solid, tint) = colors(&r.config);
        let group_start = x;
        for p in &r.processes {
            let (private, shared) = (p.private as f64 / MB, p.shared as f64 / MB);
            let y_private = ya.at(private);
            let y_top = ya.at(private + shared);
            let label = match (p.role.as_str(), p.worker_id) {
                ("worker", Some(id)) => format!("w{id}"),
                ("preloader", _) => "pre".into(),
                (role, _) => role.to_string(),
            };
            let _ = writeln!(
                out,
                "<g><title>{} {}: private {private:.1} MB, shared {shared:.1} MB, PSS {:.1} MB{}</title>\
                 <rect x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{tint}\" stroke=\"{solid}\" stroke-width=\"0.5\"/>\
                 <rect x=\"{x:.1}\" y=\"{y_private:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{solid}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{private:.0}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text></g>",
                esc(&r.config),
                esc(&label),
                p.pss as f64 / MB,
                if p.unlisted {
                    " (not in the memory report)"
                } else {
                    ""
                },
                (y_private - y_top).max(0.0),
                (bottom - y_private).max(0.0),
                x + bar_w / 2.0,
                y_top - 4.0,
                x + bar_w / 2.0,
                bottom + 14.0,
                esc(&label),
            );
            x += slot;
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\" fill=\"{solid}\" text-anchor=\"middle\">{}</text>",
            (group_start + x - slot + bar_w) / 2.0,
            bottom + 34.0,
            esc(&r.config)
        );
        x += gap;
    }
    let _ = writeln!(
        out,
        "<text x=\"{PLOT_LEFT}\" y=\"{:.1}\" font-size=\"12\" fill=\"#495057\">Numbers above the bars: private MB. pre = preloader, mold = the worker a refork promoted, wN = worker N.</text>",
        bottom + 56.0
    );
    bottom + 56.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::Memory;

    #[test]
    fn median_of_sorted_samples() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
    }

    #[test]
    fn checkpoints_split_the_warm_up_and_end_at_the_last_request() {
        // 4 clients, a sample every 50 requests: every 13 per client (12.5
        // rounded), and at 250.
        let c = checkpoints(250, 4, 50);
        assert_eq!(&c[..3], &[13, 26, 39]);
        assert_eq!(*c.last().unwrap(), 250);
        assert_eq!(c.len(), 20);
        assert!(c.windows(2).all(|w| w[0] < w[1]));
        // A step larger than the warm-up: one sample, at the end.
        assert_eq!(checkpoints(10, 4, 1000), vec![10]);
        // Fewer requests than clients: every request.
        assert_eq!(checkpoints(3, 4, 1), vec![1, 2, 3]);
        assert_eq!(checkpoints(0, 4, 50), Vec::<usize>::new());
    }

    #[test]
    fn defaults_follow_the_request_count() {
        assert_eq!(default_refork_after(250), 62);
        assert_eq!(default_refork_after(2), 1);
        assert_eq!(default_sample_every(4, 250), 50);
        assert_eq!(default_sample_every(4, 1), 4);
    }

    #[test]
    fn clients_walk_the_mix_from_their_own_offsets() {
        let firsts: Vec<usize> = (0..4).map(|c| path_index(c, 4, 0, 83)).collect();
        assert_eq!(firsts, vec![0, 20, 41, 62]);
        assert_eq!(path_index(3, 4, 21, 83), 0);
        // Every page is requested once in a pass.
        let mut seen: Vec<usize> = (0..83).map(|i| path_index(2, 4, i, 83)).collect();
        seen.sort();
        assert_eq!(seen, (0..83).collect::<Vec<_>>());
        assert_eq!(path_index(0, 1, 5, 1), 0);
    }

    #[test]
    fn paths_file_skips_blanks_and_comments() {
        assert_eq!(
            parse_paths("/\n\n# reports\n /reports/sales \n/de\n"),
            vec!["/", "/reports/sales", "/de"]
        );
    }

    #[test]
    fn descendants_and_titles_find_what_the_report_leaves_out() {
        // 1 front end; 10 the old mold with a worker 11 being retired; 20
        // the new mold with 21; 30 not ours.
        let table = [(10, 1), (11, 10), (20, 1), (21, 20), (30, 2), (1, 0)];
        let mut found = descendants(1, &table);
        found.sort();
        assert_eq!(found, vec![10, 11, 20, 21]);
        assert_eq!(descendants(30, &table), Vec::<u32>::new());
        assert_eq!(
            role_from_title("rustrack worker 13 (rails-large)      "),
            ("worker".to_string(), Some(13))
        );
        assert_eq!(
            role_from_title("rustrack mold 9 (rails-large): promoted after 15 requests"),
            ("mold".to_string(), Some(9))
        );
        assert_eq!(
            role_from_title("rustrack preloader (hello)"),
            ("preloader".to_string(), None)
        );
        assert_eq!(
            role_from_title("ruby\0-e\0sleep"),
            ("other".to_string(), None)
        );
    }

    #[test]
    fn totals_and_bars() {
        let p = |pid, role: &str, id, pss, dirty| AppProcess {
            pid,
            role: role.into(),
            worker_id: id,
            unlisted: pid == 12,
            memory: Memory {
                rss: 100,
                pss,
                shared_clean: 60,
                private_dirty: dirty,
                private_clean: 5,
                ..Memory::default()
            },
        };
        let procs = vec![
            p(12, "worker", Some(2), 30, 20),
            p(11, "worker", Some(1), 30, 20),
            p(10, "preloader", None, 40, 10),
        ];
        assert_eq!(app_totals(&procs), (100, 50));
        let bars = process_bars(&procs);
        let order: Vec<u32> = bars.iter().map(|b| b.pid).collect();
        assert_eq!(order, vec![10, 11, 12]);
        assert_eq!((bars[1].shared, bars[1].private), (60, 25));
        assert!(bars[2].unlisted && !bars[1].unlisted);
    }

    #[test]
    fn nice_axes() {
        assert_eq!(nice_step(445.0, 6), 100.0);
        assert_eq!(nice_step(1000.0, 8), 200.0);
        assert_eq!(nice_step(9.0, 6), 2.0);
        assert_eq!(nice_step(0.0, 6), 1.0);
        let a = Axis::new(445.0, 6, 300.0, 100.0);
        assert_eq!(a.max, 500.0);
        assert_eq!(a.ticks(), vec![0.0, 100.0, 200.0, 300.0, 400.0, 500.0]);
        assert_eq!(a.at(0.0), 300.0);
        assert_eq!(a.at(500.0), 100.0);
        assert_eq!(a.at(250.0), 200.0);
        // No data: still a usable axis.
        let z = Axis::new(0.0, 5, 0.0, 100.0);
        assert_eq!(z.max, 1.0);
        assert_eq!(z.at(0.0), 0.0);
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(250.0), "250");
    }

    fn run_result(config: &str, pss_mb: &[u64], reforks: &[u32]) -> RunResult {
        let mb = 1024 * 1024;
        let series = pss_mb
            .iter()
            .zip(reforks)
            .enumerate()
            .map(|(i, (p, r))| Sample {
                requests: i * 100,
                total_pss: p * mb,
                total_private_dirty: p * mb / 2,
                processes: 5,
                unlisted: 0,
                reforks: *r,
            })
            .collect();
        let bar = |role: &str, id: Option<u64>, private: u64| ProcessBar {
            role: role.into(),
            pid: 100 + id.unwrap_or(0) as u32,
            worker_id: id,
            unlisted: false,
            rss: 100 * mb,
            pss: 60 * mb,
            shared: (100 - private) * mb,
            private: private * mb,
            private_dirty: private * mb,
        };
        RunResult {
            config: config.into(),
            spawn_method: if config == "direct" {
                "direct"
            } else {
                "smart"
            }
            .into(),
            refork_after: if config == "refork" { vec![50] } else { vec![] },
            workers: 2,
            requests: 400,
            spawn_ms: vec![4.0, 6.0],
            spawn_ms_median: 5.0,
            spawn_ms_max: 6.0,
            total_pss: pss_mb.last().unwrap() * mb,
            total_private_dirty: 100 * mb,
            private_dirty_per_worker: 40 * mb,
            preloader_pss: Some(30 * mb),
            template: Some(
                if config == "refork" {
                    "mold"
                } else {
                    "preloader"
                }
                .into(),
            ),
            reforks: *reforks.last().unwrap(),
            requests_per_second: 100.0,
            series,
            processes: vec![
                bar(
                    if config == "refork" {
                        "mold"
                    } else {
                        "preloader"
                    },
                    None,
                    10,
                ),
                bar("worker", Some(1), 40),
                bar("worker", Some(2), 45),
            ],
        }
    }

    fn comparison() -> Comparison {
        Comparison {
            app_root: PathBuf::from("/apps/a&b"),
            preload_gc: "compact".into(),
            preload_hugepages: true,
            paths: vec!["/".into(), "/de".into()],
            sample_every: 200,
            warmup_requests: vec![],
            warmup_rounds: 2,
            configs: vec!["smart".into(), "direct".into(), "refork".into()],
            smart: Some(run_result("smart", &[100, 300, 400, 445], &[0, 0, 0, 0])),
            direct: Some(run_result("direct", &[340, 420, 480, 500], &[0, 0, 0, 0])),
            refork: Some(run_result("refork", &[100, 300, 330, 250], &[0, 1, 1, 1])),
            pss_saving_bytes: Some(55 << 20),
            pss_saving_percent: Some(11.0),
        }
    }

    #[test]
    fn the_table_has_a_column_per_configuration() {
        let text = render(&comparison());
        let header = text.lines().find(|l| l.contains("smart")).unwrap();
        assert!(
            header.contains("direct") && header.contains("refork"),
            "{text}"
        );
        assert!(text.contains("total PSS, % of direct"), "{text}");
        assert!(text.contains("1 (50)"), "{text}");
        assert!(
            text.contains("refork saves 250.0 MB of PSS (50%)"),
            "{text}"
        );
        // Only the configurations that ran.
        let mut c = comparison();
        c.configs = vec!["refork".into()];
        c.smart = None;
        c.direct = None;
        let text = render(&c);
        assert!(!text.contains("direct"), "{text}");
    }

    #[test]
    fn the_chart_shows_every_configuration() {
        let out = svg(&comparison());
        assert!(out.starts_with("<svg") && out.ends_with("</svg>\n"));
        for config in ["smart", "direct", "refork"] {
            assert!(
                out.contains(&format!("<polyline data-config=\"{config}\"")),
                "{config}"
            );
            assert!(out.contains(&format!(">{config}</text>")), "{config}");
        }
        // One refork marker, the app path escaped, axis titles with units.
        assert_eq!(out.matches("<title>refork 1</title>").count(), 1);
        assert_eq!(out.matches(">refork 1</text>").count(), 1);
        assert!(out.contains("/apps/a&amp;b") && !out.contains("a&b"));
        assert!(out.contains("total PSS (MB)"));
        assert!(out.contains("requests served"));
        assert!(out.contains("memory per process (MB)"));
        // Three processes per configuration, each a private and a shared rect.
        assert_eq!(out.matches("<g><title>").count(), 9);
        assert!(out.contains("<title>refork mold: private 10.0 MB, shared 90.0 MB"));
        // Every point of the series lies inside the plot.
        for line in out.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = line.split("points=\"").nth(1).unwrap();
            for p in pts.trim_end_matches("\"/>").split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((PLOT_LEFT..=PLOT_RIGHT).contains(&x), "{p}");
                assert!(y > 0.0, "{p}");
            }
        }
        // Tags balance (a cheap well-formedness check).
        assert_eq!(out.matches("<text").count(), out.matches("</text>").count());
        assert_eq!(out.matches("<g>").count(), out.matches("</g>").count());
    }
}
