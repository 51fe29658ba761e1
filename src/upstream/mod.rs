//! Between HTTP and the workers, both directions, in one place.
//!
//! - `request.rs`: an HTTP request (head + buffered body) → protocol frames;
//! - `response.rs`: a worker's response head → `http::Response`, and the
//!   body type hyper sends;
//! - `exchange.rs`: one request on one lent worker, with the time and
//!   memory limits that apply while it runs;
//! - `spool.rs`: a response body buffer between a fast worker and a slow
//!   client;
//! - here: [`forward`], which gets a worker from the pool, runs the
//!   exchange, retries a request that never reached a (dead) worker, and
//!   maps every failure to the HTTP answer the client gets.
//!
//! The pool below knows nothing of HTTP, and the front end above nothing
//! of the worker protocol.

pub mod exchange;
pub mod forwarded;
pub mod request;
pub mod response;
pub mod spool;

use std::sync::Arc;

use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::oneshot;

use crate::pool::{Pool, Rejection};
pub use exchange::ExchangeOptions;
use exchange::Failed;
pub use forwarded::TrustedProxies;
pub use request::{split_host, Buffered, Context, Peer, Refused, WireRequest};
pub use response::ResponseBody;

/// A request not yet sent is given to another worker at most this many
/// times when the one it was given to turns out dead.
const MAX_ATTEMPTS: u32 = 3;

/// Why a request got no response from the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The pool had no worker for it (queue full, timed out, none running).
    Rejected(Rejection),
    /// The worker died or broke the protocol mid-request.
    WorkerFailed,
    /// The app raised before its response started.
    AppFailed,
    /// The worker took longer than `--worker-timeout`.
    Timeout,
    /// The worker passed `--memory-limit-hard` mid-request.
    MemoryLimit,
}

/// Sends an encoded request to a worker and returns the response.
pub async fn forward(
    pool: &Arc<Pool>,
    mut req: WireRequest,
    options: &Arc<ExchangeOptions>,
) -> Result<Response<ResponseBody>, UpstreamError> {
    for _ in 0..MAX_ATTEMPTS {
        let lease = pool.checkout().await.map_err(UpstreamError::Rejected)?;
        let (tx, rx) = oneshot::channel();
        let options = options.clone();
        // Its own task: it reads the worker's response to the end even if
        // this client goes away (this future is dropped) meanwhile.
        tokio::spawn(async move { exchange::run(lease, req, tx, &options).await });
        match rx.await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(Failed::Unsent(back))) => req = back,
            Ok(Err(Failed::Error(e))) => return Err(e),
            Err(_) => return Err(UpstreamError::WorkerFailed),
        }
    }
    tracing::error!("workers keep dying before they can take a request");
    Err(UpstreamError::WorkerFailed)
}

/// A short plain-text response from the front end itself.
pub fn error_response(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::text(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The answer a client gets when its request got no response from the app.
pub fn failure_response(error: UpstreamError) -> Response<ResponseBody> {
    let retry_after = |mut r: Response<ResponseBody>, secs: u64| {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r
    };
    match error {
        UpstreamError::Rejected(Rejection::QueueFull) => retry_after(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: request queue full\n",
            ),
            1,
        ),
        UpstreamError::Rejected(Rejection::Unavailable { retry_after: secs }) => retry_after(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: no process can serve the app right now (see the server log)\n",
            ),
            secs,
        ),
        UpstreamError::Rejected(Rejection::QueueTimeout) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Timeout: no worker became free within --max-request-queue-time\n",
        ),
        UpstreamError::WorkerFailed => error_response(
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the app's process failed\n",
        ),
        UpstreamError::AppFailed => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error\n",
        ),
        UpstreamError::Timeout => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Timeout: the app took longer than --worker-timeout\n",
        ),
        UpstreamError::MemoryLimit => retry_after(
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: the app's process ran out of its memory limit\n",
            ),
            1,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_say_when_to_come_back() {
        let r = failure_response(UpstreamError::Rejected(Rejection::Unavailable {
            retry_after: 42,
        }));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "42");
        let r = failure_response(UpstreamError::Timeout);
        assert_eq!(r.status(), 504);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
