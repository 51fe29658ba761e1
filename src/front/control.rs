//! The control loop of a serving instance: what signals, the admin socket
//! and `tmp/restart.txt` ask for, until something asks it to stop.
//!
//! | signal | action |
//! |---|---|
//! | TERM, QUIT, INT | stop gracefully (a second INT: at once) |
//! | HUP | reload the TLS certificate (`--ssl`), rolling restart of every app (also: an app's `tmp/restart.txt` touched restarts that app) |
//! | TTIN / TTOU | one more / one fewer process (one app served only) |
//! | USR1 | reopen `--log-file`, and have every process reopen theirs |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::admin::Control;
use super::systemd::Notifier;
use super::tls::Tls;
use crate::apps::Apps;

/// How often `APP_ROOT/tmp/restart.txt` is checked.
const RESTART_TXT_INTERVAL: Duration = Duration::from_secs(2);

/// How the instance was asked to stop.
pub enum Stop {
    Graceful,
    Now,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub async fn run(
    apps: &Arc<Apps>,
    log_file: Option<&Path>,
    tls: Option<&Tls>,
    mut admin: mpsc::UnboundedReceiver<Control>,
    notifier: &Arc<Notifier>,
) -> Result<Stop> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut sigttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut sigttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    // Each app's own tmp/restart.txt restarts that app.
    let mut restart_txts: Vec<(PathBuf, Option<SystemTime>)> = apps
        .groups()
        .iter()
        .map(|g| {
            let path = g.plan.root.join("tmp").join("restart.txt");
            let seen = mtime(&path);
            (path, seen)
        })
        .collect();
    let mut restart_check = tokio::time::interval(RESTART_TXT_INTERVAL);
    loop {
        tokio::select! {
            _ = sigint.recv() => {
                tracing::info!("SIGINT: stopping gracefully (a second Ctrl-C stops at once)");
                return Ok(Stop::Graceful);
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: stopping gracefully");
                return Ok(Stop::Graceful);
            }
            _ = sigquit.recv() => {
                tracing::info!("SIGQUIT: stopping gracefully");
                return Ok(Stop::Graceful);
            }
            Some(Control::Stop { graceful }) = admin.recv() => {
                tracing::info!(
                    "stop requested over the admin socket{}",
                    if graceful { " (graceful)" } else { "" }
                );
                return Ok(if graceful { Stop::Graceful } else { Stop::Now });
            }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: rolling restart");
                if let Some(tls) = tls {
                    tls.reload("SIGHUP");
                }
                spawn_restart(apps, None, notifier);
            }
            _ = sigttin.recv() => match apps.scale(1, None) {
                Ok(n) => tracing::info!("SIGTTIN: desired process count {n}"),
                Err(e) => tracing::info!("SIGTTIN ignored: {e:#} (rustrack scale +1 APP_ROOT)"),
            },
            _ = sigttou.recv() => match apps.scale(-1, None) {
                Ok(n) => tracing::info!("SIGTTOU: desired process count {n}"),
                Err(e) => tracing::info!("SIGTTOU ignored: {e:#} (rustrack scale -1 APP_ROOT)"),
            },
            _ = sigusr1.recv() => {
                // Access lines still waiting belong to the old file.
                super::log_lines::flush();
                match log_file {
                    Some(path) => match crate::logfile::redirect_output(path) {
                        Ok(()) => tracing::info!("SIGUSR1: reopened {}", path.display()),
                        Err(e) => tracing::error!("SIGUSR1: {e:#}"),
                    },
                    None => tracing::info!("SIGUSR1: no --log-file to reopen"),
                }
                // The preloader and workers reopen theirs (the same file,
                // and the app's own append-mode logs).
                apps.signal_all(Signal::SIGUSR1);
            }
            _ = restart_check.tick() => {
                for (i, (path, seen)) in restart_txts.iter_mut().enumerate() {
                    let now = mtime(path);
                    if now.is_some() && now != *seen {
                        tracing::info!("{} changed: rolling restart", path.display());
                        if let Some(tls) = tls {
                            tls.reload("restart.txt");
                        }
                        let root = apps.groups()[i].plan.root.clone();
                        spawn_restart(apps, Some(root), notifier);
                    }
                    *seen = now;
                }
            }
        }
    }
}

/// Resolves at the next SIGINT (the second Ctrl-C of a graceful stop).
pub async fn second_interrupt() {
    match signal(SignalKind::interrupt()) {
        Ok(mut sigint) => {
            sigint.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// A rolling restart of `app` (its root), or of every app.
fn spawn_restart(apps: &Arc<Apps>, app: Option<PathBuf>, notifier: &Arc<Notifier>) {
    let apps = apps.clone();
    let notifier = notifier.clone();
    tokio::spawn(async move {
        // Failures are logged and kept for `status` by the pool.
        let _ = notifier.restart(&apps, app.as_deref()).await;
    });
}
