//! systemd: the notify protocol (`Type=notify`) and socket activation.
//!
//! - `READY=1` once the first worker serves, `STATUS=` with the workers
//!   and the queue (sent when it changes, checked every second),
//!   `RELOADING=1` while a rolling restart runs and `READY=1` after it,
//!   `STOPPING=1` at shutdown, and `WATCHDOG=1` every half
//!   `WATCHDOG_USEC` from a task that first asks the pool for its status,
//!   so that a wedged event loop or pool lock stops the pings and systemd
//!   restarts us.
//! - Listening sockets passed in `LISTEN_FDS` replace the ones rustrack
//!   would bind (`listeners::adopt` sorts them).
//!
//! All of it arrives in environment variables the preloader and workers
//! must not inherit: a worker would see `LISTEN_FDS` naming an fd that is
//! something else in it, and could notify systemd as if it were us.
//! [`FromSystemd::take_from_env`] therefore removes them while the process
//! still has one thread, which is also why the datagrams are sent here
//! instead of with `sd_notify::notify` (it reads `NOTIFY_SOCKET` on every
//! call); the crate still takes the fds, reads the watchdog period and
//! formats the states.

use std::fmt::Write as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use sd_notify::NotifyState;
use tokio::time::MissedTickBehavior;

use crate::apps::Apps;
use crate::report::{StatusReport, WorkerState};

/// Every variable of both protocols: removed from our environment so
/// that no child sees them.
const VARIABLES: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// How often the status line is recomputed (and sent if it changed).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How often a rolling restart is checked for its end.
const RELOAD_POLL: Duration = Duration::from_millis(200);

/// What systemd handed us at start.
pub struct FromSystemd {
    pub notifier: Arc<Notifier>,
    /// `WATCHDOG_USEC`, when the watchdog is on and meant for us.
    pub watchdog: Option<Duration>,
    /// Socket activation: the fds from 3 on, with their names
    /// (`FileDescriptorName=`, else `unknown`).
    pub sockets: Vec<(OwnedFd, String)>,
}

impl FromSystemd {
    /// Reads and removes the variables. Call while the process has one
    /// thread (changing the environment races with any other thread
    /// reading it) and before daemonizing (`LISTEN_PID` is our PID).
    pub fn take_from_env() -> Result<FromSystemd> {
        let sockets = sd_notify::listen_fds_with_names().map(|fds| {
            fds.map(|(fd, name)| {
                // SAFETY: `listen_fds_with_names` returns the fds systemd
                // passed for this PID (LISTEN_PID matched), checked open
                // (it set FD_CLOEXEC on each); nothing else in this
                // process owns them.
                (unsafe { OwnedFd::from_raw_fd(fd) }, name)
            })
            .collect::<Vec<_>>()
        });
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        let notify_socket = std::env::var_os("NOTIFY_SOCKET");
        for var in VARIABLES {
            // Sound here: see above, one thread.
            std::env::remove_var(var);
        }
        let sockets = sockets.context("socket activation: reading LISTEN_FDS")?;
        let addr = match notify_socket {
            Some(path) => Some(notify_addr(&path.to_string_lossy())?),
            None => None,
        };
        Ok(FromSystemd {
            notifier: Arc::new(Notifier::new(addr)),
            watchdog,
            sockets,
        })
    }
}

/// `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
fn notify_addr(path: &str) -> Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path),
    }
    .with_context(|| format!("NOTIFY_SOCKET={path}"))
}

/// Sends notifications to systemd; does nothing without `NOTIFY_SOCKET`.
pub struct Notifier {
    addr: Option<SocketAddr>,
    /// Rolling restarts in progress: READY=1 goes out when the last ends.
    reloads: AtomicUsize,
    /// The last STATUS= sent, so that an unchanged one is not resent.
    last_status: Mutex<String>,
    /// Whether a failed send was already logged as a warning.
    warned: AtomicBool,
    /// Set at STOPPING=1: the status task ends rather than replace
    /// "stopping" with a worker count.
    stopping: AtomicBool,
}

