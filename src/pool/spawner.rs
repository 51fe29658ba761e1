//! Starting workers, smart or direct, and the templates behind smart ones.
//!
//! A template is a process with the app loaded that forks workers on
//! command: a preloader (a fresh exec that loaded the app) or a mold (a
//! worker promoted after serving traffic, so its children start warm).
//! Both speak the same control protocol, so the spawner treats them alike,
//! except that only a preloader is stopped for being idle.
//!
//! The spawner is a task driven by a command queue (`Command`): spawn a
//! worker, stop the idle preloader, load a new preloader for a rolling
//! restart, adopt a promoted worker's connection as a mold's control
//! channel, drop the mold, retire templates nobody forks from any more,
//! shut down. It holds no reference to the pool: what happens is reported
//! as `pool::Event`s (a worker was forked, a spawn failed, a template is
//! up, the mold is gone), and the driver decides what it means. Which
//! template runs is known here and only here: the spawner owns each one's
//! control channel, hears its reports and its end (EOF on the channel),
//! and publishes the current one for `status`.
//!
//! Either way a spawn ends the same way: the new worker connects to the
//! instance's worker socket and greets with `HELLO` carrying the id it was
//! spawned under (`acceptor.rs`), or fails.
//! - smart: the spawner asks the preloader (over its control channel) to
//!   fork; the preloader reports the child's PID with a pidfd for it
//!   (`SCM_RIGHTS`), and later its exit. A preloader is started on demand
//!   and loads the app before it forks anything; spawns asked for
//!   meanwhile wait for it. Spawns it was asked for but never reported
//!   fail when it goes away.
//! - direct: the spawner execs `rustrack __worker` itself.
//!
//! Every process is started through `Processes::spawn`, which files it with
//! a pidfd; nothing here signals a process except through that table.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command as Exec, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::machine::WorkerId;
use super::processes::{Processes, Role};
use super::{Event, WorkerConn};
use crate::config::{AppSpec, SpawnMethod};
use crate::control::{self, Command as ControlCommand, Report, CONTROL_FD};

/// What the pool asks of the spawner.
pub enum Command {
    Spawn(WorkerId),
    /// The preloader has been idle long enough: let it go.
    StopPreloader,
    /// Load the current code in a new preloader; on success it replaces
    /// the old one, which exits (its workers keep serving until retired).
    Restart(oneshot::Sender<Result<()>>),
    /// Stop every template; no more spawns.
    Shutdown,
    /// A worker answered `PROMOTE` with yes: its connection now carries
    /// control lines, and once it reports `ready` it is the template.
    /// `restarts` is the restart count when the promotion began: a mold of
    /// code a restart has replaced since is not adopted.
    Adopt {
        worker: WorkerId,
        pid: u32,
        conn: WorkerConn,
        restarts: u64,
    },
    /// Stop the mold; the next spawn starts a preloader.
    DropMold,
    /// Stop every template but the current one (after a rollout).
    RetireOld,
}

/// The template spawns go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub pid: u32,
    /// `Some(worker)` for a mold.
    pub mold: Option<WorkerId>,
}

/// What the spawner publishes.
#[derive(Debug, Clone, Copy, Default)]
struct Published {
    current: Option<Current>,
    /// Successful rolling restarts (new preloaders for new code).
    restarts: u64,
}

/// How to start the app's processes.
pub struct Launcher {
    pub method: SpawnMethod,
    pub spec: AppSpec,
    pub exe: PathBuf,
    pub app_env: Vec<(String, String)>,
    pub start_timeout: Duration,
}

impl Launcher {
    fn command(&self, role: &str) -> Result<Exec> {
        let mut cmd = Exec::new(&self.exe);
        cmd.arg(role)
            .arg("--spec")
            .arg(serde_json::to_string(&self.spec)?)
            .current_dir(&self.spec.app_root)
            .envs(self.app_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        Ok(cmd)
    }
}

/// The pool's side of the spawner.
#[derive(Clone)]
pub struct SpawnerHandle {
    tx: mpsc::UnboundedSender<Command>,
    published: watch::Receiver<Published>,
}

impl SpawnerHandle {
    pub fn send(&self, command: Command) {
        // The spawner task lives as long as the runtime.
        let _ = self.tx.send(command);
    }

    /// The PID of the preloader, when one is the current template.
    pub fn preloader_pid(&self) -> Option<u32> {
        self.current().filter(|c| c.mold.is_none()).map(|c| c.pid)
    }

    /// The template spawns go to now, if one runs.
    pub fn current(&self) -> Option<Current> {
        self.published.borrow().current
    }

