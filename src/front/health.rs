//! The health check (`--health-check-path`), answered by the front end
//! without Ruby: 200 while a worker is ready and the instance is not
//! draining, 503 otherwise (booting, draining, crash loop), with a small
//! JSON body saying why. An instance serving several apps answers 200
//! until it drains: its apps start on demand. It is not an app request: not counted in the
//! metrics, and in the access log only at debug level, so a load
//! balancer's probe every second does not flood the log.

use std::sync::atomic::Ordering;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::http::Front;
use crate::upstream::ResponseBody;

/// The health answer when `req` asks for it.
pub fn answer<B>(front: &Front, req: &Request<B>) -> Option<Response<ResponseBody>> {
    let path = front.health_path.as_deref()?;
    if req.uri().path() != path || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let health = front.apps.health();
    let draining = front.draining.load(Ordering::SeqCst);
    // With several apps, each starts on its first request: none running is
    // not "starting", and one app in trouble must not take the others out.
    let several = front.apps.several();
    let (status, state) = if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if several {
        (StatusCode::OK, "ok")
    } else if health.crash_loop {
        (StatusCode::SERVICE_UNAVAILABLE, "crash loop")
    } else if health.ready == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = serde_json::json!({
        "status": state,
        "workers_ready": health.ready,
        "queue": health.queue,
        "generation": health.generation,
    });
    let mut text = serde_json::to_vec(&body).unwrap_or_default();
    text.push(b'\n');
    let mut r = Response::new(if req.method() == Method::HEAD {
        ResponseBody::bytes(Vec::new())
    } else {
        ResponseBody::bytes(text)
    });
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::debug!(
        target: "rustrack::access",
        "{} {} {} (health check)",
        req.method(),
        path,
        status.as_u16()
    );
    Some(r)
}
