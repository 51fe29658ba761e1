//! Collects every child of the front end the moment it exits.
//!
//! The front end makes itself a child subreaper (PR_SET_CHILD_SUBREAPER),
//! so smart workers whose preloader died are re-parented to it rather than
//! to init, and still get reaped and reported. On each SIGCHLD it reaps
//! until nothing is left (signals coalesce), through `Processes::reap`,
//! which holds the process table's lock so that nothing is reaped before
//! its pidfd is filed. Nothing else in the front end may wait on children
//! (no `tokio::process`), or statuses would be stolen. A slow sweep also
//! forgets processes that exited without anyone reporting it (workers a
//! preloader reaped just before it was killed).

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::processes::Processes;

/// An exited process not reported within this long is forgotten.
const UNREPORTED: Duration = Duration::from_secs(5);

pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("could not become a child subreaper: {e}");
    }
}

/// Reaps for every group of the table `processes` views; each group
/// hears of its own exits on the channel it registered.
pub async fn run(processes: Processes) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGCHLD: {e}");
            return;
        }
    };
    // Also sweep on a slow timer, in case a signal arrived before the
    // handler was installed.
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let swept = tokio::select! {
            _ = sigchld.recv() => false,
            _ = sweep.tick() => true,
        };
        processes.reap_and_route(swept.then_some(UNREPORTED));
    }
}
