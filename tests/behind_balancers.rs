//! rustrack behind real load balancers, with the configuration snippets
//! from docs/deployment.md (read from the document itself, so the docs
//! cannot drift from what is tested): two instances, steady traffic, one
//! instance stopped gracefully, and not one failed request.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// The fenced block after `<!-- tested: NAME -->` in docs/deployment.md.
fn snippet(name: &str) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deployment.md"))
            .unwrap();
    let marker = format!("<!-- tested: {name} -->");
    let after = &doc[doc.find(&marker).expect("the marker") + marker.len()..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

fn fill(text: &str, values: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!out.contains("{{"), "unfilled placeholder in:\n{out}");
    out
}

/// A balancer process, killed on drop.
struct Balancer(Child);

impl Drop for Balancer {
    fn drop(&mut self) {
        // TERM, so nginx's master takes its workers with it.
        kill(self.0.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `/` through the balancer on `port` from 4 threads until `stop`;
/// counts answers by instance (the events fixture names its worker's
/// parent) and failures.
struct Traffic {
    served: AtomicUsize,
    failures: Mutex<Vec<String>>,
    last_pids: Mutex<Vec<u64>>,
}

fn drive(port: u16, stop: &AtomicBool, traffic: &Traffic) {
    while !stop.load(Ordering::SeqCst) {
        let r = std::panic::catch_unwind(|| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            use std::io::Write;
            s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
                .unwrap();
            read_response(&mut std::io::BufReader::new(s))
        });
        match r {
            Ok(Ok(resp)) if resp.status == 200 => {
                traffic.served.fetch_add(1, Ordering::SeqCst);
                let pid = resp.json()["pid"].as_u64().unwrap_or(0);
                let mut last = traffic.last_pids.lock().unwrap();
                last.push(pid);
                let n = last.len();
                if n > 50 {
                    last.drain(..n - 50);
                }
            }
            Ok(Ok(resp)) => {
                traffic
                    .failures
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", resp.status, resp.text()))
            }
            Ok(Err(e)) => traffic.failures.lock().unwrap().push(e.to_string()),
            Err(_) => traffic
                .failures
                .lock()
                .unwrap()
                .push("connect failed".into()),
        }
    }
}

/// Stops `victim` gracefully under steady traffic through `port` and
/// checks that no request failed and that the survivor took over.
fn stop_one_under_traffic(port: u16, mut victim: Server, survivor: &Server) {
    let stop = AtomicBool::new(false);
    let traffic = Traffic {
        served: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
        last_pids: Mutex::new(Vec::new()),
    };
    std::thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        for _ in 0..4 {
            s.spawn(|| drive(port, &stop, &traffic));
        }
        wait_for(20, "traffic through the balancer", || {
            traffic.served.load(Ordering::SeqCst) >= 50
        });
        let stopped = Instant::now();
        victim.signal(libc::SIGTERM);
        let status = victim.wait_exit(60);
        assert!(status.success(), "{status}\n{}", victim.logs());
        let before = traffic.served.load(Ordering::SeqCst);
        wait_for(20, "traffic after the stop", || {
            traffic.served.load(Ordering::SeqCst) >= before + 50
        });
        eprintln!(
            "stopped one instance in {:?} under load: {} served",
            stopped.elapsed(),
            traffic.served.load(Ordering::SeqCst)
        );
    });
    let failures = traffic.failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}\nsurvivor:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        survivor.logs()
    );
    // Everything at the end came from the survivor's workers.
    let survivors = survivor.worker_pids();
    let last = traffic.last_pids.into_inner().unwrap();
    assert!(
        last.iter().all(|p| survivors.contains(&(*p as u32))),
        "{last:?} vs {survivors:?}"
    );
}

