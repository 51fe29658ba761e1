//! Starting the embedded Ruby VM and loading the app into it.
//!
//! Both Ruby-side roles (preloader, direct worker) start here. Order
//! matters: the locale must be set before Ruby reads it, and the support
//! library must be on `$LOAD_PATH` before the app can `require "rustrack"`.

use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use anyhow::{bail, Result};
use magnus::{embed::Cleanup, prelude::*, value::ReprValue, Error, RArray, RModule, Ruby, Value};

use crate::config::AppSpec;
use crate::rack::{gvl, signals};

static ARGC: AtomicI32 = AtomicI32::new(0);
static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

/// glibc calls `.init_array` functions with the process's real argc/argv
/// (std relies on the same to implement `env::args`). Ruby needs them to
/// be able to rewrite the process title (`Process.setproctitle`, `$0=`),
/// since embedding otherwise hands it a made-up argv.
extern "C" fn capture_argv(argc: c_int, argv: *mut *mut c_char, _envp: *mut *mut c_char) {
    ARGC.store(argc, Ordering::SeqCst);
    ARGV.store(argv, Ordering::SeqCst);
}

extern "C" {
    /// Exported by libruby (missing/setproctitle.c).
    fn ruby_init_setproctitle(argc: c_int, argv: *mut *mut c_char);
}

#[used]
#[link_section = ".init_array"]
static CAPTURE_ARGV: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture_argv;

/// Initialises Ruby and loads the support library. The returned guard must
/// live as long as Ruby is used in this process.
pub fn boot(spec: &AppSpec, title: &str) -> Result<Cleanup> {
    // SAFETY: called on the main thread before Ruby or any other thread
    // exists, so nothing can be reading the locale concurrently. Without it
    // Encoding.default_external is US-ASCII.
    unsafe { libc::setlocale(libc::LC_CTYPE, c"".as_ptr()) };
    // SAFETY: called once, from the top of this process's only thread; the
    // guard is kept by the caller until Ruby is no longer used.
    let cleanup = unsafe { magnus::embed::init() };
    let argv = ARGV.load(Ordering::SeqCst);
    if !argv.is_null() {
        // SAFETY: magnus's init gave ruby_process_options a made-up argv of
        // heap strings that are freed when init returns, and Ruby pointed
        // its setproctitle at them: any later `$0 =` would write to freed
        // memory. Re-pointing it at the process's real argv (captured at
        // start-up, never freed) is what ruby's own main() arranges. This
        // process has a single thread, so moving `environ` is safe.
        unsafe { ruby_init_setproctitle(ARGC.load(Ordering::SeqCst), argv) };
    }
    let ruby = Ruby::get().expect("Ruby was just initialised on this thread");
    ruby.script(title);
    load_support_library(&ruby, spec).map_err(ruby_error)?;
    Ok(cleanup)
}

/// `ruby/lib/rustrack.rb`, built into the binary: the app's processes
/// never read it from disk, so they work under `--user` from a checkout
/// that user cannot read, and always match the binary that runs them.
pub const RUSTRACK_RB: &str = include_str!("../../ruby/lib/rustrack.rb");

/// Evaluates the support library and marks it as loaded, so that an app
/// whose bundle has the rustrack gem can `require "rustrack"` (a no-op
/// then) without defining everything twice.
fn load_support_library(ruby: &Ruby, spec: &AppSpec) -> Result<(), Error> {
    let lib = spec.ruby_lib.to_string_lossy();
    let path = format!("{lib}/rustrack.rb");
    let load_path: RArray = ruby.eval("$LOAD_PATH")?;
    load_path.unshift(ruby.str_new(&lib))?;
    let binding: Value = ruby.eval("TOPLEVEL_BINDING")?;
    let _: Value = ruby
        .module_kernel()
        .funcall("eval", (RUSTRACK_RB, binding, path.as_str(), 1))?;
    let features: RArray = ruby.eval("$LOADED_FEATURES")?;
    features.push(ruby.str_new(&path))?;
    Ok(())
}

