//! The front end ↔ worker wire protocol (see `docs/protocol.md`).
//!
//! Every message is a frame: one type byte, a 4-byte big-endian payload
//! length, then the payload. A request is `REQUEST_HEAD`, then zero or more
//! `BODY` frames or one `BODY_FILE`, then `END`. A response is
//! `RESPONSE_HEAD`, zero or more `BODY` frames, then `END` (or `ABORT` when
//! the app raised after the head was sent). The worker opens the connection
//! with `HELLO`.
//!
//! Both sides share this module. It does no I/O: encoders append to a
//! `Vec<u8>` and the decoder looks at a byte slice and says how much of it
//! is one frame, so the async front end and the blocking worker loop use the
//! same code, and the fuzz targets can drive it directly. Every length is
//! checked against a bound before anything is allocated: a hostile or
//! corrupted peer gets an error, never a panic or a huge allocation.

use thiserror::Error;

/// Bumped whenever a frame's layout changes; sent in `HELLO`. 4: a worker
/// opens one connection per session (`--threads-per-worker`), and `HELLO`
/// names the session (`slot`) and how many the worker opens (`threads`);
/// `REQUEST_HEAD` carries the app's `SCRIPT_NAME` (a prefix route).
pub const VERSION: u32 = 4;

/// Bytes before a frame's payload: type (1) + length (4).
pub const FRAME_HEADER_LEN: usize = 5;
/// Largest payload of any frame. Head frames are limited by this; bodies are
/// split into frames of at most this size.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Send buffer asked for on both ends of a worker connection: a request or
/// response of up to about a megabyte goes in one write, so neither side
/// waits for the other to read (a worker is free as soon as it has written;
/// the front end's event loop never returns to a half-sent body). The
/// kernel caps it at `net.core.wmem_max`; memory is used only while bytes
/// wait.
pub const SOCKET_BUFFER: usize = 2 << 20;

/// Asks for [`SOCKET_BUFFER`] on a worker connection's socket. Best effort:
/// a smaller buffer only means more round trips.
pub fn size_send_buffer(socket: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER);
}

/// Largest number of header lines in a request or response head.
pub const MAX_HEADERS: usize = 1000;

pub mod kind {
    //! Frame type bytes. Front end → worker are below 0x10, worker → front
    //! end are 0x10 and above, so a frame sent the wrong way is an error.
    pub const REQUEST_HEAD: u8 = 0x01;
    pub const BODY: u8 = 0x02;
    pub const BODY_FILE: u8 = 0x03;
    pub const END: u8 = 0x04;
    /// Between requests: become a template (a mold) for new workers.
    pub const PROMOTE: u8 = 0x05;

    pub const HELLO: u8 = 0x10;
    pub const RESPONSE_HEAD: u8 = 0x11;
    pub const RESPONSE_BODY: u8 = 0x12;
    pub const RESPONSE_END: u8 = 0x13;
    pub const ABORT: u8 = 0x14;
    /// The answer to `PROMOTE`: JSON `{"ok": bool, "reason": "…"}`. After
    /// an ok, the connection carries control lines (`control.rs`).
    pub const PROMOTED: u8 = 0x15;
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    FrameTooLarge(usize),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownKind(u8),
    #[error("unexpected frame type 0x{got:02x} while expecting {expected}")]
    Unexpected { got: u8, expected: &'static str },
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} has trailing bytes")]
    Trailing(&'static str),
    #[error("too many headers ({0})")]
    TooManyHeaders(usize),
    #[error("invalid HELLO: {0}")]
    BadHello(String),
    #[error("invalid PROMOTED: {0}")]
    BadPromoted(String),
    #[error("invalid status code {0}")]
    BadStatus(u16),
}

/// One frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame occupies in the buffer, header included.
    pub fn wire_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Looks for one whole frame at the start of `buf`. `Ok(None)` means more
/// bytes are needed; the caller should read and try again.
pub fn decode_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, ProtocolError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[0];
    if !is_known_kind(kind) {
        return Err(ProtocolError::UnknownKind(kind));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::FrameTooLarge(len));
    }
    if buf.len() < FRAME_HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        kind,
        payload: &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len],
    }))
}

