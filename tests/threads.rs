//! `--threads-per-worker`: a worker serving several requests at once, each
//! on its own Ruby thread, against the real binary and real Ruby.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

fn app() -> std::path::PathBuf {
    fixture("threads")
}

/// `pid=P thread=NAME multithread=B multiprocess=B` → its fields.
fn fields(r: &Response) -> HashMap<String, String> {
    r.text()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pid_of(r: &Response) -> u32 {
    fields(r)["pid"].parse().unwrap()
}

/// Requests in progress on every worker, from `rustrack status`.
fn sessions(server: &Server) -> u64 {
    server.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["sessions"].as_u64().unwrap())
        .sum()
}

#[test]
fn four_sleeping_requests_run_at_once_on_one_worker_with_four_threads() {
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "4",
            "--min-instances",
            "1",
            "--max-pool-size",
            "1",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    let started = Instant::now();
    let responses = concurrent_gets(&server, "/sleep?s=0.5", 4);
    let took = started.elapsed();
    for r in &responses {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
    }
    // One after the other they would take 2 s: the GVL is free while a
    // thread sleeps or waits for its next request.
    assert!(
        took < Duration::from_millis(1500),
        "4 x 0.5 s took {took:?}"
    );
    let pids: HashSet<u32> = responses.iter().map(pid_of).collect();
    assert_eq!(pids.len(), 1, "one worker served them all");
    let threads: HashSet<String> = responses
        .iter()
        .map(|r| fields(r)["thread"].clone())
        .collect();
    assert_eq!(threads.len(), 4, "each on its own thread: {threads:?}");
    assert!(
        threads.iter().all(|t| t.starts_with("rustrack")),
        "{threads:?}"
    );
    assert_eq!(fields(&responses[0])["multithread"], "true");
    assert_eq!(fields(&responses[0])["multiprocess"], "true");
    // The worker runs exactly its request threads besides the main one.
    let list = server.get("/threads").text();
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(server.status()["threads_per_worker"], 4);
}

/// Request threads start together, and each first makes its session's
/// `Rustrack::ResponseWriter`. Ruby may switch threads in the middle of
/// any call (its timer does, at random; the fixture's slow `const_get`
/// does, every time): if the writer's class were still being looked up
/// then, a second thread would wait for that lookup holding the GVL, the
/// first could never finish it, and the worker would hang unanswered
/// (seen as a 504 after --worker-timeout, once in a CI run).
#[test]
fn request_threads_starting_together_do_not_deadlock_on_a_ruby_lookup() {
    let server = start_with_env(
        &app(),
        &[
            "--threads-per-worker",
            "3",
            "--max-pool-size",
            "1",
            "--worker-timeout",
            "10",
        ],
        &[("THREADS_SLOW_CONST_GET", "1")],
    );
    wait_for_ready_workers(&server, 1, 60);
    let started = Instant::now();
    let responses = concurrent_gets(&server, "/sleep?s=0.1", 3);
    for r in &responses {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn with_one_thread_the_env_says_single_threaded_and_requests_take_turns() {
    let server = start(&app(), &["--max-pool-size", "1"]);
    wait_for_ready_workers(&server, 1, 60);
    let started = Instant::now();
    let responses = concurrent_gets(&server, "/sleep?s=0.3", 2);
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(responses.iter().all(|r| r.status == 200));
    assert_eq!(fields(&responses[0])["multithread"], "false");
    let list = server.get("/threads").text();
    assert_eq!(list.lines().collect::<Vec<_>>(), vec!["main"]);
}

#[test]
fn sessions_are_counted_per_worker_and_requests_go_to_the_least_busy() {
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "2",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
        ],
    );
    wait_for_ready_workers(&server, 2, 60);
    std::thread::scope(|s| {
        let first = s.spawn(|| server.get("/sleep?s=2"));
        server.wait_until(10, "one request in progress", |s| sessions(s) == 1);
        // The other worker has no session in use: it gets the next one.
        let second = s.spawn(|| server.get("/sleep?s=2"));
        server.wait_until(10, "two requests in progress", |s| sessions(s) == 2);
        let status = server.status();
        let per_worker: Vec<u64> = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["sessions"].as_u64().unwrap())
            .collect();
        assert_eq!(per_worker, vec![1, 1], "{status:#}");
        // A worker with a session free is ready, not busy.
        assert_eq!(server.worker_states(), vec!["ready", "ready"]);
        // Two more fill both workers: busy.
        let third = s.spawn(|| server.get("/sleep?s=1"));
        let fourth = s.spawn(|| server.get("/sleep?s=1"));
        server.wait_until(10, "four requests in progress", |s| sessions(s) == 4);
        assert_eq!(server.worker_states(), vec!["busy", "busy"]);
        let table = String::from_utf8(server.cli(&["status"]).stdout).unwrap();
        assert!(table.contains("Threads / worker : 2"), "{table}");
        assert!(table.contains("2/2"), "{table}");
        let (a, b) = (first.join().unwrap(), second.join().unwrap());
        assert_ne!(pid_of(&a), pid_of(&b), "spread over both workers");
        assert_eq!(third.join().unwrap().status, 200);
        assert_eq!(fourth.join().unwrap().status, 200);
    });
}

