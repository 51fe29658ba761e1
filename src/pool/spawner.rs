//! Starting workers, smart or direct, and the preloader behind smart ones.
//!
//! Either way a spawn ends the same way: the new worker connects to the
//! instance's worker socket and greets with `HELLO` carrying the id it was
//! spawned under; the acceptor hands that connection to the waiting spawn.
//! - smart: the front end asks the preloader (over its control channel) to
//!   fork; the preloader reports the child's PID and, later, its exit;
//! - direct: the front end execs `rustrack __worker` itself.
//!
//! Children are started with `std::process::Command` and never waited on
//! through it: the reaper (`reaper.rs`) collects every child of the front
//! end with `waitpid(-1)`, orphaned workers included.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;

use super::exchange::WorkerConn;
use super::machine::WorkerId;
use super::Pool;
use crate::config::{AppSpec, SpawnMethod};
use crate::control::{self, Command as ControlCommand, Report, CONTROL_FD};

type Waiter = oneshot::Sender<Result<WorkerConn, String>>;

pub struct Spawner {
    pub method: SpawnMethod,
    spec: AppSpec,
    spec_json: String,
    exe: PathBuf,
    app_env: Vec<(String, String)>,
    start_timeout: Duration,
    waiters: Mutex<HashMap<WorkerId, Waiter>>,
    preloader: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    preloader_pid: AtomicU32,
    /// uid/gid for the preloader and workers (`--user`).
    credentials: Option<(u32, u32)>,
}

impl Spawner {
    pub fn new(
        method: SpawnMethod,
        spec: AppSpec,
        app_env: Vec<(String, String)>,
        start_timeout: Duration,
    ) -> Result<Self> {
        Ok(Spawner {
            method,
            spec_json: serde_json::to_string(&spec)?,
            spec,
            exe: std::env::current_exe().context("locating the rustrack executable")?,
            app_env,
            start_timeout,
            waiters: Mutex::new(HashMap::new()),
            preloader: tokio::sync::Mutex::new(None),
            preloader_pid: AtomicU32::new(0),
            credentials: None,
        })
    }

    /// Runs the preloader and workers as this uid/gid.
    pub fn with_credentials(mut self, credentials: Option<(u32, u32)>) -> Self {
        self.credentials = credentials;
        self
    }

    pub fn spec(&self) -> &AppSpec {
        &self.spec
    }

