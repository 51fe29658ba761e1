//! The per-request service: find the app the request is for (by host and
//! path prefix, when the instance serves several), answer from its
//! `public/` what a static file answers, else buffer the request body,
//! hand the request to `upstream` (which encodes it for one of the app's
//! workers and relays the answer), send the file an `X-Sendfile` header
//! names, log and count the outcome.

use std::convert::Infallible;
use std::fmt::Write as _;
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
use super::closing::{self, Closing, FirstByte};
use super::sendfile::Sendfile;
use super::static_files::StaticFiles;
use crate::apps::routes::Routes;
use crate::apps::Apps;
use crate::metrics::AppMetrics;
use crate::pool::Pool;
use crate::upstream::{
    self, error_response, Context, ExchangeOptions, Peer, Refused, ResponseBody, TrustedProxies,
};

/// What the front end keeps for one app.
pub struct Site {
    pub pool: Arc<Pool>,
    pub exchange: Arc<ExchangeOptions>,
    /// `None` with `--static-files false` or no `public/` directory.
    pub static_files: Option<StaticFiles>,
    pub sendfile: Sendfile,
    /// Owner for spilled body files (the app's `--user`).
    pub body_owner: Option<(u32, u32)>,
}

pub struct Front {
    pub apps: Arc<Apps>,
    /// Index-aligned with `apps.groups()` and `routes`.
    pub sites: Vec<Site>,
    pub routes: Routes,
    /// With several apps: where requests no app takes are counted.
    pub unrouted: Option<AppMetrics>,
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
    /// Set once the listeners closed: connections finish up and close.
    pub closing: Closing,
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
/// closes. A graceful stop lets the current request finish, and a
/// connection that has sent nothing yet its first one (`closing.rs`);
/// `_watcher` makes the stop wait for this connection.
pub(super) async fn serve_http1<IO>(
    io: TokioIo<IO>,
    peer: Peer,
    front: Arc<Front>,
    _watcher: Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stopping = front.closing.subscribe();
    let first = FirstByte::default();
    let io = TokioIo::new(first.wrap(io.into_inner()));
    let svc_front = front.clone();
    let service = service_fn(move |req| handle(svc_front.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(front.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    // Stop began, and the connection was still silent: waiting for its
    // first byte, at most until the grace is over.
    let mut awaiting_first = false;
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("client connection: {e}");
                }
                return;
            }
            _ = closing::began(&mut stopping), if !closing && !awaiting_first => {
                if first.seen() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    awaiting_first = true;
                }
            }
            _ = first.arrived(), if awaiting_first && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(closing::FIRST_BYTE_GRACE), if awaiting_first && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
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
        // Sized up front: format! would start small and grow.
        let mut id = String::with_capacity(24);
        let _ = write!(id, "{:016x}{:08x}", self.prefix, n as u32);
        id
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
    let (mut response, app) = match proxy(&front, peer, req, received, &id).await {
        Ok(r) | Err(r) => r,
    };
    if !response.headers().contains_key("x-request-id") {
        if let Ok(v) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-request-id", v);
        }
    }
    let counted = match app {
        Some(i) => Some(&front.sites[i].pool.metrics),
        None => front.unrouted.as_ref(),
    };
    if let Some(metrics) = counted {
        metrics.observe_request(response.status().as_u16(), start.elapsed().as_secs_f64());
    }
    // With several apps, each line names the app that answered.
    let app_name = match (front.apps.several(), app) {
        (true, Some(i)) => front.sites[i].pool.app_name(),
        (true, None) => "-",
        (false, _) => "",
    };
    tracing::info!(
        target: super::log_lines::ACCESS_TARGET,
        "{}{}{} {} {} {:.2}ms id={}",
        app_name,
        if app_name.is_empty() { "" } else { " " },
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

/// A response, and the app (its index) that the request went to, if any.
type Answer = (Response<ResponseBody>, Option<usize>);

async fn proxy(
    front: &Front,
    peer: Peer,
    req: Request<Incoming>,
    received: SystemTime,
    request_id: &str,
) -> Result<Answer, Answer> {
    let (parts, body) = req.into_parts();
    let unrouted = |r| (r, None);
    // Both framings at once is how request smuggling starts: a proxy in
    // front may have used the other one. Refuse, and close the connection.
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(unrouted(closing(error_response(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: both Content-Length and Transfer-Encoding\n",
        ))));
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
    // The same Host rules as for the app, before an app or file is chosen.
    let host = upstream::request::host(&parts).map_err(|e| unrouted(refused(e)))?;
    let host_name = host.map(|h| upstream::request::split_host(h).0);
    let Some(matched) = front.routes.find(host_name, parts.uri.path()) else {
        return Err(unrouted(error_response(
            StatusCode::NOT_FOUND,
            "404 Not Found: no app is served here for this host and path\n",
        )));
    };
    let app = matched.app;
    let site = &front.sites[app];
    let routed = |r| (r, Some(app));
    if let Some(files) = &site.static_files {
        let within = &parts.uri.path()[matched.script_name.len()..];
        if let Some(response) = files.serve_within(&parts, within) {
            return Ok(routed(response));
        }
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > front.max_body_size) {
        return Err(routed(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "413 Request body too large\n",
        )));
    }
    let buffered = body::buffer(
        body,
        front.max_body_size,
        front.body_buffer_size,
        &front.body_dir,
        site.body_owner,
    )
    .await
    .map_err(|e| {
        routed(match e {
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
        })
    })?;
    let ctx = Context {
        peer,
        trusted: &front.trusted,
        received,
        request_id,
        script_name: matched.script_name,
    };
    let req = upstream::request::encode(&parts, &ctx, buffered).map_err(|e| routed(refused(e)))?;
    let response = upstream::forward(&site.pool, req, &site.exchange)
        .await
        .map_err(|f| routed(upstream::failure_response(f)))?;
    Ok(routed(site.sendfile.apply(&parts, response)))
}
