//! The command line: every flag is defined once, here, with its default.
//! Defaults and names follow Passenger Standalone where it has the option.
//! `settings` gives each `start` option two more sources (a `RUSTRACK_*`
//! variable, a config file) by walking these definitions: a new flag
//! needs nothing more.

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
    #[command(after_help = crate::settings::SOURCES_HELP)]
    Start(Box<StartArgs>),
    /// Print the settings `start` would use, and where each comes from.
    #[command(after_help = crate::settings::SOURCES_HELP)]
    Config(Box<ConfigArgs>),
    /// Show the process pool of a running instance.
    Status(StatusArgs),
    /// Memory of every process of a running instance (PSS, private dirty,
    /// copy-on-write sharing with the preloader).
    Memory(StatusArgs),
    /// Boot an app with smart spawning, direct spawning and smart spawning
    /// with refork, warm each the same way and compare spawn times and
    /// memory (and how memory grows with requests) side by side.
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

    /// Serve several apps from this instance, as Passenger's application
    /// groups (repeatable): ROUTE=APP_ROOT, where ROUTE is `default`, a
    /// host (shop.example.com), a wildcard (*.example.com), a path prefix
    /// (/blog: the app sees SCRIPT_NAME=/blog) or both
    /// (example.com/blog); or a JSON object with options of the app's own
    /// (docs/multi-app.md). Relative roots are relative to APP_ROOT, which
    /// is then served only if named. The apps share --max-pool-size.
    #[arg(long = "app", value_name = "ROUTE=APP_ROOT", value_parser = crate::apps::decl::parse)]
    pub apps: Vec<crate::apps::decl::AppDecl>,

    /// Settings file (JSON); default: APP_ROOT/rustrack.json, else
    /// APP_ROOT/Passengerfile.json.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

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

    /// Serve HTTPS (and HTTP/2 over it): on --port, or with --ssl-port on
    /// that port while --port stays plain HTTP (Passenger's rule). Needs
    /// --ssl-certificate and --ssl-certificate-key.
    #[arg(long, requires_all = ["ssl_certificate", "ssl_certificate_key"])]
    pub ssl: bool,

    /// PEM certificate chain, the server's certificate first. Read again
    /// on SIGHUP and every rolling restart.
    #[arg(long, value_name = "PATH", requires = "ssl")]
    pub ssl_certificate: Option<PathBuf>,

    /// PEM private key of --ssl-certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "ssl")]
    pub ssl_certificate_key: Option<PathBuf>,

    /// With --ssl: serve HTTPS on this port and plain HTTP on --port. It
    /// must differ from --port (leave it out for HTTPS only); 0 picks a
    /// free one.
    #[arg(long, value_name = "PORT", requires = "ssl")]
    pub ssl_port: Option<u16>,

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

    /// Requests each worker process serves at once, each on its own Ruby
    /// thread (a fixed pool started in the worker after it forks). 1 runs
    /// every request on the worker's main thread, one at a time; more
    /// suits apps that spend much of a request waiting on a database or an
    /// API, and must be thread-safe (Rack's `rack.multithread` is then
    /// true). A worker with every thread busy counts as busy: the pool
    /// queues, and grows, only then.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads_per_worker: u32,

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

    /// Refork: once a worker has served this many requests, promote it to
    /// be the template ("mold") new workers fork from, so they start with
    /// its warm heap; its children then replace the other workers one by
    /// one. A list (`--refork-after 500,2000`) sets the threshold for each
    /// refork in turn, the last repeating. Smart spawning only; off by
    /// default.
    #[arg(long, value_delimiter = ',', value_name = "N[,N2,…]")]
    pub refork_after: Vec<u64>,

    /// Seconds between samples of workers' memory and CPU.
    #[arg(long, default_value_t = 5.0)]
    pub sample_interval: f64,

    /// Seconds a preloader or worker may take to load the app.
    #[arg(long, default_value_t = 90)]
    pub start_timeout: u64,

    /// Seconds to let in-flight and queued requests finish on TERM/QUIT/INT;
    /// also how long a retired worker may spend in its exit hooks
    /// (`stopping_worker_process`, `at_exit`) before it is killed.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Seconds to keep accepting and serving after TERM, with the health
    /// check already answering 503, before the listeners close: time for a
    /// load balancer (a Kubernetes Service) to stop sending new requests.
    #[arg(long, default_value_t = 0)]
    pub shutdown_delay: u64,

    /// Answer GET/HEAD of this path in the front end (never a worker): 200
    /// with a small JSON body while a worker is ready and the instance is
    /// not draining; 503 while booting, draining or in a crash loop. For
    /// load balancers' health checks (e.g. /up).
    #[arg(long, value_name = "PATH")]
    pub health_check_path: Option<String>,

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

    /// Serve GET and HEAD requests for files in APP_ROOT/public from the
    /// front end (with x.html and x/index.html for /x, precompressed .br/.gz
    /// siblings, conditional and range requests), without asking a worker.
    /// `false` sends every request to the app.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub static_files: bool,

    /// X-Sendfile: the front end sends a file the app names in an
    /// `X-Sendfile` response header only if it lies under this directory
    /// (repeatable; default: the app root). Others get 500.
    #[arg(long = "sendfile-root", value_name = "DIR")]
    pub sendfile_roots: Vec<PathBuf>,

    /// A proxy that may tell the client's address, scheme and host
    /// (X-Forwarded-For/-Proto/-Host/-Port, X-Request-Start): a CIDR
    /// (10.0.0.0/8), an address, or `unix` for the Unix socket
    /// (repeatable). From anyone else those headers reach the app as plain
    /// headers and change nothing.
    #[arg(long = "trusted-proxy", value_name = "CIDR|unix")]
    pub trusted_proxies: Vec<String>,

    /// Accept the PROXY protocol (v1 and v2, as HAProxy's send-proxy sends
    /// it) from trusted proxies: the client it names becomes REMOTE_ADDR. A
    /// PROXY header from anyone else, or a malformed one, closes the
    /// connection; a connection without one is served as it is.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Listen with SO_REUSEPORT, so a new instance can bind the same
    /// address while the old one drains (zero-downtime upgrades of rustrack
    /// itself). The TCP listeners are then bound only once a worker is
    /// ready.
    #[arg(long)]
    pub reuse_port: bool,

    /// Deprecated: trusts every peer as a proxy; use --trusted-proxy.
    #[arg(long, hide = true)]
    pub trust_proxy: bool,

    /// The front end's event loops, each a thread; 0 = one per 4 CPUs.
    /// More loops cost app requests cross-thread wake-ups, but let static
    /// files and TLS use more CPUs.
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

