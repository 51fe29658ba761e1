//! The log file every rustrack process writes to (`--log-file`).
//!
//! The front end points its stdout and stderr at the file; the preloader
//! and workers inherit them, so the app's output lands there too. After a
//! log rotation (the file renamed away, then SIGUSR1 to the front end),
//! each process reopens the path onto its own fds 1 and 2: the front end
//! first, then it forwards USR1 to the preloader and workers. Sync code
//! with no runtime, shared by both sides.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{Context, Result};

/// Points stdout and stderr (inherited by the preloader and workers, so the
/// app's output too) at `path`, appending.
pub fn redirect_output(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    // dup2 onto the standard fds replaces them atomically; the file stays
    // open through the duplicates after `file` is dropped.
    nix::unistd::dup2_stdout(&file)
        .and_then(|()| nix::unistd::dup2_stderr(&file))
        .context("redirecting output to the log file")?;
    Ok(())
}
