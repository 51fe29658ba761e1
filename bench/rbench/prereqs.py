"""Prerequisites: the Debian packages a run needs, and the rustrack build.

What a run needs follows from what it runs: ruby-rack always (every server
loads config.ru through Rack), wrk for the wrk scenarios, ruby-rails for the
scenarios that run fixtures/bench-rails (rails, spawn), and each peer's own
package (passenger, puma, unicorn) for the peers that the selected
scenarios start. `dpkg-query` tells what is installed.

Installing is opt-in (`--install`): then the missing packages, and only
those, are installed with `apt-get update` and `apt-get install -y` (through
sudo unless the harness runs as root). Without it nothing is installed:

- a missing peer package means that peer is skipped: the run goes on
  without it, says so on stderr, and records it in the JSON's
  meta.skipped_servers and on a "not measured" line of the Markdown header;
- a missing package the harness itself needs (ruby-rack, wrk, ruby-rails),
  or every selected server being skipped, stops the run before anything
  is built or started, with a message naming the packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .log import log
from .paths import ROOT
from .scenarios import SCENARIO_PACKAGES, servers_used
from .servers import ADAPTERS

# Every server loads config.ru with Rack (rustrack's Ruby side requires it).
COMMON_PACKAGES = ("ruby-rack",)


class PrereqError(Exception):
    """A run that cannot start; the message says what to install."""


@dataclass
class Plan:
    servers: list[str]  # the servers that will run, in --servers order
    skipped: dict[str, str] = field(default_factory=dict)  # server -> why not
    installed: list[str] = field(default_factory=list)  # packages --install installed


def harness_packages(scenarios: list[str]) -> dict[str, list[str]]:
    """Package -> the scenarios that need it (COMMON_PACKAGES: all)."""
    need: dict[str, list[str]] = {p: list(scenarios) for p in COMMON_PACKAGES}
    for scen in scenarios:
        for p in SCENARIO_PACKAGES[scen]:
            need.setdefault(p, []).append(scen)
    return need


def is_installed(package: str) -> bool:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    except FileNotFoundError:
        raise PrereqError("dpkg-query not found: bench/run expects Debian 12 (see bench/README.md)") from None
    return "install ok installed" in r.stdout


def install(packages: list[str]) -> None:
    log(f"installing Debian packages: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def plan(scenarios: list[str], servers: list[str], allow_install: bool, installed=is_installed) -> Plan:
    """Checks (and with allow_install, installs) what the selected scenarios
    and servers need; returns which servers run. Raises PrereqError if the
    run cannot go on. `installed` is the package check (a parameter for the
    tests)."""
    harness = harness_packages(scenarios)
    used = servers_used(scenarios, servers)
    if not used:
        raise PrereqError(f"none of the servers {', '.join(servers)} runs in {', '.join(scenarios)}")
    server_pkgs = {s: list(ADAPTERS[s].packages) for s in used}
    wanted = list(harness) + [p for s in used for p in server_pkgs[s] if p not in harness]
    missing = [p for p in wanted if not installed(p)]
    if allow_install:
        if missing:
            install(missing)
        return Plan(servers=used, installed=missing)

    missing_harness = [p for p in harness if p in missing]
    if missing_harness:
        lines = [f"  {p} (for {', '.join(harness[p])})" for p in missing_harness]
        raise PrereqError(
            "missing Debian packages that the selected scenarios need:\n" + "\n".join(lines)
            + f"\ninstall them (apt-get install {' '.join(missing_harness)}) or run bench/run --install"
        )
    skipped = {}
    for s in used:
        absent = [p for p in server_pkgs[s] if p in missing]
        if absent:
            skipped[s] = f"Debian package {', '.join(absent)} not installed"
            log(f"skipping {s}: {skipped[s]} (bench/run --install installs it)")
    kept = [s for s in used if s not in skipped]
    if not kept:
        raise PrereqError(
            f"none of the selected servers ({', '.join(used)}) can run: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
            + "\ninstall them or run bench/run --install"
        )
    return Plan(servers=kept, skipped=skipped)


def build() -> None:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    log("cargo build --release")
    subprocess.run([cargo, "build", "--release"], cwd=ROOT, check=True)


def ready(packages: tuple[str, ...] | list[str], install_missing: bool, no_build: bool, command: str) -> bool:
    """For the separate entry points (bench/run-tls, bench/run-balancer):
    installs missing Debian packages when asked, or says which are missing
    and returns False; then builds the release binary unless told not to."""
    missing = [p for p in packages if not is_installed(p)]
    if missing and install_missing:
        install(missing)
    elif missing:
        log(f"missing Debian packages: {' '.join(missing)} (apt-get install them, or {command} --install)")
        return False
    if not no_build:
        build()
    return True