#[test]
fn many_concurrent_requests_each_get_their_own_body_back() {
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "4",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
        ],
    );
    wait_for_ready_workers(&server, 2, 60);
    let mismatches = Mutex::new(Vec::new());
    let served = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for client in 0..12u32 {
            let (server, mismatches, served) = (&server, &mismatches, &served);
            s.spawn(move || {
                for i in 0..25u32 {
                    // Distinct bodies of many sizes, a few past the 1 MiB
                    // in-memory buffer (sent to the worker as a file).
                    let size = match (client * 25 + i) % 10 {
                        0 => 1_300_000,
                        n => (n as usize) * 7919 + client as usize,
                    };
                    let tag = format!("{client}-{i}");
                    let body: Vec<u8> = (0..size)
                        .map(|k| (k as u32 ^ client.wrapping_mul(31) ^ i) as u8)
                        .collect();
                    let r = server.request("POST", "/echo", &[("X-Tag", &tag)], &body);
                    if r.status != 200 || r.header("x-tag") != Some(tag.as_str()) || r.body != body
                    {
                        mismatches.lock().unwrap().push(format!(
                            "{tag}: status {} tag {:?}, {} bytes back for {}",
                            r.status,
                            r.header("x-tag"),
                            r.body.len(),
                            body.len()
                        ));
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let mismatches = mismatches.into_inner().unwrap();
    assert!(mismatches.is_empty(), "{mismatches:#?}\n{}", server.logs());
    assert_eq!(served.load(Ordering::SeqCst), 300);
    assert!(
        !server.logs().contains("[rustrack] error"),
        "{}",
        server.logs()
    );
}

#[test]
fn a_slow_stream_on_one_thread_does_not_hold_up_the_others() {
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "2",
            "--min-instances",
            "1",
            "--max-pool-size",
            "1",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /stream?n=6&delay=0.4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    // The head and the first chunk arrive at once...
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    // ...and while the rest trickles out, the worker's other thread serves
    // request after request.
    let started = Instant::now();
    for _ in 0..10 {
        let r = server.get("/");
        assert_eq!(r.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "10 requests beside the stream took {:?}",
        started.elapsed()
    );
    assert!(sessions(&server) >= 1, "the stream is still going");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    for i in 0..6 {
        assert!(text.contains(&format!("chunk {i}\n")), "{text}");
    }
}

#[test]
fn a_timed_out_request_is_interrupted_and_the_worker_finishes_its_other_requests() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("ensure");
    let server = start_with_env(
        &app(),
        &[
            "--threads-per-worker",
            "4",
            "--worker-timeout",
            "3",
            "--min-instances",
            "1",
            "--max-pool-size",
            "2",
        ],
        &[("THREADS_MARKER", marker.to_str().unwrap())],
    );
    wait_for_ready_workers(&server, 1, 60);
    let worker = server.worker_pids()[0];
    std::thread::scope(|s| {
        let started = Instant::now();
        let stuck = s.spawn(|| server.get("/slow?s=30"));
        server.wait_until(10, "the slow request to start", |s| sessions(s) == 1);
        // Starts 1 s later and needs 2.8 s: still running when the slow
        // one times out, and within its own timeout.
        std::thread::sleep(Duration::from_secs(1));
        let other = s.spawn(|| server.get("/sleep?s=2.8"));
        let stuck = stuck.join().unwrap();
        let timed_out_after = started.elapsed();
        assert_eq!(stuck.status, 504, "{}", stuck.text());
        assert!(
            timed_out_after < Duration::from_secs(8),
            "{timed_out_after:?}"
        );
        // The worker takes no new request meanwhile: a replacement serves it.
        let fresh = server.get("/");
        assert_eq!(fresh.status, 200);
        assert_ne!(pid_of(&fresh), worker, "{}", server.logs());
        // The other request on the same worker finishes normally.
        let other = other.join().unwrap();
        assert_eq!(other.status, 200, "{}\n{}", other.text(), server.logs());
        assert_eq!(pid_of(&other), worker);
    });
    // The stuck request was interrupted (its ensure block ran), then the
    // worker left once its other request was done.
    server.wait_until(10, "the worker to be retired", |_| !alive(worker));
    let ensured = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(
        ensured.trim(),
        format!("ensure {worker}"),
        "{}",
        server.logs()
    );
    assert_eq!(server.status()["worker_restarts"]["timeout"], 1);
    let logs = server.logs();
    assert!(logs.contains("Rustrack::RequestTimeout"), "{logs}");
    assert!(logs.contains("interrupted it"), "{logs}");
}

#[test]
fn a_timed_out_request_that_cannot_be_interrupted_costs_the_worker_at_once() {
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "4",
            "--worker-timeout",
            "8",
            "--min-instances",
            "1",
            "--max-pool-size",
            "2",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    let worker = server.worker_pids()[0];
    std::thread::scope(|s| {
        let stuck = s.spawn(|| server.get("/stuck?s=60"));
        server.wait_until(10, "the stuck request to start", |s| sessions(s) == 1);
        // Within its own timeout (7 s of 8), but still running when the
        // stuck one's timeout (8 s) and grace (3 s) are over.
        std::thread::sleep(Duration::from_secs(6));
        let started = Instant::now();
        let other = s.spawn(|| server.get("/sleep?s=7"));
        assert_eq!(stuck.join().unwrap().status, 504);
        // The stuck one defers Thread#raise: after the grace the worker is
        // stopped, with the other request on it.
        let other = other.join().unwrap();
        assert_eq!(other.status, 502, "{}\n{}", other.text(), server.logs());
        assert!(
            started.elapsed() < Duration::from_millis(6500),
            "{:?}",
            started.elapsed()
        );
    });
    server.wait_until(10, "the worker to be gone", |_| !alive(worker));
    assert_eq!(server.get("/").status, 200);
    assert!(
        server.logs().contains("could not be interrupted"),
        "{}",
        server.logs()
    );
}

#[test]
fn sigterm_lets_every_request_in_flight_finish_then_joins_the_threads() {
    let mut server = start(
        &app(),
        &[
            "--threads-per-worker",
            "4",
            "--min-instances",
            "1",
            "--max-pool-size",
            "1",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    let worker = server.worker_pids()[0];
    let responses = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| server.get("/sleep?s=1.5")))
            .collect();
        server.wait_until(10, "four requests in progress", |s| sessions(s) == 4);
        server.signal(libc::SIGTERM);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for r in &responses {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
    }
    assert!(server.wait_exit(30).success());
    assert!(!alive(worker));
}

#[test]
fn term_sent_to_a_worker_finishes_its_requests_and_it_is_replaced() {
    let stop_dir = tempfile::tempdir().unwrap();
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "3",
            "--min-instances",
            "1",
            "--max-pool-size",
            "2",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    let worker = server.worker_pids()[0];
    let _ = stop_dir;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| server.get("/sleep?s=1.5")))
            .collect();
        server.wait_until(10, "two requests in progress", |s| sessions(s) == 2);
        kill(worker, libc::SIGTERM);
        for h in handles {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
            assert_eq!(pid_of(&r), worker);
        }
    });
    server.wait_until(10, "the worker to exit", |_| !alive(worker));
    server.wait_until(20, "a replacement", |s| {
        s.ready_count() == 1 && s.worker_pids() != vec![worker]
    });
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_ne!(pid_of(&r), worker);
}