fn is_known_kind(kind: u8) -> bool {
    matches!(kind, 0x01..=0x05 | 0x10..=0x15)
}

/// Appends a frame with the given payload.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    put_frame_header(out, kind, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a frame's header only: the caller sends its `len` bytes of
/// payload next, from wherever they are.
pub fn put_frame_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    debug_assert!(len <= MAX_PAYLOAD);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Appends `data` as as many `kind` frames as its size needs (none when empty).
pub fn put_chunked(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD) {
        put_frame(out, kind, chunk);
    }
}

/// Starts a frame whose payload the caller appends next; returns the offset
/// to hand to [`finish_frame`]. Saves building the payload in a second buffer.
pub fn begin_frame(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Writes the payload length of a frame begun with [`begin_frame`].
pub fn finish_frame(out: &mut [u8], start: usize) -> Result<(), ProtocolError> {
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::FrameTooLarge(len));
    }
    out[start + 1..start + 5].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Reads length-prefixed fields out of a payload.
struct Fields<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<2>()
            .ok_or(ProtocolError::Truncated(self.what))?;
        self.rest = rest;
        Ok(u16::from_be_bytes(*head))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or(ProtocolError::Truncated(self.what))?;
        self.rest = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        if len > self.rest.len() {
            return Err(ProtocolError::Truncated(self.what));
        }
        let (b, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(b)
    }

    fn finish(self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Trailing(self.what))
        }
    }
}

/// What the front end knows about a request, borrowed from wherever it
/// lives (the hyper request when encoding, the frame when decoding).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead<'a> {
    pub method: &'a [u8],
    /// The raw request target, as the client sent it (REQUEST_URI).
    pub target: &'a [u8],
    /// Where the app is mounted (`SCRIPT_NAME`): "" or a path prefix.
    pub script_name: &'a [u8],
    /// The rest of the path (`PATH_INFO`).
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub protocol: &'a [u8],
    /// "http" or "https".
    pub scheme: &'a [u8],
    pub server_name: &'a [u8],
    pub server_port: &'a [u8],
    pub remote_addr: &'a [u8],
    pub remote_port: &'a [u8],
    /// Header names lower-case as hyper gives them; repeated names appear
    /// once per line, in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> RequestHead<'a> {
    /// Appends this head as a `REQUEST_HEAD` frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if self.headers.len() > MAX_HEADERS {
            return Err(ProtocolError::TooManyHeaders(self.headers.len()));
        }
        let start = begin_frame(out, kind::REQUEST_HEAD);
        for field in [
            self.method,
            self.target,
            self.script_name,
            self.path,
            self.query,
            self.protocol,
            self.scheme,
            self.server_name,
            self.server_port,
            self.remote_addr,
            self.remote_port,
        ] {
            put_bytes(out, field);
        }
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (name, value) in &self.headers {
            put_bytes(out, name);
            put_bytes(out, value);
        }
        finish_frame(out, start).inspect_err(|_| out.truncate(start))
    }

    /// Decodes the payload of a `REQUEST_HEAD` frame.
    pub fn decode(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut f = Fields {
            rest: payload,
            what: "request head",
        };
        let mut head = RequestHead {
            method: f.bytes()?,
            target: f.bytes()?,
            script_name: f.bytes()?,
            path: f.bytes()?,
            query: f.bytes()?,
            protocol: f.bytes()?,
            scheme: f.bytes()?,
            server_name: f.bytes()?,
            server_port: f.bytes()?,
            remote_addr: f.bytes()?,
            remote_port: f.bytes()?,
            headers: Vec::new(),
        };
        let count = f.u32()? as usize;
        if count > MAX_HEADERS {
            return Err(ProtocolError::TooManyHeaders(count));
        }
        // Each header needs at least 8 bytes of lengths: a count larger than
        // the payload can hold is a lie, so don't reserve for it.
        head.headers.reserve(count.min(f.rest.len() / 8));
        for _ in 0..count {
            head.headers.push((f.bytes()?, f.bytes()?));
        }
        f.finish()?;
        Ok(head)
    }
}

