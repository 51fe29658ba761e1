//! The core server, end to end: the real binary, real Ruby, real HTTP.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

#[test]
fn smart_spawning_serves_and_fires_the_event_with_true_in_the_worker() {
    let server = start(&fixture("events"), &[]);
    let body = server.get("/").json();
    let pid = body["pid"].as_u64().unwrap();
    assert_eq!(
        body["events"],
        serde_json::json!([{ "forked": true, "pid": pid }])
    );
    assert_eq!(body["rustrack_defined"], true);
    assert_eq!(body["rack_env"], "development");
    assert_eq!(body["cwd"], fixture("events").to_str().unwrap());
    // The worker is a child of the preloader, which loaded the app (its
    // boot PID), and the preloader is a child of the front end.
    let status = server.status();
    let preloader = status["preloader_pid"].as_u64().unwrap();
    assert_eq!(body["ppid"].as_u64().unwrap(), preloader);
    assert_eq!(body["boot_pid"].as_u64().unwrap(), preloader);
    assert_eq!(ppid_of(preloader as u32), Some(server.pid));
    let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        title.starts_with("rustrack worker 1 (events)"),
        "title {title:?}"
    );
}

#[test]
fn direct_spawning_fires_the_event_with_false() {
    let server = start(&fixture("events"), &["--spawn-method", "direct"]);
    let body = server.get("/").json();
    let pid = body["pid"].as_u64().unwrap();
    assert_eq!(
        body["events"],
        serde_json::json!([{ "forked": false, "pid": pid }])
    );
    // A direct worker loaded the app itself and is the front end's child.
    assert_eq!(body["boot_pid"].as_u64().unwrap(), pid);
    assert_eq!(body["ppid"].as_u64().unwrap(), server.pid as u64);
    assert!(server.status()["preloader_pid"].is_null());
}

#[test]
fn busy_workers_make_the_pool_grow_to_max_pool_size() {
    let server = start(&fixture("events"), &["--max-pool-size", "3"]);
    let responses = concurrent_gets(&server, "/sleep?s=1.5", 6);
    assert!(responses.iter().all(|r| r.status == 200), "{responses:?}");
    let pids: HashSet<String> = responses
        .iter()
        .map(|r| r.text().split_whitespace().last().unwrap().to_string())
        .collect();
    assert_eq!(pids.len(), 3, "requests ran in {pids:?}");
    assert_eq!(server.status()["processes"], 3);
}

#[test]
fn a_killed_worker_is_replaced_and_serving_continues() {
    let server = start(&fixture("events"), &[]);
    let first = server.get("/").json()["pid"].as_u64().unwrap() as u32;
    kill(first, libc::SIGKILL);
    server.wait_until(10, "a replacement worker", |s| {
        let pids = s.worker_pids();
        !pids.is_empty() && !pids.contains(&first)
    });
    for _ in 0..5 {
        let r = server.get("/");
        assert_eq!(r.status, 200, "{}", server.logs());
        assert_ne!(r.json()["pid"].as_u64().unwrap() as u32, first);
    }
    assert!(
        server.logs().contains("killed by SIGKILL"),
        "{}",
        server.logs()
    );
}

#[test]
fn the_request_in_flight_on_a_killed_worker_gets_502_and_the_next_succeeds() {
    the_request_in_flight_on_a_killed_worker_gets_502_and_the_next_succeeds_with(&[]);
}

#[test]
fn the_request_in_flight_on_a_killed_worker_gets_502_and_the_next_succeeds_with_four_threads() {
    the_request_in_flight_on_a_killed_worker_gets_502_and_the_next_succeeds_with(FOUR_THREADS);
}

fn the_request_in_flight_on_a_killed_worker_gets_502_and_the_next_succeeds_with(threads: &[&str]) {
    let server = start(&fixture("events"), threads);
    wait_for_ready_workers(&server, 1, 30);
    let pid = server.worker_pids()[0];
    std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/sleep?s=5"));
        // Kill it once the request is on it, not before.
        server.wait_until(10, "the worker to be busy with the request", |s| {
            s.in_progress() == 1
        });
        kill(pid, libc::SIGKILL);
        assert_eq!(slow.join().unwrap().status, 502);
    });
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn an_exception_in_the_app_gives_500_and_the_worker_lives_on() {
    an_exception_in_the_app_gives_500_and_the_worker_lives_on_with(&[]);
}

