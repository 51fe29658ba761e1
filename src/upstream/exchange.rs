//! One request/response exchange with a lent worker.
//!
//! The exchange runs in its own task, not in the client's connection task,
//! so it always reads the worker's response to the end, even when the
//! client has gone away: the worker's connection is never left in the
//! middle of a frame, and the worker is free as soon as it has written.
//! The response goes to the client as one buffered body when it arrived in
//! one piece (the common case: the worker writes head, body and end with a
//! single write), and otherwise as a stream fed by this task through
//! memory and then a file (`spool.rs`), so the worker never waits for a
//! slow client.
//!
//! Limits, all enforced here because only the exchange sees a request's
//! whole life:
//! - `--worker-timeout` covers the whole exchange, writing the request
//!   included (a worker that stopped reading is as stuck as one that stopped
//!   answering): past it the client gets 504 and the pool replaces the
//!   worker. A worker with several threads interrupts the request itself
//!   (`Rustrack::RequestTimeout`) so its other requests can finish: the
//!   exchange then reads the rest of that request's response (discarded)
//!   for up to `interrupt_grace`, and a worker that does not end it in that
//!   time could not be interrupted and is stopped at once;
//! - `--memory-limit-hard`: while waiting for the worker, its RSS is read
//!   from `/proc/PID/statm` every `HARD_LIMIT_POLL`; only an RSS over the
//!   limit is worth a precise (and dearer) `smaps_rollup` read; a worker
//!   over it is killed and the client gets 503;
//! - `--memory-limit`: checked the same cheap way right after each request,
//!   so a worker that crossed it is retired before it takes another.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::request::WireRequest;
use super::response::{head_to_http, ResponseBody};
use super::spool;
use super::UpstreamError;
use crate::pool::machine::Retire;
use crate::pool::{Lease, Outcome, WorkerConn};
use crate::protocol::{self, kind};

/// How often a busy worker's RSS is looked at under `--memory-limit-hard`.
const HARD_LIMIT_POLL: Duration = Duration::from_millis(100);

/// What an exchange needs to know besides the request.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    pub timeout: Option<Duration>,
    /// Bytes of a streamed response kept in memory before spilling to disk.
    pub response_buffer: usize,
    pub spool_dir: std::path::PathBuf,
    /// Bytes of private dirty + swap (`--memory-limit`).
    pub memory_limit: Option<u64>,
    /// Bytes of private dirty + swap (`--memory-limit-hard`).
    pub memory_limit_hard: Option<u64>,
    /// With several threads per worker: how long, after a timeout, the
    /// worker has to interrupt the request and end its response.
    pub interrupt_grace: Option<Duration>,
}

/// How long a worker with several threads has, past `--worker-timeout`, to
/// interrupt the stuck request and end its response.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// What the client's side hears back.
pub type Reply = oneshot::Sender<Result<Response<ResponseBody>, Failed>>;

/// How an exchange failed, from the client's side.
pub enum Failed {
    /// Nothing reached the worker: the request may go to another.
    Unsent(WireRequest),
    Error(UpstreamError),
}

/// How the exchange itself ended.
enum Ended {
    Finished(Outcome),
    /// The whole request reached the worker, which then outran the
    /// timeout; the client has its 504.
    TimedOutAfterSending,
}

/// Why reading from the worker stopped.
enum ReadError {
    Timeout,
    Broken(String),
    OverHardLimit(u64),
}

/// Watches a busy worker's memory against the hard limit.
struct Watch {
    pid: Option<u32>,
    hard: Option<u64>,
}

impl Watch {
    /// Waits until the worker passes the hard limit (forever without one).
    async fn over_hard_limit(&self) -> u64 {
        let (Some(pid), Some(limit)) = (self.pid, self.hard) else {
            return std::future::pending().await;
        };
        let mut poll = tokio::time::interval(HARD_LIMIT_POLL);
        poll.tick().await;
        loop {
            poll.tick().await;
            if let Some(bytes) = over_limit(pid, limit).await {
                return bytes;
            }
        }
    }
}