/// The `Rustrack` module.
pub fn rustrack_module(ruby: &Ruby) -> RModule {
    ruby.class_object()
        .const_get("Rustrack")
        .expect("rustrack.rb defines Rustrack")
}

/// Activates the app's bundle (when it has a Gemfile), loads `config.ru` and
/// returns the app. On failure the error carries the Ruby exception's class,
/// message and backtrace.
pub fn load_app(ruby: &Ruby, spec: &AppSpec) -> Result<Value> {
    if !spec.rackup.is_file() {
        bail!(
            "{} not found: is {} a Rack app's directory?",
            spec.rackup.display(),
            spec.app_root.display()
        );
    }
    let app: Value = rustrack_module(ruby)
        .funcall(
            "load_app",
            (
                spec.rackup.to_string_lossy().as_ref(),
                spec.app_root.to_string_lossy().as_ref(),
                spec.passenger_compat,
            ),
        )
        .map_err(ruby_error)?;
    Ok(app)
}

/// With `--threads-per-worker` N > 1, warns when what the app loaded
/// cannot serve N requests at once: an ActiveRecord connection pool smaller
/// than N (`Rustrack.check_thread_resources`).
pub fn check_thread_resources(ruby: &Ruby, spec: &AppSpec) {
    if spec.threads_per_worker > 1 {
        let _: Result<Value, _> =
            rustrack_module(ruby).funcall("check_thread_resources", (spec.threads_per_worker,));
    }
}

/// Sets the process title (as `ps` shows it) through Ruby, which knows how
/// to rewrite argv in place.
pub fn set_title(ruby: &Ruby, title: &str) {
    let _: Result<Value, _> = ruby.module_process().funcall("setproctitle", (title,));
}

/// Turns a Ruby exception into an error that reads like Ruby's own report.
pub fn ruby_error(e: Error) -> anyhow::Error {
    anyhow::anyhow!(describe(&e))
}

/// Work the preloader and workers do outside any request: reopening logs
/// after SIGUSR1, and running Ruby's pending interrupts (the app's signal
/// traps, Ruby's default handling of a signal the app does not trap,
/// `Thread#raise` into the main thread) where an exception cannot escape.
/// Returns false when the process should stop. `who` names it in messages.
pub fn between_requests(ruby: &Ruby, spec: &AppSpec, who: &str) -> bool {
    if signals::take_reopen() {
        reopen_logs(ruby, spec);
    }
    let pid = std::process::id();
    match gvl::run_interrupts(ruby) {
        gvl::Interrupts::Ran => true,
        gvl::Interrupts::Signal(message) => {
            eprintln!("[rustrack] {who} (pid {pid}): {message}; the app does not trap it, so the {who} stops");
            false
        }
        gvl::Interrupts::Raised(message) => {
            eprintln!("[rustrack] {who} (pid {pid}): raised into the main thread outside a request (ignored):\n{message}");
            true
        }
    }
}

/// After SIGUSR1: points stdout and stderr at `--log-file` again (if there
/// is one) and reopens the app's own append-mode log files that were
/// rotated away (`Rustrack.reopen_logs`).
pub fn reopen_logs(ruby: &Ruby, spec: &AppSpec) {
    if let Some(path) = &spec.log_file {
        if let Err(e) = crate::logfile::redirect_output(path) {
            eprintln!("[rustrack] pid {}: {e:#}", std::process::id());
        }
    }
    if let Err(e) = rustrack_module(ruby).funcall::<_, _, Value>("reopen_logs", ()) {
        eprintln!(
            "[rustrack] pid {}: reopening the app's logs failed:\n{}",
            std::process::id(),
            describe(&e)
        );
    }
}

pub fn describe(e: &Error) -> String {
    let Ok(ruby) = Ruby::get() else {
        return e.to_string();
    };
    match e.value() {
        Some(exc) => rustrack_module_opt(&ruby)
            .and_then(|m| m.funcall::<_, _, String>("describe_exception", (exc,)).ok())
            .unwrap_or_else(|| e.to_string()),
        None => e.to_string(),
    }
}

fn rustrack_module_opt(ruby: &Ruby) -> Option<RModule> {
    ruby.class_object().const_get("Rustrack").ok()
}
