"""multiapp: three Rails apps on one rustrack instance, or on three (issue 16).

Three copies of fixtures/bench-rails (app1, app2, app3: distinct roots) are
served two ways:

- A, "one instance": `--max-pool-size 4` and an `--app` per app (routed by
  host, app1.test ...), `--pool-idle-time 5`: every app starts at zero
  workers, an app nobody visits gives its workers back, the busy one takes
  the whole pool;
- B, "three instances": one single-app instance per app with
  `--min-instances 2 --max-pool-size 2`, as users run them today.

Both otherwise run as the other scenarios run rustrack (smart spawning,
production, release build, the adapter's command line). Both get the same
traffic: a warm-up (per app: one timed request, then `--warmup` s of wrk; it
is where A boots its preloaders), then phases of load on one app at a time,
app1 app2 app3 app1, each made of IDLE_S of nothing, one timed request alone
(the "first request after idle": A's app has no worker left by then, so it
waits for a fork from its preloader), a second one, and `--duration` s of
wrk (16 connections, `Host:` the app's host); IDLE_S more at the end.
Before each timed request `rustrack status` says what it will wait for
(`kind`: worker, fork or boot). A thread sums the PSS of every process of
the configuration (each instance's `rustrack start` and its descendants,
from /proc/PID/smaps_rollup) once a second, each sample tagged with the
phase: under load, or idle (the gaps; "settled" is the last sample of each
gap, what an idle configuration costs once it has scaled down).

Rounds run A B, then B A. The pure parts (order, kinds, summary, table)
are what bench/tests/test_multiapp.py covers.
"""

from __future__ import annotations

import datetime as dt
import http.client
import shutil
import statistics
import threading
import time
from pathlib import Path

from . import procs
from .load import wrk
from .log import log
from .paths import FIXTURES
from .servers import Server, ServerError, Spec
from .servers.rustrack import status

APPS = ["app1", "app2", "app3"]
PHASES = [0, 1, 2, 0]  # app indices, one load phase each
POOL_IDLE_S = 5  # A's --pool-idle-time
IDLE_S = 8.0  # between phases: A's idle timeout, its pool's 1 s tick, and the worker's exit
SAMPLE_S = 1.0
CONNECTIONS = 16
SPECS = [Spec("rustrack", "smart")]  # the server this scenario runs (for --servers)
PACKAGES = ("wrk", "ruby-rails")
CONFIGS = {
    "A": "one instance, 3 apps, --max-pool-size 4",
    "B": "three instances, 2 workers each",
}


def host(app: str) -> str:
    return f"{app}.test"


def order(rounds: int):
    """(round, configuration): A B, B A, A B, ..."""
    for r in range(rounds):
        for key in ("A", "B") if r % 2 == 0 else ("B", "A"):
            yield r, key


def kind(report: dict | None) -> str:
    """What a request to an app waits for, from its `rustrack status`
    report (an app's group, or a single app's status) taken just before:
    "worker" if one is up, "fork" if only its preloader is (a spawn),
    "boot" if neither (the preloader loads the app first)."""
    report = report or {}
    if report.get("processes"):
        return "worker"
    return "fork" if report.get("preloader_pid") else "boot"


def group(st: dict | None, app: str) -> dict | None:
    """The report of `app` in an instance's status: its group with several
    apps, the status itself with one."""
    if not st:
        return None
    for g in st.get("groups") or []:
        if g.get("app") == app:
            return g
    return None if st.get("groups") else st


# -- running -------------------------------------------------------------------


