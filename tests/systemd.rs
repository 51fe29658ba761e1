//! systemd's protocols without systemd: the test plays the service
//! manager. It binds the `NOTIFY_SOCKET` datagram socket itself and reads
//! what rustrack sends (READY, STATUS, RELOADING, STOPPING, WATCHDOG), and
//! passes listening sockets the way systemd does for socket activation
//! (fds from 3 on, `LISTEN_FDS`, `LISTEN_PID` set to rustrack's own PID).

mod common;

use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The notify socket, and every datagram received on it (one message per
/// datagram, its `NAME=value` lines joined by `|`).
struct Manager {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock()
                    .unwrap()
                    .push(text.trim_end().replace('\n', "|"));
            }
        });
        Manager {
            _dir: dir,
            path,
            messages,
        }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Index of the first message from `from` on that has `line`.
    fn find(&self, from: usize, line: &str) -> Option<usize> {
        self.all()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, m)| m.split('|').any(|l| l == line || l.starts_with(line)))
            .map(|(i, _)| i)
    }

    fn wait_for(&self, from: usize, line: &str, secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(i) = self.find(from, line) {
                return i;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {line:?} after message {from} in {secs} s: {:#?}",
                    self.all()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self, line: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.split('|').any(|l| l == line))
            .count()
    }
}

#[test]
fn notify_ready_status_reloading_stopping_and_watchdog() {
    let manager = Manager::new();
    let flag_dir = tempfile::tempdir().unwrap();
    let flag = flag_dir.path().join("fail");
    let mut server = start_with_env(
        &fixture("env"),
        &[],
        &[
            ("NOTIFY_SOCKET", manager.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("ENV_FIXTURE_FAIL_FLAG", flag.to_str().unwrap()),
        ],
    );

    // READY=1 with the first worker up, and a status line.
    let ready = manager.wait_for(0, "READY=1", 10);
    let message = &manager.all()[ready];
    assert!(
        message.contains("STATUS=1 workers (0 busy, 0 starting), 0 queued"),
        "{message}"
    );
    assert!(manager.find(0, "STATUS=starting").unwrap() < ready);

    // The app does not see the protocol's variables.
    let env: serde_json::Value = serde_json::from_slice(&server.get("/").body).unwrap();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS"] {
        assert!(env.get(var).is_none(), "the app sees {var}: {env}");
    }

    // Watchdog pings every 200 ms.
    let pings = manager.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(1500));
    let more = manager.count("WATCHDOG=1") - pings;
    assert!((4..=10).contains(&more), "{more} pings in 1.5 s");

    // A rolling restart: RELOADING=1, then READY=1 once it is done.
    let from = manager.all().len();
    let out = server.cli(&["restart"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reloading = manager.wait_for(from, "RELOADING=1", 10);
    assert!(manager.all()[reloading].contains("MONOTONIC_USEC="));
    let ready = manager.wait_for(reloading, "READY=1", 30);
    let generation = server.status()["generation"].as_u64().unwrap();
    assert!(generation >= 2, "READY=1 before the restart ended");
    assert!(!server.status()["restarting"].as_bool().unwrap());

    // A restart whose code fails to load: READY=1 again at once, the old
    // workers serve on.
    std::fs::write(&flag, "").unwrap();
    let _ = server.cli(&["restart"]);
    let reloading = manager.wait_for(ready + 1, "RELOADING=1", 10);
    manager.wait_for(reloading, "READY=1", 10);
    assert_eq!(server.get("/").status, 200);

    // TERM: STOPPING=1.
    server.signal(libc::SIGTERM);
    server.wait_exit(30);
    let stopping = manager.wait_for(reloading, "STOPPING=1", 5);
    assert!(manager.all()[stopping].contains("STATUS=stopping"));
}

#[test]
fn no_watchdog_pings_without_watchdog_usec() {
    let manager = Manager::new();
    let server = start_with_env(
        &fixture("hello"),
        &[],
        &[("NOTIFY_SOCKET", manager.path.to_str().unwrap())],
    );
    manager.wait_for(0, "READY=1", 10);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(manager.count("WATCHDOG=1"), 0, "{:#?}", manager.all());
    drop(server);
}

/// Duplicates `fds` onto 3, 4, … in the child, as systemd passes them.
fn pass_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl,
    // dup2) on fds the parent keeps open for the child's start.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (above any target), close-on-exec, so
            // that placing one cannot overwrite another still to be placed.
            let mut high = Vec::new();
            for fd in &fds {
                let dup = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if dup < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(dup);
            }
            for (i, fd) in high.into_iter().enumerate() {
                // dup2 onto another number clears close-on-exec.
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[test]
fn socket_activation_serves_inherited_sockets_without_binding() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("app.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();
    // What rustrack would bind were the sockets not passed.
    let unbound_port = free_port();

    let registry = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be rustrack's PID, known only after the fork: the
    // shell sets it to its own, then execs rustrack, which keeps it.
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#, bin(), "start"])
        .arg(fixture("env"))
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            &unbound_port.to_string(),
        ])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "http:unix")
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path());
    pass_fds(&mut cmd, vec![tcp.as_raw_fd(), unix.as_raw_fd()]);
    let server = start_command(cmd, registry, 120);

    assert_eq!(server.port, port, "serving on the inherited socket");
    assert!(find_log(
        &server.logs,
        "socket activation: serving HTTP on 2 inherited"
    )
    .is_some());
    let env: serde_json::Value = serde_json::from_slice(&server.get("/").body).unwrap();
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        assert!(env.get(var).is_none(), "the app sees {var}: {env}");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", unbound_port)).is_err(),
        "rustrack bound --port itself"
    );
    let mut stream = UnixStream::connect(&unix_path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let response = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert_eq!(response.status, 200);

    // rustrack's fd 3 is the test's socket itself, and the only TCP
    // socket rustrack listens on.
    let link = |pid: &str, fd: RawFd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    let ours = link("self", tcp.as_raw_fd()).unwrap();
    assert_eq!(link(&server.pid.to_string(), 3).as_ref(), Some(&ours));
    assert_eq!(
        tcp_listening(server.pid),
        vec![ours.to_string_lossy().into_owned()]
    );

    // The socket file is systemd's: left in place at exit.
    drop(server);
    assert!(unix_path.exists());
}

/// The `socket:[INODE]` links of `pid`'s fds that are listening TCP
/// sockets (state 0A in /proc/net/tcp and tcp6).
fn tcp_listening(pid: u32) -> Vec<String> {
    let mut listening = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                listening.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    let mut links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| listening.contains(l))
        .collect();
    links.dedup();
    links
}

#[test]
fn socket_activation_refuses_a_socket_that_is_not_listening() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#, bin(), "start"])
        .arg(fixture("hello"))
        .args(["--address", "127.0.0.1", "--port", "0"])
        .env("LISTEN_FDS", "1")
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path());
    pass_fds(&mut cmd, vec![a.as_raw_fd()]);
    let (mut child, logs) = spawn_command(cmd);
    let (status, output) = wait_for_exit(&mut child, &logs, 30);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("socket activation: fd 3 (unknown): not a listening stream socket"),
        "{output}"
    );
}
