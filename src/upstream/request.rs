//! HTTP → worker protocol: a parsed, fully buffered request becomes the
//! frames a worker reads (`REQUEST_HEAD`, `BODY`… or `BODY_FILE`, `END`),
//! with everything the Rack env needs decided here, once: the host and
//! port, the scheme, the client's address (through trusted proxies only,
//! `forwarded.rs`), header lines joined per name, and the two headers the
//! front end adds for APMs: `X-Request-Start: t=<µs since the epoch>` (when
//! the front end got the request, unless a trusted proxy already said)
//! and `X-Request-Id`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use arrayvec::ArrayString;
use bytes::Bytes;
use http::{header, Version};

use super::forwarded::TrustedProxies;
use crate::protocol::{self, kind, ProtocolError, RequestHead};

/// Who is on the other end of a client connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
        /// Over TLS (`--ssl`): the app sees `https`.
        tls: bool,
    },
    Unix,
}

/// A request body read to its end before a worker is chosen.
pub enum Buffered {
    /// In memory, in the pieces it was read in (`front/body.rs`): large
    /// ones are the connection's own read buffers, small ones merged.
    Memory(Vec<Bytes>),
    File {
        path: tempfile::TempPath,
        len: u64,
    },
}

impl Buffered {
    pub fn len(&self) -> u64 {
        match self {
            Buffered::Memory(pieces) => pieces.iter().map(|p| p.len() as u64).sum(),
            Buffered::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request encoded for a worker: its frames, in pieces written with one
/// `writev`. A body kept in memory is not copied into the frames: past
/// [`INLINE_BODY`] bytes it is a piece of its own, the buffer it was read
/// into. A body spilled to a file is kept (and removed when this is
/// dropped) until the exchange is over.
pub struct WireRequest {
    pub wire: Vec<Bytes>,
    pub body_file: Option<tempfile::TempPath>,
}

/// Bodies up to this size are copied into the frames: one buffer, one
/// `write`. Larger ones are sent from where they are (measured: copying a
/// 1 MB upload into the frames was a quarter of the front end's CPU).
pub const INLINE_BODY: usize = 16 * 1024;

impl WireRequest {
    /// Every frame, in one buffer (for tests and comparisons).
    pub fn to_vec(&self) -> Vec<u8> {
        self.wire.concat()
    }
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
            None if parts.version == Version::HTTP_2 => Err(Refused::BadHost(
                "an HTTP/2 request without :authority or Host",
            )),
            None => Err(Refused::BadHost(
                "an HTTP/1.1 request without a Host header",
            )),
        },
    }
}

/// What the front end knows of a request besides its head and body.
pub struct Context<'a> {
    pub peer: Peer,
    pub trusted: &'a TrustedProxies,
    /// When the front end got the request (for `X-Request-Start`).
    pub received: SystemTime,
    /// The client's `X-Request-Id`, or one made up for this request.
    pub request_id: &'a str,
    /// The path prefix the app is mounted under ("" for the whole site):
    /// the app sees it as `SCRIPT_NAME`, and the rest as `PATH_INFO`.
    pub script_name: &'a str,
}

/// The first value of a header, as text.
fn first<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    let v = parts.headers.get(name)?.to_str().ok()?;
    Some(v.split(',').next().unwrap_or(v).trim())
}

/// Short text formatted on the stack: an IP address (an `IpAddr` prints
/// at most 39 bytes), a port, a length, `t=` and the µs since the epoch
/// (at most 41).
type Short = ArrayString<48>;

fn short(v: impl std::fmt::Display) -> Short {
    let mut s = Short::new();
    // Everything passed here fits in 48 bytes: write! cannot fail.
    let _ = write!(s, "{v}");
    s
}

