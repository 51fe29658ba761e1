//! Warm-up requests served in the preloader before the first fork
//! (`--warmup-request`, `--warmup-rounds`) and the preloader's heap aging
//! (`--preload-gc`), against the real binary and `fixtures/warmup`, whose
//! app records every request it serves in a global that forked workers
//! inherit and show at `/inherited`.

mod common;

use common::*;

fn app() -> std::path::PathBuf {
    fixture("warmup")
}

/// What the preloader served before forking, as the worker that answers
/// `/inherited` found it in its memory.
fn inherited(server: &Server) -> (u64, Vec<serde_json::Value>) {
    let response = server.get("/inherited");
    assert_eq!(response.status, 200, "{}", server.logs());
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    (
        body["pid"].as_u64().unwrap(),
        body["served"].as_array().unwrap().clone(),
    )
}

/// The first log line containing `needle`, once it arrived (the log is
/// read from a pipe by another thread).
fn wait_log(server: &Server, needle: &str) -> String {
    server.wait_until(10, &format!("a log line with {needle:?}"), |s| {
        find_log(&s.logs, needle).is_some()
    });
    find_log(&server.logs, needle).unwrap()
}

fn requests(served: &[serde_json::Value]) -> Vec<&str> {
    served
        .iter()
        .map(|s| s["request"].as_str().unwrap())
        .collect()
}

#[test]
fn warmup_requests_reach_the_app_in_the_preloader_before_the_first_fork() {
    let server = start(
        &app(),
        &[
            "--warmup-request",
            "/page?x=1",
            "--warmup-request",
            "POST /submit",
        ],
    );
    let (worker_pid, served) = inherited(&server);
    // Two rounds by default, each serving the requests in order.
    assert_eq!(
        requests(&served),
        [
            "GET /page?x=1",
            "POST /submit",
            "GET /page?x=1",
            "POST /submit"
        ],
        "{}",
        server.logs()
    );
    for s in &served {
        assert_eq!(s["preloader"], true, "served by the preloader: {s}");
        assert_ne!(s["pid"].as_u64().unwrap(), worker_pid, "{s}");
        assert_eq!(s["warmup"], true, "env[\"rustrack.warmup\"]: {s}");
        assert_eq!(s["host"], "localhost", "{s}");
        assert_eq!(s["server"], "localhost:80", "{s}");
        assert_eq!(s["remote_addr"], "127.0.0.1", "{s}");
        assert!(s["accept"].as_str().unwrap().contains("text/html"), "{s}");
    }
    assert_eq!(served[0]["query"], "x=1");
    assert_eq!(served[1]["content_length"], "0");
    let summary = wait_log(&server, "[rustrack] warm-up: served 4 requests");
    assert!(summary.contains("2 paths × 2 rounds"), "{summary}");
    // Real requests are the workers' own, not warm-ups.
    assert_eq!(server.get("/page").status, 200);
}

#[test]
fn warmup_rounds_are_honoured() {
    let server = start(
        &app(),
        &[
            "--warmup-request",
            "/a",
            "--warmup-request",
            "/b",
            "--warmup-rounds",
            "3",
        ],
    );
    let (_, served) = inherited(&server);
    assert_eq!(
        requests(&served),
        ["GET /a", "GET /b", "GET /a", "GET /b", "GET /a", "GET /b"]
    );
}

#[test]
fn failing_warmup_requests_are_logged_and_the_server_still_serves() {
    let server = start(
        &app(),
        &[
            "--warmup-request",
            "/raise",
            "--warmup-request",
            "/five-hundred",
            "--warmup-request",
            "/after",
            "--warmup-rounds",
            "1",
        ],
    );
    let (_, served) = inherited(&server);
    // A failure does not stop the requests after it.
    assert_eq!(
        requests(&served),
        ["GET /raise", "GET /five-hundred", "GET /after"]
    );
    // The summary comes last.
    wait_log(&server, "[rustrack] warm-up: served");
    let logs = server.logs();
    assert!(
        logs.contains("warm-up request GET /raise (round 1) answered 500"),
        "{logs}"
    );
    // The exception, with its backtrace into the app.
    assert!(logs.contains("RuntimeError: warm-up boom"), "{logs}");
    assert!(logs.contains("fixtures/warmup/config.ru:"), "{logs}");
    assert!(
        logs.contains("warm-up request GET /five-hundred (round 1) answered 500"),
        "{logs}"
    );
    assert!(!logs.contains("GET /after (round 1) answered"), "{logs}");
    assert!(
        logs.contains("served 3 requests (3 paths × 1 round)")
            && logs.contains("2 outside 2xx/3xx"),
        "{logs}"
    );
    assert_eq!(server.get("/after").status, 200);
    // The worker's responses reach the client: the warm-up's discarding
    // sink is gone from the preloader before it forks.
    assert_eq!(server.get("/after").body, b"<p>/after</p>\n");
}

