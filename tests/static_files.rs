//! Static files from `public/` and X-Sendfile, against the real binary
//! with real `curl`: what the front end answers itself (never a worker:
//! `processed_total` stays put), page caching, precompressed siblings,
//! conditional and range requests, HEAD, a traversal corpus (encoded,
//! double-encoded, backslashes, NUL, symlinks out of public/),
//! `--static-files false`, X-Sendfile from `Rack::Sendfile` and from an app
//! setting the header (allowed and refused paths, `--sendfile-root`), a
//! 50 MB download streamed while the only worker serves others, and a Rails
//! app whose production config leaves `public_file_server` off.
//!
//! The app (`fixtures/static/config.ru`) prefixes everything it answers
//! with "app:", so each test can tell who answered.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

const CSS: &str =
    "/assets/application-941fd83d5c0a1ac943136a820165163cd2d5184ee02c21a4bf6747a7a66f935a.css";
const JS: &str = "/packs/js/application-e487159675f3f29f808b.js";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn curl_present() -> bool {
    require_dep(runs_ok("curl", &["--version"]), "curl", "curl")
}

/// A response as curl saw it: the status, the headers (names lower-cased)
/// of the last response, and the body.
struct Curl {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl with `args` (the URL among them) over HTTP/1.1; `-D` takes
/// the headers apart from the body.
fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "--http1.1", "--max-time", "60", "-D"])
        .arg(&head)
        .args(args)
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(&head).unwrap();
    // The last response's head (after any 1xx).
    let last = head
        .split("\r\n\r\n")
        .filter(|h| h.starts_with("HTTP/"))
        .last()
        .unwrap_or_else(|| panic!("no response head from curl {args:?}: {head:?}"));
    let mut lines = last.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        status: status.parse().unwrap(),
        headers,
        body: out.stdout,
    }
}

/// A private copy of fixtures/static (tests add symlinks and big files).
fn app_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    copy_tree(&fixture("static"), &app);
    (dir, app)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if entry.file_name() != "Gemfile.lock" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn sha256_file(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_vec()
}

/// Writes `mb` MB of varied bytes (so a misplaced chunk shows).
fn write_big(path: &Path, mb: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mb {
        for (j, b) in block.iter_mut().enumerate() {
            *b = ((i * 31 + j * 7) % 251) as u8;
        }
        f.write_all(&block).unwrap();
    }
}