/// Private dirty + swap of `pid` when it is over `limit`. RSS (a counter
/// the kernel keeps, cheap to read) bounds private dirty from above, so
/// the page-table walk of `smaps_rollup` happens only when RSS is over.
async fn over_limit(pid: u32, limit: u64) -> Option<u64> {
    let rss = crate::procfs::rss(pid).ok()?;
    if rss <= limit {
        return None;
    }
    let precise = tokio::task::spawn_blocking(move || crate::procfs::memory(pid))
        .await
        .ok()?
        .ok()?;
    let bytes = precise.private_dirty + precise.swap;
    (bytes > limit).then_some(bytes)
}

/// Reads until the buffer starts with a whole frame and returns it. EOF is
/// an error: a response ends with an END or ABORT frame.
async fn next_frame(
    conn: &mut WorkerConn,
    deadline: Option<Instant>,
    watch: &Watch,
) -> Result<(u8, Bytes), ReadError> {
    loop {
        if let Some(frame) = buffered_frame(conn).map_err(ReadError::Broken)? {
            return Ok(frame);
        }
        conn.buf.reserve(64 * 1024);
        let read = conn.stream.read_buf(&mut conn.buf);
        let read = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, read)
                    .await
                    .map_err(|_| ReadError::Timeout),
                None => Ok(read.await),
            }
        };
        let read = tokio::select! {
            r = read => r?,
            bytes = watch.over_hard_limit() => return Err(ReadError::OverHardLimit(bytes)),
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
fn buffered_frame(conn: &mut WorkerConn) -> Result<Option<(u8, Bytes)>, String> {
    match protocol::decode_frame(&conn.buf) {
        Ok(Some(frame)) => {
            let kind = frame.kind;
            let mut whole = conn.buf.split_to(frame.wire_len());
            whole.advance(protocol::FRAME_HEADER_LEN);
            Ok(Some((kind, whole.freeze())))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("protocol error from worker: {e}")),
    }
}

/// Writes the request's pieces, in as few `writev`s as the socket takes.
async fn write_pieces(stream: &mut tokio::net::UnixStream, pieces: &[Bytes]) -> io::Result<()> {
    if let [one] = pieces {
        return stream.write_all(one).await;
    }
    let mut slices: Vec<io::IoSlice> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match stream.write_vectored(left).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => io::IoSlice::advance_slices(&mut left, n),
        }
    }
    Ok(())
}

/// Writes the request, bounded by the deadline.
async fn send(
    conn: &mut WorkerConn,
    wire: &[Bytes],
    deadline: Option<Instant>,
) -> Result<(), io::Error> {
    let write = write_pieces(&mut conn.stream, wire);
    match deadline {
        Some(at) => tokio::time::timeout_at(at, write)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => write.await,
    }
}

/// Sends `req` to the lent worker, relays the response to `reply`, and
/// hands the worker back with how it went.
pub async fn run(mut lease: Lease, req: WireRequest, reply: Reply, options: &ExchangeOptions) {
    let outcome = match exchange(&mut lease, req, reply, options).await {
        Ended::Finished(Outcome::Done { .. }) => Outcome::Done {
            memory: match (lease.pid(), options.memory_limit) {
                (Some(pid), Some(limit)) => over_limit(pid, limit).await,
                _ => None,
            },
        },
        Ended::Finished(other) => other,
        Ended::TimedOutAfterSending => match options.interrupt_grace {
            Some(grace) => interrupted(&mut lease, grace, options).await,
            None => Outcome::TimedOut { interrupted: false },
        },
    };
    lease.finish(outcome);
}

/// After a timeout on a worker with several threads: the worker interrupts
/// the request itself (`Rustrack::RequestTimeout`) and ends its response,
/// which nobody reads any more; meanwhile it takes no new request. Whether
/// it did so within `grace`.
async fn interrupted(lease: &mut Lease, grace: Duration, options: &ExchangeOptions) -> Outcome {
    lease.retire_worker(Retire::Timeout);
    let watch = Watch {
        pid: lease.pid(),
        hard: options.memory_limit_hard,
    };
    let deadline = Instant::now() + grace;
    let conn = lease.conn();
    loop {
        match next_frame(conn, Some(deadline), &watch).await {
            Ok((kind::RESPONSE_END | kind::ABORT, _)) => {
                return Outcome::TimedOut { interrupted: true }
            }
            Ok((kind::RESPONSE_HEAD | kind::RESPONSE_BODY, _)) => {}
            Ok(_) | Err(_) => return Outcome::TimedOut { interrupted: false },
        }
    }
}