/// A response head as the worker sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> ResponseHead<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut f = Fields {
            rest: payload,
            what: "response head",
        };
        let status = f.u16()?;
        if !(100..=999).contains(&status) {
            return Err(ProtocolError::BadStatus(status));
        }
        let count = f.u32()? as usize;
        if count > MAX_HEADERS {
            return Err(ProtocolError::TooManyHeaders(count));
        }
        let mut headers = Vec::with_capacity(count.min(f.rest.len() / 8));
        for _ in 0..count {
            headers.push((f.bytes()?, f.bytes()?));
        }
        f.finish()?;
        Ok(ResponseHead { status, headers })
    }
}

/// Builds a `RESPONSE_HEAD` frame incrementally, so the worker can append
/// header lines straight from Ruby strings without collecting them first.
pub struct ResponseHeadWriter {
    start: usize,
    count_at: usize,
    count: u32,
}

impl ResponseHeadWriter {
    pub fn begin(out: &mut Vec<u8>, status: u16) -> Self {
        let start = begin_frame(out, kind::RESPONSE_HEAD);
        out.extend_from_slice(&status.to_be_bytes());
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        ResponseHeadWriter {
            start,
            count_at,
            count: 0,
        }
    }

    pub fn header(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        put_bytes(out, name);
        put_bytes(out, value);
        self.count += 1;
    }

    /// Completes the frame; on error (too big, too many headers) the buffer
    /// is cut back to where the frame began.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if self.count as usize > MAX_HEADERS {
            out.truncate(self.start);
            return Err(ProtocolError::TooManyHeaders(self.count as usize));
        }
        out[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        finish_frame(out, self.start).inspect_err(|_| out.truncate(self.start))
    }
}

/// A worker's answer to `PROMOTE`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Promoted {
    pub ok: bool,
    /// Why not, when not.
    #[serde(default)]
    pub reason: String,
}

impl Promoted {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let json = serde_json::to_vec(self).expect("Promoted serializes");
        put_frame(out, kind::PROMOTED, &json);
    }

    pub fn decode(frame: Frame<'_>) -> Result<Self, ProtocolError> {
        if frame.kind != kind::PROMOTED {
            return Err(ProtocolError::Unexpected {
                got: frame.kind,
                expected: "PROMOTED",
            });
        }
        serde_json::from_slice(frame.payload).map_err(|e| ProtocolError::BadPromoted(e.to_string()))
    }
}

/// The worker's greeting on each of its connections: which spawn it
/// answers, its PID, and which of its `threads` sessions (one connection
/// and one Ruby thread each) this connection is, from 0.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub version: u32,
    pub worker_id: u64,
    pub pid: u32,
    pub slot: u32,
    pub threads: u32,
}

