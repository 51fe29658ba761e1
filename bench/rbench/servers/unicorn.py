"""Unicorn: `unicorn -c unicorn.rb -E production config.ru`, with a config
file written into the server's work directory (worker_processes N, listen,
preload_app true|false, pid file, timeout 60).

A worker is ready once the log says "worker=N ready" (each N counted once,
in case a worker is restarted). The master has no separate HTTP front end.
Unicorn closes every connection after its response: wrk counts that as one
read error per request (see report).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server


class Unicorn(Adapter):
    name = "unicorn"
    packages = ("unicorn",)

    def argv(self, srv: Server) -> list[str]:
        conf = srv.dir / "unicorn.rb"
        conf.write_text(
            f"worker_processes {srv.workers}\n"
            f'listen "127.0.0.1:{srv.port}", backlog: 1024\n'
            f"preload_app {'true' if srv.spec.variant == 'preload' else 'false'}\n"
            f'pid "{srv.dir / "unicorn.pid"}"\n'
            "timeout 60\n"
        )
        return ["unicorn", "-c", str(conf), "-E", "production", "config.ru"]

    def ready_workers(self, srv: Server) -> int:
        return count_ready(srv.logfile.read_text(errors="replace"))

    def role(self, cmd: str) -> str:
        return "worker" if "worker[" in cmd else "master"


def count_ready(log: str) -> int:
    return len(set(re.findall(r"worker=(\d+) ready", log)))
