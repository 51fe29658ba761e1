//! Writing a Rack response to the front end: `Rustrack::ResponseWriter`.
//!
//! Each session (one connection to the front end, served by one thread)
//! has one writer object. `Rustrack::RequestHandler.handle(app, env, out)`
//! (Ruby) calls its methods in order: `write_head(status, headers,
//! streaming)`, `write_body(chunk)` per chunk, then `finish`; or `fail`
//! when anything raised. Frames collect in one buffer that is written with
//! a single write(2) at the end of the response, except for streaming
//! bodies, which are flushed chunk by chunk so the client sees each as the
//! app produces it.
//!
//! In the preloader, warm-up (`warmup.rs`) serves requests through a
//! writer that discards every byte and keeps only the response's status.
//!
//! Writes block with the GVL held. The front end reads every worker
//! connection as fast as data comes (a slow client is buffered there, never
//! here), so a write waits only for the front end's event loop; a slow
//! *stream* waits in the app, between chunks, where Ruby lets the worker's
//! other threads run.
//!
//! The connection sits behind a mutex: the session's thread is the only
//! one meant to write, but an app could hand the writer (a Rack 3 stream)
//! to a thread of its own. The GVL serialises Ruby callers. The lock is
//! held across Ruby code only on `write_head`'s error path (building the
//! message inspects the bad value's class), and only the session's thread
//! calls `write_head` (`RequestHandler`; an app's stream, `Rustrack::Stream`,
//! exposes `write_body` alone), the same thread that takes the lock with a
//! blocking `lock()` in `begin_request`/`ensure_finished`. Any other thread
//! only ever `try_lock`s (and gets an exception), so no thread can wait,
//! with the GVL held, for a lock held by a thread that waits for the GVL.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use magnus::{
    method, prelude::*, typed_data::Obj, value::ReprValue, Error, RArray, RHash, RModule, RString,
    Ruby, Value,
};

use crate::protocol::{self, kind, ResponseHeadWriter};

/// One session's way back to the front end.
#[magnus::wrap(class = "Rustrack::ResponseWriter", free_immediately, size)]
pub struct Writer {
    conn: Mutex<Option<ResponseConn>>,
    /// Requests begun on this session; a Rack 3 stream remembers the one
    /// it belongs to, so a stream an app kept cannot write into a later
    /// response.
    request: AtomicU64,
}

struct ResponseConn {
    sink: Sink,
    buf: Vec<u8>,
    state: State,
}

/// Where responses go.
enum Sink {
    /// A session's connection to the front end.
    Socket(UnixStream),
    /// Nowhere (warm-up); only the status of the current response is kept.
    Discard { status: Option<u16> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No head yet for the current request.
    Idle,
    /// Head written (maybe still buffered).
    Body { streaming: bool, flushed: bool },
    /// END or ABORT written.
    Done,
}

impl Writer {
    /// A writer for a session's connection (a duplicate of the socket the
    /// session reads from).
    pub fn new(ruby: &Ruby, stream: UnixStream) -> Obj<Writer> {
        Self::with_sink(ruby, Sink::Socket(stream))
    }

    /// A writer that throws responses away, keeping their status
    /// (`discarded_status`), for requests nobody waits for.
    pub fn discarding(ruby: &Ruby) -> Obj<Writer> {
        Self::with_sink(ruby, Sink::Discard { status: None })
    }

    fn with_sink(ruby: &Ruby, sink: Sink) -> Obj<Writer> {
        ruby.obj_wrap(Writer {
            conn: Mutex::new(Some(ResponseConn {
                sink,
                buf: Vec::with_capacity(64 * 1024),
                state: State::Done,
            })),
            request: AtomicU64::new(0),
        })
    }

    /// For a discarding writer: the status of the current request's
    /// response (500 when the app raised before or while writing it), or
    /// None when no head was written.
    pub fn discarded_status(&self) -> Option<u16> {
        match self.conn.lock().unwrap().as_ref().map(|c| &c.sink) {
            Some(Sink::Discard { status }) => *status,
            _ => None,
        }
    }

    /// Closes the writer's copy of the connection (a worker becoming a
    /// mold serves no requests, and must not count it as a connection its
    /// children would share).
    pub fn close(&self) {
        *self.conn.lock().unwrap() = None;
    }

    /// Gives the writer a connection again (a promotion that was refused).
    pub fn reconnect(&self, stream: UnixStream) {
        *self.conn.lock().unwrap() = Some(ResponseConn {
            sink: Sink::Socket(stream),
            buf: Vec::with_capacity(64 * 1024),
            state: State::Done,
        });
    }

    /// Marks the start of a new request's response.
    pub fn begin_request(&self) {
        self.request.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = self.conn.lock().unwrap().as_mut() {
            conn.state = State::Idle;
            conn.buf.clear();
            if let Sink::Discard { status } = &mut conn.sink {
                *status = None;
            }
        }
    }

