//! rustrack as a gem: `gem build` packs it, an app's Gemfile can point at
//! it with `path:` (`bundle install --local`, then `bundle exec rustrack
//! start`), and `gem install` builds the Rust binary with cargo.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// RubyGems and Bundler, which CI must have: see `require_dep`.
fn tools_available() -> bool {
    require_dep(
        runs_ok("gem", &["--version"]),
        "RubyGems (gem)",
        "ruby-rubygems",
    ) && require_dep(runs_ok("bundle", &["--version"]), "Bundler", "bundler")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `gem build rustrack.gemspec` into `dir`; returns the .gem's path.
fn build_gem(dir: &Path) -> PathBuf {
    let gem = dir.join("rustrack.gem");
    run(Command::new("gem")
        .args(["build", "rustrack.gemspec", "--output"])
        .arg(&gem)
        .current_dir(repo()));
    gem
}

/// The canonical path of the executable `pid` runs.
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

#[test]
fn the_gem_packs_the_source_the_executable_and_the_extension() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gem = build_gem(dir.path());
    let spec = run(Command::new("ruby")
        .arg("-e")
        .arg(
            "require \"rubygems/package\"; s = Gem::Package.new(ARGV[0]).spec; \
         puts s.name, s.version, s.executables.inspect, s.extensions.inspect, \
              s.require_paths.inspect, s.dependencies.map(&:to_s).inspect, s.files",
        )
        .arg(&gem));
    let lines: Vec<&str> = spec.lines().collect();
    assert_eq!(lines[0], "rustrack");
    assert_eq!(lines[1], env!("CARGO_PKG_VERSION"));
    assert_eq!(lines[2], r#"["rustrack"]"#);
    assert_eq!(lines[3], r#"["ext/rustrack/extconf.rb"]"#);
    // RubyGems adds the extension's build dir to the require paths.
    assert!(lines[4].contains(r#""ruby/lib""#), "{spec}");
    assert!(lines[5].contains("rack"), "{spec}");
    for file in [
        "exe/rustrack",
        "ext/rustrack/extconf.rb",
        "ruby/lib/rustrack.rb",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "src/rack/inherited.rs",
    ] {
        assert!(
            lines.contains(&file),
            "{file} missing from the gem:\n{spec}"
        );
    }
}

/// The README's Bundler route: a Gemfile with `gem "rustrack", path: ...`,
/// `bundle install --local`, `bundle exec rustrack start`. Bundler runs no
/// extension for a path gem, so exe/rustrack finds the checkout's cargo
/// build itself and execs it: the process bundle started is the server.
#[test]
fn bundle_exec_rustrack_start_serves_an_app_from_a_path_gemfile() {
    // Dalli must be installed for "not requirable" below to show the
    // bundle hiding it.
    let dalli = runs_ok("ruby", &["-e", "require 'dalli'"]);
    if !tools_available() || !require_dep(dalli, "Dalli", "ruby-dalli") {
        return;
    }
    let app = tempfile::Builder::new()
        .prefix("rustrack-gem-app.")
        .tempdir()
        .unwrap();
    std::fs::copy(
        fixture("bundled").join("config.ru"),
        app.path().join("config.ru"),
    )
    .unwrap();
    std::fs::write(
        app.path().join("Gemfile"),
        format!(
            "source \"https://rubygems.org\"\n\ngem \"rustrack\", path: {:?}\ngem \"rack\"\n",
            repo().to_str().unwrap()
        ),
    )
    .unwrap();
    // Bundler installs the path gem's executable into GEM_HOME/bin: keep
    // that (and Bundler's own files) inside the test's directory.
    let gem_home = app.path().join(".gems");
    let bundle_home = app.path().join(".bundle-home");
    let bundle = |args: &[&str]| {
        let mut cmd = Command::new("bundle");
        cmd.args(args)
            .current_dir(app.path())
            .env("GEM_HOME", &gem_home)
            .env("BUNDLE_USER_HOME", &bundle_home)
            .env_remove("BUNDLE_GEMFILE")
            .env_remove("RUSTRACK_BIN");
        cmd
    };
    let installed = run(&mut bundle(&["install", "--local"]));
    assert!(
        installed.contains("Using rustrack 0.1.0 from source"),
        "{installed}"
    );

    let registry = tempfile::tempdir().unwrap();
    let mut cmd = bundle(&["exec", "rustrack", "start"]);
    cmd.args(["--address", "127.0.0.1", "--port", "0"])
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path());
    let mut server = start_command(cmd, registry, 120);
    let report = server.get("/").json();
    assert_eq!(
        report["bundle_gemfile"],
        app.path().join("Gemfile").to_str().unwrap()
    );
    let gems = report["gems"].as_array().unwrap();
    assert!(gems.contains(&serde_json::json!("rustrack")), "{report}");
    assert_eq!(report["dalli_requirable"], false, "{report}");
    // exe/rustrack exec'd a cargo build of this checkout.
    let exe = exe_of(server.pid);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    assert!(
        exe.starts_with(target.canonicalize().unwrap()) && exe.ends_with("rustrack"),
        "bundle exec ran {}",
        exe.display()
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(30).success(), "{}", server.logs());
}

/// `gem install` runs ext/rustrack/extconf.rb, which builds the binary with
/// cargo into the gem's libexec/. Built unoptimised, in a target directory
/// under target/ that later runs reuse, to keep the suite's time down.
#[test]
fn gem_install_builds_the_server_with_cargo() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gem = build_gem(dir.path());
    let gem_home = dir.path().join("gems");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("gem-install");
    let started = std::time::Instant::now();
    run(Command::new("gem")
        .args(["install", "--local", "--no-document"])
        .arg(&gem)
        .env("GEM_HOME", &gem_home)
        .env("RUSTRACK_CARGO_PROFILE", "dev")
        .env("CARGO_TARGET_DIR", &target));
    eprintln!("gem install took {:?}", started.elapsed());
    let version = env!("CARGO_PKG_VERSION");
    let libexec = gem_home.join(format!("gems/rustrack-{version}/libexec/rustrack"));
    assert!(libexec.is_file(), "{} was not built", libexec.display());

    // RubyGems' wrapper → exe/rustrack → libexec/rustrack.
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(gem_home.join("bin/rustrack"));
    cmd.arg("start")
        .arg(fixture("hello"))
        .args(["--address", "127.0.0.1", "--port", "0"])
        .env("GEM_HOME", &gem_home)
        .env("RUSTRACK_INSTANCE_REGISTRY_DIR", registry.path())
        .env_remove("RUSTRACK_BIN");
    let server = start_command(cmd, registry, 120);
    assert_eq!(server.get("/").text(), "Hello world\n");
    assert_eq!(exe_of(server.pid), libexec.canonicalize().unwrap());
}
