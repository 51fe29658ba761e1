//! `rustrack compare`: boots the same app with smart and then with direct
//! spawning, spawns N workers each way, warms them with the same requests,
//! and prints spawn times and memory side by side.
//!
//! Each run is a real `rustrack start` on an ephemeral loopback port with
//! its own instance registry, found through its `instance.json` (as every
//! client finds an instance); figures come from its admin socket (`status`
//! and `memory`), i.e. from `/proc/PID/smaps_rollup` of the app's own
//! processes. The smart total includes the preloader, which is part of
//! what smart spawning costs. The server's log goes to our stderr only if
//! it fails to start.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::http::Connection;
use super::{admin_call, human_bytes};
use crate::cli::CompareArgs;
use crate::config::SpawnMethod;
use crate::instance::{self, InstanceInfo};
use crate::report::{AdminRequest, MemoryReport, ProcessRole, StatusReport};

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub spawn_method: String,
    pub workers: usize,
    pub requests: usize,
    pub spawn_ms: Vec<f64>,
    pub spawn_ms_median: f64,
    pub spawn_ms_max: f64,
    pub total_pss: u64,
    pub total_private_dirty: u64,
    pub private_dirty_per_worker: u64,
    pub preloader_pss: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub app_root: PathBuf,
    pub preload_gc: String,
    #[serde(default)]
    pub preload_hugepages: bool,
    /// The smart run's `--warmup-request`s, each served `warmup_rounds`
    /// times in its preloader (direct spawning has none).
    pub warmup_requests: Vec<String>,
    pub warmup_rounds: u32,
    pub smart: RunResult,
    pub direct: RunResult,
    pub pss_saving_bytes: i64,
    pub pss_saving_percent: f64,
}

