//! Refork (`--refork-after`): a worker that served traffic becomes the
//! mold new workers fork from, against the real binary and real Ruby.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;

fn app() -> std::path::PathBuf {
    fixture("refork")
}

/// The current template: (kind, pid).
fn template(server: &Server) -> Option<(String, u32)> {
    let status = server.status();
    let t = &status["template"];
    Some((t["kind"].as_str()?.to_string(), t["pid"].as_u64()? as u32))
}

/// Sends GETs of `path` from `clients` threads until `until` holds (checked
/// between rounds) or `secs` pass; returns (served, failures as text).
fn load_until(
    server: &Server,
    clients: usize,
    path: &str,
    secs: u64,
    what: &str,
    until: impl Fn(&Server) -> bool,
) -> (usize, Vec<String>) {
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        for _ in 0..clients {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let r = server.get(path);
                    if r.status == 200 {
                        served.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text()));
                    }
                }
            });
        }
        server.wait_until(secs, what, |s| until(s));
    });
    (served.into_inner(), failures.into_inner().unwrap())
}

#[test]
fn after_n_requests_a_worker_becomes_the_mold_and_new_workers_are_its_children() {
    let server = start(
        &app(),
        &[
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
            "--refork-after",
            "20",
        ],
    );
    let (preloader_kind, preloader) = template(&server).unwrap();
    assert_eq!(preloader_kind, "preloader");
    for _ in 0..25 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_until(20, "a refork", |s| s.status()["reforks"] == 1);
    server.wait_until(20, "the mold's workers to replace the others", |s| {
        let Some((kind, mold)) = template(s) else {
            return false;
        };
        kind == "mold"
            && s.ready_count() == 2
            && s.worker_pids().iter().all(|p| ppid_of(*p) == Some(mold))
    });
    let (_, mold) = template(&server).unwrap();
    let status = server.status();
    assert!(status["template"]["promoted_after"].as_u64() >= Some(20));
    // The mold was one of the first workers, a child of the preloader; once
    // the preloader retires it is the front end's (a child subreaper).
    let parent = ppid_of(mold);
    assert!(
        parent == Some(preloader) || parent == Some(server.pid),
        "{parent:?}"
    );
    // Its children start from its warm heap (the request count it had) and
    // fired starting_worker_process(true).
    let r = server.get("/").json();
    assert_eq!(r["ppid"].as_u64(), Some(mold as u64));
    assert!(r["served"].as_u64().unwrap() > 20, "{r}");
    let started = r["started"].as_array().unwrap();
    assert_eq!(started.last().unwrap()["forked"], true);
    assert_eq!(
        started.last().unwrap()["pid"].as_u64(),
        r["pid"].as_u64(),
        "{r}"
    );
    // The preloader retired once no worker came from it any more.
    server.wait_until(10, "the preloader to exit", |_| !alive(preloader));
    // `memory` names the mold and the sharing with it.
    let out = server.cli(&["memory"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mold "), "{text}");
    assert!(
        server.logs().contains("refork: worker"),
        "{}",
        server.logs()
    );
    let metrics = server.cli(&["status"]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(text.contains("Template         : mold"), "{text}");
}

#[test]
fn a_request_stream_across_two_reforks_has_no_failure() {
    a_request_stream_across_two_reforks_has_no_failure_with(&[]);
}

#[test]
fn a_request_stream_across_two_reforks_has_no_failure_with_four_threads() {
    a_request_stream_across_two_reforks_has_no_failure_with(FOUR_THREADS);
}

fn a_request_stream_across_two_reforks_has_no_failure_with(threads: &[&str]) {
    let server = start(
        &app(),
        &with_args(
            &[
                "--min-instances",
                "3",
                "--max-pool-size",
                "3",
                "--refork-after",
                "40,60",
            ],
            threads,
        ),
    );
    let (served, failures) = load_until(&server, 4, "/sleep?s=0.005", 60, "two reforks", |s| {
        s.status()["reforks"].as_u64() >= Some(2)
    });
    assert!(failures.is_empty(), "{failures:?}\n{}", server.logs());
    assert!(served >= 100, "only {served} served");
    server.wait_until(20, "a full pool after the rollout", |s| {
        s.ready_count() == 3
    });
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_worker_running_a_thread_is_not_promoted_and_the_thread_is_named() {
    let server = start_with_env(
        &app(),
        &["--max-pool-size", "1", "--refork-after", "5"],
        &[("REFORK_THREAD", "1")],
    );
    for _ in 0..10 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_until(10, "the refusal", |s| {
        s.logs().contains("worker stays a worker")
    });
    let logs = server.logs();
    assert!(logs.contains("app-poller"), "{logs}");
    // It serves on, and is not asked again.
    for _ in 0..10 {
        assert_eq!(server.get("/").status, 200);
    }
    let status = server.status();
    assert_eq!(status["reforks"], 0);
    assert_eq!(status["template"]["kind"], "preloader");
    assert_eq!(server.logs().matches("worker stays a worker").count(), 1);
}

#[test]
fn a_thread_marked_fork_safe_does_not_stop_a_refork() {
    let server = start_with_env(
        &app(),
        &["--max-pool-size", "1", "--refork-after", "5"],
        &[("REFORK_THREAD", "fork_safe")],
    );
    for _ in 0..8 {
        assert_eq!(server.get("/").status, 200);
    }
    server.wait_until(20, "a refork", |s| s.status()["reforks"] == 1);
}

#[test]
fn killing_the_mold_falls_back_to_the_preloader_without_failing_requests() {
    let server = start(
        &app(),
        &[
            "--min-instances",
            "2",
            "--max-pool-size",
            "3",
            // One refork, then (practically) never again.
            "--refork-after",
            "10,1000000",
        ],
    );
    let (_, failures) = load_until(&server, 2, "/", 30, "a mold and its workers", |s| {
        template(s).is_some_and(|(kind, mold)| {
            kind == "mold"
                && s.ready_count() == 2
                && s.worker_pids().iter().all(|p| ppid_of(*p) == Some(mold))
        })
    });
    assert!(failures.is_empty(), "{failures:?}");
    let (_, mold) = template(&server).unwrap();
    kill(mold, libc::SIGKILL);
    let asked = AtomicBool::new(false);
    let (_, failures) = load_until(&server, 2, "/", 30, "a worker from a new preloader", |s| {
        // The mold's workers serve on; once its death is noticed, the next
        // spawn (TTIN) comes from a fresh preloader.
        if template(s).is_none() && !asked.swap(true, Ordering::SeqCst) {
            s.signal(libc::SIGTTIN);
        }
        let Some((kind, preloader)) = template(s) else {
            return false;
        };
        kind == "preloader"
            && s.ready_count() == 3
            && s.worker_pids()
                .iter()
                .any(|p| ppid_of(*p) == Some(preloader))
    });
    assert!(failures.is_empty(), "{failures:?}\n{}", server.logs());
    assert!(
        server.logs().contains("the mold exited"),
        "{}",
        server.logs()
    );
}
