//! Static files from `APP_ROOT/public`, answered by the front end before a
//! request body is buffered or a worker is asked (`--static-files`).
//!
//! A GET or HEAD of `/x` is served from `public/x` when that is a regular
//! file, else `public/x.html`, else `public/x/index.html` (Rails page
//! caching, as Passenger does); when none exists the request goes to the
//! app as before. The mapping from URL to file ([`map_path`]) decodes the
//! path once and then:
//!
//! - answers **400** for what no honest client sends and only a traversal
//!   attempt needs: a `.` or `..` segment (raw or `%2e`-encoded), a NUL
//!   (`%00`), a backslash (raw or `%5c`);
//! - leaves to the app (never a file) what an app route may legitimately
//!   carry: an encoded slash (`%2f`), an empty segment (`//`), a segment
//!   starting with `.` (dotfiles: `.git`, `.env`), except a first segment
//!   `.well-known` (ACME challenges and `security.txt` are written there);
//! - decodes only once, so `%252e%252e` is the literal name `%2e%2e`.
//!
//! The segments form a path relative to the canonical `public/`, which
//! the kernel resolves beneath it (`files::Beneath`): a symlink out of
//! `public/` gets 404 and a warning, never the file.
//!
//! A `.br` or `.gz` sibling (as the asset pipeline writes them) is sent
//! instead when the client's Accept-Encoding allows it (siblings are only
//! looked for then), with `Content-Encoding`. Every compressible file
//! (text, scripts, JSON, XML, SVG) carries `Vary: Accept-Encoding`, sibling
//! or not, so a cache never hands one client's variant to another. Fingerprinted files under
//! `/assets/` and `/packs/` (`name-<8+ hex digits>.ext`, as Sprockets and
//! Webpacker name them) are `Cache-Control: public, max-age=31536000,
//! immutable`; the rest carry no Cache-Control, as nginx sends none.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::files::{self, Beneath, OpenError, Source};
use crate::upstream::{error_response, ResponseBody};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Where a request path leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// A path relative to `public/`; `dir` when the URL ends with `/`
    /// (only `index.html` can answer it).
    File { rel: PathBuf, dir: bool },
    /// Not a file name: the app's.
    App,
    /// A traversal attempt or a byte no file name has: 400.
    Refused,
}

/// Maps a request path (as sent, percent-encoded) to a path under `public/`.
pub fn map_path(raw: &str) -> Mapped {
    if !raw.starts_with('/') {
        return Mapped::App;
    }
    if raw.contains('\\') || has_escape(raw, b"5c") || has_escape(raw, b"00") {
        return Mapped::Refused;
    }
    if has_escape(raw, b"2f") {
        return Mapped::App;
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let dir = decoded.ends_with(b"/");
    let inner = &decoded[1..];
    let inner = inner.strip_suffix(b"/").unwrap_or(inner);
    let mut rel = PathBuf::new();
    if inner.is_empty() {
        return Mapped::File { rel, dir: true };
    }
    let mut app = false;
    for (i, seg) in inner.split(|&b| b == b'/').enumerate() {
        match seg {
            b"." | b".." => return Mapped::Refused,
            b"" => app = true,
            b".well-known" if i == 0 => rel.push(".well-known"),
            _ if seg.starts_with(b".") => app = true,
            _ => rel.push(OsStr::from_bytes(seg)),
        }
    }
    // Dot segments anywhere are refused even after a dotfile segment, so
    // the whole path is looked at before giving it to the app.
    match app {
        true => Mapped::App,
        false => Mapped::File { rel, dir },
    }
}

/// Whether `raw` holds `%` followed by `hex` (two lowercase characters),
/// in either case.
fn has_escape(raw: &str, hex: &[u8; 2]) -> bool {
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%' && w[1].to_ascii_lowercase() == hex[0] && w[2].to_ascii_lowercase() == hex[1]
    })
}

/// Whether the URL names a fingerprinted asset: under `/assets/` or
/// `/packs/`, a file name with `-` and 8 or more lowercase hex digits just
/// before its extension (`app-3f2a…9c.css`, `js/1-ab12cd34ef.chunk.js`).
pub fn is_fingerprinted(path: &str) -> bool {
    if !(path.starts_with("/assets/") || path.starts_with("/packs/")) {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or("");
    let Some((_, after)) = name.rsplit_once('-') else {
        return false;
    };
    match after.split_once('.') {
        Some((digest, ext)) => {
            digest.len() >= 8
                && digest
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && !ext.is_empty()
        }
        None => false,
    }
}

/// The encodings of our precompressed siblings, best first.
const ENCODINGS: [(&str, &str); 2] = [("br", ".br"), ("gzip", ".gz")];

/// The client's preference (q-value, 0 = refused) for `coding`.
fn accepts(accept_encoding: &str, coding: &str) -> f32 {
    let mut star = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0.0)
}

