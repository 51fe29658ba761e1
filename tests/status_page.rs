//! The live status page (`/status` on the metrics listener), loaded in a
//! real browser (Debian's chromium, headless) while traffic runs: the page
//! must show every worker, read from its DOM rather than its pixels. A
//! screenshot is kept for a person to look at.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Let the page's script fetch /status.json and render.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium")
}

#[test]
fn the_status_page_shows_every_worker_while_traffic_runs() {
    if !require_dep(on_path("chromium").is_some(), "chromium", "chromium") {
        return;
    }
    let metrics = free_port();
    let addr = format!("127.0.0.1:{metrics}");
    let server = start(
        &fixture("events"),
        &["--min-instances", "3", "--metrics-address", &addr],
    );
    server.wait_until(20, "three workers", |s| s.ready_count() == 3);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = SetOnDrop(&stop);
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(server.get("/sleep?s=0.01").status, 200);
                }
            });
        }
        server.wait_until(20, "some traffic", |s| {
            s.status()["processed_total"].as_u64() >= Some(50)
        });
        let url = format!("http://{addr}/status");
        let out = chromium(&["--dump-dom"], &url);
        let dom = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for pid in server.worker_pids() {
            assert!(
                dom.contains(&format!("class=\"worker\" data-pid=\"{pid}\"")),
                "worker {pid} is not on the page:\n{dom}"
            );
        }
        let preloader = server.status()["template"]["pid"].as_u64().unwrap();
        assert!(dom.contains(&format!("class=\"template\" data-pid=\"{preloader}\"")));
        // The last minute's figures are filled in (not the placeholders).
        assert!(!dom.contains("<b id=\"rate\">–</b>"), "{dom}");
        assert!(dom.contains(" ms / "), "{dom}");

        let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let shot = shots.join("status-page.png");
        let arg = format!("--screenshot={}", shot.display());
        let out = chromium(&[&arg, "--window-size=1100,700"], &url);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
        eprintln!("status page screenshot: {}", shot.display());
    });
    // The JSON behind it.
    let json = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/status.json")])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["status"]["workers"].as_array().unwrap().len(), 3);
    assert_eq!(v["recent"]["per_second"].as_array().unwrap().len(), 60);
    assert!(v["recent"]["rate"].as_f64().unwrap() > 0.0);
}
