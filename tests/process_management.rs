//! Process management against the real binary: scaling down when idle,
//! timeouts, recycling, rolling restarts, signals, daemon conventions.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn idle_workers_are_stopped_down_to_the_minimum() {
    let server = start(
        &fixture("events"),
        &["--max-pool-size", "3", "--pool-idle-time", "1"],
    );
    let responses = concurrent_gets(&server, "/sleep?s=1", 3);
    assert!(responses.iter().all(|r| r.status == 200));
    assert_eq!(server.status()["processes"], 3);
    server.wait_until(10, "idle workers to retire", |s| {
        s.status()["processes"] == 1
    });
    assert_eq!(server.status()["worker_restarts"]["idle"], 2);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_request_outrunning_worker_timeout_gets_504_and_the_worker_is_replaced() {
    let server = start(&fixture("events"), &["--worker-timeout", "1"]);
    let stuck = server.worker_pids()[0];
    let started = Instant::now();
    let r = server.get("/sleep?s=30");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    server.wait_until(10, "the stuck worker to die", |_| !alive(stuck));
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["pid"].as_u64().unwrap() as u32, stuck);
    assert!(
        server.logs().contains("exceeded --worker-timeout"),
        "{}",
        server.logs()
    );
}

#[test]
fn max_requests_replaces_workers_without_failing_a_request() {
    max_requests_replaces_workers_without_failing_a_request_with(&[]);
}

#[test]
fn max_requests_replaces_workers_without_failing_a_request_with_four_threads() {
    max_requests_replaces_workers_without_failing_a_request_with(FOUR_THREADS);
}

fn max_requests_replaces_workers_without_failing_a_request_with(threads: &[&str]) {
    let server = start(
        &fixture("events"),
        &with_args(&["--max-requests", "5"], threads),
    );
    let mut pids = Vec::new();
    for _ in 0..12 {
        let r = server.get("/");
        assert_eq!(r.status, 200, "{}", server.logs());
        pids.push(r.json()["pid"].as_u64().unwrap());
    }
    // Requests 1-5 on the first worker, 6-10 on the second, 11-12 on a third.
    assert_eq!(
        pids[..5].iter().collect::<HashSet<_>>().len(),
        1,
        "{pids:?}"
    );
    assert_eq!(
        pids[5..10].iter().collect::<HashSet<_>>().len(),
        1,
        "{pids:?}"
    );
    assert_ne!(pids[0], pids[5]);
    assert_ne!(pids[5], pids[10]);
    assert_eq!(server.status()["worker_restarts"]["max requests"], 2);
}

/// A retired worker leaves the pool's count at once; one whose exit hooks
/// hang must not live on unseen: it is killed after --shutdown-timeout.
#[test]
fn a_retired_worker_whose_exit_hook_hangs_is_killed_after_the_shutdown_timeout() {
    let server = start_with_env(
        &fixture("events"),
        &["--max-requests", "1", "--shutdown-timeout", "2"],
        &[("EVENTS_HANG_ON_STOP", "1")],
    );
    let r = server.get("/");
    assert_eq!(r.status, 200);
    let pid = r.json()["pid"].as_u64().unwrap() as u32;
    server.wait_until(20, "the hung worker to be killed", |_| !alive(pid));
    server.wait_until(5, "the log line", |s| {
        s.logs().contains("after it was told to stop")
    });
    // Its replacement serves.
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["pid"].as_u64().unwrap() as u32, pid);
}

#[test]
fn a_worker_over_the_memory_limit_is_recycled_after_its_request() {
    a_worker_over_the_memory_limit_is_recycled_after_its_request_with(&[]);
}

#[test]
fn a_worker_over_the_memory_limit_is_recycled_after_its_request_with_four_threads() {
    a_worker_over_the_memory_limit_is_recycled_after_its_request_with(FOUR_THREADS);
}

fn a_worker_over_the_memory_limit_is_recycled_after_its_request_with(threads: &[&str]) {
    let server = start(
        &fixture("events"),
        &with_args(
            &["--memory-limit", "60", "--sample-interval", "0.2"],
            threads,
        ),
    );
    let r = server.get("/grow?mb=100");
    assert_eq!(r.status, 200, "{}", r.text());
    let fat: u32 = r.text().split_whitespace().last().unwrap().parse().unwrap();
    server.wait_until(10, "the fat worker to be recycled", |_| !alive(fat));
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["pid"].as_u64().unwrap() as u32, fat);
    assert_eq!(server.status()["worker_restarts"]["memory limit"], 1);
}

