//! The preloader: loads the app once, then forks workers on command.
//!
//! It is a fresh exec of this binary, so it has exactly one thread of its
//! own: no tokio, nothing that fork would leave half-copied. It boots Ruby,
//! loads `config.ru`, serves the warm-up requests (`warmup.rs`), prepares
//! its heap for forking (ActiveRecord's connections closed, `--preload-gc`,
//! huge pages), looks for sockets and threads the workers would inherit or
//! lose (warning about them or, with `--strict-fork`, refusing to start),
//! reports `ready` on the control channel (fd 3) and then serves spawn
//! commands as a template (`template.rs`).

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use anyhow::Result;
use magnus::{prelude::*, Ruby, Value};

use crate::config::{AppSpec, PreloadGc};
use crate::control::{Report, CONTROL_FD};
use crate::rack::template::{self, Template};
use crate::rack::{hugepages, vm, warmup};

pub fn run(spec: &AppSpec) -> Result<i32> {
    // SAFETY: the front end passes our end of the control socketpair as fd 3
    // (dup2 in its pre_exec); nothing else in this process owns that fd.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let title = format!("rustrack preloader ({})", spec.app_name);
    let _cleanup = vm::boot(spec, &title)?;
    let ruby = Ruby::get().expect("booted");
    vm::set_title(&ruby, &title);
    let _: Value = vm::rustrack_module(&ruby)
        .funcall("role=", (ruby.to_symbol("preloader"),))
        .map_err(vm::ruby_error)?;
    let mut template = Template::new(control, "preloader", "preloader".into())?;

    let app = match vm::load_app(&ruby, spec) {
        Ok(app) => app,
        Err(e) => return load_error(&mut template, spec, format!("{e:#}")),
    };
    ruby.gc_register_mark_object(app);
    vm::check_thread_resources(&ruby, spec);
    // Before everything below, so that what the warm-up loads goes through
    // the same GC, compaction and huge pages as the app, and its sockets
    // and threads are checked like those config.ru opened.
    match warmup::run(&ruby, app, spec) {
        Ok(summary) if summary.stopped => return Ok(0),
        Ok(_) => {}
        Err(e) => return load_error(&mut template, spec, format!("warm-up failed: {e:#}")),
    }
    template::before_fork(&ruby);
    if spec.preload_gc != PreloadGc::None {
        let heap = template::collect_garbage(&ruby, spec.preload_gc);
        eprintln!(
            "[rustrack] preloader heap (--preload-gc {}): {heap}",
            spec.preload_gc.name()
        );
    }
    let huge_pages = spec.preload_hugepages.then(hugepages::collapse_heap);
    warn_about_threads(&ruby);
    template.inherited = match template::connections(spec, "preloader", &[CONTROL_FD]) {
        Ok(connections) => connections,
        Err(message) => return load_error(&mut template, spec, message),
    };
    template.send(&Report::Ready {
        pid: std::process::id(),
        huge_pages,
    })?;
    template.serve(&ruby, app, spec)
}

/// Tells the front end the app cannot be served, and why; prints it here
/// only when the front end cannot be told.
fn load_error(template: &mut Template, spec: &AppSpec, message: String) -> Result<i32> {
    let report = Report::LoadError {
        message: message.clone(),
    };
    if template.send(&report).is_err() {
        eprintln!(
            "[rustrack] preloader could not load {}:\n{message}",
            spec.rackup.display()
        );
    }
    Ok(1)
}

/// Ruby threads alive when the preloader forks do not exist in workers.
/// Only a warning, even under `--strict-fork`: a thread missing in a worker
/// shares nothing, and libraries start harmless ones at load time.
fn warn_about_threads(ruby: &Ruby) {
    let threads = template::threads(ruby);
    if threads.is_empty() {
        return;
    }
    eprintln!(
        "[rustrack] warning: the preloader has {} Ruby thread{} besides the main one when it forks; \
         threads do not survive fork, so workers run without {}: {}",
        threads.len(),
        if threads.len() == 1 { "" } else { "s" },
        if threads.len() == 1 { "it" } else { "them" },
        threads.join(", ")
    );
}
