//! Running blocking Rust code without Ruby's Global VM Lock.
//!
//! A worker waiting for its next request must not hold the GVL, or the
//! app's own Ruby threads (metrics flushers, connection pool reapers) stop
//! for as long as the worker is idle.
//!
//! We use `rb_thread_call_without_gvl2`, which does *not* run Ruby's pending
//! interrupts (signal traps, `Thread#raise` from another thread) when it
//! takes the GVL back. `rb_thread_call_without_gvl` does, and an interrupt
//! that raises (Ruby's default for SIGUSR2, say) would then unwind straight
//! through our Rust frames with no Ruby frame to catch it: Ruby aborted
//! with `[BUG] Segmentation fault`. Callers run the interrupts themselves,
//! protected, at a safe point (`run_interrupts`).

use std::ffi::c_void;
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

/// Runs `func` with the GVL released, or returns `None` without running it
/// when a Ruby interrupt is already pending (run them, then call again).
/// `func` must not touch any Ruby value. There is no unblocking function:
/// callers bound their blocking with timeouts and signal-interrupted
/// syscalls instead.
pub fn without_gvl<F: FnOnce() -> R, R>(func: F) -> Option<R> {
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    // SAFETY: we are on a Ruby thread holding the GVL (all callers run on the
    // worker's main thread); the trampoline only runs `func`, which by this
    // function's contract touches no Ruby object; `call` outlives the call.
    // The `2` variant never raises (see the module comment).
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            None,
            std::ptr::null_mut(),
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