fn write_app(dir: &Path, version: &str) {
    std::fs::write(
        dir.join("config.ru"),
        format!("VERSION = {version:?}\nrun ->(env) {{ sleep 0.01; [200, {{ \"content-type\" => \"text/plain\" }}, [\"#{{VERSION}} #{{Process.pid}}\"]] }}\n"),
    )
    .unwrap();
}

#[test]
fn rolling_restarts_under_load_lose_no_request() {
    rolling_restarts_under_load_lose_no_request_with(&[]);
}

#[test]
fn rolling_restarts_under_load_lose_no_request_with_four_threads() {
    rolling_restarts_under_load_lose_no_request_with(FOUR_THREADS);
}

fn rolling_restarts_under_load_lose_no_request_with(threads: &[&str]) {
    let app = tempfile::tempdir().unwrap();
    write_app(app.path(), "v1");
    let server = start(
        app.path(),
        &with_args(&["--min-instances", "3", "--max-pool-size", "3"], threads),
    );
    server.wait_until(20, "three workers", |s| s.ready_count() == 3);
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    let restart = || {
        let out = server.cli(&["restart"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::thread::scope(|s| {
        // Stops the load even if an assertion below fails.
        let _stop = SetOnDrop(&stop);
        for _ in 0..8 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let r = server.get("/");
                    sent.fetch_add(1, Ordering::SeqCst);
                    if r.status != 200 {
                        failures.lock().unwrap().push((r.status, r.text()));
                    }
                }
            });
        }
        // Restart under load: once requests are flowing.
        wait_for(10, "the load to be served", || {
            sent.load(Ordering::SeqCst) >= 16
        });
        write_app(app.path(), "v2");
        restart();
        server.wait_until(30, "generation 2 everywhere", |s| {
            let st = s.status();
            !st["restarting"].as_bool().unwrap()
                && st["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["generation"] == 2 && w["state"] != "spawning")
        });
        write_app(app.path(), "v3");
        // The second restart by signal.
        server.signal(libc::SIGHUP);
        server.wait_until(30, "generation 3 everywhere", |s| {
            let st = s.status();
            st["generation"] == 3
                && !st["restarting"].as_bool().unwrap()
                && st["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|w| w["generation"] == 3 && w["state"] != "spawning")
        });
        // And the load runs on for a while on generation 3.
        let at_generation_3 = sent.load(Ordering::SeqCst);
        wait_for(10, "requests served by generation 3", || {
            sent.load(Ordering::SeqCst) >= at_generation_3 + 16
        });
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "rolling restart: {} requests, {} failed",
        sent.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during restarts: {failures:?}"
    );
    assert!(sent.load(Ordering::SeqCst) > 50);
    for _ in 0..6 {
        assert!(server.get("/").text().starts_with("v3 "));
    }
    assert_eq!(server.status()["processes"], 3);
}

#[test]
fn a_restart_with_broken_code_keeps_the_old_workers_serving() {
    let app = tempfile::tempdir().unwrap();
    write_app(app.path(), "v1");
    let server = start(app.path(), &[]);
    std::fs::write(app.path().join("config.ru"), "raise 'syntax of doom'\n").unwrap();
    let out = server.cli(&["restart"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax of doom"));
    assert!(server.get("/").text().starts_with("v1 "));
    let status = server.status();
    assert!(status["last_restart_error"]
        .as_str()
        .unwrap()
        .contains("syntax of doom"));
    assert_eq!(status["generation"], 1);
}

#[test]
fn touching_restart_txt_restarts() {
    let app = tempfile::tempdir().unwrap();
    write_app(app.path(), "v1");
    let server = start(app.path(), &[]);
    write_app(app.path(), "v2");
    std::fs::create_dir_all(app.path().join("tmp")).unwrap();
    std::fs::write(app.path().join("tmp/restart.txt"), "").unwrap();
    server.wait_until(20, "the new code", |s| s.get("/").text().starts_with("v2 "));
}

#[test]
fn quit_drains_an_in_flight_request_before_exiting() {
    quit_drains_an_in_flight_request_before_exiting_with(&[]);
}

#[test]
fn quit_drains_an_in_flight_request_before_exiting_with_four_threads() {
    quit_drains_an_in_flight_request_before_exiting_with(FOUR_THREADS);
}

fn quit_drains_an_in_flight_request_before_exiting_with(threads: &[&str]) {
    let mut server = start(&fixture("events"), threads);
    let r = std::thread::scope(|s| {
        let slow = s.spawn(|| server.get("/sleep?s=2"));
        // QUIT once the request is on the worker, in flight.
        server.wait_until(10, "the request on the worker", |s| s.in_progress() == 1);
        server.signal(libc::SIGQUIT);
        slow.join().unwrap()
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(server.wait_exit(30).success());
    // New connections are refused once it has stopped.
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err());
}

#[test]
fn ttin_and_ttou_change_the_process_count() {
    let server = start(&fixture("events"), &["--max-pool-size", "3"]);
    server.signal(libc::SIGTTIN);
    server.wait_until(10, "two workers", |s| s.ready_count() == 2);
    server.signal(libc::SIGTTIN);
    server.wait_until(10, "three workers", |s| s.ready_count() == 3);
    // One more is capped at --max-pool-size. (Sent on its own: signals
    // sent back to back can be delivered as one.) Once the server has
    // handled it, no fourth process is on its way.
    let ttin_lines = |s: &Server| -> Vec<String> {
        s.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("SIGTTIN: desired process count"))
            .cloned()
            .collect()
    };
    server.wait_until(10, "two SIGTTINs logged", |s| ttin_lines(s).len() == 2);
    server.signal(libc::SIGTTIN);
    server.wait_until(10, "the third SIGTTIN to be handled", |s| {
        ttin_lines(s).len() == 3
    });
    let last = ttin_lines(&server).pop().unwrap();
    assert!(last.ends_with("desired process count 3"), "{last}");
    assert_eq!(server.status()["processes"], 3);
    server.signal(libc::SIGTTOU);
    server.wait_until(10, "two workers", |s| s.status()["processes"] == 2);
    // And the admin command does the same.
    let out = server.cli(&["scale", "-1"]);
    assert!(out.status.success());
    server.wait_until(10, "one worker", |s| s.status()["processes"] == 1);
}

#[test]
fn a_killed_preloader_is_replaced_on_the_next_spawn() {
    let server = start(&fixture("events"), &["--max-pool-size", "3"]);
    let preloader = server.status()["preloader_pid"].as_u64().unwrap() as u32;
    kill(preloader, libc::SIGKILL);
    server.wait_until(10, "the preloader's death to be noticed", |s| {
        s.status()["preloader_pid"].is_null()
    });
    // The existing worker keeps serving.
    assert_eq!(server.get("/").status, 200);
    // A new spawn starts a new preloader.
    server.signal(libc::SIGTTIN);
    server.wait_until(20, "a second worker", |s| s.ready_count() == 2);
    let new = server.status()["preloader_pid"].as_u64().unwrap() as u32;
    assert_ne!(new, preloader);
}

#[test]
fn a_crash_loop_stops_respawning() {
    let server = start_with_env(
        &fixture("events"),
        &[],
        &[("EVENTS_CRASH_AFTER_START", "1")],
    );
    server.wait_until(30, "the crash loop to be detected", |s| {
        s.logs().contains("not respawning")
    });
    let spawned = server.logs().matches("worker ready").count();
    // The scenario: time passes, and nothing respawns. (There is nothing
    // to wait for; a respawn would show up as another "worker ready".)
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        server.logs().matches("worker ready").count(),
        spawned,
        "kept respawning"
    );
    assert!(server.status()["last_spawn_error"]
        .as_str()
        .unwrap()
        .contains("in a row"));
}

#[test]
fn stop_command_stops_the_instance() {
    let mut server = start(&fixture("hello"), &[]);
    let out = server.cli(&["stop", "--graceful"]);
    assert!(out.status.success());
    assert!(server.wait_exit(30).success());
    assert!(!server.instance.exists());
}

#[test]
fn daemonize_writes_a_pid_file_and_logs_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("rustrack.pid");
    let log_file = dir.path().join("rustrack.log");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let status = std::process::Command::new(bin())
        .arg("start")
        .arg(fixture("events"))
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--daemonize",
        ])
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--log-file")
        .arg(&log_file)
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", dir.path())
        .status()
        .unwrap();
    // start returns only once the daemon serves.
    assert!(status.success());
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    stream
        .write_all(b"GET /raise HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut std::io::BufReader::new(stream)).unwrap();
    assert_eq!(r.status, 500);
    kill(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid));
    assert!(!pid_file.exists(), "pid file left behind");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("listening on http://127.0.0.1"), "{log}");
    // The app's own stderr went to the same file.
    assert!(log.contains("boom from the events fixture"), "{log}");
}

