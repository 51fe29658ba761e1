//! The command line: every flag is defined once, here, with its default.
//! Defaults and names follow Passenger Standalone where it has the option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{PreloadGc, SpawnMethod, Warmup, WarmupRequest};

#[derive(Debug, Parser)]
#[command(
    name = "rustrack",
    version,
    about = "A Rust-hosted application server for Ruby (Rack and Rails) apps"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Rack app in APP_ROOT (its config.ru) over HTTP.
    Start(Box<StartArgs>),
    /// Show the process pool of a running instance.
    Status(StatusArgs),
    /// Memory of every process of a running instance (PSS, private dirty,
    /// copy-on-write sharing with the preloader).
    Memory(StatusArgs),
    /// Boot an app with smart and then direct spawning and compare spawn
    /// times and memory side by side.
    Compare(CompareArgs),
    /// Rolling restart: load the current code, replace workers one by one.
    Restart(ClientArgs),
    /// Stop a running instance.
    Stop(StopArgs),
    /// Raise (+1) or lower (-1) the process count, within [min, max].
    Scale(ScaleArgs),
    /// Internal: the smart-spawning preloader (started by `start`).
    #[command(name = "__preloader", hide = true)]
    Preloader(InternalArgs),
    /// Internal: a direct-spawned worker (started by `start`).
    #[command(name = "__worker", hide = true)]
    Worker(InternalArgs),
}

#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// The app's directory (holding config.ru).
    #[arg(default_value = ".")]
    pub app_root: PathBuf,

    /// Address to listen on for HTTP.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: String,

    /// TCP port to listen on; 0 picks a free one (the log says which).
    #[arg(long, short = 'p', default_value_t = 3000)]
    pub port: u16,

    /// Also (or, with --no-tcp, only) listen on this Unix socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,

    /// Don't listen on TCP (needs --socket).
    #[arg(long, requires = "socket")]
    pub no_tcp: bool,

    /// smart: load the app once in a preloader and fork workers from it;
    /// direct: boot every worker from scratch.
    #[arg(long, value_enum, default_value_t = SpawnMethod::Smart)]
    pub spawn_method: SpawnMethod,

    /// Worker processes kept running even when idle.
    #[arg(long, default_value_t = 1)]
    pub min_instances: usize,

    /// Most worker processes at once.
    #[arg(long, default_value_t = 6)]
    pub max_pool_size: usize,

    /// Requests that may wait for a worker; past that, 503.
    #[arg(long, default_value_t = 100)]
    pub max_request_queue_size: usize,

    /// Seconds a request may wait for a worker before it gets 504; 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub max_request_queue_time: u64,

    /// Seconds a worker may stay idle before it is stopped (down to
    /// --min-instances); 0 = never.
    #[arg(long, default_value_t = 300)]
    pub pool_idle_time: u64,

    /// Seconds the preloader may go without spawning before it is stopped
    /// (it is started again when needed); 0 = never.
    #[arg(long, default_value_t = 300)]
    pub max_preloader_idle_time: u64,

    /// Seconds a request may run before its worker is killed and the client
    /// gets 504; 0 = no limit.
    #[arg(long, default_value_t = 60)]
    pub worker_timeout: u64,

    /// Replace a worker after it has served this many requests; 0 = never.
    #[arg(long, default_value_t = 0)]
    pub max_requests: u64,

    /// Up to this many extra requests per worker, so that workers started
    /// together are not all replaced together.
    #[arg(long, default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Replace a worker (after its current request) whose private dirty
    /// memory plus swap exceeds this many MB; 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub memory_limit: u64,

    /// Kill a worker mid-request (the client gets 503) whose private dirty
    /// memory plus swap reaches this many MB; 0 = no hard limit. Checked
    /// every 100 ms while a request runs.
    #[arg(long, default_value_t = 0)]
    pub memory_limit_hard: u64,

    /// Seconds between samples of workers' memory and CPU.
    #[arg(long, default_value_t = 5.0)]
    pub sample_interval: f64,

    /// Seconds a preloader or worker may take to load the app.
    #[arg(long, default_value_t = 90)]
    pub start_timeout: u64,

    /// Seconds to let in-flight and queued requests finish on TERM/QUIT/INT.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// RACK_ENV, RAILS_ENV and APP_ENV for the app.
    #[arg(long, short = 'e', default_value = "development")]
    pub environment: String,

    /// Extra environment variable for the app, NAME=VALUE (repeatable).
    #[arg(long = "envvar", value_parser = parse_envvar)]
    pub envvars: Vec<(String, String)>,

    /// Refuse to start when the preloader holds open connections (TCP or
    /// Unix sockets) or live Ruby threads when it forks, instead of warning.
    #[arg(long)]
    pub strict_fork: bool,

    /// Define a minimal PhusionPassenger module whose on_event registers with
    /// rustrack's events, for apps written for Passenger. Off by default:
    /// gems that see PhusionPassenger may assume the rest of Passenger exists.
    #[arg(long)]
    pub passenger_compat: bool,

    #[command(flatten)]
    pub preload: PreloadArgs,

    /// Largest request body accepted, in bytes; larger gets 413.
    #[arg(long, default_value_t = 1 << 30)]
    pub max_body_size: u64,

    /// Request bodies larger than this many bytes are buffered in a
    /// temporary file instead of memory.
    #[arg(long, default_value_t = 1 << 20)]
    pub body_buffer_size: usize,

    /// Bytes of a streamed response held in memory for a slow client before
    /// the rest is buffered in a temporary file.
    #[arg(long, default_value_t = 1 << 20)]
    pub response_buffer_size: usize,

    /// Seconds a client may take to send its request headers.
    #[arg(long, default_value_t = 30)]
    pub header_timeout: u64,

    /// Trust X-Forwarded-Proto from the client (only behind a proxy that sets it).
    #[arg(long)]
    pub trust_proxy: bool,

    /// Threads for the front end's event loop; 0 = one per CPU.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9394).
    #[arg(long)]
    pub metrics_address: Option<String>,

    /// Where the instance directory (admin socket, worker socket) is created.
    #[arg(long, env = "RUSTRACK_INSTANCE_REGISTRY_DIR")]
    pub instance_registry_dir: Option<PathBuf>,

    /// error, warn, info, debug or trace; RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Append logs (rustrack's and the app's stdout/stderr) to this file;
    /// SIGUSR1 reopens it, for log rotation.
    #[arg(long)]
    pub log_file: Option<PathBuf>,

    /// Write the front end's PID here once serving; removed on exit.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,

    /// Detach into the background once serving (needs --log-file, or logs
    /// go to APP_ROOT/log/rustrack.log).
    #[arg(long)]
    pub daemonize: bool,

    /// When started as root: run the preloader and workers as this user.
    #[arg(long)]
    pub user: Option<String>,

    /// With --user: this group instead of the user's primary group.
    #[arg(long, requires = "user")]
    pub group: Option<String>,
}

