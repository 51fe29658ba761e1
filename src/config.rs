//! What the front end tells the Ruby-side processes it starts.
//!
//! The preloader and direct-spawned workers are fresh execs of this binary
//! with a hidden subcommand; they get one [`AppSpec`] as JSON on their
//! command line, so every option that crosses the exec boundary is named
//! once, here. The app's environment variables (RACK_ENV and friends) and
//! working directory are set on the exec itself, not carried here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SpawnMethod {
    /// Load the app once in a preloader and fork workers from it.
    Smart,
    /// Boot every worker from scratch.
    Direct,
}

impl SpawnMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnMethod::Smart => "smart",
            SpawnMethod::Direct => "direct",
        }
    }
}

/// Garbage collection the preloader runs after loading the app and before
/// the first fork (`rack/heap.rs`). Compacting packs live objects together
/// so that workers dirty fewer shared pages when they later allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PreloadGc {
    /// No GC.
    None,
    /// One full GC.
    Start,
    /// A full GC, then GC.compact.
    Compact,
    /// Full GCs until the survivors are old, GC.compact, then malloc_trim
    /// (as Ruby 3.3's Process.warmup does).
    Age,
}

impl PreloadGc {
    /// As on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PreloadGc::None => "none",
            PreloadGc::Start => "start",
            PreloadGc::Compact => "compact",
            PreloadGc::Age => "age",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSpec {
    /// Absolute path of the app's directory.
    pub app_root: PathBuf,
    /// Short name used in process titles and logs (the app root's basename).
    pub app_name: String,
    /// The rackup file to load, absolute.
    pub rackup: PathBuf,
    /// Where workers connect to the front end.
    pub worker_socket: PathBuf,
    /// Directory holding `rustrack.rb`, put first on `$LOAD_PATH`.
    pub ruby_lib: PathBuf,
    pub preload_gc: PreloadGc,
    /// Collapse the preloader's heap into transparent huge pages before
    /// the first fork, so forks copy fewer page-table entries.
    #[serde(default)]
    pub preload_hugepages: bool,
    /// The front end's `--log-file`, which the preloader and workers also
    /// write to (their stdout and stderr); reopened on SIGUSR1.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Refuse to start (instead of warning) when the preloader holds open
    /// connections or live Ruby threads at fork time (`--strict-fork`).
    #[serde(default)]
    pub strict_fork: bool,
    /// Define a minimal `PhusionPassenger` module whose `on_event` registers
    /// with Rustrack's events (`--passenger-compat`).
    #[serde(default)]
    pub passenger_compat: bool,
    /// uid and gid to run as (`--user`): the preloader or direct worker
    /// drops to them right after exec, so the exec itself (of a binary the
    /// user may not be able to reach) happens with the front end's rights.
    #[serde(default)]
    pub credentials: Option<(u32, u32)>,
    /// Sessions per worker (`--threads-per-worker`): connections to the
    /// front end, each served by its own Ruby thread when more than one.
    #[serde(default = "one")]
    pub threads_per_worker: u32,
    /// `--worker-timeout` in seconds (0: none). With several threads a
    /// worker interrupts a request that outran it (`Rustrack::RequestTimeout`),
    /// so that its other requests can finish before it is replaced.
    #[serde(default)]
    pub worker_timeout: u64,
    /// Requests the preloader serves to the app itself before the first
    /// fork (`--warmup-request`, `--warmup-rounds`).
    #[serde(default)]
    pub warmup: Warmup,
}

fn one() -> u32 {
    1
}

/// Requests served in the preloader after the app loaded, so that the lazy
/// work of the first requests (templates compiled, locales loaded, caches
/// filled) is done once and shared by every forked worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warmup {
    pub requests: Vec<WarmupRequest>,
    /// Times each request is served, in order (all of them once, then all
    /// again): some work happens only on a second request.
    pub rounds: u32,
}

/// One warm-up request: `GET /path?query`, from `--warmup-request
/// "[METHOD ]/path?query"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmupRequest {
    pub method: String,
    /// The request target as a client would send it: path and query.
    pub target: String,
}

impl WarmupRequest {
    /// Parses `/path?query` or `METHOD /path?query`. The method is what
    /// HTTP allows (a token; upper case by convention, required here so a
    /// typo like `get` is caught); the target must be a path, since it is
    /// sent as-is, with no percent-encoding done for the user.
    pub fn parse(s: &str) -> Result<WarmupRequest, String> {
        let s = s.trim();
        let (method, target) = match s.split_once(char::is_whitespace) {
            Some((method, target)) => (method, target.trim_start()),
            None => ("GET", s),
        };
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "expected [METHOD ]/PATH (METHOD in upper case, e.g. POST), got {s:?}"
            ));
        }
        if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
            return Err(format!(
                "expected a path starting with / (no spaces, control characters or #fragment), got {target:?}"
            ));
        }
        Ok(WarmupRequest {
            method: method.to_string(),
            target: target.to_string(),
        })
    }

    /// The path and the query string (without its `?`).
    pub fn path_and_query(&self) -> (&str, &str) {
        self.target
            .split_once('?')
            .unwrap_or((self.target.as_str(), ""))
    }
}

impl std::fmt::Display for WarmupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)
    }
}

impl AppSpec {
    pub fn app_name_of(root: &Path) -> String {
        root.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_string())
    }
}

/// Finds the Ruby support library: `$RUSTRACK_RUBY_LIB`, else `ruby/lib`
/// next to (or above) the executable, as in a checkout's `target/*/` or an
/// installed gem's `bin/`, else the source tree this binary was built from.
pub fn ruby_lib_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUSTRACK_RUBY_LIB") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            let candidate = dir.join("ruby/lib");
            if candidate.join("rustrack.rb").is_file() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ruby/lib")
}

#[cfg(test)]
mod tests {
    use super::WarmupRequest;

    #[test]
    fn warmup_requests_default_to_get_and_keep_the_query() {
        let r = WarmupRequest::parse("/posts?page=2").unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("GET", "/posts?page=2")
        );
        assert_eq!(r.path_and_query(), ("/posts", "page=2"));
        let r = WarmupRequest::parse("POST  /search").unwrap();
        assert_eq!(r.to_string(), "POST /search");
        assert_eq!(r.path_and_query(), ("/search", ""));
    }

    #[test]
    fn warmup_requests_must_be_a_path() {
        for bad in [
            "",
            "posts",
            "get /",
            "GET",
            "GET posts",
            "/a b",
            "/a#top",
            "GET /a\tb",
        ] {
            assert!(WarmupRequest::parse(bad).is_err(), "{bad:?}");
        }
    }
}
