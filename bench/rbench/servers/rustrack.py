"""rustrack: `rustrack start APP` with --spawn-method smart|direct (and
--threads-per-worker N for a Spec with threads).

Readiness, spawn times and request counts all come from `rustrack status
--instance DIR --json`, where DIR is the instance directory rustrack creates
under the server's private --instance-registry-dir. The front end is the
`rustrack start` process itself; the preloader and workers are recognized by
their process titles.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from ..paths import RUSTRACK
from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server


def status(srv: Server) -> dict | None:
    """`rustrack status --json` of srv, or None if it has no answer yet."""
    dirs = sorted(srv.reg.glob("rustrack.*"))
    if not dirs:
        return None
    r = subprocess.run(
        [str(RUSTRACK), "status", "--instance", str(dirs[0]), "--json"],
        capture_output=True, text=True, timeout=10,
    )
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return None


class Rustrack(Adapter):
    name = "rustrack"
    packages = ()  # built from this repository

    def argv(self, srv: Server) -> list[str]:
        s, n, port, mx = srv.spec, str(srv.workers), str(srv.port), str(srv.max_pool)
        return [
            str(RUSTRACK), "start", str(srv.app), "--address", "127.0.0.1", "--port", port,
            "--min-instances", n, "--max-pool-size", mx, "--spawn-method", s.variant,
            "--environment", "production", "--log-level", "warn",
            "--instance-registry-dir", str(srv.reg),
        ] + (["--preload-hugepages", "false"] if s.no_hugepages else []) + (
            ["--threads-per-worker", str(s.threads)] if s.threads > 1 else [])

    def ready_workers(self, srv: Server) -> int:
        st = status(srv)
        return sum(1 for w in (st or {}).get("workers", []) if w.get("spawn_ms") is not None)

    def role(self, cmd: str) -> str:
        if "rustrack worker" in cmd or "__worker" in cmd:
            return "worker"
        if "rustrack preloader" in cmd or "__preloader" in cmd:
            return "master"
        return "front"

    def frontend_pid(self, srv: Server) -> int | None:
        return srv.proc.pid

    def app_processed(self, srv: Server) -> dict:
        return {"app_processed": (status(srv) or {}).get("processed_total")}

    def worker_processed(self, srv: Server) -> dict:
        st = status(srv) or {}
        return {"processed": [w.get("processed") for w in st.get("workers", [])]}

    def spawn_ms(self, srv: Server) -> dict:
        st = status(srv) or {}
        ms = [w["spawn_ms"] for w in st.get("workers", []) if w.get("spawn_ms") is not None]
        return {"spawn_ms": ms, "source": "rustrack status --json: workers[].spawn_ms"}
