//! One request/response exchange with a worker over its connection.
//!
//! The exchange runs in its own task, not in the client's connection task,
//! so it always reads the worker's response to the end, even when the
//! client has gone away: the worker's connection is never left in the
//! middle of a frame, and the worker is free as soon as it has written.
//! The response goes to the client as one buffered body when it arrived in
//! one piece (the common case: the worker writes head, body and end with a
//! single write), and otherwise as a stream fed by this task.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::spool::{self, SpoolReader, SpoolWriter};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::protocol::{self, kind, ProtocolError, ResponseHead};

/// A worker's connection, owned by the pool while the worker is idle and
/// by an exchange while it serves.
#[derive(Debug)]
pub struct WorkerConn {
    pub stream: UnixStream,
    pub buf: BytesMut,
}

impl WorkerConn {
    pub fn new(stream: UnixStream, leftover: BytesMut) -> Self {
        WorkerConn {
            stream,
            buf: leftover,
        }
    }
}

/// A request ready to go to a worker: the encoded frames, and the spilled
/// body file (if any), kept until the exchange is over.
pub struct ProxyRequest {
    pub wire: Bytes,
    pub body_file: Option<tempfile::TempPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The queue is full (503).
    QueueFull,
    /// No worker can run: the app fails to start (503).
    Unavailable,
    /// The worker died or broke the protocol mid-request (502).
    WorkerFailed(String),
    /// The app raised after its response had started (500).
    AppFailed,
    /// The worker took longer than `--worker-timeout` (504).
    Timeout,
    /// The request waited longer than `--max-request-queue-time` (504).
    QueueTimeout,
}

/// How an exchange ended badly.
#[derive(Debug)]
pub enum Failure {
    /// The worker was gone before it could have read the request: safe to
    /// send the request elsewhere.
    Unsent,
    /// The worker died or broke the protocol mid-request (502).
    Broken(String),
    /// The worker outran `--worker-timeout` (504).
    TimedOut,
    /// The app raised after starting its response; the worker is fine (500).
    AppFailed,
}

/// Why reading from a worker stopped.
enum ReadError {
    Timeout,
    Broken(String),
}

/// The body of a proxied response.
pub enum ResponseBody {
    Chunks(VecDeque<Bytes>),
    Spooled(SpoolReader),
}

impl ResponseBody {
    pub fn text(s: &'static str) -> Self {
        ResponseBody::Chunks(VecDeque::from([Bytes::from_static(s.as_bytes())]))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Chunks(chunks) => {
                Poll::Ready(chunks.pop_front().map(|c| Ok(Frame::data(c))))
            }
            ResponseBody::Spooled(reader) => Pin::new(reader).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Chunks(c) if c.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Chunks(c) => SizeHint::with_exact(c.iter().map(|b| b.len() as u64).sum()),
            ResponseBody::Spooled(_) => SizeHint::default(),
        }
    }
}

/// Response headers that describe the worker connection, not the response;
/// hyper sets its own framing.
fn is_hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"transfer-encoding",
        b"proxy-connection",
        b"upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn build_response(head: &ResponseHead<'_>) -> Result<http::response::Builder, ProtocolError> {
    let mut builder = Response::builder().status(
        StatusCode::from_u16(head.status).map_err(|_| ProtocolError::BadStatus(head.status))?,
    );
    let headers = builder.headers_mut().expect("fresh builder");
    headers.reserve(head.headers.len());
    for &(name, value) in &head.headers {
        if is_hop_by_hop(name) {
            continue;
        }
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => tracing::warn!(
                "dropping invalid response header {:?}",
                String::from_utf8_lossy(name)
            ),
        }
    }
    Ok(builder)
}

