//! A serving instance, start to stop, as a sequence of steps: create the
//! instance directory, bind every listener (or adopt systemd's), start the
//! pool and wait for its first worker, open the doors (accept loops,
//! metrics, admin socket, `instance.json`, pid file), tell systemd we are
//! ready, run the control loop until told to stop, then stop: gracefully
//! (stop accepting, let requests finish, stop the processes) or at once.

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
use super::event_loops::EventLoops;
use super::http::{Front, Site};
use super::sendfile::Sendfile;
use super::static_files::StaticFiles;
use super::systemd::FromSystemd;
use super::tls::Tls;
use super::{admin, daemon, listeners, metrics_http};
use crate::apps::routes::Routes;
use crate::apps::{AppPlan, Apps, Group};
use crate::cli::StartArgs;
use crate::config::{ruby_lib_dir, AppSpec, SpawnMethod};
use crate::instance::{self, Instance, InstanceInfo};
use crate::metrics::Metrics;
use crate::pool::capacity::Capacity;
use crate::pool::machine::Config;
use crate::pool::processes::Processes;
use crate::pool::spawner::Launcher;
use crate::pool::{reaper, Pool, PoolOptions, PoolSetup, Readiness};
use crate::upstream::{ExchangeOptions, TrustedProxies};

/// What `run` worked out before the runtime started.
pub struct Setup {
    pub args: StartArgs,
    /// The instance's APP_ROOT, canonical.
    pub app_root: PathBuf,
    /// The apps served: APP_ROOT alone, or the `--app` list.
    pub apps: Vec<AppPlan>,
    /// Each app's `--user`, resolved (index-aligned with `apps`).
    pub credentials: Vec<Option<(u32, u32)>>,
    pub log_file: Option<PathBuf>,
    pub ready_pipe: Option<OwnedFd>,
    pub trusted: TrustedProxies,
    /// With `--ssl`: the certificate, loaded and checked.
    pub tls: Option<Arc<Tls>>,
    pub systemd: FromSystemd,
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
    tcp: Vec<TcpListener>,
    /// HTTPS: `--port` itself with `--ssl` alone, or `--ssl-port`.
    tls: Option<TcpListener>,
    unix: Vec<UnixListener>,
    /// The `--socket` file this instance created and removes at exit (an
    /// inherited socket's file is systemd's).
    socket_path: Option<PathBuf>,
    /// One per app.
    workers: Vec<UnixListener>,
    admin: UnixListener,
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// Sockets systemd passed (`inherited`) that serve HTTP replace
    /// `--address`/`--port`/`--socket`; one named `metrics` replaces
    /// `--metrics-address`.
    async fn bind(
        args: &StartArgs,
        dir: &Instance,
        apps: usize,
        inherited: Vec<(OwnedFd, String)>,
    ) -> Result<Listeners> {
        let adopted = listeners::adopt(inherited)?;
        let (tcp, unix, socket_path) = if adopted.tcp.is_empty() && adopted.unix.is_empty() {
            // With SO_REUSEPORT the kernel would hand this instance its share
            // of new connections at once: bind only once a worker is ready
            // (`bind_shared`), or a booting instance would hold them.
            let tcp = match args.no_tcp || args.reuse_port {
                true => Vec::new(),
                false => vec![listeners::bind_tcp(&args.address, args.port).await?],
            };
            let unix = match &args.socket {
                Some(path) => vec![listeners::bind_unix(path)?],
                None => Vec::new(),
            };
            (tcp, unix, args.socket.clone())
        } else {
            tracing::info!(
                "socket activation: serving HTTP on {} inherited socket(s); \
                 --address, --port and --socket are not bound",
                adopted.tcp.len() + adopted.unix.len()
            );
            (adopted.tcp, adopted.unix, None)
        };
        let ssl_port = match args.reuse_port {
            true => None,
            false => args.ssl_port,
        };
        let (tcp, tls) = split_tls(args, tcp, ssl_port).await?;
        let metrics = match (adopted.metrics, &args.metrics_address) {
            (Some(listener), _) => Some(listener),
            (None, Some(addr)) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for metrics on {addr}"))?,
            ),
            (None, None) => None,
        };
        Ok(Listeners {
            tcp,
            tls,
            unix,
            socket_path,
            workers: (0..apps)
                .map(|i| UnixListener::bind(dir.worker_socket(i)))
                .collect::<std::io::Result<_>>()
                .context("binding the worker socket")?,
            admin: admin::bind(&dir.admin_socket())?,
            metrics,
        })
    }
}

