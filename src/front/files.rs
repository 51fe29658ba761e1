//! One file from disk to an HTTP client: what static files (`static_files.rs`)
//! and X-Sendfile (`sendfile.rs`) have in common.
//!
//! - [`Beneath::open`] opens a path beneath one directory with `openat2`'s
//!   `RESOLVE_BENEATH`: the kernel refuses any step out of it, symlinks
//!   included, in the same system call (static files);
//! - [`open_within`] opens a path and then asks the kernel what it opened
//!   (`/proc/self/fd/N`, every symlink resolved) and refuses it unless it
//!   lies under one of the allowed roots (X-Sendfile's several roots, and
//!   the fallback where `openat2` is missing). Either way what is checked
//!   is the file opened, not a name looked at before: a symlink swapped in
//!   after the check cannot redirect the read. Both open with
//!   `O_NONBLOCK`, so a FIFO planted under a root cannot stall the event
//!   loop (regular files ignore the flag).
//! - [`decide`] is RFC 9110's conditional and range logic as a pure
//!   function of the request headers and the file's validators (unit
//!   tested): `If-Match`, `If-Unmodified-Since` (412), `If-None-Match`,
//!   `If-Modified-Since` (304), then `Range` under `If-Range` (206 for a
//!   single range, 416 when nothing is satisfiable). A request for several
//!   ranges gets the whole file (200): RFC 9110 lets a server ignore Range,
//!   and multipart/byteranges is rarely worth its cost.
//! - [`respond`] builds the response: validators (`ETag` from the mtime and
//!   size, as nginx does; `Last-Modified`), `Accept-Ranges`, the length,
//!   and the body. Files up to [`INLINE_MAX`] are read at once (a page-cache
//!   copy is cheaper than a hop to another thread, and opening and stat-ing
//!   happen on the event loop anyway, as in nginx); larger ones stream in
//!   [`CHUNK`]-sized positioned reads on tokio's blocking pool, one chunk
//!   read ahead while hyper writes the previous one, so a 1 GB download
//!   holds at most a few chunks in memory and never blocks the event loop
//!   on the disk.

use std::fs::{File, Metadata};
use std::future::Future;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::upstream::{error_response, ResponseBody};

/// Bodies up to this size are read in one go when the response is built.
pub const INLINE_MAX: u64 = 64 * 1024;
/// Larger bodies are read this much at a time.
pub const CHUNK: usize = 256 * 1024;

/// A regular file, open, known to lie under an allowed root.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
    /// The path the kernel resolved it to.
    pub real: PathBuf,
}

/// What a response's bytes come from.
pub enum Source {
    /// An open file: read when the response is built (small) or streamed.
    File(Opened),
    /// A small file's whole content, already in memory (static files keep
    /// those, see `static_files.rs`), with the metadata it was read under.
    Bytes { meta: Metadata, bytes: Bytes },
}

impl Source {
    fn meta(&self) -> &Metadata {
        match self {
            Source::File(f) => &f.meta,
            Source::Bytes { meta, .. } => meta,
        }
    }
}

impl From<Opened> for Source {
    fn from(file: Opened) -> Source {
        Source::File(file)
    }
}

/// Why a path cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Nothing there (or a name the filesystem cannot hold).
    #[error("no such file")]
    Missing,
    #[error("a directory")]
    Directory,
    /// A FIFO, socket or device.
    #[error("not a regular file")]
    NotRegular,
    /// It exists, but resolves (through a symlink or `..`) outside every
    /// allowed root.
    #[error("resolves to {0}, outside the allowed directories")]
    Outside(PathBuf),
    #[error("permission denied")]
    Forbidden,
    #[error("{0}")]
    Io(io::Error),
}

pub fn open_error(e: io::Error) -> OpenError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP) => OpenError::Missing,
        Some(libc::EACCES | libc::EPERM) => OpenError::Forbidden,
        _ => OpenError::Io(e),
    }
}

/// The checks after opening: a regular file, with its metadata.
fn regular(file: File, real: PathBuf) -> Result<Opened, OpenError> {
    let meta = file.metadata().map_err(OpenError::Io)?;
    if meta.is_dir() {
        return Err(OpenError::Directory);
    }
    if !meta.is_file() {
        return Err(OpenError::NotRegular);
    }
    Ok(Opened { file, meta, real })
}