fn public(name: &str) -> Vec<u8> {
    std::fs::read(
        fixture("static")
            .join("public")
            .join(name.trim_start_matches('/')),
    )
    .unwrap()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn static_files_are_answered_by_the_front_end_and_never_reach_a_worker() {
    if !curl_present() {
        return;
    }
    let server = start(&fixture("static"), &[]);
    // The app's own requests are counted: the figure below means something.
    let app = curl(&[&server.url("/env")]);
    assert_eq!(app.status, 200);
    assert!(app.text().starts_with("app:"));
    let before = server.wait_processed(10, 1);

    let robots = curl(&[&server.url("/robots.txt")]);
    assert_eq!(robots.status, 200);
    assert_eq!(robots.body, public("robots.txt"));
    assert_eq!(robots.header("content-type"), Some("text/plain"));
    assert_eq!(robots.header("accept-ranges"), Some("bytes"));
    assert!(robots.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(robots.header("last-modified").is_some());
    assert_eq!(robots.header("cache-control"), None, "not fingerprinted");

    // Rails page caching: /x, /x.html, /x/index.html; / is index.html.
    for (path, file) in [
        ("/", "index.html"),
        ("/products", "products.html"),
        ("/docs", "docs/index.html"),
        ("/docs/", "docs/index.html"),
        ("/hello%20world.txt", "hello world.txt"),
        ("/robots.txt?v=2", "robots.txt"),
        ("/.well-known/security.txt", ".well-known/security.txt"),
    ] {
        let r = curl(&[&server.url(path)]);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, public(file), "{path}");
    }
    assert_eq!(
        curl(&[&server.url("/products")]).header("content-type"),
        Some("text/html")
    );

    // Fingerprinted assets are cached for good; their type is right.
    let css = curl(&[&server.url(CSS)]);
    assert_eq!(css.status, 200);
    assert_eq!(css.body, public(CSS));
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_eq!(css.header("cache-control"), Some(IMMUTABLE));
    let js = curl(&[&server.url(JS)]);
    assert_eq!(js.body, public(JS));
    assert_eq!(js.header("cache-control"), Some(IMMUTABLE));
    assert!(js
        .header("content-type")
        .is_some_and(|t| t.contains("javascript")));

    // HEAD: the same head (curl -I prints it as the body too)...
    let head = curl(&["-I", "-o", "/dev/null", &server.url(CSS)]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("8570"));
    assert_eq!(head.header("etag"), css.header("etag"));
    // ...and not one byte after it on the wire.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut conn,
        format!("HEAD {CSS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let wire = read_to_close(&mut conn, "HEAD");
    let text = String::from_utf8_lossy(&wire);
    assert!(text.ends_with("\r\n\r\n"), "bytes after the head: {text:?}");
    assert!(text.contains("content-length: 8570"));

    // Not GET or HEAD: the app's, even where a file exists.
    let post = curl(&["-X", "POST", "-d", "x=1", &server.url("/robots.txt")]);
    assert_eq!(post.status, 404);
    assert!(post.text().starts_with("app: POST /robots.txt"));
    // No file: the app's.
    let missing = curl(&[&server.url("/nothing-here")]);
    assert_eq!(missing.status, 404);
    assert!(missing.text().starts_with("app:"));

    // Only the POST and the missing file reached the app.
    let after = server.wait_processed(10, before + 2);
    assert_eq!(after, before + 2, "static requests reached a worker");
    // Static requests are logged and counted like the app's.
    server.wait_until(5, "the access log line", |s| {
        s.logs().contains(&format!("GET {CSS} 200"))
    });
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    if !curl_present() {
        return;
    }
    let server = start(&fixture("static"), &[]);
    // curl --compressed asks for br (and gzip) and decodes what it gets.
    let br = curl(&["--compressed", &server.url(CSS)]);
    assert_eq!(br.status, 200);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.header("vary"), Some("Accept-Encoding"));
    assert_eq!(br.header("content-type"), Some("text/css"));
    assert_eq!(br.header("cache-control"), Some(IMMUTABLE));
    assert_eq!(br.body, public(CSS), "decoded, it is the stylesheet");

    // As sent: the .gz file's bytes.
    let gz = curl(&["-H", "Accept-Encoding: gzip", &server.url(CSS)]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.body, public(&format!("{CSS}.gz")));
    assert_ne!(gz.header("etag"), br.header("etag"));
    let refused = curl(&["-H", "Accept-Encoding: br;q=0, gzip;q=0", &server.url(CSS)]);
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, public(CSS));

    // No Accept-Encoding: the plain file, still marked as varying.
    let plain = curl(&[&server.url(CSS)]);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(plain.body, public(CSS));
    // A compressible file without siblings is sent as it is, and varies
    // all the same (whether a sibling exists is not looked up unasked).
    let robots = curl(&["--compressed", &server.url("/robots.txt")]);
    assert_eq!(robots.header("content-encoding"), None);
    assert_eq!(robots.header("vary"), Some("Accept-Encoding"));
    assert_eq!(robots.body, public("robots.txt"));
}

