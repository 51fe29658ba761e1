//! The preloader: loads the app once, then forks workers on command.
//!
//! It is a fresh exec of this binary, so it has exactly one thread: no
//! tokio, nothing that fork would leave half-copied. It polls two fds: the
//! control channel from the front end (fd 3, JSON lines, see `control.rs`)
//! and a self-pipe that the CHLD handler writes to, so that every worker it
//! forked is reaped and reported as soon as it exits. It forks through
//! Ruby's `Process.fork`, which runs Ruby's at-fork work (`_fork` hooks,
//! IO flushing, a fresh `rand` seed, the thread list reset) that a raw
//! fork(2) would skip. Before forking it closes ActiveRecord's connections
//! and, once, looks for sockets and threads the workers would inherit or
//! lose (`inherited.rs`), warning about them or, with `--strict-fork`,
//! refusing to start.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use magnus::{prelude::*, value::ReprValue, Ruby, Value};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::{AppSpec, PreloadGc};
use crate::control::{self, Command, Report, CONTROL_FD};
use crate::rack::inherited::{self, Connection};
use crate::rack::{hugepages, signals, vm, worker};

pub fn run(spec: &AppSpec) -> Result<i32> {
    // SAFETY: the front end passes our end of the control socketpair as fd 3
    // (dup2 in its pre_exec); nothing else in this process owns that fd.
    let mut control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let (pipe_read, pipe_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .context("creating the CHLD self-pipe")?;

    let title = format!("rustrack preloader ({})", spec.app_name);
    let _cleanup = vm::boot(spec, &title)?;
    let ruby = Ruby::get().expect("booted");
    vm::set_title(&ruby, &title);
    let rustrack = vm::rustrack_module(&ruby);
    let _: Value = rustrack
        .funcall("role=", (ruby.to_symbol("preloader"),))
        .map_err(vm::ruby_error)?;
    let saved_chld = signals::install_preloader(pipe_write.as_raw_fd());

    let app = match vm::load_app(&ruby, spec) {
        Ok(app) => app,
        Err(e) => {
            // The front end prints the error; print it here only when the
            // front end cannot be told.
            let message = format!("{e:#}");
            let report = control::encode(&Report::LoadError {
                message: message.clone(),
            });
            if control.write_all(&report).is_err() {
                eprintln!(
                    "[rustrack] preloader could not load {}:\n{message}",
                    spec.rackup.display()
                );
            }
            return Ok(1);
        }
    };
    ruby.gc_register_mark_object(app);
    before_fork(&ruby);
    run_preload_gc(&ruby, spec.preload_gc);
    let huge_pages = spec.preload_hugepages.then(hugepages::collapse_heap);
    let inherited = match check_fork_hazards(&ruby, spec) {
        Ok(inherited) => inherited,
        Err(message) => {
            if control
                .write_all(&control::encode(&Report::LoadError {
                    message: message.clone(),
                }))
                .is_err()
            {
                eprintln!("[rustrack] {message}");
            }
            return Ok(1);
        }
    };

    send(
        &mut control,
        &Report::Ready {
            pid: std::process::id(),
            huge_pages,
        },
    )?;
    let mut inbox = Vec::new();
    let mut saved_chld = Some(saved_chld);
    loop {
        let mut fds = [
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(pipe_read.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("polling the control channel"),
        }
        let control_ready = fds[0].any().unwrap_or(false);
        drain_pipe(&pipe_read);
        reap(&mut control)?;
        if signals::stop_requested() {
            return Ok(0);
        }
        // Between spawns: log reopening and pending Ruby interrupts (an
        // app's Signal.trap), run here rather than inside the next fork.
        if !vm::between_requests(&ruby, spec, "preloader") {
            return Ok(0);
        }
        if !control_ready {
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = match control.read(&mut chunk) {
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
                    before_fork(&ruby);
                    let fork: Result<Option<i32>, magnus::Error> =
                        ruby.module_process().funcall("fork", ());
                    match fork {
                        Ok(None) => {
                            // In the child: drop everything that belongs to
                            // the preloader before running app code.
                            signals::install_worker(saved_chld.take());
                            drop(control);
                            drop(pipe_read);
                            drop(pipe_write);
                            worker::serve(&ruby, app, spec, worker_id, Some(&inherited));
                        }
                        Ok(Some(pid)) => send_spawned(&mut control, worker_id, pid as u32)?,
                        Err(e) => send(
                            &mut control,
                            &Report::SpawnFailed {
                                worker_id,
                                message: vm::describe(&e),
                            },
                        )?,
                    }
                }
            }
        }
    }
}

/// `Rustrack.before_fork`: closes ActiveRecord's connections, so that no
/// worker inherits a database socket. Its own errors are reported there.
fn before_fork(ruby: &Ruby) {
    let _: Result<Value, _> = vm::rustrack_module(ruby).funcall("before_fork", ());
}

/// Looks, before the first fork, for what workers would share or lose:
/// open connections (every worker would hold the same socket) and live
/// Ruby threads (which fork does not copy). Both are warned about; under
/// `--strict-fork` connections are an error, returned as the message the
/// front end prints. Threads stay a warning even then: libraries start
/// harmless ones at load time (concurrent-ruby 1.1's cleanup thread in
/// every Rails 6.1 app), and a thread missing in a worker shares nothing.
/// Returns the connections, which each forked worker checks again.
fn check_fork_hazards(ruby: &Ruby, spec: &AppSpec) -> Result<Vec<Connection>, String> {
    let threads: Vec<String> = vm::rustrack_module(ruby)
        .funcall("threads_at_fork", ())
        .unwrap_or_default();
    if !threads.is_empty() {
        eprintln!(
            "[rustrack] warning: the preloader has {} Ruby thread{} besides the main one when it forks; \
             threads do not survive fork, so workers run without {}: {}",
            threads.len(),
            if threads.len() == 1 { "" } else { "s" },
            if threads.len() == 1 { "it" } else { "them" },
            threads.join(", ")
        );
    }
    // stdio is shared by design, and fd 3 is our control channel.
    let connections = match inherited::connections("self", &[0, 1, 2, CONTROL_FD]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[rustrack] warning: could not list the preloader's sockets: {e}");
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
            "refusing to fork workers (--strict-fork): the preloader holds {} open connection{} \
             that every worker would share: {}; {hint}, or close {} before config.ru returns",
            connections.len(),
            if connections.len() == 1 { "" } else { "s" },
            peers.join(", "),
            if connections.len() == 1 { "it" } else { "them" },
        ));
    }
    for c in &connections {
        eprintln!("[rustrack] warning: {}", inherited::warning(c));
    }
    eprintln!("[rustrack] to fix: {hint}");
    Ok(connections)
}

