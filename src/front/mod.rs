//! The front end (`rustrack start`): the one process with a tokio runtime.
//!
//! Start-up order matters for clear failures: validate the app root, bind
//! the listeners (a busy port fails before any Ruby boots), load the app in
//! the preloader (a broken config.ru fails here, with Ruby's backtrace),
//! wait for the first worker, and only then announce "listening". Then the
//! main loop waits for signals and admin commands. Shutdown runs the same
//! steps backwards: stop accepting, let requests finish, stop workers and
//! the preloader, remove the instance directory.

mod admin;
mod body;
mod daemon;
mod http;

/// Exposed for the fuzz targets (fuzz/) and tests/fuzz_corpus.rs.
pub use http::split_host;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::StartArgs;
use crate::config::{ruby_lib_dir, AppSpec, SpawnMethod};
use crate::instance::{self, Instance, InstanceInfo};
use crate::metrics::Metrics;
use crate::pool::exchange::ExchangeOptions;
use crate::pool::machine::Config;
use crate::pool::spawner::Spawner;
use crate::pool::{acceptor, reaper, Pool, PoolOptions, Readiness};
use admin::Control;

/// How often `APP_ROOT/tmp/restart.txt` is checked.
const RESTART_TXT_INTERVAL: Duration = Duration::from_secs(2);

pub fn run(args: StartArgs) -> Result<i32> {
    let app_root = args
        .app_root
        .canonicalize()
        .with_context(|| format!("app root {} does not exist", args.app_root.display()))?;
    let rackup = app_root.join("config.ru");
    if !rackup.is_file() {
        bail!(
            "no config.ru in {}: rustrack serves Rack apps",
            app_root.display()
        );
    }
    if args.max_pool_size == 0 {
        bail!("--max-pool-size must be at least 1");
    }
    if args.min_instances > args.max_pool_size {
        bail!(
            "--min-instances ({}) exceeds --max-pool-size ({})",
            args.min_instances,
            args.max_pool_size
        );
    }
    let credentials = match &args.user {
        Some(user) => Some(daemon::credentials(user, args.group.as_deref())?),
        None => None,
    };
    let log_file = match (&args.log_file, args.daemonize) {
        // Absolute: the preloader and workers reopen it from the app's directory.
        (Some(path), _) => Some(std::path::absolute(path).context("resolving --log-file")?),
        (None, true) => Some(daemon::default_log_file(&app_root)),
        (None, false) => None,
    };
    // Before any thread exists: fork(2) is only safe while single-threaded.
    let ready_pipe = if args.daemonize {
        Some(daemon::daemonize()?)
    } else {
        None
    };
    if let Some(path) = &log_file {
        crate::logfile::redirect_output(path)?;
    }
    init_logging(&args.log_level, log_file.is_some());
    raise_fd_limit();
    keep_freed_memory();
    // Measured on 2 cores (hello, wrk -c16, A/B/A/B): one thread served
    // about half the requests of two, because writing to a worker's socket
    // wakes the worker on the same CPU and preempts the only event loop.
    let threads = match args.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the tokio runtime")?;
    runtime.block_on(serve(
        args,
        app_root,
        rackup,
        credentials,
        log_file,
        ready_pipe,
    ))
}

