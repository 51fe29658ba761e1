//! The Ruby side: everything that runs inside an embedded Ruby VM.
//!
//! Synchronous code only, and no tokio runtime: the preloader forks and
//! workers are forked. The only threads started here are a worker's
//! request threads (`--threads-per-worker` > 1, `threads.rs`), Ruby threads
//! created after the fork and joined before that worker could fork (as a
//! mold) or exit. The two entry points are the hidden subcommands the front
//! end execs.

pub mod env;
mod gvl;
pub mod heap;
mod hugepages;
pub mod inherited;
mod mold;
pub mod preloader;
pub mod response;
mod session;
mod signals;
pub mod template;
mod threads;
mod vm;
mod warmup;
pub mod worker;

use anyhow::Result;
use magnus::Ruby;

use crate::config::AppSpec;

/// `rustrack __preloader`: load the app, then fork workers on command.
pub fn run_preloader(spec: &AppSpec) -> Result<i32> {
    drop_privileges(spec)?;
    preloader::run(spec)
}

/// With `--user`, the front end execs us with its own rights (so the
/// binary may live where that user cannot reach, such as root's home) and
/// we become the user here, before Ruby or the app runs. Everything the
/// app process needs from rustrack itself is in the binary
/// (`vm::RUSTRACK_RB`), so nothing else of the checkout has to be readable.
fn drop_privileges(spec: &AppSpec) -> Result<()> {
    use anyhow::Context;
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let Some((uid, gid)) = spec.credentials else {
        return Ok(());
    };
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    // Groups first: once the uid is dropped, they can no longer be changed.
    setgroups(&[gid]).context("dropping supplementary groups (--user)")?;
    setgid(gid).with_context(|| format!("switching to group {gid} (--group)"))?;
    setuid(uid).with_context(|| format!("switching to user {uid} (--user)"))?;
    Ok(())
}

/// `rustrack __worker`: boot the app in this process and serve (direct
/// spawning). Never returns once the app loaded.
pub fn run_direct_worker(spec: &AppSpec, worker_id: u64) -> Result<i32> {
    drop_privileges(spec)?;
    let title = format!("rustrack worker {worker_id} ({})", spec.app_name);
    let _cleanup = vm::boot(spec, &title)?;
    let ruby = Ruby::get().expect("booted");
    signals::install_worker(None);
    let app = match vm::load_app(&ruby, spec) {
        Ok(app) => app,
        Err(e) => {
            eprintln!(
                "[rustrack] worker {worker_id} could not load {}:\n{e:#}",
                spec.rackup.display()
            );
            return Ok(1);
        }
    };
    ruby.gc_register_mark_object(app);
    vm::check_thread_resources(&ruby, spec);
    worker::serve(&ruby, app, spec, worker_id, None)
}
