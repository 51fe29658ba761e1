//! Readers for `/proc/PID/smaps_rollup` and `/proc/PID/stat`.
//!
//! Only ever called for PIDs rustrack started. Reading smaps walks the
//! process's page tables, so callers sample on a timer or on demand, never
//! per request.

use std::io;

use serde::{Deserialize, Serialize};

/// Memory of one process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub swap: u64,
    /// Anonymous memory mapped as transparent huge pages (the preloader's
    /// heap with `--preload-hugepages`; counted in the fields above too).
    #[serde(default)]
    pub anon_huge: u64,
}

impl Memory {
    pub fn shared(&self) -> u64 {
        self.shared_clean + self.shared_dirty
    }
}

/// Sums the fields of smaps or smaps_rollup text (kB values). Summing
/// works for both: rollup has one block, smaps one per mapping.
pub fn parse_smaps(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "Rss" => &mut m.rss,
            "Pss" => &mut m.pss,
            "Shared_Clean" => &mut m.shared_clean,
            "Shared_Dirty" => &mut m.shared_dirty,
            "Private_Clean" => &mut m.private_clean,
            "Private_Dirty" => &mut m.private_dirty,
            "Swap" => &mut m.swap,
            "AnonHugePages" => &mut m.anon_huge,
            _ => continue,
        };
        if let Some(kb) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            *field += kb * 1024;
        }
    }
    m
}

pub fn memory(pid: u32) -> io::Result<Memory> {
    match std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        Ok(text) => Ok(parse_smaps(&text)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                && std::path::Path::new(&format!("/proc/{pid}")).exists() =>
        {
            std::fs::read_to_string(format!("/proc/{pid}/smaps")).map(|t| parse_smaps(&t))
        }
        Err(e) => Err(e),
    }
}

/// The fields of `/proc/PID/stat` rustrack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may contain spaces or ')':
    // fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    })
}

pub fn stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))
}

/// Clock ticks per second, the unit of `/proc/PID/stat` CPU times.
pub fn ticks_per_second() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// Resident set size from `/proc/PID/statm`: a counter the kernel keeps,
/// so reading it costs microseconds, unlike `smaps_rollup`, which walks
/// the page tables. It bounds private dirty from above.
pub fn rss(pid: u32) -> io::Result<u64> {
    static PAGE_SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let page = *PAGE_SIZE.get_or_init(|| {
        use nix::unistd::{sysconf, SysconfVar};
        match sysconf(SysconfVar::PAGE_SIZE) {
            Ok(Some(n)) if n > 0 => n as u64,
            _ => 4096,
        }
    });
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|pages| pages * page)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/statm"))
}

pub fn is_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; it is not alive for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text
            .rfind(')')
            .and_then(|i| text[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_fields_are_summed_in_bytes() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss: 100 kB\nPss: 40 kB\n\
                    Shared_Clean: 50 kB\nShared_Dirty: 10 kB\nPrivate_Clean: 5 kB\n\
                    Private_Dirty: 35 kB\nAnonHugePages: 4096 kB\nSwap: 1 kB\n";
        let m = parse_smaps(text);
        assert_eq!(m.rss, 100 * 1024);
        assert_eq!(m.pss, 40 * 1024);
        assert_eq!(m.private_dirty, 35 * 1024);
        assert_eq!(m.shared(), 60 * 1024);
        assert_eq!(m.swap, 1024);
        assert_eq!(m.anon_huge, 4096 * 1024);
    }

    #[test]
    fn stat_survives_odd_command_names() {
        let text = "42 (a) b) S 7 42 42 0 -1 4194560 100 0 0 0 11 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 7,
                cpu_ticks: 16
            })
        );
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(memory(me).unwrap().rss > 0);
        assert!(rss(me).unwrap() > 0);
        assert!(is_alive(me));
        assert_eq!(stat(me).unwrap().ppid, std::os::unix::process::parent_id());
    }
}
