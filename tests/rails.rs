//! A Rails 6.1 app (Debian's ruby-rails) on a PostgreSQL of its own:
//! boots under smart and direct spawning, serves correct results from
//! several workers at once, and every forked worker talks to PostgreSQL
//! over its own connection, none inherited from the preloader.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use rustrack::rack::inherited::{self, Peer};

/// Rails and ruby-pg, which CI must have: see `require_dep`.
fn rails_available() -> bool {
    require_dep(
        runs_ok("ruby", &["-e", "require 'rails'"]),
        "Rails",
        "ruby-rails",
    ) && require_dep(
        runs_ok("ruby", &["-e", "require 'pg'"]),
        "ruby-pg",
        "ruby-pg",
    )
}

/// PostgreSQL plus the Rails fixture with three ready smart workers, or
/// None (skipped loudly; under CI a failure) when Rails or PostgreSQL is
/// missing. Keep the Postgres value alive for the test's duration.
fn three_smart_workers() -> Option<(Postgres, Server)> {
    if !rails_available() {
        return None;
    }
    let pg = Postgres::start()?;
    let server = start_rails(&pg, &["--min-instances", "3", "--max-pool-size", "3"]);
    wait_for_ready_workers(&server, 3, 60);
    Some((pg, server))
}

fn start_rails(pg: &Postgres, extra: &[&str]) -> Server {
    let url = format!("DATABASE_URL={}", pg.url("rustrack_test"));
    let mut args = vec!["--environment", "production", "--envvar", &url];
    args.extend_from_slice(extra);
    start(&fixture("rails"), &args)
}

/// `n` concurrent requests that each hold a worker for a moment, so that
/// with `n` idle workers every worker serves one.
fn one_per_worker(server: &Server, method: &str, path: &str, n: usize) -> Vec<Response> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| server.request(method, path, &[], b"")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The local ports of the TCP connections `pid` holds to PostgreSQL.
/// Panics if they cannot be read: an empty list must mean "none".
fn pg_client_ports(pid: u32, pg_port: u16) -> Vec<u16> {
    inherited::connections(&pid.to_string(), &[])
        .unwrap_or_else(|e| panic!("reading the connections of {pid}: {e:#}"))
        .into_iter()
        .filter_map(|c| match c.peer {
            Peer::Tcp { local, remote } if remote.port() == pg_port => Some(local.port()),
            _ => None,
        })
        .collect()
}

