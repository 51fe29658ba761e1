//! Asking a worker to become the mold (`machine::Action::Promote`).
//!
//! The worker is idle, so its connection is ours to use: we send `PROMOTE`
//! and wait (up to `--start-timeout`: it may compact a big heap first) for
//! `PROMOTED`. Yes: the connection now carries control lines, and goes to
//! the spawner, which makes it the template once it reports `ready`. No (a
//! thread its children would lack): it serves on, and the machine does not
//! ask it again. No answer: it is killed and replaced like any worker out
//! of step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::machine::{self, WorkerId};
use super::processes::Role;
use super::{spawner, Pool, WorkerConn};
use crate::protocol::{self, kind, Promoted};

impl Pool {
    pub(super) async fn promote(
        self: Arc<Self>,
        worker: WorkerId,
        pid: Option<u32>,
        mut conn: WorkerConn,
        restarts: u64,
    ) {
        let timeout = self
            .options
            .machine
            .start_timeout
            .unwrap_or(Duration::from_secs(90));
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, ask(&mut conn)).await;
        match answer {
            Ok(Ok(Promoted { ok: true, .. })) => {
                tracing::info!(
                    worker,
                    pid,
                    "worker prepared itself as the mold in {:.0} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
                let Some(pid) = pid else {
                    // Cannot happen for a worker that served requests: its
                    // spawn reported its PID before it greeted.
                    self.processes.signal_worker(worker, Signal::SIGKILL);
                    return self.lost(worker, "died");
                };
                self.processes.set_role(pid, Role::Mold(worker));
                self.spawner.send(spawner::Command::Adopt {
                    worker,
                    pid,
                    conn,
                    restarts,
                });
            }
            Ok(Ok(Promoted { ok: false, reason })) => {
                tracing::info!(worker, pid, "worker stays a worker: {reason}");
                let mut inner = self.inner.lock().unwrap();
                if let Some(info) = inner.workers.get_mut(&worker) {
                    info.conns.push(conn);
                }
                let actions = self.decide(
                    &mut inner,
                    Instant::now(),
                    machine::Event::PromotionRefused(worker),
                );
                self.apply(&mut inner, actions);
            }
            Ok(Err(e)) => {
                tracing::warn!(worker, pid, "promoting the worker failed: {e:#}");
                self.processes.signal_worker(worker, Signal::SIGKILL);
                self.lost(worker, "died");
            }
            Err(_) => {
                tracing::warn!(
                    worker,
                    pid,
                    "the worker did not answer PROMOTE within {timeout:?}; replacing it"
                );
                self.processes.signal_worker(worker, Signal::SIGKILL);
                self.lost(worker, "died");
            }
        }
    }
}

/// Sends `PROMOTE` and reads the answer.
async fn ask(conn: &mut WorkerConn) -> Result<Promoted> {
    let mut out = Vec::new();
    protocol::put_frame(&mut out, kind::PROMOTE, b"");
    conn.stream.write_all(&out).await?;
    loop {
        if let Some(frame) = protocol::decode_frame(&conn.buf)? {
            let answer = Promoted::decode(frame)?;
            let len = frame.wire_len();
            let _ = conn.buf.split_to(len);
            return Ok(answer);
        }
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            bail!("the worker closed its connection");
        }
    }
}