/// Encodes the request as the frames a worker reads.
pub fn encode(
    parts: &http::request::Parts,
    ctx: &Context<'_>,
    body: Buffered,
) -> Result<WireRequest, Refused> {
    let peer = ctx.peer;
    let proxied = !ctx.trusted.is_empty() && ctx.trusted.trusts(&peer);
    let over_tls = matches!(peer, Peer::Tcp { tls: true, .. });
    let https = over_tls
        || (proxied
            && first(parts, "x-forwarded-proto").is_some_and(|v| v.eq_ignore_ascii_case("https")));
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Addresses, ports and numbers are formatted on the stack: a request
    // costs no allocation for them.
    let (local_ip, local_port, remote_ip, remote_port) = match peer {
        Peer::Tcp { remote, local, .. } => (
            short(local.ip()),
            short(local.port()),
            short(remote.ip()),
            short(remote.port()),
        ),
        Peer::Unix => (
            short("localhost"),
            short("80"),
            short("127.0.0.1"),
            Short::new(),
        ),
    };
    let remote_ip = match proxied {
        true => {
            let hops: Vec<&str> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            ctx.trusted
                .client_address(&hops)
                .map(short)
                .unwrap_or(remote_ip)
        }
        false => remote_ip,
    };
    let default_port = if https { "443" } else { "80" };
    let host = host(parts)?;
    let host = match proxied {
        true => first(parts, "x-forwarded-host").or(host),
        false => host,
    };
    let (server_name, mut server_port) = match host {
        Some(h) => {
            let (name, port) = split_host(h);
            (name, port.unwrap_or(default_port))
        }
        None => (local_ip.as_str(), local_port.as_str()),
    };
    if proxied {
        if let Some(port) = first(parts, "x-forwarded-port").filter(|p| p.parse::<u16>().is_ok()) {
            server_port = port;
        }
    }
    // A trusted proxy's X-Request-Start is earlier and truer than ours.
    let keep_start = proxied && parts.headers.contains_key("x-request-start");
    let micros = ctx
        .received
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let request_start = short(format_args!("t={micros}"));

    // One entry per header name; repeated lines are joined as RFC 9110
    // allows (cookies with "; " as browsers send them). Only a name sent
    // on several lines costs an allocation.
    let replaced = |name: &header::HeaderName| {
        name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name == "x-request-id"
            || (name == "x-request-start" && !keep_start)
            || name.as_str() == X_SENDFILE_TYPE
    };
    let mut joined: Vec<(&header::HeaderName, Vec<u8>)> = Vec::new();
    for name in parts.headers.keys().filter(|n| !replaced(n)) {
        let mut values = parts.headers.get_all(name).iter();
        let first = values.next().expect("a key has a value");
        if let Some(second) = values.next() {
            let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
            let mut value = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(values) {
                value.extend_from_slice(sep);
                value.extend_from_slice(v.as_bytes());
            }
            joined.push((name, value));
        }
    }
    let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(parts.headers.keys_len() + 4);
    for name in parts.headers.keys().filter(|n| !replaced(n)) {
        let value = match joined.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => v.as_slice(),
            None => parts.headers[name].as_bytes(),
        };
        headers.push((name.as_str().as_bytes(), value));
    }
    // The front end sends the files an app names in `X-Sendfile`
    // (front/sendfile.rs); Rack::Sendfile reads this as HTTP_X_SENDFILE_TYPE.
    // Whatever a client sent under that name is replaced: it must not pick
    // another mechanism (X-Accel-Redirect with its path mapping).
    headers.push((X_SENDFILE_TYPE.as_bytes(), b"X-Sendfile"));
    // The body is fully buffered, so its length is known even when the
    // client sent it chunked.
    let body_len = short(body.len());
    if !body.is_empty() || parts.headers.contains_key(header::CONTENT_LENGTH) {
        headers.push((b"content-length", body_len.as_bytes()));
    }
    if !keep_start {
        headers.push((b"x-request-start", request_start.as_bytes()));
    }
    headers.push((b"x-request-id", ctx.request_id.as_bytes()));

    let head = RequestHead {
        method: parts.method.as_str().as_bytes(),
        target: target.as_bytes(),
        script_name: ctx.script_name.as_bytes(),
        path: &parts.uri.path().as_bytes()[ctx.script_name.len()..],
        query: parts.uri.query().unwrap_or("").as_bytes(),
        protocol: match parts.version {
            Version::HTTP_10 => b"HTTP/1.0",
            Version::HTTP_2 => b"HTTP/2",
            _ => b"HTTP/1.1",
        },
        scheme: if https { b"https" } else { b"http" },
        server_name: server_name.as_bytes(),
        server_port: server_port.as_bytes(),
        remote_addr: remote_ip.as_bytes(),
        remote_port: remote_port.as_bytes(),
        headers,
    };
    let inline = match &body {
        Buffered::Memory(pieces) => pieces.iter().map(Bytes::len).sum::<usize>(),
        Buffered::File { .. } => 0,
    };
    let mut wire = Vec::with_capacity(512 + inline.min(INLINE_BODY) + 16);
    head.encode(&mut wire).map_err(Refused::TooLarge)?;
    let mut pieces = Vec::new();
    let body_file = match body {
        Buffered::Memory(body) => {
            for piece in body {
                if piece.len() <= INLINE_BODY {
                    protocol::put_chunked(&mut wire, kind::BODY, &piece);
                    continue;
                }
                let mut at = 0;
                while at < piece.len() {
                    let chunk = piece.slice(at..piece.len().min(at + protocol::MAX_PAYLOAD));
                    at += chunk.len();
                    protocol::put_frame_header(&mut wire, kind::BODY, chunk.len());
                    pieces.push(Bytes::from(std::mem::take(&mut wire)));
                    pieces.push(chunk);
                }
            }
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
    pieces.push(Bytes::from(wire));
    Ok(WireRequest {
        wire: pieces,
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
            tls: false,
        }
    }

    static NOBODY: std::sync::LazyLock<TrustedProxies> =
        std::sync::LazyLock::new(TrustedProxies::default);
    static LAN: std::sync::LazyLock<TrustedProxies> =
        std::sync::LazyLock::new(|| TrustedProxies::parse(&["10.0.0.0/8".to_string()]).unwrap());

    /// A context at t = 1.5 s after the epoch, id "req-1".
    fn ctx(peer: Peer, trust: bool) -> Context<'static> {
        Context {
            peer,
            trusted: if trust { &LAN } else { &NOBODY },
            received: UNIX_EPOCH + std::time::Duration::from_micros(1_500_000),
            request_id: "req-1",
            script_name: "",
        }
    }

    fn header_of<'a>(head: &RequestHead<'a>, name: &[u8]) -> Option<&'a [u8]> {
        head.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    fn head_of(wire: &WireRequest) -> Vec<u8> {
        frames(&wire.to_vec())[0].1.clone()
    }

    /// The encoded `REQUEST_HEAD` payload of a request without a body.
    fn bodiless_head(p: &http::request::Parts, c: &Context<'_>) -> Vec<u8> {
        head_of(&encode(p, c, Buffered::Memory(Vec::new())).unwrap())
    }

    #[test]
    fn tls_connections_are_https_and_http2_is_named() {
        let tls = Peer::Tcp {
            remote: "10.0.0.7:5555".parse().unwrap(),
            local: "127.0.0.1:3443".parse().unwrap(),
            tls: true,
        };
        // HTTP/2 carries the host as :authority, which hyper puts in the URI.
        let p = parts(&[], Version::HTTP_2, "https://example.com/x?y=1");
        let raw = bodiless_head(&p, &ctx(tls, false));
        let head = RequestHead::decode(&raw).unwrap();
        assert_eq!(head.scheme, b"https");
        assert_eq!(head.protocol, b"HTTP/2");
        assert_eq!(head.server_name, b"example.com");
        assert_eq!(head.server_port, b"443");
        assert_eq!(head.target, b"/x?y=1");
        // Without a host at all, HTTP/2 is refused like HTTP/1.1.
        let none = parts(&[], Version::HTTP_2, "/");
        assert!(matches!(
            encode(&none, &ctx(tls, false), Buffered::Memory(Vec::new())),
            Err(Refused::BadHost(_))
        ));
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
            &ctx(peer(), false),
            Buffered::Memory(vec![Bytes::from_static(b"hello")]),
        )
        .unwrap();
        assert!(wire.body_file.is_none());
        let frames = frames(&wire.to_vec());
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
    fn the_longest_addresses_and_numbers_arrive_whole() {
        // Eight full groups are the longest an IpAddr prints (39 bytes).
        let v6 = Peer::Tcp {
            remote: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            local: "[::ffff:255.255.255.255]:65534".parse().unwrap(),
            tls: false,
        };
        // HTTP/1.0 without a Host: the server name and port are the local ones.
        let p = parts(&[], Version::HTTP_10, "/");
        let mut c = ctx(v6, false);
        c.received = UNIX_EPOCH + std::time::Duration::from_secs(u64::MAX / 1_000_000);
        let raw = bodiless_head(&p, &c);
        let head = RequestHead::decode(&raw).unwrap();
        assert_eq!(head.remote_addr, b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert_eq!(head.remote_port, b"65535");
        assert_eq!(head.server_name, b"::ffff:255.255.255.255");
        assert_eq!(head.server_port, b"65534");
        let start = format!("t={}", (u64::MAX / 1_000_000) as u128 * 1_000_000);
        assert_eq!(header_of(&head, b"x-request-start"), Some(start.as_bytes()));
        // A Unix socket peer has no address of its own.
        let raw = bodiless_head(&p, &ctx(Peer::Unix, false));
        let head = RequestHead::decode(&raw).unwrap();
        assert_eq!(
            (
                head.server_name,
                head.server_port,
                head.remote_addr,
                head.remote_port
            ),
            (&b"localhost"[..], &b"80"[..], &b"127.0.0.1"[..], &b""[..])
        );
    }

    #[test]
    fn a_spilled_body_goes_by_path() {
        let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let path = file.to_path_buf();
        let p = parts(&[("host", "h")], Version::HTTP_11, "/");
        let wire = encode(
            &p,
            &ctx(Peer::Unix, false),
            Buffered::File {
                path: file,
                len: 3 << 20,
            },
        )
        .unwrap();
        let frames = frames(&wire.to_vec());
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
        let raw = bodiless_head(&p, &ctx(peer(), false));
        let head = RequestHead::decode(&raw).unwrap();
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
            let raw = bodiless_head(&p, &ctx(peer(), trust));
            let head = RequestHead::decode(&raw).unwrap();
            assert_eq!(head.scheme, scheme);
            assert_eq!(head.server_port, port);
        }
    }

    #[test]
    fn two_hosts_or_none_in_http_1_1_are_refused() {
        let body = || Buffered::Memory(Vec::new());
        let two = parts(&[("host", "a"), ("host", "b")], Version::HTTP_11, "/");
        assert!(matches!(
            encode(&two, &ctx(peer(), false), body()),
            Err(Refused::BadHost(_))
        ));
        let none = parts(&[], Version::HTTP_11, "/");
        assert!(matches!(
            encode(&none, &ctx(peer(), false), body()),
            Err(Refused::BadHost(_))
        ));
        // HTTP/1.0 needs none: the local address stands in.
        let old = parts(&[], Version::HTTP_10, "/");
        let wire = encode(&old, &ctx(peer(), false), body()).unwrap();
        let frames = frames(&wire.to_vec());
        let head = RequestHead::decode(&frames[0].1).unwrap();
        assert_eq!(head.server_name, b"127.0.0.1");
        assert_eq!(head.server_port, b"3000");
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let p = parts(
            &[
                ("host", "internal:8080"),
                ("x-forwarded-for", "1.2.3.4, 203.0.113.9"),
                ("x-forwarded-host", "shop.example.com"),
                ("x-forwarded-port", "8443"),
                ("x-forwarded-proto", "https"),
                ("x-request-start", "t=42"),
                ("x-request-id", "from-client"),
            ],
            Version::HTTP_11,
            "/",
        );
        let body = || Buffered::Memory(Vec::new());
        // From a trusted load balancer: the client is the right-most
        // untrusted hop, host/port/scheme are the public ones, and its
        // X-Request-Start stays.
        let wire = encode(&p, &ctx(peer(), true), body()).unwrap();
        let trusted_frames = frames(&wire.to_vec());
        let head = RequestHead::decode(&trusted_frames[0].1).unwrap();
        assert_eq!(head.remote_addr, b"203.0.113.9");
        assert_eq!(head.server_name, b"shop.example.com");
        assert_eq!(head.server_port, b"8443");
        assert_eq!(head.scheme, b"https");
        assert_eq!(header_of(&head, b"x-request-start"), Some(&b"t=42"[..]));
        assert_eq!(header_of(&head, b"x-request-id"), Some(&b"req-1"[..]));
        // From anyone else: plain headers that change nothing, and our own
        // X-Request-Start.
        let wire = encode(&p, &ctx(tcp_peer("11.0.0.1"), true), body()).unwrap();
        let frames = frames(&wire.to_vec());
        let head = RequestHead::decode(&frames[0].1).unwrap();
        assert_eq!(head.remote_addr, b"11.0.0.1");
        assert_eq!(head.server_name, b"internal");
        assert_eq!(head.server_port, b"8080");
        assert_eq!(head.scheme, b"http");
        assert_eq!(
            header_of(&head, b"x-request-start"),
            Some(&b"t=1500000"[..])
        );
        assert_eq!(
            header_of(&head, b"x-forwarded-for"),
            Some(&b"1.2.3.4, 203.0.113.9"[..])
        );
        let ids = head
            .headers
            .iter()
            .filter(|(k, _)| *k == b"x-request-id")
            .count();
        assert_eq!(ids, 1);
    }

    fn tcp_peer(ip: &str) -> Peer {
        Peer::Tcp {
            remote: format!("{ip}:5555").parse().unwrap(),
            local: "127.0.0.1:3000".parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn a_large_body_is_sent_from_its_buffer_in_frames_of_at_most_max_payload() {
        let p = parts(&[("host", "h")], Version::HTTP_11, "/up");
        let body = Bytes::from(vec![b'x'; 2 * protocol::MAX_PAYLOAD + 7]);
        let wire = encode(
            &p,
            &ctx(peer(), false),
            Buffered::Memory(vec![body.clone()]),
        )
        .unwrap();
        // head+header, chunk, header, chunk, header, chunk, END: the
        // chunks are the body's own memory, not copies.
        assert_eq!(wire.wire.len(), 7);
        assert_eq!(wire.wire[1].as_ptr(), body.as_ptr());
        let frames = frames(&wire.to_vec());
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(
            kinds,
            [
                kind::REQUEST_HEAD,
                kind::BODY,
                kind::BODY,
                kind::BODY,
                kind::END
            ]
        );
        let sent: Vec<u8> = frames[1..4].iter().flat_map(|f| f.1.clone()).collect();
        assert_eq!(sent, body);
        assert_eq!(frames[3].1.len(), 7);
        // A small body stays inline: one buffer, one write.
        let small = encode(
            &p,
            &ctx(peer(), false),
            Buffered::Memory(vec![Bytes::from(vec![b'y'; INLINE_BODY])]),
        )
        .unwrap();
        assert_eq!(small.wire.len(), 1);
    }
}
