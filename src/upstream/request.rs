//! HTTP → worker protocol: a parsed, fully buffered request becomes the
//! frames a worker reads (`REQUEST_HEAD`, `BODY`… or `BODY_FILE`, `END`),
//! with everything the Rack env needs decided here, once: the host and
//! port, the scheme, the peer's address, and header lines joined per name.

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Version};

use crate::protocol::{self, kind, ProtocolError, RequestHead};

/// Who is on the other end of a client connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
    },
    Unix,
}

/// A request body read to its end before a worker is chosen.
pub enum Buffered {
    Memory(Bytes),
    File { path: tempfile::TempPath, len: u64 },
}

impl Buffered {
    pub fn len(&self) -> u64 {
        match self {
            Buffered::Memory(b) => b.len() as u64,
            Buffered::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request encoded for a worker. A body spilled to a file is kept (and
/// removed when this is dropped) until the exchange is over.
pub struct WireRequest {
    pub wire: Bytes,
    pub body_file: Option<tempfile::TempPath>,
}

/// Why a request cannot go to a worker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// RFC 9112 §3.2: an HTTP/1.1 request must carry exactly one Host.
    #[error("{0}")]
    BadHost(&'static str),
    #[error("request head too large for the worker protocol: {0}")]
    TooLarge(ProtocolError),
}

/// Tells the app that the front end sends files named in `X-Sendfile`.
const X_SENDFILE_TYPE: &str = "x-sendfile-type";

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

/// The request's host, as the Rack env's SERVER_NAME/SERVER_PORT come from
/// it: two Host lines, or an HTTP/1.1 request with none, are refused.
pub fn host(parts: &http::request::Parts) -> Result<Option<&str>, Refused> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused::BadHost("more than one Host header"));
    }
    match first {
        Some(h) => h
            .to_str()
            .map(Some)
            .map_err(|_| Refused::BadHost("a Host header that is not ASCII")),
        // An absolute-form target carries its own authority.
        None => match parts.uri.authority() {
            Some(a) => Ok(Some(a.as_str())),
            None if parts.version == Version::HTTP_10 => Ok(None),
            None => Err(Refused::BadHost(
                "an HTTP/1.1 request without a Host header",
            )),
        },
    }
}

/// Encodes the request as the frames a worker reads.
pub fn encode(
    parts: &http::request::Parts,
    peer: Peer,
    trust_proxy: bool,
    body: Buffered,
) -> Result<WireRequest, Refused> {
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
    let default_port = if https { "443" } else { "80" };
    let (server_name, server_port) = match host(parts)? {
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
        if name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name.as_str() == X_SENDFILE_TYPE
        {
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
    // The front end sends the files an app names in `X-Sendfile`
    // (front/sendfile.rs); Rack::Sendfile reads this as HTTP_X_SENDFILE_TYPE.
    // Whatever a client sent under that name is replaced: it must not pick
    // another mechanism (X-Accel-Redirect with its path mapping).
    headers.push((X_SENDFILE_TYPE.as_bytes(), Cow::Borrowed(b"X-Sendfile")));
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
    head.encode(&mut wire).map_err(Refused::TooLarge)?;
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
    Ok(WireRequest {
        wire: Bytes::from(wire),
        body_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_frame;

    fn parts(raw: &[(&str, &str)], version: Version, uri: &str) -> http::request::Parts {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(uri)
            .version(version);
        for (k, v) in raw {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn peer() -> Peer {
        Peer::Tcp {
            remote: "10.0.0.7:5555".parse().unwrap(),
            local: "127.0.0.1:3000".parse().unwrap(),
        }
    }

    /// Decodes what `encode` wrote: the head, the body frames, the end.
    fn frames(wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some(f) = decode_frame(&wire[at..]).unwrap() {
            out.push((f.kind, f.payload.to_vec()));
            at += f.wire_len();
        }
        assert_eq!(at, wire.len());
        out
    }

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

    #[test]
    fn a_request_becomes_head_body_and_end_frames() {
        let p = parts(
            &[
                ("host", "example.com:8080"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("accept", "text/html"),
                ("accept", "*/*"),
                ("transfer-encoding", "chunked"),
            ],
            Version::HTTP_11,
            "/p/a?x=1",
        );
        let wire = encode(
            &p,
            peer(),
            false,
            Buffered::Memory(Bytes::from_static(b"hello")),
        )
        .unwrap();
        assert!(wire.body_file.is_none());
        let frames = frames(&wire.wire);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].0, kind::REQUEST_HEAD);
        let head = RequestHead::decode(&frames[0].1).unwrap();
        assert_eq!(head.method, b"POST");
        assert_eq!(head.target, b"/p/a?x=1");
        assert_eq!(head.path, b"/p/a");
        assert_eq!(head.query, b"x=1");
        assert_eq!(head.server_name, b"example.com");
        assert_eq!(head.server_port, b"8080");
        assert_eq!(head.remote_addr, b"10.0.0.7");
        assert_eq!(head.remote_port, b"5555");
        assert_eq!(head.scheme, b"http");
        let get = |n: &[u8]| {
            head.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_vec())
        };
        assert_eq!(get(b"cookie").unwrap(), b"a=1; b=2");
        assert_eq!(get(b"accept").unwrap(), b"text/html, */*");
        // Chunked framing is the front end's business: the worker gets the
        // buffered body's length.
        assert_eq!(get(b"transfer-encoding"), None);
        assert_eq!(get(b"content-length").unwrap(), b"5");
        assert_eq!(frames[1], (kind::BODY, b"hello".to_vec()));
        assert_eq!(frames[2], (kind::END, Vec::new()));
    }

    #[test]
    fn a_spilled_body_goes_by_path() {
        let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let path = file.to_path_buf();
        let p = parts(&[("host", "h")], Version::HTTP_11, "/");
        let wire = encode(
            &p,
            Peer::Unix,
            false,
            Buffered::File {
                path: file,
                len: 3 << 20,
            },
        )
        .unwrap();
        let frames = frames(&wire.wire);
        assert_eq!(frames[1].0, kind::BODY_FILE);
        assert_eq!(frames[1].1, path.as_os_str().as_encoded_bytes());
        let head = RequestHead::decode(&frames[0].1).unwrap();
        assert_eq!(head.remote_addr, b"127.0.0.1");
        assert!(head
            .headers
            .iter()
            .any(|(k, v)| *k == b"content-length" && *v == b"3145728"));
        assert!(wire.body_file.is_some());
    }

    #[test]
    fn the_app_is_told_about_x_sendfile_whatever_the_client_says() {
        let p = parts(
            &[("host", "h"), ("x-sendfile-type", "X-Accel-Redirect")],
            Version::HTTP_11,
            "/",
        );
        let wire = encode(&p, peer(), false, Buffered::Memory(Bytes::new())).unwrap();
        let frames = frames(&wire.wire);
        let head = RequestHead::decode(&frames[0].1).unwrap();
        let values: Vec<_> = head
            .headers
            .iter()
            .filter(|(k, _)| *k == b"x-sendfile-type")
            .map(|(_, v)| v.to_vec())
            .collect();
        assert_eq!(values, [b"X-Sendfile".to_vec()]);
    }

    #[test]
    fn forwarded_proto_counts_only_behind_a_trusted_proxy() {
        let p = parts(
            &[("host", "h"), ("x-forwarded-proto", "https")],
            Version::HTTP_11,
            "/",
        );
        for (trust, scheme, port) in [(false, &b"http"[..], &b"80"[..]), (true, b"https", b"443")] {
            let wire = encode(&p, peer(), trust, Buffered::Memory(Bytes::new())).unwrap();
            let frames = frames(&wire.wire);
            let head = RequestHead::decode(&frames[0].1).unwrap();
            assert_eq!(head.scheme, scheme);
            assert_eq!(head.server_port, port);
        }
    }

    #[test]
    fn two_hosts_or_none_in_http_1_1_are_refused() {
        let body = || Buffered::Memory(Bytes::new());
        let two = parts(&[("host", "a"), ("host", "b")], Version::HTTP_11, "/");
        assert!(matches!(
            encode(&two, peer(), false, body()),
            Err(Refused::BadHost(_))
        ));
        let none = parts(&[], Version::HTTP_11, "/");
        assert!(matches!(
            encode(&none, peer(), false, body()),
            Err(Refused::BadHost(_))
        ));
        // HTTP/1.0 needs none: the local address stands in.
        let old = parts(&[], Version::HTTP_10, "/");
        let wire = encode(&old, peer(), false, body()).unwrap();
        let frames = frames(&wire.wire);
        let head = RequestHead::decode(&frames[0].1).unwrap();
        assert_eq!(head.server_name, b"127.0.0.1");
        assert_eq!(head.server_port, b"3000");
    }
}