#[test]
fn an_exception_in_the_app_gives_500_and_the_worker_lives_on_with_four_threads() {
    an_exception_in_the_app_gives_500_and_the_worker_lives_on_with(FOUR_THREADS);
}

fn an_exception_in_the_app_gives_500_and_the_worker_lives_on_with(threads: &[&str]) {
    let server = start(&fixture("events"), threads);
    let before = server.get("/").json()["pid"].as_u64().unwrap();
    let r = server.get("/raise");
    assert_eq!(r.status, 500);
    assert_eq!(server.get("/").json()["pid"].as_u64().unwrap(), before);
    let logs = server.logs();
    assert!(
        logs.contains("RuntimeError: boom from the events fixture"),
        "{logs}"
    );
    assert!(logs.contains("config.ru:"), "backtrace missing: {logs}");
}

fn assert_broken_fixture_fails(extra: &[&str]) {
    let (mut child, _registry, logs) = spawn(&fixture("broken"), extra, &[]);
    let (status, out) = wait_for_exit(&mut child, &logs, 60);
    assert!(!status.success(), "exit status {status}: {out}");
    assert!(
        out.contains("ArgumentError: broken fixture: settings are missing"),
        "{out}"
    );
    assert!(
        out.contains("config.ru:4:in `load_settings'"),
        "no backtrace: {out}"
    );
}

#[test]
fn a_broken_config_ru_exits_non_zero_with_the_exception_under_smart() {
    assert_broken_fixture_fails(&[]);
}

#[test]
fn a_broken_config_ru_exits_non_zero_with_the_exception_under_direct() {
    assert_broken_fixture_fails(&["--spawn-method", "direct"]);
}

#[test]
fn sigterm_stops_every_process_and_removes_the_instance() {
    let mut server = start(&fixture("events"), &["--min-instances", "2"]);
    server.wait_until(10, "two workers", |s| s.worker_pids().len() == 2);
    let preloader = server.status()["preloader_pid"].as_u64().unwrap() as u32;
    let workers = server.worker_pids();
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(30).success());
    for pid in workers.iter().chain([preloader].iter()) {
        assert!(!alive(*pid), "pid {pid} survived");
    }
    assert!(!server.instance.exists(), "instance directory left behind");
}

