"""Phusion Passenger: `passenger start APP --engine builtin` with
--spawn-method smart|direct.

The builtin engine makes Passenger's C++ core the HTTP server (the default
nginx engine would have to be downloaded and compiled). `passenger start`
daemonizes a watchdog and the core, which stay in the harness's tree thanks
to the subreaper. Readiness, spawn times (SpawningKit's spawn_start_time and
spawn_end_time, µs) and request counts come from `passenger-status
--show=xml` pointed at the server's private instance registry directory.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from ..procs import cmdline, server_tree
from .adapter import Adapter

if TYPE_CHECKING:
    from .server import Server


def status(srv: Server) -> ET.Element | None:
    """`passenger-status --show=xml` of srv, or None if it has no answer."""
    env = dict(os.environ, PASSENGER_INSTANCE_REGISTRY_DIR=str(srv.reg))
    r = subprocess.run(
        ["passenger-status", "--show=xml"], capture_output=True, env=env, timeout=20
    )
    if r.returncode != 0:
        return None
    return parse_status(r.stdout)


def parse_status(out: bytes) -> ET.Element | None:
    # passenger-status may print a line or two before the XML.
    start = out.find(b"<?xml")
    if start < 0:
        return None
    try:
        return ET.fromstring(out[start:])
    except ET.ParseError:
        return None


def spawn_times(x: ET.Element | None) -> list[float]:
    ms = []
    for p in x.iter("process") if x is not None else []:
        a, b = int(p.findtext("spawn_start_time") or 0), int(p.findtext("spawn_end_time") or 0)
        if a and b:
            ms.append((b - a) / 1000.0)
    return ms


class Passenger(Adapter):
    name = "passenger"
    packages = ("passenger",)

    def argv(self, srv: Server) -> list[str]:
        s, n, port, mx = srv.spec, str(srv.workers), str(srv.port), str(srv.max_pool)
        return [
            "passenger", "start", str(srv.app), "--engine", "builtin",
            "--disable-security-update-check", "--disable-anonymous-telemetry",
            "--address", "127.0.0.1", "--port", port,
            "--min-instances", n, "--max-pool-size", mx, "--spawn-method", s.variant,
            "--environment", "production", "--ruby", "/usr/bin/ruby",
            "--log-file", str(srv.dir / "passenger.log"),
            "--pid-file", str(srv.dir / "passenger.pid"),
            "--instance-registry-dir", str(srv.reg),
        ] + list(s.options)

    def ready_workers(self, srv: Server) -> int:
        x = status(srv)
        if x is None:
            return 0
        return sum(1 for p in x.iter("process") if int(p.findtext("spawn_end_time") or 0) > 0)

    def role(self, cmd: str) -> str:
        if "RubyApp" in cmd:
            return "worker"
        if "AppPreloader" in cmd:
            return "master"
        return "front"

    def frontend_pid(self, srv: Server) -> int | None:
        # Passenger's core speaks HTTP and proxies to the workers.
        for pid in server_tree():
            c = cmdline(pid)
            if c.startswith("Passenger core") or "PassengerAgent core" in c:
                return pid
        return None

    def app_processed(self, srv: Server) -> dict:
        # Shows that no response came from the turbocache in front of the app.
        x = status(srv)
        if x is None:
            return {}
        return {"app_processed": sum(int(p.findtext("processed") or 0) for p in x.iter("process"))}

    def worker_processed(self, srv: Server) -> dict:
        x = status(srv)
        if x is None:
            return {}
        return {"processed": [int(p.findtext("processed") or 0) for p in x.iter("process")]}

    def spawn_ms(self, srv: Server) -> dict:
        return {"spawn_ms": spawn_times(status(srv)),
                "source": "passenger-status --show=xml: spawn_end_time - spawn_start_time"}
