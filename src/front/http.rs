//! The HTTP side of the front end: accept loops, and the per-request
//! service that buffers the request, encodes it for a worker, submits it to
//! the pool and maps the outcome to an HTTP response.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};

use super::body::{self, BodyError, Buffered};
use crate::pool::exchange::{ProxyError, ProxyRequest, ResponseBody};
use crate::pool::Pool;
use crate::protocol::{self, kind, RequestHead};

pub struct Front {
    pub pool: Arc<Pool>,
    pub max_body_size: u64,
    pub body_buffer_size: usize,
    pub body_dir: PathBuf,
    pub trust_proxy: bool,
    pub header_timeout: Duration,
    /// Owner for spilled body files (`--user`).
    pub body_owner: Option<(u32, u32)>,
}

/// Who is on the other end of a client connection.
#[derive(Clone, Copy)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
    },
    Unix,
}

/// Serves `GET /metrics` (Prometheus text format) on its own listener, so
/// that scrapes never queue behind app requests.
pub async fn serve_metrics(listener: TcpListener, pool: Arc<Pool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let pool = pool.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let pool = pool.clone();
            async move {
                let response = if req.uri().path() == "/metrics" {
                    let text = pool.metrics.render(&pool.status());
                    let mut r = Response::new(ResponseBody::Chunks([Bytes::from(text)].into()));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                } else {
                    error_response(StatusCode::NOT_FOUND, "404 Not Found: try /metrics\n")
                };
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn accept_tcp(listener: TcpListener, front: Arc<Front>, graceful: Arc<GracefulShutdown>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        serve_connection(
            TokioIo::new(stream),
            Peer::Tcp { remote, local },
            &front,
            &graceful,
        );
    }
}

pub async fn accept_unix(
    listener: UnixListener,
    front: Arc<Front>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        serve_connection(TokioIo::new(stream), Peer::Unix, &front, &graceful);
    }
}

fn serve_connection<IO>(
    io: TokioIo<IO>,
    peer: Peer,
    front: &Arc<Front>,
    graceful: &GracefulShutdown,
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
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("client connection: {e}");
        }
    });
}

async fn handle(
    front: Arc<Front>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let response = match proxy(&front, peer, req).await {
        Ok(r) | Err(r) => r,
    };
    front
        .pool
        .metrics
        .observe_request(response.status().as_u16(), start.elapsed().as_secs_f64());
    tracing::info!(
        target: "rustrack::access",
        "{} {} {} {:.2}ms",
        method,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0
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

fn error_response(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::text(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn proxy(
    front: &Front,
    peer: Peer,
    req: Request<Incoming>,
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
    let req = encode(&parts, peer, front.trust_proxy, buffered).map_err(|_| {
        error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "431 Request headers too large\n",
        )
    })?;
    front.pool.submit(req).await.map_err(|e| match e {
        ProxyError::QueueFull => {
            let mut r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: request queue full\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        ProxyError::Unavailable => {
            let mut r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: the app cannot be started (see the server log)\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        ProxyError::WorkerFailed(_) => error_response(
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the app's process failed\n",
        ),
        ProxyError::AppFailed => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n",
        ),
        ProxyError::Timeout => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Timeout: the app took longer than --worker-timeout\n",
        ),
        ProxyError::QueueTimeout => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Timeout: no worker became free within --max-request-queue-time\n",
        ),
    })
}

/// Splits a Host header value into name and port ("[::1]:80" included).
/// A port is one or more digits, bracketed name or not.
pub fn split_host(host: &str) -> (&str, Option<&str>) {
    let is_port = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let name = &host[..end + 2];
            let port = rest[end + 1..].strip_prefix(':').filter(is_port);
            return (name, port);
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) if is_port(&port) => (name, Some(port)),
        _ => (host, None),
    }
}