/// Indices into [`ENCODINGS`] the client accepts, preferred first (br on
/// a tie).
fn preferred(accept_encoding: &str) -> Vec<usize> {
    let mut order: Vec<(usize, f32)> = (0..ENCODINGS.len())
        .map(|i| (i, accepts(accept_encoding, ENCODINGS[i].0)))
        .filter(|&(_, q)| q > 0.0)
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.into_iter().map(|(i, _)| i).collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Small files kept in memory, so that a hit costs one `stat` instead of
/// open, stat, read and close: the 10 KB bench spent a fifth of the front
/// end's CPU in those. An entry holds a file read through a checked open
/// (`Beneath`) with the identity it had then (device, inode, size, mtime
/// and ctime to the nanosecond); a request `stat`s the path and is served
/// from memory only when the identity is the same, so a file replaced or
/// rewritten (any write moves ctime) is read again at once, and a path
/// that now leads elsewhere (a symlink swapped in) names another inode and
/// goes through the checked open. Bounded by [`CACHE_BYTES`]; when full it
/// is emptied and refills with what is asked for.
struct SmallFiles {
    entries: Mutex<(HashMap<PathBuf, Cached>, usize)>,
}

/// Total bytes [`SmallFiles`] keeps.
const CACHE_BYTES: usize = 32 << 20;

struct Cached {
    identity: Identity,
    meta: Metadata,
    bytes: Bytes,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl SmallFiles {
    fn get(&self, rel: &Path, meta: &Metadata) -> Option<Source> {
        let entries = self.entries.lock().unwrap();
        let hit = entries.0.get(rel)?;
        (hit.identity == Identity::of(meta)).then(|| Source::Bytes {
            meta: hit.meta.clone(),
            bytes: hit.bytes.clone(),
        })
    }

    fn put(&self, rel: &Path, meta: &Metadata, bytes: &Bytes) {
        let mut entries = self.entries.lock().unwrap();
        let (map, total) = &mut *entries;
        if *total + bytes.len() > CACHE_BYTES {
            map.clear();
            *total = 0;
        }
        *total += bytes.len();
        let old = map.insert(
            rel.to_path_buf(),
            Cached {
                identity: Identity::of(meta),
                meta: meta.clone(),
                bytes: bytes.clone(),
            },
        );
        if let Some(old) = old {
            *total -= old.bytes.len();
        }
    }
}

/// Static file serving for one app.
pub struct StaticFiles {
    /// `APP_ROOT/public`, canonical: files are opened beneath it.
    public: Beneath,
    small: SmallFiles,
}

/// Whether a type is worth compressing (so a sibling may exist and the
/// response varies with Accept-Encoding): text, scripts, JSON, XML, SVG,
/// WebAssembly, as Sprockets and Webpacker compress them.
fn compressible(mime: &mime_guess::Mime) -> bool {
    mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.subtype().as_str(),
            "javascript" | "json" | "xml" | "wasm"
        )
        || mime
            .suffix()
            .is_some_and(|s| s == mime_guess::mime::XML || s == mime_guess::mime::JSON)
}

impl StaticFiles {
    /// Static files for the app in `app_root`, or `None` when it has no
    /// `public/` directory.
    pub fn new(app_root: &Path) -> Option<StaticFiles> {
        let public = app_root.join("public");
        match public.canonicalize().and_then(Beneath::new) {
            Ok(beneath) => {
                tracing::info!("serving static files from {}", beneath.path().display());
                Some(StaticFiles {
                    public: beneath,
                    small: SmallFiles {
                        entries: Mutex::new((HashMap::new(), 0)),
                    },
                })
            }
            Err(_) => {
                tracing::info!(
                    "no {} directory: every request goes to the app",
                    public.display()
                );
                None
            }
        }
    }

    /// The response for a request a file answers, or `None` to give it to
    /// the app.
    #[cfg(test)]
    pub fn serve(&self, req: &http::request::Parts) -> Option<Response<ResponseBody>> {
        self.serve_within(req, req.uri.path())
    }

    /// As `serve`, for an app mounted under a prefix: `raw` is the path
    /// below it (the whole path for an app that serves the whole site).
    pub fn serve_within(
        &self,
        req: &http::request::Parts,
        raw: &str,
    ) -> Option<Response<ResponseBody>> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return None;
        }
        let (rel, dir) = match map_path(raw) {
            Mapped::App => return None,
            Mapped::Refused => {
                return Some(error_response(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: the path is not allowed\n",
                ))
            }
            Mapped::File { rel, dir } => (rel, dir),
        };
        let (path, opened) = match self.find(raw, &rel, dir) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(StatusCode::FORBIDDEN) => {
                return Some(error_response(StatusCode::FORBIDDEN, "403 Forbidden\n"))
            }
            Err(_) => return Some(error_response(StatusCode::NOT_FOUND, "404 Not Found\n")),
        };
        Some(self.respond(req, raw, &path, opened))
    }

    /// `public/x`, `public/x.html`, `public/x/index.html`, in that order:
    /// the first that is a regular file (with its path relative to
    /// `public/`), none (the app's), or the status refusing it.
    fn find(
        &self,
        raw: &str,
        rel: &Path,
        dir: bool,
    ) -> Result<Option<(PathBuf, Source)>, StatusCode> {
        for i in 0..3 {
            // Built one at a time: the first usually answers.
            let path = match i {
                0 if !dir => rel.to_path_buf(),
                1 if !dir => with_suffix(rel, ".html"),
                2 => rel.join("index.html"),
                _ => continue,
            };
            match self.open(&path) {
                Ok(opened) => return Ok(Some((path, opened))),
                Err(OpenError::Missing | OpenError::Directory | OpenError::NotRegular) => {}
                Err(OpenError::Outside(real)) => {
                    tracing::warn!(
                        "static file {raw}: {} leads outside {} ({}): refused",
                        path.display(),
                        self.public.path().display(),
                        real.display()
                    );
                    return Err(StatusCode::NOT_FOUND);
                }
                Err(OpenError::Forbidden) => {
                    tracing::warn!("static file {raw}: {}: permission denied", path.display());
                    return Err(StatusCode::FORBIDDEN);
                }
                Err(OpenError::Io(e)) => {
                    // Not worth failing the request: the app may know it.
                    tracing::warn!("static file {raw}: {}: {e}", path.display());
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// `rel` (beneath `public/`) from memory when it is a small file read
    /// before and unchanged since, else through a checked open.
    fn open(&self, rel: &Path) -> Result<Source, OpenError> {
        // Unchecked (it may follow a symlink out): it only decides between
        // "nothing there", the cached bytes of the very same inode, and
        // the checked open below.
        let meta = std::fs::metadata(self.public.path().join(rel)).map_err(files::open_error)?;
        if meta.is_dir() {
            return Err(OpenError::Directory);
        }
        if !meta.is_file() {
            return Err(OpenError::NotRegular);
        }
        if meta.len() <= files::INLINE_MAX {
            if let Some(hit) = self.small.get(rel, &meta) {
                return Ok(hit);
            }
        }
        let opened = self.public.open(rel)?;
        if opened.meta.len() > files::INLINE_MAX {
            return Ok(Source::File(opened));
        }
        let mut buf = vec![0; opened.meta.len() as usize];
        opened
            .file
            .read_exact_at(&mut buf, 0)
            .map_err(OpenError::Io)?;
        let bytes = Bytes::from(buf);
        self.small.put(rel, &opened.meta, &bytes);
        Ok(Source::Bytes {
            meta: opened.meta,
            bytes,
        })
    }

    fn respond(
        &self,
        req: &http::request::Parts,
        raw: &str,
        path: &Path,
        opened: Source,
    ) -> Response<ResponseBody> {
        let mut headers = HeaderMap::with_capacity(12);
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        if is_fingerprinted(raw) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
        }
        // Every compressible file varies with Accept-Encoding, sibling or
        // not, so no cache keeps one client's answer for all; looking for
        // siblings nobody asked for would cost two opens per request.
        if compressible(&mime) {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        // A file that is itself compressed has no siblings worth a look.
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let ae = req
            .headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        if let (Some(ae), false) = (ae, ext == "gz" || ext == "br") {
            for i in preferred(ae) {
                let (coding, sfx) = ENCODINGS[i];
                // A sibling that escapes public/ is only a missing one.
                if let Ok(sibling) = self.open(&with_suffix(path, sfx)) {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
                    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                    return files::respond(req, sibling, StatusCode::OK, headers, sfx);
                }
            }
        }
        files::respond(req, opened, StatusCode::OK, headers, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, dir: bool) -> Mapped {
        Mapped::File {
            rel: PathBuf::from(rel),
            dir,
        }
    }

    #[test]
    fn plain_paths_map_under_public() {
        assert_eq!(map_path("/"), file("", true));
        assert_eq!(map_path("/robots.txt"), file("robots.txt", false));
        assert_eq!(map_path("/assets/app.css"), file("assets/app.css", false));
        assert_eq!(map_path("/docs/"), file("docs", true));
        assert_eq!(map_path("/a%20b.txt"), file("a b.txt", false));
        assert_eq!(map_path("/app%2ecss"), file("app.css", false));
        assert_eq!(
            map_path("/.well-known/acme-challenge/tok"),
            file(".well-known/acme-challenge/tok", false)
        );
    }

    #[test]
    fn traversal_attempts_are_refused() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/assets/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/etc/passwd",
            "/assets/%2e%2e/%2e%2e/secret",
            "/./robots.txt",
            "/%2e/robots.txt",
            "/..\\..\\etc\\passwd",
            "/assets%5c..%5c..%5csecret",
            "/robots.txt%00.png",
            "/.git/../robots.txt",
        ] {
            assert_eq!(map_path(raw), Mapped::Refused, "{raw}");
        }
    }

    #[test]
    fn encoded_slashes_dotfiles_and_double_encoding_go_to_the_app_or_stay_literal() {
        assert_eq!(map_path("/assets%2f..%2fsecret"), Mapped::App);
        assert_eq!(map_path("/files/a%2Fb"), Mapped::App);
        assert_eq!(map_path("/.env"), Mapped::App);
        assert_eq!(map_path("/.git/config"), Mapped::App);
        assert_eq!(map_path("/assets/.hidden.css"), Mapped::App);
        assert_eq!(map_path("/a/.well-known/x"), Mapped::App);
        assert_eq!(map_path("//etc/passwd"), Mapped::App);
        assert_eq!(map_path("/assets//app.css"), Mapped::App);
        assert_eq!(map_path("*"), Mapped::App);
        // Decoded once: "%2e%2e" is a (missing) file's literal name.
        assert_eq!(
            map_path("/%252e%252e/%252e%252e/etc/passwd"),
            file("%2e%2e/%2e%2e/etc/passwd", false)
        );
    }

    #[test]
    fn fingerprints_follow_sprockets_and_webpacker_names() {
        assert!(is_fingerprinted(
            "/assets/application-3f2a9c0de4b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7.css"
        ));
        assert!(is_fingerprinted(
            "/packs/js/application-ab12cd34ef56ab78cd90.js"
        ));
        assert!(is_fingerprinted("/packs/js/1-ab12cd34ef.chunk.js"));
        assert!(is_fingerprinted("/assets/app-deadbeef.js.map"));
        assert!(!is_fingerprinted("/assets/app-deadbee.css"), "7 digits");
        assert!(!is_fingerprinted("/assets/app-DEADBEEF.css"), "upper case");
        assert!(!is_fingerprinted("/assets/jquery-3.6.0.min.js"));
        assert!(!is_fingerprinted("/assets/header-background.png"));
        assert!(!is_fingerprinted("/assets/app-deadbeef"), "no extension");
        assert!(
            !is_fingerprinted("/images/app-deadbeef.png"),
            "not under /assets"
        );
    }

    #[test]
    fn accept_encoding_orders_the_siblings_to_try() {
        assert_eq!(preferred("gzip, deflate, br"), [0, 1]);
        assert_eq!(preferred("gzip"), [1]);
        assert_eq!(preferred("br;q=0, gzip"), [1]);
        assert_eq!(preferred("br;q=0.5, gzip;q=0.8"), [1, 0]);
        assert_eq!(preferred("*"), [0, 1]);
        assert_eq!(preferred("*;q=0"), Vec::<usize>::new());
        assert_eq!(preferred("identity"), Vec::<usize>::new());
    }

    #[test]
    fn only_compressible_types_vary() {
        let m = |p: &str| mime_guess::from_path(p).first_or_octet_stream();
        for p in [
            "a.css", "a.js", "a.html", "a.json", "a.svg", "a.txt", "a.xml",
        ] {
            assert!(compressible(&m(p)), "{p}");
        }
        for p in ["a.png", "a.jpg", "a.woff2", "a.gz", "a.bin"] {
            assert!(!compressible(&m(p)), "{p}");
        }
    }

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn app_with_public() -> (tempfile::TempDir, StaticFiles) {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("public");
        std::fs::create_dir_all(public.join("docs")).unwrap();
        std::fs::create_dir_all(public.join("assets")).unwrap();
        std::fs::write(public.join("robots.txt"), "robots").unwrap();
        std::fs::write(public.join("products.html"), "cached page").unwrap();
        std::fs::write(public.join("docs/index.html"), "docs index").unwrap();
        std::fs::write(public.join("assets/app-0123abcd.css"), "body{}").unwrap();
        std::fs::write(public.join("assets/app-0123abcd.css.gz"), "gz").unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), public.join("leak")).unwrap();
        let files = StaticFiles::new(dir.path()).unwrap();
        (dir, files)
    }

    #[test]
    fn page_caching_order_and_fallthrough() {
        let (_dir, files) = app_with_public();
        let get = |uri: &str| files.serve(&request(Method::GET, uri, &[]));
        let r = get("/robots.txt").unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "6");
        assert!(r.headers().contains_key(header::ETAG));
        assert!(r.headers().contains_key(header::LAST_MODIFIED));
        assert!(r.headers().get(header::CACHE_CONTROL).is_none());
        assert_eq!(
            get("/products").unwrap().headers()[header::CONTENT_LENGTH],
            "11"
        );
        assert_eq!(
            get("/docs").unwrap().headers()[header::CONTENT_LENGTH],
            "10"
        );
        assert_eq!(
            get("/docs/").unwrap().headers()[header::CONTENT_LENGTH],
            "10"
        );
        assert!(get("/").is_none(), "no public/index.html: the app's");
        assert!(get("/missing").is_none());
        assert_eq!(get("/leak").unwrap().status(), 404);
        assert_eq!(get("/../secret").unwrap().status(), 400);
        assert!(files
            .serve(&request(Method::POST, "/robots.txt", &[]))
            .is_none());
    }

    #[test]
    fn a_fingerprinted_asset_is_immutable_and_its_gzip_sibling_is_chosen() {
        let (_dir, files) = app_with_public();
        let uri = "/assets/app-0123abcd.css";
        let plain = files.serve(&request(Method::GET, uri, &[])).unwrap();
        assert_eq!(plain.headers()[header::CACHE_CONTROL], IMMUTABLE);
        assert_eq!(plain.headers()[header::VARY], "Accept-Encoding");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "text/css");
        let gz = files
            .serve(&request(
                Method::GET,
                uri,
                &[("accept-encoding", "gzip, br")],
            ))
            .unwrap();
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(gz.headers()[header::CONTENT_TYPE], "text/css");
        assert_eq!(gz.headers()[header::CONTENT_LENGTH], "2");
        assert_ne!(gz.headers()[header::ETAG], plain.headers()[header::ETAG]);
    }

    async fn body(r: Response<ResponseBody>) -> Vec<u8> {
        use http_body_util::BodyExt;
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_kept_small_file_is_read_again_once_it_changes_or_leads_out() {
        let (dir, files) = app_with_public();
        let public = dir.path().join("public");
        let get = || {
            files
                .serve(&request(Method::GET, "/robots.txt", &[]))
                .unwrap()
        };
        assert_eq!(body(get()).await, b"robots");
        assert_eq!(body(get()).await, b"robots", "from memory");
        // Rewritten in place, same size: ctime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(public.join("robots.txt"), "ROBOTS").unwrap();
        assert_eq!(body(get()).await, b"ROBOTS");
        // Replaced by a symlink out of public/: refused, not remembered.
        std::fs::remove_file(public.join("robots.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), public.join("robots.txt")).unwrap();
        assert_eq!(get().status(), 404);
        // Gone: the app's.
        std::fs::remove_file(public.join("robots.txt")).unwrap();
        assert!(files
            .serve(&request(Method::GET, "/robots.txt", &[]))
            .is_none());
        // A range of a kept file.
        let r = files
            .serve(&request(
                Method::GET,
                "/products",
                &[("range", "bytes=7-10")],
            ))
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(body(r).await, b"page");
    }

    #[test]
    fn conditional_and_range_requests_through_serve() {
        let (_dir, files) = app_with_public();
        let first = files
            .serve(&request(Method::GET, "/robots.txt", &[]))
            .unwrap();
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let r = files
            .serve(&request(
                Method::GET,
                "/robots.txt",
                &[("if-none-match", &etag)],
            ))
            .unwrap();
        assert_eq!(r.status(), 304);
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(r.headers()[header::ETAG], etag.as_str());
        let r = files
            .serve(&request(
                Method::GET,
                "/robots.txt",
                &[("range", "bytes=1-3")],
            ))
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 1-3/6");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "3");
        let r = files
            .serve(&request(
                Method::GET,
                "/robots.txt",
                &[("range", "bytes=6-")],
            ))
            .unwrap();
        assert_eq!(r.status(), 416);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */6");
    }
}