#[test]
fn exit_inside_a_request_lets_the_other_requests_finish() {
    let server = start(
        &app(),
        &[
            "--threads-per-worker",
            "2",
            "--min-instances",
            "1",
            "--max-pool-size",
            "2",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    let worker = server.worker_pids()[0];
    std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/sleep?s=1.5"));
        server.wait_until(10, "one request in progress", |s| sessions(s) == 1);
        let exiting = server.get("/exit");
        assert_eq!(exiting.status, 500, "{}", exiting.text());
        let slow = slow.join().unwrap();
        assert_eq!(slow.status, 200, "{}\n{}", slow.text(), server.logs());
        assert_eq!(pid_of(&slow), worker);
    });
    server.wait_until(10, "the worker to exit", |_| !alive(worker));
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_refork_joins_the_request_threads_before_the_worker_becomes_the_mold() {
    let server = start(
        &fixture("refork"),
        &[
            "--threads-per-worker",
            "4",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
            "--refork-after",
            "30",
        ],
    );
    wait_for_ready_workers(&server, 2, 60);
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        for _ in 0..6 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let r = server.get("/sleep?s=0.02");
                    if r.status != 200 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text()));
                    }
                }
            });
        }
        server.wait_until(60, "a refork and its workers", |s| {
            let status = s.status();
            status["reforks"] == 1
                && status["template"]["kind"] == "mold"
                && !status["restarting"].as_bool().unwrap()
                && s.ready_count() == 2
        });
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:?}\n{}", server.logs());
    let status = server.status();
    let mold = status["template"]["pid"].as_u64().unwrap() as u32;
    // Forking with live threads is forbidden: the mold runs one thread.
    let tasks = std::fs::read_dir(format!("/proc/{mold}/task"))
        .unwrap()
        .count();
    assert_eq!(tasks, 1, "the mold has {tasks} threads");
    // Its children serve with four threads again.
    let r = server.get("/");
    assert_eq!(r.json()["ppid"].as_u64().unwrap() as u32, mold);
    let pid = r.json()["pid"].as_u64().unwrap() as u32;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(tasks >= 5, "a child of the mold runs {tasks} threads");
}

#[test]
fn an_app_thread_stops_a_refork_without_stopping_the_request_threads() {
    let server = start_with_env(
        &fixture("refork"),
        &[
            "--threads-per-worker",
            "2",
            "--min-instances",
            "1",
            "--max-pool-size",
            "1",
            "--refork-after",
            "3",
        ],
        &[("REFORK_THREAD", "1")],
    );
    wait_for_ready_workers(&server, 1, 60);
    let worker = server.worker_pids()[0];
    for _ in 0..6 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_until(20, "the refusal to be logged", |s| {
        s.logs().contains("app-poller")
    });
    // Still serving two at once on the same process.
    let started = Instant::now();
    let responses = concurrent_gets(&server, "/sleep?s=0.5", 2);
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(server.worker_pids(), vec![worker]);
    assert_eq!(server.status()["reforks"], 0);
    let logs = server.logs();
    assert!(
        !logs.contains("rustrack request"),
        "request threads blamed:\n{logs}"
    );
}
