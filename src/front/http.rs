//! The per-request service: answer from `public/` what a static file
//! answers, else buffer the request body, hand the request to `upstream`
//! (which encodes it for a worker and relays the answer), send the file an
//! `X-Sendfile` header names, log and count the outcome.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};

use super::body::{self, BodyError};
use super::sendfile::Sendfile;
use super::static_files::StaticFiles;
use crate::pool::Pool;
use crate::upstream::{
    self, error_response, Context, ExchangeOptions, Peer, Refused, ResponseBody, TrustedProxies,
};

pub struct Front {
    pub pool: Arc<Pool>,
    pub exchange: Arc<ExchangeOptions>,
    pub max_body_size: u64,
    pub body_buffer_size: usize,
    pub body_dir: PathBuf,
    pub trusted: TrustedProxies,
    pub header_timeout: Duration,
    /// `--proxy-protocol`: a connection may start with a PROXY header.
    pub proxy_protocol: bool,
    /// Request ids made here: a random prefix per instance, then a count.
    pub request_ids: RequestIds,
    /// `--health-check-path`.
    pub health_path: Option<String>,
    /// Set on a graceful stop: the health check answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// Owner for spilled body files (`--user`).
    pub body_owner: Option<(u32, u32)>,
    /// `None` with `--static-files false` or no `public/` directory.
    pub static_files: Option<StaticFiles>,
    pub sendfile: Sendfile,
}

/// Serves HTTP/1.1 on one accepted client connection, in its own task.
pub fn serve_connection<IO>(
    io: TokioIo<IO>,
    peer: Peer,
    front: &Arc<Front>,
    graceful: &GracefulShutdown,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(serve_http1(io, peer, front.clone(), graceful.watcher()));
}

/// HTTP/1.1 on a connection (plain, or TLS after its handshake) until it
/// closes; `watcher` lets a graceful stop finish its current request.
pub(super) async fn serve_http1<IO>(
    io: TokioIo<IO>,
    peer: Peer,
    front: Arc<Front>,
    watcher: Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc_front = front.clone();
    let service = service_fn(move |req| handle(svc_front.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(front.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("client connection: {e}");
    }
}

/// Makes `X-Request-Id`s: unique across instances (a random 64-bit prefix
/// drawn at start) and cheap (a counter), 24 hex digits.
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        // Without randomness ids stay unique per instance, which is most
        // of their use; the time makes a clash across instances unlikely.
        let prefix =
            match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
                Ok(8) => u64::from_le_bytes(bytes),
                _ => SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
            };
        RequestIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    fn make(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:08x}", self.prefix, n as u32)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// The client's `X-Request-Id` when it is a sane token (printable ASCII,
/// at most 200 bytes), else a new one.
fn request_id(front: &Front, req: &Request<Incoming>) -> String {
    match req.headers().get("x-request-id").map(|v| v.as_bytes()) {
        Some(v)
            if !v.is_empty() && v.len() <= 200 && v.iter().all(|b| (0x21..0x7f).contains(b)) =>
        {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => front.request_ids.make(),
    }
}

pub(super) async fn handle(
    front: Arc<Front>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    if let Some(health) = super::health::answer(&front, &req) {
        return Ok(health);
    }
    let start = Instant::now();
    let received = SystemTime::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let id = request_id(&front, &req);
    let mut response = match proxy(&front, peer, req, received, &id).await {
        Ok(r) | Err(r) => r,
    };
    if !response.headers().contains_key("x-request-id") {
        if let Ok(v) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-request-id", v);
        }
    }
    front
        .pool
        .metrics
        .observe_request(response.status().as_u16(), start.elapsed().as_secs_f64());
    tracing::info!(
        target: "rustrack::access",
        "{} {} {} {:.2}ms id={}",
        method,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0,
        id
    );
    Ok(response)
}

/// Marks a response as the connection's last: after a framing error the
/// rest of the connection's bytes cannot be trusted.
fn closing(mut r: Response<ResponseBody>) -> Response<ResponseBody> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn proxy(
    front: &Front,
    peer: Peer,
    req: Request<Incoming>,
    received: SystemTime,
    request_id: &str,
) -> Result<Response<ResponseBody>, Response<ResponseBody>> {
    let (parts, body) = req.into_parts();
    // Both framings at once is how request smuggling starts: a proxy in
    // front may have used the other one. Refuse, and close the connection.
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(closing(error_response(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: both Content-Length and Transfer-Encoding\n",
        )));
    }
    let refused = |e: Refused| match e {
        Refused::BadHost(_) => closing(error_response(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: an HTTP/1.1 request needs exactly one Host header\n",
        )),
        Refused::TooLarge(_) => error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "431 Request headers too large\n",
        ),
    };
    if let Some(files) = &front.static_files {
        // The same Host rules as for the app, before any file is looked at.
        upstream::request::host(&parts).map_err(refused)?;
        if let Some(response) = files.serve(&parts) {
            return Ok(response);
        }
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > front.max_body_size) {
        return Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Request body too large\n",
        ));
    }
    let buffered = body::buffer(
        body,
        front.max_body_size,
        front.body_buffer_size,
        &front.body_dir,
        front.body_owner,
    )
    .await
    .map_err(|e| match e {
        BodyError::TooLarge(_) => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Request body too large\n",
        ),
        BodyError::Client(_) => closing(error_response(
            StatusCode::BAD_REQUEST,
            "400 Bad request body\n",
        )),
        BodyError::Io(e) => {
            tracing::error!("buffering a request body: {e}");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Could not buffer the request body\n",
            )
        }
    })?;
    let ctx = Context {
        peer,
        trusted: &front.trusted,
        received,
        request_id,
    };
    let req = upstream::request::encode(&parts, &ctx, buffered).map_err(refused)?;
    let response = upstream::forward(&front.pool, req, &front.exchange)
        .await
        .map_err(upstream::failure_response)?;
    Ok(front.sendfile.apply(&parts, response))
}
