"""Scenarios: what is measured on which servers, and in which order.

Every scenario is a list of server configurations (`Spec`s) and a `body`:
a function that gets a started `Server` and returns the figures of one run
as a dict. `run_one` starts the server, calls body, stops the server and
appends one record to `ctx.runs` (scenario, label, round, load average
before, times to first response and to all workers ready, body's figures,
or the error that stopped the run: a failing server does not abort the
benchmark). Servers run in rounds, A B C D then D C B A (`interleaved`), so
that drift over the run hits all of them alike.

Scenarios, by --only name: hello, rails, upload, download (wrk throughput
on one app; hello and rails also run Puma behind nginx), slow (slow clients plus a fast wrk stream), memory (PSS and
Private_Dirty of every process after a fixed number of requests), spawn
(each server's own worker spawn times, then the scale-up cross-check timed
from outside), static (a 10 KB and a 1 MB file from public/, rustrack's
front end against nginx, with the count of requests that reached the app)
and threads (2 workers of 4 threads, rustrack against Puma, on an I/O-bound
app whose requests wait 20 ms on a local socket and on the small Rails app:
requests per second, latency, and the total PSS of the server's processes
after the measurement; rustrack with single-threaded workers as a
reference).
Those make the default run. realmem (a large Rails app's memory over a page
mix, with each of rustrack's memory remedies, against Puma, Unicorn and
Passenger) runs only when named, as it takes about an hour per round, and so
does multiapp (several apps on one instance against an instance each).

A before/after run (bench/run --baseline BINARY, `Ctx.baseline`) adds to
hello, rails, upload, download, slow and memory (BASELINE_SCENARIOS) the
plain rustrack smart spec run by that other binary, "rustrack smart
(baseline)", right after this build's, interleaved like any server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import multiapp, procs
from .load import DelayServer, SlowClients, fixed_requests, mix_requests, mix_steps, wrk
from .log import log
from .paths import FIXTURES, RUSTRACK
from .servers import Server, Spec

# The configuration used for throughput scenarios: all four load the app once
# and fork their workers from it.
THROUGHPUT_SPECS = [
    Spec("rustrack", "smart"),
    Spec("passenger", "smart"),
    Spec("puma", "preload"),
    Spec("unicorn", "preload"),
]

# hello and rails add Puma behind nginx (issue 17): the same Puma, with
# nginx in front as Puma's users deploy it, next to the plain one in the
# tables. The other throughput scenarios keep the four above.
APP_SPECS = THROUGHPUT_SPECS[:3] + [Spec("puma-nginx", "preload")] + THROUGHPUT_SPECS[3:]

MEMORY_SPECS = [
    Spec("rustrack", "smart"), Spec("rustrack", "direct"),
    Spec("rustrack", "smart", tight_gc=True), Spec("rustrack", "direct", tight_gc=True),
    Spec("passenger", "smart"), Spec("passenger", "direct"),
    Spec("puma", "preload"), Spec("puma", "no-preload"),
    Spec("unicorn", "preload"), Spec("unicorn", "no-preload"),
]

SPAWN_SPECS = [
    Spec("rustrack", "smart"), Spec("rustrack", "smart", no_hugepages=True), Spec("rustrack", "direct"),
    Spec("passenger", "smart"), Spec("passenger", "direct"),
]

SPAWN_APPS = ["bloat", "hello", "bench-rails"]

# Several requests per worker (issue 18): rustrack and Puma with 2 workers
# of 4 threads each, and rustrack's single-threaded workers as a reference.
THREADS_SPECS = [
    Spec("rustrack", "smart", threads=4),
    Spec("puma", "preload", threads=4),
    Spec("rustrack", "smart"),
]

# The threads scenario's apps: record name -> (fixture, path).
THREADS_APPS = {"threads-io": ("bench-io", "/"), "threads-rails": ("bench-rails", "/")}

# wrk connections for the threads scenario: more clients than the 8
# sessions of 2 x 4, so both servers queue.
THREADS_CONNECTIONS = 32

# rustrack's front end serving public/ against nginx serving the same copy.
STATIC_SPECS = [Spec("rustrack", "smart"), Spec("nginx", "static")]

# The static scenario's files: URL path -> size. Fingerprinted names, as a
# Rails app's compiled assets are named (so rustrack adds its immutable
# Cache-Control, a few bytes nginx does not send).
STATIC_FILES = {
    "/assets/small-0f3a5c7e9b1d2f4a.css": 10 * 1024,
    "/assets/large-8e6c4a2b0d9f7e5c.js": 1024 * 1024,
}

# realmem: fixtures/rails-large with rustrack's remedies for the sharing that
# a real app's first requests erode, each alone and combined, against the
# peers' preload modes. Remedies whose flag this build lacks are skipped.
REALMEM_SPECS = [
    Spec("rustrack", "direct"),
    Spec("rustrack", "smart"),
    Spec("rustrack", "smart", remedies=("warm-up",)),
    Spec("rustrack", "smart", remedies=("refork",)),
    Spec("rustrack", "smart", remedies=("warm-up", "refork")),
    Spec("rustrack", "smart", remedies=("heap aging",)),
    Spec("passenger", "smart"),
    Spec("puma", "preload"),
    Spec("unicorn", "preload"),
]
REALMEM_APP = "rails-large"
# Pitchfork's default: a first mold after 50 requests, the next after 100
# more (warmer: it inherits the first mold's work), then every 1000.
REALMEM_REFORK_AFTER = "50,100,1000"
# Keep the preloaders for the whole run: both servers stop theirs after 300 s
# without a spawn by default, and a mix that takes longer than that on a busy
# machine would then be measured without it (the first run's rustrack smart
# round 2: 375 s, preloader gone, 53 MB less). Puma's and Unicorn's masters
# never go; a mold is never stopped for idleness.
REALMEM_SERVER_OPTIONS = {"rustrack": ("--max-preloader-idle-time", "0"),
                          "passenger": ("--max-preloader-idle-time", "0")}

UPLOAD_LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 1000000)
wrk.headers["Content-Type"] = "application/octet-stream"
"""