    /// PID of the running preloader, if any.
    pub fn preloader_pid(&self) -> Option<u32> {
        match self.preloader_pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    fn command(&self, role: &str) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(role)
            .arg("--spec")
            .arg(&self.spec_json)
            .current_dir(&self.spec.app_root)
            .envs(self.app_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.credentials {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts a preloader and waits until it has loaded the app. On a load
    /// error the message carries the Ruby exception and backtrace.
    async fn launch_preloader(&self, pool: &Arc<Pool>) -> Result<(u32, OwnedWriteHalf)> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().context("creating the control socketpair")?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = self.command("__preloader");
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
        let child = cmd.spawn().context("starting the preloader")?;
        drop(theirs);
        let pid = child.id();
        // The reaper collects it; std's Child must not wait on it.
        drop(child);
        pool.track_child(pid, None);
        ours.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(ours)?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let first = tokio::time::timeout(self.start_timeout, lines.next_line()).await;
        let report: Report = match first {
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                bail!(
                    "the preloader did not load the app within {:?} (--start-timeout)",
                    self.start_timeout
                )
            }
            Ok(Err(e)) => bail!("reading from the preloader: {e}"),
            Ok(Ok(None)) => {
                bail!("the preloader exited while loading the app (see its output above)")
            }
            Ok(Ok(Some(line))) => serde_json::from_str(&line)
                .with_context(|| format!("bad preloader report {line:?}"))?,
        };
        match report {
            Report::Ready {
                huge_pages: Some(h),
                ..
            } => {
                if h.collapsed == 0 && h.failed > 0 {
                    // Kernels before 6.1 have no MADV_COLLAPSE; nothing is lost.
                    tracing::info!("this kernel makes no huge pages on request; forks copy every page-table entry");
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
                    "preloader heap: {} MB in huge pages ({} ms)",
                    h.collapsed * 2,
                    h.millis
                );
            }
            Report::Ready { .. } => {}
            Report::LoadError { message } => {
                return Err(anyhow!("the app failed to load:\n{message}"))
            }
            other => bail!("unexpected first report from the preloader: {other:?}"),
        }
        tracing::info!(pid, "preloader loaded {}", self.spec.rackup.display());
        let pool = pool.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => pool.preloader_report(report),
                    Err(e) => tracing::warn!("bad preloader report {line:?}: {e}"),
                }
            }
        });
        Ok((pid, write))
    }

    /// Starts the preloader unless one runs.
    pub async fn start_preloader(&self, pool: &Arc<Pool>) -> Result<()> {
        let mut slot = self.preloader.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let (pid, write) = self.launch_preloader(pool).await?;
        self.preloader_pid.store(pid, Ordering::SeqCst);
        *slot = Some(write);
        pool.preloader_started();
        Ok(())
    }

    /// Rolling restart, smart spawning: loads the current code in a new
    /// preloader while the old one keeps serving spawns; only when the new
    /// one has loaded does it take over (the old one is told to exit; its
    /// workers, re-parented to the front end, keep serving until retired).
    pub async fn replace_preloader(&self, pool: &Arc<Pool>) -> Result<()> {
        let (pid, write) = self.launch_preloader(pool).await?;
        let mut slot = self.preloader.lock().await;
        let old = slot.replace(write);
        self.preloader_pid.store(pid, Ordering::SeqCst);
        drop(slot);
        if let Some(mut old) = old {
            let _ = old
                .write_all(&control::encode(&ControlCommand::Shutdown))
                .await;
        }
        pool.preloader_started();
        Ok(())
    }

    /// Called when the preloader process is gone.
    pub fn preloader_exited(&self, pid: u32) -> bool {
        if self
            .preloader_pid
            .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        if let Ok(mut slot) = self.preloader.try_lock() {
            *slot = None;
        }
        true
    }

    /// Asks the preloader to exit (closing its control channel).
    pub async fn stop_preloader(&self) {
        let mut slot = self.preloader.lock().await;
        if let Some(mut w) = slot.take() {
            let _ = w
                .write_all(&control::encode(&ControlCommand::Shutdown))
                .await;
        }
    }

    /// Spawns worker `id` and waits for its greeting. `on_pid` learns the
    /// worker's PID as soon as it is known, so that an exit before the
    /// greeting fails this spawn at once.
    pub async fn spawn(&self, pool: &Arc<Pool>, id: WorkerId) -> Result<WorkerConn> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        let result = self.spawn_inner(pool, id, rx).await;
        self.waiters.lock().unwrap().remove(&id);
        result
    }

    async fn spawn_inner(
        &self,
        pool: &Arc<Pool>,
        id: WorkerId,
        rx: oneshot::Receiver<Result<WorkerConn, String>>,
    ) -> Result<WorkerConn> {
        match self.method {
            SpawnMethod::Smart => {
                let mut slot = self.preloader.lock().await;
                if slot.is_none() {
                    drop(slot);
                    self.start_preloader(pool).await?;
                    slot = self.preloader.lock().await;
                }
                let writer = slot
                    .as_mut()
                    .ok_or_else(|| anyhow!("the preloader is not running"))?;
                writer
                    .write_all(&control::encode(&ControlCommand::Spawn { worker_id: id }))
                    .await
                    .context("asking the preloader to fork")?;
            }
            SpawnMethod::Direct => {
                let mut cmd = self.command("__worker");
                cmd.arg("--worker-id").arg(id.to_string());
                let child = cmd.spawn().context("starting a worker")?;
                let pid = child.id();
                drop(child);
                pool.track_child(pid, Some(id));
            }
        }
        match tokio::time::timeout(self.start_timeout, rx).await {
            Ok(Ok(Ok(conn))) => Ok(conn),
            Ok(Ok(Err(msg))) => Err(anyhow!(msg)),
            Ok(Err(_)) => Err(anyhow!("spawn abandoned")),
            Err(_) => {
                pool.kill_worker(id);
                Err(anyhow!(
                    "worker {id} did not start within {:?} (--start-timeout)",
                    self.start_timeout
                ))
            }
        }
    }

    /// Hands a greeting worker's connection to its spawn. Returns the
    /// connection back when nobody waits for that id.
    pub fn deliver(&self, id: WorkerId, conn: WorkerConn) -> Option<WorkerConn> {
        match self.waiters.lock().unwrap().remove(&id) {
            Some(tx) => match tx.send(Ok(conn)) {
                Ok(()) => None,
                Err(Ok(conn)) => Some(conn),
                Err(Err(_)) => None,
            },
            None => Some(conn),
        }
    }

    /// Fails a spawn in progress (its process died before greeting).
    pub fn fail(&self, id: WorkerId, msg: String) {
        if let Some(tx) = self.waiters.lock().unwrap().remove(&id) {
            let _ = tx.send(Err(msg));
        }
    }

    /// Fails every smart spawn in progress (the preloader died).
    pub fn fail_all(&self, msg: &str) {
        for (_, tx) in self.waiters.lock().unwrap().drain() {
            let _ = tx.send(Err(msg.to_string()));
        }
    }
}
