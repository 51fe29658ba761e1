//! Test harness: runs the real `rustrack` binary on a fixture, on an
//! ephemeral loopback port, and talks plain HTTP/1.1 to it over TCP.
//!
//! Each server gets its own instance registry directory, collects its log
//! lines (stderr) in memory for assertions and failure messages, and is
//! stopped (TERM, then KILL) when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rustrack")
}

/// Extra `start` arguments for the variants of tests that also run with
/// several request threads per worker.
pub const FOUR_THREADS: &[&str] = &["--threads-per-worker", "4"];

/// `args` followed by `more`.
pub fn with_args<'a>(args: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(more).copied().collect()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub pid: u32,
    pub registry: tempfile::TempDir,
    pub instance: PathBuf,
    pub logs: Arc<Logs>,
}

/// The output lines of a spawned command (stderr and stdout, as they
/// arrive), and how many of its two output pipes are still open. Derefs to
/// the lines' mutex.
#[derive(Default)]
pub struct Logs {
    lines: Mutex<Vec<String>>,
    open_pipes: AtomicUsize,
}

impl std::ops::Deref for Logs {
    type Target = Mutex<Vec<String>>;
    fn deref(&self) -> &Self::Target {
        &self.lines
    }
}

impl Logs {
    /// Waits until both output pipes reached EOF (everything the command
    /// and the processes it started wrote has been collected), for at most
    /// `secs`; returns whether they did.
    pub fn wait_for_eof(&self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.open_pipes.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// Starts rustrack and returns once it has announced its port, or panics
/// with its output.
pub fn start(app: &Path, extra: &[&str]) -> Server {
    start_with_env(app, extra, &[])
}

pub fn start_with_env(app: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let (cmd, registry) = start_cmd(app, extra, env);
    start_command(cmd, registry, 120)
}

/// Spawns rustrack without waiting for it (for start-up failure tests).
pub fn spawn(
    app: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, tempfile::TempDir, Arc<Logs>) {
    let (cmd, registry) = start_cmd(app, extra, env);
    let (child, logs) = spawn_command(cmd);
    (child, registry, logs)
}

/// `rustrack start APP` on an ephemeral loopback port with a private
/// instance registry.
fn start_cmd(app: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Command, tempfile::TempDir) {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("start")
        .arg(app)
        .args(["--address", "127.0.0.1", "--port", "0"])
        .args(extra)
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd, registry)
}

pub fn find_log(logs: &Logs, needle: &str) -> Option<String> {
    logs.lock()
        .unwrap()
        .iter()
        .find(|l| l.contains(needle))
        .cloned()
}

impl Server {
    /// Workers that have greeted and serve (ready or busy).
    pub fn ready_count(&self) -> usize {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "ready" || w["state"] == "busy")
            .count()
    }