class Instance(Server):
    """One rustrack instance of a configuration: Server with extra options,
    started without Server.start's check that nothing else runs (B runs
    three side by side)."""

    def __init__(self, workdir: Path, workers: int, max_pool: int, extra: list[str], prepare=None):
        super().__init__(Spec("rustrack", "smart"), "bench-rails", workers, workdir,
                         max_pool=max_pool, prepare=prepare)
        self.extra = extra

    def argv(self) -> list[str]:
        return super().argv() + self.extra

    def start(self, timeout: float = 180.0) -> None:
        self.started_at = time.monotonic()
        self.proc = procs.spawn(self.argv(), self.app, self.env, self.logfile)
        ready = lambda: procs.answers_http(self.port) and self.ready_workers() >= self.workers
        if not procs.wait_for(ready, self.started_at + timeout, self._check_alive):
            raise ServerError(f"{self.app}: not ready on port {self.port}\n{self.log_tail()}")
        self.all_ready_s = time.monotonic() - self.started_at


def three_apps(root: Path) -> None:
    """Turns the copy of bench-rails at root into root/app1, app2, app3."""
    for app in APPS:
        shutil.copytree(FIXTURES / "bench-rails", root / app)
    (root / "config.ru").unlink()


def instances(ctx, key: str) -> dict[str, Instance]:
    """app -> the instance that serves it, in configuration key."""
    if key == "A":
        routes = [a for app in APPS for a in ("--app", f"{host(app)}={app}")]
        one = Instance(ctx.new_dir("multiapp-A"), 0, 4, ["--pool-idle-time", str(POOL_IDLE_S)] + routes,
                       prepare=three_apps)
        return {app: one for app in APPS}
    return {app: Instance(ctx.new_dir(f"multiapp-B-{app}"), 2, 2, []) for app in APPS}


def stop_all(insts: list[Instance], grace: float = 20.0) -> bool:
    """TERM every instance, wait for all their processes to go, KILL what is
    left after grace (procs.stop, for several at once). Whether KILL was needed."""
    for i in insts:
        if i.proc and i.proc.poll() is None:
            i.proc.terminate()
    live = [i.proc for i in insts if i.proc]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        procs.reap_orphans({p.pid for p in live})
        if all(p.poll() is not None for p in live) and not procs.server_tree():
            return False
        time.sleep(0.05)
    log("multiapp: still running after TERM, sending KILL")
    procs.kill_tree()
    for p in live:
        p.wait(timeout=10)
    return True


def tree_pss(roots: list[int]) -> tuple[int, int]:
    """(total PSS in bytes, process count) of roots and their descendants."""
    everything = procs.all_processes()
    pids = set(roots) | {p for r in roots for p in procs.tree_below(r, everything)}
    rollups = [m for m in map(procs.smaps_rollup, pids) if m is not None]
    return sum(m.get("Pss", 0) for m in rollups), len(rollups)


class Sampler:
    """tree_pss of a configuration every SAMPLE_S from a thread, each sample
    tagged with `tag` as the scenario sets it."""

    def __init__(self, roots: list[int]):
        self.roots, self.tag, self.samples = roots, "warmup", []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self.done.wait(SAMPLE_S):
            pss, n = tree_pss(self.roots)
            self.samples.append({"t": round(time.monotonic() - t0, 2), "tag": self.tag, "pss": pss, "processes": n})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.thread.join()


