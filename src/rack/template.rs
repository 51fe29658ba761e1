//! A template: a process with the app loaded that forks workers on
//! command and serves no requests. The preloader is one (it loaded the app
//! from scratch); a mold is another (a worker that served traffic and was
//! promoted, `mold.rs`). Both run this module's loop over the same control
//! channel protocol (JSON lines, `control.rs`), so the front end does not
//! care which it talks to.
//!
//! The loop polls two fds: the control channel and a self-pipe the CHLD
//! handler writes to, so every worker it forked is reaped and reported as
//! soon as it exits. It forks through Ruby's `Process.fork`, which runs
//! Ruby's at-fork work (`_fork` hooks, IO flushing, a fresh `rand` seed, the
//! thread list reset) that a raw fork(2) would skip. Each `spawned` report
//! carries a pidfd for the child (`SCM_RIGHTS`), opened before this thread
//! could reap it, so the front end can signal the child without ever
//! hitting a process that reused its PID.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use magnus::{value::ReprValue, Ruby, Value};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::{AppSpec, PreloadGc};
use crate::control::{self, Command, Report};
use crate::rack::inherited::{self, Connection};
use crate::rack::signals::{self, SavedChld};
use crate::rack::{heap, vm, worker};

/// What a template holds: its control channel, the CHLD self-pipe, and
/// what it found workers would inherit.
pub struct Template {
    pub control: UnixStream,
    pipe_read: OwnedFd,
    /// Kept open for the CHLD handler, which writes to its number.
    _pipe_write: OwnedFd,
    saved_chld: Option<SavedChld>,
    /// Connections the template held when it got ready; each forked
    /// worker checks whether it still holds them after its
    /// starting_worker_process handlers.
    pub inherited: Vec<Connection>,
    /// "preloader" or "mold", for messages.
    pub kind: &'static str,
    /// "preloader" or "mold N", for messages.
    pub name: String,
}