    /// Runs `rustrack ARGS --instance DIR` against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("--instance")
            .arg(&self.instance)
            .output()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.port
        );
        for (k, v) in headers {
            raw += &format!("{k}: {v}\r\n");
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            raw += &format!("Content-Length: {}\r\n", body.len());
        }
        raw += "\r\n";
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    /// Sends raw bytes on a new connection and reads one response.
    pub fn raw(&self, bytes: &[u8]) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        read_response(&mut BufReader::new(stream)).expect("a response")
    }

    /// `rustrack status --json` for this instance.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
            .collect();
        pids.sort();
        pids
    }

    /// Polls `f` until it returns true; panics naming `what`, with the
    /// server's logs, if `secs` pass first.
    pub fn wait_until(&self, secs: u64, what: &str, mut f: impl FnMut(&Server) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\nlogs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The state (`ready`, `busy`, `spawning`, `retiring`) of each worker
    /// in `rustrack status`.
    pub fn worker_states(&self) -> Vec<String> {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["state"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// How many workers are busy with a request.
    pub fn busy_count(&self) -> usize {
        self.worker_states().iter().filter(|s| *s == "busy").count()
    }

    /// Requests in progress on every worker (`sessions` in `status`); with
    /// one thread per worker, the busy workers.
    pub fn in_progress(&self) -> u64 {
        self.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["sessions"].as_u64().unwrap())
            .sum()
    }

    /// `processed_total` from `rustrack status`. The pool counts a request
    /// when the worker's side of the exchange ends, which can be a moment
    /// after the client has its response: wait with `wait_processed`
    /// before comparing.
    pub fn processed_total(&self) -> u64 {
        self.status()["processed_total"].as_u64().unwrap()
    }

    /// Waits until `processed_total` reaches `n`, then returns it (which
    /// may be more than `n`: callers assert the exact figure).
    pub fn wait_processed(&self, secs: u64, n: u64) -> u64 {
        self.wait_until(secs, &format!("processed_total to reach {n}"), |s| {
            s.processed_total() >= n
        });
        self.processed_total()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// Waits for the server to exit; returns its exit status.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("rustrack did not exit in {secs}s\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(15);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The HTTP client `rustrack compare` uses too: one copy of the parsing.
pub use rustrack::client::http::{read_response, Response};

/// Whether a read error means the peer closed the connection (as opposed
/// to a read timeout, which means it is still open and silent).
pub fn is_closed_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Whether a read error is a read timeout (`set_read_timeout` reports it
/// as WouldBlock on Linux).
pub fn is_timeout_error(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Reads `r` until the peer closes the connection (EOF, or a reset) and
/// returns every byte that arrived first. The caller's read timeout bounds
/// how long a silent connection may stay open: a read that times out
/// panics, naming `what`, because the connection was not closed.
pub fn read_to_close(r: &mut impl Read, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_closed_error(&e) => return got,
            Err(e) if is_timeout_error(&e) => panic!(
                "{what}: the connection is still open (read timed out) after {} bytes: {:?}",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(300)])
            ),
            Err(e) => panic!("{what}: reading failed: {e}"),
        }
    }
}

/// Polls `f` until it returns true; panics naming `what` if `secs` pass
/// first. (`Server::wait_until` adds the server's logs to the message.)
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets the flag when dropped: load threads in a `thread::scope` loop
/// until a flag is set, and an assertion failing in the scope's body would
/// otherwise leave them looping and the test hanging instead of failing.
pub struct SetOnDrop<'a>(pub &'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if ppid_of(child) == Some(pid) {
            out.push(child);
        }
    }
    out.sort();
    out
}

pub fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next(),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

pub fn private_dirty(pid: u32) -> u64 {
    smaps_field(pid, "Private_Dirty")
}

pub fn smaps_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a PID the test obtained from the server.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Runs `n` GETs of `path` concurrently and returns the responses.
pub fn concurrent_gets(server: &Server, path: &str, n: usize) -> Vec<Response> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(|| server.get(path))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

// ---------------------------------------------------------------------
// Real services for the app tests (memcached, PostgreSQL), and running
// rustrack through another command (`bundle exec rustrack start`).
// ---------------------------------------------------------------------

/// Whether we run under CI (`CI=true`, as CI services set it; `1` too).
/// There a missing test dependency is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The running test's name: libtest runs each test on a thread named
/// after it.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Prints a skip notice that cannot be missed in the test output. It
/// writes to the stderr handle, not with `eprintln!`, which libtest
/// captures and shows only for failing tests: a skipped test passes.
pub fn skip_loudly(test: &str, why: &str) {
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\nSKIPPED: {test}: {why}\n{bar}\n"
    );
}

/// For a dependency CI must have (script/setup installs it): returns
/// `ok`. When it is missing (`ok` false), under CI (`CI=true`) the test
/// fails, naming `what` and the Debian package to install; elsewhere it
/// prints a loud `SKIPPED` notice and the caller returns:
///
/// ```ignore
/// if !require_dep(sinatra_installed(), "Sinatra", "ruby-sinatra") {
///     return;
/// }
/// ```
pub fn require_dep(ok: bool, what: &str, debian_package: &str) -> bool {
    if ok {
        return true;
    }
    let test = current_test();
    let why = format!(
        "{what} is not installed (apt-get install {debian_package}; script/setup installs it)"
    );
    if under_ci() {
        panic!("{test}: {why}. CI=true: a missing test dependency fails the test instead of skipping it");
    }
    skip_loudly(&test, &why);
    false
}

/// For something a CI machine may legitimately lack (a kernel feature of
/// the host, say): returns `ok`; when it is false, prints a loud `SKIPPED`
/// notice with `why`, even under CI, and the caller returns.
pub fn optional_dep(ok: bool, why: &str) -> bool {
    if !ok {
        skip_loudly(&current_test(), why);
    }
    ok
}

/// Where `name` is on PATH, like `command -v`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether `cmd ARGS` runs and exits 0 (a tool is installed, a Ruby
/// library loads).
pub fn runs_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A memcached of our own on a free loopback port, killed on drop.
pub struct Memcached {
    child: Child,
    pub port: u16,
}

