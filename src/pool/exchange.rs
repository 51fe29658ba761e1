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

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::spool::{self, SpoolReader};

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

pub type Reply = oneshot::Sender<Result<Response<ResponseBody>, ProxyError>>;

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
pub enum Failure {
    /// The worker was gone before it could have read the request: safe to
    /// send the request elsewhere.
    Unsent(ProxyRequest, Reply),
    /// The worker failed during the request; the client got a 502 (or a
    /// truncated stream) already.
    Broken(String),
    /// The worker outran `--worker-timeout`; the client got a 504.
    TimedOut,
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

/// Sends `req` to the worker and relays the response to `reply`. With a
/// `timeout`, a worker that has not finished its response by then is
/// given up on: the client gets 504 (or a cut-off stream).
pub async fn run(
    conn: &mut WorkerConn,
    req: ProxyRequest,
    reply: Reply,
    options: &ExchangeOptions,
) -> Result<(), Failure> {
    let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
    if conn.closed_while_idle() {
        return Err(Failure::Unsent(req, reply));
    }
    if let Err(e) = conn.stream.write_all(&req.wire).await {
        // EPIPE/ECONNRESET: the worker closed before reading anything.
        if matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Err(Failure::Unsent(req, reply));
        }
        let msg = format!("writing the request to the worker: {e}");
        let _ = reply.send(Err(ProxyError::WorkerFailed(msg.clone())));
        return Err(Failure::Broken(msg));
    }

    let fail = |reply: Reply, msg: String| {
        let _ = reply.send(Err(ProxyError::WorkerFailed(msg.clone())));
        Failure::Broken(msg)
    };
    let (kind, payload) = match conn.next_frame(deadline).await {
        Ok(f) => f,
        Err(ReadError::Broken(msg)) => return Err(fail(reply, msg)),
        Err(ReadError::Timeout) => {
            let _ = reply.send(Err(ProxyError::Timeout));
            return Err(Failure::TimedOut);
        }
    };
    if kind != kind::RESPONSE_HEAD {
        return Err(fail(
            reply,
            format!("worker sent frame 0x{kind:02x} instead of a response head"),
        ));
    }
    let builder = match ResponseHead::decode(&payload).and_then(|h| build_response(&h)) {
        Ok(b) => b,
        Err(e) => return Err(fail(reply, format!("bad response head from worker: {e}"))),
    };

    // Take whatever body is already buffered; if that includes the end,
    // answer with a complete body.
    let mut chunks = VecDeque::new();
    loop {
        match conn.buffered_frame() {
            Err(msg) => return Err(fail(reply, msg)),
            Ok(None) => break,
            Ok(Some((kind::RESPONSE_BODY, data))) => chunks.push_back(data),
            Ok(Some((kind::RESPONSE_END, _))) => {
                let _ = reply.send(Ok(builder
                    .body(ResponseBody::Chunks(chunks))
                    .expect("valid parts")));
                drop(req);
                return Ok(());
            }
            Ok(Some((kind::ABORT, _))) => {
                // The worker reported and logged the error, and is fine.
                let _ = reply.send(Err(ProxyError::AppFailed));
                return Ok(());
            }
            Ok(Some((other, _))) => {
                return Err(fail(
                    reply,
                    format!("unexpected frame 0x{other:02x} in a response"),
                ))
            }
        }
    }

    // Stream the rest as it comes, through memory and then a file, so the
    // worker never waits for the client.
    let (tx, rx) = spool::spool(options.response_buffer, options.spool_dir.clone());
    for c in chunks {
        tx.push(c);
    }
    let _ = reply.send(Ok(builder
        .body(ResponseBody::Spooled(rx))
        .expect("valid parts")));
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
