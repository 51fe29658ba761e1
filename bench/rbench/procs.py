"""Process management: the harness's process tree, read from /proc.

The harness makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so a
server that daemonizes (Passenger's watchdog and core) is re-parented to the
harness instead of init and stays its descendant. "The server's processes"
are then simply every live descendant of the harness except its own load
generators (`Clients.pids`): only one server runs at a time. That tree is
what the memory and CPU figures are summed over, and what `stop` waits for
and, after the grace period, KILLs PID by PID. Daemonized processes that
exit become zombie children of the harness that no Popen object owns;
`reap_orphans` collects them. There is no signalling by name and no process
group kill: everything is by PID, from the tree.

Also here: the few other /proc readings (CPU ticks, smaps_rollup, load
average), a free TCP port, and waiting for a port to answer HTTP.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from .log import log

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36

# pid -> (ppid, state, utime+stime ticks)
Stat = tuple[int, str, int]


def become_subreaper() -> bool:
    """Makes daemonizing descendants stay in the harness's tree."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def read_stat(pid: int) -> Stat | None:
    """(ppid, state, utime+stime ticks) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return parse_stat(data)


def parse_stat(data: str) -> Stat:
    """Fields of a /proc/PID/stat line. The command name (field 2) is in
    parentheses and may itself hold spaces and parentheses, so the fields
    are counted from the last ')'."""
    fields = data[data.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[11]) + int(fields[12])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_processes() -> dict[int, Stat]:
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                procs[int(name)] = st
    return procs


def tree_below(root: int, procs: dict[int, Stat]) -> dict[int, Stat]:
    """The descendants of root among procs (pid -> stat, ppid first)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = procs[pid]
        todo.extend(children.get(pid, []))
    return out


def descendants(root: int) -> dict[int, Stat]:
    """Every live descendant of root: pid -> (ppid, state, cpu ticks)."""
    return tree_below(root, all_processes())


def reap_orphans(keep: set[int]) -> None:
    """Reaps zombie children of the harness that no Popen object owns (the
    daemonized processes that the subreaper setting hands to us)."""
    me = os.getpid()
    for pid, (ppid, state, _) in descendants(me).items():
        if ppid == me and state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


class Clients:
    """PIDs of the harness's own load generators, never part of a server."""

    pids: set[int] = set()


def server_tree() -> dict[int, Stat]:
    """The running server's processes: every live descendant of the harness
    except its load generators (only one server runs at a time)."""
    return {
        pid: st
        for pid, st in descendants(os.getpid()).items()
        if st[1] != "Z" and pid not in Clients.pids
    }


def tree_cpu_ticks() -> int:
    return sum(st[2] for st in server_tree().values())


def pid_ticks(pid: int | None) -> int | None:
    st = read_stat(pid) if pid else None
    return st[2] if st else None


def pids_ticks(pids: list[int]) -> int | None:
    """CPU ticks of the processes pids together; None when there are none
    or one is gone (its time would be missing from the sum)."""
    ticks = [pid_ticks(p) for p in pids]
    return sum(ticks) if ticks and None not in ticks else None


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """Fields of /proc/PID/smaps_rollup in bytes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    return parse_smaps_rollup(text)


def parse_smaps_rollup(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# -- starting and stopping ---------------------------------------------------


def spawn(argv: list[str], cwd: Path, env: dict, logfile: Path) -> subprocess.Popen:
    """Starts a server in its own session, stdout and stderr to logfile."""
    with open(logfile, "wb") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def stop(proc: subprocess.Popen, grace: float, label: str, fronts: Sequence[subprocess.Popen] = ()) -> bool:
    """TERM the fronts (a proxy in front of the server: it stops taking
    connections first) and the main PID, wait for the whole tree to go,
    then KILL what is left, by PID. Also reaps the orphans handed to the
    harness. Returns whether KILL was needed."""
    keep = {proc.pid} | {p.pid for p in fronts}
    for p in [*fronts, proc]:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in [*fronts, proc]:
            p.poll()
        reap_orphans(keep)
        if proc.returncode is not None and not server_tree():
            return False
        time.sleep(0.05)
    log(f"{label}: still running {grace:.0f} s after TERM, sending KILL")
    kill_tree()
    proc.wait(timeout=10)
    return True


def kill_tree() -> None:
    """KILLs every descendant of the harness (all started by it), by PID."""
    for _ in range(50):
        tree = descendants(os.getpid())
        live = [p for p, st in tree.items() if st[1] != "Z"]
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid, st in tree.items():
            if st[0] == os.getpid():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        if not live:
            return
        time.sleep(0.1)


# -- ports -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def answers_http(port: int) -> bool:
    """Whether GET / on the port gets an answer other than a 5xx."""
    try:
        status, _ = http_get(port, "/", timeout=10)
    except OSError:
        return False
    return status < 500


def wait_for(ready: Callable[[], bool], deadline: float, alive: Callable[[], None],
             interval: float = 0.1) -> bool:
    """Polls ready() until it holds (True) or time.monotonic() passes
    deadline (False); alive() is called before each poll and raises if the
    server died meanwhile."""
    while True:
        alive()
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
