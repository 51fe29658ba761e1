//! Connections opened at load time and fork: a real memcached, Dalli, and
//! the warnings rustrack gives about sockets and threads the preloader
//! holds when it forks (`src/rack/inherited.rs`).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

const WORKERS: usize = 4;
const CLIENTS: usize = 16;
const REQUESTS_PER_CLIENT: usize = 25;

/// Starts the memcached fixture with 4 workers and waits for all of them.
fn start_memcached_app(mc: &Memcached, env: &[(&str, &str)]) -> Server {
    start_memcached_app_with(mc, env, &[])
}

fn start_memcached_app_with(mc: &Memcached, env: &[(&str, &str)], extra: &[&str]) -> Server {
    let servers = format!("MEMCACHED_SERVERS={}", mc.servers());
    let mut args = vec![
        "--min-instances",
        "4",
        "--max-pool-size",
        "4",
        "--envvar",
        &servers,
    ];
    args.extend_from_slice(extra);
    let server = start_with_env(&fixture("memcached"), &args, env);
    wait_for_ready_workers(&server, WORKERS, 30);
    server
}

struct Hammer {
    requests: usize,
    failures: usize,
    pids: HashSet<String>,
    examples: Vec<String>,
}

/// Many concurrent clients, each setting and reading back keys unique to
/// the request; a failure is a non-200 or a value that is not the one
/// this request set.
fn hammer(server: &Server, tag: &str) -> Hammer {
    let failures = AtomicUsize::new(0);
    let pids = std::sync::Mutex::new(HashSet::new());
    let examples = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (failures, pids, examples) = (&failures, &pids, &examples);
            s.spawn(move || {
                for i in 0..REQUESTS_PER_CLIENT {
                    let key = format!("{tag}-{client}-{i}");
                    let value = format!("v{}-{client}-{i}", std::process::id());
                    let r = server.get(&format!("/roundtrip?key={key}&value={value}"));
                    if let Some(pid) = r.header("x-worker-pid") {
                        pids.lock().unwrap().insert(pid.to_string());
                    }
                    if r.status != 200 || r.text() != value {
                        failures.fetch_add(1, Ordering::SeqCst);
                        let mut ex = examples.lock().unwrap();
                        if ex.len() < 5 {
                            ex.push(format!(
                                "{key}: wanted {value:?}, got {} {:?}",
                                r.status,
                                r.text()
                            ));
                        }
                    }
                }
            });
        }
    });
    Hammer {
        requests: CLIENTS * REQUESTS_PER_CLIENT,
        failures: failures.into_inner(),
        pids: pids.into_inner().unwrap(),
        examples: examples.into_inner().unwrap(),
    }
}

fn still_shares_warnings(server: &Server) -> Vec<String> {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("still shares the preloader's connection"))
        .cloned()
        .collect()
}

/// The fixture as written (reconnecting in starting_worker_process): every
/// value comes back right from all 4 workers. Dalli's own fork check is
/// disabled here so that the hook alone keeps the workers apart: remove the
/// hook from fixtures/memcached/config.ru and this test fails (workers
/// report the shared connection, and values come back wrong).
#[test]
fn memcached_hammer_with_the_reconnect_hook_gets_every_value_right() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let server = start_memcached_app(&mc, &[("DALLI_FORK_CHECK", "off")]);
    let result = hammer(&server, "hook");
    eprintln!(
        "memcached hammer with the hook: {} requests, {} failures, {} workers",
        result.requests,
        result.failures,
        result.pids.len()
    );
    assert_eq!(
        result.failures,
        0,
        "wrong values: {:?}\n{}",
        result.examples,
        server.logs()
    );
    assert_eq!(
        result.pids.len(),
        WORKERS,
        "requests reached {:?}",
        result.pids
    );
    // The preloader did hold the connection, and said so...
    let expected = format!(
        "preloader holds a connection to 127.0.0.1:{}; workers will share it unless you reconnect in starting_worker_process",
        mc.port
    );
    assert!(server.logs().contains(&expected), "{}", server.logs());
    // ...and no worker kept it past starting_worker_process.
    assert_eq!(still_shares_warnings(&server), Vec::<String>::new());
}

/// Across reforks: workers forked from a mold (a worker that had its own
/// Dalli connection) fire starting_worker_process(true) too, so the hook
/// keeps every worker on its own connection.
#[test]
fn memcached_hammer_stays_right_across_a_refork() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let server = start_memcached_app_with(
        &mc,
        &[("DALLI_FORK_CHECK", "off")],
        &["--refork-after", "30,1000000"],
    );
    let result = hammer(&server, "refork");
    assert_eq!(
        result.failures,
        0,
        "wrong values: {:?}\n{}",
        result.examples,
        server.logs()
    );
    server.wait_until(20, "a refork", |s| s.status()["reforks"] == 1);
    server.wait_until(20, "the mold's workers", |s| {
        let mold = s.status()["template"]["pid"].as_u64().map(|p| p as u32);
        s.ready_count() == WORKERS && s.worker_pids().iter().all(|p| ppid_of(*p) == mold)
    });
    // A second round, all from the mold's children.
    let result = hammer(&server, "after-refork");
    assert_eq!(
        result.failures,
        0,
        "wrong values: {:?}\n{}",
        result.examples,
        server.logs()
    );
    assert_eq!(still_shares_warnings(&server), Vec::<String>::new());
}

