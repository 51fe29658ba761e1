//! TLS and HTTP/2 (`--ssl`) against the real binary, with real clients:
//! curl, nghttp and h2load (nghttp2-client), `openssl s_client`, and a
//! Rust TLS client (rustls, and the h2 crate for the rapid-reset client).
//! Certificates are made at test time with `openssl req -x509`.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn app() -> PathBuf {
    fixture("tls")
}

/// Whether the command-line tools these tests drive are installed: see
/// `require_dep` (a skip, or under CI a failure).
fn have_openssl() -> bool {
    require_dep(on_path("openssl").is_some(), "openssl", "openssl")
}

fn have_nghttp2() -> bool {
    require_dep(
        on_path("nghttp").is_some() && on_path("h2load").is_some(),
        "nghttp and h2load",
        "nghttp2-client",
    )
}

/// A self-signed certificate for `cn` (EC P-256, valid for localhost and
/// 127.0.0.1) written to `dir/NAME.crt` and `dir/NAME.key`.
fn make_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .output()
        .expect("running openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The files rustrack is given; tests swap their contents.
struct Certs {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new(cn: &str) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = make_cert(dir.path(), "first", cn);
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::copy(c, &cert).unwrap();
        std::fs::copy(k, &key).unwrap();
        Certs { dir, cert, key }
    }

    /// Puts a new certificate for `cn` in place; returns its serial as
    /// `openssl x509 -serial` prints it.
    fn replace(&self, cn: &str) -> String {
        let (c, k) = make_cert(self.dir.path(), cn, cn);
        std::fs::copy(&c, &self.cert).unwrap();
        std::fs::copy(&k, &self.key).unwrap();
        serial_of(&c)
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--ssl".into(),
            "--ssl-certificate".into(),
            self.cert.display().to_string(),
            "--ssl-certificate-key".into(),
            self.key.display().to_string(),
        ]
    }
}

