//! The worker: smart (forked) and direct (booted) workers run the same
//! code. It sets itself up (title, after-fork work, the app's
//! `starting_worker_process` handlers), connects one session per thread to
//! the front end (`--threads-per-worker`, `session.rs`), and serves:
//!
//! - one thread (the default): on its main thread, one request at a time,
//!   as in the loop below. It waits for a request with the GVL released,
//!   and between requests runs signal work (log reopening, the app's
//!   traps);
//! - several: on a Ruby thread per session, with the main thread
//!   supervising them (`threads.rs`).
//!
//! EOF from the front end, or TERM/QUIT between requests, ends it: the
//! worker then fires `stopping_worker_process`, runs Ruby's cleanup
//! (at_exit blocks, IO flushing) and `_exit`s.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use magnus::{value::ReprValue, Ruby, Value};

use crate::config::AppSpec;
use crate::protocol::Promoted;
use crate::rack::inherited::{self, Connection};
use crate::rack::session::{self, Next, Session};
use crate::rack::{mold, response, signals, threads, vm};

/// Sets the worker up and serves until told to stop; never returns.
/// `inherited` is `Some` in a forked worker: the connections the preloader
/// held when it forked (possibly none).
pub fn serve(
    ruby: &Ruby,
    app: Value,
    spec: &AppSpec,
    worker_id: u64,
    inherited: Option<(&str, &[Connection])>,
) -> ! {
    let code = match serve_inner(ruby, app, spec, worker_id, inherited) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "[rustrack] worker {worker_id} (pid {}): {e:#}",
                std::process::id()
            );
            1
        }
    };
    exit(ruby, code)
}

fn serve_inner(
    ruby: &Ruby,
    app: Value,
    spec: &AppSpec,
    worker_id: u64,
    inherited: Option<(&str, &[Connection])>,
) -> Result<i32> {
    let forked = inherited.is_some();
    vm::set_title(
        ruby,
        &format!("rustrack worker {worker_id} ({})", spec.app_name),
    );
    let rustrack = vm::rustrack_module(ruby);
    let _: Value = rustrack
        .funcall("role=", (ruby.to_symbol("worker"),))
        .map_err(vm::ruby_error)?;
    response::define(ruby, rustrack).map_err(vm::ruby_error)?;

    if forked {
        // Passenger's after-fork work (srand, ActiveRecord), before the
        // app's own handlers so they see a clean state.
        let _: Value = rustrack.funcall("after_fork", ()).map_err(vm::ruby_error)?;
    }
    let _: Value = rustrack
        .funcall(
            "call_event",
            (ruby.to_symbol("starting_worker_process"), forked),
        )
        .map_err(vm::ruby_error)?;
    // A connection the template held that is still open here is shared
    // with the template and every other worker: the app did not reconnect.
    let (template, held) = inherited.unwrap_or(("preloader", &[]));
    for c in inherited::still_held(held) {
        eprintln!(
            "[rustrack] warning: worker {worker_id} (pid {}) still shares the {template}'s connection to {} \
             after starting_worker_process; close it there and reconnect",
            std::process::id(),
            c.peer
        );
    }

    let threads = spec.threads_per_worker.max(1);
    let mut streams = Vec::with_capacity(threads as usize);
    for slot in 0..threads {
        streams.push(session::connect(
            &spec.worker_socket,
            worker_id,
            slot,
            threads,
        )?);
    }
    if threads > 1 {
        return threads::serve(ruby, app, spec, worker_id, streams);
    }
    let stream = streams.pop().expect("one session");
    let mut session = Session::new(ruby, app, stream, false)?;

    let mut processed: u64 = 0;
    let mut titled = Instant::now();
    let who = format!("worker {worker_id}");
    loop {
        if !vm::between_requests(ruby, spec, &who) {
            return Ok(0);
        }
        let len = match session.reader.next(signals::stop_requested)? {
            Next::Request(len) => len,
            Next::Promote(len) => {
                session.reader.consume(len);
                let writer = &*session.writer;
                match mold::prepare(ruby, spec, &session.reader.stream, Some(writer)) {
                    Err(reason) => {
                        mold::answer(&mut session.reader.stream, &Promoted { ok: false, reason })?;
                        continue;
                    }
                    Ok(inherited) => {
                        let ok = Promoted {
                            ok: true,
                            reason: String::new(),
                        };
                        mold::answer(&mut session.reader.stream, &ok)?;
                        let stream = session.reader.stream;
                        return mold::serve(
                            ruby, app, spec, worker_id, processed, stream, inherited,
                        );
                    }
                }
            }
            Next::Idle => continue,
            Next::Eof | Next::Stop => return Ok(0),
        };
        if let Some(code) = session.serve(ruby, len)? {
            return Ok(code);
        }
        processed += 1;
        // `ps` shows the request count; refreshed at most once a second to
        // keep it off the request path.
        if titled.elapsed() >= TITLE_REFRESH || processed == 1 {
            titled = Instant::now();
            vm::set_title(
                ruby,
                &format!(
                    "rustrack worker {worker_id} ({}): {processed} requests",
                    spec.app_name
                ),
            );
        }
    }
}

const TITLE_REFRESH: Duration = Duration::from_secs(1);

/// Ends a worker: the stopping event, Ruby's cleanup, then `_exit`.
pub fn exit(ruby: &Ruby, code: i32) -> ! {
    let rustrack = vm::rustrack_module(ruby);
    let _: Result<Value, _> =
        rustrack.funcall("call_event", (ruby.to_symbol("stopping_worker_process"),));
    let _ = std::io::stderr().flush();
    // SAFETY: called on the thread that runs Ruby (the worker's main one),
    // once, and nothing touches Ruby after it: `_exit` follows. It runs the
    // at_exit blocks and flushes Ruby's IO buffers.
    let cleaned = unsafe { rb_sys::ruby_cleanup(code) };
    // `_exit` skips Rust's and libc's exit handlers, which belong to the
    // process we were forked from.
    // SAFETY: _exit(2) ends the process at once; it takes an integer.
    unsafe { libc::_exit(if code != 0 { code } else { cleaned }) }
}
