"""The command line and the order of a run (bench/run calls `main`).

A run: parse the options; check the Debian packages the selection needs
(installing them only with --install, see prereqs); build rustrack; become a
child subreaper; run the selected scenarios in --only order in a fresh
/tmp/rtbench.* work directory; KILL anything left and remove the work
directory (also on Ctrl-C or TERM); then write bench/results/NAME.md and
.json and print the Markdown. A full run (not --quick, every scenario, every
server) also replaces the results section of bench/README.md.

--baseline BINARY makes a before/after run: the scenarios of
scenarios.BASELINE_SCENARIOS also run rustrack smart with that other
binary, "rustrack smart (baseline)", interleaved with the rest. The binary
is checked (it exists and is executable, rustrack and one of those
scenarios are selected) before anything runs, and such a run never
replaces the README's results: it compares two builds, not the peers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from . import prereqs, procs, report
from .log import log
from .meta import collect
from .paths import RESULTS, RUSTRACK
from .scenarios import BASELINE_SCENARIOS, DEFAULT_SCENARIOS, SCENARIOS, Ctx
from .servers import PEERS

DESCRIPTION = """rustrack benchmark harness (issue 7): rustrack against Passenger, Puma and
Unicorn on the same machine, in the same run, with the same worker count.

    bench/run            full run (about 15 minutes), writes bench/results/
    bench/run --quick    smoke test: 3 s runs, one round (about 4 minutes)
    bench/run --only realmem --rounds 1
                         a large Rails app's memory under rustrack's remedies
                         against Puma, Unicorn, Passenger (about an hour)

See bench/README.md for what each scenario measures and how. Python 3.11,
standard library only. Every server is started on 127.0.0.1 on a free port
and stopped by PID (TERM, then KILL) before the next one starts; the harness
makes itself a child subreaper so that daemonizing servers (Passenger's
watchdog) stay in its process tree and can be measured and stopped.

Nothing is installed unless --install is given: without it, a peer whose
Debian package is missing is skipped (and reported), and a missing wrk,
ruby-rack or ruby-rails stops the run before it starts.
"""

SCENARIO_NAMES = list(SCENARIOS)  # hello,rails,upload,download,slow,memory,spawn,realmem


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench/run", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 round, fewer requests: a smoke test")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 2, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per wrk measurement (default 10, quick 3)")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIO_NAMES)
                    + " (default: all but realmem, which takes about an hour per round)")
    ap.add_argument("--servers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    inst = ap.add_mutually_exclusive_group()
    inst.add_argument("--install", action="store_true",
                      help="apt-get install the missing Debian packages the run needs "
                           "(root, or sudo); without it a missing peer is skipped")
    inst.add_argument("--no-install", action="store_true",
                      help="install nothing (the default; kept for old command lines)")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/rustrack")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the logs and app copies in /tmp")
    ap.add_argument("--output", help="results file name without extension (default: the date and time)")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another rustrack binary (an older build) to run too, as \"rustrack smart (baseline)\", "
                         "in " + ",".join(BASELINE_SCENARIOS) + ": a before/after comparison in the same "
                         "interleaved run; such a run never replaces the README's results")
    return ap


def check_baseline(binary: str, scenarios: list[str], servers: list[str]) -> str:
    """The absolute path of the --baseline binary (servers start in their
    app copy's directory, so a relative path would not do), or ValueError
    saying why it cannot be used."""
    path = os.path.abspath(binary)
    if not os.path.exists(path):
        raise ValueError(f"--baseline {binary}: no such file")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ValueError(f"--baseline {binary}: not an executable file")
    if "rustrack" not in servers:
        raise ValueError("--baseline compares with rustrack: --servers must include rustrack")
    if not set(scenarios) & set(BASELINE_SCENARIOS):
        raise ValueError(f"--baseline runs only in {', '.join(BASELINE_SCENARIOS)}: "
                         "--only selects none of them")
    return path


def publishes(quick: bool, scenarios: list[str], servers_run: list[str], baseline: str | None = None) -> bool:
    """Whether a run replaces the figures in bench/README.md: only a full
    run (not --quick) of every scenario with every server, and not a
    before/after run (--baseline: its extra rows compare two builds). A run
    without a peer would otherwise publish tables without it, and targets
    it cannot judge shown as "–". realmem, run only when named, is not
    required."""
    return (not quick and not baseline and set(scenarios) >= set(DEFAULT_SCENARIOS)
            and set(servers_run) >= set(PEERS))


def _interrupt(*_) -> None:
    raise KeyboardInterrupt()


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)

    quick = args.quick
    rounds = args.rounds or (1 if quick else 2)
    duration = args.duration or (3.0 if quick else 10.0)
    warmup = 1.0 if quick else 2.0
    scenarios = (args.only or ",".join(DEFAULT_SCENARIOS)).split(",")
    servers = args.servers.split(",")
    # Checked before anything runs, not when the run reaches them.
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIO_NAMES)})")
    unknown = [s for s in servers if s not in PEERS]
    if unknown:
        ap.error(f"unknown server {', '.join(unknown)} (known: {', '.join(PEERS)})")
    baseline = None
    if args.baseline is not None:
        try:
            baseline = check_baseline(args.baseline, scenarios, servers)
        except ValueError as e:
            ap.error(str(e))

    # Stop cleanly (killing every server) on TERM and Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)

    try:
        plan = prereqs.plan(scenarios, servers, allow_install=args.install)
    except prereqs.PrereqError as e:
        log(str(e))
        return 1
    if not args.no_build:
        prereqs.build()
    if not RUSTRACK.exists():
        log(f"{RUSTRACK} is missing: build it (cargo build --release)")
        return 1

    if not procs.become_subreaper():
        log("warning: could not become a child subreaper; daemonized processes may escape")

    workdir = Path(tempfile.mkdtemp(prefix="rtbench.", dir="/tmp"))
    ctx = Ctx(quick, rounds, duration, warmup, workdir, plan.servers,
              memory_per_worker=500 if quick else 2000, scaleup_rounds=1 if quick else 3,
              realmem_requests=1000 if quick else 2000, baseline=baseline)
    now = dt.datetime.now()
    meta = collect(ctx, now, scenarios, servers, plan.skipped)
    log(f"work directory {workdir}; load average {meta['loadavg_start']}")
    if baseline:
        b = meta["baseline"]
        log(f"baseline: {baseline} ({b['version']}{', ' + b['checkout'] if 'checkout' in b else ''}"
            f"{', ' + b['describe'] if 'describe' in b else ''}, sha256 {b['sha256']})")
    t0 = time.monotonic()
    try:
        for scen in scenarios:
            SCENARIOS[scen](ctx)
    except KeyboardInterrupt:
        log("interrupted: stopping every server")
        procs.kill_tree()
        return 130
    finally:
        procs.kill_tree()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    meta["elapsed_s"] = time.monotonic() - t0
    meta["loadavg_end"] = procs.loadavg()
    if ctx.skipped_configs:
        meta["skipped_configs"] = ctx.skipped_configs
    name = args.output or now.strftime("%Y-%m-%d-%H%M") + ("-quick" if quick else "")
    md = report.write_results(meta, ctx.runs, name)
    if publishes(quick, scenarios, ctx.servers, baseline):
        report.update_readme(md, name)
    print(md)
    log(f"wrote {RESULTS / name}.md and .json in {meta['elapsed_s'] / 60:.1f} min")
    return 0
