"""One server under test, from start to stop.

A `Spec` names a configuration (server, mode, options) and gives it the
label used in every table. A `Server` runs one: it copies the fixture into
a private work directory (servers and Rails may write next to config.ru),
picks a free port, starts the adapter's command line there in its own
session with RACK_ENV=RAILS_ENV=production (and right after it, the same
way, the adapter's `fronts`: nginx in front of Puma), waits until GET /
answers and then until all workers are ready (per the adapter), and
records how long both took. `stop` TERMs the fronts and the server and
waits for its whole process tree to go (procs.stop). Starting refuses to run while processes of an earlier server
are still around, so measurements never overlap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import procs
from ..paths import FIXTURES
from .adapter import Adapter
from .nginx import Nginx
from .passenger import Passenger
from .puma import Puma
from .puma_nginx import PumaNginx
from .rustrack import Rustrack
from .unicorn import Unicorn

ADAPTERS: dict[str, Adapter] = {a.name: a for a in [Rustrack(), Passenger(), Puma(), Unicorn(), Nginx(),
                                                     PumaNginx()]}
# rustrack, passenger, puma, unicorn, nginx, puma-nginx: the --servers default and order
PEERS = list(ADAPTERS)

# Ruby's GC heap growth tuned for a big preloaded heap (the same settings
# for smart and direct, so the comparison stays fair). By default Ruby grows
# each worker's heap to keep 40% of it free, which for a 200 MB preloaded
# heap means tens of MB of fresh private pages per worker.
TIGHT_GC = {"RUBY_GC_HEAP_FREE_SLOTS_GOAL_RATIO": "0.05", "RUBY_GC_HEAP_FREE_SLOTS_MIN_RATIO": "0.02"}


@dataclass
class Spec:
    server: str  # rustrack, passenger, puma, unicorn, nginx, puma-nginx
    variant: str  # smart, direct (rustrack, passenger); preload, no-preload (puma, puma-nginx, unicorn); static (nginx)
    tight_gc: bool = False  # run the app with TIGHT_GC
    no_hugepages: bool = False  # rustrack --preload-hugepages false (the before of that change)
    # rustrack's memory remedies ("warm-up", "refork", "heap aging"): part of
    # the label; the scenario turns them into `options` (scenarios.realmem_options).
    remedies: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # extra options for rustrack start or passenger start

    threads: int = 1  # request threads per worker (rustrack --threads-per-worker, puma -t N:N)
    # Another rustrack binary to run instead of target/release/rustrack: the
    # baseline of a before/after run (bench/run --baseline), labelled
    # "(baseline)" so that its rows sit next to this build's.
    binary: str | None = None

    @property
    def label(self) -> str:
        # "puma preload behind nginx" for puma-nginx (its adapter's form).
        form = getattr(ADAPTERS.get(self.server), "label_form", Adapter.label_form)
        return (form.format(server=self.server, variant=self.variant) + "".join(f" + {r}" for r in self.remedies)
                + (" (tight GC)" if self.tight_gc else "")
                + (" (no huge pages)" if self.no_hugepages else "")
                + (f", {self.threads} threads" if self.threads > 1 else "")
                + (" (baseline)" if self.binary else ""))

    @property
    def slug(self) -> str:
        return (f"{self.server}-{self.variant}" + "".join("-" + r.replace(" ", "-") for r in self.remedies)
                + ("-tightgc" if self.tight_gc else "") + ("-nohp" if self.no_hugepages else "")
                + (f"-t{self.threads}" if self.threads > 1 else "") + ("-baseline" if self.binary else ""))

    @property
    def env(self) -> dict:
        return dict(TIGHT_GC) if self.tight_gc else {}


class ServerError(Exception):
    pass


class Server:
    """One server, started on 127.0.0.1:port, stopped by PID."""

    def __init__(self, spec: Spec, app: str, workers: int, workdir: Path, env: dict | None = None,
                 max_pool: int | None = None, prepare: Callable[[Path], None] | None = None):
        self.spec = spec
        self.adapter = ADAPTERS[spec.server]
        self.workers = workers
        self.max_pool = max_pool or workers
        self.dir = workdir
        self.dir.mkdir(parents=True)
        # A private copy: servers and Rails may write next to config.ru.
        self.app = self.dir / app
        shutil.copytree(FIXTURES / app, self.app)
        if prepare:  # files the scenario generates into the copy
            prepare(self.app)
        self.reg = self.dir / "r"
        self.reg.mkdir()
        self.port = procs.free_port()
        self.logfile = self.dir / "server.log"
        self.env = dict(os.environ, RACK_ENV="production", RAILS_ENV="production", **spec.env, **(env or {}))
        self.env.pop("RUST_LOG", None)
        self.proc: subprocess.Popen | None = None
        self.fronts: list[subprocess.Popen] = []  # the adapter's fronts, once started
        self.started_at = 0.0
        self.first_response_s = None
        self.all_ready_s = None
        self.needed_kill = False

    def argv(self) -> list[str]:
        return self.adapter.argv(self)

    def ready_workers(self) -> int:
        return self.adapter.ready_workers(self)

    def role(self, pid: int) -> str:
        """front (HTTP front end and helpers), master (preloader or master
        process) or worker."""
        return self.adapter.role(procs.cmdline(pid))

    def frontend_pid(self) -> int | None:
        """The process that speaks HTTP to clients and proxies to workers:
        `rustrack start` itself, or Passenger's core."""
        return self.adapter.frontend_pid(self)

    def frontend_pids(self) -> list[int]:
        """Every process of the front end (nginx's master and workers in
        front of Puma; else frontend_pid's alone)."""
        return self.adapter.frontend_pids(self)

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        left = procs.server_tree()
        if left:
            raise ServerError(f"processes left from an earlier server: {left}")
        argv = self.argv()
        (self.dir / "argv.json").write_text(json.dumps(argv))
        self.started_at = time.monotonic()
        self.proc = procs.spawn(argv, self.app, self.env, self.logfile)
        for name, front in self.adapter.fronts(self):
            (self.dir / f"{name}-argv.json").write_text(json.dumps(front))
            self.fronts.append(procs.spawn(front, self.app, self.env, self.dir / f"{name}.log"))
        deadline = self.started_at + timeout
        if not procs.wait_for(lambda: procs.answers_http(self.port), deadline, self._check_alive):
            raise ServerError(f"{self.spec.label}: no answer on port {self.port}\n{self.log_tail()}")
        self.first_response_s = time.monotonic() - self.started_at
        if not procs.wait_for(lambda: self.ready_workers() >= self.workers, deadline, self._check_alive):
            raise ServerError(
                f"{self.spec.label}: only {self.ready_workers()} of {self.workers} workers ready\n{self.log_tail()}"
            )
        self.all_ready_s = time.monotonic() - self.started_at

    def _check_alive(self) -> None:
        for p in [self.proc, *self.fronts]:
            if p.poll() is not None:
                what = self.spec.label if p is self.proc else f"{self.spec.label}: {p.args[0]}"
                raise ServerError(f"{what} exited ({p.returncode})\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        text = ""
        # The server's own log first, then the others it writes next to
        # it (passenger.log, nginx.log, nginx-error.log).
        for f in [self.logfile, *sorted(set(self.dir.glob("*.log")) - {self.logfile})]:
            if f.exists():
                text += "\n".join(f.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text

    def stop(self, grace: float = 20.0) -> None:
        """TERM the fronts and the main PID, wait for the whole tree to go,
        then KILL what is left, by PID (procs.stop)."""
        if self.proc is None:
            return
        self.needed_kill = procs.stop(self.proc, grace, self.spec.label, self.fronts)