#[test]
fn no_warmup_without_the_flag() {
    let server = start(&app(), &[]);
    let (_, served) = inherited(&server);
    assert!(served.is_empty(), "{served:?}");
    assert!(
        find_log(&server.logs, "warm-up").is_none(),
        "{}",
        server.logs()
    );
}

#[test]
fn malformed_warmup_requests_are_refused_on_the_command_line() {
    for bad in ["page", "get /page", "/a b"] {
        let out = std::process::Command::new(bin())
            .args(["start", "--warmup-request", bad])
            .arg(app())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--warmup-request"), "{bad:?}: {stderr}");
    }
}

/// The numbers in the preloader's heap line: `old objects A of B live → C
/// of D live`.
fn heap_counts(line: &str) -> [u64; 4] {
    let numbers: Vec<u64> = line
        .split_once("old objects ")
        .unwrap_or_else(|| panic!("no counts in {line:?}"))
        .1
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(4)
        .map(|w| w.parse().unwrap())
        .collect();
    numbers.try_into().unwrap()
}

#[test]
fn preload_gc_age_promotes_the_survivors_and_trims_malloc() {
    let server = start(&app(), &["--preload-gc", "age"]);
    let line = wait_log(&server, "[rustrack] preloader heap (--preload-gc age)");
    let [old_before, live_before, old_after, live_after] = heap_counts(&line);
    // config.ru's last 20,000 strings are young when it returns (a few
    // objects that were old before may have died since).
    assert!(old_after >= old_before + 15_000, "{line}");
    // What stays young is what Ruby never promotes (objects without write
    // barriers): a small remainder.
    assert!(live_after - old_after < live_after / 10, "{line}");
    assert!(live_after <= live_before, "{line}");
    assert!(line.contains("full GCs to age them"), "{line}");
    assert!(line.contains("compacted"), "{line}");
    assert!(line.contains("malloc_trim released"), "{line}");
    // Workers forked from the aged heap serve, and inherited it.
    let heap = server.get("/heap");
    assert_eq!(heap.status, 200, "{}", server.logs());
    let stat: serde_json::Value = serde_json::from_slice(&heap.body).unwrap();
    assert!(
        stat["old_objects"].as_u64().unwrap() >= old_after - 1000,
        "{stat}"
    );
    assert_eq!(server.get("/page").status, 200);
}

#[test]
fn preload_gc_compact_stays_one_gc_and_a_compaction() {
    let server = start(&app(), &["--preload-gc", "compact"]);
    let line = wait_log(&server, "[rustrack] preloader heap (--preload-gc compact)");
    assert!(line.contains("compacted"), "{line}");
    assert!(!line.contains("malloc_trim"), "{line}");
    assert!(!line.contains("to age them"), "{line}");
}

/// With several apps, each app's preloader serves its own `warmup_requests`
/// (the instance's `--warmup-request` list names APP_ROOT's paths), and
/// mounted under a prefix the app still sees its own paths.
#[test]
fn each_app_of_several_warms_up_with_its_own_requests() {
    let fixtures = app().parent().unwrap().to_path_buf();
    let server = start(
        &fixtures,
        &[
            "--warmup-request",
            "/not-for-this-app",
            "--app",
            r#"{"route": "/w", "root": "warmup", "warmup_requests": ["/page?x=2"], "min_instances": 1}"#,
        ],
    );
    let response = server.get("/w/inherited");
    assert_eq!(response.status, 200, "{}", server.logs());
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let served = body["served"].as_array().unwrap();
    assert_eq!(
        requests(served),
        ["GET /page?x=2", "GET /page?x=2"],
        "{}",
        server.logs()
    );
}