pub fn run(args: CompareArgs) -> Result<i32> {
    let app = args
        .app_root
        .canonicalize()
        .with_context(|| format!("{} does not exist", args.app_root.display()))?;
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let smart = measure(&args, &app, SpawnMethod::Smart)?;
    let direct = measure(&args, &app, SpawnMethod::Direct)?;
    let saving = direct.total_pss as i64 - smart.total_pss as i64;
    let comparison = Comparison {
        app_root: app,
        preload_gc: format!("{:?}", args.preload.preload_gc).to_lowercase(),
        preload_hugepages: args.preload.preload_hugepages,
        warmup_requests: args
            .preload
            .warmup_requests
            .iter()
            .map(|r| r.to_string())
            .collect(),
        warmup_rounds: args.preload.warmup_rounds,
        pss_saving_percent: if direct.total_pss > 0 {
            100.0 * saving as f64 / direct.total_pss as f64
        } else {
            0.0
        },
        pss_saving_bytes: saving,
        smart,
        direct,
    };
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

fn measure(args: &CompareArgs, app: &Path, method: SpawnMethod) -> Result<RunResult> {
    let n = args.workers;
    eprintln!(
        "==> {}: starting {} with {n} workers",
        method.as_str(),
        app.display()
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

    let status = |instance: &Path| -> Result<StatusReport> {
        Ok(serde_json::from_value(admin_call(
            instance,
            &AdminRequest::Status,
        )?)?)
    };
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
        "    warming: {total} requests for {} from {n} clients",
        args.path
    );
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| warm(port, &args.path, args.requests)))
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a warm-up client panicked"))??;
        }
        Ok(())
    })?;

    let s = status(&instance)?;
    let memory: MemoryReport =
        serde_json::from_value(admin_call(&instance, &AdminRequest::Memory)?)?;
    drop(server);
    // The app's processes only: the front end is the same either way.
    let app_procs: Vec<_> = memory
        .processes
        .iter()
        .filter(|p| p.role != ProcessRole::FrontEnd)
        .collect();
    let sum = |f: fn(&crate::procfs::Memory) -> u64| {
        app_procs
            .iter()
            .filter_map(|p| p.memory.as_ref())
            .map(f)
            .sum::<u64>()
    };
    let workers: Vec<_> = app_procs
        .iter()
        .filter(|p| p.role == ProcessRole::Worker)
        .collect();
    let worker_dirty: u64 = workers
        .iter()
        .filter_map(|p| p.memory.map(|m| m.private_dirty))
        .sum();
    let mut spawn_ms: Vec<f64> = s.workers.iter().filter_map(|w| w.spawn_ms).collect();
    spawn_ms.sort_by(|a, b| a.total_cmp(b));
    let result = RunResult {
        spawn_method: method.as_str().to_string(),
        workers: workers.len(),
        requests: total,
        spawn_ms_median: median(&spawn_ms),
        spawn_ms_max: spawn_ms.last().copied().unwrap_or(0.0),
        spawn_ms,
        total_pss: sum(|m| m.pss),
        total_private_dirty: sum(|m| m.private_dirty),
        private_dirty_per_worker: worker_dirty / workers.len().max(1) as u64,
        preloader_pss: app_procs
            .iter()
            .find(|p| p.role == ProcessRole::Preloader)
            .and_then(|p| p.memory.map(|m| m.pss)),
    };
    eprintln!(
        "    total PSS {}, private dirty {}",
        human_bytes(result.total_pss),
        human_bytes(result.total_private_dirty)
    );
    Ok(result)
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Sends `count` GETs over one keep-alive connection.
fn warm(port: u16, path: &str, count: usize) -> Result<()> {
    let mut conn = Connection::open("127.0.0.1", port, Duration::from_secs(60))?;
    for _ in 0..count {
        let status = conn.get(path)?.status;
        if status >= 500 {
            bail!("GET {path} answered {status}");
        }
    }
    Ok(())
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

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

pub fn render(c: &Comparison) -> String {
    let (s, d) = (&c.smart, &c.direct);
    let row = |name: &str, a: String, b: String| format!("{name:<28} {a:>14} {b:>14}\n");
    let mut out = format!(
        "\n{} ({} workers, {} warm-up requests each, preload GC: {}, huge pages: {}{})\n\n",
        c.app_root.display(),
        s.workers,
        s.requests / s.workers.max(1),
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
    out += &row("", "smart".into(), "direct".into());
    out += &row(
        "spawn time, median",
        ms(s.spawn_ms_median),
        ms(d.spawn_ms_median),
    );
    out += &row("spawn time, max", ms(s.spawn_ms_max), ms(d.spawn_ms_max));
    out += &row(
        "total PSS",
        human_bytes(s.total_pss),
        human_bytes(d.total_pss),
    );
    out += &row(
        "total private dirty",
        human_bytes(s.total_private_dirty),
        human_bytes(d.total_private_dirty),
    );
    out += &row(
        "private dirty per worker",
        human_bytes(s.private_dirty_per_worker),
        human_bytes(d.private_dirty_per_worker),
    );
    out += &row(
        "preloader PSS (included)",
        s.preloader_pss
            .map(human_bytes)
            .unwrap_or_else(|| "-".into()),
        "-".into(),
    );
    let speedup = if s.spawn_ms_median > 0.0 {
        d.spawn_ms_median / s.spawn_ms_median
    } else {
        0.0
    };
    out += &format!(
        "\nSmart spawning saves {} of PSS ({:.0}%) and spawns {:.0}x faster.\n",
        human_bytes(c.pss_saving_bytes.unsigned_abs()),
        c.pss_saving_percent,
        speedup
    );
    out += "(The front end is left out of both totals: it is the same process either way.)\n";
    out
}

/// A bar chart of the two memory totals and the median spawn times.
pub fn svg(c: &Comparison) -> String {
    let (s, d) = (&c.smart, &c.direct);
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let groups = [
        ("total PSS (MB)", mb(s.total_pss), mb(d.total_pss)),
        (
            "total private dirty (MB)",
            mb(s.total_private_dirty),
            mb(d.total_private_dirty),
        ),
        (
            "spawn time, median (ms)",
            s.spawn_ms_median,
            d.spawn_ms_median,
        ),
    ];
    let (w, h, bar_h, gap) = (720.0, 80.0 + groups.len() as f64 * 110.0, 30.0, 110.0);
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="14">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="30" font-size="18" font-weight="bold">rustrack compare: smart vs direct spawning ({} workers)</text>
<rect x="20" y="45" width="14" height="14" fill="#2b8a3e"/><text x="40" y="57">smart</text>
<rect x="100" y="45" width="14" height="14" fill="#c92a2a"/><text x="120" y="57">direct</text>
"##,
        s.workers
    );
    for (i, (label, a, b)) in groups.iter().enumerate() {
        let top = 80.0 + i as f64 * gap;
        let max = a.max(*b).max(f64::MIN_POSITIVE);
        let scale = (w - 260.0) / max;
        out += &format!("<text x=\"20\" y=\"{}\">{label}</text>\n", top + 12.0);
        for (j, (v, color)) in [(a, "#2b8a3e"), (b, "#c92a2a")].iter().enumerate() {
            let y = top + 20.0 + j as f64 * (bar_h + 6.0);
            out += &format!(
                "<rect x=\"20\" y=\"{y}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{v:.1}</text>\n",
                (*v * scale).max(1.0),
                (*v * scale).max(1.0) + 28.0,
                y + 20.0
            );
        }
    }
    out += "</svg>\n";
    out
}
