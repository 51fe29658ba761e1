//! Real apps and their environment: Sinatra (params, redirects, streaming,
//! 404), `--environment` / `--envvar`, and Bundler activation of the app's
//! Gemfile (or `BUNDLE_GEMFILE`), including a missing gem.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Whether plain Ruby (no bundle) can require `lib`.
fn requirable(lib: &str) -> bool {
    runs_ok("ruby", &["-e", &format!("require '{lib}'")])
}

/// Sinatra (ruby-sinatra), which CI must have: see `require_dep`.
fn sinatra_available() -> bool {
    require_dep(requirable("sinatra/base"), "Sinatra", "ruby-sinatra")
}

/// Dalli (ruby-dalli), which CI must have: see `require_dep`.
fn dalli_available() -> bool {
    require_dep(requirable("dalli"), "Dalli", "ruby-dalli")
}

/// Bundler, which CI must have: see `require_dep`.
fn bundler_available() -> bool {
    require_dep(runs_ok("bundle", &["--version"]), "Bundler", "bundler")
}

#[test]
fn sinatra_params_redirects_and_404() {
    if !sinatra_available() {
        return;
    }
    let server = start(&fixture("sinatra"), &[]);
    let r = server.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello from Sinatra\n"));

    let r = server.get("/hello/World?greeting=Hi%20there");
    assert_eq!(r.text(), "Hi there, World!\n");

    let form = b"name=Ann+Lee&tags%5B%5D=a&tags%5B%5D=b&count=41";
    let r = server.request(
        "POST",
        "/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({ "name": "Ann Lee", "tags": ["a", "b"], "count": 42 })
    );

    let r = server.get("/old");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{}/new?from=old", server.port).as_str())
    );
    assert_eq!(server.get("/new?from=old").text(), "moved here from old\n");

    let r = server.get("/no/such/page");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "nothing at /no/such/page\n");

    // No Gemfile in fixtures/sinatra: plain RubyGems, no Bundler.
    let env = server.get("/environment").json();
    assert_eq!(env["bundler"], false);
}

/// `stream do |out| ... end` with a pause after each chunk: the first chunk
/// reaches the client long before the last one is produced.
#[test]
fn sinatra_streams_chunks_as_they_are_produced() {
    if !sinatra_available() {
        return;
    }
    let server = start(&fixture("sinatra"), &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sent = Instant::now();
    stream
        .write_all(b"GET /stream?delay=0.4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        headers.push(line.trim_end().to_ascii_lowercase());
    }
    assert!(headers[0].contains(" 200 "), "{headers:?}");
    assert!(
        headers.contains(&"transfer-encoding: chunked".to_string()),
        "{headers:?}"
    );
    // Each chunk-data piece with the time it arrived.
    let mut pieces: Vec<(Duration, String)> = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let mut data = vec![0; size + 2];
        reader.read_exact(&mut data).unwrap();
        data.truncate(size);
        pieces.push((sent.elapsed(), String::from_utf8(data).unwrap()));
    }
    let body: String = pieces.iter().map(|(_, s)| s.as_str()).collect();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3, "{body}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("chunk {i} at ")), "{body}");
    }
    let first = pieces.first().unwrap().0;
    let last = pieces.last().unwrap().0;
    eprintln!("sinatra stream: first chunk after {first:?}, last after {last:?}");
    // The app sleeps 0.4 s after each chunk: a buffered body would arrive
    // all at once after 1.2 s.
    assert!(
        first + Duration::from_millis(600) < last,
        "chunks were not sent as produced: first {first:?}, last {last:?}"
    );
}

#[test]
fn environment_and_envvars_reach_the_app() {
    if !sinatra_available() {
        return;
    }
    let server = start(
        &fixture("sinatra"),
        &[
            "--environment",
            "production",
            "--envvar",
            "GREETING=hello world",
            "--envvar",
            "EMPTY=",
            "--envvar",
            "WITH_EQUALS=a=b=c",
        ],
    );
    let env = server.get("/environment").json();
    assert_eq!(env["sinatra_environment"], "production");
    for key in ["RACK_ENV", "RAILS_ENV", "APP_ENV"] {
        assert_eq!(env[key], "production", "{key}: {env}");
    }
    assert_eq!(env["GREETING"], "hello world");
    assert_eq!(env["EMPTY"], "");
    assert_eq!(env["WITH_EQUALS"], "a=b=c");
    assert_eq!(env["cwd"], fixture("sinatra").to_str().unwrap());
}

#[test]
fn the_default_environment_is_development_under_direct_spawning_too() {
    if !sinatra_available() {
        return;
    }
    let server = start(
        &fixture("sinatra"),
        &[
            "--spawn-method",
            "direct",
            "-e",
            "staging",
            "--envvar",
            "GREETING=hi",
        ],
    );
    let env = server.get("/environment").json();
    assert_eq!(env["APP_ENV"], "staging");
    assert_eq!(env["GREETING"], "hi");
    drop(server);
    let server = start(&fixture("sinatra"), &["--spawn-method", "direct"]);
    let env = server.get("/environment").json();
    assert_eq!(env["sinatra_environment"], "development");
    assert_eq!(env["RACK_ENV"], "development");
    assert_eq!(env["cwd"], fixture("sinatra").to_str().unwrap());
}