#[test]
fn sigint_stops_everything_and_workers_fire_stopping_worker_process() {
    let dir = tempfile::tempdir().unwrap();
    let stop_file = dir.path().join("stopped");
    let mut server = start_with_env(
        &fixture("events"),
        &["--min-instances", "2"],
        &[("EVENTS_STOP_FILE", stop_file.to_str().unwrap())],
    );
    server.wait_until(10, "two workers", |s| s.worker_pids().len() == 2);
    let workers = server.worker_pids();
    server.signal(libc::SIGINT);
    assert!(server.wait_exit(30).success());
    let stopped: Vec<u32> = std::fs::read_to_string(&stop_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut stopped_sorted = stopped.clone();
    stopped_sorted.sort();
    assert_eq!(stopped_sorted, workers);
    assert!(workers.iter().all(|p| !alive(*p)));
}

#[test]
fn smart_workers_share_memory_with_the_preloader_and_direct_ones_do_not() {
    let args = ["--min-instances", "3", "--max-pool-size", "3"];
    let mut per_worker = Vec::new();
    for method in ["smart", "direct"] {
        let mut a = args.to_vec();
        a.extend(["--spawn-method", method]);
        let server = start(&fixture("bloat"), &a);
        wait_for_ready_workers(&server, 3, 60);
        for _ in 0..30 {
            assert_eq!(server.get("/").status, 200);
        }
        let pids = server.worker_pids();
        let dirty: Vec<u64> = pids.iter().map(|p| private_dirty(*p)).collect();
        per_worker.push(dirty.iter().sum::<u64>() / dirty.len() as u64);
    }
    let (smart, direct) = (per_worker[0], per_worker[1]);
    eprintln!(
        "private dirty per worker: smart {} KB, direct {} KB",
        smart / 1024,
        direct / 1024
    );
    assert!(
        direct > 50 << 20,
        "the bloat app should dirty >50 MB when booted directly ({direct})"
    );
    assert!(
        smart * 3 < direct,
        "smart {smart} is not well under direct {direct}"
    );
}

#[test]
fn the_preloaders_heap_goes_into_huge_pages_and_workers_still_share_it() {
    // Transparent huge pages are a setting of the host kernel, which a CI
    // machine (a container on someone else's kernel) may have off or lack,
    // and no package installs: a loud skip even under CI=true, not a
    // failure.
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !optional_dep(
        !thp.is_empty() && !thp.contains("[never]"),
        "transparent huge pages are off or missing on this kernel \
         (/sys/kernel/mm/transparent_hugepage/enabled)",
    ) {
        return;
    }
    let args = ["--min-instances", "2", "--max-pool-size", "2"];
    let server = start(&fixture("bloat"), &args);
    wait_for_ready_workers(&server, 2, 60);
    for _ in 0..30 {
        assert_eq!(server.get("/").status, 200);
    }
    let preloader = server.status()["preloader_pid"].as_u64().unwrap() as u32;
    let huge = smaps_field(preloader, "AnonHugePages");
    let rss = smaps_field(preloader, "Rss");
    assert!(
        huge > 100 << 20,
        "the bloat preloader should hold >100 MB in huge pages, has {huge} of {rss}\n{}",
        server.logs()
    );
    assert!(
        server.logs().contains("MB in huge pages"),
        "{}",
        server.logs()
    );
    // `status` shows it too, for the text and the JSON reader.
    let status = server.status();
    assert!(status["preloader_memory"]["anon_huge"].as_u64().unwrap() > 100 << 20);
    let text = server.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("in huge pages"), "{text}");
    // Copy-on-write stays per 4 KB page: a worker that wrote to the shared
    // heap copied a few pages, not whole 2 MB huge pages.
    for pid in server.worker_pids() {
        let dirty = private_dirty(pid);
        assert!(
            dirty * 4 < rss,
            "worker {pid} has {dirty} private dirty of a {rss} preloader"
        );
    }
    drop(server);

    let mut off = args.to_vec();
    off.extend(["--preload-hugepages", "false"]);
    let server = start(&fixture("bloat"), &off);
    wait_for_ready_workers(&server, 2, 60);
    let preloader = server.status()["preloader_pid"].as_u64().unwrap() as u32;
    assert_eq!(smaps_field(preloader, "AnonHugePages"), 0);
}

#[test]
fn workers_get_different_random_seeds() {
    let server = start(
        &fixture("events"),
        &["--min-instances", "3", "--max-pool-size", "3"],
    );
    wait_for_ready_workers(&server, 3, 30);
    // Hold two workers busy so the third request lands elsewhere.
    let values: HashSet<String> = std::thread::scope(|s| {
        let sleepers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| server.get("/sleep?s=1")))
            .collect();
        server.wait_until(10, "two busy workers", |s| s.busy_count() == 2);
        let mut v: Vec<String> = vec![server.get("/rand").text()];
        for h in sleepers {
            h.join().unwrap();
        }
        v.extend(
            concurrent_gets(&server, "/rand", 3)
                .into_iter()
                .map(|r| r.text()),
        );
        v.into_iter().collect()
    });
    assert!(
        values.len() >= 2,
        "every worker returned the same rand: {values:?}"
    );
}

