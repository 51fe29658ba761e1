//! The front end's event loops (`--threads N`, `front/event_loops.rs`):
//! every loop accepts on every listener, a worker's connection follows the
//! request it is lent to from loop to loop, and a worker that died while
//! idle costs no request whichever loop holds its connection. Against the
//! real binary; `pool/conn.rs` tests what a moved connection sees.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The names of the front end's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Sends `n` keep-alive GETs of `path` on one connection and returns the
/// bodies; panics on anything but 200.
fn keep_alive_gets(port: u16, path: &str, n: usize) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    (0..n)
        .map(|_| {
            write!(writer, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let r = read_response(&mut reader).expect("a response");
            assert_eq!(r.status, 200, "{}", r.text());
            r.text()
        })
        .collect()
}

/// Many connections at once, each with a few keep-alive requests; returns
/// every body.
fn load(port: u16, connections: usize, each: usize) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|_| s.spawn(move || keep_alive_gets(port, "/", each)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn loops_share_workers_and_moved_connections_still_notice_a_dead_worker() {
    let server = start(
        &fixture("edges"),
        &[
            "--threads",
            "3",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
            "--log-level",
            "info,rustrack::pool=debug",
        ],
    );
    let names = thread_names(server.pid);
    for loop_name in ["rustrack-loop-1", "rustrack-loop-2"] {
        assert!(
            names.iter().any(|n| n == loop_name),
            "no thread {loop_name} in {names:?}"
        );
    }
    // Which loop accepts a connection is the kernel's choice: load until a
    // worker's connection was lent to a request on another loop than the
    // one that last used it.
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..30 {
        for body in load(server.port, 12, 10) {
            pids.insert(body.trim().parse::<u32>().expect("a pid"));
        }
        if server
            .logs()
            .contains("worker connection moved event loops")
        {
            break;
        }
    }
    assert!(
        server
            .logs()
            .contains("worker connection moved event loops"),
        "no worker connection ever moved between 3 loops"
    );
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");

    // A worker killed while idle: whichever loop its connection is on
    // (moved or not), the next request to pick it finds it closed and
    // goes to the other worker instead of failing.
    let victim = *pids.iter().next().unwrap();
    kill(victim, libc::SIGKILL);
    wait_for(10, "the killed worker to exit", || !alive(victim));
    let bodies = load(server.port, 6, 5);
    assert_eq!(bodies.len(), 30);
    assert!(bodies.iter().all(|b| b.trim() != victim.to_string()));
    server.wait_until(30, "a replacement worker", |s| s.ready_count() == 2);
    let after: std::collections::BTreeSet<u32> = load(server.port, 12, 10)
        .iter()
        .map(|b| b.trim().parse().unwrap())
        .collect();
    assert!(!after.contains(&victim));
}