/// Opens `path` if what it names, after every symlink, is a regular file
/// under one of `roots` (which must be canonical).
pub fn open_within(path: &Path, roots: &[PathBuf]) -> Result<Opened, OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(open_error)?;
    let real =
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(OpenError::Io)?;
    if !roots.iter().any(|root| real.starts_with(root)) {
        return Err(OpenError::Outside(real));
    }
    regular(file, real)
}

/// One directory that files are opened beneath, for static files: the
/// kernel resolves the path and refuses, atomically, any step out of it
/// (`openat2` with `RESOLVE_BENEATH`, Linux ≥ 5.6), which costs one system
/// call where [`open_within`] needs two (the `/proc` read-back is a path
/// walk of its own, and was 8 % of the front end's CPU serving a 10 KB
/// file). Where `openat2` is missing (older kernels, seccomp filters that
/// answer ENOSYS) it falls back to [`open_within`]. `RESOLVE_BENEATH` also
/// refuses absolute symlinks, even ones pointing inside the directory.
pub struct Beneath {
    /// Canonical.
    path: PathBuf,
    dir: File,
    openat2: AtomicBool,
}

impl Beneath {
    pub fn new(path: PathBuf) -> io::Result<Beneath> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
            .open(&path)?;
        Ok(Beneath {
            path,
            dir,
            openat2: AtomicBool::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (relative, no `..`) beneath the directory.
    pub fn open(&self, rel: &Path) -> Result<Opened, OpenError> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        let full = self.path.join(rel);
        if self.openat2.load(Ordering::Relaxed) {
            let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.dir, rel, flags, Mode::empty(), resolve) {
                Ok(fd) => return regular(File::from(fd), full),
                Err(Errno::XDEV) => return Err(OpenError::Outside(full)),
                Err(Errno::NOSYS) => {
                    self.openat2.store(false, Ordering::Relaxed);
                    tracing::info!(
                        "openat2 is not available: static files are checked through /proc/self/fd"
                    );
                }
                // A seccomp filter may answer EPERM: let the plain open say.
                Err(Errno::PERM) => {}
                Err(e) => return Err(open_error(e.into())),
            }
        }
        open_within(&full, std::slice::from_ref(&self.path))
    }
}

/// The entity tag of a file: its mtime and size in hex (nginx's form),
/// plus a suffix naming a precompressed variant.
pub fn etag(meta: &Metadata, suffix: &str) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("\"{mtime:x}-{:x}{suffix}\"", meta.len())
}

/// What to answer, from the request and the file's validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 200 (or the app's status) with the whole file.
    Full,
    /// 206 with these bytes.
    Partial(RangeInclusive<u64>),
    /// 416: no range of the request is in the file.
    Unsatisfiable,
    /// 304.
    NotModified,
    /// 412.
    PreconditionFailed,
}

/// Entity tags of a list header (`If-Match`, `If-None-Match`): `None` for
/// `*`, else each tag with whether it is weak. Malformed parts end the list.
fn entity_tags(value: &str) -> Option<Vec<(bool, &str)>> {
    if value.trim() == "*" {
        return None;
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        let Some(body) = rest.strip_prefix('"') else {
            break;
        };
        let Some(end) = body.find('"') else {
            break;
        };
        tags.push((weak, &body[..end]));
        rest = &body[end + 1..];
    }
    Some(tags)
}

/// `(weak, opaque)` of one entity tag.
fn split_tag(tag: &str) -> Option<(bool, &str)> {
    let (weak, t) = match tag.strip_prefix("W/") {
        Some(t) => (true, t),
        None => (false, tag),
    };
    let inner = t.strip_prefix('"')?.strip_suffix('"')?;
    Some((weak, inner))
}