impl Memcached {
    /// Starts one, or returns `None` when memcached is not on PATH: see
    /// `require_dep` (a skip, or under CI a failure).
    pub fn start() -> Option<Memcached> {
        let bin = on_path("memcached");
        if !require_dep(bin.is_some(), "memcached", "memcached") {
            return None;
        }
        let bin = bin.unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .args(["-l", "127.0.0.1", "-U", "0", "-m", "64", "-c", "1024"])
            .args(["-p", &port.to_string(), "-u", "nobody"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting memcached");
        let mc = Memcached { child, port };
        assert!(
            wait_for_port(port, 10),
            "memcached did not listen on {port}"
        );
        Some(mc)
    }

    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of our own: initdb into a temp dir and pg_ctl on a
/// free loopback port, as the `postgres` user (initdb refuses root).
/// Trust authentication, loopback only. Stopped and removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Postgres {
    /// Starts one, or returns `None` when PostgreSQL 15 is not installed:
    /// see `require_dep` (a skip, or under CI a failure).
    pub fn start() -> Option<Postgres> {
        let installed = Path::new(PG_BIN).join("initdb").exists();
        if !require_dep(
            installed,
            &format!("PostgreSQL 15 ({PG_BIN})"),
            "postgresql",
        ) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("rustrack-pg.")
            .tempdir()
            .unwrap();
        let as_postgres = |args: &[&str]| {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .current_dir("/")
                .output()
                .expect("running runuser");
            assert!(
                out.status.success(),
                "{args:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success(), "chown postgres {}", dir.path().display());
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data,
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]);
        let pg = Postgres { dir, port };
        pg.psql("postgres", "CREATE DATABASE rustrack_test");
        Some(pg)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql (unaligned, tuples only) and returns its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `cmd` (which must end up running `rustrack start` with
/// `--address 127.0.0.1 --port 0`) and collects its output like `spawn`.
pub fn spawn_command(mut cmd: Command) -> (Child, Arc<Logs>) {
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning the command");
    let logs = Arc::new(Logs::default());
    logs.open_pipes.store(2, Ordering::SeqCst);
    for stream in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("RUSTRACK_TEST_VERBOSE").is_some() {
                    eprintln!("{line}");
                }
                logs.lock().unwrap().push(line);
            }
            logs.open_pipes.fetch_sub(1, Ordering::SeqCst);
        });
    }
    (child, logs)
}

/// Like `start`, for a command built by the caller: waits (up to `secs`)
/// for rustrack to announce its port. `registry` is the instance registry
/// directory the command was given.
pub fn start_command(cmd: Command, registry: tempfile::TempDir, secs: u64) -> Server {
    let (mut child, logs) = spawn_command(cmd);
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let port = find_log(&logs, "listening on http://127.0.0.1:")
            .map(|l| l.rsplit(':').next().unwrap().trim().parse::<u16>().unwrap());
        let instance = find_log(&logs, "instance=").map(|l| {
            PathBuf::from(
                l.split("instance=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap(),
            )
        });
        if let (Some(port), Some(instance)) = (port, instance) {
            let pid = child.id();
            return Server {
                child: Some(child),
                port,
                pid,
                registry,
                instance,
                logs,
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Failing anyway: collect what it wrote, if that comes soon.
            logs.wait_for_eof(2);
            panic!(
                "the command exited early ({status}):\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "rustrack did not start in {secs}s:\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a process started with `spawn` to exit; returns its status
/// and its output.
pub fn wait_for_exit(
    child: &mut Child,
    logs: &Logs,
    secs: u64,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "did not exit in {secs}s:\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Callers also assert what the output lacks: take every last line,
    // up to EOF on both pipes. A process still holding them 10 s after
    // the command exited is one it left behind.
    if !logs.wait_for_eof(10) {
        panic!(
            "exited ({status}), but its output pipes are still open 10 s later: \
             a process it started outlived it\n{}",
            logs.lock().unwrap().join("\n")
        );
    }
    (status, logs.lock().unwrap().join("\n"))
}

/// Waits until `n` workers of `server` are ready.
pub fn wait_for_ready_workers(server: &Server, n: usize, secs: u64) {
    server.wait_until(secs, &format!("{n} ready workers"), |s| {
        s.status()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "ready")
            .count()
            >= n
    });
}