impl Notifier {
    fn new(addr: Option<SocketAddr>) -> Notifier {
        Notifier {
            addr,
            reloads: AtomicUsize::new(0),
            last_status: Mutex::new(String::new()),
            warned: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    fn send(&self, states: &[NotifyState]) {
        let Some(addr) = &self.addr else {
            return;
        };
        let mut message = String::new();
        for state in states {
            let _ = writeln!(message, "{state}");
        }
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), addr));
        match sent {
            Ok(_) => tracing::trace!("systemd notify: {}", message.trim_end().replace('\n', " ")),
            // Once as a warning: systemd gone away would otherwise log
            // every second.
            Err(e) if !self.warned.swap(true, Ordering::Relaxed) => {
                tracing::warn!("systemd notify ({addr:?}): {e}")
            }
            Err(e) => tracing::debug!("systemd notify ({addr:?}): {e}"),
        }
    }

    /// STATUS= before there is a pool to describe.
    pub fn starting(&self) {
        self.send(&[NotifyState::Status("starting: loading the app")]);
    }

    /// READY=1: the first worker serves and the listeners accept.
    pub fn ready(&self, apps: &Arc<Apps>) {
        // A restart that ends during a stop must not look like a return
        // to service.
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let status = self.describe(&apps.status());
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        *self.last_status.lock().unwrap() = status;
    }

    /// STOPPING=1: a graceful or immediate stop began.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing requests"),
        ]);
    }

    /// A rolling restart (SIGHUP, `rustrack restart`, `tmp/restart.txt`)
    /// framed by RELOADING=1 and READY=1; returns when `Pool::restart`
    /// does (the new code loaded, or failed to). READY=1 goes out once the
    /// last old worker is replaced, or at once when the code failed to load
    /// (the old workers serve on). `app`: one app of several, else all.
    pub async fn restart(self: &Arc<Self>, apps: &Arc<Apps>, app: Option<&Path>) -> Result<()> {
        if !self.enabled() {
            return apps.restart(app).await;
        }
        self.reloads.fetch_add(1, Ordering::SeqCst);
        // MONOTONIC_USEC: systemd 253's Type=notify-reload wants it with
        // RELOADING=1; older ones ignore it.
        let now = NotifyState::monotonic_usec_now().ok();
        let mut states = vec![
            NotifyState::Reloading,
            NotifyState::Status("rolling restart: loading the code"),
        ];
        states.extend(now);
        self.send(&states);
        let result = apps.restart(app).await;
        let loaded = result.is_ok();
        let notifier = self.clone();
        let apps = apps.clone();
        tokio::spawn(async move {
            while loaded && apps.restarting() {
                tokio::time::sleep(RELOAD_POLL).await;
            }
            if notifier.reloads.fetch_sub(1, Ordering::SeqCst) == 1 {
                notifier.ready(&apps);
            }
        });
        result
    }

    /// Keeps STATUS= current: recomputed every second, sent on change.
    pub fn spawn_status(self: &Arc<Self>, apps: &Arc<Apps>) {
        if !self.enabled() {
            return;
        }
        let notifier = self.clone();
        let apps = apps.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATUS_INTERVAL);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if notifier.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let status = notifier.describe(&apps.status());
                let mut last = notifier.last_status.lock().unwrap();
                if *last != status {
                    notifier.send(&[NotifyState::Status(&status)]);
                    *last = status;
                }
            }
        });
    }

    /// WATCHDOG=1 every half period, from the event loop and only after
    /// the pool answered: if either is stuck, the pings stop and systemd
    /// (WatchdogSec=) kills and restarts the service.
    pub fn spawn_watchdog(self: &Arc<Self>, apps: &Arc<Apps>, period: Duration) {
        if !self.enabled() {
            return;
        }
        let notifier = self.clone();
        let apps = apps.clone();
        tracing::info!("systemd watchdog: pinging every {:?}", period / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Takes every pool's lock: a pool wedged holding it never
                // gets past this line.
                let _ = apps.status();
                notifier.send(&[NotifyState::Watchdog]);
            }
        });
    }

    /// The status line: `3 workers (1 busy, 1 starting), 0 queued` (and,
    /// with several threads per worker, `, 5 requests in progress`).
    fn describe(&self, report: &StatusReport) -> String {
        let count = |state: WorkerState| report.workers.iter().filter(|w| w.state == state).count();
        let mut line = format!(
            "{} workers ({} busy, {} starting), {} queued",
            report.processes,
            count(WorkerState::Busy) + count(WorkerState::Retiring),
            count(WorkerState::Spawning),
            report.requests_in_queue
        );
        if report.threads_per_worker > 1 {
            let in_use: u32 = report.workers.iter().map(|w| w.sessions).sum();
            line += &format!(", {in_use} requests in progress");
        }
        if report.restarting {
            line += ", replacing workers one by one";
        } else if self.reloads.load(Ordering::SeqCst) > 0 {
            line += ", rolling restart: loading the code";
        }
        line
    }
}