/// Without the hook every worker inherits the preloader's socket: rustrack
/// names it in each worker, and with nothing else reconnecting, requests
/// from different workers interleave on the one connection.
#[test]
fn memcached_without_the_hook_is_detected_in_every_worker() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let server = start_memcached_app(
        &mc,
        &[("MEMCACHED_HOOK", "off"), ("DALLI_FORK_CHECK", "off")],
    );
    let warnings = still_shares_warnings(&server);
    assert_eq!(warnings.len(), WORKERS, "{}", server.logs());
    let peer = format!("connection to 127.0.0.1:{} after", mc.port);
    assert!(warnings.iter().all(|w| w.contains(&peer)), "{warnings:?}");
    let result = hammer(&server, "nohook");
    // Not asserted: how often replies cross depends on scheduling. It is
    // printed so the hazard is visible in the test output.
    eprintln!(
        "memcached hammer WITHOUT the hook: {} requests, {} failures, {} workers; e.g. {:?}",
        result.requests,
        result.failures,
        result.pids.len(),
        result.examples
    );
}

/// `--strict-fork` turns the inherited-connection warning into a start
/// error naming the peer.
#[test]
fn strict_fork_refuses_to_start_with_an_inherited_connection() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let servers = format!("MEMCACHED_SERVERS={}", mc.servers());
    let (mut child, _registry, logs) = spawn(
        &fixture("memcached"),
        &["--strict-fork", "--envvar", &servers],
        &[],
    );
    let (status, out) = wait_for_exit(&mut child, &logs, 60);
    assert!(!status.success(), "started anyway: {out}");
    assert!(
        out.contains("refusing to fork workers (--strict-fork)")
            && out.contains(&format!("127.0.0.1:{}", mc.port)),
        "{out}"
    );
}

/// An app written exactly like Passenger's docs reconnects under
/// `--passenger-compat`, and without it PhusionPassenger is not defined,
/// the hook never runs and the workers are reported as sharing.
#[test]
fn passenger_style_hooks_run_with_passenger_compat() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let servers = format!("MEMCACHED_SERVERS={}", mc.servers());
    let args = ["--min-instances", "2", "--envvar", &servers];

    let mut with = args.to_vec();
    with.push("--passenger-compat");
    let server = start(&fixture("passenger"), &with);
    wait_for_ready_workers(&server, 2, 30);
    for r in concurrent_gets(&server, "/?hello", 4) {
        let body = r.json();
        assert_eq!(body["passenger_defined"], true);
        assert_eq!(body["reconnected"], true, "{body}");
        assert_eq!(body["roundtrip"], "hello");
    }
    assert_eq!(still_shares_warnings(&server), Vec::<String>::new());
    drop(server);

    let server = start(&fixture("passenger"), &args);
    wait_for_ready_workers(&server, 2, 30);
    let body = server.get("/?x").json();
    assert_eq!(body["passenger_defined"], false);
    assert_eq!(body["reconnected"], serde_json::Value::Null);
    assert_eq!(still_shares_warnings(&server).len(), 2, "{}", server.logs());
}

/// Under direct spawning the Passenger-style hook fires with false.
#[test]
fn passenger_style_hooks_get_false_under_direct_spawning() {
    let Some(mc) = Memcached::start() else {
        return;
    };
    let servers = format!("MEMCACHED_SERVERS={}", mc.servers());
    let server = start(
        &fixture("passenger"),
        &[
            "--passenger-compat",
            "--spawn-method",
            "direct",
            "--envvar",
            &servers,
        ],
    );
    let body = server.get("/?direct").json();
    assert_eq!(body["reconnected"], false);
    assert_eq!(body["roundtrip"], "direct");
}

/// Threads alive in the preloader and a Unix-socket connection are named
/// in warnings, and a worker that kept the connection says so.
#[test]
fn preloader_threads_and_unix_connections_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hazard.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let path_env = path.to_str().unwrap().to_string();
    let server = start_with_env(
        &fixture("fork_hazards"),
        &[],
        &[("HAZARD_UNIX_SOCKET", &path_env)],
    );
    assert_eq!(server.get("/").status, 200);
    let logs = server.logs();
    assert!(
        logs.contains("the preloader has 1 Ruby thread besides the main one when it forks")
            && logs.contains("metrics-flusher"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "preloader holds a connection to unix:{path_env}; workers will share it"
        )),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "still shares the preloader's connection to unix:{path_env}"
        )),
        "{logs}"
    );
    drop(listener);
}

/// A thread alone is a warning even under --strict-fork; the server starts.
#[test]
fn strict_fork_still_starts_with_only_a_thread() {
    let server = start(&fixture("fork_hazards"), &["--strict-fork"]);
    assert_eq!(server.get("/").status, 200);
    assert!(server.logs().contains("metrics-flusher"));
}
