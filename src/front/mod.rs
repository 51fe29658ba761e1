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
mod closing;
mod control;
mod daemon;
mod event_loops;
mod files;
mod health;
mod http;
mod listeners;
mod log_lines;
mod metrics_http;
mod proxy_protocol;
mod secure;
mod sendfile;
mod server;
mod static_files;
mod successor;
mod systemd;
mod tls;

use anyhow::{bail, Context, Result};

use crate::cli::StartArgs;
use crate::settings::Resolved;

/// `settings` is what the environment and settings file contributed
/// (logged once logging is set up).
pub fn run(args: StartArgs, settings: Resolved) -> Result<i32> {
    let app_root = args
        .app_root
        .canonicalize()
        .with_context(|| format!("app root {} does not exist", args.app_root.display()))?;
    let apps = crate::apps::decl::plan(&args)?;
    if args.max_pool_size == 0 {
        bail!("--max-pool-size must be at least 1");
    }
    if !args.refork_after.is_empty()
        && apps
            .iter()
            .any(|a| a.spawn_method != crate::config::SpawnMethod::Smart)
    {
        bail!("--refork-after needs smart spawning (workers fork from a template)");
    }
    if args.refork_after.contains(&0) {
        bail!("--refork-after thresholds must be at least 1 request");
    }
    if args.apps.is_empty() && args.min_instances > args.max_pool_size {
        bail!(
            "--min-instances ({}) exceeds --max-pool-size ({})",
            args.min_instances,
            args.max_pool_size
        );
    }
    let trusted = server::trusted_proxies(&args)?;
    let tls = load_tls(&args)?;
    let credentials = apps
        .iter()
        .map(|app| match &app.user {
            Some(user) => daemon::credentials(user, args.group.as_deref())
                .map(Some)
                .with_context(|| format!("app {}", app.name)),
            None => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    // Before any thread exists (it edits the environment) and before
    // daemonizing (LISTEN_PID names this process).
    let systemd = systemd::FromSystemd::take_from_env()?;
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
    if let Some(path) = &settings.file {
        tracing::info!(
            "settings from {} (`rustrack config` shows each one's source)",
            path.display()
        );
    }
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    if systemd.notifier.enabled() && args.daemonize {
        // systemd takes notifications from the main PID only (unless
        // NotifyAccess=all), and daemonizing made a new one.
        tracing::warn!("--daemonize under systemd's Type=notify: use Type=notify without it");
    }
    raise_fd_limit();
    keep_freed_memory();
    // Single-threaded event loops (`event_loops.rs`): by default one per 4
    // CPUs, as each loop costs well under a quarter of what a Ruby worker
    // spends on a request, and every extra loop adds cross-thread hand-offs.
    let loops = match args.threads {
        0 => event_loops::default_count(),
        n => n,
    };
    let runtime = event_loops::runtime("rustrack")?;
    let code = runtime.block_on(async {
        let flusher = tokio::spawn(log_lines::flush_every());
        let loops = event_loops::EventLoops::start(loops)?;
        let setup = server::Setup {
            args,
            app_root,
            apps,
            credentials,
            log_file,
            ready_pipe,
            trusted,
            tls,
            systemd,
        };
        let code = server::serve(setup, &loops).await;
        // After the pools: tasks they spawned on other loops are done.
        loops.stop();
        flusher.abort();
        code
    });
    log_lines::flush();
    code
}

/// Checks the `--ssl` options and loads the certificate, before anything
/// starts: a bad file stops `rustrack start` with an error naming it.
///
/// Ports (Passenger Standalone's rule): `--ssl` alone makes `--port` serve
/// HTTPS only; `--ssl --ssl-port N` serves plain HTTP on `--port` and HTTPS
/// on N. N equal to `--port` is refused rather than guessed at (0 is not a
/// port but "pick one", so `--port 0 --ssl-port 0` is two listeners).
fn load_tls(args: &StartArgs) -> Result<Option<std::sync::Arc<tls::Tls>>> {
    if !args.ssl {
        return Ok(None);
    }
    if args.ssl_port.is_some_and(|p| p == args.port && p != 0) {
        bail!(
            "--ssl-port {} is --port too: leave --ssl-port out to serve HTTPS only on --port, \
             or give another port to serve HTTP and HTTPS",
            args.port
        );
    }
    if args.no_tcp && args.ssl_port.is_none() {
        bail!("--ssl with --no-tcp needs --ssl-port: --no-tcp turns off --port");
    }
    let (Some(certificate), Some(key)) = (&args.ssl_certificate, &args.ssl_certificate_key) else {
        bail!("--ssl needs --ssl-certificate and --ssl-certificate-key");
    };
    // Absolute, so a reload reads the same files whatever the directory.
    let files = tls::TlsFiles {
        certificate: std::path::absolute(certificate).context("resolving --ssl-certificate")?,
        key: std::path::absolute(key).context("resolving --ssl-certificate-key")?,
    };
    let tls = tls::Tls::load(files).context("loading the TLS certificate")?;
    Ok(Some(std::sync::Arc::new(tls)))
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
        .with_writer(log_lines::LogLines)
        .with_ansi(!to_file && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
