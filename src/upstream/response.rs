//! Worker protocol → HTTP: a worker's response head becomes an
//! `http::Response`, and its body frames a [`ResponseBody`] hyper sends.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

use super::spool::SpoolReader;
use crate::protocol::{ProtocolError, ResponseHead};

/// The body of a response the front end sends.
pub enum ResponseBody {
    /// Complete in memory (the common case: a worker writes head, body and
    /// end in one write, and error pages are short).
    Chunks(VecDeque<Bytes>),
    /// Still arriving from the worker, through memory then a file.
    Spooled(SpoolReader),
    /// Produced by the front end itself (a file it streams from disk for
    /// static files and X-Sendfile): upstream only carries it.
    Boxed(UnsyncBoxBody<Bytes, io::Error>),
}

impl ResponseBody {
    pub fn text(s: &'static str) -> Self {
        ResponseBody::Chunks(VecDeque::from([Bytes::from_static(s.as_bytes())]))
    }

    pub fn bytes(b: impl Into<Bytes>) -> Self {
        ResponseBody::Chunks(VecDeque::from([b.into()]))
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
            ResponseBody::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Chunks(c) => c.is_empty(),
            ResponseBody::Spooled(_) => false,
            ResponseBody::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Chunks(c) => SizeHint::with_exact(c.iter().map(|b| b.len() as u64).sum()),
            ResponseBody::Spooled(_) => SizeHint::default(),
            ResponseBody::Boxed(body) => body.size_hint(),
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

/// The `http` response for a worker's `RESPONSE_HEAD` payload (the body
/// is added by the caller). Header values stay in the payload's memory
/// (`Bytes::slice_ref`), so a response head costs no copy per header.
/// Headers hyper cannot carry are dropped with a warning.
pub fn head_to_http(payload: &Bytes) -> Result<http::response::Builder, ProtocolError> {
    let head = ResponseHead::decode(payload)?;
    let mut builder = Response::builder().status(
        StatusCode::from_u16(head.status).map_err(|_| ProtocolError::BadStatus(head.status))?,
    );
    let headers = builder.headers_mut().expect("fresh builder");
    headers.reserve(head.headers.len());
    for &(name, value) in &head.headers {
        if is_hop_by_hop(name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(payload.slice_ref(value));
        match (HeaderName::from_bytes(name), value) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, ResponseHeadWriter};

    /// The payload of the `RESPONSE_HEAD` frame a worker would send.
    fn payload(status: u16, headers: &[(&str, &str)]) -> Bytes {
        let mut out = Vec::new();
        let mut w = ResponseHeadWriter::begin(&mut out, status);
        for (n, v) in headers {
            w.header(&mut out, n.as_bytes(), v.as_bytes());
        }
        w.finish(&mut out).unwrap();
        let frame = decode_frame(&out).unwrap().expect("a whole frame");
        Bytes::copy_from_slice(frame.payload)
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_the_rest_kept_in_order() {
        assert!(is_hop_by_hop(b"Transfer-Encoding"));
        assert!(!is_hop_by_hop(b"content-length"));
        let head = payload(
            201,
            &[
                ("Connection", "close"),
                ("set-cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("x bad", "v"),
            ],
        );
        let r = head_to_http(&head).unwrap().body(()).unwrap();
        assert_eq!(r.status(), 201);
        assert!(r.headers().get("connection").is_none());
        let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(r.headers().len(), 2);
    }

    #[test]
    fn header_values_are_views_of_the_payload_not_copies() {
        let head = payload(200, &[("content-type", "text/plain")]);
        let r = head_to_http(&head).unwrap().body(()).unwrap();
        let value = r.headers()["content-type"].as_bytes();
        assert_eq!(value, b"text/plain");
        let inside = head.as_ptr_range();
        assert!(inside.contains(&value.as_ptr()), "the value was copied");
    }

    #[test]
    fn an_empty_value_is_kept() {
        let head = payload(200, &[("x-empty", ""), ("x-after", "1")]);
        let r = head_to_http(&head).unwrap().body(()).unwrap();
        assert_eq!(r.headers()["x-empty"], "");
        assert_eq!(r.headers()["x-after"], "1");
    }

    #[test]
    fn a_value_hyper_cannot_carry_is_dropped() {
        let head = payload(200, &[("x-ok", "1"), ("x-bad", "a\nb")]);
        let r = head_to_http(&head).unwrap().body(()).unwrap();
        assert_eq!(r.headers().len(), 1);
        assert_eq!(r.headers()["x-ok"], "1");
    }

    #[test]
    fn a_status_http_cannot_carry_is_a_protocol_error() {
        assert!(head_to_http(&payload(1000, &[])).is_err());
        assert!(head_to_http(&payload(99, &[])).is_err());
    }
}