/// With `--reuse-port`: binds the TCP listeners now that the instance can
/// serve.
async fn bind_shared(
    args: &StartArgs,
    tcp: &mut Vec<TcpListener>,
    tls: &mut Option<TcpListener>,
) -> Result<()> {
    if !args.reuse_port || !tcp.is_empty() || tls.is_some() {
        return Ok(());
    }
    let main = match args.no_tcp {
        true => Vec::new(),
        false => vec![listeners::bind_tcp_shared(&args.address, args.port).await?],
    };
    (*tcp, *tls) = split_tls(args, main, args.ssl_port).await?;
    Ok(())
}

/// Passenger's rule: --ssl alone makes the main port speak TLS; with
/// --ssl-port, HTTPS listens there beside plain HTTP.
async fn split_tls(
    args: &StartArgs,
    mut tcp: Vec<TcpListener>,
    ssl_port: Option<u16>,
) -> Result<(Vec<TcpListener>, Option<TcpListener>)> {
    Ok(match (args.ssl, ssl_port) {
        (false, _) => (tcp, None),
        (true, None) => {
            let main = (!tcp.is_empty()).then(|| tcp.remove(0));
            (tcp, main)
        }
        (true, Some(port)) => {
            let tls = match args.reuse_port {
                true => listeners::bind_tcp_shared(&args.address, port).await?,
                false => listeners::bind_tcp(&args.address, port).await?,
            };
            (tcp, Some(tls))
        }
    })
}

fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

fn pool_options(args: &StartArgs, app: &AppPlan) -> PoolOptions {
    let mut machine = Config::new(
        app.min_instances,
        app.max_instances,
        args.max_request_queue_size,
    );
    machine.max_queue_time = secs(args.max_request_queue_time);
    machine.pool_idle_time = secs(args.pool_idle_time);
    machine.max_preloader_idle_time = match app.spawn_method {
        SpawnMethod::Smart => secs(args.max_preloader_idle_time),
        SpawnMethod::Direct => None,
    };
    machine.max_requests = (args.max_requests > 0).then_some(args.max_requests);
    machine.max_requests_jitter = args.max_requests_jitter;
    machine.memory_limit = (app.memory_limit > 0).then_some(app.memory_limit << 20);
    machine.start_timeout = secs(args.start_timeout);
    machine.refork_after = args.refork_after.clone();
    machine.threads = args.threads_per_worker;
    PoolOptions {
        machine,
        sample_interval: Duration::from_secs_f64(args.sample_interval.max(0.1)),
        stop_grace: Duration::from_secs(args.shutdown_timeout),
    }
}

pub fn trusted_proxies(args: &StartArgs) -> Result<TrustedProxies> {
    if args.trust_proxy {
        tracing::warn!(
            "--trust-proxy trusts every peer's X-Forwarded-* headers; \
             name your proxies with --trusted-proxy CIDR instead"
        );
        return Ok(TrustedProxies::everyone());
    }
    TrustedProxies::parse(&args.trusted_proxies).map_err(|e| anyhow::anyhow!(e))
}

fn exchange_options(args: &StartArgs, app: &AppPlan, dir: &Instance) -> ExchangeOptions {
    let mb = |n: u64| (n > 0).then_some(n << 20);
    ExchangeOptions {
        timeout: secs(args.worker_timeout),
        response_buffer: args.response_buffer_size,
        spool_dir: dir.body_dir(),
        memory_limit: mb(app.memory_limit),
        memory_limit_hard: mb(args.memory_limit_hard),
        interrupt_grace: (args.threads_per_worker > 1)
            .then_some(crate::upstream::exchange::INTERRUPT_GRACE),
    }
}

