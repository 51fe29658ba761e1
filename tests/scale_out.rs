//! Behind a load balancer: the health check answered without Ruby, and
//! draining the way balancers expect on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_health_check_is_answered_without_a_worker() {
    let server = start(&fixture("events"), &["--health-check-path", "/up"]);
    let r = server.get("/up");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["workers_ready"], 1);
    assert_eq!(v["queue"], 0);
    assert_eq!(v["generation"], 1);
    let head = server.request("HEAD", "/up", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // Not an app request: no worker counted it, no access-log line at info.
    assert_eq!(server.status()["processed_total"], 0);
    // Other paths still go to the app.
    assert_eq!(server.get("/upx").status, 200);
    assert_eq!(server.status()["processed_total"], 1);
    // Access lines are written in order (in batches): once the later
    // request's line is there, a line for /up would be too.
    server.wait_until(5, "the access line of /upx", |s| {
        s.logs().contains("GET /upx 200")
    });
    let logs = server.logs();
    assert!(!logs.contains("GET /up 200"), "{logs}");
    assert!(!logs.contains("HEAD /up 200"), "{logs}");
}

#[test]
fn the_health_check_says_503_in_a_crash_loop() {
    let server = start_with_env(
        &fixture("events"),
        &["--health-check-path", "/up"],
        &[("EVENTS_CRASH_AFTER_START", "1")],
    );
    server.wait_until(30, "the crash loop", |s| {
        s.logs().contains("not respawning")
    });
    let r = server.get("/up");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "crash loop");
}

#[test]
fn sigterm_turns_the_health_check_503_first_and_serves_through_the_delay() {
    let mut server = start(
        &fixture("events"),
        &["--health-check-path", "/up", "--shutdown-delay", "2"],
    );
    assert_eq!(server.get("/up").status, 200);
    let stopped = Instant::now();
    server.signal(libc::SIGTERM);
    server.wait_until(5, "the health check to turn 503", |s| {
        s.get("/up").status == 503
    });
    assert_eq!(server.get("/up").json()["status"], "draining");
    // New connections are still accepted and served during the delay.
    let mut served = 0;
    while stopped.elapsed() < Duration::from_millis(1_500) {
        assert_eq!(server.get("/").status, 200);
        served += 1;
    }
    assert!(served > 0);
    let status = server.wait_exit(30);
    assert!(status.success(), "{status}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "exited before the delay: {:?}",
        stopped.elapsed()
    );
}

/// A connection accepted just before the listener closed, whose request
/// comes after the stop began (the race a balancer moving traffic away
/// hits), is still answered; hyper alone would close it unanswered.
#[test]
fn a_connection_that_sent_nothing_when_the_stop_began_gets_its_first_request_answered() {
    use std::io::Write;
    let mut server = start(&fixture("events"), &[]);
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A request on another connection first, so the silent one has surely
    // been accepted (one accept loop, in order) before the stop.
    assert_eq!(server.get("/").status, 200);
    server.signal(libc::SIGTERM);
    server.wait_until(5, "the listener to close", |s| {
        std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err()
    });
    silent
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(silent);
    let r = read_response(&mut reader).expect("an answer");
    assert_eq!(r.status, 200);
    // Then the server closes the connection: with `Connection: close` on
    // the response, or, when the request was read before the stop reached
    // the connection, as an idle keep-alive connection right after it.
    let mut rest = Vec::new();
    use std::io::Read;
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0, "{r:?}");
    assert!(server.wait_exit(30).success());
}

/// The events app on 127.0.0.1:`port`, which another instance may share
/// (`--reuse-port`), with an instance registry of its own.
fn start_on(port: u16, args: &[&str]) -> Server {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("start")
        .arg(fixture("events"))
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path());
    start_command(cmd, registry, 60)
}

fn raw(port: u16, bytes: &[u8]) -> std::io::Result<Response> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(bytes)?;
    read_response(&mut std::io::BufReader::new(s))
}