#[test]
fn status_reports_the_pool() {
    let server = start(&fixture("events"), &["--min-instances", "2"]);
    server.wait_until(10, "two workers", |s| s.worker_pids().len() == 2);
    for _ in 0..7 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_processed(10, 7);
    let status = server.status();
    assert_eq!(status["max_pool_size"], 6);
    assert_eq!(status["processes"], 2);
    assert_eq!(status["requests_in_queue"], 0);
    assert_eq!(status["spawn_method"], "smart");
    let workers = status["workers"].as_array().unwrap();
    let processed: u64 = workers
        .iter()
        .map(|w| w["processed"].as_u64().unwrap())
        .sum();
    assert_eq!(processed, 7);
    for w in workers {
        let pid = w["pid"].as_u64().unwrap() as u32;
        assert!(alive(pid));
        assert_eq!(w["spawn_method"], "smart");
        assert!(w["uptime_secs"].as_f64().unwrap() >= 0.0);
        assert!(w["last_used_secs_ago"].is_number());
    }
    // The text form names the processes too.
    let out = server.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Max pool size    : 6"), "{text}");
    for w in workers {
        assert!(text.contains(&w["pid"].to_string()), "{text}");
    }
}

#[test]
fn status_finds_the_instance_from_the_app_root() {
    let server = start(&fixture("hello"), &[]);
    let out = std::process::Command::new(bin())
        .args(["status", "--json"])
        .current_dir(fixture("hello"))
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", server.registry.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pid"], server.pid);
}

#[test]
fn a_full_queue_gets_503_with_retry_after() {
    let server = start(
        &fixture("events"),
        &["--max-pool-size", "1", "--max-request-queue-size", "1"],
    );
    let responses = concurrent_gets(&server, "/sleep?s=1", 4);
    let rejected: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    let served = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(served, 2, "{responses:?}");
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].header("retry-after"), Some("1"));
}

#[test]
fn large_bodies_reach_rack_input_intact_through_a_temp_file() {
    let server = start(&fixture("events"), &[]);
    let small = b"small body".to_vec();
    let r = server.request("POST", "/echo", &[], &small);
    assert_eq!(r.body, small);
    assert_eq!(r.header("x-input-class"), Some("StringIO"));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = server.request("POST", "/echo", &[], &big);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-input-class"), Some("File"));
    assert!(
        r.body == big,
        "body differs ({} vs {} bytes)",
        r.body.len(),
        big.len()
    );
    // The spilled file is gone once the request is over.
    let bodies = server.instance.join("bodies");
    assert_eq!(std::fs::read_dir(bodies).unwrap().count(), 0);
}

#[test]
fn bodies_over_max_body_size_get_413() {
    let server = start(&fixture("events"), &["--max-body-size", "1000"]);
    let r = server.request("POST", "/echo", &[], &[b'x'; 2000]);
    assert_eq!(r.status, 413);
    let chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n";
    let mut raw = chunked.to_vec();
    raw.extend_from_slice(&[b'y'; 2000]);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(server.raw(&raw).status, 413);
}

#[test]
fn streaming_bodies_arrive_in_chunks() {
    streaming_bodies_arrive_in_chunks_with(&[]);
}

#[test]
fn streaming_bodies_arrive_in_chunks_with_four_threads() {
    streaming_bodies_arrive_in_chunks_with(FOUR_THREADS);
}

fn streaming_bodies_arrive_in_chunks_with(threads: &[&str]) {
    let server = start(&fixture("events"), threads);
    let r = server.get("/stream");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("http.sock");
    let server = start(&fixture("hello"), &["--socket", sock.to_str().unwrap()]);
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    use std::io::Write;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello world\n"));
    drop(server);
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn keep_alive_connections_serve_many_requests() {
    let server = start(&fixture("hello"), &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    use std::io::Write;
    for _ in 0..20 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.text(), "Hello world\n");
    }
}

#[test]
fn a_killed_front_end_takes_its_processes_along_and_its_directory_is_cleaned_later() {
    let mut server = start(&fixture("events"), &["--min-instances", "2"]);
    server.wait_until(10, "two workers", |s| s.worker_pids().len() == 2);
    let mut pids = server.worker_pids();
    pids.push(server.status()["preloader_pid"].as_u64().unwrap() as u32);
    server.signal(libc::SIGKILL);
    server.wait_exit(10);
    // Workers and preloader see EOF on their sockets and exit by themselves.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pids.iter().all(|p| !alive(*p)), "orphans left behind");
    assert!(server.instance.exists());
    // The next start in the same registry removes the stale directory.
    let next = start_with_env(
        &fixture("hello"),
        &[],
        &[(
            "RUSTRACK_INSTANCE_REGISTRY_DIR",
            server.registry.path().to_str().unwrap(),
        )],
    );
    assert!(!server.instance.exists(), "stale instance directory kept");
    drop(next);
}

