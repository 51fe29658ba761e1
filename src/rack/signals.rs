//! Signal handling in the Ruby-side processes.
//!
//! Ruby installs its own handlers at init (HUP, INT, QUIT, TERM, CHLD, …),
//! which would raise inside app code. rustrack's processes own their
//! signals instead: TERM and QUIT ask for a graceful stop (checked between
//! requests), INT is ignored (Ctrl-C reaches the whole process group, and
//! the front end coordinates the stop), USR1 asks for the log files to be
//! reopened (the front end forwards its own USR1 after a log rotation), and
//! the preloader turns CHLD into a byte on a pipe it polls. Handlers only store to an atomic or write(2),
//! both async-signal-safe. None uses SA_RESTART, so a blocking poll returns
//! EINTR and the loop looks at the flag at once.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static STOP: AtomicBool = AtomicBool::new(false);
static REOPEN: AtomicBool = AtomicBool::new(false);
static CHLD_PIPE: AtomicI32 = AtomicI32::new(-1);
/// A worker with request threads: its main thread polls this pipe, so a
/// signal wakes it whichever thread the kernel delivered it to.
static WAKE_PIPE: AtomicI32 = AtomicI32::new(-1);

fn wake() {
    let fd = WAKE_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking,
        // so a full pipe (wakeup already pending) just drops the byte.
        unsafe { libc::write(fd, b"s".as_ptr().cast(), 1) };
    }
}

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    wake();
}

extern "C" fn on_reopen(_: libc::c_int) {
    REOPEN.store(true, Ordering::SeqCst);
    wake();
}

/// Makes TERM, QUIT and USR1 also write a byte to `fd` (the write end of
/// a non-blocking pipe that stays open while it is set); -1 stops it.
pub fn set_wake_pipe(fd: RawFd) {
    WAKE_PIPE.store(fd, Ordering::SeqCst);
}

extern "C" fn on_chld(_: libc::c_int) {
    let fd = CHLD_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so
        // a full pipe (wakeup already pending) just drops the byte.
        unsafe { libc::write(fd, b"c".as_ptr().cast(), 1) };
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Whether a USR1 arrived since the last call.
pub fn take_reopen() -> bool {
    REOPEN.swap(false, Ordering::SeqCst)
}

fn set(sig: Signal, handler: SigHandler) -> SigAction {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handlers above only touch atomics and call write(2); the
    // others are SIG_IGN/SIG_DFL.
    unsafe { sigaction(sig, &action) }.expect("sigaction with a valid signal cannot fail")
}

/// Signals common to the preloader and workers.
fn install_common() {
    set(Signal::SIGTERM, SigHandler::Handler(on_stop));
    set(Signal::SIGQUIT, SigHandler::Handler(on_stop));
    set(Signal::SIGINT, SigHandler::SigIgn);
    set(Signal::SIGHUP, SigHandler::SigIgn);
    set(Signal::SIGUSR1, SigHandler::Handler(on_reopen));
}

/// The saved CHLD disposition Ruby installed, restored in forked workers.
pub struct SavedChld(SigAction);

/// A template (preloader or mold): common signals plus CHLD → a byte on
/// `pipe_write`.
pub fn install_template(pipe_write: RawFd) -> SavedChld {
    install_common();
    CHLD_PIPE.store(pipe_write, Ordering::SeqCst);
    SavedChld(set(Signal::SIGCHLD, SigHandler::Handler(on_chld)))
}

/// Worker: common signals; a forked worker also gets Ruby's own CHLD
/// handling back, so `system` and `Process.wait` in the app work as usual.
pub fn install_worker(saved: Option<SavedChld>) {
    install_common();
    CHLD_PIPE.store(-1, Ordering::SeqCst);
    STOP.store(false, Ordering::SeqCst);
    if let Some(SavedChld(action)) = saved {
        // SAFETY: restoring the disposition Ruby itself installed.
        unsafe { sigaction(Signal::SIGCHLD, &action) }.expect("restoring SIGCHLD");
    }
}
