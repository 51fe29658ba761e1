//! Where the front end's log lines go: standard error (the `--log-file`
//! once it is redirected there), with access lines batched.
//!
//! At the default level every request makes an access line. Written one
//! by one, each is a `write(2)` from the event loop, and when standard
//! error is a pipe (systemd's journal, a container runtime) each also
//! wakes the reader: measured here, that cost the front end 17 % more CPU
//! per hello request and 16 % of its requests per second (bench/README.md
//! *front-end cost*). So access
//! lines (target `rustrack::access`) wait in memory and go out together:
//! [`FLUSH_EVERY`] after the first line of a batch (the loop's
//! [`flush_every`] task, which sleeps while nothing waits), when
//! [`BATCH_MAX`] bytes wait, or just before any other line. That last rule
//! keeps the file in order and means warnings and errors are never late;
//! the "stopped" line at exit writes whatever is left. What a batch costs:
//! an access line may appear up to [`FLUSH_EVERY`] late, and a front end
//! killed with SIGKILL loses at most that much of them (nginx's
//! `access_log … buffer= flush=` makes the same trade).

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// How long an access line may wait.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How much may wait before it is written anyway.
pub const BATCH_MAX: usize = 64 * 1024;
/// The target of the access lines (`front/http.rs`).
pub const ACCESS_TARGET: &str = "rustrack::access";

/// Access lines not written yet: one per process, shared by the loops.
static WAITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Told when a line starts a batch, so that an idle front end's timer
/// sleeps instead of ticking.
static STARTED: Notify = Notify::const_new();

/// The `MakeWriter` the front end's subscriber writes through.
#[derive(Clone, Copy, Default)]
pub struct LogLines;

/// One line's writer: batched (an access line) or not.
pub struct Line {
    batched: bool,
}

impl<'a> MakeWriter<'a> for LogLines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { batched: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            batched: meta.target() == ACCESS_TARGET,
        }
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
        let first = waiting.is_empty();
        waiting.extend_from_slice(buf);
        if !self.batched || waiting.len() >= BATCH_MAX {
            write_out(&mut waiting)?;
        } else if first {
            STARTED.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes whatever waits: the loop's timer, and anyone about to exit
/// without a last log line.
pub fn flush() {
    let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
    let _ = write_out(&mut waiting);
}

/// On the event loop, for as long as the front end runs: once a batch has
/// begun, writes it [`FLUSH_EVERY`] later. With no requests it sleeps.
pub async fn flush_every() {
    loop {
        STARTED.notified().await;
        tokio::time::sleep(FLUSH_EVERY).await;
        flush();
    }
}

fn write_out(waiting: &mut Vec<u8>) -> io::Result<()> {
    if waiting.is_empty() {
        return Ok(());
    }
    // Cleared even if the write fails: a standard error that refuses
    // writes must not make the batch grow without end.
    let result = io::stderr().lock().write_all(waiting);
    waiting.clear();
    if waiting.capacity() > 4 * BATCH_MAX {
        waiting.shrink_to(BATCH_MAX);
    }
    result
}
