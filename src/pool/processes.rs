//! The front end's processes, each held by a pidfd: the one place that
//! signals a process.
//!
//! A PID names a process only until the process is reaped; after that the
//! kernel may hand the same number to any new process (within seconds where
//! `pid_max` is 32768). A pidfd names one process for good: a signal sent
//! through the pidfd of a process that has exited fails with `ESRCH` and
//! cannot reach whoever got the PID next. So every child is filed here with
//! its pidfd, and `signal*` is the only way rustrack signals anything.
//!
//! Getting the pidfd without a window in which the PID could be reused:
//! - the preloader and direct-spawned workers are our own children. `spawn`
//!   starts them and `pidfd_open`s them while holding the table's lock, and
//!   `reap` holds the same lock around `waitpid`, so a child cannot be
//!   reaped (the only thing that frees its PID) before its pidfd exists;
//! - forked workers are the preloader's children. The preloader opens the
//!   pidfd right after `fork` (the child cannot have been reaped yet: the
//!   preloader reaps on the same thread, later) and passes it over the
//!   control channel with `SCM_RIGHTS`; `adopt` files it.
//!
//! Several apps (application groups) share one table, each through its
//! own [`Processes`] view: a view files, lists and signals only its group's
//! processes. There is one table because there is one `waitpid(-1)`: the
//! reaper collects every child and routes each exit to the group that filed
//! it.
//!
//! Entries leave the table when the process is known to have exited: reaped
//! here (`reap`: our children, and forked workers re-parented to us after
//! their preloader died, since the front end is a child subreaper), or
//! reported by the preloader (`exited`). Either way only entries whose pidfd
//! says "exited" are removed, so a stale report can never drop a live
//! process that happens to have the same PID.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::mpsc::UnboundedSender;

use super::machine::WorkerId;
use super::Event;

/// Which application group a process belongs to.
pub type Group = u32;

/// What a process is to the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Preloader,
    Worker(WorkerId),
    /// A worker promoted to be a template.
    Mold(WorkerId),
}

/// A process that has exited, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub role: Role,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// rustrack asked it to stop (an idle or replaced preloader, a retired
    /// worker): its exit is news, not trouble.
    pub expected: bool,
}

struct Child {
    pid: u32,
    group: Group,
    role: Role,
    pidfd: OwnedFd,
    expected: bool,
    /// When a sweep first found it exited but unreported.
    exited_seen: Option<Instant>,
}

impl Child {
    /// Whether the process behind the pidfd has exited (a pidfd polls
    /// readable once its process has terminated).
    fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

/// Every process of the instance, whatever its group.
#[derive(Default)]
struct Table {
    children: Mutex<Vec<Child>>,
    /// Where each group hears of its processes' exits.
    routes: Mutex<BTreeMap<Group, UnboundedSender<Event>>>,
}

/// One group's view of the process table.
#[derive(Clone)]
pub struct Processes {
    table: Arc<Table>,
    group: Group,
}

impl Default for Processes {
    fn default() -> Self {
        Self::new()
    }
}

fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let pid =
        rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| std::io::Error::other("PID 0"))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

impl Processes {
    /// A new table, seen as group 0.
    pub fn new() -> Self {
        Processes {
            table: Arc::default(),
            group: 0,
        }
    }

    /// Group `group`'s view of the same table.
    pub fn group(&self, group: Group) -> Processes {
        Processes {
            table: self.table.clone(),
            group,
        }
    }

    /// Sends this group's exits, as the reaper finds them, to `events`.
    pub fn route_exits(&self, events: UnboundedSender<Event>) {
        self.table.routes.lock().unwrap().insert(self.group, events);
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.table.children.lock().unwrap()
    }

    fn mine(&self, c: &Child) -> bool {
        c.group == self.group
    }

    /// Starts `cmd` as a child in `role` and files it. The `Child` std
    /// returns is dropped: the reaper collects every child with `waitpid`.
    pub fn spawn(&self, cmd: &mut Command, role: Role) -> std::io::Result<u32> {
        let mut children = self.children();
        let child = cmd.spawn()?;
        let pid = child.id();
        drop(child);
        // Cannot fail for a child we have not reaped (a zombie included),
        // short of a kernel without pidfds (< 5.3) or no free fds.
        let pidfd = open_pidfd(pid)?;
        children.push(Child {
            pid,
            group: self.group,
            role,
            pidfd,
            expected: false,
            exited_seen: None,
        });
        Ok(pid)
    }