SCALEUP_HOLD_S = 3.0

# The scenarios in which --baseline adds "rustrack smart (baseline)" after
# "rustrack smart": those whose tables compare throughput or memory with
# rustrack smart's row (threads, static, spawn, realmem and multiapp do not
# take it).
BASELINE_SCENARIOS = ["hello", "rails", "upload", "download", "slow", "memory"]


@dataclass
class Ctx:
    quick: bool
    rounds: int
    duration: float
    warmup: float
    workdir: Path
    servers: list[str]
    memory_workers: int = 4
    memory_per_worker: int = 2000
    slow_senders: int = 100
    slow_readers: int = 100
    spawn_workers: int = 4
    scaleup_rounds: int = 3
    realmem_workers: int = 4
    realmem_requests: int = 2000
    realmem_steps: int = 4
    realmem_refork_after: str = REALMEM_REFORK_AFTER
    # Another rustrack binary (bench/run --baseline): BASELINE_SCENARIOS run
    # it too, as "rustrack smart (baseline)".
    baseline: str | None = None
    runs: list = field(default_factory=list)
    # "scenario: label" -> why that configuration was not run
    skipped_configs: dict = field(default_factory=dict)
    counter: int = 0

    def new_dir(self, name: str) -> Path:
        # Short: Passenger's Unix socket paths under it must fit in 108 bytes.
        self.counter += 1
        d = self.workdir / f"{self.counter:03d}"
        d.mkdir()
        (d / "name").write_text(name + "\n")
        return d / "s"


def interleaved(specs: list[Spec], rounds: int):
    """A B C D, D C B A, ...: drift over the run hits every server alike."""
    for r in range(rounds):
        for spec in specs if r % 2 == 0 else list(reversed(specs)):
            yield r, spec


