//! The worker: one request at a time over one persistent connection to the
//! front end. Smart (forked) and direct (booted) workers run the same loop.
//!
//! The loop waits for a complete request with the GVL released, builds the
//! env, and hands it to `Rustrack::RequestHandler.handle`, which calls the
//! app and writes the response through `Rustrack::Native`. EOF from the
//! front end, or TERM/QUIT between requests, ends the loop: the worker then
//! fires `stopping_worker_process`, runs Ruby's cleanup (at_exit blocks,
//! IO flushing) and `_exit`s.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use magnus::{prelude::*, value::ReprValue, RModule, Ruby, Value};

use crate::config::AppSpec;
use crate::protocol::{self, kind, Hello, Promoted, ProtocolError, RequestHead};
use crate::rack::env::{EnvBuilder, Input};
use crate::rack::inherited::{self, Connection};
use crate::rack::{gvl, mold, response, signals, vm};

/// How a worker learned it should stop.
enum Next {
    /// `len` bytes at the start of the buffer are one whole request.
    Request(usize),
    /// The front end asks this worker to become a mold (`len` bytes).
    Promote(usize),
    /// The wait timed out or a signal interrupted it: time to look at
    /// signals and pending Ruby interrupts.
    Idle,
    Eof,
    Stop,
}

/// Reads frames until one whole request is buffered.
///
/// `buf[..end]` holds unread bytes. The buffer is zeroed once and reused, so
/// a read costs one recv(2): no per-read zeroing, and no poll(2) first — a
/// receive timeout on the socket bounds each wait instead.
struct Reader {
    stream: UnixStream,
    buf: Vec<u8>,
    end: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl Reader {
    fn new(stream: UnixStream) -> std::io::Result<Self> {
        // A timeout bounds how long a stop signal that hit another thread
        // (one without our handler's EINTR) can go unnoticed.
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(Reader {
            stream,
            buf: vec![0; READ_CHUNK],
            end: 0,
        })
    }

    fn data(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// Drops the first `len` bytes (a request that has been served).
    fn consume(&mut self, len: usize) {
        self.buf.copy_within(len..self.end, 0);
        self.end -= len;
    }

    /// Length of the first complete request in the buffer, if there is one.
    fn complete_request(&self) -> Result<Option<Next>, ProtocolError> {
        if let Some(frame) = protocol::decode_frame(self.data())? {
            if frame.kind == kind::PROMOTE {
                return Ok(Some(Next::Promote(frame.wire_len())));
            }
        }
        let mut at = 0;
        while let Some(frame) = protocol::decode_frame(&self.data()[at..])? {
            at += frame.wire_len();
            if frame.kind == kind::END {
                return Ok(Some(Next::Request(at)));
            }
        }
        Ok(None)
    }

    /// Blocks (without the GVL) until a request, EOF or a stop signal.
    fn next(&mut self) -> Result<Next> {
        loop {
            if let Some(next) = self.complete_request()? {
                return Ok(next);
            }
            if signals::stop_requested() {
                return Ok(Next::Stop);
            }
            if self.buf.len() - self.end < READ_CHUNK / 2 {
                let grown =
                    (self.buf.len() * 2).min(self.end + 2 * protocol::MAX_PAYLOAD + READ_CHUNK);
                self.buf.resize(grown.max(self.end + READ_CHUNK), 0);
            }
            let stream = &mut self.stream;
            let free = &mut self.buf[self.end..];
            let read = gvl::without_gvl(|| match stream.read(free) {
                Ok(n) => Ok(Some(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            })
            .unwrap_or(Ok(None))
            .context("reading from the front end")?;
            match read {
                Some(0) => return Ok(Next::Eof),
                Some(n) => self.end += n,
                None => return Ok(Next::Idle),
            }
        }
    }
}

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
    let handler: RModule = rustrack
        .const_get("RequestHandler")
        .map_err(vm::ruby_error)?;
    let mut env_builder = EnvBuilder::new(ruby).map_err(vm::ruby_error)?;

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

    let mut stream = UnixStream::connect(&spec.worker_socket).with_context(|| {
        format!(
            "connecting to the front end at {}",
            spec.worker_socket.display()
        )
    })?;
    let mut hello = Vec::new();
    Hello {
        version: protocol::VERSION,
        worker_id,
        pid: std::process::id(),
    }
    .encode(&mut hello);
    stream.write_all(&hello).context("greeting the front end")?;
    response::install(
        stream
            .try_clone()
            .context("duplicating the worker socket")?,
    );
    let mut reader = Reader::new(stream).context("setting up the worker socket")?;

    let mut processed: u64 = 0;
    let mut titled = Instant::now();
    let who = format!("worker {worker_id}");
    loop {
        if !vm::between_requests(ruby, spec, &who) {
            return Ok(0);
        }
        let len = match reader.next()? {
            Next::Request(len) => len,
            Next::Promote(len) => {
                reader.consume(len);
                match mold::prepare(ruby, spec, &reader.stream) {
                    Err(reason) => {
                        mold::answer(&mut reader.stream, &Promoted { ok: false, reason })?;
                        continue;
                    }
                    Ok(inherited) => {
                        let ok = Promoted {
                            ok: true,
                            reason: String::new(),
                        };
                        mold::answer(&mut reader.stream, &ok)?;
                        let stream = reader.stream;
                        return mold::serve(
                            ruby, app, spec, worker_id, processed, stream, inherited,
                        );
                    }
                }
            }
            Next::Idle => continue,
            Next::Eof | Next::Stop => return Ok(0),
        };
        let exit_code = handle_one(ruby, app, handler, &mut env_builder, &reader.data()[..len])?;
        reader.consume(len);
        if let Some(code) = exit_code {
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

/// Serves one request whose frames are `frames`. Returns `Some(code)` when
/// the app asked the worker to exit (`exit` inside a request).
fn handle_one(
    ruby: &Ruby,
    app: Value,
    handler: RModule,
    env_builder: &mut EnvBuilder,
    frames: &[u8],
) -> Result<Option<i32>> {
    let mut at = 0;
    let head_frame = protocol::decode_frame(frames)?.expect("complete request");
    if head_frame.kind != kind::REQUEST_HEAD {
        return Err(ProtocolError::Unexpected {
            got: head_frame.kind,
            expected: "REQUEST_HEAD",
        }
        .into());
    }
    let head = RequestHead::decode(head_frame.payload)?;
    at += head_frame.wire_len();
    let mut body: Vec<u8> = Vec::new();
    let mut single: Option<&[u8]> = None;
    let mut file: Option<&[u8]> = None;
    while let Some(frame) = protocol::decode_frame(&frames[at..])? {
        at += frame.wire_len();
        match frame.kind {
            kind::BODY if single.is_none() && body.is_empty() => single = Some(frame.payload),
            kind::BODY => {
                if let Some(first) = single.take() {
                    body.extend_from_slice(first);
                }
                body.extend_from_slice(frame.payload);
            }
            kind::BODY_FILE => file = Some(frame.payload),
            kind::END => break,
            other => {
                return Err(ProtocolError::Unexpected {
                    got: other,
                    expected: "BODY or END",
                }
                .into())
            }
        }
    }
    let input = match (file, single) {
        (Some(path), _) => Input::File(path),
        (None, Some(b)) => Input::Bytes(b),
        (None, None) => Input::Bytes(&body),
    };

    response::begin_request();
    let (env, input) = match env_builder.build(ruby, &head, input) {
        Ok(built) => built,
        Err(e) => {
            eprintln!(
                "[rustrack] could not build the Rack env: {}",
                vm::describe(&e)
            );
            response::ensure_finished().context("answering the front end")?;
            return Ok(None);
        }
    };
    let result: Result<Value, magnus::Error> = handler.funcall("handle", (app, env));
    response::ensure_finished().context("answering the front end")?;
    let _: Result<Value, _> = input.funcall("close", ());
    if let Err(e) = result {
        if e.is_kind_of(ruby.exception_system_exit()) {
            let status: i32 = e
                .value()
                .and_then(|v| v.funcall("status", ()).ok())
                .unwrap_or(0);
            return Ok(Some(status));
        }
        // RequestHandler rescues everything else; reaching here means the
        // handler itself broke. Keep serving: the client already got a 500.
        eprintln!("[rustrack] request handler failed: {}", vm::describe(&e));
    }
    Ok(None)
}

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
