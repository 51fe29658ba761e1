//! Proxies told apart from clients (`--trusted-proxy`), and the headers
//! the front end adds for APMs (`X-Request-Start`, `X-Request-Id`).

mod common;

use common::*;

fn env_of(server: &Server, headers: &[(&str, &str)]) -> (serde_json::Value, Response) {
    let r = server.request("GET", "/env", headers, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    (r.json(), r.clone())
}

const SPOOFED: &[(&str, &str)] = &[
    ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "shop.example.com"),
    ("X-Request-Start", "t=1"),
];

#[test]
fn forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let server = start(&fixture("events"), &["--trusted-proxy", "10.0.0.0/8"]);
    let (env, r) = env_of(&server, SPOOFED);
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["rack.url_scheme"], "http");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    // Passed on as plain headers.
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "6.6.6.6, 203.0.113.9");
    // Our own X-Request-Start, not the client's.
    let start: u64 = env["HTTP_X_REQUEST_START"].as_str().unwrap()[2..]
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(now - start < 60_000_000, "t={start}, now {now}");
    // An id made up here, in the env and the response.
    let id = r.header("x-request-id").unwrap();
    assert_eq!(env["HTTP_X_REQUEST_ID"], id);
    assert_eq!(id.len(), 24);
    // The log reaches the test through a pipe another thread reads.
    wait_for(10, "the access log line with the id", || {
        server.logs().contains(&format!("id={id}"))
    });
}

#[test]
fn a_trusted_proxy_tells_the_client_scheme_and_host() {
    let server = start(&fixture("events"), &["--trusted-proxy", "127.0.0.1/32"]);
    let (env, _) = env_of(&server, SPOOFED);
    // The right-most address that is not a trusted proxy.
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.9");
    assert_eq!(env["rack.url_scheme"], "https");
    assert_eq!(env["HTTPS"], "on");
    assert_eq!(env["SERVER_NAME"], "shop.example.com");
    assert_eq!(env["SERVER_PORT"], "443");
    assert_eq!(env["HTTP_X_REQUEST_START"], "t=1");
    // A client's request id is passed through and echoed.
    let (env, r) = env_of(&server, &[("X-Request-Id", "abc-123")]);
    assert_eq!(env["HTTP_X_REQUEST_ID"], "abc-123");
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
}

#[test]
fn a_bad_trusted_proxy_is_a_clear_start_error() {
    let (mut child, _registry, logs) =
        spawn(&fixture("hello"), &["--trusted-proxy", "10.0.0.0/99"], &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 60);
    assert!(!status.success(), "{out}");
    assert!(out.contains("--trusted-proxy \"10.0.0.0/99\""), "{out}");
}
