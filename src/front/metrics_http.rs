//! The observability listener (`--metrics-address`), apart from the app's
//! so that scrapes never queue behind app requests:
//! - `GET /metrics`: Prometheus text format;
//! - `GET /status`: a live HTML page (`status_page.html`: no external
//!   assets, a few lines of script that poll `/status.json` every 2 s);
//! - `GET /status.json`: the pool's status with the last minute's request
//!   rate and latency percentiles (`recent.rs`).
//!
//! Every figure comes from the pool's cached status: a scrape reads no
//! `/proc` file.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::listeners::ACCEPT_BACKOFF;
use crate::apps::Apps;
use crate::upstream::{error_response, ResponseBody};

pub async fn serve(listener: TcpListener, apps: Arc<Apps>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept (metrics): {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let apps = apps.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let apps = apps.clone();
            async move { Ok::<_, Infallible>(respond(&apps, &req)) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The live status page.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// What `/status.json` carries.
#[derive(serde::Serialize)]
struct LiveStatus {
    status: crate::report::StatusReport,
    recent: crate::recent::RecentSummary,
}

fn respond(apps: &Arc<Apps>, req: &Request<Incoming>) -> Response<ResponseBody> {
    let (body, content_type): (ResponseBody, &'static str) = match req.uri().path() {
        "/metrics" => (
            ResponseBody::bytes(apps.metrics_text()),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/status" | "/status/" => (ResponseBody::text(STATUS_PAGE), "text/html; charset=utf-8"),
        "/status.json" => {
            let live = LiveStatus {
                status: apps.status(),
                recent: apps.recent(),
            };
            (
                ResponseBody::bytes(serde_json::to_vec(&live).unwrap_or_default()),
                "application/json",
            )
        }
        _ => {
            return error_response(
                StatusCode::NOT_FOUND,
                "404 Not Found: try /metrics, /status or /status.json\n",
            )
        }
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
