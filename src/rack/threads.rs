//! A worker with several request threads (`--threads-per-worker` N > 1).
//!
//! The worker's main thread has connected N sessions to the front end (one
//! connection each, `session.rs`); here it starts one Ruby thread per
//! session and then supervises them. Each request thread waits for its
//! next request with the GVL released (so the others run Ruby meanwhile)
//! and serves it; responses go back on the thread's own connection, so two
//! responses never interleave and a slow stream holds up nobody else.
//!
//! The main thread stays out of requests. It waits on a self-pipe, also
//! with the GVL released, woken by: our TERM/QUIT/USR1 handlers (whichever
//! thread the kernel picked), Ruby when it has a trap or `Thread#raise`
//! for the main thread (the pipe is its unblocking function), a request
//! thread that ended, or a 250 ms tick. It then
//! - reopens logs after USR1 and runs Ruby's pending interrupts (the app's
//!   `Signal.trap` handlers run on the main thread, as in any Ruby);
//! - on TERM/QUIT, an untrapped signal, `exit` inside a request, or a
//!   session the front end closed: stops the worker gracefully. Idle
//!   threads are woken (`Thread#wakeup`, which Ruby turns into EINTR for
//!   their blocking read) and leave; busy ones finish their request first.
//!   Once every thread is joined the worker exits through the usual path
//!   (`stopping_worker_process`, `ruby_cleanup`), single-threaded again;
//! - with `--worker-timeout`: raises `Rustrack::RequestTimeout` into a
//!   thread whose request has run longer (the front end has answered 504
//!   by then, and waits a little for the response to end: a worker that
//!   could interrupt the request finishes its others before it is
//!   replaced; one that could not is stopped);
//! - on PROMOTE (refork), which one request thread received and checked:
//!   stops and joins every request thread, and only then, single-threaded,
//!   prepares the process as a mold and forks from it.
//!
//! A thread only ever wakes another with `Thread#wakeup` while that one is
//! idle: the main thread checks under the GVL, and a thread marks itself
//! busy under the GVL before it runs app code, so a wakeup never cuts an
//! app's `sleep` short.
//!
//! Nothing a request thread runs may wait, with the GVL held, for
//! something another Ruby thread holds while it calls Ruby: Ruby can
//! switch threads in any call, and the holder then needs the GVL back to
//! let go. std's `OnceLock` is such a wait, and magnus puts one behind
//! every `Lazy` and the class of every `#[magnus::wrap]` type, filled by a
//! Ruby call on first use. So whatever of that kind a request thread
//! touches is filled on the main thread before the threads start
//! (`response::define` resolves the `ResponseWriter` class): three request
//! threads once making their first writer together hung the worker, every
//! thread blocked and its requests unanswered until `--worker-timeout`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use magnus::value::{Opaque, ReprValue};
use magnus::{prelude::*, RArray, RClass, Ruby, Value};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::AppSpec;
use crate::protocol::Promoted;
use crate::rack::gvl::{self, Unblock};
use crate::rack::session::{Next, Session};
use crate::rack::{mold, signals, template, vm};

/// How often the main thread looks at the request threads' clocks.
const TICK: Duration = Duration::from_millis(250);
const TITLE_REFRESH: Duration = Duration::from_secs(1);

/// What the main thread and the request threads share.
struct Shared {
    /// Request threads leave once idle.
    stop: AtomicBool,
    /// `exit` inside a request: the worker's exit status.
    exit_code: Mutex<Option<i32>>,
    /// A request thread received PROMOTE and found nothing against it:
    /// its connection, for the main thread to answer on.
    promote: Mutex<Option<UnixStream>>,
    /// The write end of the main thread's wake pipe.
    wake: OwnedFd,
    slots: Vec<Slot>,
    epoch: Instant,
}

