"""Puma: `puma -w N -t 1:1 [--preload] config.ru` (cluster mode, one thread
per worker; `-t T:T` for a Spec with threads), run in the app directory,
bound to 127.0.0.1:port (puma_nginx.py binds the same command to a Unix
socket behind nginx).

Puma has no status command here; a worker is ready once the log says
"Worker N (PID: P) booted". The master has no separate HTTP front end: the
workers accept connections themselves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server


class Puma(Adapter):
    name = "puma"
    packages = ("puma",)

    def argv(self, srv: Server) -> list[str]:
        t = srv.spec.threads
        argv = ["puma", "-b", self.bind(srv), "-w", str(srv.workers),
                "-t", f"{t}:{t}", "-e", "production"]
        if srv.spec.variant == "preload":
            argv.append("--preload")
        return argv + ["config.ru"]

    def bind(self, srv: Server) -> str:
        """Where Puma listens (its -b)."""
        return f"tcp://127.0.0.1:{srv.port}"

    def ready_workers(self, srv: Server) -> int:
        return count_booted(srv.logfile.read_text(errors="replace"))

    def role(self, cmd: str) -> str:
        return "worker" if "cluster worker" in cmd else "master"


def count_booted(log: str) -> int:
    return len(re.findall(r"Worker \d+ \(PID: \d+\) booted", log))