/// Encodes the request as the frames a worker reads.
fn encode(
    parts: &http::request::Parts,
    peer: Peer,
    trust_proxy: bool,
    body: Buffered,
) -> Result<ProxyRequest, protocol::ProtocolError> {
    let https = trust_proxy
        && parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let (local_ip, local_port, remote_ip, remote_port) = match peer {
        Peer::Tcp { remote, local } => (
            local.ip().to_string(),
            local.port().to_string(),
            remote.ip().to_string(),
            remote.port().to_string(),
        ),
        Peer::Unix => (
            "localhost".into(),
            "80".into(),
            "127.0.0.1".into(),
            String::new(),
        ),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.authority().map(|a| a.as_str()));
    let default_port = if https { "443" } else { "80" };
    let (server_name, server_port) = match host {
        Some(h) => {
            let (name, port) = split_host(h);
            (name.to_string(), port.unwrap_or(default_port).to_string())
        }
        None => (local_ip, local_port),
    };

    // One entry per header name; repeated lines are joined as RFC 9110
    // allows (cookies with "; " as browsers send them).
    let mut headers: Vec<(&[u8], Cow<'_, [u8]>)> = Vec::with_capacity(parts.headers.keys_len() + 1);
    for name in parts.headers.keys() {
        if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue;
        }
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next().expect("a key has a value");
        let value = match values.next() {
            None => Cow::Borrowed(first.as_bytes()),
            Some(second) => {
                let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
                let mut joined = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                Cow::Owned(joined)
            }
        };
        headers.push((name.as_str().as_bytes(), value));
    }
    // The body is fully buffered, so its length is known even when the
    // client sent it chunked.
    let body_len = body.len().to_string();
    if !body.is_empty() || parts.headers.contains_key(header::CONTENT_LENGTH) {
        headers.push((b"content-length", Cow::Borrowed(body_len.as_bytes())));
    }

    let head = RequestHead {
        method: parts.method.as_str().as_bytes(),
        target: target.as_bytes(),
        path: parts.uri.path().as_bytes(),
        query: parts.uri.query().unwrap_or("").as_bytes(),
        protocol: match parts.version {
            Version::HTTP_10 => b"HTTP/1.0",
            _ => b"HTTP/1.1",
        },
        scheme: if https { b"https" } else { b"http" },
        server_name: server_name.as_bytes(),
        server_port: server_port.as_bytes(),
        remote_addr: remote_ip.as_bytes(),
        remote_port: remote_port.as_bytes(),
        headers: headers.iter().map(|(n, v)| (*n, v.as_ref())).collect(),
    };
    let mut wire = Vec::with_capacity(
        512 + if let Buffered::Memory(b) = &body {
            b.len() + 16
        } else {
            0
        },
    );
    head.encode(&mut wire)?;
    let body_file = match body {
        Buffered::Memory(bytes) => {
            protocol::put_chunked(&mut wire, kind::BODY, &bytes);
            None
        }
        Buffered::File { path, .. } => {
            protocol::put_frame(
                &mut wire,
                kind::BODY_FILE,
                path.as_os_str().as_encoded_bytes(),
            );
            Some(path)
        }
    };
    protocol::put_frame(&mut wire, kind::END, b"");
    Ok(ProxyRequest {
        wire: Bytes::from(wire),
        body_file,
    })
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn host_headers_split_into_name_and_port() {
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(
            split_host("example.com:8080"),
            ("example.com", Some("8080"))
        );
        assert_eq!(split_host("[::1]:3000"), ("[::1]", Some("3000")));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
    }

    /// Found by fuzz/ (rack_headers): after a bracketed name anything
    /// following ":" was taken as the port, so "Host: [::1]:x" gave
    /// SERVER_PORT "x" and "[::1]:" an empty one.
    #[test]
    fn a_bracketed_host_only_has_a_numeric_port() {
        assert_eq!(split_host("[::1]:x"), ("[::1]", None));
        assert_eq!(split_host("[::1]:"), ("[::1]", None));
        assert_eq!(split_host("[::1]:80\0"), ("[::1]", None));
        assert_eq!(split_host("example.com:"), ("example.com:", None));
    }
}
