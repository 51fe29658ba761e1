"""What the report says about the run itself: the machine (CPUs, kernel,
load average), the rustrack commit and whether src/, ruby/ or the Cargo
files had uncommitted changes, each peer's version as the peer itself
reports it (a peer that is not installed shows "? (error)"), and the
settings of the run. All of it goes into the JSON's "meta" and the header
of the Markdown.
"""

from __future__ import annotations

import os
import platform
import subprocess

from .paths import ROOT
from .procs import loadavg


def versions() -> dict:
    def first_line(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception as e:
            return f"? ({e})"

    return {
        "passenger": first_line(["passenger", "--version"]),
        "puma": "Puma " + first_line(["ruby", "-e", "require 'puma/const'; print Puma::Const::PUMA_VERSION"]),
        "unicorn": first_line(["unicorn", "-v"]),
        "ruby": first_line(["ruby", "-v"]),
        "rails": "Rails " + first_line(["ruby", "-e", "require 'rails/version'; print Rails.version"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
    }


def git(*args) -> str:
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip()


def collect(ctx, now, scenarios: list[str], servers: list[str]) -> dict:
    """The "meta" record at the start of a run (scenarios.Ctx ctx; servers
    as asked for on the command line)."""
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M"), "quick": ctx.quick, "rounds": ctx.rounds,
        "duration": ctx.duration, "warmup": ctx.warmup, "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "rustrack_commit": git("rev-parse", "--short", "HEAD"),
        "rustrack_dirty": bool(git("status", "--porcelain", "--", "src", "ruby", "Cargo.toml", "Cargo.lock")),
        "versions": versions(), "loadavg_start": loadavg(),
        "memory_workers": ctx.memory_workers, "memory_per_worker": ctx.memory_per_worker,
        "slow_senders": ctx.slow_senders, "slow_readers": ctx.slow_readers, "spawn_workers": ctx.spawn_workers,
        "scenarios": scenarios, "servers": servers, "workdir": str(ctx.workdir),
    }
    return meta