impl WorkerConn {
    /// Reads until the buffer starts with a whole frame; returns its kind
    /// and payload range length. EOF is an error.
    async fn next_frame(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(u8, Bytes), ReadError> {
        loop {
            match protocol::decode_frame(&self.buf) {
                Ok(Some(frame)) => {
                    let kind = frame.kind;
                    let len = frame.wire_len();
                    let mut whole = self.buf.split_to(len);
                    whole.advance(protocol::FRAME_HEADER_LEN);
                    return Ok((kind, whole.freeze()));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ReadError::Broken(format!(
                        "protocol error from worker: {e}"
                    )))
                }
            }
            self.buf.reserve(64 * 1024);
            let read = self.stream.read_buf(&mut self.buf);
            let read = match deadline {
                Some(at) => match tokio::time::timeout_at(at, read).await {
                    Ok(r) => r,
                    Err(_) => return Err(ReadError::Timeout),
                },
                None => read.await,
            };
            match read {
                Ok(0) => {
                    return Err(ReadError::Broken(
                        "the worker closed its connection mid-request".to_string(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(ReadError::Broken(format!("reading from the worker: {e}"))),
            }
        }
    }

    /// A frame already in the buffer, without reading.
    fn buffered_frame(&mut self) -> Result<Option<(u8, Bytes)>, String> {
        match protocol::decode_frame(&self.buf) {
            Ok(Some(frame)) => {
                let kind = frame.kind;
                let mut whole = self.buf.split_to(frame.wire_len());
                whole.advance(protocol::FRAME_HEADER_LEN);
                Ok(Some((kind, whole.freeze())))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("protocol error from worker: {e}")),
        }
    }

    /// True when the worker has closed its end while idle. A worker that
    /// was killed while idle is noticed here, before the request is sent.
    fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        // Ok(0) is EOF; Ok(n) is data nobody asked for, which means the
        // worker is out of step: either way it must not get this request.
        // WouldBlock (the normal case) means alive and quiet.
        self.stream.try_read(&mut probe).is_ok()
    }
}

/// The first part of an exchange, done inline in the client's request
/// future: send the request, read the response head and whatever body is
/// already there. A response that arrived whole comes back complete;
/// otherwise the caller gets the response with a spooled body plus the
/// writer for the rest, to finish with [`stream_rest`] in a task of its own.
pub async fn send_and_read_head(
    conn: &mut WorkerConn,
    req: &ProxyRequest,
    options: &ExchangeOptions,
    deadline: Option<tokio::time::Instant>,
    on_sent: impl FnOnce(),
) -> Result<(Response<ResponseBody>, Option<SpoolWriter>), Failure> {
    if conn.closed_while_idle() {
        return Err(Failure::Unsent);
    }
    if let Err(e) = conn.stream.write_all(&req.wire).await {
        // EPIPE/ECONNRESET: the worker closed before reading anything.
        if matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Err(Failure::Unsent);
        }
        return Err(Failure::Broken(format!(
            "writing the request to the worker: {e}"
        )));
    }
    on_sent();
    let (kind, payload) = match conn.next_frame(deadline).await {
        Ok(f) => f,
        Err(ReadError::Broken(msg)) => return Err(Failure::Broken(msg)),
        Err(ReadError::Timeout) => return Err(Failure::TimedOut),
    };
    if kind != kind::RESPONSE_HEAD {
        return Err(Failure::Broken(format!(
            "worker sent frame 0x{kind:02x} instead of a response head"
        )));
    }
    let builder = ResponseHead::decode(&payload)
        .and_then(|h| build_response(&h))
        .map_err(|e| Failure::Broken(format!("bad response head from worker: {e}")))?;

    // Take whatever body is already buffered; if that includes the end,
    // answer with a complete body.
    let mut chunks = VecDeque::new();
    loop {
        match conn.buffered_frame().map_err(Failure::Broken)? {
            None => break,
            Some((kind::RESPONSE_BODY, data)) => chunks.push_back(data),
            Some((kind::RESPONSE_END, _)) => {
                let response = builder
                    .body(ResponseBody::Chunks(chunks))
                    .expect("valid parts");
                return Ok((response, None));
            }
            // The worker reported and logged the error, and is fine.
            Some((kind::ABORT, _)) => return Err(Failure::AppFailed),
            Some((other, _)) => {
                return Err(Failure::Broken(format!(
                    "unexpected frame 0x{other:02x} in a response"
                )))
            }
        }
    }

    // The rest streams through memory and then a file, so the worker never
    // waits for the client.
    let (tx, rx) = spool::spool(options.response_buffer, options.spool_dir.clone());
    for c in chunks {
        tx.push(c);
    }
    let response = builder
        .body(ResponseBody::Spooled(rx))
        .expect("valid parts");
    Ok((response, Some(tx)))
}

/// The rest of a streamed response, read as fast as the worker writes it.
pub async fn stream_rest(
    conn: &mut WorkerConn,
    tx: SpoolWriter,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), Failure> {
    loop {
        match conn.next_frame(deadline).await {
            // The client may be gone; keep draining the worker anyway.
            Ok((kind::RESPONSE_BODY, data)) => tx.push(data),
            Ok((kind::RESPONSE_END, _)) => {
                tx.finish(Ok(()));
                return Ok(());
            }
            Ok((kind::ABORT, _)) => {
                tx.finish(Err("the app failed while streaming the body".into()));
                // The worker finished its side of the exchange: it is fine.
                return Ok(());
            }
            Ok((other, _)) => {
                let msg = format!("unexpected frame 0x{other:02x} in a response");
                tx.finish(Err(msg.clone()));
                return Err(Failure::Broken(msg));
            }
            Err(ReadError::Broken(msg)) => {
                tx.finish(Err(msg.clone()));
                return Err(Failure::Broken(msg));
            }
            Err(ReadError::Timeout) => {
                tx.finish(Err("the worker timed out mid-response".into()));
                return Err(Failure::TimedOut);
            }
        }
    }
}

/// Reads and discards the rest of a response whose client went away, so
/// the worker's connection is back at a frame boundary.
pub async fn drain(
    conn: &mut WorkerConn,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), Failure> {
    loop {
        match conn.next_frame(deadline).await {
            Ok((kind::RESPONSE_END | kind::ABORT, _)) => return Ok(()),
            Ok(_) => {}
            Err(ReadError::Broken(msg)) => return Err(Failure::Broken(msg)),
            Err(ReadError::Timeout) => return Err(Failure::TimedOut),
        }
    }
}

/// What an exchange needs to know besides the request.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    pub timeout: Option<std::time::Duration>,
    /// Bytes of a streamed response kept in memory before spilling to disk.
    pub response_buffer: usize,
    pub spool_dir: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_recognised() {
        assert!(is_hop_by_hop(b"Transfer-Encoding"));
        assert!(!is_hop_by_hop(b"content-length"));
    }
}
