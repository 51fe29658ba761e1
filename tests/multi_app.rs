//! Several apps on one instance (`--app`): routing by host and prefix, one
//! pool limit shared by application groups, scale to zero, isolation.
//!
//! The apps are `fixtures/apps/{alpha,beta,gamma}`: each answers with its
//! name, PID, SCRIPT_NAME, PATH_INFO, APP_SECRET and uid.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use rustrack::client::http::Connection;
use serde_json::Value;

fn apps_dir() -> PathBuf {
    fixture("apps")
}

/// GET `path` with `Host: host`; the JSON the app answered (or panics with
/// the response).
fn ask(server: &Server, host: &str, path: &str) -> Value {
    let r = get_host(server, host, path);
    assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn get_host(server: &Server, host: &str, path: &str) -> Response {
    server
        .raw(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
}

/// Each app's report in `status --json`, by app name.
fn groups(server: &Server) -> BTreeMap<String, Value> {
    let status = server.status();
    status["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups in {status}"))
        .iter()
        .map(|g| (g["app"].as_str().unwrap().to_string(), g.clone()))
        .collect()
}

/// PIDs of an app's workers that serve (ready or busy).
fn serving_pids(group: &Value) -> Vec<u64> {
    let mut pids: Vec<u64> = group["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ready" || w["state"] == "busy")
        .filter_map(|w| w["pid"].as_u64())
        .collect();
    pids.sort();
    pids
}

fn processes(group: &Value) -> u64 {
    group["processes"].as_u64().unwrap()
}

#[test]
fn apps_are_routed_by_host_and_prefix_and_see_only_their_own_environment() {
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let server = start(
        &apps_dir(),
        &[
            "--app",
            r#"{"route": "alpha.test", "root": "alpha", "envvars": {"APP_SECRET": "alpha's"}}"#,
            "--app",
            "*.beta.test=beta",
            "--app",
            "/gamma=gamma",
            "--metrics-address",
            &metrics,
        ],
    );
    let a = ask(&server, "alpha.test", "/x?y=1");
    assert_eq!(a["app"], "alpha");
    assert_eq!(a["secret"], "alpha's");
    assert_eq!(
        (a["script_name"].as_str(), a["path_info"].as_str()),
        (Some(""), Some("/x"))
    );
    let b = ask(&server, "www.beta.test:8080", "/x");
    assert_eq!(b["app"], "beta");
    // One app's variables are not another's.
    assert_eq!(b["secret"], Value::Null);
    let g = ask(&server, "anything.example", "/gamma/a/b");
    assert_eq!(g["app"], "gamma");
    assert_eq!(g["script_name"], "/gamma");
    assert_eq!(g["path_info"], "/a/b");
    let root = ask(&server, "alpha.test", "/gamma");
    // An exact host beats a prefix on any host.
    assert_eq!(root["app"], "alpha");
    let g = ask(&server, "anything.example", "/gamma");
    assert_eq!(
        (g["script_name"].as_str(), g["path_info"].as_str()),
        (Some("/gamma"), Some(""))
    );

    // No app for this host and path: the front end answers, no worker starts.
    let before = server.status()["processes"].as_u64().unwrap();
    for (host, path) in [
        ("beta.test", "/"),
        ("other.example", "/"),
        ("other.example", "/gammas"),
    ] {
        let r = get_host(&server, host, path);
        assert_eq!(r.status, 404, "{host}{path}");
        assert!(r.text().contains("no app is served here"), "{}", r.text());
    }
    assert_eq!(server.status()["processes"].as_u64().unwrap(), before);

    // Each app's worker is its own app's: a child of that app's preloader.
    let groups = groups(&server);
    assert_eq!(groups.len(), 3);
    for (name, answer) in [("alpha", &a), ("beta", &b), ("gamma", &g)] {
        let group = &groups[name];
        let pid = answer["pid"].as_u64().unwrap();
        assert_eq!(serving_pids(group), vec![pid], "{name}: {group}");
        let template = group["template"]["pid"].as_u64().unwrap();
        assert_eq!(ppid_of(pid as u32), Some(template as u32), "{name}");
    }
    assert_eq!(groups["beta"]["route"], "*.beta.test");
    // The instance's workers list carries each worker's app.
    let status = server.status();
    let apps: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps.len(), 3, "{status}");

    let mut conn = Connection::open("127.0.0.1", metrics_port, Duration::from_secs(10)).unwrap();
    let text = conn.get("/metrics").unwrap().text();
    assert!(
        text.contains("rustrack_requests_total{app=\"gamma\",class=\"2xx\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("rustrack_requests_total{app=\"-\",class=\"4xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("rustrack_processes{app=\"beta\",state=\"ready\"} 1"),
        "{text}"
    );

    // The human status has a section per app.
    let out = server.cli(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    for section in [
        "App alpha (alpha.test)",
        "App beta (*.beta.test)",
        "App gamma (/gamma)",
    ] {
        assert!(table.contains(section), "{table}");
    }
}

#[test]
fn a_prefixed_app_passes_rack_lint() {
    let server = start(
        fixture("lint").parent().unwrap(),
        &["--app", "/mounted/here=lint", "--app", "default=hello"],
    );
    for path in ["/mounted/here", "/mounted/here/", "/mounted/here/echo?x=1"] {
        let r = server.get(path);
        assert_ne!(r.status, 500, "{path}: {}", r.text());
    }
    let r = server.request("POST", "/mounted/here/echo", &[], b"some body");
    assert_ne!(r.status, 500, "{}", r.text());
    assert!(!server.logs().contains("LintError"), "{}", server.logs());
    assert_eq!(server.get("/").text(), "Hello world\n");
}

#[test]
fn a_burst_on_one_app_takes_the_idle_workers_of_the_others_and_gives_them_back() {
    let server = start(
        &apps_dir(),
        &[
            "--max-pool-size",
            "3",
            "--pool-idle-time",
            "2",
            "--app",
            "alpha.test=alpha",
            "--app",
            r#"{"route": "beta.test", "root": "beta", "min_instances": 1}"#,
            "--app",
            r#"{"route": "gamma.test", "root": "gamma", "min_instances": 1}"#,
        ],
    );
    server.wait_until(60, "beta and gamma at their minimum", |s| {
        let g = groups(s);
        serving_pids(&g["beta"]).len() == 1 && serving_pids(&g["gamma"]).len() == 1
    });
    let port = server.port;
    let burst: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                use std::io::Write;
                s.write_all(
                    b"GET /sleep?s=1.5 HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
                common::read_to_close(&mut s, "a burst response")
            })
        })
        .collect();
    // While alpha is busy: it grows into the others' room, never past the
    // shared limit.
    let mut most_alpha = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while burst.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        let g = groups(&server);
        let total: u64 = g.values().map(processes).sum();
        assert!(total <= 3, "over the shared limit: {g:?}");
        most_alpha = most_alpha.max(processes(&g["alpha"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in burst {
        let response = String::from_utf8_lossy(&t.join().unwrap()).into_owned();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    assert_eq!(
        most_alpha, 3,
        "alpha should have taken beta's and gamma's places"
    );
    assert!(
        server.logs().contains("to make room for alpha"),
        "{}",
        server.logs()
    );
    // Calm again: alpha's idle workers retire and the others get their
    // minimum back.
    server.wait_until(30, "beta and gamma back at their minimum", |s| {
        let g = groups(s);
        serving_pids(&g["beta"]).len() == 1
            && serving_pids(&g["gamma"]).len() == 1
            && processes(&g["alpha"]) <= 1
    });
}

#[test]
fn an_app_nobody_visits_goes_to_zero_and_its_next_request_waits_for_a_start() {
    let server = start(
        &apps_dir(),
        &[
            "--pool-idle-time",
            "1",
            "--app",
            "alpha.test=alpha",
            "--app",
            "beta.test=beta",
        ],
    );
    // Nothing runs before the first request.
    assert_eq!(server.status()["processes"], 0);
    let first = ask(&server, "alpha.test", "/");
    server.wait_until(30, "alpha back to zero workers", |s| {
        processes(&groups(s)["alpha"]) == 0
    });
    // Out of the pool at once; its process exits on its own time
    // (stopping_worker_process, at_exit), so wait for that too.
    let first_pid = first["pid"].as_u64().unwrap() as u32;
    server.wait_until(10, "the idle worker's process to exit", |_| {
        !alive(first_pid)
    });
    let second = ask(&server, "alpha.test", "/");
    assert_ne!(first["pid"], second["pid"]);
    let alpha = &groups(&server)["alpha"];
    assert_eq!(alpha["cold_starts"], 2, "{alpha}");
    assert!(
        alpha["last_cold_start_ms"].as_f64().unwrap() > 0.0,
        "{alpha}"
    );
    assert!(
        server.logs().contains("started from zero workers"),
        "{}",
        server.logs()
    );
}

#[test]
fn a_broken_app_answers_503_while_the_others_serve() {
    let fixtures = fixture("hello").parent().unwrap().to_path_buf();
    let server = start(
        &fixtures,
        &["--app", "good.test=hello", "--app", "bad.test=broken"],
    );
    let started = Instant::now();
    let bad = get_host(&server, "bad.test", "/");
    assert_eq!(bad.status, 503, "{}", bad.text());
    assert!(started.elapsed() < Duration::from_secs(60));
    let good = get_host(&server, "good.test", "/");
    assert_eq!((good.status, good.text().as_str()), (200, "Hello world\n"));
    // Still refused at once while it backs off, and the good app serves on.
    let bad = get_host(&server, "bad.test", "/");
    assert_eq!(bad.status, 503);
    assert!(bad.header("retry-after").is_some(), "{:?}", bad.headers);
    assert_eq!(get_host(&server, "good.test", "/").status, 200);
    let health = groups(&server);
    assert!(
        health["broken"]["last_spawn_error"]
            .as_str()
            .unwrap_or("")
            .contains("broken fixture"),
        "{health:?}"
    );
}

#[test]
fn restarting_one_app_leaves_the_others_alone() {
    let server = start(
        &apps_dir(),
        &[
            "--app",
            r#"{"route": "alpha.test", "root": "alpha", "min_instances": 1}"#,
            "--app",
            r#"{"route": "beta.test", "root": "beta", "min_instances": 1}"#,
        ],
    );
    server.wait_until(60, "both apps at their minimum", |s| {
        let g = groups(s);
        serving_pids(&g["alpha"]).len() == 1 && serving_pids(&g["beta"]).len() == 1
    });
    let before = groups(&server);
    let alpha_root = apps_dir().join("alpha");
    let out = server.cli(&["restart", alpha_root.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_until(60, "alpha's worker replaced", |s| {
        let g = groups(s);
        let pids = serving_pids(&g["alpha"]);
        pids.len() == 1 && pids != serving_pids(&before["alpha"])
    });
    let after = groups(&server);
    assert_eq!(serving_pids(&after["beta"]), serving_pids(&before["beta"]));
    assert_eq!(after["beta"]["generation"], 1);
    assert_eq!(after["alpha"]["generation"], 2);
    // A root the instance does not serve is an error, not a restart of all.
    let out = server.cli(&["restart", "/"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not serve"));
}

/// Each app may run as its own user (the front end runs as root here, as
/// `--user` requires).
#[test]
fn each_app_runs_as_its_own_user() {
    use std::os::unix::fs::PermissionsExt;
    let registry = tempfile::tempdir().unwrap();
    std::fs::set_permissions(registry.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The apps where nobody can read them, wherever this checkout lives.
    let apps = tempfile::tempdir().unwrap();
    std::fs::set_permissions(apps.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for app in ["alpha", "beta"] {
        std::fs::create_dir(apps.path().join(app)).unwrap();
        std::fs::copy(
            apps_dir().join(app).join("config.ru"),
            apps.path().join(app).join("config.ru"),
        )
        .unwrap();
    }
    let server = start_with_env(
        apps.path(),
        &[
            "--app",
            r#"{"route": "alpha.test", "root": "alpha", "user": "nobody"}"#,
            "--app",
            "beta.test=beta",
        ],
        &[(
            "RUSTRACK_INSTANCE_REGISTRY_DIR",
            registry.path().to_str().unwrap(),
        )],
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let me = nix::unistd::geteuid().as_raw();
    assert_eq!(ask(&server, "alpha.test", "/")["user"], nobody);
    assert_eq!(ask(&server, "beta.test", "/")["user"], me);
    // A request body spilled to a file reaches the unprivileged app too.
    let big = vec![b'x'; 2 << 20];
    let raw = [
        format!(
            "POST / HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            big.len()
        )
        .into_bytes(),
        big,
    ]
    .concat();
    assert_eq!(server.raw(&raw).status, 200);
}

#[test]
fn mistakes_in_app_declarations_stop_start_with_a_clear_error() {
    for (args, expected) in [
        (vec!["--app", "alpha"], "ROUTE=APP_ROOT"),
        (
            vec!["--app", "a.test=alpha", "--app", "A.test=beta"],
            "two apps are declared for a.test",
        ),
        (vec!["--app", "a.test=nowhere"], "does not exist"),
        (
            vec![
                "--app",
                r#"{"route": "a.test", "root": "alpha", "min_instance": 1}"#,
            ],
            "min_instance",
        ),
    ] {
        let (mut child, _registry, logs) = spawn(&apps_dir(), &args, &[]);
        let (status, output) = wait_for_exit(&mut child, &logs, 30);
        assert!(!status.success(), "{args:?}");
        assert!(output.contains(expected), "{args:?}: {output}");
    }
}
