//! The front end (`rustrack start`): the one process with a tokio runtime.
//!
//! Start-up order matters for clear failures: validate the app root, bind
//! the listeners (a busy port fails before any Ruby boots), load the app in
//! the preloader (a broken config.ru fails here, with Ruby's backtrace),
//! wait for the first worker, and only then announce "listening". Shutdown
//! runs the same steps backwards: stop accepting, let requests finish,
//! stop workers and the preloader, remove the instance directory.

mod admin;
mod body;
mod http;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::StartArgs;
use crate::config::{ruby_lib_dir, AppSpec, SpawnMethod};
use crate::instance::{self, Instance, InstanceInfo};
use crate::pool::machine::Limits;
use crate::pool::spawner::Spawner;
use crate::pool::{acceptor, reaper, Pool, Readiness};

pub fn run(args: StartArgs) -> Result<i32> {
    init_logging(&args.log_level);
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args, app_root, rackup))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

async fn serve(args: StartArgs, app_root: PathBuf, rackup: PathBuf) -> Result<i32> {
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

    let spec = AppSpec {
        app_name: AppSpec::app_name_of(&app_root),
        app_root: app_root.clone(),
        rackup,
        worker_socket: dir.worker_socket(),
        ruby_lib: ruby_lib_dir(),
        preload_gc: args.preload_gc,
    };
    let mut app_env: Vec<(String, String)> = ["RACK_ENV", "RAILS_ENV", "APP_ENV"]
        .iter()
        .map(|k| (k.to_string(), args.environment.clone()))
        .collect();
    app_env.extend(args.envvars.iter().cloned());
    let start_timeout = Duration::from_secs(args.start_timeout);
    let spawner = Spawner::new(args.spawn_method, spec, app_env, start_timeout)?;
    let pool = Pool::new(
        Limits {
            min_instances: args.min_instances,
            max_pool_size: args.max_pool_size,
            max_queue: args.max_request_queue_size,
        },
        spawner,
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
    let admin_task = tokio::spawn(admin::serve(admin_listener, pool.clone()));
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

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let which = tokio::select! {
        _ = sigint.recv() => "INT",
        _ = sigterm.recv() => "TERM",
        _ = sigquit.recv() => "QUIT",
    };
    tracing::info!("SIG{which}: stopping gracefully (a second Ctrl-C stops at once)");
    // A second INT during the graceful stop kills everything now.
    let hard_stop_pool = pool.clone();
    let hard_stop_dir = dir.dir.clone();
    tokio::spawn(async move {
        sigint.recv().await;
        tracing::warn!("second SIGINT: stopping at once");
        hard_stop_pool.kill_all();
        std::thread::sleep(Duration::from_millis(100));
        reaper::reap_all(&hard_stop_pool);
        let _ = std::fs::remove_dir_all(&hard_stop_dir);
        std::process::exit(130);
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