/// `rustrack config`: the same options as `start`, shown instead of used.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub start: StartArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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

/// A configuration `rustrack compare` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareConfig {
    /// Smart spawning: workers forked from the preloader.
    Smart,
    /// Direct spawning: every worker boots the app.
    Direct,
    /// Smart spawning with `--refork-after`: a warm worker becomes the mold.
    Refork,
}

impl CompareConfig {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareConfig::Smart => "smart",
            CompareConfig::Direct => "direct",
            CompareConfig::Refork => "refork",
        }
    }
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
    #[arg(long, default_value = "/", conflicts_with = "paths_file")]
    pub path: String,

    /// Warm up with a page mix: a file of paths, one per line (blank lines
    /// and lines starting with # are skipped); each client walks the list
    /// from its own offset.
    #[arg(long, value_name = "FILE")]
    pub paths_file: Option<PathBuf>,

    /// The configurations to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "smart,direct,refork"
    )]
    pub configs: Vec<CompareConfig>,

    /// The refork configuration's `--refork-after` (default: a quarter of
    /// --requests).
    #[arg(long, value_delimiter = ',', value_name = "N[,N2,…]")]
    pub refork_after: Vec<u64>,

    /// Read the total PSS of the app's processes every K requests (all
    /// clients together) while warming (default: --workers × --requests
    /// / 20).
    #[arg(long, value_name = "K")]
    pub sample_every: Option<usize>,

    /// How the smart run's preloader prepares its heap.
    #[command(flatten)]
    pub preload: PreloadArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also write a chart (SVG): memory totals, spawn times, total PSS as
    /// requests are served, and each process's shared and private memory.
    #[arg(long)]
    pub svg: Option<PathBuf>,

    /// Extra options for every `rustrack start` run (e.g. "--environment production").
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
