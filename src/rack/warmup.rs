//! Warm-up requests (`--warmup-request`, `--warmup-rounds`): the preloader
//! serves them to the app itself, after `config.ru` loaded and before it
//! prepares its heap for the first fork.
//!
//! Much of what a Rails app does on its first requests is done once and
//! kept: ActionView compiles each template into a Ruby method, I18n loads
//! its locale files, routes and caches fill. Done in each worker, that
//! work lands in the worker's private memory, once per worker; done here,
//! it lands in the preloader's heap, which every worker shares
//! copy-on-write, and then goes through the same GC, compaction and huge
//! page steps as the rest of the loaded app.
//!
//! Each request goes through what a worker does for a real one: a
//! `RequestHead` (made up here rather than decoded from the front end) →
//! `EnvBuilder` → `Rustrack::RequestHandler.handle` → a
//! `Rustrack::ResponseWriter`, one that discards the bytes and keeps the
//! status (`Writer::discarding`); it is garbage once warm-up returns, so
//! no worker inherits anything that writes. A status outside 2xx/3xx is logged as a warning;
//! an exception is logged by `RequestHandler` with its backtrace (and
//! answered 500); neither stops the boot.

use std::time::{Duration, Instant};

use anyhow::Result;
use magnus::{prelude::*, typed_data::Obj, value::ReprValue, RModule, Ruby, Value};

use crate::config::{AppSpec, WarmupRequest};
use crate::protocol::RequestHead;
use crate::rack::env::{EnvBuilder, Input};
use crate::rack::response::{self, Writer};
use crate::rack::{signals, vm};

/// What a warm-up did.
#[derive(Debug, Default)]
pub struct Summary {
    pub served: usize,
    /// Responses outside 2xx/3xx (an exception counts as its 500).
    pub failed: usize,
    pub elapsed: Duration,
    /// The preloader was told to stop meanwhile; the rest was skipped.
    pub stopped: bool,
}

/// A browser's Accept, so that apps that pick a format from it (Rails'
/// `respond_to`) render the HTML templates a browser would get.
const ACCEPT: &[u8] = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const USER_AGENT: &[u8] = concat!("rustrack-warmup/", env!("CARGO_PKG_VERSION")).as_bytes();

/// Serves every warm-up request `spec.warmup.rounds` times, in order, and
/// logs a summary. Does nothing without `--warmup-request`.
pub fn run(ruby: &Ruby, app: Value, spec: &AppSpec) -> Result<Summary> {
    let warmup = &spec.warmup;
    let mut summary = Summary::default();
    if warmup.requests.is_empty() || warmup.rounds == 0 {
        return Ok(summary);
    }
    let rustrack = vm::rustrack_module(ruby);
    response::define(ruby, rustrack).map_err(vm::ruby_error)?;
    let handler: RModule = rustrack
        .const_get("RequestHandler")
        .map_err(vm::ruby_error)?;
    let mut env_builder =
        EnvBuilder::new(ruby, spec.threads_per_worker > 1).map_err(vm::ruby_error)?;

    let started = Instant::now();
    let writer = Writer::discarding(ruby);
    'rounds: for round in 1..=warmup.rounds {
        for request in &warmup.requests {
            // The same between-request work a worker does (log reopening,
            // the app's signal traps), and a TERM is obeyed promptly even
            // when warm-up takes long.
            if signals::stop_requested() || !vm::between_requests(ruby, spec, "preloader") {
                summary.stopped = true;
                break 'rounds;
            }
            let status = serve_one(ruby, app, handler, writer, &mut env_builder, request);
            summary.served += 1;
            match status {
                Some(code) if (200..400).contains(&code) => {}
                Some(code) => {
                    summary.failed += 1;
                    eprintln!(
                        "[rustrack] warning: warm-up request {request} (round {round}) answered {code}"
                    );
                }
                None => {
                    summary.failed += 1;
                    eprintln!(
                        "[rustrack] warning: warm-up request {request} (round {round}) got no response"
                    );
                }
            }
        }
    }
    summary.elapsed = started.elapsed();
    eprintln!(
        "[rustrack] warm-up: served {} request{} ({} path{} × {} round{}) in {:.0} ms{}{}",
        summary.served,
        plural(summary.served),
        warmup.requests.len(),
        plural(warmup.requests.len()),
        warmup.rounds,
        plural(warmup.rounds as usize),
        summary.elapsed.as_secs_f64() * 1000.0,
        if summary.failed > 0 {
            format!(", {} outside 2xx/3xx", summary.failed)
        } else {
            String::new()
        },
        if summary.stopped {
            "; stopped early (asked to stop)"
        } else {
            ""
        },
    );
    Ok(summary)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Serves one request; returns the response's status. Problems are
/// logged, never returned: a warm-up request that fails must not stop the
/// app from booting.
fn serve_one(
    ruby: &Ruby,
    app: Value,
    handler: RModule,
    writer: Obj<Writer>,
    env_builder: &mut EnvBuilder,
    request: &WarmupRequest,
) -> Option<u16> {
    let (path, query) = request.path_and_query();
    let mut headers: Vec<(&[u8], &[u8])> = vec![
        (b"host", b"localhost"),
        (b"accept", ACCEPT),
        (b"user-agent", USER_AGENT),
    ];
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        // As a client sends with an empty POST: some apps and middlewares
        // treat a body-carrying method without a length as malformed.
        headers.push((b"content-length", b"0"));
    }
    let head = RequestHead {
        method: request.method.as_bytes(),
        target: request.target.as_bytes(),
        path: path.as_bytes(),
        query: query.as_bytes(),
        protocol: b"HTTP/1.1",
        scheme: b"http",
        server_name: b"localhost",
        server_port: b"80",
        remote_addr: b"127.0.0.1",
        // No client port to report; the key is left out, as for requests
        // that arrive on the Unix socket.
        remote_port: b"",
        // The path is the app's own, as if it were mounted at the root: a
        // prefix route (several apps) changes URLs the app builds, not
        // which templates and translations it loads.
        script_name: b"",
        headers,
    };

    writer.begin_request();
    let (env, input) = match env_builder.build(ruby, &head, Input::Bytes(b"")) {
        Ok(built) => built,
        Err(e) => {
            eprintln!(
                "[rustrack] warning: could not build the Rack env of warm-up request {request}: {}",
                vm::describe(&e)
            );
            return None;
        }
    };
    // Lets an app tell warm-up requests from real ones (to skip analytics,
    // say): a server-specific key, as the Rack SPEC allows.
    let _ = env.aset("rustrack.warmup", true);
    let result: Result<Value, magnus::Error> = handler.funcall("handle", (app, env, writer));
    // A discarding writer cannot fail on I/O; this turns a response the
    // app never finished into the 500 a client gets.
    let _ = writer.ensure_finished();
    let _: Result<Value, _> = input.funcall("close", ());
    if let Err(e) = result {
        if e.is_kind_of(ruby.exception_system_exit()) {
            eprintln!(
                "[rustrack] warning: warm-up request {request} called exit; ignored (the preloader keeps loading)"
            );
        } else {
            // RequestHandler rescues the app's exceptions itself; this is
            // the handler failing.
            eprintln!(
                "[rustrack] warning: warm-up request {request}: the request handler failed: {}",
                vm::describe(&e)
            );
        }
    }
    writer.discarded_status()
}