def timed_get(port: int, app: str) -> dict:
    """One GET / to app, alone, on a new connection: status and ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.monotonic()
    try:
        conn.request("GET", "/", headers={"Host": host(app)})
        resp = conn.getresponse()
        resp.read()
        return {"status": resp.status, "ms": (time.monotonic() - t0) * 1000}
    finally:
        conn.close()


def first_request(inst: Instance, app: str, key: str) -> dict:
    """The timed request, with what it waited for (status before), then a
    second one alone, and, in A, the cold start rustrack recorded for the
    first (`last_cold_start_ms`: its wait for a worker)."""
    name = app if key == "A" else None
    before = group(status(inst), name)
    out = {"app": app, "kind": kind(before), **timed_get(inst.port, app)}
    out["second_ms"] = timed_get(inst.port, app)["ms"]  # the same worker, now used once
    after = group(status(inst), name) or {}
    if after.get("cold_starts", 0) > (before or {}).get("cold_starts", 0):
        out["cold_start_ms"] = after.get("last_cold_start_ms")
    return out


def run_config(ctx, key: str, rnd: int) -> dict:
    rec = {"scenario": "multiapp", "server": "rustrack", "variant": key, "label": f"{key}: {CONFIGS[key]}",
           "round": rnd, "app": "bench-rails x3", "loadavg_before": procs.loadavg(),
           "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"multiapp: round {rnd + 1}, {rec['label']} (load {rec['loadavg_before'][0]:.2f})")
    by_app = instances(ctx, key)
    insts = list(dict.fromkeys(by_app.values()))
    try:
        if procs.server_tree():
            raise ServerError(f"processes left from an earlier server: {procs.server_tree()}")
        for i in insts:
            i.start()
        rec["argv"] = [i.argv() for i in insts]
        rec["all_workers_ready_s"] = max(i.all_ready_s for i in insts)
        lua = {app: f'wrk.headers["Host"] = "{host(app)}"\n' for app in APPS}
        with Sampler([i.proc.pid for i in insts]) as sampler:
            rec["warmup"] = []
            for app in APPS:
                inst = by_app[app]
                rec["warmup"].append(first_request(inst, app, key))
                wrk(inst.port, "/", ctx.warmup, CONNECTIONS, inst.dir, lua[app])
            rec["phases"] = []
            for n, a in enumerate(PHASES):
                app, inst = APPS[a], by_app[APPS[a]]
                sampler.tag = f"idle {n}"
                time.sleep(IDLE_S)
                first = first_request(inst, app, key)
                sampler.tag = f"load {n}"
                r = wrk(inst.port, "/", ctx.duration, CONNECTIONS, inst.dir, lua[app])
                rec["phases"].append({"app": app, "first": first, "wrk": r})
            sampler.tag = "idle end"
            time.sleep(IDLE_S)
        rec["samples"] = sampler.samples
    except Exception as e:  # recorded, and the run goes on
        rec["error"] = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {rec['error'][:2000]}")
    finally:
        rec["needed_kill"] = stop_all(insts)
    ctx.runs.append(rec)
    return rec


def scenario(ctx) -> None:
    if "rustrack" not in ctx.servers:
        return
    for rnd, key in order(ctx.rounds):
        run_config(ctx, key, rnd)


# -- report ------------------------------------------------------------------


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def pss(runs: list, prefix: str) -> dict:
    """PSS samples of runs whose tag starts with prefix ("load", "idle"):
    the mean of each run's mean, the largest, the mean process count, and
    `settled`: the mean of the last sample of each tag (where an idle gap
    ends, just before the next timed request)."""
    per_run = [[s for s in r["samples"] if s["tag"].startswith(prefix)] for r in runs]
    last = [{s["tag"]: s["pss"] for s in ss} for ss in per_run]
    return {"mean": mean([mean([s["pss"] for s in ss]) for ss in per_run]),
            "max": max((s["pss"] for ss in per_run for s in ss), default=None),
            "settled": mean([x for d in last for x in d.values()]),
            "processes": mean([s["processes"] for ss in per_run for s in ss])}


def summarize(runs: list) -> dict:
    """Figures of one configuration over its rounds (runs without error)."""
    firsts = [p["first"] for r in runs for p in r["phases"]]
    starts = [f for r in runs for f in r["warmup"]]
    wrks = [p["wrk"] for r in runs for p in r["phases"]]
    return {
        "pss_load": pss(runs, "load"), "pss_idle": pss(runs, "idle"),
        "rps": mean([w["rps"] for w in wrks]),
        "p50_ms": mean([w["p50_us"] / 1000 for w in wrks if w["requests"]]),
        "p99_ms": mean([w["p99_us"] / 1000 for w in wrks if w["requests"]]),
        # wrk's errors, and timed requests not answered 200
        "errors": sum(w["errors_total"] for w in wrks) + sum(f["status"] != 200 for f in firsts + starts),
        "first_ms": [f["ms"] for f in firsts], "first_kinds": kinds([f["kind"] for f in firsts]),
        "second_ms": [f["second_ms"] for f in firsts],
        "cold_start_ms": [f["cold_start_ms"] for f in firsts if f.get("cold_start_ms") is not None],
        "start_ms": [f["ms"] for f in starts], "start_kinds": kinds([f["kind"] for f in starts]),
    }


def kinds(ks: list[str]) -> str:
    """"fork ×8" or "worker ×2, boot ×1": what the timed requests waited for."""
    return ", ".join(f"{k} ×{ks.count(k)}" for k in dict.fromkeys(ks)) or "–"


def median(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec=".0f"):
    return "–" if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def mb(x):
    return None if x is None else x / 2**20


def markdown(runs: list, s: dict) -> list[str]:
    """The multiapp tables (s: label -> report.summarize entry, which holds
    summarize's figures unless every round failed) and A ÷ B."""
    ok = {label: e for label, e in s.items() if "pss_load" in e}
    L = [f"## multiapp (3 copies of fixtures/bench-rails; load phases of one app at a time, "
         f"app1 app2 app3 app1, {IDLE_S:.0f} s idle before each)\n",
         "| configuration | PSS under load MB, mean / max | PSS idle MB, mean / max | PSS settled idle MB | "
         "processes under load / idle | req/s | p50 ms | p99 ms | errors | load |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, e in s.items():
        loads = " / ".join(f"{r['loadavg_before'][0]:.2f}" for r in runs
                           if r["scenario"] == "multiapp" and r["label"] == label)
        if label not in ok:
            L.append(f"| {label} | – | – | – | – | – | – | – | {e.get('failed', 0)} runs failed | {loads} |")
            continue
        lo, idle = e["pss_load"], e["pss_idle"]
        failed = f" ({e['failed']} runs failed)" if e.get("failed") else ""
        L.append(f"| {label} | {fmt(mb(lo['mean']))} / {fmt(mb(lo['max']))} | {fmt(mb(idle['mean']))} / "
                 f"{fmt(mb(idle['max']))} | {fmt(mb(idle['settled']))} | {fmt(lo['processes'], '.1f')} / "
                 f"{fmt(idle['processes'], '.1f')} | {fmt(e['rps'])} | {fmt(e['p50_ms'], '.2f')} | "
                 f"{fmt(e['p99_ms'], '.2f')} | {e['errors']}{failed} | {loads} |")
    L += ["", "| configuration | first request after idle ms, median / max | it waited for | "
          "rustrack's wait for a worker ms, median | second request ms, median | "
          "first request at start ms, median / max | it waited for |",
          "|---|---:|---|---:|---:|---:|---|"]
    for label, e in ok.items():
        first, start = e["first_ms"], e["start_ms"]
        L.append(f"| {label} | {fmt(median(first), '.1f')} / {fmt(max(first, default=None), '.1f')} | "
                 f"{e['first_kinds']} | {fmt(median(e['cold_start_ms']), '.1f')} | "
                 f"{fmt(median(e['second_ms']), '.1f')} | {fmt(median(start))} / {fmt(max(start, default=None))} | "
                 f"{e['start_kinds']} |")
    a = next((e for k, e in ok.items() if k.startswith("A")), None)
    b = next((e for k, e in ok.items() if k.startswith("B")), None)
    if a and b:
        r = lambda f: fmt(ratio(f(a), f(b)), ".2f")
        L += ["", "| A ÷ B | PSS under load, mean | PSS under load, max | PSS settled idle | req/s | p99 | "
              "first request after idle, median |", "|---|---:|---:|---:|---:|---:|---:|",
              f"| | {r(lambda e: e['pss_load']['mean'])} | {r(lambda e: e['pss_load']['max'])} | "
              f"{r(lambda e: e['pss_idle']['settled'])} | {r(lambda e: e['rps'])} | {r(lambda e: e['p99_ms'])} | "
              f"{r(lambda e: median(e['first_ms']))} |"]
    return L + [""]
