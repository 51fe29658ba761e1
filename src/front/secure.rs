//! One TLS client connection, from handshake to close: the handshake runs
//! in the connection's own task (never in the accept loop) within
//! `--header-timeout`; ALPN then picks HTTP/2 (`h2`) or HTTP/1.1 (anything
//! else, or no ALPN). Both serve every request through the same
//! `http::handle` as plain HTTP/1.1: body buffering, limits, the worker
//! exchange, the access log and metrics.
//!
//! HTTP/2 has limits of its own (docs/architecture.md, "TLS and HTTP/2"):
//! at most `MAX_CONCURRENT_STREAMS` streams at once, a header list no
//! larger than HTTP/1.1's head, an idle connection closed after
//! `--header-timeout` as HTTP/1.1 closes an idle keep-alive one, and a
//! budget of cancelled requests (the "rapid reset" pattern) past which the
//! connection gets GOAWAY.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::closing;
use super::http::{handle, serve_http1, Front};
use super::tls::{Tls, ALPN_H2};
use crate::upstream::{error_response, Peer};

/// Streams one HTTP/2 connection may have open at once (RFC 9113 asks for
/// at least 100; hyper's default is 200). Each open stream can hold a
/// buffered request body, so this also bounds a connection's memory.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// The largest header list an HTTP/2 request may send: the size of the
/// read buffer that bounds an HTTP/1.1 request head (hyper's default,
/// 8 KiB + 100 × 4 KiB), so neither protocol accepts a larger head.
pub const MAX_HEADER_LIST_SIZE: u32 = 8192 + 4096 * 100;

/// Header fields an HTTP/2 request may carry, as hyper's HTTP/1.1 parser
/// allows; more gets 431 there too.
pub const MAX_HEADERS: usize = 100;

/// Streams the client may reset before hyper has accepted them (h2's
/// `max_pending_accept_reset_streams`); past that, GOAWAY
/// ENHANCE_YOUR_CALM.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams h2 itself may reset for the client's protocol errors before it
/// closes the connection (hyper's default is 1024).
const MAX_LOCAL_ERROR_RESETS: usize = 100;

/// Requests the client may cancel (reset the stream before the response
/// head was ready) before the connection gets GOAWAY, once they also
/// outnumber the requests it let finish. A browser cancels a few when the
/// user navigates away; a rapid-reset client cancels every one.
const CANCEL_BUDGET: u64 = 32;

/// Starts serving one accepted TCP connection over TLS, in its own task.
pub fn serve(
    stream: TcpStream,
    peer: Peer,
    front: &Arc<Front>,
    tls: &Arc<Tls>,
    graceful: &GracefulShutdown,
) {
    // Taken now, so a graceful stop waits for this connection's handshake
    // and requests like any other connection's.
    let watcher = graceful.watcher();
    tokio::spawn(connection(
        stream,
        peer,
        front.clone(),
        tls.clone(),
        watcher,
    ));
}

async fn connection(
    stream: TcpStream,
    peer: Peer,
    front: Arc<Front>,
    tls: Arc<Tls>,
    watcher: Watcher,
) {
    let mut stopping = front.closing.subscribe();
    let handshake = tokio::time::timeout(front.header_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            // Scanners, plain HTTP sent to the TLS port, untrusted
            // certificates: the client's business, not an operator's.
            Ok(Err(e)) => return tracing::debug!("TLS handshake with {}: {e}", remote(peer)),
            Err(_) => {
                return tracing::debug!(
                    "TLS handshake with {} took over {:?} (--header-timeout)",
                    remote(peer),
                    front.header_timeout
                )
            }
        },
        // A handshake under way when the stop began may finish within the
        // grace a silent HTTP/1.1 connection gets (`closing.rs`).
        _ = closing::grace_over(&mut stopping) => return,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let io = TokioIo::new(stream);
    if h2 {
        serve_h2(io, peer, front, stopping, watcher).await;
    } else {
        serve_http1(io, peer, front, watcher).await;
    }
}