fn serial_of(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts rustrack with plain HTTP on one ephemeral port and HTTPS on
/// another; returns the server and the HTTPS port.
fn start_both(certs: &Certs, extra: &[&str]) -> (Server, u16) {
    let mut args: Vec<String> = certs.args();
    args.extend(["--ssl-port".into(), "0".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let server = start(&app(), &args);
    let port = https_port(&server.logs).expect("an https listener");
    (server, port)
}

/// Spawns rustrack with the certificate and `extra`, without waiting.
fn spawn_with(
    certs: &Certs,
    extra: &[&str],
) -> (std::process::Child, tempfile::TempDir, Arc<Logs>) {
    let mut args = certs.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    spawn(&app(), &args, &[])
}

fn https_port(logs: &Logs) -> Option<u16> {
    find_log(logs, "listening on https://127.0.0.1:")
        .map(|l| l.rsplit(':').next().unwrap().trim().parse().unwrap())
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .args(args)
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subject and serial of the certificate a new handshake gets, as
/// `openssl s_client | openssl x509` prints them.
fn served_certificate(port: u16) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-serial"])
        .stdin(s_client.stdout.take().unwrap())
        .output()
        .unwrap();
    let _ = s_client.wait();
    x509.stdout.push(b'\n');
    String::from_utf8_lossy(&x509.stdout).into_owned()
}

// ---------------------------------------------------------------------
// A Rust TLS client that accepts any certificate: these tests check what
// the server sends, not the client's trust decisions.
// ---------------------------------------------------------------------

#[derive(Debug)]
struct AcceptAny(Vec<rustls::SignatureScheme>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.clone()
    }
}

fn client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(schemes)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A blocking HTTP/1.1-over-TLS connection (ALPN http/1.1).
fn tls_connect(port: u16) -> TlsStream {
    let conn = rustls::ClientConnection::new(
        client_config(&[b"http/1.1"]),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One keep-alive GET on an open TLS connection.
fn keep_alive_get(stream: &mut TlsStream, path: &str) -> Response {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    stream.flush().unwrap();
    read_response(&mut BufReader::new(&mut *stream)).expect("a response")
}

/// The DER of the certificate the server showed on this connection.
fn peer_certificate(stream: &TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().unwrap()[0].to_vec()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------

#[test]
fn https_and_http2_reach_the_app_as_https() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let (server, port) = start_both(&certs, &["--body-buffer-size", "65536"]);
    let cacert = certs.cert.to_str().unwrap();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");

    let h2 = curl(&[cacert, "--resolve", &resolve, "--http2", &url("/env")]);
    assert!(h2.contains("scheme=https\n"), "{h2}");
    assert!(h2.contains("https=on\n"), "{h2}");
    assert!(h2.contains("protocol=HTTP/2\n"), "{h2}");
    assert!(h2.contains(&format!("host=localhost:{port}\n")), "{h2}");

    let h1 = curl(&[cacert, "--resolve", &resolve, "--http1.1", &url("/env")]);
    assert!(h1.contains("scheme=https\n"), "{h1}");
    assert!(h1.contains("https=on\n"), "{h1}");
    assert!(h1.contains("protocol=HTTP/1.1\n"), "{h1}");

    // The plain port beside it stays plain.
    let plain = server.get("/env");
    assert_eq!(plain.status, 200);
    assert!(plain.text().contains("scheme=http\n"), "{}", plain.text());
    assert!(plain.text().contains("https=\n"), "{}", plain.text());

    // A body larger than --body-buffer-size is buffered to a file over
    // HTTP/2 as over HTTP/1.1.
    let body = certs.dir.path().join("body");
    std::fs::write(&body, vec![b'x'; 3 << 20]).unwrap();
    let up = curl(&[
        cacert,
        "--resolve",
        &resolve,
        "--http2",
        "--data-binary",
        &format!("@{}", body.display()),
        &url("/upload"),
    ]);
    assert_eq!(up, format!("{}\n", 3 << 20));

    // Both protocols are in the access log like any request (the log is
    // read from the server's stderr by a thread: wait for the line).
    server.wait_until(10, "the upload's access-log line", |s| {
        s.logs().contains("POST /upload 200")
    });
    assert!(server.logs().contains("GET /env 200"));
}

#[test]
fn concurrent_streams_spread_over_workers_within_limits() {
    if !have_openssl() || !have_nghttp2() {
        return;
    }
    let certs = Certs::new("one.test");
    let (server, port) = start_both(&certs, &["--min-instances", "4", "--max-pool-size", "4"]);
    wait_for_ready_workers(&server, 4, 60);

    // Four streams on one connection, each sleeping 1 s: served by
    // different workers at once, they take about 1 s, not 4.
    let urls: Vec<String> = (0..4)
        .map(|i| format!("https://127.0.0.1:{port}/sleep?s=1&i={i}"))
        .collect();
    let started = Instant::now();
    let out = Command::new("nghttp")
        .args(&urls)
        .output()
        .expect("running nghttp");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nghttp: {text}");
    let mut pids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("slept "))
        .collect();
    assert_eq!(pids.len(), 4, "{text}");
    pids.sort();
    pids.dedup();
    assert!(pids.len() >= 3, "streams shared workers: {text}");
    assert!(
        took < Duration::from_secs(3),
        "4 streams of 1 s took {took:?}: not concurrent"
    );

    // What the server announces in its SETTINGS frame.
    let out = Command::new("nghttp")
        .args(["-nv", &format!("https://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100"),
        "{text}"
    );
    assert!(
        text.contains("SETTINGS_MAX_HEADER_LIST_SIZE(0x06):417792"),
        "{text}"
    );

    // A header list over that limit is refused without reaching a worker.
    let before = server.processed_total();
    // (From a file: one argument may not be that long.)
    let big = certs.dir.path().join("big-header");
    std::fs::write(&big, format!("x-big: {}\n", "a".repeat(420 * 1024))).unwrap();
    let out = Command::new("curl")
        .args(["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("@{}", big.display())])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        code == "431" || code == "000",
        "a 420 KiB header list got {code}"
    );
    // More than 100 header fields: 431, as hyper's HTTP/1.1 parser does.
    let mut many = Command::new("curl");
    many.args(["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}"]);
    for i in 0..120 {
        many.args(["-H", &format!("x-h{i}: v")]);
    }
    let out = many
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.processed_total(),
        before,
        "a refused request reached a worker"
    );
}

#[test]
fn h2load_burst_is_served_completely() {
    if !have_openssl() || !have_nghttp2() {
        return;
    }
    let certs = Certs::new("one.test");
    let (server, port) = start_both(&certs, &["--min-instances", "2"]);
    let before = server.processed_total();
    let out = Command::new("h2load")
        .args(["-n", "600", "-c", "4", "-m", "20"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .expect("running h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load: {text}");
    assert!(
        text.contains("requests: 600 total, 600 started, 600 done, 600 succeeded"),
        "{text}"
    );
    assert!(text.contains("status codes: 600 2xx"), "{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert_eq!(server.wait_processed(10, before + 600), before + 600);
}

/// `--ssl` without `--ssl-port`: the main port speaks only TLS.
#[test]
fn ssl_alone_makes_the_main_port_https() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let (mut child, _registry, logs) = spawn_with(&certs, &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let port = loop {
        if let Some(p) = https_port(&logs) {
            break p;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}): {}", logs.lock().unwrap().join("\n"));
        }
        assert!(Instant::now() < deadline, "no https listener");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        find_log(&logs, "listening on http://").is_none(),
        "a plain listener too: {}",
        logs.lock().unwrap().join("\n")
    );
    let mut tls = tls_connect(port);
    let r = keep_alive_get(&mut tls, "/env");
    assert!(r.text().contains("scheme=https\n"), "{}", r.text());
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut plain, "plain HTTP on the TLS port");
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // --ssl-port equal to --port is refused, naming the rule.
    let registry = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("start")
        .arg(app())
        .args(certs.args())
        .args(["--port", "4567", "--ssl-port", "4567"])
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--ssl-port 4567 is --port too"), "{err}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_for_exit(&mut child, &logs, 30);
}

#[test]
fn a_handshake_that_never_comes_is_dropped_after_the_header_timeout() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let (_server, port) = start_both(&certs, &["--header-timeout", "2"]);
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Meanwhile other clients are served: the handshake is not in the
    // accept loop.
    let mut tls = tls_connect(port);
    assert_eq!(keep_alive_get(&mut tls, "/").status, 200);
    let started = Instant::now();
    read_to_close(&mut silent, "a connection that never started its handshake");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn certificate_reload_on_sighup_and_restart_keeps_connections() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let first_serial = serial_of(&certs.cert);
    let (server, port) = start_both(&certs, &[]);
    let shown = served_certificate(port);
    assert!(
        shown.contains("CN = one.test") || shown.contains("CN=one.test"),
        "{shown}"
    );
    assert!(shown.contains(&first_serial), "{shown} vs {first_serial}");

    // A keep-alive connection opened before the reload.
    let mut before = tls_connect(port);
    assert_eq!(keep_alive_get(&mut before, "/").status, 200);
    assert!(contains(&peer_certificate(&before), "one.test"));

    let serial = certs.replace("two.test");
    server.signal(libc::SIGHUP);
    server.wait_until(10, "the SIGHUP reload", |s| {
        s.logs().contains("SIGHUP: reloaded the TLS certificate")
    });
    let shown = served_certificate(port);
    assert!(shown.contains("two.test"), "{shown}");
    assert!(shown.contains(&serial), "{shown} vs {serial}");
    // The old connection goes on, with the certificate it started with,
    // through the rolling restart SIGHUP also started.
    for _ in 0..5 {
        assert_eq!(keep_alive_get(&mut before, "/").status, 200);
    }
    assert!(contains(&peer_certificate(&before), "one.test"));
    let fresh = tls_connect(port);
    let mut fresh = fresh;
    assert_eq!(keep_alive_get(&mut fresh, "/").status, 200);
    assert!(contains(&peer_certificate(&fresh), "two.test"));

    // `rustrack restart` reloads too.
    let serial = certs.replace("three.test");
    let out = server.cli(&["restart"]);
    assert!(out.status.success(), "{out:?}");
    let shown = served_certificate(port);
    assert!(
        shown.contains("three.test") && shown.contains(&serial),
        "{shown}"
    );
    assert_eq!(keep_alive_get(&mut before, "/").status, 200);
    let tls = &server.status()["tls"];
    assert_eq!(tls["reloads"], 2, "{tls}");
    assert!(tls["error"].is_null(), "{tls}");
}

#[test]
fn a_bad_certificate_at_start_is_an_error_naming_the_file() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    std::fs::write(&certs.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let (mut child, _registry, logs) = spawn_with(&certs, &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 30);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains(&certs.cert.display().to_string()), "{out}");
    assert!(out.contains("--ssl-certificate"), "{out}");
    assert!(!out.contains("preloader loaded"), "the app started: {out}");

    // A key that belongs to another certificate names both files.
    let (_, other_key) = make_cert(certs.dir.path(), "other", "other.test");
    let (c, _) = make_cert(certs.dir.path(), "mine", "mine.test");
    std::fs::copy(c, &certs.cert).unwrap();
    std::fs::copy(other_key, &certs.key).unwrap();
    let (mut child, _registry, logs) = spawn_with(&certs, &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 30);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("does not match"), "{out}");
    assert!(out.contains(&certs.key.display().to_string()), "{out}");

    // A missing key file.
    std::fs::remove_file(&certs.key).unwrap();
    let (mut child, _registry, logs) = spawn_with(&certs, &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 30);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("cannot read") && out.contains("server.key"),
        "{out}"
    );
}