#[test]
fn rails_smart_workers_each_get_their_own_database_connection() {
    let Some((pg, server)) = three_smart_workers() else {
        return;
    };

    // Correct results from several workers at once: 30 concurrent bumps of
    // one row (read, then write, in a transaction) lose none.
    let responses: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|_| s.spawn(|| server.request("POST", "/counters/hits", &[], b"")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &responses {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
    }
    let mut values: Vec<u64> = responses
        .iter()
        .map(|r| r.json()["value"].as_u64().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, (1..=30).collect::<Vec<u64>>());
    assert_eq!(server.get("/counters/hits").json()["value"], 30);

    // Each worker reports its own backend; the preloader's is gone.
    let infos = one_per_worker(&server, "GET", "/connection?sleep=0.5", 3);
    let mut backend_of: HashMap<u64, u64> = HashMap::new();
    let mut boot_backend = 0;
    for r in &infos {
        let body = r.json();
        assert_eq!(body["rails_env"], "production");
        assert_eq!(body["eager_load"], true);
        boot_backend = body["boot_backend_pid"].as_u64().unwrap();
        backend_of.insert(
            body["pid"].as_u64().unwrap(),
            body["backend_pid"].as_u64().unwrap(),
        );
    }
    assert_eq!(backend_of.len(), 3, "requests reached {backend_of:?}");
    let backends: HashSet<u64> = backend_of.values().copied().collect();
    assert_eq!(backends.len(), 3, "workers share a backend: {backend_of:?}");
    assert!(!backends.contains(&boot_backend));

    // pg_stat_activity: one backend per worker, each on a socket that
    // worker holds, and none held by the preloader.
    let rows = pg.psql(
        "postgres",
        "SELECT pid, client_port FROM pg_stat_activity \
         WHERE datname = 'rustrack_test' AND backend_type = 'client backend'",
    );
    let activity: HashMap<u64, u16> = rows
        .lines()
        .map(|l| {
            let (pid, port) = l.split_once('|').unwrap();
            (pid.parse().unwrap(), port.parse().unwrap())
        })
        .collect();
    assert_eq!(
        activity.keys().copied().collect::<HashSet<u64>>(),
        backends,
        "pg_stat_activity: {rows}"
    );
    let preloader = server.status()["preloader_pid"].as_u64().unwrap() as u32;
    assert_eq!(pg_client_ports(preloader, pg.port), Vec::<u16>::new());
    for (worker, backend) in &backend_of {
        assert_eq!(
            pg_client_ports(*worker as u32, pg.port),
            vec![activity[backend]],
            "worker {worker} should hold exactly its own backend {backend}'s socket"
        );
    }
    // The preloader's connection was closed before forking, so nothing
    // was left for the inherited-socket check to report.
    let logs = server.logs();
    assert!(!logs.contains("preloader holds a connection"), "{logs}");
    assert!(!logs.contains("still shares"), "{logs}");
}

/// `--threads-per-worker 4` on one worker: concurrent requests run side by
/// side, each thread on its own ActiveRecord connection, and concurrent
/// writes stay correct.
#[test]
fn rails_on_four_threads_serves_concurrent_database_requests_on_one_worker() {
    if !rails_available() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let server = start_rails(
        &pg,
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
    let responses: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|_| s.spawn(|| server.request("POST", "/counters/hits", &[], b"")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut values: Vec<u64> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
            assert_eq!(r.json()["pid"].as_u64().unwrap() as u32, worker);
            r.json()["value"].as_u64().unwrap()
        })
        .collect();
    values.sort();
    assert_eq!(values, (1..=30).collect::<Vec<u64>>());

    // Four requests holding a connection for 1 s each: at once, on four
    // backends, not one after the other on one.
    let started = std::time::Instant::now();
    let infos = one_per_worker(&server, "GET", "/connection?hold=1", 4);
    let took = started.elapsed();
    let backends: HashSet<u64> = infos
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
            r.json()["backend_pid"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(backends.len(), 4, "{infos:?}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    // Rails' default pool (5) fits four threads: no warning.
    assert!(
        !server.logs().contains("connection pool"),
        "{}",
        server.logs()
    );
}

#[test]
fn rails_warns_when_its_connection_pool_is_smaller_than_the_threads() {
    if !rails_available() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let server = start_rails(&pg, &["--threads-per-worker", "8"]);
    wait_for_ready_workers(&server, 1, 60);
    server.wait_until(10, "the pool-size warning", |s| {
        s.logs().contains(
            "ActiveRecord's connection pool (primary) holds 5 connections, fewer than \
             --threads-per-worker 8",
        )
    });
    assert_eq!(server.get("/counters/x").status, 404);
}

#[test]
fn rails_boots_and_serves_under_direct_spawning() {
    if !rails_available() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let server = start_rails(
        &pg,
        &[
            "--spawn-method",
            "direct",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
        ],
    );
    wait_for_ready_workers(&server, 2, 90);
    let responses = one_per_worker(&server, "POST", "/counters/direct?sleep=0.5", 2);
    let mut values: Vec<u64> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["value"].as_u64().unwrap()
        })
        .collect();
    values.sort();
    assert_eq!(values, vec![1, 2]);
    let infos = one_per_worker(&server, "GET", "/connection?sleep=0.5", 2);
    let backends: HashSet<u64> = infos
        .iter()
        .map(|r| {
            let body = r.json();
            // A direct worker booted the app itself.
            assert_eq!(body["boot_pid"], body["pid"]);
            body["backend_pid"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(backends.len(), 2);
}

/// Ruby's Process.fork reseeds rand and the worker calls srand again:
/// workers forked from one preloader draw different numbers.
#[test]
fn rails_workers_draw_different_random_numbers() {
    let Some((_pg, server)) = three_smart_workers() else {
        return;
    };
    let values: HashSet<String> = one_per_worker(&server, "GET", "/rand?sleep=0.5", 3)
        .iter()
        .map(|r| r.text())
        .collect();
    assert_eq!(values.len(), 3, "workers drew the same numbers: {values:?}");
}

/// The route a Rails developer takes on Debian 12: the app's Gemfile names
/// rails, pg and rustrack (`path:`); `bundle lock --local` resolves it
/// against Debian's gems offline (`bundle install --local` stops at gems
/// Debian installs without a gem directory, such as sprockets and pg);
/// `bundle binstubs rustrack` writes bin/rustrack, which starts the server
/// inside the bundle.
#[test]
fn a_rails_app_with_a_gemfile_runs_through_bin_rustrack() {
    if !rails_available() {
        return;
    }
    if !require_dep(runs_ok("bundle", &["--version"]), "Bundler", "bundler") {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let app = tempfile::Builder::new()
        .prefix("rustrack-rails.")
        .tempdir()
        .unwrap();
    copy_tree(&fixture("rails"), app.path());
    std::fs::write(
        app.path().join("Gemfile"),
        format!(
            "source \"https://rubygems.org\"\n\ngem \"rails\", \"~> 6.1.0\"\ngem \"pg\"\ngem \"rustrack\", path: {:?}\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let bundle_home = app.path().join(".bundle-home");
    for args in [&["lock", "--local"][..], &["binstubs", "rustrack"][..]] {
        let out = std::process::Command::new("bundle")
            .args(args)
            .current_dir(app.path())
            .env("BUNDLE_USER_HOME", &bundle_home)
            .env_remove("BUNDLE_GEMFILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bundle {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(app.path().join("bin/rustrack"));
    cmd.args(["start", "--address", "127.0.0.1", "--port", "0"])
        .args(["--environment", "production", "--envvar"])
        .arg(format!("DATABASE_URL={}", pg.url("rustrack_test")))
        .current_dir(app.path())
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path())
        .env("BUNDLE_USER_HOME", &bundle_home)
        .env_remove("BUNDLE_GEMFILE")
        .env_remove("RUSTRACK_BIN");
    let server = start_command(cmd, registry, 120);
    let r = server.request("POST", "/counters/bundled", &[], b"");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.logs());
    assert_eq!(r.json()["value"], 1);
    let info = server.get("/connection").json();
    assert_eq!(
        info["bundle_gemfile"],
        app.path().join("Gemfile").to_str().unwrap()
    );
    assert_eq!(info["eager_load"], true);
}

/// Copies a directory tree (the Rails fixture is small).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "Gemfile.lock" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
