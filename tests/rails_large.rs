//! fixtures/rails-large, the large Rails 6.1 app the memory figures are
//! measured on (32 models on SQLite, 341 templates, 5 locales): it boots in
//! production under smart and direct spawning, builds its database at boot
//! (under a lock when several processes boot at once), answers every page
//! of its page mix (pages.txt) with the expected content, and its workers
//! end up with well over 100 MB RSS, having compiled their templates after
//! the fork.
//!
//! Needs Debian's ruby-rails and ruby-sqlite3 (script/setup installs both).
//! Without them the tests fail when CI=true and skip loudly otherwise.

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;

const MB: u64 = 1024 * 1024;

/// Rails 6.1 and the sqlite3 gem the fixture needs, or a failure under
/// CI=true and a loud skip elsewhere.
fn dependencies_present(test: &str) -> bool {
    let out = std::process::Command::new("ruby")
        .args([
            "-e",
            "require 'rails'; abort \"Rails #{Rails.version}, need 6.1\" unless Rails.version.start_with?('6.1'); \
             gem 'sqlite3', '~> 1.4'; require 'sqlite3'",
        ])
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("ruby could not run: {e}"),
    };
    let why = format!(
        "fixtures/rails-large needs Rails 6.1 and the sqlite3 gem \
         (apt-get install ruby-rails ruby-sqlite3; script/setup does): {why}"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}");
    }
    skip_loudly(test, &why);
    false
}

fn pages() -> Vec<String> {
    let list = std::fs::read_to_string(fixture("rails-large").join("pages.txt")).unwrap();
    let pages: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert!(
        pages.len() >= 8,
        "pages.txt lists only {} pages",
        pages.len()
    );
    pages
}

/// The locale a page is rendered in: a /de path prefix, ?locale=de, or en.
fn locale_of(page: &str) -> &str {
    const LOCALES: [&str; 5] = ["en", "de", "fr", "es", "ja"];
    let (path, query) = page.split_once('?').unwrap_or((page, ""));
    if let Some(l) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("locale="))
        .and_then(|l| LOCALES.iter().find(|x| **x == l))
    {
        return l;
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    LOCALES
        .iter()
        .find(|x| **x == first)
        .copied()
        .unwrap_or("en")
}

/// Checks one page's answer: 200, and for HTML the layout in the right
/// locale with every translation found; for the API, JSON with data.
fn check_page(server: &Server, page: &str, r: &Response) {
    assert_eq!(
        r.status,
        200,
        "GET {page} answered {}:\n{}\nlogs:\n{}",
        r.status,
        r.text().chars().take(2000).collect::<String>(),
        server.logs()
    );
    if page.starts_with("/api/") {
        let body = r.json();
        assert!(
            body.get("data").is_some() || body.get("counts").is_some(),
            "GET {page}: unexpected JSON {body}"
        );
        return;
    }
    let html = r.text();
    let lang = format!("<html lang=\"{}\">", locale_of(page));
    assert!(html.contains(&lang), "GET {page}: no {lang} in:\n{html}");
    assert!(
        html.contains("<body data-page=\"") && html.trim_end().ends_with("</html>"),
        "GET {page}: not the whole layout:\n{html}"
    );
    assert!(
        !html.contains("translation_missing") && !html.contains("translation missing"),
        "GET {page}: a translation is missing:\n{html}"
    );
}

/// Open files of `pid` that are the fixture's SQLite database.
fn database_fds(pid: u32, db: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with(&db.display().to_string()))
        .collect()
}