#[test]
fn conditional_requests_get_304_and_ranges_206_or_416() {
    if !curl_present() {
        return;
    }
    let server = start(&fixture("static"), &[]);
    let url = server.url(CSS);
    let full = curl(&[&url]);
    let etag = full.header("etag").unwrap().to_string();
    let last_modified = full.header("last-modified").unwrap().to_string();

    let r = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
    let r = curl(&["-H", &format!("If-None-Match: \"stale\", {etag}"), &url]);
    assert_eq!(r.status, 304);
    let r = curl(&["-H", "If-None-Match: \"stale\"", &url]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, full.body);
    let r = curl(&["-H", &format!("If-Modified-Since: {last_modified}"), &url]);
    assert_eq!(r.status, 304);
    let r = curl(&[
        "-H",
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
        &url,
    ]);
    assert_eq!(r.status, 200);

    // One range: 206 with exactly those bytes.
    let r = curl(&["--range", "100-199", &url]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/8570"));
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.body, &full.body[100..200]);
    let r = curl(&["--range", "-70", &url]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full.body[8500..]);
    // Past the end: 416 with the length.
    let r = curl(&["--range", "9000-", &url]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */8570"));
    // Several ranges: the whole file (documented).
    let r = curl(&["--range", "0-9,20-29", &url]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, full.body);
    // If-Range with the current tag keeps the range, with a stale one not.
    let r = curl(&["--range", "0-9", "-H", &format!("If-Range: {etag}"), &url]);
    assert_eq!(r.status, 206);
    let r = curl(&["--range", "0-9", "-H", "If-Range: \"stale\"", &url]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, full.body);
    assert_eq!(server.processed_total(), 0, "no request reached the app");
}

#[test]
fn a_traversal_corpus_never_gets_a_file_from_outside_public() {
    if !curl_present() {
        return;
    }
    let (_dir, app) = app_copy();
    let public_dir = app.join("public");
    // Symlinks out of public/: to a file of the app, to /etc, to a file.
    std::os::unix::fs::symlink("../secret.txt", public_dir.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", public_dir.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", public_dir.join("assets/evil.css")).unwrap();
    std::os::unix::fs::symlink("../config.ru", public_dir.join("index.html.br")).unwrap();
    // A symlink inside public/ is fine.
    std::os::unix::fs::symlink("robots.txt", public_dir.join("robots-link.txt")).unwrap();
    let server = start(&app, &[]);

    let secret = std::fs::read_to_string(app.join("secret.txt")).unwrap();
    let corpus = [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/assets/../../secret.txt",
        "/assets/../robots.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/assets%2f..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/%252e%252e%252fsecret.txt",
        "/assets/%252e%252e/%252e%252e/secret.txt",
        "/%25252e%25252e/secret.txt",
        "/..%5csecret.txt",
        "/..%5c..%5cetc%5cpasswd",
        "/..\\secret.txt",
        "/assets\\..\\..\\secret.txt",
        "/secret.txt%00.css",
        "/robots.txt%00",
        "/%00/../secret.txt",
        "/leak.txt",
        "/etc/passwd",
        "/etc/hostname",
        "/assets/evil.css",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/./secret.txt",
        "/%2e/secret.txt",
        "/.env",
        "/%2eenv",
        "/assets/.%2e/.%2e/secret.txt",
        "/secret.txt",
        "/config.ru",
        "/public/../secret.txt",
    ];
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let first_passwd_line = passwd.lines().next().unwrap();
    for path in corpus {
        let r = curl(&["--path-as-is", &server.url(path)]);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {:?}",
            r.status,
            r.text()
        );
        let text = r.text();
        assert!(!text.contains(secret.trim()), "{path} leaked secret.txt");
        assert!(
            !text.contains(first_passwd_line),
            "{path} leaked /etc/passwd"
        );
        assert!(!text.contains("SECRET_KEY_BASE"), "{path} leaked .env");
        assert!(!text.contains("Rack::Sendfile"), "{path} leaked config.ru");
    }
    // Raw bytes curl would not send: a NUL and a backslash on the wire.
    for raw in [
        &b"GET /robots.txt\0 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /..\\secret.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = server.raw(raw);
        assert!(
            r.status == 400 || r.status == 404,
            "{:?}: {}",
            raw,
            r.status
        );
        assert!(!String::from_utf8_lossy(&r.body).contains(secret.trim()));
    }
    // A symlink out of public/ is refused with a warning naming it.
    assert!(server.logs().contains("leak.txt"), "{}", server.logs());
    // A compressed sibling that escapes is ignored, not sent.
    let index = curl(&["--compressed", &server.url("/")]);
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-encoding"), None);
    assert_eq!(index.body, public("index.html"));
    // A symlink within public/ is served.
    let link = curl(&[&server.url("/robots-link.txt")]);
    assert_eq!(link.status, 200);
    assert_eq!(link.body, public("robots.txt"));
}

