//! `GET /metrics` (Prometheus text format) on its own listener, so that
//! scrapes never queue behind app requests. The figures come from the
//! pool's cached status: a scrape reads no `/proc` file.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::listeners::ACCEPT_BACKOFF;
use crate::pool::Pool;
use crate::upstream::{error_response, ResponseBody};

pub async fn serve(listener: TcpListener, pool: Arc<Pool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept (metrics): {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let pool = pool.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let pool = pool.clone();
            async move { Ok::<_, Infallible>(respond(&pool, &req)) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(pool: &Arc<Pool>, req: &Request<Incoming>) -> Response<ResponseBody> {
    if req.uri().path() != "/metrics" {
        return error_response(StatusCode::NOT_FOUND, "404 Not Found: try /metrics\n");
    }
    let text = pool.metrics.render(&pool.status());
    let mut r = Response::new(ResponseBody::bytes(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
