//! Running blocking Rust code without Ruby's Global VM Lock.
//!
//! A worker waiting for its next request must not hold the GVL, or the
//! app's own Ruby threads (metrics flushers, connection pool reapers), and
//! with `--threads-per-worker` its other request threads, stop for as long
//! as it waits.
//!
//! We use `rb_thread_call_without_gvl2`, which does *not* run Ruby's pending
//! interrupts (signal traps, `Thread#raise` from another thread) when it
//! takes the GVL back. `rb_thread_call_without_gvl` does, and an interrupt
//! that raises (Ruby's default for SIGUSR2, say) would then unwind straight
//! through our Rust frames with no Ruby frame to catch it: Ruby aborted
//! with `[BUG] Segmentation fault`. Callers run the interrupts themselves,
//! protected, at a safe point (`run_interrupts`).

use std::ffi::c_void;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{prelude::*, Ruby};

struct Call<F, R> {
    func: Option<F>,
    result: Option<R>,
}

unsafe extern "C" fn trampoline<F: FnOnce() -> R, R>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` is the `Call` that `without_gvl` passed in, alive and
    // exclusively ours for the duration of this call.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    let func = call.func.take().expect("called once");
    // Unwinding across the C frame would be undefined behaviour.
    match catch_unwind(AssertUnwindSafe(func)) {
        Ok(r) => call.result = Some(r),
        Err(_) => std::process::abort(),
    }
    std::ptr::null_mut()
}

/// How Ruby may wake a thread blocked in `without_gvl` when it has
/// something for it (a signal trap for the main thread, `Thread#raise`,
/// `Thread#wakeup`, the VM shutting down).
#[derive(Clone, Copy)]
pub enum Unblock {
    /// Ruby's own way for blocking I/O (`RUBY_UBF_IO`): it sends the
    /// thread SIGVTALRM, so the system call returns EINTR.
    Io,
    /// Write a byte to this pipe, which the blocked call polls.
    Pipe(RawFd),
}

/// `RUBY_UBF_IO` from ruby/thread.h, `((rb_unblock_function_t *)-1)`:
/// Ruby compares the pointer with it and never calls it.
const RUBY_UBF_IO: usize = usize::MAX;

unsafe extern "C" fn write_wake_byte(data: *mut c_void) {
    let fd = data as usize as RawFd;
    // SAFETY: write(2) of one byte from a static buffer to the wake pipe,
    // which the blocked caller keeps open for as long as it blocks. The
    // pipe is non-blocking: a full one already holds a wakeup.
    unsafe { libc::write(fd, b"u".as_ptr().cast(), 1) };
}

/// Runs `func` with the GVL released, or returns `None` without running it
/// when a Ruby interrupt is already pending (run them, then call again).
/// `func` must not touch any Ruby value; `unblock` says how Ruby can make
/// it return early (it must return soon after).
pub fn without_gvl<F: FnOnce() -> R, R>(func: F, unblock: Unblock) -> Option<R> {
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    let (ubf, ubf_data): (rb_sys::rb_unblock_function_t, *mut c_void) = match unblock {
        // SAFETY: a non-null value that Ruby recognises as RUBY_UBF_IO and
        // replaces with its own unblocking function; it is never called.
        Unblock::Io => (
            Some(unsafe {
                std::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void)>(RUBY_UBF_IO)
            }),
            std::ptr::null_mut(),
        ),
        Unblock::Pipe(fd) => (Some(write_wake_byte), fd as usize as *mut c_void),
    };
    // SAFETY: we are on a Ruby thread holding the GVL (the worker's main
    // thread or one of its request threads, all created by Ruby); the
    // trampoline only runs `func`, which by this function's contract
    // touches no Ruby object; `call` outlives the call; the unblocking
    // function is Ruby's own or only writes to a pipe. The `2` variant
    // never raises (see the module comment).
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            ubf,
            ubf_data,
        );
    }
    call.result
}

/// What running Ruby's pending interrupts ended in.
pub enum Interrupts {
    /// Nothing pending, or only traps that returned normally.
    Ran,
    /// A signal the app does not trap arrived; Ruby's default would end
    /// the process (`SignalException`). The caller stops gracefully.
    Signal(String),
    /// Something else raised into the main thread (`Thread#raise` from an
    /// app thread); logged, and serving goes on.
    Raised(String),
}

/// Runs pending interrupts (the app's `Signal.trap` handlers, Ruby's
/// default signal handling, `Thread#raise`) inside `rb_protect`.
pub fn run_interrupts(ruby: &Ruby) -> Interrupts {
    match ruby.thread_check_ints() {
        Ok(()) => Interrupts::Ran,
        Err(e) => {
            let is_signal = e
                .value()
                .is_some_and(|exc| exc.is_kind_of(ruby.exception_signal()));
            let message = crate::rack::vm::describe(&e);
            if is_signal {
                Interrupts::Signal(message)
            } else {
                Interrupts::Raised(message)
            }
        }
    }
}
