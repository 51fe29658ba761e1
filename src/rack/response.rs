//! Writing a Rack response to the front end: `Rustrack::Native`.
//!
//! `Rustrack::RequestHandler.handle` (Ruby) calls these functions in order:
//! `write_head(status, headers, streaming)`, `write_body(chunk)` per chunk,
//! then `finish`; or `fail` when anything raised. Frames collect in one
//! buffer that is written with a single write(2) at the end of the response,
//! except for streaming bodies, which are flushed chunk by chunk so the
//! client sees each as the app produces it.
//!
//! The sink lives in a process-wide slot because Ruby calls these as plain
//! module functions; a worker has one connection and serves one request at
//! a time, so the mutex is never contended. The sink is that connection in
//! a worker; in the preloader, during warm-up (`warmup.rs`), it discards
//! every byte and keeps only each response's status, and it is removed
//! before the first fork so that no worker inherits it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use magnus::{
    function, prelude::*, value::ReprValue, Error, RArray, RHash, RModule, RString, Ruby, Value,
};

use crate::protocol::{self, kind, ResponseHeadWriter};

static CONN: Mutex<Option<ResponseConn>> = Mutex::new(None);
static DEFINED: AtomicBool = AtomicBool::new(false);

struct ResponseConn {
    sink: Sink,
    buf: Vec<u8>,
    state: State,
}

/// Where responses go.
enum Sink {
    /// A worker's connection to the front end.
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

/// Installs the worker's connection for the Native functions to write to.
pub fn install(stream: UnixStream) {
    install_sink(Sink::Socket(stream));
}

/// Installs a sink that throws responses away, keeping their status
/// (`discarded_status`), for requests nobody waits for.
pub fn install_discard() {
    install_sink(Sink::Discard { status: None });
}

fn install_sink(sink: Sink) {
    *CONN.lock().unwrap() = Some(ResponseConn {
        sink,
        buf: Vec::with_capacity(64 * 1024),
        state: State::Done,
    });
}

/// Removes the sink (a worker becoming a mold serves no requests; the
/// preloader's warm-up is over): until the next `install`,
/// `Rustrack::Native` raises.
pub fn uninstall() {
    *CONN.lock().unwrap() = None;
}

/// With a discarding sink: the status of the current request's response
/// (500 when the app raised before or while writing it), or None when no
/// head was written.
pub fn discarded_status() -> Option<u16> {
    match CONN.lock().unwrap().as_ref().map(|c| &c.sink) {
        Some(Sink::Discard { status }) => *status,
        _ => None,
    }
}

/// Marks the start of a new request's response.
pub fn begin_request() {
    if let Some(conn) = CONN.lock().unwrap().as_mut() {
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
pub fn ensure_finished() -> std::io::Result<()> {
    let mut guard = CONN.lock().unwrap();
    let Some(conn) = guard.as_mut() else {
        return Ok(());
    };
    if conn.state != State::Done {
        conn.fail();
    }
    conn.flush()
}

/// Defines `Rustrack::Native`, once per VM: the preloader defines it for
/// warm-up, and its forked workers inherit it (and call this again).
pub fn define(ruby: &Ruby, rustrack: RModule) -> Result<(), Error> {
    if DEFINED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let native = rustrack.define_module("Native")?;
    native.define_module_function("write_head", function!(write_head, 3))?;
    native.define_module_function("write_body", function!(write_body, 1))?;
    native.define_module_function("finish", function!(finish, 0))?;
    native.define_module_function("fail", function!(fail, 0))?;
    let _ = ruby;
    DEFINED.store(true, Ordering::SeqCst);
    Ok(())
}

fn io_error(ruby: &Ruby, e: std::io::Error) -> Error {
    Error::new(
        ruby.exception_io_error(),
        format!("lost the connection to the rustrack front end: {e}"),
    )
}

fn with_conn<T>(
    ruby: &Ruby,
    f: impl FnOnce(&mut ResponseConn) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut guard = CONN.lock().unwrap();
    match guard.as_mut() {
        Some(conn) => f(conn),
        None => Err(Error::new(
            ruby.exception_runtime_error(),
            "Rustrack::Native is only usable inside a rustrack worker",
        )),
    }
}

fn write_head(ruby: &Ruby, status: Value, headers: Value, streaming: bool) -> Result<(), Error> {
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
    with_conn(ruby, |conn| {
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
            // SAFETY: no Ruby code runs while this slice (and `bytes` below)
            // is borrowed, so nothing can modify, move or free the strings:
            // meanwhile we only convert values (RString/RArray::from_value),
            // read array elements, and build errors, which copy the bytes
            // before calling anything (`header_type_error`). GC cannot free
            // them either: the hash holds them and they are on our stack.
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

fn write_body(ruby: &Ruby, chunk: Value) -> Result<(), Error> {
    let chunk = RString::from_value(chunk).ok_or_else(|| {
        Error::new(
            ruby.exception_type_error(),
            format!(
                "Rack body yielded {}, not a String",
                chunk.class().inspect()
            ),
        )
    })?;
    with_conn(ruby, |conn| {
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

fn finish(ruby: &Ruby) -> Result<(), Error> {
    with_conn(ruby, |conn| {
        protocol::put_frame(&mut conn.buf, kind::RESPONSE_END, b"");
        conn.state = State::Done;
        conn.flush().map_err(|e| io_error(ruby, e))
    })
}

fn fail(ruby: &Ruby) -> Result<(), Error> {
    with_conn(ruby, |conn| {
        conn.fail();
        conn.flush().map_err(|e| io_error(ruby, e))
    })
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