def selected(specs: list[Spec], ctx: Ctx) -> list[Spec]:
    return [s for s in specs if s.server in ctx.servers]


def with_baseline(specs: list[Spec], baseline: str | None) -> list[Spec]:
    """specs with, right after plain "rustrack smart", the same spec run by
    the baseline binary (a before/after run), so that it is interleaved
    like any server; specs unchanged without a baseline."""
    out = []
    for s in specs:
        out.append(s)
        if baseline and s == Spec("rustrack", "smart"):
            out.append(dataclasses.replace(s, binary=baseline))
    return out


def run_one(ctx: Ctx, scenario: str, spec: Spec, rnd: int, app: str, workers: int, body,
            max_pool: int | None = None, prepare=None, env: dict | None = None) -> dict:
    """Starts spec on app, runs body(server) -> dict, stops it; records the
    load average before the run and any failure instead of aborting."""
    rec = {"scenario": scenario, "server": spec.server, "variant": spec.variant,
           "label": spec.label, "round": rnd, "app": app, "workers": workers,
           "loadavg_before": procs.loadavg(), "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"{scenario}: round {rnd + 1}, {spec.label} (load {rec['loadavg_before'][0]:.2f})")
    srv = Server(spec, app, workers, ctx.new_dir(f"{scenario}-{spec.slug}"),
                 max_pool=max_pool, prepare=prepare, env=env)
    try:
        srv.start()
        rec["first_response_s"] = srv.first_response_s
        rec["all_workers_ready_s"] = srv.all_ready_s
        rec.update(body(srv))
    except Exception as e:  # recorded, and the run goes on with the next server
        rec["error"] = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {rec['error'][:2000]}")
    finally:
        srv.stop()
        rec["needed_kill"] = srv.needed_kill
    ctx.runs.append(rec)
    return rec


# -- throughput: hello, rails, upload, download ------------------------------


def throughput_body(ctx: Ctx, path: str, script: str = "", connections: int = 16):
    def body(srv: Server) -> dict:
        w = wrk(srv.port, path, ctx.warmup, connections, srv.dir, script)
        # The front end's processes (one, or nginx's master and workers),
        # read after the warm-up: the set does not change while wrk runs.
        fes = srv.frontend_pids()
        fe0, tree0 = procs.pids_ticks(fes), procs.tree_cpu_ticks()
        r = wrk(srv.port, path, ctx.duration, connections, srv.dir, script)
        fe1, tree1 = procs.pids_ticks(fes), procs.tree_cpu_ticks()
        out = {"wrk": r, "warmup_requests": w["requests"]}
        # What the app saw (warm-up included): shows that no response came
        # from a cache in front of it (Passenger's turbocache).
        out.update(srv.adapter.app_processed(srv))
        if r["requests"]:
            out["server_cpu_us_per_req"] = (tree1 - tree0) / procs.CLK_TCK * 1e6 / r["requests"]
            if fe0 is not None and fe1 is not None:
                out["frontend_pid"] = fes[0]
                out["frontend_cmd"] = procs.cmdline(fes[0])
                if len(fes) > 1:
                    out["frontend_pids"] = fes
                out["frontend_cpu_us_per_req"] = (fe1 - fe0) / procs.CLK_TCK * 1e6 / r["requests"]
        return out

    return body


def scenario_throughput(ctx: Ctx, name: str, app: str, path: str, script: str = "",
                        specs: list[Spec] = THROUGHPUT_SPECS) -> None:
    for rnd, spec in interleaved(with_baseline(selected(specs, ctx), ctx.baseline), ctx.rounds):
        run_one(ctx, name, spec, rnd, app, 2, throughput_body(ctx, path, script))


# -- slow clients ------------------------------------------------------------


def scenario_slow(ctx: Ctx) -> None:
    def body(srv: Server) -> dict:
        wrk(srv.port, "/", ctx.warmup, 16, srv.dir)
        slow = SlowClients(srv.port, ctx.slow_senders, ctx.slow_readers)
        slow.start()
        try:
            time.sleep(2.0)  # let the slow connections open and get stuck
            before = dict(slow.stats)
            r = wrk(srv.port, "/", ctx.duration, 16, srv.dir)
        finally:
            stats = slow.stop()
        stats["connected_before_fast_stream"] = before["connected"]
        return {"wrk": r, "slow": stats}

    for rnd, spec in interleaved(with_baseline(selected(THROUGHPUT_SPECS, ctx), ctx.baseline), ctx.rounds):
        run_one(ctx, "slow-clients", spec, rnd, "bench-payload", 2, body)


# -- memory ------------------------------------------------------------------


def tree_memory(srv: Server) -> dict:
    """Pss and Private_Dirty of every process of the server, each and
    summed (app: without the non-Ruby front-end processes)."""
    processes = []
    for pid in sorted(procs.server_tree()):
        m = procs.smaps_rollup(pid)
        if m is None:
            continue
        processes.append({"pid": pid, "role": srv.role(pid), "cmd": procs.cmdline(pid)[:120],
                          "pss": m.get("Pss", 0), "private_dirty": m.get("Private_Dirty", 0),
                          "rss": m.get("Rss", 0)})
    app_procs = [p for p in processes if p["role"] != "front"]
    return {
        "processes": processes,
        "total_pss": sum(p["pss"] for p in processes),
        "total_private_dirty": sum(p["private_dirty"] for p in processes),
        "app_pss": sum(p["pss"] for p in app_procs),
        "app_private_dirty": sum(p["private_dirty"] for p in app_procs),
        "worker_count": sum(1 for p in processes if p["role"] == "worker"),
    }


def scenario_memory(ctx: Ctx) -> None:
    workers, per_worker = ctx.memory_workers, ctx.memory_per_worker

    def body(srv: Server) -> dict:
        r = fixed_requests(srv.port, "/", workers * per_worker, 2 * workers)
        time.sleep(1.0)
        out = {"requests": r, **tree_memory(srv)}
        out.update(srv.adapter.worker_processed(srv))
        return out

    for rnd, spec in interleaved(with_baseline(selected(MEMORY_SPECS, ctx), ctx.baseline), ctx.rounds):
        run_one(ctx, "memory", spec, rnd, "bloat", workers, body)


# -- spawn and scale-up ------------------------------------------------------


def scenario_spawn(ctx: Ctx, apps: list[str]) -> None:
    def body(srv: Server) -> dict:
        return srv.adapter.spawn_ms(srv)

    for app in apps:
        for rnd, spec in interleaved(selected(SPAWN_SPECS, ctx), ctx.rounds):
            run_one(ctx, f"spawn-{app}", spec, rnd, app, ctx.spawn_workers, body)


def scenario_scaleup(ctx: Ctx, rounds: int) -> None:
    """The same outside measurement for both servers: one worker (pool may
    grow to two) is held by GET /sleep?s=3; the latency of a GET / sent then
    is the time to spawn a second worker plus one tiny request."""

    def body(srv: Server) -> dict:
        held: dict = {}

        def hold() -> None:
            try:
                held["status"] = procs.http_get(srv.port, f"/sleep?s={SCALEUP_HOLD_S}", timeout=60)[0]
            except OSError as e:
                held["error"] = str(e)

        th = threading.Thread(target=hold)
        th.start()
        time.sleep(0.3)  # the hold is in its worker
        t0 = time.monotonic()
        status, _ = procs.http_get(srv.port, "/", timeout=60)
        ms = (time.monotonic() - t0) * 1000
        th.join()
        # Answered only after the hold ended: no second worker was used.
        if ms >= (SCALEUP_HOLD_S - 0.3) * 1000:
            raise RuntimeError(f"GET / took {ms:.0f} ms: it waited for the held worker")
        return {"scaleup_ms": ms, "status": status, "hold": held,
                "workers_after": srv.ready_workers()}

    for rnd, spec in interleaved(selected(SPAWN_SPECS, ctx), rounds):
        run_one(ctx, "scaleup", spec, rnd, "bench-payload", 1, body, max_pool=2)


# -- threads: several requests per worker ------------------------------------


def threads_body(ctx: Ctx, path: str):
    """throughput_body with THREADS_CONNECTIONS, then the memory of every
    process of the server, read right after the measurement."""
    inner = throughput_body(ctx, path, connections=THREADS_CONNECTIONS)

    def body(srv: Server) -> dict:
        out = inner(srv)
        out.update(tree_memory(srv))
        return out

    return body


def scenario_threads(ctx: Ctx) -> None:
    """Each app, servers interleaved. The I/O-bound app's delay server runs
    for the whole of each run (the readiness probe already waits on it)."""
    for name, (app, path) in THREADS_APPS.items():
        for rnd, spec in interleaved(selected(THREADS_SPECS, ctx), ctx.rounds):
            env, delay = None, None
            if app == "bench-io":
                sock = ctx.workdir / f"io-{rnd}-{spec.slug}.sock"
                delay = DelayServer(sock).start()
                env = {"BENCH_IO_SOCKET": str(sock)}
            try:
                rec = run_one(ctx, name, spec, rnd, app, 2, threads_body(ctx, path), env=env)
            finally:
                if delay is not None:
                    replies = delay.stop()
            if delay is not None:
                rec["delay_replies"] = replies


# -- static files: rustrack's front end against nginx -----------------------


def write_static_files(app: Path) -> None:
    """Writes STATIC_FILES under app/public: printable bytes (as CSS and
    JavaScript are), deterministic, so every server sends the same."""
    for path, size in STATIC_FILES.items():
        target = app / "public" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        line = b"/* rustrack static benchmark: the same bytes for every server. */\n"
        target.write_bytes((line * (size // len(line) + 1))[:size])


def scenario_static(ctx: Ctx) -> None:
    """wrk against each file, keep-alive HTTP/1.1, servers interleaved;
    each record says how many requests the app saw (rustrack: none may)."""
    for path, size in STATIC_FILES.items():
        name = f"static-{'10k' if size < 100_000 else '1m'}"
        for rnd, spec in interleaved(selected(STATIC_SPECS, ctx), ctx.rounds):
            run_one(ctx, name, spec, rnd, "bench-static", 2, static_body(ctx, path),
                    prepare=write_static_files)


def static_body(ctx: Ctx, path: str):
    """throughput_body, plus how many requests reached the app from the
    start of the warm-up to the end of the measurement (rustrack's
    processed_total; the readiness probe's GET / came before)."""
    inner = throughput_body(ctx, path)

    def body(srv: Server) -> dict:
        before = srv.adapter.app_processed(srv).get("app_processed")
        out = inner(srv)
        after = out.get("app_processed")
        if before is not None and after is not None:
            out["app_requests_during"] = after - before
        return out

    return body

# -- realmem: a large Rails app's memory under rustrack's remedies -------------


def realmem_pages() -> list[str]:
    text = (FIXTURES / REALMEM_APP / "pages.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def rustrack_help() -> str:
    """`rustrack start --help`: which remedies this build has."""
    r = subprocess.run([str(RUSTRACK), "start", "--help"], capture_output=True, text=True, timeout=30)
    return r.stdout


def preload_gc_modes(help_text: str) -> list[str]:
    """The values `--preload-gc` accepts, from the help text: clap lists
    them as "[possible values: a, b]", or one per line ("- a: what it
    does") when they are documented."""
    m = re.search(r"^\s*--preload-gc <[^>]*>\n(.*?)(?=^\s*--|\Z)", help_text, re.S | re.M)
    if not m:
        return []
    block = m.group(1)
    inline = re.search(r"\[possible values: ([^\]]*)\]", block)
    if inline:
        return [v.strip() for v in inline.group(1).split(",")]
    return re.findall(r"^\s*- ([\w-]+)(?::|$)", block, re.M)


def realmem_options(spec: Spec, help_text: str, pages: list[str], refork_after: str) -> list[str] | str:
    """The rustrack options for spec's remedies, or why this build cannot
    run it (a flag `rustrack start --help` does not list)."""
    opts: list[str] = []
    for remedy in spec.remedies:
        if remedy == "warm-up":
            if "--warmup-request" not in help_text:
                return "this build has no --warmup-request (warm-up not merged yet)"
            # Every page of the mix, served in the preloader before it forks.
            for page in pages:
                opts += ["--warmup-request", page]
        elif remedy == "refork":
            if "--refork-after" not in help_text:
                return "this build has no --refork-after"
            opts += ["--refork-after", refork_after]
        elif remedy == "heap aging":
            modes = preload_gc_modes(help_text)
            aging = [m for m in modes if m not in ("none", "start", "compact")
                     and re.search(r"ag(e|ing)|old|promot", m)]
            if not aging:
                return f"this build has no heap-aging --preload-gc mode (possible values: {', '.join(modes) or '?'})"
            opts += ["--preload-gc", aging[0]]
        else:
            raise ValueError(f"unknown remedy {remedy}")
    if "heap aging" not in spec.remedies and spec.variant == "smart":
        # Builds whose default --preload-gc ages the heap: the other rows
        # keep the mode from before aging, so each remedy is measured alone.
        if any(re.search(r"ag(e|ing)|old|promot", m) for m in preload_gc_modes(help_text)):
            opts += ["--preload-gc", "compact"]
    return opts


def realmem_processes(srv: Server) -> list[dict]:
    """Every process of the server with its role and smaps_rollup figures."""
    out = []
    for pid in sorted(procs.server_tree()):
        m = procs.smaps_rollup(pid)
        if m is None:
            continue
        out.append({"pid": pid, "role": srv.role(pid), "cmd": procs.cmdline(pid)[:120],
                    "rss": m.get("Rss", 0), "pss": m.get("Pss", 0),
                    "private_dirty": m.get("Private_Dirty", 0),
                    "shared": m.get("Shared_Clean", 0) + m.get("Shared_Dirty", 0)})
    return out


def memory_figures(processes: list[dict]) -> dict:
    """Totals over the server's processes; "app" leaves the front end out
    (rustrack's front end, Passenger's core and watchdog)."""
    app = [p for p in processes if p["role"] != "front"]
    workers = [p for p in app if p["role"] == "worker"]
    return {
        "total_pss": sum(p["pss"] for p in processes),
        "total_private_dirty": sum(p["private_dirty"] for p in processes),
        "app_pss": sum(p["pss"] for p in app),
        "app_private_dirty": sum(p["private_dirty"] for p in app),
        # None without one (direct spawning).
        "template_pss": sum(p["pss"] for p in app if p["role"] == "master") or None,
        "worker_count": len(workers),
        "worker_private_dirty": [p["private_dirty"] for p in workers],
    }


def scenario_realmem(ctx: Ctx) -> None:
    workers, total = ctx.realmem_workers, ctx.realmem_requests
    pages = realmem_pages()
    help_text = rustrack_help() if "rustrack" in ctx.servers else ""
    specs = []
    for spec in selected(REALMEM_SPECS, ctx):
        opts: list[str] | str = []
        if spec.server == "rustrack":
            opts = realmem_options(spec, help_text, pages, ctx.realmem_refork_after)
            if isinstance(opts, str):
                ctx.skipped_configs[f"realmem: {spec.label}"] = opts
                log(f"realmem: skipping {spec.label}: {opts}")
                continue
        opts = list(REALMEM_SERVER_OPTIONS.get(spec.server, ())) + opts
        specs.append(dataclasses.replace(spec, options=tuple(opts)))

    def body(srv: Server) -> dict:
        series = []

        def sample(done: int) -> None:
            series.append({"requests": done, "app_pss": memory_figures(realmem_processes(srv))["app_pss"]})

        sample(0)
        # CPU time of the server's processes over the mix (the samples'
        # /proc reads are the harness's own): steadier than req/s on a
        # machine shared with other work.
        cpu0 = procs.tree_cpu_ticks()
        mix = mix_requests(srv.port, pages, total, 2 * workers, mix_steps(total, ctx.realmem_steps), sample)
        mix["server_cpu_ms_per_req"] = (procs.tree_cpu_ticks() - cpu0) / procs.CLK_TCK * 1000 / total
        # A refork may still be rolling out: let it finish (at most 2 min).
        settle_deadline = time.monotonic() + 120
        while not srv.adapter.settled(srv) and time.monotonic() < settle_deadline:
            time.sleep(0.5)
        time.sleep(1.0)
        processes = realmem_processes(srv)
        out = {"mix": mix, "series": series, "processes": processes,
               "settled": srv.adapter.settled(srv)}
        out.update(memory_figures(processes))
        out.update(srv.adapter.worker_processed(srv))
        out.update(srv.adapter.refork_figures(srv))
        return out

    for rnd, spec in interleaved(specs, ctx.rounds):
        run_one(ctx, "realmem", spec, rnd, REALMEM_APP, workers, body)


# -- by --only name ----------------------------------------------------------

SCENARIOS: dict[str, Callable[[Ctx], None]] = {
    "hello": lambda ctx: scenario_throughput(ctx, "hello", "hello", "/", specs=APP_SPECS),
    "rails": lambda ctx: scenario_throughput(ctx, "rails", "bench-rails", "/", specs=APP_SPECS),
    "upload": lambda ctx: scenario_throughput(ctx, "upload", "bench-payload", "/upload", UPLOAD_LUA),
    "download": lambda ctx: scenario_throughput(ctx, "download", "bench-payload", "/download"),
    "slow": scenario_slow,
    "memory": scenario_memory,
    "spawn": lambda ctx: (scenario_spawn(ctx, SPAWN_APPS), scenario_scaleup(ctx, ctx.scaleup_rounds)),
    "static": scenario_static,
    "threads": scenario_threads,
    "realmem": scenario_realmem,
}

# What a run without --only runs (and what a published run must include):
# realmem takes about an hour per round and multiapp measures a feature,
# not a peer comparison, so they run only when named.
DEFAULT_SCENARIOS = ["hello", "rails", "upload", "download", "slow", "memory", "spawn", "static", "threads"]

# The servers each scenario can run (the rest of --servers is not started).
SCENARIO_SPECS: dict[str, list[Spec]] = {
    "hello": APP_SPECS, "rails": APP_SPECS, "upload": THROUGHPUT_SPECS,
    "download": THROUGHPUT_SPECS, "slow": THROUGHPUT_SPECS, "memory": MEMORY_SPECS,
    "spawn": SPAWN_SPECS, "static": STATIC_SPECS, "threads": THREADS_SPECS,
    "realmem": REALMEM_SPECS,
}

# Debian packages a scenario needs whatever the server: wrk for the wrk
# measurements, ruby-rails for the bench-rails app.
SCENARIO_PACKAGES: dict[str, tuple[str, ...]] = {
    "hello": ("wrk",), "rails": ("wrk", "ruby-rails"), "upload": ("wrk",),
    "download": ("wrk",), "slow": ("wrk",), "memory": (), "spawn": ("ruby-rails",),
    "static": ("wrk",), "threads": ("wrk", "ruby-rails"),
    "realmem": ("ruby-rails", "ruby-sqlite3"),
}
SCENARIOS["multiapp"], SCENARIO_SPECS["multiapp"], SCENARIO_PACKAGES["multiapp"] = (  # bench/rbench/multiapp.py
    multiapp.scenario, multiapp.SPECS, multiapp.PACKAGES)


def servers_used(scenarios: list[str], servers: list[str]) -> list[str]:
    """The servers of `servers` that some scenario of `scenarios` runs, in
    the order of `servers`."""
    used = {s.server for scen in scenarios for s in SCENARIO_SPECS[scen]}
    return [s for s in servers if s in used]
