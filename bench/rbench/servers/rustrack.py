"""rustrack: `rustrack start APP` with --spawn-method smart|direct (and
--threads-per-worker N for a Spec with threads).

Readiness, spawn times, request counts and refork figures all come from
`rustrack status --instance DIR --json`, where DIR is the instance directory rustrack creates
under the server's private --instance-registry-dir. The front end is the
`rustrack start` process itself; the preloader, molds (refork) and workers
are recognized by their process titles.

A Spec with a `binary` (the baseline of `bench/run --baseline`) runs that
rustrack instead of target/release/rustrack, for `start` and for every
`status` call alike.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..paths import RUSTRACK
from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server


def binary(srv: Server) -> str:
    """The rustrack that runs srv: its Spec's binary (a baseline), else
    this repository's release build."""
    return srv.spec.binary or str(RUSTRACK)


def status(srv: Server) -> dict | None:
    """`rustrack status --json` of srv, asked of srv's own binary, or None
    if it has no answer yet."""
    return status_of(srv.reg, binary(srv))


def status_of(reg: Path, rustrack: str | Path = RUSTRACK) -> dict | None:
    """`rustrack status --json` of the instance registered in reg (its
    --instance-registry-dir), asked of the binary rustrack, or None if it
    has no answer yet."""
    dirs = sorted(reg.glob("rustrack.*"))
    if not dirs:
        return None
    try:
        r = subprocess.run(
            [str(rustrack), "status", "--instance", str(dirs[0]), "--json"],
            capture_output=True, text=True, timeout=10,
        )
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return None


def refork_figures(st: dict) -> dict:
    """From `rustrack status --json`: the refork count, the template's kind,
    and, when the template is a mold, the spawn times of the workers of the
    current generation: those it forked."""
    template = st.get("template") or {}
    out = {"reforks": st.get("reforks", 0), "template": template.get("kind")}
    if template.get("kind") == "mold":
        gen = st.get("generation")
        out["mold_spawn_ms"] = [w["spawn_ms"] for w in st.get("workers", [])
                                if w.get("generation") == gen and w.get("spawn_ms") is not None]
    return out


class Rustrack(Adapter):
    name = "rustrack"
    packages = ()  # built from this repository

    def argv(self, srv: Server) -> list[str]:
        s, n, port, mx = srv.spec, str(srv.workers), str(srv.port), str(srv.max_pool)
        return [
            binary(srv), "start", str(srv.app), "--address", "127.0.0.1", "--port", port,
            "--min-instances", n, "--max-pool-size", mx, "--spawn-method", s.variant,
            "--environment", "production", "--log-level", "warn",
            "--instance-registry-dir", str(srv.reg),
        ] + (["--preload-hugepages", "false"] if s.no_hugepages else []) + (
            ["--threads-per-worker", str(s.threads)] if s.threads > 1 else []) + list(s.options)

    def ready_workers(self, srv: Server) -> int:
        st = status(srv)
        return sum(1 for w in (st or {}).get("workers", []) if w.get("spawn_ms") is not None)

    def role(self, cmd: str) -> str:
        if "rustrack worker" in cmd or "__worker" in cmd:
            return "worker"
        # A mold (refork) is a template as the preloader is.
        if "rustrack preloader" in cmd or "__preloader" in cmd or "rustrack mold" in cmd:
            return "master"
        return "front"

    def frontend_pid(self, srv: Server) -> int | None:
        return srv.proc.pid

    def app_processed(self, srv: Server) -> dict:
        return {"app_processed": (status(srv) or {}).get("processed_total")}

    def worker_processed(self, srv: Server) -> dict:
        st = status(srv) or {}
        return {"processed": [w.get("processed") for w in st.get("workers", [])]}

    def settled(self, srv: Server) -> bool:
        """No refork or spawn under way: every worker idle and ready, no
        rollout, a template of the current generation."""
        st = status(srv)
        if st is None:
            return False
        ws = st.get("workers", [])
        return (not st.get("restarting") and len(ws) == srv.workers
                and all(w.get("state") == "ready" for w in ws))

    def refork_figures(self, srv: Server) -> dict:
        st = status(srv) or {}
        return refork_figures(st)

    def spawn_ms(self, srv: Server) -> dict:
        st = status(srv) or {}
        ms = [w["spawn_ms"] for w in st.get("workers", []) if w.get("spawn_ms") is not None]
        return {"spawn_ms": ms, "source": "rustrack status --json: workers[].spawn_ms"}
