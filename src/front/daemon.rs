//! UNIX daemon conventions for the front end: `--daemonize`, `--log-file`
//! (reopened on SIGUSR1), `--pid-file`, and `--user`/`--group`.
//!
//! Daemonizing happens before the tokio runtime exists, while the process
//! has one thread, so a plain fork(2) is safe. The parent stays until the
//! child reports that it serves (one byte on a pipe), so `rustrack start
//! --daemonize` exits 0 only when the server is up, and non-zero (with the
//! error in the log file) when it could not start.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The log file a daemon uses when none is given.
pub fn default_log_file(app_root: &Path) -> PathBuf {
    app_root.join("log").join("rustrack.log")
}

/// Forks into the background. Returns in the child (the daemon) with the
/// pipe to report readiness on; the parent never returns: it exits 0 once
/// the child reports, 1 if the child dies first.
pub fn daemonize() -> Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe().context("creating the readiness pipe")?;
    // SAFETY: called before any thread is started (the tokio runtime is
    // built after this), so the child is a complete copy of a
    // single-threaded process.
    match unsafe { nix::unistd::fork() }.context("forking the daemon")? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write);
            let mut byte = [0u8; 1];
            let mut read = std::fs::File::from(read);
            let ok = matches!(read.read(&mut byte), Ok(1) if byte[0] == b'0');
            std::process::exit(if ok { 0 } else { 1 });
        }
        nix::unistd::ForkResult::Child => {
            drop(read);
            nix::unistd::setsid().context("setsid")?;
            let devnull = std::fs::File::open("/dev/null")?;
            // The daemon reads nothing from a terminal it has left.
            nix::unistd::dup2_stdin(&devnull).context("stdin from /dev/null")?;
            Ok(write)
        }
    }
}

/// Tells the waiting parent that the daemon serves.
pub fn report_ready(pipe: OwnedFd) {
    let mut file = std::fs::File::from(pipe);
    let _ = file.write_all(b"0");
}

pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The uid and gid workers run as with `--user` (and `--group`).
pub fn credentials(user: &str, group: Option<&str>) -> Result<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        bail!("--user needs rustrack to be started as root");
    }
    let u = nix::unistd::User::from_name(user)
        .with_context(|| format!("looking up user {user}"))?
        .with_context(|| format!("no such user: {user}"))?;
    let gid = match group {
        Some(g) => {
            nix::unistd::Group::from_name(g)
                .with_context(|| format!("looking up group {g}"))?
                .with_context(|| format!("no such group: {g}"))?
                .gid
        }
        None => u.gid,
    };
    Ok((u.uid.as_raw(), gid.as_raw()))
}

/// Lets the unprivileged workers reach what they need in the instance
/// directory (the worker socket, spilled bodies); the admin socket stays
/// root's, mode 0600.
pub fn grant(paths: &[&Path], uid: u32, gid: u32) -> Result<()> {
    for path in paths {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}