/// Whether the list header matches `etag`, strongly or weakly (RFC 9110
/// §8.8.3.2).
fn list_matches(value: &str, etag: Option<&str>, strong: bool) -> bool {
    let Some(ours) = etag.and_then(split_tag) else {
        // No entity tag: only `*` ("any current representation") matches.
        return value.trim() == "*";
    };
    match entity_tags(value) {
        None => true,
        Some(tags) => tags
            .iter()
            .any(|&(weak, t)| t == ours.1 && (!strong || (!weak && !ours.0))),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 9110 §13.2.2's order of evaluation, then Range (§14.2).
pub fn decide(
    method: &Method,
    req: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
    len: u64,
) -> Decision {
    let date = |name| header_str(req, name).and_then(|v| httpdate::parse_http_date(v).ok());
    if let Some(v) = header_str(req, header::IF_MATCH) {
        if !list_matches(v, etag, true) {
            return Decision::PreconditionFailed;
        }
    } else if let (Some(since), Some(lm)) = (date(header::IF_UNMODIFIED_SINCE), last_modified) {
        if secs(lm) > secs(since) {
            return Decision::PreconditionFailed;
        }
    }
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if let Some(v) = header_str(req, header::IF_NONE_MATCH) {
        if list_matches(v, etag, false) {
            return match get_or_head {
                true => Decision::NotModified,
                false => Decision::PreconditionFailed,
            };
        }
    } else if let (true, Some(since), Some(lm)) =
        (get_or_head, date(header::IF_MODIFIED_SINCE), last_modified)
    {
        if secs(lm) <= secs(since) {
            return Decision::NotModified;
        }
    }
    if method != Method::GET {
        return Decision::Full;
    }
    let Some(range) = header_str(req, header::RANGE) else {
        return Decision::Full;
    };
    // If-Range: the range only if the client's copy is still current
    // (a strong entity tag, or exactly the Last-Modified date).
    if let Some(v) = header_str(req, header::IF_RANGE) {
        let current = if v.starts_with('"') || v.starts_with("W/") {
            matches!((split_tag(v), etag.and_then(split_tag)),
                (Some((false, theirs)), Some((false, ours))) if theirs == ours)
        } else {
            match (httpdate::parse_http_date(v).ok(), last_modified) {
                (Some(d), Some(lm)) => secs(d) == secs(lm),
                _ => false,
            }
        };
        if !current {
            return Decision::Full;
        }
    }
    use http_range_header::RangeUnsatisfiableError as E;
    match http_range_header::parse_range_header(range).and_then(|r| r.validate(len)) {
        Ok(ranges) if ranges.len() == 1 => Decision::Partial(ranges[0].clone()),
        // Several ranges: the whole file (see the module comment). A
        // zero-length file validates "bytes=-5" to no range at all.
        Ok(_) => Decision::Full,
        Err(E::Unsatisfiable) => Decision::Unsatisfiable,
        // Bad syntax, another unit, too many or overlapping ranges: RFC
        // 9110 lets a server ignore the header.
        Err(_) => Decision::Full,
    }
}

/// Headers a 304 or 412 keeps: the validators and cache directives
/// (RFC 9110 §15.4.5), and anything else not about the body.
fn strip_body_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_DISPOSITION,
        header::CONTENT_LANGUAGE,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
    ] {
        headers.remove(name);
    }
}