    /// Successful rolling restarts so far.
    pub fn restarts(&self) -> u64 {
        self.published.borrow().restarts
    }

    /// Loads the current code in a new preloader (smart spawning).
    pub async fn restart(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Restart(tx));
        rx.await
            .unwrap_or_else(|_| Err(anyhow!("the spawner stopped")))
    }
}

impl SpawnerHandle {
    /// A handle whose commands go to the returned receiver: a test plays
    /// the spawner.
    #[cfg(test)]
    pub fn fake() -> (SpawnerHandle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_, published) = watch::channel(Published::default());
        (SpawnerHandle { tx, published }, rx)
    }
}

/// Starts the spawner task.
pub fn start(
    launcher: Launcher,
    processes: Processes,
    events: mpsc::UnboundedSender<Event>,
) -> SpawnerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (published_tx, published) = watch::channel(Published::default());
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let spawner = Spawner {
        launcher: Arc::new(launcher),
        processes,
        events,
        internal: internal_tx,
        templates: HashMap::new(),
        current: None,
        published: published_tx,
        restarts: 0,
        start_launch: false,
        waiting: Vec::new(),
        restart_reply: None,
        stopped: false,
    };
    tokio::spawn(spawner.run(rx, internal_rx).in_current_span());
    SpawnerHandle { tx, published }
}

/// Why a template was started.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// A preloader for spawns that wait.
    Start,
    /// A preloader with the current code (rolling restart).
    Restart,
    /// A promoted worker becoming the mold.
    Mold { worker: WorkerId, restarts: u64 },
}

/// What the spawner's own tasks tell it.
enum Internal {
    Launched {
        purpose: Purpose,
        result: Result<Launched>,
    },
    Report {
        from: u32,
        report: Report,
        pidfd: Option<OwnedFd>,
    },
    /// A preloader's control channel closed: it exited (or is exiting).
    Gone { pid: u32 },
}

struct Launched {
    pid: u32,
    stream: Arc<UnixStream>,
    reader: ControlReader,
}

struct Template {
    stream: Arc<UnixStream>,
    /// Workers it was asked to fork and has not reported on yet.
    outstanding: HashSet<WorkerId>,
    /// `Some(worker)` for a mold.
    mold: Option<WorkerId>,
    /// Told to exit: its end is no news.
    leaving: bool,
}

struct Spawner {
    launcher: Arc<Launcher>,
    processes: Processes,
    events: mpsc::UnboundedSender<Event>,
    internal: mpsc::UnboundedSender<Internal>,
    /// Every template whose control channel is open, by PID.
    templates: HashMap<u32, Template>,
    /// The one new spawns go to.
    current: Option<u32>,
    published: watch::Sender<Published>,
    restarts: u64,
    /// A preloader is being started for spawns that wait.
    start_launch: bool,
    waiting: Vec<WorkerId>,
    restart_reply: Option<oneshot::Sender<Result<()>>>,
    stopped: bool,
}