fn launcher(setup: &Setup, i: usize, dir: &Instance) -> Result<Launcher> {
    let args = &setup.args;
    let app = &setup.apps[i];
    let spec = AppSpec {
        app_name: app.name.clone(),
        app_root: app.root.clone(),
        rackup: app.rackup.clone(),
        worker_socket: dir.worker_socket(i),
        ruby_lib: ruby_lib_dir(),
        preload_gc: args.preload.preload_gc,
        preload_hugepages: args.preload.preload_hugepages,
        log_file: setup.log_file.clone(),
        strict_fork: args.strict_fork,
        passenger_compat: args.passenger_compat,
        credentials: setup.credentials[i],
        warmup: app.warmup.clone(),
        threads_per_worker: args.threads_per_worker,
        worker_timeout: args.worker_timeout,
    };
    Ok(Launcher {
        method: app.spawn_method,
        spec,
        exe: std::env::current_exe().context("locating the rustrack executable")?,
        app_env: app.app_env(),
        start_timeout: Duration::from_secs(args.start_timeout),
    })
}

pub async fn serve(mut setup: Setup, loops: &EventLoops) -> Result<i32> {
    let inherited = std::mem::take(&mut setup.systemd.sockets);
    let notifier = setup.systemd.notifier.clone();
    let args = &setup.args;
    let several = setup.apps.len() > 1;
    let routes = Routes::new(setup.apps.iter().map(|a| a.route.clone()).collect())
        .map_err(anyhow::Error::msg)?;
    // Before anything starts: a --sendfile-root that does not exist stops here.
    let mut sendfiles = Vec::new();
    for app in &setup.apps {
        sendfiles.push(Sendfile::new(&app.root, &args.sendfile_roots)?);
    }
    reaper::become_subreaper();
    let registry = instance::registry_dir(args.instance_registry_dir.as_deref());
    let instance = InstanceGuard(Instance::create(&registry)?);
    let dir = &instance.0;
    let mut listeners = Listeners::bind(args, dir, setup.apps.len(), inherited).await?;
    grant_access(dir, &setup.credentials)?;

    let apps = start_apps(&setup, dir, std::mem::take(&mut listeners.workers))?;
    notifier.starting();
    if let Some(period) = setup.systemd.watchdog {
        notifier.spawn_watchdog(&apps, period);
    }
    if !several {
        let pool = &apps.groups()[0].pool;
        if let Err(code) = first_worker(pool, Duration::from_secs(args.start_timeout)).await {
            return Ok(code);
        }
    }
    if let Err(e) = bind_shared(args, &mut listeners.tcp, &mut listeners.tls).await {
        apps.shutdown(Duration::ZERO).await;
        return Err(e);
    }

    let sites = apps
        .groups()
        .iter()
        .zip(sendfiles)
        .enumerate()
        .map(|(i, (g, sendfile))| Site {
            pool: g.pool.clone(),
            exchange: Arc::new(exchange_options(args, &g.plan, dir)),
            static_files: match args.static_files {
                true => StaticFiles::new(&g.plan.root),
                false => None,
            },
            sendfile,
            body_owner: setup.credentials[i],
        })
        .collect();
    let front = Arc::new(Front {
        apps: apps.clone(),
        sites,
        routes,
        unrouted: several.then(|| apps.groups()[0].pool.metrics.registry().app(Some("-"))),
        max_body_size: args.max_body_size,
        body_buffer_size: args.body_buffer_size,
        body_dir: dir.body_dir(),
        trusted: setup.trusted.clone(),
        request_ids: super::http::RequestIds::new(),
        health_path: args.health_check_path.clone(),
        draining: std::sync::atomic::AtomicBool::new(false),
        closing: Default::default(),
        header_timeout: Duration::from_secs(args.header_timeout),
        proxy_protocol: args.proxy_protocol,
    });
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accepting: Vec<JoinHandle<()>> = Vec::new();
    let mut urls = Vec::new();
    // The TCP ports this instance listens on, for a `--reuse-port` stop to
    // tell whether a successor shares them (`successor.rs`).
    let mut ports = Vec::new();
    // Every listener is served by every event loop.
    for listener in listeners.tcp {
        ports.push(listener.local_addr()?.port());
        urls.push(format!("http://{}", listener.local_addr()?));
        accepting.extend(loops.spread(
            listener.into_std()?,
            |l| l.try_clone(),
            |l| {
                let listener = TcpListener::from_std(l)?;
                Ok(listeners::accept_tcp(
                    listener,
                    front.clone(),
                    graceful.clone(),
                ))
            },
        )?);
    }
    if let (Some(listener), Some(tls)) = (listeners.tls, &setup.tls) {
        ports.push(listener.local_addr()?.port());
        urls.push(format!("https://{}", listener.local_addr()?));
        accepting.extend(loops.spread(
            listener.into_std()?,
            |l| l.try_clone(),
            |l| {
                let listener = TcpListener::from_std(l)?;
                Ok(listeners::accept_tls(
                    listener,
                    front.clone(),
                    tls.clone(),
                    graceful.clone(),
                ))
            },
        )?);
    }
    let mut unix_paths = Vec::new();
    for listener in listeners.unix {
        let addr = listener.local_addr()?;
        unix_paths.extend(addr.as_pathname().map(Path::to_path_buf));
        accepting.extend(loops.spread(
            listener.into_std()?,
            |l| l.try_clone(),
            |l| {
                let listener = UnixListener::from_std(l)?;
                Ok(listeners::accept_unix(
                    listener,
                    front.clone(),
                    graceful.clone(),
                ))
            },
        )?);
    }
    let url = urls.first().cloned();
    if let Some(listener) = listeners.metrics {
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics_http::serve(listener, apps.clone()));
    }
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        apps.clone(),
        setup.tls.clone(),
        control_tx,
        notifier.clone(),
    ));
    dir.write_info(&InstanceInfo {
        pid: std::process::id(),
        app_root: setup.app_root.clone(),
        spawn_method: apps.status().spawn_method,
        url: url.clone(),
        socket: unix_paths.first().cloned(),
        started_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        apps: match several {
            true => apps.groups().iter().map(|g| g.plan.root.clone()).collect(),
            false => Vec::new(),
        },
    })?;
    let pid_file = match &args.pid_file {
        Some(path) => Some(daemon::PidFile::write(path)?),
        None => None,
    };
    announce(&setup, dir, &urls, &unix_paths);
    if let Some(pipe) = setup.ready_pipe {
        daemon::report_ready(pipe);
    }
    notifier.ready(&apps);
    notifier.spawn_status(&apps);

    let leftovers = Leftovers {
        dir: dir.dir.clone(),
        socket: listeners.socket_path.clone(),
        pid_file: args.pid_file.clone(),
    };
    let stop = control::run(
        &apps,
        setup.log_file.as_deref(),
        setup.tls.as_deref(),
        control_rx,
        &notifier,
    )
    .await?;
    notifier.stopping();
    if let Stop::Now = stop {
        stop_now(&apps, &leftovers, 0);
    }
    // A second INT during the graceful stop kills everything now.
    let hard_stop_apps = apps.clone();
    tokio::spawn(async move {
        control::second_interrupt().await;
        tracing::warn!("second SIGINT: stopping at once");
        stop_now(&hard_stop_apps, &leftovers, 130);
    });

    match args.reuse_port && super::successor::ports_shared(&ports) {
        // An upgrade in place: the port stays served, so a balancer must
        // not see it fail.
        true => tracing::info!(
            "another process listens on port(s) {ports:?} (--reuse-port): it takes over, so \
             the health check stays 200 and the listener closes now, without --shutdown-delay"
        ),
        false => drain(&front, Duration::from_secs(args.shutdown_delay)).await,
    }
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let started = tokio::time::Instant::now();
    stop_accepting(accepting, listeners.socket_path.as_deref()).await;
    // HTTP/1.1 connections finish their request; HTTP/2 ones send GOAWAY.
    front.closing.begin();
    finish_connections(graceful, shutdown_timeout).await;
    let left = shutdown_timeout.saturating_sub(started.elapsed());
    apps.shutdown(left).await;
    admin_task.abort();
    drop(pid_file);
    tracing::info!("stopped");
    Ok(0)
}