#[derive(Default)]
struct Slot {
    /// When its request began (ms since `epoch`, plus 1); 0 while idle.
    busy_since: AtomicU64,
    /// Requests begun.
    begun: AtomicU64,
    /// The thread has left its loop.
    done: AtomicBool,
    /// It left because the front end closed its session (the worker is
    /// being retired, or the front end is stopping).
    closed: AtomicBool,
    /// It left with an error, which stops the worker.
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn wake_main(&self) {
        let _ = nix::unistd::write(self.wake.as_fd(), b"t");
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// Starts a request thread per stream, supervises them, and returns the
/// worker's exit status once they are all gone (or serves as a mold,
/// after a promotion, until that ends).
pub fn serve(
    ruby: &Ruby,
    app: Value,
    spec: &AppSpec,
    worker_id: u64,
    streams: Vec<UnixStream>,
) -> Result<i32> {
    let (wake_read, wake_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .context("creating the wake pipe")?;
    signals::set_wake_pipe(wake_write.as_raw_fd());
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        exit_code: Mutex::new(None),
        promote: Mutex::new(None),
        wake: wake_write,
        slots: streams.iter().map(|_| Slot::default()).collect(),
        epoch: Instant::now(),
    });
    let rustrack = vm::rustrack_module(ruby);
    // Kept in a Ruby array that Rustrack references: Ruby's GC sees the
    // Thread objects, and `Rustrack.threads_at_fork` leaves them out.
    let threads = ruby.ary_new();
    let _: Value = rustrack
        .funcall("request_threads=", (threads,))
        .map_err(vm::ruby_error)?;
    let timeout_class: RClass = rustrack
        .const_get("RequestTimeout")
        .map_err(vm::ruby_error)?;
    for (slot, stream) in streams.into_iter().enumerate() {
        let shared = shared.clone();
        let app = Opaque::from(app);
        let thread = ruby.thread_create_from_fn(move |ruby| {
            request_thread(ruby, &shared, slot, ruby.get_inner(app), stream);
        });
        let _: Result<Value, _> = thread.funcall("name=", (format!("rustrack request {slot}"),));
        threads.push(thread).map_err(vm::ruby_error)?;
    }

    let who = format!("worker {worker_id}");
    let pid = std::process::id();
    let timeout = (spec.worker_timeout > 0).then(|| spec.worker_timeout * 1000);
    let mut raised = vec![0u64; shared.slots.len()];
    let mut stopping = false;
    let mut titled = Instant::now();
    let mut titled_count = 0;
    loop {
        if !vm::between_requests(ruby, spec, &who) {
            stopping = true;
        }
        if signals::stop_requested() || shared.exit_code.lock().unwrap().is_some() {
            stopping = true;
        }
        for (slot, s) in shared.slots.iter().enumerate() {
            if let Some(why) = s.failed.lock().unwrap().take() {
                eprintln!(
                    "[rustrack] {who} (pid {pid}): request thread {slot} failed: {why}; stopping"
                );
                stopping = true;
            }
            // Sessions go together: one closed by the front end means the
            // worker is leaving.
            stopping |= s.closed.load(Ordering::SeqCst);
        }
        if shared.promote.lock().unwrap().is_some() {
            break;
        }
        if shared.slots.iter().all(|s| s.done.load(Ordering::SeqCst)) {
            break;
        }
        if stopping && !shared.stop.swap(true, Ordering::SeqCst) {
            wake_idle(&shared, threads);
        }
        if let Some(limit_ms) = timeout {
            interrupt_late(&shared, threads, timeout_class, limit_ms, &mut raised);
        }
        if titled.elapsed() >= TITLE_REFRESH {
            let served: u64 = shared
                .slots
                .iter()
                .map(|s| s.begun.load(Ordering::Relaxed))
                .sum();
            if served != titled_count {
                titled_count = served;
                vm::set_title(
                    ruby,
                    &format!(
                        "rustrack worker {worker_id} ({}): {served} requests",
                        spec.app_name
                    ),
                );
            }
            titled = Instant::now();
        }
        wait(&wake_read, shared.wake.as_raw_fd());
    }

    let promoted = shared.promote.lock().unwrap().take();
    // Whatever ends the loop, no request thread outlives it.
    shared.stop.store(true, Ordering::SeqCst);
    wake_idle(&shared, threads);
    join_all(threads);
    let _: Result<Value, _> = rustrack.funcall("request_threads=", (ruby.ary_new(),));
    signals::set_wake_pipe(-1);
    let processed: u64 = shared
        .slots
        .iter()
        .map(|s| s.begun.load(Ordering::Relaxed))
        .sum();
    let exit_code = shared.exit_code.lock().unwrap().unwrap_or(0);
    // The threads' copies went with them: this closes the wake pipe.
    drop(shared);
    drop(wake_read);
    if let Some(mut stream) = promoted {
        // Single-threaded again: only now may this process become a
        // template that forks.
        native_threads_gone(ruby);
        return match mold::prepare(ruby, spec, &stream, None) {
            Ok(inherited) => {
                let ok = Promoted {
                    ok: true,
                    reason: String::new(),
                };
                mold::answer(&mut stream, &ok)?;
                mold::serve(ruby, app, spec, worker_id, processed, stream, inherited)
            }
            Err(reason) => {
                // Its request threads are gone: it cannot serve on.
                eprintln!(
                    "[rustrack] {who} (pid {pid}) cannot become the mold: {reason}; \
                     it stops and is replaced"
                );
                mold::answer(&mut stream, &Promoted { ok: false, reason })?;
                Ok(0)
            }
        };
    }
    Ok(exit_code)
}

/// Waits (without the GVL) until the wake pipe has a byte or a tick
/// passes; Ruby wakes us through the same pipe.
fn wait(wake_read: &OwnedFd, wake_write: i32) {
    let _ = gvl::without_gvl(
        || {
            let mut fds = [PollFd::new(wake_read.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(TICK.as_millis() as u16));
        },
        Unblock::Pipe(wake_write),
    );
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {}
}

/// `Thread#wakeup` for every request thread waiting for a request, so it
/// sees `stop` at once. Called with the GVL held: a thread marked idle
/// cannot start app code before we are done.
fn wake_idle(shared: &Shared, threads: RArray) {
    for (slot, s) in shared.slots.iter().enumerate() {
        if s.done.load(Ordering::SeqCst) || s.busy_since.load(Ordering::SeqCst) != 0 {
            continue;
        }
        if let Ok(thread) = threads.entry::<Value>(slot as isize) {
            let _: Result<Value, _> = thread.funcall("wakeup", ());
        }
    }
}

/// Raises `Rustrack::RequestTimeout` into each thread whose request has run
/// longer than `limit_ms`, once per request.
fn interrupt_late(
    shared: &Shared,
    threads: RArray,
    class: RClass,
    limit_ms: u64,
    raised: &mut [u64],
) {
    let now = shared.now_ms();
    for (slot, s) in shared.slots.iter().enumerate() {
        let since = s.busy_since.load(Ordering::SeqCst);
        let request = s.begun.load(Ordering::SeqCst);
        if since == 0 || now - since <= limit_ms || raised[slot] == request {
            continue;
        }
        raised[slot] = request;
        let message = format!(
            "the request ran longer than --worker-timeout ({} s) and was interrupted",
            limit_ms / 1000
        );
        if let Ok(thread) = threads.entry::<Value>(slot as isize) {
            let _: Result<Value, _> = thread.funcall("raise", (class, message));
        }
    }
}

/// How long a promotion waits for Ruby to let go of the native threads
/// of joined Ruby threads.
const NATIVE_THREADS_LINGER: Duration = Duration::from_secs(10);

/// Waits until the process runs no native thread beyond its live Ruby
/// threads. Ruby keeps the pthread of a finished Ruby thread for reuse for
/// a few seconds (3 in Ruby 3.1); `Process.fork` copes with those, but a
/// mold is meant to be as single-threaded as the preloader, so it waits
/// them out. Logs, and goes on, if they outstay `NATIVE_THREADS_LINGER`.
fn native_threads_gone(ruby: &Ruby) {
    let started = Instant::now();
    let live_ruby_threads = || -> usize {
        ruby.class_thread()
            .funcall::<_, _, RArray>("list", ())
            .map(|list| list.len())
            .unwrap_or(1)
    };
    loop {
        let native = std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0);
        if native <= live_ruby_threads() {
            return;
        }
        if started.elapsed() > NATIVE_THREADS_LINGER {
            eprintln!(
                "[rustrack] pid {}: {native} native threads still run after the request threads \
                 were joined; becoming the mold anyway (Process.fork copies only the main one)",
                std::process::id()
            );
            return;
        }
        let _ = gvl::without_gvl(
            || std::thread::sleep(Duration::from_millis(50)),
            Unblock::Io,
        );
    }
}

fn join_all(threads: RArray) {
    for thread in threads.into_iter() {
        // Join waits with the GVL released. Our threads return normally;
        // an error here would be Ruby's, and there is nothing to undo.
        if let Err(e) = thread.funcall::<_, _, Value>("join", ()) {
            eprintln!(
                "[rustrack] joining a request thread failed: {}",
                vm::describe(&e)
            );
        }
    }
}

/// The body of request thread `slot`.
fn request_thread(ruby: &Ruby, shared: &Shared, slot: usize, app: Value, stream: UnixStream) {
    let me = &shared.slots[slot];
    match serve_session(ruby, shared, slot, app, stream) {
        Ok(Ending::Quiet) => {}
        Ok(Ending::Eof) => me.closed.store(true, Ordering::SeqCst),
        Err(e) => *me.failed.lock().unwrap() = Some(format!("{e:#}")),
    }
    me.busy_since.store(0, Ordering::SeqCst);
    me.done.store(true, Ordering::SeqCst);
    shared.wake_main();
}

enum Ending {
    /// Told to stop, promoting, or the app called `exit`: the main thread
    /// knows already.
    Quiet,
    /// The front end closed this session: the worker is being retired.
    Eof,
}

fn serve_session(
    ruby: &Ruby,
    shared: &Shared,
    slot: usize,
    app: Value,
    stream: UnixStream,
) -> Result<Ending> {
    let me = &shared.slots[slot];
    let mut session = Session::new(ruby, app, stream, true)?;
    loop {
        let len = match session.reader.next(|| shared.stop.load(Ordering::SeqCst))? {
            Next::Request(len) => len,
            Next::Promote(len) => {
                session.reader.consume(len);
                // Refuse here, while serving can go on, when a thread of
                // the app would be lost; otherwise hand over to the main
                // thread, which stops every request thread first.
                let threads = template::threads(ruby);
                if !threads.is_empty() {
                    let reason = mold::threads_refusal(&threads);
                    mold::answer(&mut session.reader.stream, &Promoted { ok: false, reason })?;
                    continue;
                }
                session.writer.close();
                let stream = session
                    .reader
                    .stream
                    .try_clone()
                    .context("duplicating the connection for the mold")?;
                *shared.promote.lock().unwrap() = Some(stream);
                shared.stop.store(true, Ordering::SeqCst);
                return Ok(Ending::Quiet);
            }
            Next::Idle => {
                after_wait(ruby)?;
                continue;
            }
            Next::Stop => return Ok(Ending::Quiet),
            Next::Eof => return Ok(Ending::Eof),
        };
        // Busy from here, under the GVL: the main thread no longer wakes us.
        me.begun.fetch_add(1, Ordering::SeqCst);
        me.busy_since.store(shared.now_ms(), Ordering::SeqCst);
        // A wakeup that raced with the request clears here, harmlessly.
        after_wait(ruby)?;
        let exit = session.serve(ruby, len);
        me.busy_since.store(0, Ordering::SeqCst);
        if let Some(code) = exit? {
            let mut exit_code = shared.exit_code.lock().unwrap();
            exit_code.get_or_insert(code);
            drop(exit_code);
            shared.stop.store(true, Ordering::SeqCst);
            return Ok(Ending::Quiet);
        }
    }
}

/// Runs the interrupts pending for a request thread between requests (a
/// `Thread#wakeup`, or a `Thread#raise` that came too late for its
/// request), where nothing can escape. Err when Ruby is killing the thread.
fn after_wait(ruby: &Ruby) -> Result<()> {
    match ruby.thread_check_ints() {
        Ok(()) => Ok(()),
        Err(e) if e.value().is_none() => {
            anyhow::bail!("was killed ({e})")
        }
        Err(e) => {
            eprintln!(
                "[rustrack] pid {}: raised into a request thread outside a request (ignored): {}",
                std::process::id(),
                vm::describe(&e)
            );
            Ok(())
        }
    }
}
