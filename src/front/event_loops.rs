//! One event loop per core: the front end runs N single-threaded tokio
//! runtimes, not one work-stealing runtime of N threads.
//!
//! Why: on a work-stealing runtime a request crosses threads several times
//! (the I/O driver wakes a task on one thread, a spawn or wake-up unparks
//! another to steal it), and each crossing is a futex wake-up and a context
//! switch. On 2 cores those cost more CPU than the HTTP work itself and take
//! it from the Ruby workers. A current-thread runtime runs every task it owns
//! on its own thread: a connection accepted by loop K is read, routed,
//! written to a worker, answered and written back on loop K.
//!
//! How:
//! - loop 0 is the thread that runs `server::serve` (the control loop, the
//!   pools' drivers, admin and metrics live there too); loops 1..N each have
//!   a thread that parks in `block_on` until [`EventLoops::stop`];
//! - every HTTP listener is registered with every loop (loop 0 keeps its fd,
//!   the others get a `dup`: [`EventLoops::spread`]):
//!   whichever loop is idle accepts a new connection, and that connection
//!   stays on it;
//! - the pool is shared (one mutex, as before): the central queue and
//!   least-busy routing are unchanged. A worker's connection is registered
//!   with the loop that last used it, and moves to the loop of the request
//!   it is lent to (`pool/conn.rs`, `WorkerConn::settle`), so its I/O is
//!   driven by the thread that waits for it;
//! - the extra loops stop after the pools: a task a pool spawned there (a
//!   memory check after a request) may still run until the pool is down.

use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// Each loop serves this many CPUs' worth of workers by default.
const CPUS_PER_LOOP: usize = 4;

/// One loop per [`CPUS_PER_LOOP`] CPUs, at least one. Measured on 2 CPUs
/// (hello and the Rails fixture, 2 workers, wrk -c16): one loop spent
/// 25–27 µs of CPU per hello request and 98–126 µs per Rails request, two
/// loops 31–44 and 133–141, tokio's 2-thread work-stealing runtime 36–47 and
/// 130–163, at the same requests per second. A loop at ~30 µs per request
/// keeps up with 4 CPUs of any app that spends more than 120 µs of Ruby per
/// request, which is every real one.
pub fn default_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.div_ceil(CPUS_PER_LOOP)
}

/// Builds the current-thread runtime each loop runs.
pub fn runtime(name: &str) -> Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .context("starting a tokio runtime")
}

/// The loops besides the calling thread's.
pub struct EventLoops {
    extra: Vec<Extra>,
}

struct Extra {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl EventLoops {
    /// Starts `n - 1` loops on their own threads (the caller's is loop 0).
    pub fn start(n: usize) -> Result<EventLoops> {
        let mut extra = Vec::new();
        for i in 1..n.max(1) {
            let name = format!("rustrack-loop-{i}");
            let runtime = runtime(&name)?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    // Tasks spawned on this runtime run while it blocks here.
                    let _ = runtime.block_on(stopped);
                })
                .context("starting an event loop thread")?;
            extra.push(Extra {
                handle,
                stop,
                thread,
            });
        }
        Ok(EventLoops { extra })
    }

    /// A handle per loop: the current runtime's first, then the others.
    /// Call from loop 0.
    fn handles(&self) -> Vec<Handle> {
        std::iter::once(Handle::current())
            .chain(self.extra.iter().map(|e| e.handle.clone()))
            .collect()
    }

    /// Serves a listener on every loop: `make` gets one copy of `first` per
    /// loop (`first` itself for loop 0, so an inherited socket keeps its fd
    /// number; a `dup` for the others) and runs inside that loop's runtime,
    /// so the socket it registers belongs to that loop's reactor; the future
    /// it returns is spawned there. The join handles can abort them.
    pub fn spread<T, F>(
        &self,
        first: T,
        dup: impl Fn(&T) -> std::io::Result<T>,
        mut make: impl FnMut(T) -> Result<F>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut copies = Vec::with_capacity(self.extra.len() + 1);
        for _ in &self.extra {
            copies.push(dup(&first)?);
        }
        copies.insert(0, first);
        let mut tasks = Vec::new();
        for (handle, copy) in self.handles().into_iter().zip(copies) {
            let _inside = handle.enter();
            let task = make(copy)?;
            tasks.push(handle.spawn(task));
        }
        Ok(tasks)
    }

    /// Stops the extra loops, dropping whatever tasks they still hold.
    pub fn stop(self) {
        for e in self.extra {
            let _ = e.stop.send(());
            let _ = e.thread.join();
        }
    }
}