/// Starts a pool per app: one process table and reaper for all, and with
/// several apps one process limit they share.
fn start_apps(setup: &Setup, dir: &Instance, workers: Vec<UnixListener>) -> Result<Arc<Apps>> {
    let args = &setup.args;
    let several = setup.apps.len() > 1;
    let metrics = Arc::new(Metrics::new(several));
    let table = Processes::new();
    tokio::spawn(reaper::run(table.clone()));
    let capacity = several.then(|| Capacity::new(args.max_pool_size));
    let mut groups = Vec::new();
    for (i, (plan, listener)) in setup.apps.iter().zip(workers).enumerate() {
        let pool = Pool::start(
            PoolSetup {
                options: pool_options(args, plan),
                launcher: launcher(setup, i, dir)?,
                metrics: metrics.app(several.then_some(plan.name.as_str())),
                processes: table.group(i as u32),
                share: capacity.as_ref().map(|c| c.join()),
            },
            listener,
        );
        groups.push(Group {
            plan: plan.clone(),
            pool,
        });
    }
    if let Some(capacity) = &capacity {
        capacity.start_arbiter();
    }
    Ok(Arc::new(Apps::new(
        groups,
        capacity,
        metrics,
        setup.app_root.clone(),
    )))
}

/// Lets each app's unprivileged workers (`--user`) reach their own worker
/// socket and the spilled bodies handed to them (each file owned by the
/// app's user); the directories are traversable, not listable, and the
/// admin socket stays the front end's, mode 0600.
fn grant_access(dir: &Instance, credentials: &[Option<(u32, u32)>]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if credentials.iter().all(Option::is_none) {
        return Ok(());
    }
    for path in [&dir.dir, &dir.body_dir()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    for (i, creds) in credentials.iter().enumerate() {
        if let Some((uid, gid)) = creds {
            daemon::grant(&[&dir.worker_socket(i)], *uid, *gid)?;
        }
    }
    Ok(())
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

fn announce(setup: &Setup, dir: &Instance, urls: &[String], unix_paths: &[PathBuf]) {
    if let [app] = setup.apps.as_slice() {
        tracing::info!(
            instance = %dir.dir.display(),
            "rustrack {} serving {} ({} spawning)",
            env!("CARGO_PKG_VERSION"),
            app.root.display(),
            app.spawn_method.as_str()
        );
    } else {
        tracing::info!(
            instance = %dir.dir.display(),
            "rustrack {} serving {} apps sharing {} processes; each starts on its first request",
            env!("CARGO_PKG_VERSION"),
            setup.apps.len(),
            setup.args.max_pool_size
        );
        for app in &setup.apps {
            tracing::info!(
                "  {} → {} ({}, {} spawning, {}..{} processes)",
                app.route,
                app.root.display(),
                app.name,
                app.spawn_method.as_str(),
                app.min_instances,
                app.max_instances
            );
        }
    }
    for url in urls {
        tracing::info!("listening on {url}");
    }
    for path in unix_paths {
        tracing::info!("listening on unix:{}", path.display());
    }
}

/// The first steps of a graceful stop: the health check turns 503 at once,
/// so load balancers take the instance out; new connections are still
/// accepted and served for `delay` (they may still be sent some while the
/// balancer notices).
async fn drain(front: &Front, delay: Duration) {
    front
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    if delay.is_zero() {
        return;
    }
    tracing::info!(
        "draining: the health check answers 503; still serving for {delay:?} (--shutdown-delay)"
    );
    tokio::time::sleep(delay).await;
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
fn stop_now(apps: &Arc<Apps>, leftovers: &Leftovers, code: i32) -> ! {
    apps.kill_all();
    std::thread::sleep(Duration::from_millis(100));
    apps.reap_now();
    let _ = std::fs::remove_dir_all(&leftovers.dir);
    for path in [&leftovers.socket, &leftovers.pid_file]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(code);
}
