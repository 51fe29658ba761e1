//! A serving instance, start to stop, as a sequence of steps: create the
//! instance directory, bind every listener, start the pool and wait for
//! its first worker, open the doors (accept loops, metrics, admin socket,
//! `instance.json`, pid file), run the control loop until told to stop,
//! then stop: gracefully (stop accepting, let requests finish, stop the
//! processes) or at once.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::control::{self, Stop};
use super::http::Front;
use super::{admin, daemon, listeners, metrics_http};
use crate::cli::StartArgs;
use crate::config::{ruby_lib_dir, AppSpec, SpawnMethod};
use crate::instance::{self, Instance, InstanceInfo};
use crate::metrics::Metrics;
use crate::pool::machine::Config;
use crate::pool::spawner::Launcher;
use crate::pool::{reaper, Pool, PoolOptions, PoolSetup, Readiness};
use crate::upstream::ExchangeOptions;

/// What `run` worked out before the runtime started.
pub struct Setup {
    pub args: StartArgs,
    pub app_root: PathBuf,
    pub rackup: PathBuf,
    pub credentials: Option<(u32, u32)>,
    pub log_file: Option<PathBuf>,
    pub ready_pipe: Option<OwnedFd>,
}

/// Removes the instance directory however `serve` ends.
struct InstanceGuard(Instance);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// Every socket the instance listens on, bound before any Ruby boots so
/// that a busy port fails at once.
struct Listeners {
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    workers: UnixListener,
    admin: UnixListener,
    metrics: Option<TcpListener>,
}