    /// Files a process someone else started (a worker the preloader
    /// forked), with the pidfd that someone opened for it.
    pub fn adopt(&self, pid: u32, pidfd: OwnedFd, role: Role) {
        self.children().push(Child {
            pid,
            group: self.group,
            role,
            pidfd,
            expected: false,
            exited_seen: None,
        });
    }

    /// Reaps every child of the front end that has exited, and sends each
    /// group's exits to it (the reaper's job).
    pub fn reap_and_route(&self, forget_after: Option<Duration>) {
        let mut exits = self.reap_all();
        if let Some(grace) = forget_after {
            exits.extend(self.forget_exited(grace));
        }
        let routes = self.table.routes.lock().unwrap();
        let mut by_group: BTreeMap<Group, Vec<Exit>> = BTreeMap::new();
        for (group, exit) in exits {
            by_group.entry(group).or_default().push(exit);
        }
        for (group, exits) in by_group {
            match routes.get(&group) {
                Some(events) => {
                    let _ = events.send(Event::Exits(exits));
                }
                None => tracing::debug!(group, "exits of a group nobody listens for: {exits:?}"),
            }
        }
    }

    /// Reaps every child that has exited, now (on the way out): this
    /// group's exits are returned, other groups' sent to them.
    pub fn reap(&self) -> Vec<Exit> {
        let (mine, others): (Vec<_>, Vec<_>) = self
            .reap_all()
            .into_iter()
            .partition(|(group, _)| *group == self.group);
        let routes = self.table.routes.lock().unwrap();
        for (group, exit) in others {
            if let Some(events) = routes.get(&group) {
                let _ = events.send(Event::Exits(vec![exit]));
            }
        }
        mine.into_iter().map(|(_, exit)| exit).collect()
    }

