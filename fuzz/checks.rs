//! The properties the fuzz targets check, shared with the deterministic
//! replay in `tests/fuzz_corpus.rs` (which includes this file with
//! `#[path]`), so a corpus file means the same thing in both places.
//!
//! Every check takes arbitrary bytes. The code under test must never panic
//! on them; the checks panic (assert) when a property does not hold.
//! "Structured" targets read their fields out of the bytes with [`Cursor`],
//! a tiny deterministic stand-in for the `arbitrary` crate that the test
//! can use without extra dependencies.

#![allow(dead_code)]

use rustrack::protocol::{
    decode_frame, kind, put_frame, Frame, Hello, ProtocolError, RequestHead, ResponseHead,
    ResponseHeadWriter, FRAME_HEADER_LEN, MAX_HEADERS, MAX_PAYLOAD, VERSION,
};
use rustrack::rack::env::rack_header_key;
use rustrack::rack::response::{check_header_name, check_header_value};
use rustrack::upstream::split_host;

/// Every frame type of protocol version 2 (docs/protocol.md), written out
/// independently of the decoder's own list.
const KINDS: [u8; 11] = [
    kind::REQUEST_HEAD,
    kind::BODY,
    kind::BODY_FILE,
    kind::END,
    kind::PROMOTE,
    kind::HELLO,
    kind::RESPONSE_HEAD,
    kind::RESPONSE_BODY,
    kind::RESPONSE_END,
    kind::ABORT,
    kind::PROMOTED,
];

/// Structured inputs never make the encoders write much more than this:
/// enough to cross the 1 MiB payload limit, small enough to stay fast.
const OUTPUT_BUDGET: usize = MAX_PAYLOAD + (1 << 16);

/// A target's check.
pub type Check = fn(&[u8]);
/// An owned header line, and one borrowed from it.
pub type Line = (Vec<u8>, Vec<u8>);
pub type LineRef<'a> = (&'a [u8], &'a [u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Check); 4] = [
    ("frame_decoder", frame_decoder),
    ("request_head_roundtrip", request_head_roundtrip),
    ("response_head", response_head),
    ("rack_headers", rack_headers),
];

// ---------------------------------------------------------------------------
// frame_decoder: a buffer of frames, walked the way both peers read.

/// Walks `data` frame by frame, as the worker's reader and the front end's
/// exchange do, and decodes every payload according to its kind.
pub fn frame_decoder(data: &[u8]) {
    let mut at = 0;
    loop {
        let rest = &data[at..];
        match decode_frame(rest) {
            Ok(Some(frame)) => {
                check_frame(rest, frame);
                check_payload(frame);
                at += frame.wire_len();
            }
            Ok(None) => {
                // "Read more" is only right for a short header, or a valid
                // header whose payload has not fully arrived.
                if let Some((k, len)) = header(rest) {
                    assert!(KINDS.contains(&k), "unknown kind 0x{k:02x} waits for more");
                    assert!(len <= MAX_PAYLOAD, "a {len}-byte payload waits for more");
                    assert!(rest.len() < FRAME_HEADER_LEN + len, "a whole frame waits");
                }
                break;
            }
            Err(e) => {
                let (k, len) = header(rest).expect("an error needs a whole frame header");
                match e {
                    ProtocolError::UnknownKind(got) => {
                        assert_eq!(got, k);
                        assert!(!KINDS.contains(&k), "known kind 0x{k:02x} rejected");
                    }
                    ProtocolError::FrameTooLarge(n) => {
                        assert_eq!(n, len);
                        assert!(KINDS.contains(&k) && len > MAX_PAYLOAD);
                    }
                    other => panic!("decode_frame returned {other:?}"),
                }
                // A bad header is refused as soon as its 5 bytes arrived:
                // the reader must not wait for a payload it will refuse.
                assert_eq!(decode_frame(&rest[..FRAME_HEADER_LEN]), Err(e));
                break;
            }
        }
    }
}