#[test]
fn with_static_files_off_the_app_sees_every_request() {
    if !curl_present() {
        return;
    }
    let server = start(&fixture("static"), &["--static-files", "false"]);
    for path in ["/robots.txt", CSS, "/"] {
        let r = curl(&[&server.url(path)]);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.text().starts_with("app: GET"), "{path}: {}", r.text());
    }
    // Traversal is the app's business then (it answers 404 here).
    let r = curl(&["--path-as-is", &server.url("/../secret.txt")]);
    assert!(r.text().starts_with("app:"));
    assert_eq!(server.wait_processed(10, 4), 4);
}

#[test]
fn x_sendfile_from_rack_sendfile_is_sent_by_the_front_end() {
    if !curl_present() {
        return;
    }
    let server = start(&fixture("static"), &[]);
    let csv = std::fs::read(fixture("static").join("files/report.csv")).unwrap();

    // The app is told, whatever the client claims.
    let env = curl(&[
        "-H",
        "X-Sendfile-Type: X-Accel-Redirect",
        &server.url("/env"),
    ]);
    assert_eq!(env.text(), "app: \"X-Sendfile\" \"X-Sendfile\"\n");

    let r = curl(&[&server.url("/send?path=files/report.csv")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, csv);
    assert_eq!(r.header("x-sendfile"), None, "the header is stripped");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-disposition"), Some("attachment"));
    assert_eq!(r.header("content-length"), Some(&*csv.len().to_string()));
    let etag = r.header("etag").unwrap().to_string();

    // The same conditional and range handling as static files.
    let r = curl(&["--range", "3-6", &server.url("/send?path=files/report.csv")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &csv[3..=6]);
    let r = curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &server.url("/send?path=files/report.csv"),
    ]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = curl(&["-I", &server.url("/send?path=files/report.csv")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*csv.len().to_string()));

    // An app setting the header itself: its status and headers stay.
    let r = curl(&[&server.url("/x-sendfile?path=files/report.csv&status=404")]);
    assert_eq!(r.status, 404);
    assert_eq!(r.body, csv);
    assert_eq!(r.header("x-app"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("text/csv"));
    // An absolute path under the app root is allowed too.
    let abs = fixture("static")
        .canonicalize()
        .unwrap()
        .join("files/report.csv");
    let r = curl(&[&server.url(&format!("/x-sendfile?path={}", abs.to_str().unwrap()))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, csv);
}

#[test]
fn x_sendfile_outside_the_allowed_roots_is_a_500_naming_the_path() {
    if !curl_present() {
        return;
    }
    let (dir, app) = app_copy();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "outside the app root\n").unwrap();
    std::os::unix::fs::symlink(&outside, app.join("files/link.txt")).unwrap();
    let server = start(&app, &[]);
    for (path, shown) in [
        ("/etc/passwd", "/etc/passwd"),
        ("../outside.txt", "outside.txt"),
        (outside.to_str().unwrap(), "outside.txt"),
        ("files/link.txt", "link.txt"),
        ("files", "files"),
    ] {
        let r = curl(&[&server.url(&format!("/x-sendfile?path={path}"))]);
        assert_eq!(r.status, 500, "{path}");
        assert!(!r.text().contains("outside the app root"));
        assert!(!r.text().contains("root:"));
        server.wait_until(5, &format!("an error naming {shown}"), |s| {
            s.logs()
                .lines()
                .any(|l| l.contains("ERROR") && l.contains("X-Sendfile") && l.contains(shown))
        });
    }
    let r = curl(&[&server.url("/x-sendfile?path=files/missing.csv")]);
    assert_eq!(r.status, 404);
    drop(server);

    // --sendfile-root replaces the default: the shared directory only.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("ok.txt"), "shared file\n").unwrap();
    let server = start(&app, &["--sendfile-root", shared.to_str().unwrap()]);
    let ok = curl(&[&server.url(&format!(
        "/x-sendfile?path={}",
        shared.join("ok.txt").display()
    ))]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "shared file\n");
    let r = curl(&[&server.url("/x-sendfile?path=files/report.csv")]);
    assert_eq!(r.status, 500);
    drop(server);

    // A root that does not exist stops the start.
    let (mut child, _reg, logs) = spawn(&app, &["--sendfile-root", "/nonexistent-dir"], &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 60);
    assert!(!status.success());
    assert!(out.contains("/nonexistent-dir"), "{out}");
}

#[test]
fn a_50_mb_x_sendfile_download_streams_while_the_only_worker_serves_others() {
    if !curl_present() {
        return;
    }
    let (dir, app) = app_copy();
    let big = app.join("files/big.bin");
    write_big(&big, 50);
    let server = start(&app, &["--min-instances", "1", "--max-pool-size", "1"]);
    let rss_before = rss_kb(server.pid);
    let out = dir.path().join("download");
    // ~5 s at 10 MB/s: long enough to see the worker free meanwhile.
    let mut download = Command::new("curl")
        .args(["-s", "--http1.1", "--limit-rate", "10M", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code} %{size_download}"])
        .arg(server.url("/send?path=files/big.bin"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_until(10, "the download to start", |_| {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 0)
    });
    // The only worker answers other requests while the download runs.
    for _ in 0..5 {
        let t = Instant::now();
        let r = curl(&[&server.url("/env")]);
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert_eq!(server.busy_count(), 0, "a worker is held by the download");
    assert!(
        download.try_wait().unwrap().is_none(),
        "the download ended before the checks"
    );
    let rss_during = rss_kb(server.pid);
    let finished: Output = download.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&finished.stdout),
        "200 52428800",
        "status and size"
    );
    assert_eq!(sha256_file(&out), sha256_file(&big));
    // Streamed, not read whole: the front end grew by far less than 50 MB.
    let grown_mb = rss_during.saturating_sub(rss_before) / 1024;
    assert!(grown_mb < 25, "the front end grew by {grown_mb} MB");
}

#[test]
fn a_large_static_file_is_streamed_and_ranges_reach_deep_into_it() {
    if !curl_present() {
        return;
    }
    let (dir, app) = app_copy();
    let big = app.join("public/big.bin");
    write_big(&big, 50);
    let server = start(&app, &[]);
    let out = dir.path().join("download");
    let r = curl(&["-o", out.to_str().unwrap(), &server.url("/big.bin")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("52428800"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(sha256_file(&out), sha256_file(&big));
    let data = std::fs::read(&big).unwrap();
    let r = curl(&["--range", "30000000-30400000", &server.url("/big.bin")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[30_000_000..=30_400_000]);
    assert_eq!(server.processed_total(), 0);
}

/// fixtures/rails-large sets `config.public_file_server.enabled = false`,
/// as production configs do when nginx serves assets: its compiled assets
/// must still be served, by the front end.
#[test]
fn a_rails_app_without_public_file_server_gets_its_assets() {
    if !curl_present() {
        return;
    }
    let rails_ok = runs_ok(
        "ruby",
        &[
            "-e",
            "require 'rails'; gem 'sqlite3'; require 'sqlite3'; exit Rails.version.start_with?('6.1')",
        ],
    );
    if !require_dep(rails_ok, "Rails 6.1 and sqlite3", "ruby-rails ruby-sqlite3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("rails-large");
    copy_tree(&fixture("rails-large"), &app);
    let assets = app.join("public/assets");
    std::fs::create_dir_all(&assets).unwrap();
    let css = "body { color: #123456; }\n";
    let digest = format!("{:x}", Sha256::digest(css.as_bytes()));
    let name = format!("app-{digest}.css");
    std::fs::write(assets.join(&name), css).unwrap();
    let server = start(&app, &["--environment", "production"]);
    let page = curl(&[&server.url("/")]);
    assert_eq!(page.status, 200, "{}", page.text());
    let before = server.wait_processed(30, 1);
    let r = curl(&[&server.url(&format!("/assets/{name}"))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), css);
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(r.header("cache-control"), Some(IMMUTABLE));
    let r = curl(&[&server.url("/assets/app-0000000000.css")]);
    assert_eq!(r.status, 404, "a missing asset is Rails' 404");
    assert_eq!(server.wait_processed(30, before + 1), before + 1);
}