impl Listeners {
    async fn bind(args: &StartArgs, dir: &Instance) -> Result<Listeners> {
        let tcp = match args.no_tcp {
            true => None,
            false => Some(listeners::bind_tcp(&args.address, args.port).await?),
        };
        let unix = match &args.socket {
            Some(path) => Some(listeners::bind_unix(path)?),
            None => None,
        };
        let metrics = match &args.metrics_address {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for metrics on {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners {
            tcp,
            unix,
            workers: UnixListener::bind(dir.worker_socket())
                .context("binding the worker socket")?,
            admin: admin::bind(&dir.admin_socket())?,
            metrics,
        })
    }
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

fn pool_options(args: &StartArgs) -> PoolOptions {
    let mut machine = Config::new(
        args.min_instances,
        args.max_pool_size,
        args.max_request_queue_size,
    );
    machine.max_queue_time = secs(args.max_request_queue_time);
    machine.pool_idle_time = secs(args.pool_idle_time);
    machine.max_preloader_idle_time = match args.spawn_method {
        SpawnMethod::Smart => secs(args.max_preloader_idle_time),
        SpawnMethod::Direct => None,
    };
    machine.max_requests = (args.max_requests > 0).then_some(args.max_requests);
    machine.max_requests_jitter = args.max_requests_jitter;
    machine.memory_limit = (args.memory_limit > 0).then_some(args.memory_limit << 20);
    machine.start_timeout = secs(args.start_timeout);
    PoolOptions {
        machine,
        sample_interval: Duration::from_secs_f64(args.sample_interval.max(0.1)),
    }
}

fn exchange_options(args: &StartArgs, dir: &Instance) -> ExchangeOptions {
    let mb = |n: u64| (n > 0).then_some(n << 20);
    ExchangeOptions {
        timeout: secs(args.worker_timeout),
        response_buffer: args.response_buffer_size,
        spool_dir: dir.body_dir(),
        memory_limit: mb(args.memory_limit),
        memory_limit_hard: mb(args.memory_limit_hard),
    }
}

fn launcher(setup: &Setup, dir: &Instance) -> Result<Launcher> {
    let args = &setup.args;
    let spec = AppSpec {
        app_name: AppSpec::app_name_of(&setup.app_root),
        app_root: setup.app_root.clone(),
        rackup: setup.rackup.clone(),
        worker_socket: dir.worker_socket(),
        ruby_lib: ruby_lib_dir(),
        preload_gc: args.preload.preload_gc,
        preload_hugepages: args.preload.preload_hugepages,
        log_file: setup.log_file.clone(),
        strict_fork: args.strict_fork,
        passenger_compat: args.passenger_compat,
        credentials: setup.credentials,
        warmup: args.preload.warmup(),
    };
    let mut app_env: Vec<(String, String)> = ["RACK_ENV", "RAILS_ENV", "APP_ENV"]
        .iter()
        .map(|k| (k.to_string(), args.environment.clone()))
        .collect();
    app_env.extend(args.envvars.iter().cloned());
    Ok(Launcher {
        method: args.spawn_method,
        spec,
        exe: std::env::current_exe().context("locating the rustrack executable")?,
        app_env,
        start_timeout: Duration::from_secs(args.start_timeout),
    })
}

pub async fn serve(setup: Setup) -> Result<i32> {
    let args = &setup.args;
    reaper::become_subreaper();
    let registry = instance::registry_dir(args.instance_registry_dir.as_deref());
    let instance = InstanceGuard(Instance::create(&registry)?);
    let dir = &instance.0;
    let listeners = Listeners::bind(args, dir).await?;
    if let Some((uid, gid)) = setup.credentials {
        daemon::grant(&[&dir.dir, &dir.worker_socket(), &dir.body_dir()], uid, gid)?;
    }

    let pool = Pool::start(
        PoolSetup {
            options: pool_options(args),
            launcher: launcher(&setup, dir)?,
            metrics: Arc::new(Metrics::new()),
        },
        listeners.workers,
    );
    if let Err(code) = first_worker(&pool, Duration::from_secs(args.start_timeout)).await {
        return Ok(code);
    }

    let front = Arc::new(Front {
        pool: pool.clone(),
        exchange: Arc::new(exchange_options(args, dir)),
        max_body_size: args.max_body_size,
        body_buffer_size: args.body_buffer_size,
        body_dir: dir.body_dir(),
        trust_proxy: args.trust_proxy,
        header_timeout: Duration::from_secs(args.header_timeout),
        body_owner: setup.credentials,
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accepting: Vec<JoinHandle<()>> = Vec::new();
    let url = match listeners.tcp {
        Some(listener) => {
            let local = listener.local_addr()?;
            let task = listeners::accept_tcp(listener, front.clone(), graceful.clone());
            accepting.push(tokio::spawn(task));
            Some(format!("http://{local}"))
        }
        None => None,
    };
    if let Some(listener) = listeners.unix {
        let task = listeners::accept_unix(listener, front.clone(), graceful.clone());
        accepting.push(tokio::spawn(task));
    }
    if let Some(listener) = listeners.metrics {
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics_http::serve(listener, pool.clone()));
    }
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let admin_task = tokio::spawn(admin::serve(listeners.admin, pool.clone(), control_tx));
    dir.write_info(&InstanceInfo {
        pid: std::process::id(),
        app_root: setup.app_root.clone(),
        spawn_method: args.spawn_method.as_str().to_string(),
        url: url.clone(),
        socket: args.socket.clone(),
        started_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })?;
    let pid_file = match &args.pid_file {
        Some(path) => Some(daemon::PidFile::write(path)?),
        None => None,
    };
    announce(&setup, dir, url.as_deref());
    if let Some(pipe) = setup.ready_pipe {
        daemon::report_ready(pipe);
    }

    let leftovers = Leftovers {
        dir: dir.dir.clone(),
        socket: args.socket.clone(),
        pid_file: args.pid_file.clone(),
    };
    let stop = control::run(
        &pool,
        &setup.app_root,
        setup.log_file.as_deref(),
        control_rx,
    )
    .await?;
    if let Stop::Now = stop {
        stop_now(&pool, &leftovers, 0);
    }
    // A second INT during the graceful stop kills everything now.
    let hard_stop_pool = pool.clone();
    tokio::spawn(async move {
        control::second_interrupt().await;
        tracing::warn!("second SIGINT: stopping at once");
        stop_now(&hard_stop_pool, &leftovers, 130);
    });

    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let started = tokio::time::Instant::now();
    stop_accepting(accepting, args.socket.as_deref()).await;
    finish_connections(graceful, shutdown_timeout).await;
    let left = shutdown_timeout.saturating_sub(started.elapsed());
    pool.shutdown(left).await;
    admin_task.abort();
    drop(pid_file);
    tracing::info!("stopped");
    Ok(0)
}

/// Waits for the pool's first worker; on failure, stops what started and
/// returns the exit code.
async fn first_worker(pool: &Arc<Pool>, start_timeout: Duration) -> Result<(), i32> {
    match tokio::time::timeout(start_timeout + Duration::from_secs(1), pool.wait_ready()).await {
        Ok(Readiness::Ready) => Ok(()),
        Ok(Readiness::Failed(msg)) => {
            eprintln!("rustrack: error: the app could not start a worker: {msg}");
            pool.shutdown(Duration::ZERO).await;
            Err(1)
        }
        Ok(Readiness::Starting) | Err(_) => {
            eprintln!(
                "rustrack: error: no worker started within {start_timeout:?} (--start-timeout)"
            );
            pool.kill_all();
            pool.wait_for_processes(Duration::from_secs(2)).await;
            Err(1)
        }
    }
}

fn announce(setup: &Setup, dir: &Instance, url: Option<&str>) {
    tracing::info!(
        instance = %dir.dir.display(),
        "rustrack {} serving {} ({} spawning)",
        env!("CARGO_PKG_VERSION"),
        setup.app_root.display(),
        setup.args.spawn_method.as_str()
    );
    if let Some(url) = url {
        tracing::info!("listening on {url}");
    }
    if let Some(path) = &setup.args.socket {
        tracing::info!("listening on unix:{}", path.display());
    }
}

async fn stop_accepting(accepting: Vec<JoinHandle<()>>, socket: Option<&Path>) {
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
}

/// Lets open client connections finish their current request (keep-alive
/// connections are closed after it) for up to `timeout`.
async fn finish_connections(graceful: Arc<GracefulShutdown>, timeout: Duration) {
    // Every accept loop has ended, so this is the last reference.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return;
    };
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("client connections still open after {timeout:?}; closing them");
    }
}

/// Files a stop must remove even when it skips every destructor.
struct Leftovers {
    dir: PathBuf,
    socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
}

/// Kills every process of the instance, removes its files and exits.
fn stop_now(pool: &Arc<Pool>, leftovers: &Leftovers, code: i32) -> ! {
    pool.kill_all();
    std::thread::sleep(Duration::from_millis(100));
    pool.reap_now();
    let _ = std::fs::remove_dir_all(&leftovers.dir);
    for path in [&leftovers.socket, &leftovers.pid_file]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(code);
}
