"""What the report says about the run itself: the machine (CPUs, kernel,
load average), the rustrack commit and whether src/, ruby/ or the Cargo
files had uncommitted changes, the version of each peer that runs (as the
peer itself reports it), Ruby, Rails and wrk, and the settings of the run.
All of it goes into the JSON's "meta" and the header of the Markdown.
"""

from __future__ import annotations

import os
import platform
import subprocess

from .paths import ROOT
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


def git(*args) -> str:
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip()


def collect(ctx, now, scenarios: list[str], servers: list[str], skipped: dict[str, str]) -> dict:
    """The "meta" record at the start of a run (scenarios.Ctx ctx, whose
    servers are those that run; servers as asked for on the command line;
    skipped: server -> why it does not run)."""
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
    if skipped:
        meta["skipped_servers"] = skipped
    return meta