/// Type and declared payload length, when `buf` holds a whole header.
fn header(buf: &[u8]) -> Option<(u8, usize)> {
    let h = buf.get(..FRAME_HEADER_LEN)?;
    Some((h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize))
}

/// `frame` was decoded from the start of `buf`: it must be exactly the
/// bytes the header announced, and no prefix of it may look complete.
fn check_frame(buf: &[u8], frame: Frame<'_>) {
    let (k, len) = header(buf).expect("a frame has a header");
    assert_eq!(frame.kind, k);
    assert!(KINDS.contains(&k));
    assert!(len <= MAX_PAYLOAD);
    assert_eq!(frame.payload.len(), len);
    assert_eq!(frame.wire_len(), FRAME_HEADER_LEN + len);
    assert_eq!(
        frame.payload,
        &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len]
    );
    // Reads can stop anywhere: a partial frame asks for more.
    let whole = frame.wire_len();
    for cut in [
        0,
        1,
        FRAME_HEADER_LEN - 1,
        FRAME_HEADER_LEN,
        whole / 2,
        whole - 1,
    ] {
        if cut < whole {
            assert_eq!(
                decode_frame(&buf[..cut]),
                Ok(None),
                "cut at {cut} of {whole}"
            );
        }
    }
    assert_eq!(decode_frame(&buf[..whole]), Ok(Some(frame)));
}

/// Decodes a frame's payload the way its receiver would.
fn check_payload(frame: Frame<'_>) {
    match Hello::decode(frame) {
        Ok(hello) => {
            assert_eq!(frame.kind, kind::HELLO);
            assert_eq!(hello.version, VERSION);
            let mut out = Vec::new();
            hello.encode(&mut out);
            let again = decode_frame(&out).unwrap().expect("a whole HELLO");
            assert_eq!(again.wire_len(), out.len());
            assert_eq!(Hello::decode(again), Ok(hello));
        }
        Err(ProtocolError::Unexpected { got, .. }) => {
            assert_ne!(frame.kind, kind::HELLO);
            assert_eq!(got, frame.kind);
        }
        Err(ProtocolError::BadHello(_)) => assert_eq!(frame.kind, kind::HELLO),
        Err(other) => panic!("Hello::decode returned {other:?}"),
    }
    match frame.kind {
        kind::REQUEST_HEAD => check_request_payload(frame.payload),
        kind::RESPONSE_HEAD => check_response_payload(frame.payload),
        _ => {}
    }
}

/// A `TooManyHeaders` error must be about a count over the limit.
fn check_count_error(e: &ProtocolError) {
    if let ProtocolError::TooManyHeaders(n) = e {
        assert!(*n > MAX_HEADERS, "{n} headers refused");
    }
}

/// A decoded head encoded again: the same payload in one frame of
/// `frame_kind`, or (payload over the frame limit) `FrameTooLarge` with
/// nothing written.
fn check_reencoded(payload: &[u8], frame_kind: u8, encoded: Result<(), ProtocolError>, out: &[u8]) {
    match encoded {
        Ok(()) => {
            assert!(payload.len() <= MAX_PAYLOAD);
            assert_eq!(out[0], frame_kind);
            assert_eq!(&out[FRAME_HEADER_LEN..], payload, "not canonical");
        }
        Err(e) => {
            assert_eq!(e, ProtocolError::FrameTooLarge(payload.len()));
            assert!(out.is_empty());
        }
    }
}

/// `RequestHead::decode` on arbitrary bytes: an error of the documented
/// kinds, or a head that encodes back to exactly these bytes.
pub fn check_request_payload(payload: &[u8]) {
    match RequestHead::decode(payload) {
        Ok(head) => {
            assert!(head.headers.len() <= MAX_HEADERS);
            let mut out = Vec::new();
            let encoded = head.encode(&mut out);
            check_reencoded(payload, kind::REQUEST_HEAD, encoded, &out);
        }
        Err(e) => {
            check_count_error(&e);
            assert!(
                matches!(
                    e,
                    ProtocolError::Truncated(_)
                        | ProtocolError::Trailing(_)
                        | ProtocolError::TooManyHeaders(_)
                ),
                "RequestHead::decode returned {e:?}"
            );
        }
    }
}