impl Hello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let json = serde_json::to_vec(self).expect("Hello serializes");
        put_frame(out, kind::HELLO, &json);
    }

    pub fn decode(frame: Frame<'_>) -> Result<Self, ProtocolError> {
        if frame.kind != kind::HELLO {
            return Err(ProtocolError::Unexpected {
                got: frame.kind,
                expected: "HELLO",
            });
        }
        let hello: Hello = serde_json::from_slice(frame.payload)
            .map_err(|e| ProtocolError::BadHello(e.to_string()))?;
        if hello.version != VERSION {
            return Err(ProtocolError::BadHello(format!(
                "worker speaks protocol version {}, front end {}",
                hello.version, VERSION
            )));
        }
        Ok(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_head() -> RequestHead<'static> {
        RequestHead {
            method: b"POST",
            target: b"/app/a%20b?x=1",
            script_name: b"/app",
            path: b"/a%20b",
            query: b"x=1",
            protocol: b"HTTP/1.1",
            scheme: b"http",
            server_name: b"localhost",
            server_port: b"3000",
            remote_addr: b"127.0.0.1",
            remote_port: b"5555",
            headers: vec![(b"host", b"localhost"), (b"x-a", b"1"), (b"x-a", b"2")],
        }
    }

    #[test]
    fn request_head_round_trips() {
        let head = sample_head();
        let mut buf = Vec::new();
        head.encode(&mut buf).unwrap();
        put_frame(&mut buf, kind::END, b"");
        let frame = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(frame.kind, kind::REQUEST_HEAD);
        assert_eq!(RequestHead::decode(frame.payload).unwrap(), head);
        let end = decode_frame(&buf[frame.wire_len()..]).unwrap().unwrap();
        assert_eq!(end.kind, kind::END);
        assert_eq!(end.wire_len(), buf.len() - frame.wire_len());
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut buf = Vec::new();
        sample_head().encode(&mut buf).unwrap();
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics() {
        let mut buf = Vec::new();
        sample_head().encode(&mut buf).unwrap();
        let payload = &buf[FRAME_HEADER_LEN..];
        for cut in 0..payload.len() {
            assert!(
                RequestHead::decode(&payload[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = payload.to_vec();
        extra.push(0);
        assert_eq!(
            RequestHead::decode(&extra),
            Err(ProtocolError::Trailing("request head"))
        );
    }

    #[test]
    fn oversized_and_unknown_frames_are_rejected() {
        let mut buf = vec![kind::BODY];
        buf.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        assert_eq!(
            decode_frame(&buf),
            Err(ProtocolError::FrameTooLarge(MAX_PAYLOAD + 1))
        );
        assert_eq!(
            decode_frame(&[0x7f, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownKind(0x7f))
        );
    }

    #[test]
    fn a_lying_header_count_is_rejected_without_allocating_it() {
        let mut payload = Vec::new();
        // Every string field empty.
        for _ in 0..11 {
            put_bytes(&mut payload, b"");
        }
        payload.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            RequestHead::decode(&payload),
            Err(ProtocolError::TooManyHeaders(u32::MAX as usize))
        );
        payload.truncate(payload.len() - 4);
        payload.extend_from_slice(&500u32.to_be_bytes());
        assert_eq!(
            RequestHead::decode(&payload),
            Err(ProtocolError::Truncated("request head"))
        );
    }

    #[test]
    fn response_head_round_trips() {
        let mut buf = Vec::new();
        let mut w = ResponseHeadWriter::begin(&mut buf, 201);
        w.header(&mut buf, b"content-type", b"text/plain");
        w.header(&mut buf, b"set-cookie", b"a=1");
        w.finish(&mut buf).unwrap();
        let frame = decode_frame(&buf).unwrap().unwrap();
        let head = ResponseHead::decode(frame.payload).unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(
            head.headers,
            vec![
                (&b"content-type"[..], &b"text/plain"[..]),
                (&b"set-cookie"[..], &b"a=1"[..])
            ]
        );
    }

    #[test]
    fn bad_status_is_rejected() {
        let mut buf = Vec::new();
        ResponseHeadWriter::begin(&mut buf, 42)
            .finish(&mut buf)
            .unwrap();
        let frame = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(
            ResponseHead::decode(frame.payload),
            Err(ProtocolError::BadStatus(42))
        );
    }

    #[test]
    fn hello_checks_version() {
        let mut buf = Vec::new();
        Hello {
            version: VERSION + 1,
            worker_id: 1,
            pid: 2,
            slot: 0,
            threads: 1,
        }
        .encode(&mut buf);
        let frame = decode_frame(&buf).unwrap().unwrap();
        assert!(matches!(
            Hello::decode(frame),
            Err(ProtocolError::BadHello(_))
        ));
    }

    #[test]
    fn chunked_bodies_split_at_the_payload_limit() {
        let data = vec![7u8; MAX_PAYLOAD * 2 + 3];
        let mut buf = Vec::new();
        put_chunked(&mut buf, kind::BODY, &data);
        let mut at = 0;
        let mut total = 0;
        while at < buf.len() {
            let f = decode_frame(&buf[at..]).unwrap().unwrap();
            total += f.payload.len();
            at += f.wire_len();
        }
        assert_eq!(total, data.len());
    }
}