#[test]
fn a_bad_certificate_at_reload_keeps_the_old_one_and_shows_in_status() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let (server, port) = start_both(&certs, &[]);
    std::fs::write(&certs.cert, "garbage\n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_until(10, "the failed reload", |s| {
        s.logs().contains("TLS certificate not reloaded")
    });
    let shown = served_certificate(port);
    assert!(shown.contains("one.test"), "{shown}");
    let tls = &server.status()["tls"];
    let error = tls["error"].as_str().unwrap_or_default();
    assert!(error.contains("server.crt"), "{tls}");
    let text = server.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("TLS reload error"), "{text}");
    assert!(
        text.contains("previous certificate is still in use"),
        "{text}"
    );

    // Fixed files clear the error at the next reload.
    let serial = certs.replace("two.test");
    server.signal(libc::SIGHUP);
    server.wait_until(10, "the good reload", |s| {
        s.status()["tls"]["error"].is_null()
    });
    assert!(served_certificate(port).contains(&serial));
}

/// The rapid-reset pattern (CVE-2023-44487): open a stream and reset it at
/// once, in a loop. Cancelled requests must not pile up in the queue or on
/// workers, the connection is sent away, and memory stays put.
#[test]
fn rapid_reset_ties_up_no_worker_and_no_memory() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let (server, port) = start_both(&certs, &["--min-instances", "2", "--max-pool-size", "2"]);
    wait_for_ready_workers(&server, 2, 60);
    // Warm up the front end's allocator before the baseline.
    for _ in 0..20 {
        assert_eq!(server.get("/").status, 200);
    }
    let rss_before = smaps_field(server.pid, "Rss");
    let processed_before = server.processed_total();

    const STREAMS: usize = 5000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sent, connections) = rt.block_on(rapid_reset(port, STREAMS, None));
    assert_eq!(sent, STREAMS);
    assert!(
        connections > 1,
        "one connection took {STREAMS} cancelled streams without GOAWAY"
    );

    // Nothing stays queued or busy: each /sleep?s=0.2 that did reach a
    // worker ends on its own, and queued ones were dropped.
    server.wait_until(20, "no busy worker and an empty queue", |s| {
        let st = s.status();
        st["requests_in_queue"] == 0
            && st["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["state"] != "busy")
    });
    let reached = server.processed_total() - processed_before;
    eprintln!(
        "rapid reset: {STREAMS} streams over {connections} connections, {reached} reached a worker"
    );
    assert!(
        reached < 200,
        "{reached} of {STREAMS} cancelled requests reached a worker"
    );
    let rss_after = smaps_field(server.pid, "Rss");
    assert!(
        rss_after < rss_before + (48 << 20),
        "front end RSS grew from {} to {} MB",
        rss_before >> 20,
        rss_after >> 20
    );

    // Slower: each stream is reset 5 ms after its HEADERS, once the server
    // has accepted it and the request may already be queued or on a
    // worker. h2's own limit only counts streams reset before they were
    // accepted; rustrack's budget of cancelled requests sends these away.
    let processed_before = server.processed_total();
    let (sent, connections) = rt.block_on(rapid_reset(port, 600, Some(Duration::from_millis(5))));
    assert_eq!(sent, 600);
    assert!(connections > 1, "600 cancelled streams on one connection");
    assert!(
        server.logs().contains("rapid reset?"),
        "no GOAWAY logged: {}",
        server.logs()
    );
    server.wait_until(20, "no busy worker and an empty queue", |s| {
        let st = s.status();
        st["requests_in_queue"] == 0
            && st["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["state"] != "busy")
    });
    let reached = server.processed_total() - processed_before;
    eprintln!("slow reset: 600 streams over {connections} connections, {reached} reached a worker");

    // And the server still serves.
    let mut tls = tls_connect(port);
    assert_eq!(keep_alive_get(&mut tls, "/").status, 200);
}

/// Opens `n` streams (GET /sleep?s=0.2), resetting each right after its
/// HEADERS (or `delay` after), over as many connections as the server makes it use. Returns
/// the streams sent and the connections used.
async fn rapid_reset(port: u16, n: usize, delay: Option<Duration>) -> (usize, usize) {
    let connector = tokio_rustls::TlsConnector::from(client_config(&[b"h2"]));
    let mut sent = 0;
    let mut connections = 0;
    while sent < n {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        connections += 1;
        while sent < n {
            let mut ready = match client.clone().ready().await {
                Ok(c) => c,
                Err(_) => break, // GOAWAY or closed: reconnect
            };
            let req = http::Request::get(format!("https://localhost:{port}/sleep?s=0.2"))
                .body(())
                .unwrap();
            match ready.send_request(req, true) {
                Ok((_response, mut stream)) => {
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break,
            }
            client = ready;
            // Let the connection task write (HEADERS and RST_STREAM go out
            // together) and read what the server says, as an attacker's
            // client would while it keeps going.
            tokio::task::yield_now().await;
        }
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
        assert!(connections < n, "no stream could be sent");
    }
    (sent, connections)
}

/// An HTTP/2 connection (h2 crate) with one request answered on it: the
/// connection's task handle (ends when the server closes the connection)
/// and the client handle.
async fn h2_connection(
    port: u16,
) -> (
    tokio::task::JoinHandle<()>,
    h2::client::SendRequest<bytes::Bytes>,
) {
    let connector = tokio_rustls::TlsConnector::from(client_config(&[b"h2"]));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost:{port}/"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    (driver, client)
}

#[test]
fn an_idle_http2_connection_is_closed_after_the_header_timeout() {
    if !have_openssl() {
        return;
    }
    let certs = Certs::new("one.test");
    let (_server, port) = start_both(&certs, &["--header-timeout", "2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (driver, _client) = h2_connection(port).await;
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .expect("the idle HTTP/2 connection is still open after 10 s")
            .unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1500), "closed after {took:?}");
    });
}

/// TERM with an HTTP/2 request in flight and another HTTP/2 connection
/// idle: the request finishes, the idle connection gets GOAWAY at once,
/// and the server exits without waiting out --shutdown-timeout.
#[test]
fn a_graceful_stop_finishes_http2_requests_and_closes_idle_connections() {
    if !have_openssl() || !have_nghttp2() {
        return;
    }
    let certs = Certs::new("one.test");
    let (mut server, port) = start_both(&certs, &["--min-instances", "2"]);
    // A runtime thread of its own, so the client answers the server's
    // GOAWAY and PING while this thread waits.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (idle, _client) = rt.block_on(h2_connection(port));
    let slow = Command::new("nghttp")
        .arg(format!("https://127.0.0.1:{port}/sleep?s=2"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_until(10, "the slow request on a worker", |s| s.busy_count() == 1);
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let out = slow.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("slept "),
        "the in-flight request was cut: {:?}\n{}",
        out,
        server.logs()
    );
    let status = server.wait_exit(20);
    assert!(status.success(), "{status}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the stop took {took:?}\n{}",
        server.logs()
    );
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("the idle connection outlived the server")
            .unwrap();
    });
}