#[test]
fn a_malformed_envvar_is_rejected() {
    let out = Command::new(bin())
        .args(["start", "--envvar", "NO_EQUALS_SIGN"])
        .arg(fixture("hello"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected NAME=VALUE"), "{err}");
}

/// Copies a fixture's files (not directories) into a fresh temp dir.
fn copy_app(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rustrack-app.")
        .tempdir()
        .unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() && entry.file_name() != "Gemfile.lock" {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// `bundle install --local` in `dir`, with Bundler's user files kept in it.
fn bundle_install(dir: &Path) {
    let out = Command::new("bundle")
        .args(["install", "--local"])
        .current_dir(dir)
        .env("BUNDLE_USER_HOME", dir.join(".bundle-home"))
        .env_remove("BUNDLE_GEMFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bundle install --local failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_apps_gemfile_is_activated_before_config_ru() {
    // Dalli and Sinatra must be installed for "not requirable in the
    // bundle" below to show the bundle hiding them.
    if !bundler_available() || !dalli_available() || !sinatra_available() {
        return;
    }
    let app = copy_app("bundled");
    bundle_install(app.path());
    let gemfile = app.path().join("Gemfile");
    for method in ["smart", "direct"] {
        let server = start(app.path(), &["--spawn-method", method]);
        let report = server.get("/").json();
        assert_eq!(
            report["bundle_gemfile"],
            gemfile.to_str().unwrap(),
            "{method}: {report}"
        );
        assert_eq!(report["bundler_loaded"], true);
        assert!(report["gems"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("rack")));
        // Installed on the machine, but not in this bundle.
        assert_eq!(report["dalli_requirable"], false, "{method}: {report}");
        assert_eq!(report["sinatra_requirable"], false, "{method}: {report}");
    }
}

#[test]
fn bundle_gemfile_points_at_a_gemfile_elsewhere() {
    // The other Gemfile bundles the installed Dalli; Sinatra must be
    // installed for "not requirable" to mean the bundle hid it.
    if !bundler_available() || !dalli_available() || !sinatra_available() {
        return;
    }
    // The app has no Gemfile of its own; BUNDLE_GEMFILE names one (with
    // dalli in it) in another directory.
    let app = copy_app("bundled");
    std::fs::remove_file(app.path().join("Gemfile")).unwrap();
    let gems = tempfile::tempdir().unwrap();
    std::fs::write(
        gems.path().join("Gemfile"),
        "source \"https://rubygems.org\"\ngem \"rack\"\ngem \"dalli\"\n",
    )
    .unwrap();
    bundle_install(gems.path());
    let gemfile = gems.path().join("Gemfile");
    let server = start_with_env(
        app.path(),
        &[],
        &[("BUNDLE_GEMFILE", gemfile.to_str().unwrap())],
    );
    let report = server.get("/").json();
    assert_eq!(report["bundle_gemfile"], gemfile.to_str().unwrap());
    assert_eq!(report["dalli_requirable"], true, "{report}");
    assert_eq!(report["sinatra_requirable"], false, "{report}");
}

#[test]
fn a_missing_gem_stops_start_with_its_name() {
    if !bundler_available() {
        return;
    }
    let app = copy_app("bundled");
    std::fs::write(
        app.path().join("Gemfile"),
        "source \"https://rubygems.org\"\ngem \"rack\"\ngem \"rustrack_no_such_gem\"\n",
    )
    .unwrap();
    for method in ["smart", "direct"] {
        let (mut child, _registry, logs) = spawn(app.path(), &["--spawn-method", method], &[]);
        let (status, out) = wait_for_exit(&mut child, &logs, 60);
        assert!(!status.success(), "{method}: started anyway:\n{out}");
        assert!(
            out.contains("Rustrack::BundleError")
                && out.contains("rustrack_no_such_gem")
                && out.contains("bundle install"),
            "{method}:\n{out}"
        );
        // Readable: Bundler's message, not a page of backtrace.
        assert!(!out.contains("bundler/definition.rb"), "{method}:\n{out}");
    }
}

#[test]
fn a_bundle_without_rack_is_explained() {
    if !bundler_available() {
        return;
    }
    let app = copy_app("bundled");
    std::fs::write(
        app.path().join("Gemfile"),
        "source \"https://rubygems.org\"\ngem \"dalli\"\n",
    )
    .unwrap();
    bundle_install(app.path());
    let (mut child, _registry, logs) = spawn(app.path(), &[], &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 60);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("rack is not in the app's bundle") && out.contains("add gem \"rack\""),
        "{out}"
    );
}
