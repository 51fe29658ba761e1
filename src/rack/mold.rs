//! A mold: a worker promoted to be the template new workers fork from
//! (Pitchfork's refork). After serving real traffic its heap holds what the
//! app builds lazily (compiled templates, loaded translations, filled
//! caches) and objects that have settled; workers forked from it start
//! with all that shared instead of each building it again in private
//! memory.
//!
//! The front end sends `PROMOTE` between requests. The worker refuses (and
//! keeps serving) when it runs a Ruby thread that a fork would not copy,
//! other than the ones known to be harmless or marked `:fork_safe`, or
//! under `--strict-fork` holds a connection its children would share.
//! Otherwise it prepares its heap as the preloader does (ActiveRecord's
//! connections closed, `--preload-gc`, huge pages), answers `PROMOTED`,
//! and from then on treats its connection to the front end as a control
//! channel: it reports `ready` and serves spawn commands (`template.rs`).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use magnus::{prelude::*, Ruby, Value};

use crate::config::AppSpec;
use crate::control::Report;
use crate::protocol::Promoted;
use crate::rack::inherited::Connection;
use crate::rack::response::Writer;
use crate::rack::template::{self, Template};
use crate::rack::{hugepages, vm};

/// Why a worker running these Ruby threads (besides its main thread and
/// request threads) cannot become a mold.
pub fn threads_refusal(threads: &[String]) -> String {
    format!(
        "it runs {} Ruby thread{} that workers forked from it would lack: {} \
         (mark a thread safe to lose with Thread#thread_variable_set(:fork_safe, true))",
        threads.len(),
        if threads.len() == 1 { "" } else { "s" },
        threads.join(", ")
    )
}

/// Whether this worker can become a mold, and if so prepares it. Called on
/// the main thread of a process with no request thread left (a worker with
/// several has stopped and joined them). `writer` is the response writer of
/// its session when it has one (a single-threaded worker): it is closed
/// for the check and, on refusal, connected again. Err says why not
/// (logged by the front end, which tries another candidate later).
pub fn prepare(
    ruby: &Ruby,
    spec: &AppSpec,
    stream: &UnixStream,
    writer: Option<&Writer>,
) -> Result<Vec<Connection>, String> {
    let threads = template::threads(ruby);
    if !threads.is_empty() {
        return Err(threads_refusal(&threads));
    }
    template::before_fork(ruby);
    template::collect_garbage(ruby, spec.preload_gc);
    // The copy of the connection kept for writing responses is no
    // connection its children would share: let it go for the check.
    if let Some(writer) = writer {
        writer.close();
    }
    let checked = template::connections(spec, "the mold", &[stream.as_raw_fd()]);
    if let (Err(_), Some(writer)) = (&checked, writer) {
        if let Ok(copy) = stream.try_clone() {
            writer.reconnect(copy);
        }
    }
    checked
}

/// Answers the front end's `PROMOTE`.
pub fn answer(stream: &mut UnixStream, answer: &Promoted) -> Result<()> {
    let mut out = Vec::new();
    answer.encode(&mut out);
    stream
        .write_all(&out)
        .context("answering the front end's PROMOTE")
}

/// Serves spawn commands on what was the worker's connection until told
/// to stop; returns the exit code for `worker::exit`.
pub fn serve(
    ruby: &Ruby,
    app: Value,
    spec: &AppSpec,
    worker_id: u64,
    processed: u64,
    stream: UnixStream,
    inherited: Vec<Connection>,
) -> Result<i32> {
    // The control channel is polled; no read may block on a timeout.
    stream.set_read_timeout(None)?;
    let name = format!("mold {worker_id}");
    vm::set_title(
        ruby,
        &format!(
            "rustrack mold {worker_id} ({}): promoted after {processed} requests",
            spec.app_name
        ),
    );
    let _: Value = vm::rustrack_module(ruby)
        .funcall("role=", (ruby.to_symbol("mold"),))
        .map_err(vm::ruby_error)?;
    let huge_pages = spec.preload_hugepages.then(hugepages::collapse_heap);
    let mut template = Template::new(stream, "mold", name)?;
    template.inherited = inherited;
    template.send(&Report::Ready {
        pid: std::process::id(),
        huge_pages,
    })?;
    template.serve(ruby, app, spec)
}