#[test]
fn a_proxy_header_names_the_client_only_from_a_trusted_proxy() {
    let request = b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\nGET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let trusted = start(
        &fixture("events"),
        &["--proxy-protocol", "--trusted-proxy", "127.0.0.1/32"],
    );
    let env = raw(trusted.port, request).unwrap().json();
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.9");
    assert_eq!(env["REMOTE_PORT"], "51000");
    // Without a header (a health check): served as it is.
    assert_eq!(trusted.get("/").status, 200);
    // From a peer that is not trusted, the header closes the connection.
    let untrusted = start(
        &fixture("events"),
        &["--proxy-protocol", "--trusted-proxy", "10.0.0.0/8"],
    );
    let r = raw(untrusted.port, request);
    assert!(r.is_err(), "{r:?}");
    // A malformed header too.
    let r = raw(
        trusted.port,
        b"PROXY TCP4 not an address\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.is_err(), "{r:?}");
    assert_eq!(untrusted.status()["processed_total"], 0);
}

/// Replacing a running instance with a new one (a new rustrack binary,
/// say) on the same port with --reuse-port, under load: no request fails.
#[test]
fn a_new_instance_takes_over_the_port_with_reuse_port_and_no_request_fails() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // Connections waiting in the old listener's queue when it closes move
    // to the new one instead of being reset (Linux 5.14+).
    let migrate = std::path::Path::new("/proc/sys/net/ipv4/tcp_migrate_req");
    if !optional_dep(
        std::fs::write(migrate, "1").is_ok(),
        "cannot set net.ipv4.tcp_migrate_req (needs root and Linux 5.14+)",
    ) {
        return;
    }
    let port = free_port();
    let args = [
        "--reuse-port",
        "--shutdown-delay",
        "1",
        "--min-instances",
        "2",
    ];
    let start_on_port = || start_on(port, &args);
    let mut old = start_on_port();
    // Outside the scope, so it outlives the clients' threads.
    let mut new = None;
    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), std::sync::Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    match raw(
                        port,
                        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    ) {
                        Ok(r) if r.status == 200 => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failed.lock().unwrap().push(r.status.to_string()),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
        wait_for(20, "traffic to the old instance", || {
            served.load(Ordering::SeqCst) >= 50
        });
        new = Some(start_on_port());
        old.signal(libc::SIGTERM);
        assert!(old.wait_exit(30).success());
        let before = served.load(Ordering::SeqCst);
        wait_for(20, "traffic to the new instance", || {
            served.load(Ordering::SeqCst) >= before + 50
        });
    });
    let new = new.unwrap();
    assert!(new.status()["processed_total"].as_u64() >= Some(50));
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// An upgrade in place: with a successor on the same `--reuse-port` port,
/// the old instance must not fail the health check (a balancer knows the
/// port, not the process) nor wait out `--shutdown-delay`; without one, it
/// drains as usual.
#[test]
fn with_a_successor_on_the_port_the_old_instance_stays_healthy_and_leaves_at_once() {
    let port = free_port();
    let start_on_port = || {
        start_on(
            port,
            &[
                "--reuse-port",
                "--health-check-path",
                "/up",
                "--shutdown-delay",
                "6",
            ],
        )
    };
    let mut old = start_on_port();
    let new = start_on_port();
    let stopped = Instant::now();
    old.signal(libc::SIGTERM);
    // Checks land on either process while the old one stops: all 200.
    while old.child.as_mut().unwrap().try_wait().unwrap().is_none() {
        let r = raw(
            port,
            b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", old.logs());
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the old instance waited out the delay"
        );
    }
    assert!(old.wait_exit(5).success());
    assert!(old.logs().contains("takes over"), "{}", old.logs());
    // The last one on the port drains the usual way: 503 first.
    let mut new = new;
    new.signal(libc::SIGTERM);
    new.wait_until(5, "the health check to turn 503", |s| {
        raw(
            s.port,
            b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_ok_and(|r| r.status == 503)
    });
    assert!(new.wait_exit(30).success());
}
