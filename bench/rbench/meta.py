"""What the report says about the run itself: the machine (CPUs, kernel,
load average, the cost of a process wake-up: hop.py), the rustrack commit and whether src/, ruby/ or the Cargo
files had uncommitted changes, the version of each peer that runs (as the
peer itself reports it), Ruby, Rails and wrk, and the settings of the run.
All of it goes into the JSON's "meta" and the header of the Markdown.

A before/after run (--baseline) also records the baseline binary: its path,
its `rustrack --version`, what git says of the commit it names (if its
version names one) or else of the checkout it was built in (when it lies
under a checkout's target/), and a SHA-256 prefix that tells two binaries
apart when their versions are the same; and this build's `--version`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from pathlib import Path

from . import hop
from .paths import ROOT, RUSTRACK
from .procs import loadavg
from .servers import ADAPTERS


def versions(servers: list[str]) -> dict:
    """Version of each peer in servers (those that run), Ruby, Rails, wrk."""
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception as e:
            return f"? ({e})"

    peers = {
        "passenger": lambda: first_line(["passenger", "--version"]),
        "puma": lambda: "Puma " + first_line(["ruby", "-e", "require 'puma/const'; print Puma::Const::PUMA_VERSION"]),
        "unicorn": lambda: first_line(["unicorn", "-v"]),
        "nginx": lambda: first_line(["nginx", "-v"]),
    }
    # By package: puma-nginx runs both Puma and nginx.
    wanted = {p for s in servers if s in ADAPTERS for p in ADAPTERS[s].packages}
    out = {name: version() for name, version in peers.items() if name in wanted}
    out.update({
        "ruby": first_line(["ruby", "-v"]),
        "rails": "Rails " + first_line(["ruby", "-e", "require 'rails/version'; print Rails.version"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
    })
    return out


def git(*args, cwd: Path = ROOT) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return r.stdout.strip()


def rustrack_version(binary: str | Path) -> str:
    """The first line of `binary --version`, or "? (why)"."""
    try:
        r = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
        return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]
    except Exception as e:
        return f"? ({e})"


def baseline(binary: str) -> dict:
    """What identifies the baseline binary: path, --version, git's word on
    it (describe), and the first 12 hex digits of its SHA-256."""
    out = {"path": binary, "version": rustrack_version(binary)}
    commit = re.search(r"\b[0-9a-f]{7,40}\b", out["version"])
    path = Path(binary)
    if commit:
        # The version names the commit it was built from.
        out["describe"] = git("describe", "--always", "--tags", commit.group(0)) or commit.group(0)
    elif len(path.parents) >= 3 and path.parent.parent.name == "target":
        # Built in a checkout (CHECKOUT/target/release/rustrack): that
        # checkout's commit now, which need not be the one it was built from.
        root = path.parent.parent.parent
        try:
            d = git("describe", "--always", "--dirty", cwd=root)
        except OSError:
            d = ""
        if d:
            out["checkout"] = f"{root} at {d}"
    h = hashlib.sha256()
    with open(binary, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    out["sha256"] = h.hexdigest()[:12]
    return out


def hop_floor(rounds: int) -> dict:
    """hop.measure(), or {"error": why} if it could not run: the run goes
    on without it."""
    try:
        return hop.measure(rounds)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def collect(ctx, now, scenarios: list[str], servers: list[str], skipped: dict[str, str]) -> dict:
    """The "meta" record at the start of a run (scenarios.Ctx ctx, whose
    servers are those that run; servers as asked for on the command line;
    skipped: server -> why it does not run; ctx.baseline: the baseline
    binary of a before/after run, if any)."""
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M"), "quick": ctx.quick, "rounds": ctx.rounds,
        "duration": ctx.duration, "warmup": ctx.warmup, "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "rustrack_commit": git("rev-parse", "--short", "HEAD"),
        "rustrack_dirty": bool(git("status", "--porcelain", "--", "src", "ruby", "Cargo.toml", "Cargo.lock")),
        "versions": versions(ctx.servers), "loadavg_start": loadavg(),
        "memory_workers": ctx.memory_workers, "memory_per_worker": ctx.memory_per_worker,
        "slow_senders": ctx.slow_senders, "slow_readers": ctx.slow_readers, "spawn_workers": ctx.spawn_workers,
        "realmem_workers": ctx.realmem_workers, "realmem_requests": ctx.realmem_requests,
        "realmem_refork_after": ctx.realmem_refork_after,
        "scenarios": scenarios, "servers": servers, "workdir": str(ctx.workdir),
    }
    meta["hop"] = hop_floor(hop.ROUNDS // 4 if ctx.quick else hop.ROUNDS)
    if skipped:
        meta["skipped_servers"] = skipped
    if getattr(ctx, "baseline", None):
        meta["rustrack_version"] = rustrack_version(RUSTRACK)
        meta["baseline"] = baseline(ctx.baseline)
    return meta
