"""Prerequisites: the peers from Debian, and the rustrack build.

`ensure_packages` asks dpkg-query which of PACKAGES are installed and
installs the missing ones with `apt-get update` and `apt-get install -y`
(through sudo unless the harness runs as root). `build` runs `cargo build
--release` in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .log import log
from .paths import ROOT

PACKAGES = ["passenger", "puma", "unicorn", "wrk", "ruby-rack", "ruby-rails"]


def ensure_packages() -> None:
    missing = []
    for p in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def build() -> None:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    log("cargo build --release")
    subprocess.run([cargo, "build", "--release"], cwd=ROOT, check=True)