impl Spawner {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => return,
                },
                Some(msg) = internal.recv() => self.internal(msg).await,
            }
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn fail(&self, worker: WorkerId, message: String) {
        self.emit(Event::SpawnFailed { worker, message });
    }

    fn set_current(&mut self, pid: Option<u32>) {
        self.current = pid;
        let current = pid.map(|pid| Current {
            pid,
            mold: self.templates.get(&pid).and_then(|t| t.mold),
        });
        self.published.send_replace(Published {
            current,
            restarts: self.restarts,
        });
    }

    fn current_is_mold(&self) -> bool {
        self.current
            .and_then(|pid| self.templates.get(&pid))
            .is_some_and(|t| t.mold.is_some())
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Spawn(worker) if self.stopped => {
                self.fail(worker, "the server is stopping".into())
            }
            Command::Spawn(worker) => match self.launcher.method {
                SpawnMethod::Direct => self.spawn_direct(worker),
                SpawnMethod::Smart => match self.current {
                    Some(pid) => self.ask_to_fork(pid, worker).await,
                    None => {
                        self.waiting.push(worker);
                        if !self.start_launch {
                            self.start_launch = true;
                            self.launch(Purpose::Start);
                        }
                    }
                },
            },
            Command::StopPreloader => {
                // Only a preloader idles out; a mold is the warm template.
                if self.waiting.is_empty() && !self.start_launch && !self.current_is_mold() {
                    if let Some(pid) = self.current {
                        tracing::info!(
                            pid,
                            "stopping the preloader: no spawn for --max-preloader-idle-time \
                             (the next spawn starts a new one)"
                        );
                        self.set_current(None);
                        self.tell_to_exit(pid).await;
                    }
                }
            }
            Command::Restart(reply) => {
                if self.launcher.method == SpawnMethod::Direct {
                    let _ = reply.send(Ok(()));
                } else if self.restart_reply.is_some() {
                    let _ = reply.send(Err(anyhow!("a rolling restart is already loading")));
                } else {
                    self.restart_reply = Some(reply);
                    self.launch(Purpose::Restart);
                }
            }
            Command::Adopt {
                worker,
                pid,
                conn,
                restarts,
            } => self.adopt(worker, pid, conn, restarts),
            Command::DropMold => {
                if let Some(pid) = self.current.filter(|_| self.current_is_mold()) {
                    self.set_current(None);
                    self.tell_to_exit(pid).await;
                }
            }
            Command::RetireOld => {
                let old: Vec<u32> = self
                    .templates
                    .iter()
                    .filter(|(pid, t)| Some(**pid) != self.current && !t.leaving)
                    .map(|(pid, _)| *pid)
                    .collect();
                for pid in old {
                    tracing::info!(pid, "retiring a template no worker forks from any more");
                    self.tell_to_exit(pid).await;
                }
            }
            Command::Shutdown => {
                self.stopped = true;
                for worker in std::mem::take(&mut self.waiting) {
                    self.fail(worker, "the server is stopping".into());
                }
                self.set_current(None);
                let pids: Vec<u32> = self.templates.keys().copied().collect();
                for pid in pids {
                    self.tell_to_exit(pid).await;
                }
            }
        }
    }

    fn spawn_direct(&self, worker: WorkerId) {
        let started = self.launcher.command("__worker").and_then(|mut cmd| {
            cmd.arg("--worker-id").arg(worker.to_string());
            self.processes
                .spawn(&mut cmd, Role::Worker(worker))
                .context("starting a worker")
        });
        match started {
            Ok(pid) => self.emit(Event::Forked { worker, pid }),
            Err(e) => self.fail(worker, format!("{e:#}")),
        }
    }

    async fn ask_to_fork(&mut self, pid: u32, worker: WorkerId) {
        let Some(template) = self.templates.get_mut(&pid) else {
            return self.fail(worker, "the template is gone".into());
        };
        template.outstanding.insert(worker);
        let stream = template.stream.clone();
        let line = control::encode(&ControlCommand::Spawn { worker_id: worker });
        if let Err(e) = write_all(&stream, &line).await {
            // It is exiting; its channel's EOF will follow. A new one is
            // started for the next spawn.
            if let Some(t) = self.templates.get_mut(&pid) {
                t.outstanding.remove(&worker);
            }
            self.fail(worker, format!("asking the template to fork: {e}"));
        }
    }

    /// Asks a template to exit (its exit is expected, not a crash).
    async fn tell_to_exit(&mut self, pid: u32) {
        self.processes.expect_exit(pid);
        if let Some(t) = self.templates.get_mut(&pid) {
            t.leaving = true;
            let stream = t.stream.clone();
            let _ = write_all(&stream, &control::encode(&ControlCommand::Shutdown)).await;
        }
    }

    fn launch(&self, purpose: Purpose) {
        let launcher = self.launcher.clone();
        let processes = self.processes.clone();
        let internal = self.internal.clone();
        tokio::spawn(
            async move {
                let result = launch(&launcher, &processes).await;
                let _ = internal.send(Internal::Launched { purpose, result });
            }
            .in_current_span(),
        );
    }

    /// Takes a promoted worker's connection as a control channel and waits
    /// (in a task) for it to report `ready`.
    fn adopt(&self, worker: WorkerId, pid: u32, conn: WorkerConn, restarts: u64) {
        let internal = self.internal.clone();
        let timeout = self.launcher.start_timeout;
        tokio::spawn(
            async move {
                let stream = Arc::new(conn.stream);
                let mut reader = ControlReader::new(stream.clone());
                reader.buf.extend_from_slice(&conn.buf);
                let result = match tokio::time::timeout(timeout, reader.next()).await {
                    Ok(Ok(Some((Report::Ready { huge_pages, .. }, _)))) => {
                        if let Some(h) = huge_pages {
                            log_huge_pages(&h);
                        }
                        Ok(Launched {
                            pid,
                            stream,
                            reader,
                        })
                    }
                    Ok(Ok(Some((other, _)))) => Err(anyhow!("the mold reported {other:?} first")),
                    Ok(Ok(None)) => Err(anyhow!("the mold exited before it was ready")),
                    Ok(Err(e)) => Err(anyhow!("reading from the mold: {e}")),
                    Err(_) => Err(anyhow!("the mold was not ready within {timeout:?}")),
                };
                let purpose = Purpose::Mold { worker, restarts };
                let _ = internal.send(Internal::Launched { purpose, result });
            }
            .in_current_span(),
        );
    }

    async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Launched { purpose, result } => self.launched(purpose, result).await,
            Internal::Report {
                from,
                report,
                pidfd,
            } => self.report(from, report, pidfd),
            Internal::Gone { pid } => {
                let Some(t) = self.templates.remove(&pid) else {
                    return;
                };
                for worker in t.outstanding {
                    self.fail(
                        worker,
                        format!("the template (pid {pid}) exited before forking worker {worker}"),
                    );
                }
                if self.current == Some(pid) {
                    self.set_current(None);
                }
                if let (Some(worker), false) = (t.mold, t.leaving) {
                    self.emit(Event::MoldLost { worker, pid });
                }
            }
        }
    }

    async fn launched(&mut self, purpose: Purpose, result: Result<Launched>) {
        if let Purpose::Start = purpose {
            self.start_launch = false;
        }
        let Launched {
            pid,
            stream,
            reader,
        } = match result {
            Ok(launched) => launched,
            Err(e) => return self.launch_failed(purpose, e),
        };
        let mold = match purpose {
            Purpose::Mold { worker, .. } => Some(worker),
            _ => None,
        };
        self.templates.insert(
            pid,
            Template {
                stream,
                outstanding: HashSet::new(),
                mold,
                leaving: false,
            },
        );
        let internal = self.internal.clone();
        tokio::spawn(read_reports(pid, reader, internal).in_current_span());
        if self.stopped {
            return self.tell_to_exit(pid).await;
        }
        match purpose {
            Purpose::Start if self.current.is_some() => {
                // A restart's preloader or a mold took over while this one
                // loaded.
                return self.tell_to_exit(pid).await;
            }
            Purpose::Mold { worker, restarts } if restarts != self.restarts => {
                tracing::info!(
                    worker,
                    pid,
                    "the new mold has the code a restart replaced; dropping it"
                );
                self.tell_to_exit(pid).await;
                self.emit(Event::PromotionFailed {
                    worker,
                    message: "a rolling restart replaced its code meanwhile".into(),
                });
                return;
            }
            _ => {}
        }
        let old = self.current;
        if let Purpose::Restart = purpose {
            self.restarts += 1;
        }
        self.set_current(Some(pid));
        // After a restart the old code's template goes at once; after a
        // refork the previous template stays until its workers are replaced
        // (RetireOld), as the fallback meanwhile.
        if let (Some(old), Purpose::Restart) = (old, purpose) {
            self.tell_to_exit(old).await;
        }
        self.emit(Event::TemplateUp { pid, mold });
        for worker in std::mem::take(&mut self.waiting) {
            self.ask_to_fork(pid, worker).await;
        }
        if let Purpose::Restart = purpose {
            if let Some(reply) = self.restart_reply.take() {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn launch_failed(&mut self, purpose: Purpose, e: anyhow::Error) {
        match purpose {
            Purpose::Restart => {
                if let Some(reply) = self.restart_reply.take() {
                    let _ = reply.send(Err(e));
                }
            }
            Purpose::Start => {
                let message = format!("{e:#}");
                for worker in std::mem::take(&mut self.waiting) {
                    self.fail(worker, message.clone());
                }
            }
            Purpose::Mold { worker, .. } => self.emit(Event::PromotionFailed {
                worker,
                message: format!("{e:#}"),
            }),
        }
    }

    fn report(&mut self, from: u32, report: Report, pidfd: Option<OwnedFd>) {
        match report {
            Report::Spawned { worker_id, pid } => {
                if let Some(t) = self.templates.get_mut(&from) {
                    t.outstanding.remove(&worker_id);
                }
                match pidfd {
                    Some(fd) => self.processes.adopt(pid, fd, Role::Worker(worker_id)),
                    None => tracing::error!(
                        worker = worker_id,
                        pid,
                        "the template sent no pidfd for this worker (Linux before 5.3?): \
                         rustrack will not signal it"
                    ),
                }
                self.emit(Event::Forked {
                    worker: worker_id,
                    pid,
                });
            }
            Report::SpawnFailed { worker_id, message } => {
                if let Some(t) = self.templates.get_mut(&from) {
                    t.outstanding.remove(&worker_id);
                }
                self.fail(worker_id, message);
            }
            Report::Exited { pid, code, signal } => {
                let exits = self.processes.exited(pid, code, signal);
                if !exits.is_empty() {
                    self.emit(Event::Exits(exits));
                }
            }
            other => tracing::warn!(from, "unexpected report from a template: {other:?}"),
        }
    }
}

/// Starts a preloader and waits until it has loaded the app. On a load
/// error the message carries the Ruby exception and backtrace.
async fn launch(launcher: &Launcher, processes: &Processes) -> Result<Launched> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().context("creating the control socketpair")?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = launcher.command("__preloader")?;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls dup2(2) or fcntl(2), both async-signal-safe; it allocates nothing
    // and takes no lock, so the parent's other threads cannot deadlock it.
    unsafe {
        cmd.pre_exec(move || {
            if theirs_fd == CONTROL_FD {
                // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                if libc::fcntl(CONTROL_FD, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let pid = processes
        .spawn(&mut cmd, Role::Preloader)
        .context("starting the preloader")?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    let stream = Arc::new(UnixStream::from_std(ours)?);
    let mut reader = ControlReader::new(stream.clone());
    let first = tokio::time::timeout(launcher.start_timeout, reader.next()).await;
    let report = match first {
        Err(_) => {
            processes.expect_exit(pid);
            processes.signal_pid(pid, Signal::SIGKILL);
            bail!(
                "the preloader did not load the app within {:?} (--start-timeout)",
                launcher.start_timeout
            )
        }
        Ok(Err(e)) => bail!("reading from the preloader: {e}"),
        Ok(Ok(None)) => {
            bail!("the preloader exited while loading the app (see its output above)")
        }
        Ok(Ok(Some((report, _)))) => report,
    };
    match report {
        Report::Ready { huge_pages, .. } => {
            if let Some(h) = huge_pages {
                log_huge_pages(&h);
            }
        }
        Report::LoadError { message } => {
            // It exits by itself after saying so.
            processes.expect_exit(pid);
            return Err(anyhow!("the app failed to load:\n{message}"));
        }
        other => bail!("unexpected first report from the preloader: {other:?}"),
    }
    tracing::info!(pid, "preloader loaded {}", launcher.spec.rackup.display());
    Ok(Launched {
        pid,
        stream,
        reader,
    })
}

fn log_huge_pages(h: &control::HugePages) {
    if h.collapsed == 0 && h.failed > 0 {
        // Kernels before 6.1 have no MADV_COLLAPSE; nothing is lost.
        tracing::info!(
            "this kernel makes no huge pages on request; forks copy every page-table entry"
        );
    } else if h.failed > 0 {
        tracing::warn!(
            "the kernel refused huge pages for {} of {} ranges of the preloader's heap \
             (memory fragmented?); forks copy more page-table entries",
            h.failed,
            h.failed + h.collapsed
        );
    }
    tracing::info!(
        sparse = h.sparse,
        "template heap: {} MB in huge pages ({} ms)",
        h.collapsed * 2,
        h.millis
    );
}

async fn read_reports(
    pid: u32,
    mut reader: ControlReader,
    internal: mpsc::UnboundedSender<Internal>,
) {
    loop {
        match reader.next().await {
            Ok(Some((report, pidfd))) => {
                let _ = internal.send(Internal::Report {
                    from: pid,
                    report,
                    pidfd,
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(pid, "reading the preloader's control channel: {e}");
                break;
            }
        }
    }
    let _ = internal.send(Internal::Gone { pid });
}

async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the preloader's reports: JSON lines, with a pidfd passed
/// alongside each `spawned` line (`SCM_RIGHTS`).
struct ControlReader {
    stream: Arc<UnixStream>,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl ControlReader {
    fn new(stream: Arc<UnixStream>) -> Self {
        ControlReader {
            stream,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// The next report (and the pidfd that came with it), `None` at EOF.
    async fn next(&mut self) -> std::io::Result<Option<(Report, Option<OwnedFd>)>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                match serde_json::from_slice::<Report>(&line[..pos]) {
                    Ok(report) => {
                        let pidfd = match report {
                            Report::Spawned { .. } => self.fds.pop_front(),
                            _ => None,
                        };
                        return Ok(Some((report, pidfd)));
                    }
                    Err(e) => tracing::warn!(
                        "bad preloader report {:?}: {e}",
                        String::from_utf8_lossy(&line)
                    ),
                }
            }
            let mut chunk = [0u8; 4096];
            let fd = self.stream.as_raw_fd();
            let fds = &mut self.fds;
            let n = self
                .stream
                .async_io(Interest::READABLE, || recv_with_fds(fd, &mut chunk, fds))
                .await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> std::io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for raw in received {
                // SAFETY: the kernel just installed `raw` in our fd table for
                // this message (SCM_RIGHTS); nothing else knows of it, so
                // taking ownership here is the only owner.
                fds.push_back(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok(msg.bytes)
}
