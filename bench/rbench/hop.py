"""The floor of a proxy hop on this machine: what one process waking
another costs, measured with nothing else in the way.

Any front end that sits in a separate process (rustrack's, Passenger's
core, nginx in front of Puma) pays, per request, at least one round trip
with the worker and one with the client: write, sleep in the kernel, be
woken by the answer. How much CPU that costs depends far more on the
machine than on the server. On bare metal a cross-CPU wake-up costs a few
µs; on a guest whose idle CPUs halt into the hypervisor (this VM runs with
`haltpoll.guest_halt_poll_ns=0`, see /proc/cmdline) it costs ten times
that. So every report measures it at the start of the run and prints it in
its header, and the front-end figures can be read against it.

How: two Python processes on a Unix socketpair pass one byte back and forth
(`ROUNDS` round trips); each side's CPU (utime + stime, from getrusage) is
divided by the round trips. Three placements:

- *cross-CPU*: the scheduler places both; with the machine otherwise idle
  each wake-up lands on a sleeping CPU;
- *one CPU*: both pinned to CPU 0, so a wake-up is a plain context switch
  (the reference: Python's own cost per round trip is in it too);
- *cross-CPU, peer touching 4 MB*: the echoing side copies 4 MB between
  messages, as a Rails worker does between a request and its response;
  the figure is the pinging side's, the one in the front end's place.

Python adds about a µs per call on each side, the same in all three; the
differences between them are the kernel's and the hypervisor's.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys

ROUNDS = 20_000
TOUCH_BYTES = 4 << 20


def cpu_us() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1e6


def echo(fd: int, rounds: int, touch: int) -> None:
    """The child's side: answer each byte, copying `touch` bytes first;
    at the end send its own CPU µs per round trip as text."""
    s = socket.socket(fileno=fd)
    scratch, src = bytearray(touch), bytes(touch)
    c0 = cpu_us()
    for _ in range(rounds):
        if not s.recv(64):
            return
        if touch:
            scratch[:] = src
        s.send(b"x")
    s.sendall(f"{(cpu_us() - c0) / rounds:.3f}".encode())
    s.close()


def round_trip(rounds: int = ROUNDS, pin: int | None = None, touch: int = 0) -> dict:
    """CPU µs per round trip of each side: {"ping": .., "echo": ..}.
    pin: a CPU both sides are confined to; touch: bytes the echoing side
    copies between messages."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child_argv = [sys.executable, "-c",
                  f"import sys; sys.path.insert(0, {str(os.path.dirname(os.path.dirname(__file__)))!r}); "
                  f"from rbench.hop import echo; echo({b.fileno()}, {rounds}, {touch})"]
    old = os.sched_getaffinity(0)
    try:
        if pin is not None:
            os.sched_setaffinity(0, {pin})  # the child inherits it
        child = subprocess.Popen(child_argv, pass_fds=[b.fileno()])
        b.close()
        c0 = cpu_us()
        for _ in range(rounds):
            a.send(b"x")
            # One byte: the echo's last answer and its CPU figure may
            # arrive together.
            if not a.recv(1):
                raise RuntimeError("the echoing process went away")
        ping = (cpu_us() - c0) / rounds
        a.settimeout(60)
        tail = b""
        while chunk := a.recv(64):
            tail += chunk
    finally:
        if pin is not None:
            os.sched_setaffinity(0, old)
        a.close()
    if child.wait(timeout=60) != 0:
        raise RuntimeError(f"the echoing process exited with {child.returncode}")
    return {"ping": round(ping, 2), "echo": round(float(tail), 2)}


def measure(rounds: int = ROUNDS) -> dict:
    """The three placements of the module's docstring; the peer-touching
    one runs a tenth of the round trips (each copies 4 MB)."""
    return {
        "cross_cpu": round_trip(rounds),
        "one_cpu": round_trip(rounds, pin=min(os.sched_getaffinity(0))),
        "cross_cpu_busy_peer": round_trip(max(1, rounds // 10), touch=TOUCH_BYTES),
    }


def header_line(hop: dict) -> str:
    """The report header's line for meta["hop"]."""
    return (f"- the floor of a proxy hop here (bench/rbench/hop.py): a wake-up round trip between two "
            f"processes costs each side {hop['cross_cpu']['ping']:.1f} µs of CPU across CPUs, "
            f"{hop['one_cpu']['ping']:.1f} µs on one CPU, {hop['cross_cpu_busy_peer']['ping']:.1f} µs "
            f"when the peer touches 4 MB between messages")


if __name__ == "__main__":
    for name, r in measure().items():
        print(f"{name}: ping {r['ping']} µs, echo {r['echo']} µs per round trip")
