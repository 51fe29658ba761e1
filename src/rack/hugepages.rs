//! Backs the preloader's loaded heap with transparent huge pages, so that
//! fork copies one page-table entry per 2 MB instead of 512.
//!
//! fork(2) costs time in proportion to the parent's mapped memory: the
//! kernel copies every page-table entry and write-protects it. For a
//! preloader holding 200 MB that is ~50,000 entries and 5–9 ms on this
//! machine, most of a smart spawn. A PMD-mapped huge page is one entry, so
//! after collapsing the heap into huge pages fork takes ~1.5 ms.
//!
//! Ruby turns THP off for its whole process (`prctl(PR_SET_THP_DISABLE)` in
//! `ruby_setup`), because kernels before 5.8 copied all 2 MB when a child
//! wrote to a shared huge page. Kernels since split the mapping in the
//! writing child and copy the one 4 KB page, so copy-on-write sharing is
//! as fine-grained as before. We therefore lift Ruby's switch only for the
//! collapse and put it back: no new huge pages appear later in the
//! preloader or in workers (which inherit the switch), and khugepaged never
//! merges a worker's half-private range into a fully private huge page.
//!
//! Only 2 MB ranges that are already nearly all resident are collapsed:
//! MADV_COLLAPSE fills the holes of a range, and filling sparse ranges
//! would cost memory for nothing.

use std::fs;
use std::time::Instant;

use crate::control::HugePages;

/// A huge page on x86-64 and arm64 with 4 KB base pages.
const HUGE: usize = 2 << 20;
const PAGE: usize = 4096;
/// Collapse a 2 MB range only if at most this many of its 512 base pages
/// are missing, bounding the memory it adds to 1/32.
const MAX_MISSING: usize = 16;

/// Collapses the nearly resident 2 MB ranges of this process's private
/// anonymous writable mappings (the Ruby object heap and malloc's heap).
/// Best effort: any failure leaves the memory as it was. Ranges the kernel
/// refuses (no free huge page, THP unsupported) count as `failed`.
pub fn collapse_heap() -> HugePages {
    let started = Instant::now();
    let mut outcome = HugePages {
        collapsed: 0,
        failed: 0,
        sparse: 0,
        millis: 0,
    };
    use nix::sys::prctl::{get_thp_disable, set_thp_disable};
    let Ok(was_disabled) = get_thp_disable() else {
        return outcome;
    };
    if was_disabled && set_thp_disable(false).is_err() {
        return outcome;
    }
    for (start, end) in heap_ranges() {
        let mut at = align_up(start, HUGE);
        while at + HUGE <= end {
            match collapse_range(at) {
                Some(true) => outcome.collapsed += 1,
                Some(false) => outcome.failed += 1,
                None => outcome.sparse += 1,
            }
            at += HUGE;
        }
    }
    if was_disabled {
        // Restores Ruby's choice for everything that follows; the huge
        // pages made above stay.
        let _ = set_thp_disable(true);
    }
    outcome.millis = started.elapsed().as_millis() as u64;
    outcome
}

/// Collapses one aligned 2 MB range: `None` if too sparse, else whether
/// the kernel made it a huge page.
fn collapse_range(at: usize) -> Option<bool> {
    let mut resident = [0u8; HUGE / PAGE];
    // SAFETY: mincore reads no memory of ours in the range: it asks the
    // kernel which pages are resident, writing one byte per page into
    // `resident`, which is exactly HUGE / PAGE bytes long. `at` is
    // page-aligned. If an app thread (libraries start some at load time;
    // they may run native code without the GVL) unmapped the range after
    // we read /proc/self/maps, the call fails with ENOMEM and we skip it.
    let rc = unsafe { libc::mincore(at as *mut libc::c_void, HUGE, resident.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    let missing = resident.iter().filter(|&&b| b & 1 == 0).count();
    if missing > MAX_MISSING {
        return None;
    }
    // SAFETY: neither advice changes what the memory holds, only how the
    // kernel backs it: MADV_HUGEPAGE marks the range eligible for huge
    // pages, MADV_COLLAPSE copies it into one synchronously, contents kept.
    // So no Rust or Ruby reference into the range is affected, whoever
    // owns it. A range unmapped meanwhile by another thread fails with
    // ENOMEM; one mapped anew there is merely backed differently.
    let ok = unsafe {
        libc::madvise(at as *mut libc::c_void, HUGE, libc::MADV_HUGEPAGE) == 0
            && libc::madvise(at as *mut libc::c_void, HUGE, libc::MADV_COLLAPSE) == 0
    };
    Some(ok)
}

/// Private, anonymous, writable mappings: the brk heap and the anonymous
/// mmaps Ruby takes its object pages from. Not the stack (it grows down
/// and is one thread's), not files, not shared memory.
fn heap_ranges() -> Vec<(usize, usize)> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().filter_map(parse_heap_line).collect()
}

fn parse_heap_line(line: &str) -> Option<(usize, usize)> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("");
    if !perms.starts_with("rw") || !perms.ends_with('p') || inode != "0" {
        return None;
    }
    if !(path.is_empty() || path == "[heap]") {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end - start >= HUGE).then_some((start, end))
}

fn align_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_big_private_anonymous_writable_mappings() {
        let heap =
            "55d0e2a00000-55d0e8000000 rw-p 00000000 00:00 0                          [heap]";
        let anon = "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 ";
        let small = "7f0000000000-7f0000100000 rw-p 00000000 00:00 0 ";
        let stack =
            "7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0                          [stack]";
        let file = "7f1000000000-7f1000400000 rw-p 00001000 08:01 1234 /usr/lib/libruby.so";
        let shared = "7f2000000000-7f2000400000 rw-s 00000000 00:05 99 /dev/zero";
        let readonly = "7f3000000000-7f3000400000 r--p 00000000 00:00 0 ";
        assert_eq!(
            parse_heap_line(heap),
            Some((0x55d0e2a00000, 0x55d0e8000000))
        );
        assert_eq!(
            parse_heap_line(anon),
            Some((0x7f0000000000, 0x7f0000400000))
        );
        for line in [small, stack, file, shared, readonly] {
            assert_eq!(parse_heap_line(line), None, "{line}");
        }
    }

    #[test]
    fn aligns_up_to_huge_page_boundaries() {
        assert_eq!(align_up(0x200000, HUGE), 0x200000);
        assert_eq!(align_up(0x200001, HUGE), 0x400000);
        assert_eq!(align_up(1, HUGE), HUGE);
    }
}