/// The response for `file`. `status` and `headers` are what the answer
/// would be without the file (Content-Type, Cache-Control, encoding, or
/// the app's own headers for X-Sendfile); conditional requests and ranges
/// apply only to a 200. Validators already in `headers` (an app's) win.
pub fn respond(
    req: &http::request::Parts,
    file: impl Into<Source>,
    status: StatusCode,
    mut headers: HeaderMap,
    etag_suffix: &str,
) -> Response<ResponseBody> {
    let file = file.into();
    let meta = file.meta();
    let len = meta.len();
    if !headers.contains_key(header::ETAG) {
        if let Ok(v) = HeaderValue::from_str(&etag(meta, etag_suffix)) {
            headers.insert(header::ETAG, v);
        }
    }
    // Ours, or the app's (parsed only when the request has a condition
    // that needs it).
    let mut ours = None;
    if !headers.contains_key(header::LAST_MODIFIED) {
        if let Ok(mtime) = meta.modified() {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(mtime)) {
                headers.insert(header::LAST_MODIFIED, v);
                ours = Some(mtime);
            }
        }
    }
    headers.remove(header::CONTENT_LENGTH);
    let decision = match status {
        StatusCode::OK => {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            let last_modified = ours.or_else(|| {
                header_str(&headers, header::LAST_MODIFIED)
                    .and_then(|v| httpdate::parse_http_date(v).ok())
            });
            decide(
                &req.method,
                &req.headers,
                header_str(&headers, header::ETAG),
                last_modified,
                len,
            )
        }
        _ => Decision::Full,
    };
    let (status, range) = match decision {
        Decision::Full => (status, 0..=len.wrapping_sub(1)),
        Decision::Partial(r) => {
            let v = format!("bytes {}-{}/{len}", r.start(), r.end());
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&v).expect("ASCII"),
            );
            (StatusCode::PARTIAL_CONTENT, r)
        }
        Decision::NotModified | Decision::PreconditionFailed => {
            strip_body_headers(&mut headers);
            let mut r = Response::new(ResponseBody::bytes(Bytes::new()));
            *r.status_mut() = match decision {
                Decision::NotModified => StatusCode::NOT_MODIFIED,
                _ => StatusCode::PRECONDITION_FAILED,
            };
            *r.headers_mut() = headers;
            return r;
        }
        Decision::Unsatisfiable => {
            let mut r = error_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "416 Range Not Satisfiable\n",
            );
            let v = format!("bytes */{len}");
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&v).expect("ASCII"),
            );
            return r;
        }
    };
    // An empty file's range is 0..=u64::MAX from the wrapping above: count
    // its length as zero.
    let body_len = if len == 0 {
        0
    } else {
        range.end() - range.start() + 1
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    let body = if req.method == Method::HEAD || body_len == 0 {
        ResponseBody::bytes(Bytes::new())
    } else {
        match body(file, *range.start(), body_len) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading {}: {e}", e.path.display());
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error: could not read the file\n",
                );
            }
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A failed read, with the file it was about.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
struct ReadError {
    path: PathBuf,
    source: io::Error,
}

/// The body for `len` bytes of `file` from `offset`: in memory when small,
/// else streamed.
fn body(file: Source, offset: u64, len: u64) -> Result<ResponseBody, ReadError> {
    let file = match file {
        Source::Bytes { bytes, .. } => {
            // `decide` keeps ranges within the length the metadata gave.
            let (start, end) = (offset as usize, (offset + len) as usize);
            return Ok(ResponseBody::bytes(
                bytes.slice(start..end.min(bytes.len())),
            ));
        }
        Source::File(file) => file,
    };
    if len <= INLINE_MAX {
        let mut buf = vec![0; len as usize];
        file.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| ReadError {
                path: file.real.clone(),
                source,
            })?;
        return Ok(ResponseBody::bytes(buf));
    }
    Ok(ResponseBody::Boxed(
        FileBody::new(file.file, offset, len).boxed_unsync(),
    ))
}

/// A file range streamed from tokio's blocking pool, one chunk ahead.
pub struct FileBody {
    file: Arc<File>,
    /// Offset of the next read to start.
    next: u64,
    /// One past the last byte to send.
    end: u64,
    /// Bytes not yet handed to hyper.
    left: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(file: File, offset: u64, len: u64) -> FileBody {
        FileBody {
            file: Arc::new(file),
            next: offset,
            end: offset + len,
            left: len,
            reading: None,
        }
    }