#[test]
fn a_client_leaving_mid_request_does_not_cost_the_worker() {
    use std::io::{Read, Write};
    let server = start(&fixture("events"), &["--max-pool-size", "1"]);
    wait_for_ready_workers(&server, 1, 30);
    let pid = server.worker_pids()[0];
    for (done, path) in ["/sleep?s=0.5", "/stream"].into_iter().enumerate() {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        // Leave while the worker is on the request: /sleep once the pool
        // says the worker is busy, /stream once its first chunk arrived
        // (two more follow, 50 ms apart).
        if path == "/stream" {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("chunk 0") {
                let n = s.read(&mut buf).expect("the first chunk of /stream");
                assert!(n > 0, "closed before the first chunk: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
        } else {
            server.wait_until(10, &format!("the worker to take {path}"), |s| {
                s.busy_count() == 1
            });
        }
        drop(s);
        // The worker finishes the abandoned request and is free again.
        server.wait_until(10, &format!("the abandoned {path} to finish"), |s| {
            s.processed_total() > done as u64 && s.worker_states() == ["ready"]
        });
    }
    // The same worker serves on.
    for _ in 0..3 {
        let r = server.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["pid"].as_u64().unwrap() as u32, pid);
    }
    // Both abandoned requests were served to the end (their responses read
    // from the worker and dropped), and a third, abandoned while queued,
    // never reached a worker.
    std::thread::scope(|s| {
        // Long enough to see it busy and then the next request queued.
        let busy = s.spawn(|| server.get("/sleep?s=2"));
        server.wait_until(10, "the worker to be busy", |s| s.busy_count() == 1);
        let mut queued = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        queued
            .write_all(b"GET /raise HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        server.wait_until(10, "the second request to queue", |s| {
            s.status()["requests_in_queue"] == 1
        });
        drop(queued);
        assert_eq!(busy.join().unwrap().status, 200);
    });
    // Had the abandoned request been handed to the worker, it would be
    // busy with it or done (processed_total 7) once the queue is empty.
    server.wait_until(10, "an empty queue and an idle worker", |s| {
        let st = s.status();
        st["requests_in_queue"] == 0 && st["workers"][0]["state"] == "ready"
    });
    assert_eq!(server.wait_processed(10, 6), 6);
    assert!(
        !server.logs().contains("boom"),
        "the abandoned queued request ran"
    );
    assert!(
        !server.logs().contains("request failed"),
        "{}",
        server.logs()
    );
}

/// Access lines are batched (front/log_lines.rs): they must still come out
/// on their own while the server idles, whole, in order, and none may be
/// left behind at exit.
#[test]
fn access_lines_come_out_in_order_while_idle_and_none_is_lost_at_exit() {
    let mut server = start(&fixture("hello"), &[]);
    for i in 0..40 {
        assert_eq!(server.get(&format!("/?n={i}")).status, 200);
    }
    // Nothing else is logged now: only the batch's timer can write them.
    server.wait_until(5, "the 40 access lines", |s| {
        s.logs().contains("GET /?n=39 200")
    });
    let logs = server.logs();
    let at: Vec<usize> = (0..40)
        .map(|i| {
            logs.find(&format!("GET /?n={i} 200"))
                .unwrap_or_else(|| panic!("no access line for n={i}\n{logs}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order:\n{logs}");

    // Requests answered just before a stop: their lines come before the
    // last line, not after it and not never.
    for i in 40..45 {
        assert_eq!(server.get(&format!("/?n={i}")).status, 200);
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(30).success());
    server.wait_until(5, "the last line", |s| s.logs().contains("stopped"));
    let logs = server.logs();
    let stopped = logs.rfind("stopped").unwrap();
    for i in 40..45 {
        let line = logs
            .find(&format!("GET /?n={i} 200"))
            .unwrap_or_else(|| panic!("the access line for n={i} was lost\n{logs}"));
        assert!(line < stopped, "n={i} came after the last line:\n{logs}");
    }
}
