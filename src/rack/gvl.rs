//! Running blocking Rust code without Ruby's Global VM Lock.
//!
//! A worker waiting for its next request must not hold the GVL, or the
//! app's own Ruby threads (metrics flushers, connection pool reapers) stop
//! for as long as the worker is idle.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

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

/// Runs `func` with the GVL released. `func` must not touch any Ruby value.
/// There is no unblocking function: callers bound their blocking with
/// timeouts and signal-interrupted syscalls instead.
pub fn without_gvl<F: FnOnce() -> R, R>(func: F) -> R {
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    // SAFETY: we are on a Ruby thread holding the GVL (all callers run on the
    // worker's main thread); the trampoline only runs `func`, which by this
    // function's contract touches no Ruby object; `call` outlives the call.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            None,
            std::ptr::null_mut(),
        );
    }
    call.result.expect("trampoline ran")
}
