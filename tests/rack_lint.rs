//! The env rustrack builds and the way it consumes responses, checked by
//! Rack::Lint (fixtures/lint wraps its app in it) across many request shapes.

mod common;

use common::*;
use sha2_free::sha256_hex;

/// Tiny SHA-256 so the test needs no extra crate.
mod sha2_free {
    pub fn sha256_hex(data: &[u8]) -> String {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(data)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

fn field(r: &Response, name: &str) -> String {
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {}", r.text()))
}

#[test]
fn rack_lint_accepts_every_request_shape() {
    let server = start(&fixture("lint"), &[]);
    every_request_shape(&server);
    assert_eq!(field(&server.get("/"), "multithread"), "false");
    lint_was_happy(&server);
}

/// The same shapes from 8 clients at once, on one worker with 4 request
/// threads: Rack::Lint checks every env and response while requests run
/// side by side.
#[test]
fn rack_lint_accepts_concurrent_requests_on_four_threads() {
    let server = start(
        &fixture("lint"),
        &[
            "--threads-per-worker",
            "4",
            "--min-instances",
            "1",
            "--max-pool-size",
            "1",
        ],
    );
    assert_eq!(field(&server.get("/"), "multithread"), "true");
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..3 {
                    every_request_shape(&server);
                }
            });
        }
    });
    assert_eq!(server.status()["processes"], 1);
    lint_was_happy(&server);
}

fn every_request_shape(server: &Server) {
    let r = server.get("/search?q=r%C3%BCby&page=2");
    assert_eq!(r.status, 200, "{}", server.logs());
    assert_eq!(field(&r, "path"), "/search");
    assert_eq!(field(&r, "query"), "q=r%C3%BCby&page=2");
    assert_eq!(field(&r, "uri"), "/search?q=r%C3%BCby&page=2");
    assert_eq!(field(&r, "server"), format!("127.0.0.1:{}", server.port));
    assert_eq!(field(&r, "scheme"), "http");

    let body = b"name=value&other=%E2%9C%93".to_vec();
    let r = server.request(
        "POST",
        "/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", server.logs());
    assert_eq!(field(&r, "length"), body.len().to_string());
    assert_eq!(field(&r, "sha"), sha256_hex(&body));

    // Chunked upload: the worker sees a plain body with its length.
    let raw = b"PUT /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = server.raw(raw);
    assert_eq!(r.status, 200, "{}", server.logs());
    assert_eq!(field(&r, "method"), "PUT");
    assert_eq!(field(&r, "length"), "11");
    assert_eq!(field(&r, "sha"), sha256_hex(b"hello world"));

    let r = server.request("HEAD", "/", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    let r = server.get("/caf%C3%A9/%E2%9C%93");
    assert_eq!(r.status, 200, "{}", server.logs());
    assert_eq!(field(&r, "path"), "/caf%C3%A9/%E2%9C%93");

    let raw = b"GET /multi HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Multi: one\r\nX-Multi: two\r\n\r\n";
    assert_eq!(field(&server.raw(raw), "x_multi"), "one, two");

    let r = server.get("/large");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1_000_000);

    let r = server.get("/cookies");
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, vec!["a=1", "b=2"]);

    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    let r = server.request(
        "POST",
        "/big",
        &[("Content-Type", "application/octet-stream")],
        &big,
    );
    assert_eq!(r.status, 200, "{}", server.logs());
    assert_eq!(field(&r, "sha"), sha256_hex(&big));
}

fn lint_was_happy(server: &Server) {
    let logs = server.logs();
    assert!(
        !logs.contains("LintError"),
        "Rack::Lint complained:\n{logs}"
    );
    assert!(
        !logs.contains("[rustrack] error"),
        "the app raised:\n{logs}"
    );
}
