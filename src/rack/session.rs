//! A session: one connection to the front end and the requests that come
//! on it, one at a time. A worker has one session per thread
//! (`--threads-per-worker`): with one, its main thread serves it
//! (`worker.rs`); with more, each runs on a Ruby thread of its own
//! (`threads.rs`). Either way a request is read here with the GVL released,
//! its env built, and `Rustrack::RequestHandler.handle` called, which
//! writes the response through the session's `Rustrack::ResponseWriter`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use magnus::{prelude::*, typed_data::Obj, value::ReprValue, RModule, Ruby, Value};

use crate::protocol::{self, kind, Hello, ProtocolError, RequestHead};
use crate::rack::env::{EnvBuilder, Input};
use crate::rack::gvl::{self, Unblock};
use crate::rack::response::Writer;
use crate::rack::vm;

/// What a wait for the next request ended with.
pub enum Next {
    /// `len` bytes at the start of the buffer are one whole request.
    Request(usize),
    /// The front end asks this worker to become a mold (`len` bytes).
    Promote(usize),
    /// The wait timed out, a signal interrupted it, or Ruby woke the
    /// thread: time to look at signals and pending Ruby interrupts.
    Idle,
    Eof,
    Stop,
}

/// Reads frames until one whole request is buffered.
///
/// `buf[..end]` holds unread bytes. The buffer is zeroed once and reused, so
/// a read costs one recv(2): no per-read zeroing, and no poll(2) first — a
/// receive timeout on the socket bounds each wait instead.
pub struct Reader {
    pub stream: UnixStream,
    buf: Vec<u8>,
    end: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl Reader {
    fn new(stream: UnixStream) -> std::io::Result<Self> {
        // A timeout bounds how long a stop nobody woke us for (a signal
        // delivered to another thread) can go unnoticed.
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
    pub fn consume(&mut self, len: usize) {
        self.buf.copy_within(len..self.end, 0);
        self.end -= len;
    }

    /// The first complete request (or PROMOTE) in the buffer, if any.
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

    /// Blocks (without the GVL) until a request, EOF, or `stop()` says to
    /// stop. A request already buffered comes first: the front end sent it
    /// and waits for its answer.
    pub fn next(&mut self, stop: impl Fn() -> bool) -> Result<Next> {
        loop {
            if let Some(next) = self.complete_request()? {
                return Ok(next);
            }
            if stop() {
                return Ok(Next::Stop);
            }
            if self.buf.len() - self.end < READ_CHUNK / 2 {
                let grown =
                    (self.buf.len() * 2).min(self.end + 2 * protocol::MAX_PAYLOAD + READ_CHUNK);
                self.buf.resize(grown.max(self.end + READ_CHUNK), 0);
            }
            let stream = &mut self.stream;
            let free = &mut self.buf[self.end..];
            let read = gvl::without_gvl(
                || match stream.read(free) {
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
                },
                Unblock::Io,
            )
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

/// Connects one session to the front end and greets: worker `worker_id`,
/// session `slot` of `threads`.
pub fn connect(socket: &Path, worker_id: u64, slot: u32, threads: u32) -> Result<UnixStream> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the front end at {}", socket.display()))?;
    protocol::size_send_buffer(&stream);
    let mut hello = Vec::new();
    Hello {
        version: protocol::VERSION,
        worker_id,
        pid: std::process::id(),
        slot,
        threads,
    }
    .encode(&mut hello);
    stream.write_all(&hello).context("greeting the front end")?;
    Ok(stream)
}

/// One session's state inside Ruby. Lives on the stack of the thread that
/// serves it (Ruby's GC scans it there, and the writer is also kept in an
/// ivar of that thread).
pub struct Session {
    pub reader: Reader,
    pub writer: Obj<Writer>,
    env: EnvBuilder,
    handler: RModule,
    app: Value,
}

impl Session {
    /// Takes over a connected, greeted stream, on the thread that will
    /// serve it.
    pub fn new(ruby: &Ruby, app: Value, stream: UnixStream, multithread: bool) -> Result<Session> {
        let writer = Writer::new(
            ruby,
            stream
                .try_clone()
                .context("duplicating the worker socket")?,
        );
        let _: Result<Value, _> = ruby
            .thread_current()
            .funcall("instance_variable_set", ("@__rustrack_writer", writer));
        let handler: RModule = vm::rustrack_module(ruby)
            .const_get("RequestHandler")
            .map_err(vm::ruby_error)?;
        Ok(Session {
            reader: Reader::new(stream).context("setting up the worker socket")?,
            writer,
            env: EnvBuilder::new(ruby, multithread).map_err(vm::ruby_error)?,
            handler,
            app,
        })
    }

    /// Serves the request held in the first `len` buffered bytes, then
    /// drops them. Returns `Some(code)` when the app asked the worker to
    /// exit (`exit` inside a request).
    pub fn serve(&mut self, ruby: &Ruby, len: usize) -> Result<Option<i32>> {
        let result = self.handle(ruby, len);
        self.reader.consume(len);
        result
    }

    fn handle(&mut self, ruby: &Ruby, len: usize) -> Result<Option<i32>> {
        let frames = &self.reader.data()[..len];
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

        self.writer.begin_request();
        let (env, input) = match self.env.build(ruby, &head, input) {
            Ok(built) => built,
            Err(e) => {
                eprintln!(
                    "[rustrack] could not build the Rack env: {}",
                    vm::describe(&e)
                );
                self.writer
                    .ensure_finished()
                    .context("answering the front end")?;
                return Ok(None);
            }
        };
        let result: Result<Value, magnus::Error> =
            self.handler.funcall("handle", (self.app, env, self.writer));
        self.writer
            .ensure_finished()
            .context("answering the front end")?;
        let _: Result<Value, _> = input.funcall("close", ());
        if let Err(e) = result {
            if e.is_kind_of(ruby.exception_system_exit()) {
                let status: i32 = e
                    .value()
                    .and_then(|v| v.funcall("status", ()).ok())
                    .unwrap_or(0);
                return Ok(Some(status));
            }
            // RequestHandler rescues everything else; reaching here means
            // the handler itself broke (or a Thread#raise landed right after
            // it). Keep serving: the client already got an answer.
            eprintln!("[rustrack] request handler failed: {}", vm::describe(&e));
        }
        Ok(None)
    }
}