/// How the preloader prepares its heap before forking (smart spawning).
#[derive(Debug, Args, Clone)]
pub struct PreloadArgs {
    /// Garbage collection in the preloader before the first fork.
    #[arg(long, value_enum, default_value_t = PreloadGc::Age)]
    pub preload_gc: PreloadGc,

    /// Back the preloader's loaded heap with transparent huge pages before
    /// the first fork (only nearly full 2 MB ranges), so that each fork
    /// copies 1/512 of the page-table entries. Copy-on-write stays per
    /// 4 KB page. `false` keeps Ruby's default of no huge pages.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub preload_hugepages: bool,

    /// Serve this request to the app in the preloader before the first
    /// fork, so that the work of first requests (compiled templates,
    /// loaded locales, filled caches) is done once and shared by every
    /// worker: "/path?query", or "METHOD /path" (repeatable; GET unless
    /// given). The response is discarded. Off by default, since requests
    /// can have side effects: use idempotent GETs. Smart spawning only;
    /// counts toward --start-timeout.
    #[arg(long = "warmup-request", value_name = "[METHOD ]PATH", value_parser = WarmupRequest::parse)]
    pub warmup_requests: Vec<WarmupRequest>,

    /// How many times each --warmup-request is served (all of them, then
    /// all again): some work happens only on a second request.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub warmup_rounds: u32,
}

impl PreloadArgs {
    /// The same options as command-line arguments, for a child `start`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--preload-gc".into(),
            format!("{:?}", self.preload_gc).to_lowercase(),
            "--preload-hugepages".into(),
            self.preload_hugepages.to_string(),
            "--warmup-rounds".into(),
            self.warmup_rounds.to_string(),
        ];
        for request in &self.warmup_requests {
            args.push("--warmup-request".into());
            args.push(request.to_string());
        }
        args
    }

    /// What the preloader is told to warm up with.
    pub fn warmup(&self) -> Warmup {
        Warmup {
            requests: self.warmup_requests.clone(),
            rounds: self.warmup_rounds,
        }
    }
}

/// Which running instance a client command talks to.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The app whose instance to use (default: the current directory).
    #[arg(default_value = ".")]
    pub app_root: PathBuf,

    /// The instance directory, when more than one instance serves the app.
    #[arg(long)]
    pub instance: Option<PathBuf>,

    #[arg(long, env = "RUSTRACK_INSTANCE_REGISTRY_DIR", hide = true)]
    pub instance_registry_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The app to compare (default: the current directory).
    #[arg(default_value = ".")]
    pub app_root: PathBuf,

    /// Workers to spawn with each method.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,

    /// Requests sent per worker to warm it up before measuring.
    #[arg(long, default_value_t = 100)]
    pub requests: usize,

    /// Path requested to warm up the workers.
    #[arg(long, default_value = "/")]
    pub path: String,

    /// How the smart run's preloader prepares its heap.
    #[command(flatten)]
    pub preload: PreloadArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also write a bar chart (SVG) of memory and spawn times to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,

    /// Extra options for both `rustrack start` runs (e.g. "--environment production").
    #[arg(long, allow_hyphen_values = true)]
    pub start_args: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Let in-flight and queued requests finish first (as SIGTERM does);
    /// without it, everything stops at once.
    #[arg(long)]
    pub graceful: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// +1 or -1 (or any step).
    #[arg(allow_hyphen_values = true)]
    pub delta: i32,

    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct InternalArgs {
    /// The app spec, as JSON.
    #[arg(long)]
    pub spec: String,
    /// The worker's id (direct workers only).
    #[arg(long, default_value_t = 0)]
    pub worker_id: u64,
}

fn parse_envvar(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}
