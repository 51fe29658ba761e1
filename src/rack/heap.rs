//! Preparing a template's Ruby heap for forking (`--preload-gc`): on
//! Ruby 3.1, the parts of Ruby 3.3's `Process.warmup` that pay.
//!
//! A forked worker shares the template's pages until it writes to them.
//! Ruby's GC writes to objects it did not allocate in two ways that
//! preparation can prevent. It ages young objects: the age lives in the
//! object's own flags, so a minor GC in the worker that marks an inherited
//! young object copies its page, until the object is old (three GCs). And
//! it allocates into free slots of half-empty inherited pages.
//!
//! `age` (the default): full GCs until the survivors are old (`GC.stat`'s
//! `old_objects` covers nearly every live object, or stops growing), then
//! `GC.compact`, packing live objects into as few pages as possible so
//! that workers allocate in pages of their own, then glibc's
//! `malloc_trim(0)`, which gives the free memory in malloc's arenas back to
//! the kernel instead of leaving it resident in the template, where each
//! worker would copy what it reuses. `compact` is one full GC and
//! `GC.compact`; `start` one full GC.
//!
//! Measured (README, "The preloader's heap"): on the large Rails fixture
//! one full GC already leaves under 1,000 objects young, so aging costs
//! nothing there (that GC replaces `GC.start`) and saves nothing; 200,000
//! objects still young at the fork made a child's first minor GC copy
//! 10 MB, under 1 MB once aged (`bench/cow_writes.rb`). `malloc_trim`
//! gives back 3.5 MB (7-10 MB after a warm-up) for no measurable CPU. Not
//! done, unlike `Process.warmup`: computing every string's code range
//! ahead. On Ruby 3.1 comparing, interpolating or appending a string
//! rewrites its flags whether its code range is known or not, and the
//! fixture's workers came out the same to 0.1 MB with it.

use std::time::{Duration, Instant};

use magnus::{prelude::*, Ruby, Value};

use crate::config::PreloadGc;

/// Full GCs a young object must survive to become old (Ruby's
/// `RVALUE_OLD_AGE`, 3 since 2.2, not exposed in 3.1's GC constants).
const OLD_AGE: u32 = 3;

/// The most full GCs spent on aging: enough for objects allocated just
/// before to become old, plus a margin for objects that keep becoming
/// young meanwhile (a thread allocating); more would not help.
const MAX_AGING_GCS: u32 = 2 * OLD_AGE + 2;

/// Which steps a `--preload-gc` mode runs, in this order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    /// One full GC.
    pub start: bool,
    /// Full GCs until the survivors are old.
    pub age: bool,
    pub compact: bool,
    pub malloc_trim: bool,
}

impl Steps {
    pub fn of(gc: PreloadGc) -> Steps {
        match gc {
            PreloadGc::None => Steps::default(),
            PreloadGc::Start => Steps {
                start: true,
                ..Steps::default()
            },
            PreloadGc::Compact => Steps {
                start: true,
                compact: true,
                ..Steps::default()
            },
            PreloadGc::Age => Steps {
                age: true,
                compact: true,
                malloc_trim: true,
                ..Steps::default()
            },
        }
    }
}

/// What `prepare` did, for the log.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Steps,
    /// `GC.stat` before and after.
    pub old_before: u64,
    pub live_before: u64,
    pub old_after: u64,
    pub live_after: u64,
    /// Full GCs run while aging (compaction's own not counted).
    pub aging_gcs: u32,
    /// Resident memory `malloc_trim` gave back, in bytes.
    pub trimmed: Option<u64>,
    pub elapsed: Duration,
    /// CPU time the steps took: unlike `elapsed`, not inflated by other
    /// processes on a busy machine.
    pub cpu: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "old objects {} of {} live → {} of {} live",
            self.old_before, self.live_before, self.old_after, self.live_after,
        )?;
        if self.steps.age {
            write!(f, " ({} full GCs to age them)", self.aging_gcs)?;
        }
        if self.steps.compact {
            write!(f, ", compacted")?;
        }
        if let Some(bytes) = self.trimmed {
            write!(
                f,
                ", malloc_trim released {:.1} MB",
                bytes as f64 / (1 << 20) as f64
            )?;
        }
        write!(
            f,
            " in {} ms ({} ms CPU)",
            self.elapsed.as_millis(),
            self.cpu.as_millis()
        )
    }
}

/// Runs the steps of `gc`. Usable in any process that has the app loaded
/// (the preloader; a worker being promoted to template). Ruby errors are
/// ignored: each step is an optimisation, and GC.compact, for one, is
/// missing on some platforms.
pub fn prepare(ruby: &Ruby, gc: PreloadGc) -> Report {
    let steps = Steps::of(gc);
    let started = Instant::now();
    let cpu_before = cpu_time();
    let mut report = Report {
        steps,
        ..Report::default()
    };
    let Ok(gc_module) = ruby.class_object().const_get::<_, Value>("GC") else {
        return report;
    };
    let stat = |key: &str| -> u64 {
        gc_module
            .funcall("stat", (ruby.to_symbol(key),))
            .unwrap_or(0)
    };
    let full_gc = || {
        let _: Result<Value, _> = gc_module.funcall("start", ());
    };
    (report.old_before, report.live_before) = (stat("old_objects"), stat("heap_live_slots"));

    if steps.start && !steps.age {
        full_gc();
    }
    if steps.age {
        // Every full GC ages each young survivor by one. Done when
        // (nearly) every live object is old, or else when old_objects has not
        // grown for OLD_AGE GCs in a row: whatever was young at the start
        // has been promoted by then, and what is still young stays young
        // (objects without write barriers, which Ruby never promotes).
        let (mut old, mut flat) = (stat("old_objects"), 0);
        while report.aging_gcs < MAX_AGING_GCS {
            full_gc();
            report.aging_gcs += 1;
            let (now, live) = (stat("old_objects"), stat("heap_live_slots"));
            // 0.5 %, or a thousand objects (40 KB), is too little to matter.
            if live.saturating_sub(now) <= (live / 200).max(1000) {
                break;
            }
            flat = if now > old + live / 1000 { 0 } else { flat + 1 };
            if flat >= OLD_AGE {
                break;
            }
            old = now;
        }
    }
    if steps.compact {
        let _: Result<Value, _> = gc_module.funcall("compact", ());
    }
    if steps.malloc_trim {
        report.trimmed = Some(malloc_trim());
    }
    (report.old_after, report.live_after) = (stat("old_objects"), stat("heap_live_slots"));
    report.elapsed = started.elapsed();
    report.cpu = cpu_time().saturating_sub(cpu_before);
    report
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// glibc's `malloc_trim(0)`; returns how much resident memory it released.
fn malloc_trim() -> u64 {
    let before = crate::procfs::rss(std::process::id()).unwrap_or(0);
    // SAFETY: malloc_trim takes no pointers and takes glibc's arena locks
    // itself; it only hands memory that is already free (the top of each
    // arena, and whole free pages inside, with MADV_DONTNEED) back to the
    // kernel, so no live allocation moves or changes, whoever holds it.
    unsafe { libc::malloc_trim(0) };
    let after = crate::procfs::rss(std::process::id()).unwrap_or(0);
    before.saturating_sub(after)
}