/// Idle keep-alive and slow clients each hold a socket: allow as many as
/// the hard limit permits (the soft default, 1024, is easy to exhaust).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// Stops glibc from handing freed memory back to the kernel after every
/// burst. With two runtime threads the second thread's malloc arena shrank
/// and regrew about 800 times a second under hello load (madvise, then page
/// faults), and each shrink of a multi-threaded process's memory is a TLB
/// shootdown: an interrupt to the other CPU. Memory above the threshold is
/// still returned, and buffers up to the mmap threshold (request and
/// response bodies are buffered in memory up to 1 MiB by default) come from
/// the arenas instead of an mmap/munmap pair each. The front end only: the
/// preloader and workers are fresh execs with Ruby's usual malloc settings.
fn keep_freed_memory() {
    const TRIM_THRESHOLD: i32 = 64 << 20;
    const MMAP_THRESHOLD: i32 = 4 << 20;
    // SAFETY: mallopt only changes glibc malloc's tuning parameters; it is
    // called before the tokio runtime starts, so no other thread is
    // allocating, and the values are within glibc's accepted ranges (the
    // mmap threshold may be at most 32 MiB on 64-bit).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

fn init_logging(level: &str, to_file: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!to_file && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Removes the instance directory however `serve` ends.
struct InstanceGuard(Instance);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

fn pool_options(args: &StartArgs, spool_dir: PathBuf) -> PoolOptions {
    let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
    let mut machine = Config::new(
        args.min_instances,
        args.max_pool_size,
        args.max_request_queue_size,
    );
    machine.max_queue_time = secs(args.max_request_queue_time);
    machine.pool_idle_time = secs(args.pool_idle_time);
    machine.max_preloader_idle_time = if args.spawn_method == SpawnMethod::Smart {
        secs(args.max_preloader_idle_time)
    } else {
        None
    };
    machine.max_requests = (args.max_requests > 0).then_some(args.max_requests);
    machine.max_requests_jitter = args.max_requests_jitter;
    machine.memory_limit = (args.memory_limit > 0).then_some(args.memory_limit << 20);
    PoolOptions {
        machine,
        exchange: ExchangeOptions {
            timeout: secs(args.worker_timeout),
            response_buffer: args.response_buffer_size,
            spool_dir,
        },
        sample_interval: Duration::from_secs_f64(args.sample_interval.max(0.1)),
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn serve(
    args: StartArgs,
    app_root: PathBuf,
    rackup: PathBuf,
    credentials: Option<(u32, u32)>,
    log_file: Option<PathBuf>,
    ready_pipe: Option<std::os::fd::OwnedFd>,
) -> Result<i32> {
    reaper::become_subreaper();
    let registry = instance::registry_dir(args.instance_registry_dir.as_deref());
    let instance = InstanceGuard(Instance::create(&registry)?);
    let dir = &instance.0;

    let tcp = if args.no_tcp {
        None
    } else {
        let addr = format!("{}:{}", args.address, args.port);
        Some(
            TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        )
    };
    let unix = match &args.socket {
        Some(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                std::fs::remove_file(path).ok();
            }
            Some(
                UnixListener::bind(path)
                    .with_context(|| format!("listening on {}", path.display()))?,
            )
        }
        None => None,
    };
    let worker_listener =
        UnixListener::bind(dir.worker_socket()).context("binding the worker socket")?;
    let admin_listener = admin::bind(&dir.admin_socket())?;
    if let Some((uid, gid)) = credentials {
        daemon::grant(&[&dir.dir, &dir.worker_socket(), &dir.body_dir()], uid, gid)?;
    }

    let spec = AppSpec {
        app_name: AppSpec::app_name_of(&app_root),
        app_root: app_root.clone(),
        rackup,
        worker_socket: dir.worker_socket(),
        ruby_lib: ruby_lib_dir(),
        preload_gc: args.preload.preload_gc,
        preload_hugepages: args.preload.preload_hugepages,
        log_file: log_file.clone(),
        strict_fork: args.strict_fork,
        passenger_compat: args.passenger_compat,
    };
    let mut app_env: Vec<(String, String)> = ["RACK_ENV", "RAILS_ENV", "APP_ENV"]
        .iter()
        .map(|k| (k.to_string(), args.environment.clone()))
        .collect();
    app_env.extend(args.envvars.iter().cloned());
    let start_timeout = Duration::from_secs(args.start_timeout);
    let spawner = Spawner::new(args.spawn_method, spec, app_env, start_timeout)?
        .with_credentials(credentials);
    let metrics_listener = match &args.metrics_address {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?,
        ),
        None => None,
    };
    let pool = Pool::new(
        pool_options(&args, dir.body_dir()),
        spawner,
        Arc::new(Metrics::new()),
    );
    tokio::spawn(reaper::run(pool.clone()));
    tokio::spawn(acceptor::run(worker_listener, pool.clone()));

    if args.spawn_method == SpawnMethod::Smart {
        if let Err(e) = pool.spawner.start_preloader(&pool).await {
            eprintln!("rustrack: error: {e:#}");
            pool.wait_children(Duration::from_secs(2)).await;
            return Ok(1);
        }
    }
    pool.start();
    match tokio::time::timeout(start_timeout + Duration::from_secs(1), pool.wait_ready()).await {
        Ok(Readiness::Ready) => {}
        Ok(Readiness::Failed(msg)) => {
            eprintln!("rustrack: error: the app could not start a worker: {msg}");
            pool.shutdown(Duration::ZERO).await;
            return Ok(1);
        }
        Ok(Readiness::Starting) | Err(_) => {
            eprintln!(
                "rustrack: error: no worker started within {start_timeout:?} (--start-timeout)"
            );
            pool.kill_all();
            pool.wait_children(Duration::from_secs(2)).await;
            return Ok(1);
        }
    }

    let front = Arc::new(http::Front {
        pool: pool.clone(),
        max_body_size: args.max_body_size,
        body_buffer_size: args.body_buffer_size,
        body_dir: dir.body_dir(),
        trust_proxy: args.trust_proxy,
        header_timeout: Duration::from_secs(args.header_timeout),
        body_owner: credentials,
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accept_tasks = Vec::new();
    let url = match tcp {
        Some(listener) => {
            let local = listener.local_addr()?;
            accept_tasks.push(tokio::spawn(http::accept_tcp(
                listener,
                front.clone(),
                graceful.clone(),
            )));
            Some(format!("http://{local}"))
        }
        None => None,
    };
    if let Some(listener) = unix {
        accept_tasks.push(tokio::spawn(http::accept_unix(
            listener,
            front.clone(),
            graceful.clone(),
        )));
    }
    if let Some(listener) = metrics_listener {
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(http::serve_metrics(listener, pool.clone()));
    }
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let admin_task = tokio::spawn(admin::serve(admin_listener, pool.clone(), control_tx));
    dir.write_info(&InstanceInfo {
        pid: std::process::id(),
        app_root: app_root.clone(),
        spawn_method: args.spawn_method.as_str().to_string(),
        url: url.clone(),
        socket: args.socket.clone(),
        started_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })?;
    let _pid_file = match &args.pid_file {
        Some(path) => Some(daemon::PidFile::write(path)?),
        None => None,
    };
    tracing::info!(
        instance = %dir.dir.display(),
        "rustrack {} serving {} ({} spawning)",
        env!("CARGO_PKG_VERSION"),
        app_root.display(),
        args.spawn_method.as_str()
    );
    if let Some(url) = &url {
        tracing::info!("listening on {url}");
    }
    if let Some(path) = &args.socket {
        tracing::info!("listening on unix:{}", path.display());
    }
    if let Some(pipe) = ready_pipe {
        daemon::report_ready(pipe);
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut sigttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut sigttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    let restart_txt = app_root.join("tmp").join("restart.txt");
    let mut restart_mtime = mtime(&restart_txt);
    let mut restart_check = tokio::time::interval(RESTART_TXT_INTERVAL);
    let graceful_stop = loop {
        tokio::select! {
            _ = sigint.recv() => {
                tracing::info!("SIGINT: stopping gracefully (a second Ctrl-C stops at once)");
                break true;
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping gracefully"); break true; }
            _ = sigquit.recv() => { tracing::info!("SIGQUIT: stopping gracefully"); break true; }
            Some(Control::Stop { graceful }) = control_rx.recv() => {
                tracing::info!("stop requested over the admin socket{}", if graceful { " (graceful)" } else { "" });
                break graceful;
            }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: rolling restart");
                spawn_restart(&pool);
            }
            _ = sigttin.recv() => {
                let n = pool.scale(1);
                tracing::info!("SIGTTIN: desired process count {n}");
            }
            _ = sigttou.recv() => {
                let n = pool.scale(-1);
                tracing::info!("SIGTTOU: desired process count {n}");
            }
            _ = sigusr1.recv() => {
                match &log_file {
                    Some(path) => match crate::logfile::redirect_output(path) {
                        Ok(()) => tracing::info!("SIGUSR1: reopened {}", path.display()),
                        Err(e) => tracing::error!("SIGUSR1: {e:#}"),
                    },
                    None => tracing::info!("SIGUSR1: no --log-file to reopen"),
                }
                // The preloader and workers reopen theirs (the same file,
                // and the app's own append-mode logs).
                pool.signal_all(libc::SIGUSR1);
            }
            _ = restart_check.tick() => {
                let now = mtime(&restart_txt);
                if now.is_some() && now != restart_mtime {
                    tracing::info!("{} changed: rolling restart", restart_txt.display());
                    spawn_restart(&pool);
                }
                restart_mtime = now;
            }
        }
    };
    if !graceful_stop {
        stop_now(&pool, &dir.dir, 0);
    }
    // A second INT during the graceful stop kills everything now.
    let hard_stop_pool = pool.clone();
    let hard_stop_dir = dir.dir.clone();
    tokio::spawn(async move {
        sigint.recv().await;
        tracing::warn!("second SIGINT: stopping at once");
        stop_now(&hard_stop_pool, &hard_stop_dir, 130);
    });

    for task in &accept_tasks {
        task.abort();
    }
    for task in accept_tasks {
        let _ = task.await;
    }
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let started = tokio::time::Instant::now();
    // Every accept loop has ended, so this is the last reference.
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "client connections still open after {shutdown_timeout:?}; closing them"
            );
        }
    }
    let left = shutdown_timeout.saturating_sub(started.elapsed());
    pool.shutdown(left).await;
    admin_task.abort();
    tracing::info!("stopped");
    Ok(0)
}

fn spawn_restart(pool: &Arc<Pool>) {
    let pool = pool.clone();
    tokio::spawn(async move {
        // Failures are logged and kept for `status` by the pool.
        let _ = pool.restart().await;
    });
}

/// Kills every process of the instance and exits.
fn stop_now(pool: &Arc<Pool>, dir: &Path, code: i32) -> ! {
    pool.kill_all();
    std::thread::sleep(Duration::from_millis(100));
    reaper::reap_all(pool);
    let _ = std::fs::remove_dir_all(dir);
    std::process::exit(code);
}