#[test]
fn haproxy_with_health_checks_loses_no_request_when_an_instance_stops() {
    if !require_dep(on_path("haproxy").is_some(), "HAProxy", "haproxy") {
        return;
    }
    let args = [
        "--min-instances",
        "2",
        "--health-check-path",
        "/up",
        "--shutdown-delay",
        "2",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--proxy-protocol",
    ];
    let a = start(&fixture("events"), &args);
    let b = start(&fixture("events"), &args);
    let port = free_port();
    let config = format!(
        "global\n    maxconn 512\ndefaults\n    mode http\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n\n{}",
        fill(
            &snippet("haproxy"),
            &[
                ("PORT", port.to_string()),
                ("ADDRESS_A", format!("127.0.0.1:{}", a.port)),
                ("ADDRESS_B", format!("127.0.0.1:{}", b.port)),
            ],
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let _haproxy = Balancer(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for_port(port, 20), "haproxy did not listen");
    // Both instances in rotation (health checks passed).
    let pids = Mutex::new(std::collections::HashSet::new());
    wait_for(20, "both instances behind haproxy", || {
        let r = get_through(port);
        if let Some(p) = r {
            pids.lock().unwrap().insert(p);
        }
        let seen = pids.lock().unwrap();
        a.worker_pids().iter().any(|p| seen.contains(&(*p as u64)))
            && b.worker_pids().iter().any(|p| seen.contains(&(*p as u64)))
    });
    stop_one_under_traffic(port, a, &b);
}

#[test]
fn nginx_over_unix_sockets_loses_no_request_when_an_instance_stops() {
    if !require_dep(
        on_path("nginx").is_some() || Path::new("/usr/sbin/nginx").exists(),
        "nginx",
        "nginx",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sock_a, sock_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let with = |sock: &Path| {
        start(
            &fixture("events"),
            &[
                "--min-instances",
                "2",
                "--socket",
                sock.to_str().unwrap(),
                "--trusted-proxy",
                "unix",
                "--shutdown-delay",
                "1",
            ],
        )
    };
    let (a, b) = (with(&sock_a), with(&sock_b));
    let port = free_port();
    let prefix = dir.path();
    let config = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {p}/nginx.pid;\n\
         error_log {p}/error.log;\nevents {{ worker_connections 512; }}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {p}/body;\nproxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\nuwsgi_temp_path {p}/uwsgi;\nscgi_temp_path {p}/scgi;\n{}\n}}\n",
        fill(
            &snippet("nginx"),
            &[
                ("PORT", port.to_string()),
                ("SOCKET_A", sock_a.display().to_string()),
                ("SOCKET_B", sock_b.display().to_string()),
            ],
        ),
        p = prefix.display()
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let nginx = on_path("nginx").unwrap_or_else(|| "/usr/sbin/nginx".into());
    let _nginx = Balancer(
        Command::new(nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for_port(port, 20), "nginx did not listen");
    // The app sees the client, told by the trusted proxy on the socket.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    s.write_all(b"GET /env HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let env = read_response(&mut std::io::BufReader::new(s))
        .unwrap()
        .json();
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["SERVER_NAME"], "shop.example");
    stop_one_under_traffic(port, a, &b);
}

fn get_through(port: u16) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    use std::io::Write;
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .ok()?;
    let r = read_response(&mut std::io::BufReader::new(s)).ok()?;
    (r.status == 200)
        .then(|| r.json()["pid"].as_u64())
        .flatten()
}

/// The Kubernetes and Prometheus snippets: parsed (Ruby's YAML), and their
/// rustrack arguments run for real with the paths they probe and scrape.
#[test]
fn the_kubernetes_and_prometheus_snippets_match_what_rustrack_serves() {
    let yaml_to_json = |text: &str| -> serde_json::Value {
        let out = Command::new("ruby")
            .args([
                "-ryaml",
                "-rjson",
                "-e",
                "puts JSON.generate(YAML.safe_load($stdin.read))",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(text.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let deployment = yaml_to_json(&snippet("kubernetes"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let value_of =
        |flag: &str| -> String { args[args.iter().position(|a| a == flag).unwrap() + 1].clone() };
    let health = value_of("--health-check-path");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        health.as_str()
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        health.as_str()
    );
    let delay: u64 = value_of("--shutdown-delay").parse().unwrap();
    let timeout: u64 = value_of("--shutdown-timeout").parse().unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= delay + timeout);
    let scrape = yaml_to_json(&snippet("prometheus"));
    let metrics_path = scrape["scrape_configs"][0]["metrics_path"]
        .as_str()
        .unwrap()
        .to_string();

    // Run the container's arguments (the app, port and listen address
    // swapped for the test's), and probe what the snippets probe.
    let mut run: Vec<String> = args[2..].to_vec(); // after "rustrack start"
    run[0] = fixture("events").display().to_string();
    let set = |run: &mut Vec<String>, flag: &str, value: String| {
        let i = run.iter().position(|a| a == flag).unwrap();
        run[i + 1] = value;
    };
    // The harness picks the port (--address 127.0.0.1 --port 0).
    let i = run.iter().position(|a| a == "--port").unwrap();
    run.drain(i..i + 2);
    // Port 0, read back from the log: a free port picked beforehand may be
    // taken by a parallel test before rustrack binds it.
    set(&mut run, "--metrics-address", "127.0.0.1:0".into());
    set(&mut run, "--environment", "development".into());
    let refs: Vec<&str> = run[1..].iter().map(String::as_str).collect();
    let server = start(Path::new(&run[0]), &refs);
    assert_eq!(server.get(&health).status, 200);
    let line = find_log(&server.logs, "metrics on http://").expect("the metrics address logged");
    let metrics: u16 = line
        .split("metrics on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{metrics}{metrics_path}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}