fn remote(peer: Peer) -> String {
    match peer {
        Peer::Tcp { remote, .. } => remote.to_string(),
        Peer::Unix => "unix".into(),
    }
}

/// What one HTTP/2 connection's requests are doing: how many are open,
/// since when none is, and how many the client cancelled or let finish.
struct Streams {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
    cancelled: AtomicU64,
    finished: AtomicU64,
    /// Woken when the cancel budget is spent.
    over_budget: Notify,
}

impl Streams {
    fn new() -> Streams {
        Streams {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            cancelled: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            over_budget: Notify::new(),
        }
    }

    /// `None` while a request is open, else when the last one ended.
    fn idle_since(&self) -> Option<Instant> {
        let since = self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.open.load(Ordering::SeqCst) == 0).then_some(*since)
    }
}

/// Held by each request while hyper polls it: hyper drops a request's
/// future when the client resets its stream, so a guard dropped before
/// `finish` is a cancelled request.
struct InFlight {
    streams: Arc<Streams>,
    finished: bool,
}

impl InFlight {
    fn new(streams: &Arc<Streams>) -> InFlight {
        streams.open.fetch_add(1, Ordering::SeqCst);
        InFlight {
            streams: streams.clone(),
            finished: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.streams;
        if self.finished {
            s.finished.fetch_add(1, Ordering::Relaxed);
        } else {
            let cancelled = s.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
            if cancelled > CANCEL_BUDGET && cancelled > s.finished.load(Ordering::Relaxed) {
                s.over_budget.notify_one();
            }
        }
        // The lock orders this with `idle_since`: a reader sees either
        // the stream open or the new idle time.
        let mut since = s.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        if s.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

async fn serve_h2(
    io: TokioIo<tokio_rustls::server::TlsStream<TcpStream>>,
    peer: Peer,
    front: Arc<Front>,
    mut stopping: watch::Receiver<bool>,
    // Held until the connection ends, so that a graceful stop waits for it.
    _watcher: Watcher,
) {
    let streams = Arc::new(Streams::new());
    let svc_streams = streams.clone();
    let svc_front = front.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let front = svc_front.clone();
        let guard = InFlight::new(&svc_streams);
        async move {
            // The whole guard moves in (a closure would capture only the
            // field assigned below, and drop the guard at once).
            let mut guard = guard;
            // hyper polls a new stream's request once before it looks for
            // the client's RST_STREAM; yielding first lets a reset that
            // arrived with the HEADERS cancel the request before it can
            // take a worker.
            tokio::task::yield_now().await;
            let response = if req.headers().len() > MAX_HEADERS {
                Ok(error_response(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "431 Request headers too large\n",
                ))
            } else {
                handle(front, peer, req).await
            };
            guard.finished = true;
            response
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle_timeout = front.header_timeout;
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("HTTP/2 connection from {}: {e}", remote(peer));
                }
                return;
            }
            _ = stopping.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle(&streams, idle_timeout), if !closing => {
                tracing::debug!(
                    "HTTP/2 connection from {} idle for {idle_timeout:?}: closing",
                    remote(peer)
                );
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = streams.over_budget.notified(), if !closing => {
                tracing::warn!(
                    "HTTP/2 client {} cancelled {} requests and let {} finish: \
                     closing the connection (rapid reset?)",
                    remote(peer),
                    streams.cancelled.load(Ordering::Relaxed),
                    streams.finished.load(Ordering::Relaxed)
                );
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Resolves once no request has been open on the connection for `timeout`.
async fn idle(streams: &Streams, timeout: Duration) {
    loop {
        match streams.idle_since() {
            Some(since) if since.elapsed() >= timeout => return,
            Some(since) => tokio::time::sleep_until((since + timeout).into()).await,
            None => tokio::time::sleep(timeout).await,
        }
    }
}