fn send(control: &mut UnixStream, report: &Report) -> Result<()> {
    control
        .write_all(&control::encode(report))
        .context("writing to the control channel")
}

/// Reports a forked worker with a pidfd for it, passed with `SCM_RIGHTS`:
/// the front end signals workers only through pidfds, and only here can
/// one be opened without a race, since the child cannot have been reaped
/// yet (this thread reaps, later). Without pidfds (Linux < 5.3) the report
/// goes without one and the front end says it cannot signal that worker.
fn send_spawned(control: &mut UnixStream, worker_id: u64, pid: u32) -> Result<()> {
    let line = control::encode(&Report::Spawned { worker_id, pid });
    let pidfd = rustix::process::Pid::from_raw(pid as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let Some(pidfd) = pidfd else {
        return send_line(control, &line);
    };
    let fds = [pidfd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(
        control.as_raw_fd(),
        &[std::io::IoSlice::new(&line)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .context("writing to the control channel")?;
    // The fd went with the first byte; the rest of the line, if the
    // socket took only part of it, follows plainly.
    control
        .write_all(&line[sent..])
        .context("writing to the control channel")
}

fn send_line(control: &mut UnixStream, line: &[u8]) -> Result<()> {
    control
        .write_all(line)
        .context("writing to the control channel")
}

fn drain_pipe(pipe: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(pipe.as_fd(), &mut buf), Ok(n) if n > 0) {}
}

/// Reaps every exited child and reports it. Called after each wakeup
/// rather than only on the pipe byte, since CHLD signals coalesce.
fn reap(control: &mut UnixStream) -> Result<()> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => send(
                control,
                &Report::Exited {
                    pid: pid.as_raw() as u32,
                    code: Some(code),
                    signal: None,
                },
            )?,
            Ok(WaitStatus::Signaled(pid, sig, _)) => send(
                control,
                &Report::Exited {
                    pid: pid.as_raw() as u32,
                    code: None,
                    signal: Some(sig as i32),
                },
            )?,
            Ok(WaitStatus::StillAlive) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

fn run_preload_gc(ruby: &Ruby, gc: PreloadGc) {
    let gc_module: Value = match ruby.class_object().const_get("GC") {
        Ok(m) => m,
        Err(_) => return,
    };
    if gc != PreloadGc::None {
        let _: Result<Value, _> = gc_module.funcall("start", ());
    }
    if gc == PreloadGc::Compact {
        let _: Result<Value, _> = gc_module.funcall("compact", ());
    }
}