async fn exchange(
    lease: &mut Lease,
    req: WireRequest,
    reply: Reply,
    options: &ExchangeOptions,
) -> Ended {
    use Ended::Finished;
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let watch = Watch {
        pid: lease.pid(),
        hard: options.memory_limit_hard,
    };
    if lease.peek().closed_while_idle() {
        let _ = reply.send(Err(Failed::Unsent(req)));
        return Finished(Outcome::Unsent);
    }
    let conn = lease.conn();
    if let Err(e) = send(conn, &req.wire, deadline).await {
        return Finished(match e.kind() {
            // The worker closed before reading anything.
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                let _ = reply.send(Err(Failed::Unsent(req)));
                Outcome::Unsent
            }
            // It stopped reading: out of step, whatever its threads do.
            io::ErrorKind::TimedOut => {
                let _ = reply.send(Err(Failed::Error(UpstreamError::Timeout)));
                Outcome::TimedOut { interrupted: false }
            }
            _ => {
                let msg = format!("writing the request to the worker: {e}");
                let _ = reply.send(Err(Failed::Error(UpstreamError::WorkerFailed)));
                Outcome::Broken(msg)
            }
        });
    }
    let failed = |reply: Reply, error: ReadError| match error {
        ReadError::Broken(msg) => {
            let _ = reply.send(Err(Failed::Error(UpstreamError::WorkerFailed)));
            Finished(Outcome::Broken(msg))
        }
        ReadError::Timeout => {
            let _ = reply.send(Err(Failed::Error(UpstreamError::Timeout)));
            Ended::TimedOutAfterSending
        }
        ReadError::OverHardLimit(bytes) => {
            let _ = reply.send(Err(Failed::Error(UpstreamError::MemoryLimit)));
            Finished(Outcome::OverHardLimit(bytes))
        }
    };
    let (kind, payload) = match next_frame(conn, deadline, &watch).await {
        Ok(f) => f,
        Err(e) => return failed(reply, e),
    };
    if kind != kind::RESPONSE_HEAD {
        let msg = format!("worker sent frame 0x{kind:02x} instead of a response head");
        return failed(reply, ReadError::Broken(msg));
    }
    let builder = match head_to_http(&payload) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("bad response head from worker: {e}");
            return failed(reply, ReadError::Broken(msg));
        }
    };

    // Take whatever body is already buffered; if that includes the end,
    // answer with a complete body.
    let mut chunks = VecDeque::new();
    loop {
        match buffered_frame(conn) {
            Err(msg) => return failed(reply, ReadError::Broken(msg)),
            Ok(None) => break,
            Ok(Some((kind::RESPONSE_BODY, data))) => chunks.push_back(data),
            Ok(Some((kind::RESPONSE_END, _))) => {
                let response = builder
                    .body(ResponseBody::Chunks(chunks))
                    .expect("valid parts");
                let _ = reply.send(Ok(response));
                drop(req);
                return Finished(Outcome::Done { memory: None });
            }
            Ok(Some((kind::ABORT, _))) => {
                // The worker reported and logged the error, and is fine.
                let _ = reply.send(Err(Failed::Error(UpstreamError::AppFailed)));
                return Finished(Outcome::Done { memory: None });
            }
            Ok(Some((other, _))) => {
                let msg = format!("unexpected frame 0x{other:02x} in a response");
                return failed(reply, ReadError::Broken(msg));
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
        match next_frame(conn, deadline, &watch).await {
            // The client may be gone; keep draining the worker anyway.
            Ok((kind::RESPONSE_BODY, data)) => tx.push(data),
            Ok((kind::RESPONSE_END, _)) => {
                tx.finish(Ok(()));
                return Finished(Outcome::Done { memory: None });
            }
            Ok((kind::ABORT, _)) => {
                tx.finish(Err("the app failed while streaming the body".into()));
                // The worker finished its side of the exchange: it is fine.
                return Finished(Outcome::Done { memory: None });
            }
            Ok((other, _)) => {
                let msg = format!("unexpected frame 0x{other:02x} in a response");
                tx.finish(Err(msg.clone()));
                return Finished(Outcome::Broken(msg));
            }
            Err(ReadError::Broken(msg)) => {
                tx.finish(Err(msg.clone()));
                return Finished(Outcome::Broken(msg));
            }
            Err(ReadError::Timeout) => {
                tx.finish(Err("the worker timed out mid-response".into()));
                return Ended::TimedOutAfterSending;
            }
            Err(ReadError::OverHardLimit(bytes)) => {
                tx.finish(Err(
                    "the worker passed --memory-limit-hard mid-response".into()
                ));
                return Finished(Outcome::OverHardLimit(bytes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;
    use tokio::sync::oneshot;

    use super::*;
    use crate::pool::machine::Config;
    use crate::pool::testing::FakePool;
    use crate::protocol::{kind, put_frame, ResponseHeadWriter};
    use crate::report::WorkerState;

    fn options(timeout_ms: Option<u64>) -> ExchangeOptions {
        ExchangeOptions {
            timeout: timeout_ms.map(Duration::from_millis),
            response_buffer: 1 << 20,
            spool_dir: std::env::temp_dir(),
            memory_limit: None,
            memory_limit_hard: None,
            interrupt_grace: None,
        }
    }

    fn request(body: usize) -> WireRequest {
        let mut wire = Vec::new();
        put_frame(&mut wire, kind::REQUEST_HEAD, b"head");
        crate::protocol::put_chunked(&mut wire, kind::BODY, &vec![b'b'; body]);
        put_frame(&mut wire, kind::END, b"");
        WireRequest {
            wire: vec![Bytes::from(wire)],
            body_file: None,
        }
    }

    fn head(status: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ResponseHeadWriter::begin(&mut out, status);
        w.header(&mut out, b"content-type", b"text/plain");
        w.finish(&mut out).unwrap();
        out
    }

    /// Reads one whole request (up to END) as a worker would.
    async fn read_request(worker: &mut UnixStream) -> usize {
        let mut buf = Vec::new();
        loop {
            let mut at = 0;
            while let Ok(Some(f)) = crate::protocol::decode_frame(&buf[at..]) {
                at += f.wire_len();
                if f.kind == kind::END {
                    return at;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = worker.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the front end closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn setup() -> (FakePool, UnixStream) {
        let mut fake = FakePool::start(Config::new(1, 1, 10));
        let id = fake.spawn_asked().await;
        let worker = fake.greet(id);
        fake.until("a ready worker", |s| {
            s.workers
                .first()
                .is_some_and(|w| w.state == WorkerState::Ready)
        })
        .await;
        (fake, worker)
    }

    async fn exchange_with(
        fake: &FakePool,
        req: WireRequest,
        opts: ExchangeOptions,
    ) -> (
        tokio::task::JoinHandle<()>,
        oneshot::Receiver<Result<Response<ResponseBody>, Failed>>,
    ) {
        let lease = fake.pool.checkout().await.unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move { run(lease, req, tx, &opts).await });
        (task, rx)
    }

    async fn body_text(r: Response<ResponseBody>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_response_written_at_once_comes_back_whole_and_frees_the_worker() {
        let (fake, mut worker) = setup().await;
        let (task, rx) = exchange_with(&fake, request(10), options(None)).await;
        read_request(&mut worker).await;
        let mut out = head(200);
        put_frame(&mut out, kind::RESPONSE_BODY, b"hello");
        put_frame(&mut out, kind::RESPONSE_END, b"");
        worker.write_all(&out).await.unwrap();
        let r = rx.await.unwrap().ok().unwrap();
        assert!(matches!(r.body(), ResponseBody::Chunks(_)));
        assert_eq!(r.status(), 200);
        assert_eq!(body_text(r).await, "hello");
        task.await.unwrap();
        let status = fake.pool.status();
        assert_eq!(status.workers[0].state, WorkerState::Ready);
        assert_eq!(status.workers[0].processed, 1);
    }

    #[tokio::test]
    async fn a_request_in_pieces_arrives_whole_through_partial_writes() {
        let (fake, mut worker) = setup().await;
        // Three pieces of 3 MB in all: far more than a socket buffer, so
        // writes end mid-piece and resume where they stopped.
        let mut first = Vec::new();
        put_frame(&mut first, kind::REQUEST_HEAD, b"head");
        crate::protocol::put_frame_header(&mut first, kind::BODY, crate::protocol::MAX_PAYLOAD);
        let body = Bytes::from(vec![b'b'; crate::protocol::MAX_PAYLOAD]);
        let mut tail = Vec::new();
        crate::protocol::put_chunked(&mut tail, kind::BODY, &vec![b'c'; 2_000_000]);
        put_frame(&mut tail, kind::END, b"");
        let req = WireRequest {
            wire: vec![Bytes::from(first), body, Bytes::from(tail)],
            body_file: None,
        };
        let expected = req.to_vec();
        let (task, rx) = exchange_with(&fake, req, options(Some(10_000))).await;
        let mut got = vec![0u8; expected.len()];
        for piece in got.chunks_mut(50_000) {
            worker.read_exact(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        assert!(got == expected, "the worker got other bytes than were sent");
        let mut out = head(200);
        put_frame(&mut out, kind::RESPONSE_END, b"");
        worker.write_all(&out).await.unwrap();
        assert_eq!(rx.await.unwrap().ok().unwrap().status(), 200);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_streamed_response_is_relayed_chunk_by_chunk() {
        let (fake, mut worker) = setup().await;
        let (task, rx) = exchange_with(&fake, request(0), options(None)).await;
        read_request(&mut worker).await;
        worker.write_all(&head(200)).await.unwrap();
        let r = rx.await.unwrap().ok().unwrap();
        assert!(matches!(r.body(), ResponseBody::Spooled(_)));
        for part in ["a", "b", "c"] {
            let mut out = Vec::new();
            put_frame(&mut out, kind::RESPONSE_BODY, part.as_bytes());
            worker.write_all(&out).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut end = Vec::new();
        put_frame(&mut end, kind::RESPONSE_END, b"");
        worker.write_all(&end).await.unwrap();
        assert_eq!(body_text(r).await, "abc");
        task.await.unwrap();
        assert_eq!(fake.pool.status().workers[0].processed, 1);
    }

    #[tokio::test]
    async fn an_app_error_before_the_body_is_a_500_and_the_worker_lives() {
        let (fake, mut worker) = setup().await;
        let (task, rx) = exchange_with(&fake, request(0), options(None)).await;
        read_request(&mut worker).await;
        let mut out = Vec::new();
        put_frame(&mut out, kind::ABORT, b"");
        // An ABORT where a head belongs is out of step: that is broken.
        worker.write_all(&out).await.unwrap();
        assert!(matches!(
            rx.await.unwrap(),
            Err(Failed::Error(UpstreamError::WorkerFailed))
        ));
        task.await.unwrap();
        // A head then ABORT is the app failing: the worker is fine.
        let (mut fake, mut worker) = setup().await;
        let (task, rx) = exchange_with(&fake, request(0), options(None)).await;
        read_request(&mut worker).await;
        let mut out = head(200);
        put_frame(&mut out, kind::ABORT, b"");
        worker.write_all(&out).await.unwrap();
        assert!(matches!(
            rx.await.unwrap(),
            Err(Failed::Error(UpstreamError::AppFailed))
        ));
        task.await.unwrap();
        assert_eq!(fake.pool.status().workers[0].state, WorkerState::Ready);
        assert!(fake.commands.try_recv().is_err(), "no replacement needed");
    }

    #[tokio::test]
    async fn a_worker_that_dies_mid_request_gives_a_502_and_is_replaced() {
        let (mut fake, mut worker) = setup().await;
        let (task, rx) = exchange_with(&fake, request(0), options(None)).await;
        read_request(&mut worker).await;
        drop(worker);
        assert!(matches!(
            rx.await.unwrap(),
            Err(Failed::Error(UpstreamError::WorkerFailed))
        ));
        task.await.unwrap();
        assert_eq!(fake.spawn_asked().await, 2);
    }

    #[tokio::test]
    async fn a_worker_gone_before_the_request_gets_it_back_to_resend() {
        let (fake, worker) = setup().await;
        drop(worker);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (task, rx) = exchange_with(&fake, request(5), options(None)).await;
        match rx.await.unwrap() {
            Err(Failed::Unsent(back)) => assert_eq!(back.to_vec(), request(5).to_vec()),
            _ => panic!("expected the request back"),
        }
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_timeout_covers_writing_to_a_worker_that_does_not_read() {
        let (mut fake, _worker) = setup().await;
        // Bigger than any socket buffer, and nobody reads it.
        let (task, rx) = exchange_with(&fake, request(8 << 20), options(Some(300))).await;
        let answer = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("an answer after the timeout");
        assert!(matches!(
            answer.unwrap(),
            Err(Failed::Error(UpstreamError::Timeout))
        ));
        task.await.unwrap();
        assert_eq!(fake.spawn_asked().await, 2);
        assert_eq!(fake.pool.status().worker_restarts["timeout"], 1);
    }

    #[tokio::test]
    async fn the_timeout_covers_waiting_for_the_response() {
        let (fake, mut worker) = setup().await;
        let (task, rx) = exchange_with(&fake, request(0), options(Some(200))).await;
        read_request(&mut worker).await;
        assert!(matches!(
            rx.await.unwrap(),
            Err(Failed::Error(UpstreamError::Timeout))
        ));
        task.await.unwrap();
    }
    /// A pool whose one worker has two sessions; returns the worker's ends.
    async fn setup_threaded() -> (FakePool, UnixStream, UnixStream) {
        let mut config = Config::new(1, 2, 10);
        config.threads = 2;
        let mut fake = FakePool::start(config);
        let id = fake.spawn_asked().await;
        let a = fake.greet_session(id, 0, 2);
        let b = fake.greet_session(id, 1, 2);
        fake.until("a ready worker", |s| {
            s.workers
                .first()
                .is_some_and(|w| w.state == WorkerState::Ready)
        })
        .await;
        (fake, a, b)
    }

    /// Whichever of the two sessions the request went to.
    async fn read_either<'a>(a: &'a mut UnixStream, b: &'a mut UnixStream) -> &'a mut UnixStream {
        tokio::select! {
            _ = a.readable() => { read_request(a).await; a }
            _ = b.readable() => { read_request(b).await; b }
        }
    }

    fn threaded_options(timeout_ms: u64, grace_ms: u64) -> ExchangeOptions {
        ExchangeOptions {
            interrupt_grace: Some(Duration::from_millis(grace_ms)),
            ..options(Some(timeout_ms))
        }
    }

    #[tokio::test]
    async fn with_threads_a_timed_out_request_the_worker_interrupts_costs_only_that_request() {
        let (mut fake, mut a, mut b) = setup_threaded().await;
        let (task, rx) = exchange_with(&fake, request(0), threaded_options(200, 5000)).await;
        let worker = read_either(&mut a, &mut b).await;
        assert!(matches!(
            rx.await.unwrap(),
            Err(Failed::Error(UpstreamError::Timeout))
        ));
        // The client has its 504; meanwhile the worker takes nothing new.
        assert_eq!(fake.spawn_asked().await, 2);
        assert_eq!(fake.pool.status().workers[0].state, WorkerState::Retiring);
        // It interrupts the request and ends the response (a 500 nobody
        // reads): the exchange ends without killing it.
        let mut out = head(500);
        put_frame(&mut out, kind::RESPONSE_END, b"");
        worker.write_all(&out).await.unwrap();
        task.await.unwrap();
        fake.until("the worker retired", |s| {
            s.workers.iter().all(|w| w.id != 1)
        })
        .await;
        assert_eq!(fake.pool.status().worker_restarts["timeout"], 1);
    }

    #[tokio::test]
    async fn with_threads_a_request_the_worker_cannot_interrupt_costs_the_worker_after_the_grace() {
        let (mut fake, mut a, mut b) = setup_threaded().await;
        let started = std::time::Instant::now();
        let (task, rx) = exchange_with(&fake, request(0), threaded_options(200, 300)).await;
        let _worker = read_either(&mut a, &mut b).await;
        assert!(matches!(
            rx.await.unwrap(),
            Err(Failed::Error(UpstreamError::Timeout))
        ));
        task.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(500));
        // Lost at once: nothing to wait for.
        fake.until("the worker gone", |s| s.workers.iter().all(|w| w.id != 1))
            .await;
        assert_eq!(fake.pool.status().worker_restarts["timeout"], 1);
        assert_eq!(fake.spawn_asked().await, 2);
    }
}
