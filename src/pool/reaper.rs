//! Collects every child of the front end the moment it exits.
//!
//! The front end makes itself a child subreaper (PR_SET_CHILD_SUBREAPER),
//! so smart workers whose preloader died are re-parented to it rather than
//! to init, and still get reaped and reported. On each SIGCHLD it calls
//! `waitpid(-1, WNOHANG)` until nothing is left, since signals coalesce.
//! Nothing else in the front end may wait on children (no
//! `tokio::process`), or statuses would be stolen.

use std::sync::Arc;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use super::Pool;

pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument
    // and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            "could not become a child subreaper: {}",
            std::io::Error::last_os_error()
        );
    }
}

pub async fn run(pool: Arc<Pool>) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGCHLD: {e}");
            return;
        }
    };
    // Also sweep on a slow timer, in case a signal arrived before the
    // handler was installed.
    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = sweep.tick() => {}
        }
        reap_all(&pool);
    }
}

pub fn reap_all(pool: &Arc<Pool>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                pool.process_exited(pid.as_raw() as u32, Some(code), None)
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                pool.process_exited(pid.as_raw() as u32, None, Some(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