impl Template {
    /// Takes over `control` and starts catching CHLD (the handler writes to
    /// a self-pipe the loop polls).
    pub fn new(control: UnixStream, kind: &'static str, name: String) -> Result<Template> {
        let (pipe_read, pipe_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .context("creating the CHLD self-pipe")?;
        let saved_chld = signals::install_template(pipe_write.as_raw_fd());
        Ok(Template {
            control,
            pipe_read,
            _pipe_write: pipe_write,
            saved_chld: Some(saved_chld),
            inherited: Vec::new(),
            kind,
            name,
        })
    }

    pub fn send(&mut self, report: &Report) -> Result<()> {
        self.control
            .write_all(&control::encode(report))
            .context("writing to the control channel")
    }

    /// Forks workers on command until told to stop (or the front end is
    /// gone). Returns the exit code; a forked child never returns from here.
    pub fn serve(mut self, ruby: &Ruby, app: Value, spec: &AppSpec) -> Result<i32> {
        let mut inbox = Vec::new();
        loop {
            let mut fds = [
                PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.pipe_read.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("polling the control channel"),
            }
            let control_ready = fds[0].any().unwrap_or(false);
            drain_pipe(&self.pipe_read);
            self.reap()?;
            if signals::stop_requested() {
                return Ok(0);
            }
            // Between spawns: log reopening and pending Ruby interrupts (an
            // app's Signal.trap), run here rather than inside the next fork.
            if !vm::between_requests(ruby, spec, &self.name) {
                return Ok(0);
            }
            if !control_ready {
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = match self.control.read(&mut chunk) {
                Ok(0) => return Ok(0), // the front end is gone
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the control channel"),
            };
            inbox.extend_from_slice(&chunk[..n]);
            while let Some(pos) = inbox.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = inbox.drain(..=pos).collect();
                let command: Command = serde_json::from_slice(&line).with_context(|| {
                    format!("bad control command {:?}", String::from_utf8_lossy(&line))
                })?;
                match command {
                    Command::Shutdown => return Ok(0),
                    Command::Spawn { worker_id } => {
                        if self.fork(ruby, worker_id)? {
                            // In the child: drop everything that belongs to
                            // the template before running app code.
                            signals::install_worker(self.saved_chld.take());
                            let inherited = std::mem::take(&mut self.inherited);
                            let from = self.kind;
                            drop(self);
                            worker::serve(ruby, app, spec, worker_id, Some((from, &inherited)));
                        }
                    }
                }
            }
        }
    }

    /// Forks worker `worker_id`. True in the child.
    fn fork(&mut self, ruby: &Ruby, worker_id: u64) -> Result<bool> {
        before_fork(ruby);
        let fork: Result<Option<i32>, magnus::Error> = ruby.module_process().funcall("fork", ());
        match fork {
            Ok(None) => return Ok(true),
            Ok(Some(pid)) => self.send_spawned(worker_id, pid as u32)?,
            Err(e) => self.send(&Report::SpawnFailed {
                worker_id,
                message: vm::describe(&e),
            })?,
        }
        Ok(false)
    }

    /// Reports a forked worker with a pidfd for it, passed with
    /// `SCM_RIGHTS`: only here can one be opened without a race, since the
    /// child cannot have been reaped yet (this thread reaps, later). Without
    /// pidfds (Linux < 5.3) the report goes alone and the front end says it
    /// cannot signal that worker.
    fn send_spawned(&mut self, worker_id: u64, pid: u32) -> Result<()> {
        let line = control::encode(&Report::Spawned { worker_id, pid });
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let Some(pidfd) = pidfd else {
            return self
                .control
                .write_all(&line)
                .context("writing to the control channel");
        };
        let fds = [pidfd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(
            self.control.as_raw_fd(),
            &[std::io::IoSlice::new(&line)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .context("writing to the control channel")?;
        // The fd went with the first byte; the rest of the line, if the
        // socket took only part of it, follows plainly.
        self.control
            .write_all(&line[sent..])
            .context("writing to the control channel")
    }

    /// Reaps every exited child and reports it. Called after each wakeup
    /// rather than only on the pipe byte, since CHLD signals coalesce.
    fn reap(&mut self) -> Result<()> {
        loop {
            let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, None, Some(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
                Ok(_) => continue,
            };
            self.send(&Report::Exited {
                pid: pid.as_raw() as u32,
                code,
                signal,
            })?;
        }
    }
}

fn drain_pipe(pipe: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(pipe.as_fd(), &mut buf), Ok(n) if n > 0) {}
}

/// `Rustrack.before_fork`: closes ActiveRecord's connections, so that no
/// worker inherits a database socket. Its own errors are reported there.
pub fn before_fork(ruby: &Ruby) {
    let _: Result<Value, _> = vm::rustrack_module(ruby).funcall("before_fork", ());
}

/// Garbage collection before the first fork (`--preload-gc`; `heap.rs`).
pub fn collect_garbage(ruby: &Ruby, gc: PreloadGc) -> heap::Report {
    heap::prepare(ruby, gc)
}

/// Live Ruby threads other than the main one, minus `:fork_safe` ones and
/// the known harmless ones (`Rustrack.threads_at_fork`), described.
pub fn threads(ruby: &Ruby) -> Vec<String> {
    vm::rustrack_module(ruby)
        .funcall("threads_at_fork", ())
        .unwrap_or_default()
}

/// Open connections (TCP, Unix) this process holds, besides stdio and
/// `skip` (its control channel): every worker forked from it would share
/// them. Warned about; with `--strict-fork` an error, returned as the
/// message to report.
pub fn connections(spec: &AppSpec, who: &str, skip: &[i32]) -> Result<Vec<Connection>, String> {
    let mut fds = vec![0, 1, 2];
    fds.extend_from_slice(skip);
    let connections = match inherited::connections("self", &fds) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[rustrack] warning: could not list the {who}'s sockets: {e}");
            Vec::new()
        }
    };
    if connections.is_empty() {
        return Ok(connections);
    }
    let hint =
        "reconnect with Rustrack.on_event(:starting_worker_process) { |forked| ... if forked } \
                (apps written for Passenger's PhusionPassenger.on_event: --passenger-compat)";
    if spec.strict_fork {
        let peers: Vec<String> = connections.iter().map(|c| c.peer.to_string()).collect();
        return Err(format!(
            "refusing to fork workers (--strict-fork): the {who} holds {} open connection{} \
             that every worker would share: {}; {hint}, or close {} before config.ru returns",
            connections.len(),
            if connections.len() == 1 { "" } else { "s" },
            peers.join(", "),
            if connections.len() == 1 { "it" } else { "them" },
        ));
    }
    for c in &connections {
        eprintln!("[rustrack] warning: {}", inherited::warning(who, c));
    }
    eprintln!("[rustrack] to fix: {hint}");
    Ok(connections)
}