    /// Makes sure the front end got a complete response for this request,
    /// writing a 500 if the Ruby side never finished one. Returns an error
    /// when the connection to the front end is broken.
    pub fn ensure_finished(&self) -> std::io::Result<()> {
        let mut guard = self.conn.lock().unwrap();
        let Some(conn) = guard.as_mut() else {
            return Ok(());
        };
        if conn.state != State::Done {
            conn.fail();
        }
        conn.flush()
    }

    fn with_conn<T>(
        &self,
        ruby: &Ruby,
        f: impl FnOnce(&mut ResponseConn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut guard = self.conn.try_lock().map_err(|_| {
            Error::new(
                ruby.exception_runtime_error(),
                "the response is being written by another thread",
            )
        })?;
        match guard.as_mut() {
            Some(conn) => f(conn),
            None => Err(Error::new(
                ruby.exception_io_error(),
                "this rustrack worker no longer serves requests",
            )),
        }
    }

    fn write_head(
        ruby: &Ruby,
        rb_self: &Self,
        status: Value,
        headers: Value,
        streaming: bool,
    ) -> Result<(), Error> {
        let status = parse_status(ruby, status)?;
        let headers = RHash::from_value(headers).ok_or_else(|| {
            Error::new(
                ruby.exception_type_error(),
                format!(
                    "Rack response headers must be a Hash, got {}",
                    headers.class().inspect()
                ),
            )
        })?;
        rb_self.with_conn(ruby, |conn| {
            if conn.state != State::Idle {
                return Err(Error::new(
                    ruby.exception_runtime_error(),
                    "response head written twice",
                ));
            }
            let start = conn.buf.len();
            let mut head = ResponseHeadWriter::begin(&mut conn.buf, status);
            let buf = &mut conn.buf;
            let result = headers.foreach(|name: Value, value: Value| {
                let name = RString::from_value(name).ok_or_else(|| {
                    Error::new(
                        ruby.exception_type_error(),
                        format!("header name {} is not a String", name.inspect()),
                    )
                })?;
                // SAFETY: no Ruby code runs while this slice (and `bytes`
                // below) is borrowed, so nothing can modify, move or free
                // the strings: meanwhile we only convert values
                // (RString/RArray::from_value), read array elements, and
                // build errors, which copy the bytes before calling
                // anything (`header_type_error`). GC cannot free them
                // either: the hash holds them and they are on our stack.
                let name_bytes = unsafe { name.as_slice() };
                if name_bytes.starts_with(b"rack.") {
                    return Ok(magnus::r_hash::ForEach::Continue);
                }
                check_header_name(name_bytes).map_err(|m| arg_error(ruby, m))?;
                let mut put = |v: RString| -> Result<(), Error> {
                    // SAFETY: as for `name_bytes`.
                    let bytes = unsafe { v.as_slice() };
                    for line in bytes.split(|&b| b == b'\n') {
                        check_header_value(name_bytes, line).map_err(|m| arg_error(ruby, m))?;
                        head.header(buf, name_bytes, line);
                    }
                    Ok(())
                };
                if let Some(s) = RString::from_value(value) {
                    put(s)?;
                } else if let Some(list) = RArray::from_value(value) {
                    for item in list.into_iter() {
                        let s = RString::from_value(item)
                            .ok_or_else(|| header_type_error(ruby, name_bytes, item))?;
                        put(s)?;
                    }
                } else {
                    return Err(header_type_error(ruby, name_bytes, value));
                }
                Ok(magnus::r_hash::ForEach::Continue)
            });
            if let Err(e) = result {
                conn.buf.truncate(start);
                return Err(e);
            }
            head.finish(&mut conn.buf)
                .map_err(|e| arg_error(ruby, e.to_string()))?;
            conn.record_status(status);
            conn.state = State::Body {
                streaming,
                flushed: false,
            };
            Ok(())
        })
    }

    fn write_body(ruby: &Ruby, rb_self: &Self, chunk: Value) -> Result<(), Error> {
        let chunk = RString::from_value(chunk).ok_or_else(|| {
            Error::new(
                ruby.exception_type_error(),
                format!(
                    "Rack body yielded {}, not a String",
                    chunk.class().inspect()
                ),
            )
        })?;
        rb_self.with_conn(ruby, |conn| {
            let State::Body { streaming, .. } = conn.state else {
                return Err(Error::new(
                    ruby.exception_runtime_error(),
                    "body written before the head or after the end",
                ));
            };
            // SAFETY: copied into the buffer right away; no Ruby code runs
            // while the slice is borrowed.
            let bytes = unsafe { chunk.as_slice() };
            protocol::put_chunked(&mut conn.buf, kind::RESPONSE_BODY, bytes);
            if streaming || conn.buf.len() >= 256 * 1024 {
                conn.flush().map_err(|e| io_error(ruby, e))?;
                conn.state = State::Body {
                    streaming,
                    flushed: true,
                };
            }
            Ok(())
        })
    }

    fn finish(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        rb_self.with_conn(ruby, |conn| {
            protocol::put_frame(&mut conn.buf, kind::RESPONSE_END, b"");
            conn.state = State::Done;
            conn.flush().map_err(|e| io_error(ruby, e))
        })
    }

    fn fail(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        rb_self.with_conn(ruby, |conn| {
            conn.fail();
            conn.flush().map_err(|e| io_error(ruby, e))
        })
    }

    fn request(&self) -> u64 {
        self.request.load(Ordering::Relaxed)
    }
}

/// Defines `Rustrack::ResponseWriter` (made only by the worker: Ruby cannot
/// allocate one). Runs on the main thread of every process that makes
/// writers, before it makes one.
pub fn define(ruby: &Ruby, rustrack: RModule) -> Result<(), Error> {
    let class = rustrack.define_class("ResponseWriter", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("write_head", method!(Writer::write_head, 3))?;
    class.define_method("write_body", method!(Writer::write_body, 1))?;
    class.define_method("finish", method!(Writer::finish, 0))?;
    class.define_method("fail", method!(Writer::fail, 0))?;
    class.define_method("request", method!(Writer::request, 0))?;
    // Resolve the class magnus wraps writers in now, while one thread runs.
    // `#[magnus::wrap]` looks it up on first use (`Object.const_get`, a
    // Ruby call) inside a `std::sync::OnceLock`. Left to the request
    // threads, which all make their writer as they start, the first one
    // could let another run in the middle of that call (Ruby's timer
    // switches threads at any call), and that one would wait for the
    // OnceLock holding the GVL the first needs to finish: the worker hung
    // with every thread blocked, its requests unanswered.
    let _ = <Writer as magnus::TypedData>::class(ruby);
    Ok(())
}

fn io_error(ruby: &Ruby, e: std::io::Error) -> Error {
    Error::new(
        ruby.exception_io_error(),
        format!("lost the connection to the rustrack front end: {e}"),
    )
}

impl ResponseConn {
    /// Replaces an unsent response with a 500, or cuts off a response the
    /// client has started to receive.
    fn fail(&mut self) {
        match self.state {
            State::Done => {}
            State::Body { flushed: true, .. } => {
                protocol::put_frame(&mut self.buf, kind::ABORT, b"app raised while streaming");
            }
            State::Idle | State::Body { flushed: false, .. } => {
                self.buf.clear();
                let body = b"Internal Server Error\n";
                let mut head = ResponseHeadWriter::begin(&mut self.buf, 500);
                head.header(&mut self.buf, b"content-type", b"text/plain");
                head.header(&mut self.buf, b"content-length", b"22");
                head.finish(&mut self.buf).expect("a fixed small head fits");
                protocol::put_frame(&mut self.buf, kind::RESPONSE_BODY, body);
                protocol::put_frame(&mut self.buf, kind::RESPONSE_END, b"");
                self.record_status(500);
            }
        }
        self.state = State::Done;
    }

    fn record_status(&mut self, code: u16) {
        if let Sink::Discard { status } = &mut self.sink {
            *status = Some(code);
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let result = match &mut self.sink {
                Sink::Socket(stream) => stream.write_all(&self.buf),
                Sink::Discard { .. } => Ok(()),
            };
            self.buf.clear();
            result?;
        }
        Ok(())
    }
}

fn parse_status(ruby: &Ruby, status: Value) -> Result<u16, Error> {
    let n: i64 = status.funcall("to_i", ())?;
    if (100..=999).contains(&n) {
        Ok(n as u16)
    } else {
        Err(arg_error(
            ruby,
            format!("invalid Rack status {}", status.inspect()),
        ))
    }
}

fn arg_error(ruby: &Ruby, msg: String) -> Error {
    Error::new(ruby.exception_arg_error(), msg)
}

fn header_type_error(ruby: &Ruby, name: &[u8], value: Value) -> Error {
    // Copied before `inspect`, which may run app code.
    let name = String::from_utf8_lossy(name).into_owned();
    Error::new(
        ruby.exception_type_error(),
        format!(
            "value of header {name:?} must be a String (or an Array of them), got {}",
            value.class().inspect()
        ),
    )
}

/// RFC 9110 token characters.
pub fn check_header_name(name: &[u8]) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(format!(
            "invalid response header name {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    if name.eq_ignore_ascii_case(b"status") {
        return Err("response headers must not contain Status".to_string());
    }
    Ok(())
}

/// No CR, LF or NUL: they would let a header value end the head early.
pub fn check_header_value(name: &[u8], value: &[u8]) -> Result<(), String> {
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!(
            "invalid character in the value of response header {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_tokens() {
        assert!(check_header_name(b"X-Custom_1").is_ok());
        assert!(check_header_name(b"").is_err());
        assert!(check_header_name(b"Bad Name").is_err());
        assert!(check_header_name(b"a:b").is_err());
        assert!(check_header_name(b"Status").is_err());
    }

    #[test]
    fn header_values_cannot_split_the_head() {
        assert!(check_header_value(b"x", b"ok value\t!").is_ok());
        assert!(check_header_value(b"x", b"a\rb").is_err());
        assert!(check_header_value(b"x", b"a\0b").is_err());
    }
}