    fn reap_all(&self) -> Vec<(Group, Exit)> {
        let mut children = self.children();
        let mut exits = Vec::new();
        loop {
            let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw() as u32, Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw() as u32, None, Some(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            let before = exits.len();
            remove_exited(&mut children, pid, code, signal, &mut exits);
            if exits.len() == before {
                // Not one of ours: a process the app started and left
                // behind, re-parented to us (we are a subreaper).
                tracing::debug!(pid, "reaped a process rustrack did not start");
            }
        }
        exits
    }

    /// The preloader reaped `pid`, one of its workers.
    pub fn exited(&self, pid: u32, code: Option<i32>, signal: Option<i32>) -> Vec<Exit> {
        let mut exits = Vec::new();
        remove_exited(&mut self.children(), pid, code, signal, &mut exits);
        // A template reports only its own group's workers.
        exits
            .into_iter()
            .filter(|(group, _)| *group == self.group)
            .map(|(_, exit)| exit)
            .collect()
    }

    /// Files a process under another role (a worker promoted to mold).
    pub fn set_role(&self, pid: u32, role: Role) {
        for c in self.children().iter_mut().filter(|c| c.group == self.group) {
            if c.pid == pid && !c.has_exited() {
                c.role = role;
            }
        }
    }

    /// Marks a process whose exit rustrack asked for.
    pub fn expect_exit(&self, pid: u32) {
        for c in self.children().iter_mut().filter(|c| c.group == self.group) {
            if c.pid == pid {
                c.expected = true;
            }
        }
    }

    /// Signals the worker `id`. False when it is not (or no longer) ours.
    pub fn signal_worker(&self, id: WorkerId, sig: Signal) -> bool {
        self.signal_where(sig, |c| c.role == Role::Worker(id))
    }

    /// Signals the mold that was worker `id`.
    pub fn signal_mold(&self, id: WorkerId, sig: Signal) -> bool {
        self.signal_where(sig, |c| c.role == Role::Mold(id))
    }

    /// Signals the process filed under `pid`. False when none is.
    pub fn signal_pid(&self, pid: u32, sig: Signal) -> bool {
        self.signal_where(sig, |c| c.pid == pid)
    }

    /// Signals every process of this group.
    pub fn signal_all(&self, sig: Signal) {
        self.signal_where(sig, |_| true);
    }

    fn signal_where(&self, sig: Signal, which: impl Fn(&Child) -> bool) -> bool {
        let rsig = rustix::process::Signal::from_named_raw(sig as i32)
            .expect("nix signals are named signals");
        let mut sent = false;
        let children = self.children();
        for c in children.iter().filter(|c| self.mine(c) && which(c)) {
            match rustix::process::pidfd_send_signal(&c.pidfd, rsig) {
                Ok(()) => sent = true,
                // Exited, not yet reaped or reported: nobody to signal.
                Err(rustix::io::Errno::SRCH) => {}
                Err(e) => tracing::warn!(pid = c.pid, "sending {sig} to {:?}: {e}", c.role),
            }
        }
        sent
    }

    /// The PID of a worker, if it is ours and filed.
    pub fn pid_of(&self, id: WorkerId) -> Option<u32> {
        self.children()
            .iter()
            .find(|c| self.mine(c) && c.role == Role::Worker(id))
            .map(|c| c.pid)
    }

    /// Every filed process, as (pid, role).
    pub fn list(&self) -> Vec<(u32, Role)> {
        self.children()
            .iter()
            .filter(|c| self.mine(c))
            .map(|c| (c.pid, c.role))
            .collect()
    }

    /// Processes filed and not yet known to have exited.
    pub fn live(&self) -> usize {
        self.children()
            .iter()
            .filter(|c| self.mine(c) && !c.has_exited())
            .count()
    }

    /// Forgets processes that exited and that nobody reported within
    /// `grace` (workers a preloader reaped just before it was killed).
    fn forget_exited(&self, grace: Duration) -> Vec<(Group, Exit)> {
        let mut children = self.children();
        let mut exits = Vec::new();
        let now = Instant::now();
        children.retain_mut(|c| {
            if !c.has_exited() {
                return true;
            }
            let seen = *c.exited_seen.get_or_insert(now);
            if now.duration_since(seen) >= grace {
                exits.push((
                    c.group,
                    Exit {
                        pid: c.pid,
                        role: c.role,
                        code: None,
                        signal: None,
                        expected: c.expected,
                    },
                ));
                false
            } else {
                true
            }
        });
        exits
    }
}

fn remove_exited(
    children: &mut Vec<Child>,
    pid: u32,
    code: Option<i32>,
    signal: Option<i32>,
    exits: &mut Vec<(Group, Exit)>,
) {
    children.retain(|c| {
        if c.pid == pid && c.has_exited() {
            exits.push((
                c.group,
                Exit {
                    pid,
                    role: c.role,
                    code,
                    signal,
                    expected: c.expected,
                },
            ));
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reap` waits for any child of the test process: tests that spawn
    /// children take turns, or one would reap the other's.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// A reaped child is out of the table, and a signal meant for it goes
    /// nowhere; a live one is signalled through its pidfd.
    #[test]
    fn signals_reach_only_live_children_we_filed() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let table = Processes::new();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let pid = table.spawn(&mut sleeper, Role::Worker(1)).unwrap();
        let mut quick = Command::new("true");
        let quick_pid = table.spawn(&mut quick, Role::Worker(2)).unwrap();
        // Wait for `true` to exit, then reap it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut reaped = Vec::new();
        while reaped.is_empty() && std::time::Instant::now() < deadline {
            reaped = table.reap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(reaped.len(), 1, "{reaped:?}");
        assert_eq!(reaped[0].pid, quick_pid);
        assert_eq!(reaped[0].role, Role::Worker(2));
        assert_eq!(reaped[0].code, Some(0));
        assert!(!table.signal_worker(2, Signal::SIGKILL));
        assert!(!table.signal_pid(quick_pid, Signal::SIGKILL));

        assert_eq!(table.pid_of(1), Some(pid));
        assert!(table.signal_worker(1, Signal::SIGKILL));
        let mut exits = Vec::new();
        while exits.is_empty() && std::time::Instant::now() < deadline {
            exits = table.reap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(exits[0].signal, Some(libc::SIGKILL));
        assert!(table.list().is_empty());
    }

    /// A report about a PID whose filed process is alive (the PID was
    /// reused before the report arrived) removes nothing.
    #[test]
    fn a_stale_exit_report_keeps_a_live_process() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let table = Processes::new();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let pid = table.spawn(&mut sleeper, Role::Worker(7)).unwrap();
        assert!(table.exited(pid, Some(0), None).is_empty());
        assert_eq!(table.pid_of(7), Some(pid));
        table.signal_all(Signal::SIGKILL);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !table.list().is_empty() && std::time::Instant::now() < deadline {
            table.reap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(table.list().is_empty());
    }
}