#[test]
fn signals_run_the_apps_traps_in_workers_and_untrapped_ones_stop_them_cleanly() {
    signals_run_the_apps_traps_in_workers_and_untrapped_ones_stop_them_cleanly_with(&[]);
}

#[test]
fn signals_run_the_apps_traps_in_workers_and_untrapped_ones_stop_them_cleanly_with_four_threads() {
    signals_run_the_apps_traps_in_workers_and_untrapped_ones_stop_them_cleanly_with(FOUR_THREADS);
}

fn signals_run_the_apps_traps_in_workers_and_untrapped_ones_stop_them_cleanly_with(
    threads: &[&str],
) {
    let dir = tempfile::tempdir().unwrap();
    let trap_file = dir.path().join("trapped");
    let trap = trap_file.to_str().unwrap();
    let server = start_with_env(
        &fixture("events"),
        &with_args(&["--min-instances", "1", "--max-pool-size", "1"], threads),
        &[("EVENTS_TRAP_FILE", trap)],
    );
    wait_for_ready_workers(&server, 1, 60);
    let pid = server.worker_pids()[0];
    // Idle (blocked waiting for a request) and right after a request.
    kill(pid, libc::SIGUSR2);
    server.wait_until(10, "the app's USR2 trap to run", |_| {
        std::fs::read_to_string(&trap_file).is_ok_and(|t| t.contains(&pid.to_string()))
    });
    assert_eq!(server.get("/").status, 200);
    kill(pid, libc::SIGUSR2);
    assert_eq!(server.get("/").status, 200);
    server.wait_until(10, "the second trap to run", |_| {
        std::fs::read_to_string(&trap_file).is_ok_and(|t| t.lines().count() == 2)
    });
    assert!(alive(pid), "a trapped signal must not stop the worker");
    assert_eq!(server.worker_pids(), vec![pid]);

    // Ruby's default for an untrapped USR2 is to end the process: the
    // worker stops as if asked to (its stopping event runs), is replaced,
    // and Ruby never crashes inside rustrack's code.
    let server = start(
        &fixture("hello"),
        &with_args(&["--min-instances", "1", "--max-pool-size", "1"], threads),
    );
    wait_for_ready_workers(&server, 1, 60);
    let pid = server.worker_pids()[0];
    kill(pid, libc::SIGUSR2);
    server.wait_until(20, "a replacement worker", |s| {
        s.worker_pids().first().is_some_and(|p| *p != pid) && s.ready_count() == 1
    });
    assert_eq!(server.get("/").status, 200);
    let logs = server.logs();
    assert!(logs.contains("the app does not trap it"), "{logs}");
    assert!(!logs.contains("[BUG]"), "{logs}");
}