#[test]
fn rails_large_serves_its_page_mix_from_two_smart_workers() {
    let test = "rails_large_serves_its_page_mix_from_two_smart_workers";
    if !dependencies_present(test) {
        return;
    }
    // A database of its own, so this test also covers building it at boot.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rails-large.sqlite3");
    let db_env = format!("RAILS_LARGE_DATABASE={}", db.display());
    let started = Instant::now();
    let server = start(
        &fixture("rails-large"),
        &[
            "--environment",
            "production",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
            "--envvar",
            &db_env,
        ],
    );
    wait_for_ready_workers(&server, 2, 120);
    let boot = started.elapsed();
    assert!(db.exists(), "the app did not create {}", db.display());

    // The preloader read the database at boot and closed it before forking
    // (config.load_defaults 6.1: Rails' new connection handling): no
    // worker starts with the preloader's SQLite connection.
    let status = server.status();
    let preloader = status["preloader_pid"].as_u64().expect("a preloader") as u32;
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2);
    for pid in workers.iter().copied().chain([preloader]) {
        let open = database_fds(pid, &db);
        assert!(open.is_empty(), "pid {pid} holds {open:?} after the fork");
    }

    let before = server.get("/debug/memory").json();

    // The mix, from two clients at once so that both workers serve it.
    let pages = pages();
    let mix_started = Instant::now();
    std::thread::scope(|s| {
        for half in 0..2 {
            let (server, pages) = (&server, &pages);
            s.spawn(move || {
                let n = pages.len();
                for i in 0..n {
                    let page = &pages[(i + half * n / 2) % n];
                    check_page(server, page, &server.get(page));
                }
            });
        }
    });
    let mix = mix_started.elapsed();

    // Each worker did its lazy work after the fork: templates compiled into
    // methods, model schemas loaded from the database.
    let after = server.get("/debug/memory").json();
    let compiled = after["compiled_templates"].as_u64().unwrap();
    assert!(
        compiled >= 100,
        "worker {} compiled only {compiled} templates: {after}",
        after["pid"]
    );
    assert!(
        after["models_with_schema"].as_u64().unwrap() >= 32,
        "worker {} loaded few schemas: {after}",
        after["pid"]
    );

    let processed: u64 = server.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["processed"].as_u64().unwrap())
        .sum();
    let mut lines = vec![];
    for pid in server.worker_pids() {
        let rss = smaps_field(pid, "Rss");
        let pss = smaps_field(pid, "Pss");
        let dirty = private_dirty(pid);
        lines.push(format!(
            "worker {pid}: RSS {} MB, PSS {} MB, private dirty {} MB",
            rss / MB,
            pss / MB,
            dirty / MB
        ));
        assert!(
            rss > 100 * MB,
            "worker {pid} has only {} MB RSS after the mix",
            rss / MB
        );
    }
    eprintln!(
        "rails-large: ready in {:.1} s (database built at boot), {} pages x2 in {:.1} s, \
         {processed} requests; templates compiled {} -> {compiled} (worker {} then {}); {}",
        boot.as_secs_f64(),
        pages.len(),
        mix.as_secs_f64(),
        before["compiled_templates"],
        before["pid"],
        after["pid"],
        lines.join("; ")
    );
}

#[test]
fn rails_large_boots_two_direct_workers_on_one_new_database() {
    let test = "rails_large_boots_two_direct_workers_on_one_new_database";
    if !dependencies_present(test) {
        return;
    }
    // Both workers boot at once and find no database: one builds it under
    // the lock while the other waits, then both read it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rails-large.sqlite3");
    let db_env = format!("RAILS_LARGE_DATABASE={}", db.display());
    let server = start(
        &fixture("rails-large"),
        &[
            "--environment",
            "production",
            "--spawn-method",
            "direct",
            "--min-instances",
            "2",
            "--max-pool-size",
            "2",
            "--envvar",
            &db_env,
        ],
    );
    wait_for_ready_workers(&server, 2, 180);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // Every fourth page, from two clients, so both workers answer.
    let pages: Vec<String> = pages().into_iter().step_by(4).collect();
    let pids = std::sync::Mutex::new(std::collections::HashSet::new());
    std::thread::scope(|s| {
        for half in 0..2 {
            let (server, pages, pids) = (&server, &pages, &pids);
            s.spawn(move || {
                for page in pages.iter().skip(half).step_by(2) {
                    check_page(server, page, &server.get(page));
                    let pid = server.get("/debug/memory").json()["pid"].as_u64().unwrap();
                    pids.lock().unwrap().insert(pid);
                }
            });
        }
    });
    let status = server.status();
    assert_eq!(status["spawn_method"], "direct");
    assert!(status["preloader_pid"].is_null(), "{status}");
    eprintln!(
        "rails-large direct: {} pages answered by workers {:?}",
        pages.len(),
        pids.lock().unwrap()
    );
}
