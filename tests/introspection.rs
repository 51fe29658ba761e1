//! Introspection against the real binary: `status`, `memory`, `compare`
//! and the Prometheus endpoint, checked against /proc and the requests the
//! test itself sent.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;

fn json_of(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = server.cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_json_is_consistent_with_proc_and_the_requests_sent() {
    let server = start(
        &fixture("events"),
        &["--min-instances", "2", "--sample-interval", "0.2"],
    );
    server.wait_until(10, "two workers", |s| s.worker_pids().len() == 2);
    for _ in 0..9 {
        assert_eq!(server.get("/").status, 200);
    }
    // Until every request is counted (the count follows the worker's side
    // of the exchange) and every worker has the two samples a CPU figure
    // takes.
    server.wait_until(10, "9 requests counted and a CPU figure per worker", |s| {
        let st = s.status();
        st["processed_total"].as_u64().unwrap() >= 9
            && st["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| !w["cpu_percent"].is_null())
    });
    let status = json_of(&server, &["status", "--json"]);
    for key in [
        "version",
        "pid",
        "max_pool_size",
        "processes",
        "requests_in_queue",
        "spawn_method",
        "preloader_pid",
        "preloader_memory",
    ] {
        assert!(!status[key].is_null(), "missing {key}: {status}");
    }
    let workers = status["workers"].as_array().unwrap();
    let processed: u64 = workers
        .iter()
        .map(|w| w["processed"].as_u64().unwrap())
        .sum();
    assert_eq!(processed, 9);
    assert_eq!(status["processed_total"], 9);
    for w in workers {
        let pid = w["pid"].as_u64().unwrap() as u32;
        assert!(alive(pid));
        assert_eq!(
            ppid_of(pid),
            status["preloader_pid"].as_u64().map(|p| p as u32)
        );
        let m = &w["memory"];
        let (rss, pss, dirty) = (
            m["rss"].as_u64().unwrap(),
            m["pss"].as_u64().unwrap(),
            m["private_dirty"].as_u64().unwrap(),
        );
        assert!(rss > 0 && pss <= rss && dirty <= rss, "{m}");
        for key in [
            "sessions",
            "uptime_secs",
            "last_used_secs_ago",
            "state",
            "generation",
            "cpu_percent",
        ] {
            assert!(!w[key].is_null(), "missing {key}: {w}");
        }
        assert!(m["shared_clean"].is_u64() && m["swap"].is_u64());
    }
}

#[test]
fn memory_lists_every_process_with_the_preloader_as_parent_of_smart_workers() {
    let server = start(&fixture("bloat"), &["--min-instances", "2"]);
    server.wait_until(30, "two workers", |s| s.worker_pids().len() == 2);
    let report = json_of(&server, &["memory", "--json"]);
    let procs = report["processes"].as_array().unwrap();
    let by_role = |role: &str| {
        procs
            .iter()
            .filter(|p| p["role"] == role)
            .collect::<Vec<_>>()
    };
    let front = by_role("front end");
    let preloader = by_role("preloader");
    let workers = by_role("worker");
    assert_eq!(front.len(), 1);
    assert_eq!(front[0]["pid"], server.pid);
    assert_eq!(preloader.len(), 1);
    assert_eq!(preloader[0]["ppid"], server.pid);
    assert_eq!(workers.len(), 2);
    for w in &workers {
        assert_eq!(w["ppid"], preloader[0]["pid"]);
    }
    let pss: u64 = procs
        .iter()
        .map(|p| p["memory"]["pss"].as_u64().unwrap())
        .sum();
    assert_eq!(report["total_pss"].as_u64().unwrap(), pss);
    // The text form shows copy-on-write sharing per worker.
    let out = server.cli(&["memory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Total PSS"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("worker ") && l.contains('%'))
            .count()
            == 2,
        "{text}"
    );
}

#[test]
fn compare_shows_smart_spawning_using_less_memory_than_direct() {
    let out = Command::new(bin())
        .args(["compare"])
        .arg(fixture("bloat"))
        .args(["--workers", "2", "--requests", "20", "--json"])
        .env("BLOAT_MB", "60")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("workers ready"),
        "no progress shown: {stderr}"
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let smart = c["smart"]["total_pss"].as_u64().unwrap();
    let direct = c["direct"]["total_pss"].as_u64().unwrap();
    assert!(smart < direct, "smart {smart} direct {direct}");
    assert_eq!(c["smart"]["workers"], 2);
    assert_eq!(c["direct"]["workers"], 2);
    assert_eq!(c["smart"]["spawn_ms"].as_array().unwrap().len(), 2);
    // The third configuration, refork after a quarter of the requests, and
    // a total PSS sample after every request of each client (plus one
    // before the first).
    assert_eq!(
        c["configs"],
        serde_json::json!(["smart", "direct", "refork"])
    );
    assert_eq!(c["refork"]["refork_after"], serde_json::json!([5]));
    assert_eq!(c["refork"]["workers"], 2);
    for config in ["smart", "direct", "refork"] {
        let series = c[config]["series"].as_array().unwrap();
        assert_eq!(series.len(), 21, "{config}");
        assert_eq!(series.last().unwrap()["requests"], 40, "{config}");
    }
}

/// A minimal parser of the Prometheus text format: every sample line is
/// `name{labels} value`; returns samples keyed by `name{labels}`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

/// GET /metrics from the server's `--metrics-address` (as logged).
fn scrape(server: &Server) -> String {
    let addr = find_log(&server.logs, "metrics on http://")
        .map(|l| {
            l.split("http://")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .expect("metrics address logged");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert_eq!(r.status, 200);
    r.text()
}

#[test]
fn metrics_count_requests_in_progress_against_the_threads_of_the_workers() {
    let server = start(
        &fixture("events"),
        &[
            "--metrics-address",
            "127.0.0.1:0",
            "--threads-per-worker",
            "3",
            "--max-pool-size",
            "1",
        ],
    );
    wait_for_ready_workers(&server, 1, 60);
    std::thread::scope(|s| {
        let a = s.spawn(|| server.get("/sleep?s=2"));
        let b = s.spawn(|| server.get("/sleep?s=2"));
        server.wait_until(10, "two requests in progress", |s| s.in_progress() == 2);
        let text = scrape(&server);
        let samples = parse_prometheus(&text);
        assert_eq!(samples.get("rustrack_sessions"), Some(&2.0), "{text}");
        assert_eq!(
            samples.get("rustrack_session_capacity"),
            Some(&3.0),
            "{text}"
        );
        // A session is free: the worker is ready, not busy.
        assert_eq!(
            samples.get("rustrack_processes{state=\"ready\"}"),
            Some(&1.0),
            "{text}"
        );
        assert_eq!(a.join().unwrap().status, 200);
        assert_eq!(b.join().unwrap().status, 200);
    });
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_requests() {
    let server = start(&fixture("events"), &["--metrics-address", "127.0.0.1:0"]);
    let addr = find_log(&server.logs, "metrics on http://")
        .map(|l| {
            l.split("http://")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .expect("metrics address logged");
    for _ in 0..5 {
        assert_eq!(server.get("/").status, 200);
    }
    assert_eq!(server.get("/raise").status, 500);
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert_eq!(r.status, 200);
    let text = r.text();
    let samples = parse_prometheus(&text);
    assert_eq!(
        samples.get("rustrack_requests_total{class=\"2xx\"}"),
        Some(&5.0),
        "{text}"
    );
    assert_eq!(
        samples.get("rustrack_requests_total{class=\"5xx\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        samples.get("rustrack_request_duration_seconds_count"),
        Some(&6.0),
        "{text}"
    );
    assert_eq!(samples.get("rustrack_queue_length"), Some(&0.0), "{text}");
    assert_eq!(
        samples.get("rustrack_processes{state=\"ready\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        samples.get("rustrack_spawns_total{method=\"smart\"}"),
        Some(&1.0),
        "{text}"
    );
    assert!(
        samples.contains_key("rustrack_queue_wait_seconds_count"),
        "{text}"
    );
    assert!(
        samples.contains_key("rustrack_spawn_duration_seconds_count{method=\"smart\"}"),
        "{text}"
    );
    let pid = server.worker_pids()[0];
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("rustrack_worker_pss_bytes")
                && k.contains(&format!("pid=\"{pid}\""))),
        "{text}"
    );
}