#[test]
fn usr1_reopens_the_log_file_and_the_apps_own_logs_in_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rustrack.log");
    let app_log = dir.path().join("app.log");
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("start")
        .arg(fixture("events"))
        .args([
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--min-instances",
            "2",
        ])
        .arg("--log-file")
        .arg(&log)
        .env("EVENTS_APP_LOG", &app_log)
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("listening on http://127.0.0.1:"))
        {
            break line
                .rsplit(':')
                .next()
                .unwrap()
                .trim()
                .parse::<u16>()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no start in 60 s:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let say = |words: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::Write;
        write!(
            stream,
            "GET /say?{words} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let r = read_response(&mut std::io::BufReader::new(stream)).unwrap();
        assert_eq!(r.status, 200);
    };
    // Both workers up (two requests at once reach both), then rotate.
    let wait_for = |path: &Path, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in {}:\n{text}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&log, "worker ready in");
    say("before");
    wait_for(&log, "app says before");
    wait_for(&app_log, "app log: before");
    std::fs::rename(&log, dir.path().join("rustrack.log.1")).unwrap();
    std::fs::rename(&app_log, dir.path().join("app.log.1")).unwrap();
    kill(child.id(), libc::SIGUSR1);
    wait_for(&log, "SIGUSR1: reopened");
    // The workers reopen between requests (within their 1 s wait); a
    // request may beat that, so ask until one lands in the new files.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        say(&format!("after{i}"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let app_text = std::fs::read_to_string(&app_log).unwrap_or_default();
        if text.contains("app says after") && app_text.contains("app log: after") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workers never reopened:\n{text}\n--\n{app_text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every worker stays up through it.
    let old = std::fs::read_to_string(dir.path().join("rustrack.log.1")).unwrap();
    assert!(
        !old.contains("[BUG]") && !old.contains("killed by"),
        "{old}"
    );
    kill(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