/// `ResponseHead::decode` on arbitrary bytes: an error of the documented
/// kinds, or a head the front end can turn into an HTTP response and that
/// `ResponseHeadWriter` writes back as exactly these bytes.
pub fn check_response_payload(payload: &[u8]) {
    match ResponseHead::decode(payload) {
        Ok(head) => {
            assert!((100..=999).contains(&head.status));
            assert!(http::StatusCode::from_u16(head.status).is_ok());
            assert!(head.headers.len() <= MAX_HEADERS);
            let mut out = Vec::new();
            let mut w = ResponseHeadWriter::begin(&mut out, head.status);
            for (name, value) in &head.headers {
                w.header(&mut out, name, value);
            }
            let encoded = w.finish(&mut out);
            check_reencoded(payload, kind::RESPONSE_HEAD, encoded, &out);
        }
        Err(e) => {
            check_count_error(&e);
            match e {
                ProtocolError::BadStatus(s) => assert!(!(100..=999).contains(&s)),
                ProtocolError::Truncated(_)
                | ProtocolError::Trailing(_)
                | ProtocolError::TooManyHeaders(_) => {}
                other => panic!("ResponseHead::decode returned {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Structured inputs.

/// Reads values out of fuzz bytes; past the end everything is zero.
pub struct Cursor<'a> {
    data: &'a [u8],
    /// Bytes structured values may still grow to (see [`OUTPUT_BUDGET`]).
    budget: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor {
            data,
            budget: OUTPUT_BUDGET,
        }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A byte string: usually up to 63 bytes taken literally; one tag in
    /// four repeats them to any size up to 2 MiB (in 32-byte steps), so
    /// the payload limit is reachable from a small input.
    pub fn field(&mut self) -> Vec<u8> {
        let tag = self.byte();
        let chunk = self.take(usize::from(tag & 0x3f));
        if tag >> 6 != 3 {
            return chunk.to_vec();
        }
        let size = (usize::from(self.u16()) * 32).min(self.budget);
        self.budget -= size;
        let mut v = if chunk.is_empty() {
            vec![b'x'; size]
        } else {
            chunk.repeat(size / chunk.len() + 1)
        };
        v.truncate(size);
        v
    }

    /// Up to 15 distinct header lines, and how many lines to send in all
    /// (cycling through them): usually one each, sometimes up to 2047 so
    /// that the header-count limit is reachable too.
    pub fn headers(&mut self) -> (Vec<Line>, usize) {
        let tag = self.byte();
        let distinct: Vec<_> = (0..tag & 0x0f)
            .map(|_| (self.field(), self.field()))
            .collect();
        let total = if distinct.is_empty() {
            0
        } else if tag & 0x80 != 0 {
            usize::from(self.u16() % 2048)
        } else {
            distinct.len()
        };
        (distinct, total)
    }

    /// Bytes already in the output buffer before the encoder appends.
    pub fn prefix(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.byte() % 3 {
            0 => {}
            1 => put_frame(&mut out, kind::END, b""),
            _ => {
                let body = self.take(16);
                put_frame(&mut out, kind::BODY, body);
            }
        }
        out
    }
}

/// `total` lines cycling through `distinct`, cut short when writing them
/// would exceed the output budget. Returns the lines and their encoded size.
fn header_lines(distinct: &[Line], total: usize, mut size: usize) -> (Vec<LineRef<'_>>, usize) {
    let mut lines = Vec::with_capacity(total);
    for (name, value) in distinct.iter().cycle().take(total) {
        let cost = 8 + name.len() + value.len();
        if size + cost > OUTPUT_BUDGET {
            break;
        }
        size += cost;
        lines.push((&name[..], &value[..]));
    }
    (lines, size)
}

// ---------------------------------------------------------------------------
// request_head_roundtrip

/// Arbitrary fields -> `RequestHead::encode` -> `decode_frame` ->
/// `RequestHead::decode` gives the same head back, or the encoder refuses
/// with exactly the limit that was exceeded and leaves the buffer as it was.
pub fn request_head_roundtrip(data: &[u8]) {
    let mut c = Cursor::new(data);
    let prefix = c.prefix();
    let fields: [Vec<u8>; 11] = std::array::from_fn(|_| c.field());
    let (distinct, total) = c.headers();
    let size = 11 * 4 + fields.iter().map(Vec::len).sum::<usize>() + 4;
    let (headers, size) = header_lines(&distinct, total, size);
    let f = |i: usize| &fields[i][..];
    let head = RequestHead {
        method: f(0),
        target: f(1),
        script_name: f(10),
        path: f(2),
        query: f(3),
        protocol: f(4),
        scheme: f(5),
        server_name: f(6),
        server_port: f(7),
        remote_addr: f(8),
        remote_port: f(9),
        headers,
    };

    let mut out = prefix.clone();
    let result = head.encode(&mut out);
    let Some(payload) = written_head(
        result,
        head.headers.len(),
        size,
        &out,
        &prefix,
        kind::REQUEST_HEAD,
    ) else {
        return;
    };
    assert_eq!(RequestHead::decode(payload).as_ref(), Ok(&head));
    // And the buffer as a whole reads as the peer would read it.
    frame_decoder(&out);
}

/// The checks shared by both head encoders: refused exactly at a limit
/// (leaving `out` as it was), otherwise exactly one whole frame of `kind`
/// with a `size`-byte payload appended after `prefix`. Returns the payload
/// when the head was written.
fn written_head<'a>(
    result: Result<(), ProtocolError>,
    lines: usize,
    size: usize,
    out: &'a [u8],
    prefix: &[u8],
    kind: u8,
) -> Option<&'a [u8]> {
    if lines > MAX_HEADERS {
        assert_eq!(result, Err(ProtocolError::TooManyHeaders(lines)));
    } else if size > MAX_PAYLOAD {
        assert_eq!(result, Err(ProtocolError::FrameTooLarge(size)));
    } else {
        assert_eq!(result, Ok(()));
    }
    if result.is_err() {
        assert_eq!(out, prefix, "a refused head left bytes behind");
        return None;
    }
    assert_eq!(&out[..prefix.len()], prefix);
    let wire = &out[prefix.len()..];
    let frame = decode_frame(wire).unwrap().expect("a whole frame");
    assert_eq!(frame.kind, kind);
    assert_eq!(frame.wire_len(), wire.len());
    assert_eq!(frame.payload.len(), size);
    Some(frame.payload)
}

// ---------------------------------------------------------------------------
// response_head

/// `ResponseHead::decode` on the raw bytes, then a `ResponseHeadWriter`
/// round trip of a status and header lines read from the same bytes.
pub fn response_head(data: &[u8]) {
    check_response_payload(data);

    let mut c = Cursor::new(data);
    let prefix = c.prefix();
    let status = c.u16();
    let (distinct, total) = c.headers();
    let (headers, size) = header_lines(&distinct, total, 2 + 4);

    let mut out = prefix.clone();
    let mut w = ResponseHeadWriter::begin(&mut out, status);
    for (name, value) in &headers {
        w.header(&mut out, name, value);
    }
    let result = w.finish(&mut out);
    let Some(payload) = written_head(
        result,
        headers.len(),
        size,
        &out,
        &prefix,
        kind::RESPONSE_HEAD,
    ) else {
        return;
    };
    let decoded = ResponseHead::decode(payload);
    if (100..=999).contains(&status) {
        let decoded = decoded.expect("a written head decodes");
        assert_eq!(decoded.status, status);
        assert_eq!(decoded.headers, headers);
    } else {
        assert_eq!(decoded, Err(ProtocolError::BadStatus(status)));
    }
    frame_decoder(&out);
}

// ---------------------------------------------------------------------------
// rack_headers

/// The header checks and key mapping on arbitrary bytes, whole and split
/// in two at a position the first byte picks.
pub fn rack_headers(data: &[u8]) {
    let (a, b) = match data.split_first() {
        Some((&k, rest)) => rest.split_at(usize::from(k).min(rest.len())),
        None => (data, data),
    };
    for piece in [data, a, b] {
        check_name(piece);
        check_value(piece);
        check_key(piece);
        check_host(piece);
    }
    // The worker splits a Rack 2 value on "\n" and checks each line.
    for line in b.split(|&c| c == b'\n') {
        check_value(line);
    }
    // Two names only share an env key when they are the same name.
    if let (Some(ka), Some(kb)) = (rack_header_key(a), rack_header_key(b)) {
        if ka == kb {
            assert!(a.eq_ignore_ascii_case(b), "{a:?} and {b:?} collide");
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Response header names: RFC 9110 tokens, never `Status`, and always
/// names the front end's `http::HeaderName` takes.
fn check_name(name: &[u8]) {
    let expected = !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && !name.eq_ignore_ascii_case(b"status");
    assert_eq!(check_header_name(name).is_ok(), expected, "name {name:?}");
    if expected {
        assert!(http::HeaderName::from_bytes(name).is_ok(), "name {name:?}");
    }
}

/// Response header values: refused exactly when they hold CR, LF or NUL.
/// The front end's `http::HeaderValue` also refuses the other control
/// bytes (but HTAB) and DEL; the worker lets those through (as Puma does)
/// and the front end drops such a header with a warning.
fn check_value(value: &[u8]) {
    let ok = check_header_value(b"x", value).is_ok();
    let splits = value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
    assert_eq!(ok, !splits, "value {value:?}");
    if ok && http::HeaderValue::from_bytes(value).is_err() {
        let control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        assert!(value.iter().any(|&b| control(b)), "value {value:?}");
    }
}

/// Request header name -> Rack env key: `HTTP_` and [A-Z0-9_] only, one
/// name per key, never a key Rack reserves or httpoxy uses.
fn check_key(name: &[u8]) {
    let plain = !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    let reserved = [&b"proxy"[..], b"content-type", b"content-length"]
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r));
    let Some(key) = rack_header_key(name) else {
        assert!(!plain || reserved, "{name:?} was dropped");
        return;
    };
    let rest = key.strip_prefix(b"HTTP_").expect("HTTP_ prefix");
    assert!(
        !rest.is_empty()
            && rest
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
        "{name:?} -> {key:?}"
    );
    // Injective: "-" is the only source of "_" (names with "_" are dropped
    // so a client cannot spoof a header a proxy sets).
    assert!(!name.contains(&b'_'), "{name:?} kept");
    assert_eq!(rest.len(), name.len());
    for (&k, &n) in rest.iter().zip(name) {
        assert_eq!(
            k,
            if n == b'-' {
                b'_'
            } else {
                n.to_ascii_uppercase()
            }
        );
    }
    for bad in ["HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        assert_ne!(key, bad.as_bytes(), "{name:?}");
    }
}

/// Host header -> (SERVER_NAME, SERVER_PORT): the name is a prefix of the
/// header, and a port is non-empty digits right after the name and ":".
fn check_host(bytes: &[u8]) {
    let host = String::from_utf8_lossy(bytes);
    let (name, port) = split_host(&host);
    assert!(host.starts_with(name), "{host:?} -> {name:?}");
    match port {
        Some(port) => {
            assert!(
                !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
                "{host:?} -> port {port:?}"
            );
            assert_eq!(host, format!("{name}:{port}"), "{host:?}");
        }
        None => assert!(
            name == host || (host.starts_with('[') && name.ends_with(']')),
            "{host:?} -> {name:?}"
        ),
    }
}
