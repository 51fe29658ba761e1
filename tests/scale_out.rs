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
    assert!(!server.logs().contains("GET /up"), "{}", server.logs());
    // Other paths still go to the app.
    assert_eq!(server.get("/upx").status, 200);
    assert_eq!(server.status()["processed_total"], 1);
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
