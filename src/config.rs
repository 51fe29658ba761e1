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
/// the first fork. Compacting packs live objects together so that workers
/// dirty fewer shared pages when they later allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PreloadGc {
    None,
    Start,
    Compact,
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
}

fn one() -> u32 {
    1
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