    fn start_read(&mut self) {
        let n = (self.end - self.next).min(CHUNK as u64) as usize;
        let at = self.next;
        self.next += n as u64;
        let file = self.file.clone();
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; n];
            // A short read means the file shrank since its size was sent:
            // the response cannot be completed, and hyper closes the
            // connection on the error.
            file.read_exact_at(&mut buf, at)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being sent",
                    ),
                    _ => e,
                })?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if this.reading.is_none() {
            this.start_read();
        }
        let reading = this.reading.as_mut().expect("a read in flight");
        let result = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let data = match result {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        this.left -= data.len() as u64;
        if this.next < this.end {
            // Read the next chunk while hyper writes this one.
            this.start_read();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const ETAG: &str = "\"5f-3e8\"";

    fn lm() -> SystemTime {
        httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap()
    }

    fn get(pairs: &[(&str, &str)]) -> Decision {
        decide(&Method::GET, &headers(pairs), Some(ETAG), Some(lm()), 1000)
    }

    #[test]
    fn no_conditions_send_the_whole_file() {
        assert_eq!(get(&[]), Decision::Full);
    }

    #[test]
    fn if_none_match_gives_304_on_any_listed_tag_weak_or_not() {
        assert_eq!(get(&[("if-none-match", ETAG)]), Decision::NotModified);
        assert_eq!(
            get(&[("if-none-match", "\"x\", W/\"5f-3e8\"")]),
            Decision::NotModified
        );
        assert_eq!(get(&[("if-none-match", "*")]), Decision::NotModified);
        assert_eq!(get(&[("if-none-match", "\"other\"")]), Decision::Full);
        // A POST (X-Sendfile answers any method) fails the precondition.
        assert_eq!(
            decide(
                &Method::POST,
                &headers(&[("if-none-match", ETAG)]),
                Some(ETAG),
                Some(lm()),
                1000
            ),
            Decision::PreconditionFailed
        );
    }

    #[test]
    fn if_modified_since_compares_seconds_and_yields_to_if_none_match() {
        let same = "Wed, 21 Oct 2015 07:28:00 GMT";
        let before = "Wed, 21 Oct 2015 07:27:59 GMT";
        assert_eq!(get(&[("if-modified-since", same)]), Decision::NotModified);
        assert_eq!(get(&[("if-modified-since", before)]), Decision::Full);
        assert_eq!(get(&[("if-modified-since", "garbage")]), Decision::Full);
        // If-None-Match present: If-Modified-Since is not looked at.
        assert_eq!(
            get(&[("if-none-match", "\"other\""), ("if-modified-since", same)]),
            Decision::Full
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since_give_412() {
        assert_eq!(
            get(&[("if-match", "\"other\"")]),
            Decision::PreconditionFailed
        );
        assert_eq!(get(&[("if-match", ETAG)]), Decision::Full);
        // If-Match compares strongly.
        assert_eq!(
            get(&[("if-match", "W/\"5f-3e8\"")]),
            Decision::PreconditionFailed
        );
        assert_eq!(
            get(&[("if-unmodified-since", "Wed, 21 Oct 2015 07:27:59 GMT")]),
            Decision::PreconditionFailed
        );
    }

    #[test]
    fn a_single_range_is_partial_content() {
        assert_eq!(get(&[("range", "bytes=0-99")]), Decision::Partial(0..=99));
        assert_eq!(
            get(&[("range", "bytes=900-")]),
            Decision::Partial(900..=999)
        );
        assert_eq!(get(&[("range", "bytes=-10")]), Decision::Partial(990..=999));
        // An end past the file is cut to the file.
        assert_eq!(
            get(&[("range", "bytes=990-5000")]),
            Decision::Partial(990..=999)
        );
        // HEAD ignores Range.
        assert_eq!(
            decide(
                &Method::HEAD,
                &headers(&[("range", "bytes=0-1")]),
                Some(ETAG),
                None,
                1000
            ),
            Decision::Full
        );
    }

    #[test]
    fn a_range_past_the_end_is_416_and_bad_ones_are_ignored() {
        assert_eq!(get(&[("range", "bytes=1000-")]), Decision::Unsatisfiable);
        assert_eq!(
            get(&[("range", "bytes=5000-6000")]),
            Decision::Unsatisfiable
        );
        assert_eq!(get(&[("range", "bytes=5-1")]), Decision::Full);
        assert_eq!(get(&[("range", "items=0-1")]), Decision::Full);
        assert_eq!(get(&[("range", "bytes=abc")]), Decision::Full);
    }

    #[test]
    fn several_ranges_get_the_whole_file() {
        assert_eq!(get(&[("range", "bytes=0-1,5-9")]), Decision::Full);
        // One satisfiable among unsatisfiable ones is served alone.
        assert_eq!(
            get(&[("range", "bytes=0-1,5000-6000")]),
            Decision::Partial(0..=1)
        );
    }

    #[test]
    fn if_range_keeps_the_range_only_for_the_current_version() {
        let range = ("range", "bytes=0-9");
        assert_eq!(get(&[range, ("if-range", ETAG)]), Decision::Partial(0..=9));
        assert_eq!(get(&[range, ("if-range", "\"old\"")]), Decision::Full);
        assert_eq!(get(&[range, ("if-range", "W/\"5f-3e8\"")]), Decision::Full);
        assert_eq!(
            get(&[range, ("if-range", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            Decision::Partial(0..=9)
        );
        assert_eq!(
            get(&[range, ("if-range", "Wed, 21 Oct 2015 07:28:01 GMT")]),
            Decision::Full
        );
    }

    #[test]
    fn open_within_refuses_what_resolves_outside_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir(&root).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::write(root.join("in.txt"), "in").unwrap();
        std::fs::write(dir.path().join("secret"), "out").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("in.txt"), root.join("inner-link")).unwrap();
        let roots = [root.clone()];
        assert!(open_within(&root.join("in.txt"), &roots).is_ok());
        assert!(open_within(&root.join("inner-link"), &roots).is_ok());
        assert!(matches!(
            open_within(&root.join("link"), &roots),
            Err(OpenError::Outside(_))
        ));
        assert!(matches!(
            open_within(&root.join("../secret"), &roots),
            Err(OpenError::Outside(_))
        ));
        assert!(matches!(
            open_within(&root.join("nope"), &roots),
            Err(OpenError::Missing)
        ));
        assert!(matches!(
            open_within(&root, &roots),
            Err(OpenError::Directory)
        ));
        // A root that is a prefix by name only ("public" vs "public2").
        let sibling = dir.path().join("public2");
        std::fs::create_dir(&sibling).unwrap();
        std::fs::write(sibling.join("x"), "x").unwrap();
        assert!(matches!(
            open_within(&sibling.join("x"), &roots),
            Err(OpenError::Outside(_))
        ));
    }

    #[test]
    fn beneath_refuses_every_way_out_and_follows_symlinks_within() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::write(root.join("in.txt"), "in").unwrap();
        std::fs::write(dir.path().join("secret"), "out").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("rel-out")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("abs-out")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../in.txt", root.join("sub/up-in")).unwrap();
        let beneath = Beneath::new(root.clone()).unwrap();
        for _ in 0..2 {
            assert!(beneath.open(Path::new("in.txt")).is_ok());
            assert!(beneath.open(Path::new("sub/up-in")).is_ok());
            for out in ["rel-out", "abs-out", "etc/passwd", "../secret"] {
                assert!(
                    matches!(beneath.open(Path::new(out)), Err(OpenError::Outside(_))),
                    "{out}"
                );
            }
            assert!(matches!(
                beneath.open(Path::new("nope")),
                Err(OpenError::Missing)
            ));
            assert!(matches!(
                beneath.open(Path::new("sub")),
                Err(OpenError::Directory)
            ));
            // The same answers from the fallback.
            beneath.openat2.store(false, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_fifo_is_not_served_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let fifo = root.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            open_within(&fifo, &[root]),
            Err(OpenError::NotRegular)
        ));
    }

    #[tokio::test]
    async fn a_large_file_streams_in_chunks_and_a_range_reads_only_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut body = FileBody::new(file, 0, data.len() as u64);
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(&frame.unwrap().into_data().unwrap());
            frames += 1;
        }
        assert_eq!(got, data);
        assert_eq!(frames, 4);
        let file = File::open(&path).unwrap();
        let body = FileBody::new(file, 10, CHUNK as u64 + 5);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[10..10 + CHUNK + 5]);
    }

    #[tokio::test]
    async fn a_file_that_shrinks_mid_response_ends_the_body_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![1u8; 2 * CHUNK]).unwrap();
        let file = File::open(&path).unwrap();
        let mut body = FileBody::new(file, 0, 2 * CHUNK as u64);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let first = body.frame().await.unwrap();
        assert!(first.is_err());
    }
}
