"""Report: from the list of run records to the published figures.

`summarize` groups the runs by scenario and configuration label and takes
means over the rounds that did not fail (requests per second, p50 and p99,
CPU per request, memory), sums the error counts (read errors apart: wrk
counts each connection the server closes after a response as one, which is
every Unicorn response), and pools the spawn samples and scale-up samples
of all rounds for medians. `targets` checks issue 7's goals against that
summary (and, for realmem, the real-app memory goals; see
`realmem_targets`; and issue 17's in the runs that measured Puma behind
nginx, see `issue17_run`). `markdown` renders the tables: each throughput row carries the
ratios "rustrack req/s ÷ this" and "rustrack p99 ÷ this" against the
rustrack smart row of the same scenario and run; memory and scale-up rows
are divided by rustrack smart's ("this ÷ rustrack smart"). A missing figure
is printed as "–" and a target that cannot be judged as "–". The JSON file
is {"meta", "summary", "targets", "runs"}; after a full run the Markdown
also replaces the results section of bench/README.md (between the
results:start and results:end markers, headings demoted one level).
A before/after run (--baseline) has "rustrack smart (baseline)" rows, whose
ratios against rustrack smart are this build against the baseline, and a
header line naming the baseline binary; targets ignore them.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from . import hop, multiapp
from .paths import README, RESULTS

# The threads scenario's wrk connections (scenarios.THREADS_CONNECTIONS,
# repeated here so that report does not import the scenarios).
THREADS_CONNECTIONS = 32


def ok_runs(ctx_runs: list, scenario: str, label: str) -> list:
    return [r for r in ctx_runs if r["scenario"] == scenario and r["label"] == label and "error" not in r]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def fmt(x, spec: str = ".0f", none: str = "–") -> str:
    return none if x is None else format(x, spec)


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def loads(runs: list) -> str:
    return " / ".join(f"{r['loadavg_before'][0]:.2f}" for r in runs)


def summarize(runs: list) -> dict:
    """Means over rounds, per scenario and server configuration."""
    s: dict = {}
    for r in runs:
        s.setdefault(r["scenario"], {}).setdefault(r["label"], [])
    for scen, labels in s.items():
        for label in list(labels):
            rs = ok_runs(runs, scen, label)
            failed = [r for r in runs if r["scenario"] == scen and r["label"] == label and "error" in r]
            entry = {"rounds": len(rs), "failed": len(failed), "loadavg_before": [r["loadavg_before"] for r in runs if r["scenario"] == scen and r["label"] == label]}
            if rs and "wrk" in rs[0]:
                entry["rps"] = mean([r["wrk"]["rps"] for r in rs])
                # No latency for a run in which no request completed.
                entry["p50_ms"] = mean([r["wrk"]["p50_us"] / 1000 for r in rs if r["wrk"]["requests"]])
                entry["p99_ms"] = mean([r["wrk"]["p99_us"] / 1000 for r in rs if r["wrk"]["requests"]])
                # Read errors apart: wrk counts each connection the server
                # closes after a response (Unicorn never keeps one alive) as one.
                entry["errors"] = sum(r["wrk"]["errors_total"] - r["wrk"]["errors"]["read"] for r in rs)
                entry["read_errors"] = sum(r["wrk"]["errors"]["read"] for r in rs)
                entry["requests"] = sum(r["wrk"]["requests"] for r in rs)
                entry["frontend_cpu_us_per_req"] = mean([r.get("frontend_cpu_us_per_req") for r in rs])
                entry["server_cpu_us_per_req"] = mean([r.get("server_cpu_us_per_req") for r in rs])
                during = [r["app_requests_during"] for r in rs if "app_requests_during" in r]
                if during:
                    entry["app_requests_during"] = sum(during)
            if rs and "total_pss" in rs[0]:
                for k in ["total_pss", "total_private_dirty", "app_pss", "app_private_dirty"]:
                    entry[k] = mean([r[k] for r in rs])
            if rs and "spawn_ms" in rs[0]:
                samples = [x for r in rs for x in r["spawn_ms"]]
                entry["spawn_samples"] = samples
                entry["spawn_median_ms"] = statistics.median(samples) if samples else None
                entry["spawn_min_ms"] = min(samples) if samples else None
                entry["spawn_max_ms"] = max(samples) if samples else None
                entry["first_response_s"] = mean([r.get("first_response_s") for r in rs])
                entry["all_workers_ready_s"] = mean([r.get("all_workers_ready_s") for r in rs])
            if rs and "scaleup_ms" in rs[0]:
                samples = [r["scaleup_ms"] for r in rs]
                entry["scaleup_samples"] = samples
                entry["scaleup_median_ms"] = statistics.median(samples)
            if rs and "mix" in rs[0]:
                entry.update(summarize_realmem(rs))
            if rs and "slow" in rs[0]:
                entry["slow_connected"] = mean([r["slow"]["connected_before_fast_stream"] for r in rs])
                entry["slow_responses"] = mean([r["slow"]["sender_responses"] + r["slow"]["reader_responses"] for r in rs])
            if rs and "phases" in rs[0]:
                entry.update(multiapp.summarize(rs))
            labels[label] = entry
    return s


def summarize_realmem(rs: list) -> dict:
    """realmem figures over the rounds rs (none failed): means of the mix's
    req/s, of the template's PSS, of each round's mean and largest worker
    Private_Dirty, of the refork count; the mold spawn samples pooled; the
    app PSS series averaged step by step."""
    def status_errors(r):
        return r["mix"]["errors"] + sum(n for code, n in r["mix"]["statuses"].items() if int(code) >= 400)

    dirty = [r["worker_private_dirty"] for r in rs if r.get("worker_private_dirty")]
    spawns = [x for r in rs for x in r.get("mold_spawn_ms") or []]
    out = {
        "mix_rps": mean([r["mix"]["rps"] for r in rs]),
        "mix_cpu_ms_per_req": mean([r["mix"].get("server_cpu_ms_per_req") for r in rs]),
        "mix_errors": sum(status_errors(r) for r in rs),
        "template_pss": mean([r.get("template_pss") or None for r in rs]),
        "worker_dirty_mean": mean([statistics.fmean(d) for d in dirty]),
        "worker_dirty_max": mean([max(d) for d in dirty]),
        "reforks": mean([r.get("reforks") for r in rs]),
        "mold_spawn_samples": spawns,
        "mold_spawn_median_ms": statistics.median(spawns) if spawns else None,
        "unsettled": sum(1 for r in rs if r.get("settled") is False),
    }
    series = [r.get("series") or [] for r in rs]
    steps = [p["requests"] for p in series[0]]
    if steps and all([p["requests"] for p in x] == steps for x in series):
        out["series"] = [[n, mean([x[i]["app_pss"] for x in series])] for i, n in enumerate(steps)]
    return out


REALMEM_REMEDY_LABELS = ["rustrack smart + refork", "rustrack smart + warm-up + refork"]


def realmem_targets(s: dict) -> list[tuple[str, str, bool | None]]:
    """The real-app memory goals, for smart + refork and, when it ran,
    smart + warm-up + refork: total PSS (front end apart) ≤ 50% of
    direct's and ≥ 1.4× less than Puma's and Unicorn's preload; every
    worker's Private_Dirty ≤ 30 MB; req/s on the mix ≥ plain smart's; a
    spawn from a mold < 10 ms."""
    out = []
    rm = s.get("realmem", {})

    def get(label, key):
        return rm.get(label, {}).get(key)

    mb = lambda x: fmt(x and x / 2**20, ".0f")
    for label in [x for x in REALMEM_REMEDY_LABELS if x in rm] or REALMEM_REMEDY_LABELS[:1]:
        name = label.removeprefix("rustrack ")
        pss = get(label, "app_pss")
        x = ratio(pss, get("rustrack direct", "app_pss"))
        out.append((f"realmem: {name}: total PSS ≤ 50% of direct's", fmt(None if x is None else 100 * x, ".0f") + "%",
                    None if x is None else x <= 0.50))
        d = get(label, "worker_dirty_max")
        out.append((f"realmem: {name}: every worker's Private_Dirty ≤ 30 MB", f"largest {mb(d)} MB",
                    None if d is None else d <= 30 * 2**20))
        for peer in ["puma preload", "unicorn preload"]:
            x = ratio(get(peer, "app_pss"), pss)
            out.append((f"realmem: {name}: total PSS ≥ 1.4× less than {peer}'s", fmt(x, ".2f") + "×",
                        None if x is None else x >= 1.4))
        x = ratio(get(label, "mix_rps"), get("rustrack smart", "mix_rps"))
        out.append((f"realmem: {name}: req/s on the mix ≥ plain smart's", fmt(x, ".2f") + "×",
                    None if x is None else x >= 1.0))
        a = get(label, "mold_spawn_median_ms")
        out.append((f"realmem: {name}: spawn from a mold < 10 ms", f"{fmt(a, '.1f')} ms (median)",
                    None if a is None else a < 10))
    return out


# Puma behind nginx's label (servers/puma_nginx.py), and its --servers name.
PUMA_NGINX, PUMA_NGINX_SERVER = "puma preload behind nginx", "puma-nginx"


def issue17_run(s: dict, meta: dict | None = None) -> bool:
    """Whether the run is one issue 17's targets speak of: it measured Puma
    behind nginx in hello or rails (or tried: a failed run counts), or
    skipped it for a missing package. Runs from before that configuration
    existed have none of its rows, so their results recompute unchanged."""
    ran = any(PUMA_NGINX in s.get(scen, {}) for scen in ["hello", "rails"])
    return ran or PUMA_NGINX_SERVER in (meta or {}).get("skipped_servers", {})


def targets(s: dict, meta: dict | None = None) -> list[tuple[str, str, bool | None]]:
    """The issue's goals, each with the measured value and pass/fail:
    issue 7's when any of its scenarios ran, realmem's when it ran, issue
    17's when the run measured Puma behind nginx (issue17_run; meta for the
    servers it skipped)."""
    out = []
    if "realmem" in s:
        out += realmem_targets(s)
        if not set(s) - {"realmem"}:
            return out

    def get(scen, label, key):
        return s.get(scen, {}).get(label, {}).get(key)

    rr, pa, un, pu = "rustrack smart", "passenger smart", "unicorn preload", "puma preload"
    h_rr, h_pa, h_un = get("hello", rr, "rps"), get("hello", pa, "rps"), get("hello", un, "rps")
    x = ratio(h_rr, h_pa)
    out.append(("hello req/s ≥ 2.5× Passenger", fmt(x, ".2f") + "×", None if x is None else x >= 2.5))
    x = ratio(h_rr, h_un)
    out.append(("hello req/s ≥ 1.5× Unicorn", fmt(x, ".2f") + "×", None if x is None else x >= 1.5))
    a, b = get("hello", rr, "p99_ms"), get("hello", un, "p99_ms")
    out.append(("hello p99 ≤ Unicorn's", f"{fmt(a, '.2f')} ms vs {fmt(b, '.2f')} ms",
                None if a is None or b is None else a <= b))
    x = ratio(get("rails", rr, "rps"), get("rails", pu, "rps"))
    out.append(("rails req/s ≥ 1.1× Puma", fmt(x, ".2f") + "×", None if x is None else x >= 1.1))
    sm, di, ps = (get("memory", "rustrack smart", "total_pss"), get("memory", "rustrack direct", "total_pss"),
                  get("memory", "passenger smart", "total_pss"))
    x = ratio(sm, di)
    out.append(("bloat: smart total PSS ≤ 40% of direct", fmt(None if x is None else 100 * x, ".0f") + "%",
                None if x is None else x <= 0.40))
    x = ratio(get("memory", "rustrack smart (tight GC)", "total_pss"), get("memory", "rustrack direct (tight GC)", "total_pss"))
    out.append(("bloat, both with tight GC growth: smart total PSS ≤ 40% of direct",
                fmt(None if x is None else 100 * x, ".0f") + "%", None if x is None else x <= 0.40))
    out.append(("bloat: smart total PSS < Passenger smart's",
                f"{fmt(sm and sm / 2**20, '.0f')} MB vs {fmt(ps and ps / 2**20, '.0f')} MB",
                None if sm is None or ps is None else sm < ps))
    # The issue sets the spawn targets on the bloat app; hello and Rails are shown too.
    for app in ["bloat", "hello", "bench-rails"]:
        scen = f"spawn-{app}"
        a, b = get(scen, "rustrack smart", "spawn_median_ms"), get(scen, "rustrack direct", "spawn_median_ms")
        out.append((f"spawn ({app}): smart median < 10 ms", f"{fmt(a, '.2f')} ms", None if a is None else a < 10))
        x = ratio(b, a)
        out.append((f"spawn ({app}): smart ≥ 50× faster than direct", fmt(x, ".1f") + "×",
                    None if x is None else x >= 50))
    a, b = get("hello", rr, "frontend_cpu_us_per_req"), get("hello", pa, "frontend_cpu_us_per_req")
    x = ratio(a, b)
    out.append(("front-end CPU/request ≤ ½ Passenger core's",
                f"{fmt(a, '.1f')} µs vs {fmt(b, '.1f')} µs ({fmt(x, '.2f')}×)", None if x is None else x <= 0.5))
    # Issue 17 also sets "hello req/s ≥ 2.5× Passenger" and "hello p99 ≤
    # Unicorn's", the rows above; these are its others.
    if issue17_run(s, meta):
        out += issue17_targets(s)
    # Several threads per worker (issue 18), only in runs that measured it.
    r4, p4 = "rustrack smart, 4 threads", "puma preload, 4 threads"
    for scen, what, judged in [("threads-io", "I/O-bound", True), ("threads-rails", "Rails", False)]:
        if scen not in s:
            continue
        x = ratio(get(scen, r4, "rps"), get(scen, p4, "rps"))
        out.append((f"{what}, 2×4 threads: req/s ≥ 1.0× Puma's", fmt(x, ".2f") + "×",
                    None if x is None or not judged else x >= 1.0))
        a, b = get(scen, r4, "p99_ms"), get(scen, p4, "p99_ms")
        out.append((f"{what}, 2×4 threads: p99 < Puma's", f"{fmt(a, '.1f')} ms vs {fmt(b, '.1f')} ms",
                    None if a is None or b is None or not judged else a < b))
        a, b = get(scen, r4, "total_pss"), get(scen, p4, "total_pss")
        out.append((f"{what}, 2×4 threads: total PSS < Puma's",
                    f"{fmt(a and a / 2**20, '.0f')} MB vs {fmt(b and b / 2**20, '.0f')} MB",
                    None if a is None or b is None or not judged else a < b))
    # Static files (only in runs that measured them, so older results
    # recompute unchanged).
    for scen, size in [("static-10k", "10 KB"), ("static-1m", "1 MB")]:
        if scen not in s:
            continue
        x = ratio(get(scen, rr, "rps"), get(scen, "nginx static", "rps"))
        out.append((f"static {size} req/s ≥ 0.8× nginx", fmt(x, ".2f") + "×", None if x is None else x >= 0.8))
        n = get(scen, rr, "app_requests_during")
        out.append((f"static {size}: no request reaches a worker", f"{fmt(n)} requests",
                    None if n is None else n == 0))
    return out


def issue17_targets(s: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 17's goals beyond issue 7's rows: rustrack's front end spends
    at most 30 µs of CPU per hello request; on Rails, rustrack serves at
    least as many requests as Puma, and 1.2× as many as Puma behind nginx
    (the deployment rustrack's own front end replaces)."""
    def get(scen, label, key):
        return s.get(scen, {}).get(label, {}).get(key)

    rr, rails_rr = "rustrack smart", get("rails", "rustrack smart", "rps")
    out = []
    a = get("hello", rr, "frontend_cpu_us_per_req")
    out.append(("front-end CPU per hello request ≤ 30 µs", f"{fmt(a, '.1f')} µs", None if a is None else a <= 30))
    for peer, name, bound in [("puma preload", "Puma", 1.0), (PUMA_NGINX, "Puma behind nginx", 1.2)]:
        x = ratio(rails_rr, get("rails", peer, "rps"))
        out.append((f"rails req/s ≥ {bound:.1f}× {name}", fmt(x, ".2f") + "×", None if x is None else x >= bound))
    return out


def baseline_line(meta: dict) -> str:
    """The header line of a before/after run: which binary the "(baseline)"
    rows ran, and how to read their ratios."""
    b = meta["baseline"]
    what = ", ".join([b.get("version", "?")] + [b[k] for k in ("describe", "checkout") if b.get(k)]
                     + ([f"sha256 {b['sha256']}"] if b.get("sha256") else []))
    this = f" ({meta['rustrack_version']})" if meta.get("rustrack_version") else ""
    return (f"- baseline: `{b['path']}` ({what}) in the rows \"rustrack smart (baseline)\", against this "
            f"build{this}; in those rows \"rustrack ÷ this\" is this build ÷ the baseline, and "
            "\"÷ rustrack smart\" the baseline ÷ this build")


def markdown(meta: dict, s: dict, runs: list) -> str:
    L = []
    w = L.append
    w(f"# rustrack benchmark, {meta['date']}{' (quick)' if meta['quick'] else ''}\n")
    w(f"- machine: {meta['cpus']} CPUs, {meta['kernel']}; load average before the run "
      f"{' '.join(str(x) for x in meta['loadavg_start'])}, after {' '.join(str(x) for x in meta['loadavg_end'])}")
    if meta.get("hop"):
        h = meta["hop"]
        w(hop.header_line(h) if "error" not in h else f"- the floor of a proxy hop: not measured ({h['error']})")
    w(f"- rustrack {meta['rustrack_commit']}{' + uncommitted changes' if meta['rustrack_dirty'] else ''} "
      f"(release build); {', '.join(meta['versions'].values())}")
    w(f"- {meta['rounds']} round(s), servers interleaved (A B C D, then D C B A); wrk runs of "
      f"{meta['duration']:.0f} s after {meta['warmup']:.0f} s of warm-up, 1 thread, 16 connections; "
      f"2 single-threaded workers unless noted; total time {meta['elapsed_s'] / 60:.1f} min")
    if meta.get("baseline"):
        # Only in a before/after run (--baseline): other runs' headers are unchanged.
        w(baseline_line(meta))
    if meta.get("skipped_configs"):
        w("- configurations not measured: " + "; ".join(f"{k} ({v})" for k, v in meta["skipped_configs"].items()))
    if meta.get("skipped_servers"):
        # Only in runs that left a server out (see prereqs): a full run's
        # header is unchanged.
        w("- not measured: " + "; ".join(f"{k} ({v})" for k, v in meta["skipped_servers"].items()))
    w("- figures are means over rounds; *load* is the 1-minute load average before each round; "
      "ratios compare rustrack with a peer measured in this same run\n")

    def throughput_table(scen: str, title: str, extra_cpu: bool = False) -> None:
        if scen not in s:
            return
        w(f"## {title}\n")
        hdr = "| server | req/s | p50 ms | p99 ms | errors | read errors | rustrack req/s ÷ this | rustrack p99 ÷ this |"
        sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
        if extra_cpu:
            hdr += " front-end CPU µs/req | all-process CPU µs/req |"
            sep += "---:|---:|"
        if scen == "slow-clients":
            hdr += " slow conns open | slow responses |"
            sep += "---:|---:|"
        if scen.startswith("static-"):
            hdr += " requests that reached the app |"
            sep += "---:|"
        w(hdr + " load |")
        w(sep + "---|")
        base = s[scen].get("rustrack smart", {})
        for label, e in s[scen].items():
            rs = [r for r in runs if r["scenario"] == scen and r["label"] == label]
            row = (f"| {label} | {fmt(e.get('rps'))} | {fmt(e.get('p50_ms'), '.2f')} | {fmt(e.get('p99_ms'), '.2f')} | "
                   f"{e.get('errors', '–')}{' (' + str(e['failed']) + ' runs failed)' if e['failed'] else ''} | "
                   f"{e.get('read_errors', '–')} | "
                   f"{fmt(ratio(base.get('rps'), e.get('rps')), '.2f')} | {fmt(ratio(base.get('p99_ms'), e.get('p99_ms')), '.2f')} |")
            if extra_cpu:
                row += f" {fmt(e.get('frontend_cpu_us_per_req'), '.1f')} | {fmt(e.get('server_cpu_us_per_req'), '.1f')} |"
            if scen == "slow-clients":
                row += f" {fmt(e.get('slow_connected'))} | {fmt(e.get('slow_responses'))} |"
            if scen.startswith("static-"):
                row += f" {fmt(e.get('app_requests_during'))} |"
            w(row + f" {loads(rs)} |")
        w("")

    throughput_table("hello", "hello (fixtures/hello)", extra_cpu=True)
    throughput_table("rails", "rails (fixtures/bench-rails, Rails 6.1)", extra_cpu=True)
    throughput_table("upload", "upload (POST 1 MB bodies to fixtures/bench-payload)")
    throughput_table("download", "download (GET 1 MB responses from fixtures/bench-payload)")
    throughput_table("slow-clients", f"slow clients ({meta['slow_senders']} slow senders + {meta['slow_readers']} "
                     "slow readers of 1 MB) with a fast wrk stream of GET /")
    throughput_table("static-10k", "static 10 KB file from public/ (fixtures/bench-static; nginx serves the same copy)",
                     extra_cpu=True)
    throughput_table("static-1m", "static 1 MB file from public/ (fixtures/bench-static; nginx serves the same copy)",
                     extra_cpu=True)

    for scen, title in [
        ("threads-io", "I/O-bound: each request waits 20 ms on a local socket (fixtures/bench-io)"),
        ("threads-rails", "Rails on threads (fixtures/bench-rails, Rails 6.1)"),
    ]:
        if scen not in s:
            continue
        w(f"## threads: {title}, 2 workers, {THREADS_CONNECTIONS} connections\n")
        w("| server | req/s | p50 ms | p99 ms | errors | total PSS MB | app PSS MB | "
          "rustrack 2×4 req/s ÷ this | rustrack 2×4 p99 ÷ this | rustrack 2×4 PSS ÷ this | "
          "all-process CPU µs/req | load |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        base = s[scen].get("rustrack smart, 4 threads", {})
        for label, e in s[scen].items():
            rs = [r for r in runs if r["scenario"] == scen and r["label"] == label]
            mb = lambda k: fmt(e.get(k) and e[k] / 2**20)
            w(f"| {label} | {fmt(e.get('rps'))} | {fmt(e.get('p50_ms'), '.2f')} | {fmt(e.get('p99_ms'), '.2f')} | "
              f"{e.get('errors', '–')}{' (' + str(e['failed']) + ' runs failed)' if e['failed'] else ''} | "
              f"{mb('total_pss')} | {mb('app_pss')} | "
              f"{fmt(ratio(base.get('rps'), e.get('rps')), '.2f')} | "
              f"{fmt(ratio(base.get('p99_ms'), e.get('p99_ms')), '.2f')} | "
              f"{fmt(ratio(base.get('total_pss'), e.get('total_pss')), '.2f')} | "
              f"{fmt(e.get('server_cpu_us_per_req'), '.1f')} | {loads(rs)} |")
        w("")

    if "memory" in s:
        w(f"## memory (fixtures/bloat, {meta['memory_workers']} workers, after "
          f"{meta['memory_workers'] * meta['memory_per_worker']} requests)\n")
        w("| server | total PSS MB | total Private_Dirty MB | app PSS MB | app Private_Dirty MB | PSS ÷ rustrack smart | load |")
        w("|---|---:|---:|---:|---:|---:|---|")
        base = s["memory"].get("rustrack smart", {}).get("total_pss")
        for label, e in s["memory"].items():
            rs = [r for r in runs if r["scenario"] == "memory" and r["label"] == label]
            mb = lambda k: fmt(e.get(k) and e[k] / 2**20)
            w(f"| {label} | {mb('total_pss')} | {mb('total_private_dirty')} | {mb('app_pss')} | "
              f"{mb('app_private_dirty')} | {fmt(ratio(e.get('total_pss'), base), '.2f')} | {loads(rs)} |")
        w("")

    spawn = [k for k in s if k.startswith("spawn-")]
    if spawn:
        w(f"## spawn ({meta['spawn_workers']} workers per start; time for a worker to become ready)\n")
        w("| app | server | median ms | min ms | max ms | samples | start → first response s | start → all ready s | load |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for scen in spawn:
            for label, e in s[scen].items():
                rs = [r for r in runs if r["scenario"] == scen and r["label"] == label]
                w(f"| {scen[6:]} | {label} | {fmt(e.get('spawn_median_ms'), '.2f')} | {fmt(e.get('spawn_min_ms'), '.2f')} | "
                  f"{fmt(e.get('spawn_max_ms'), '.2f')} | {len(e.get('spawn_samples', []))} | "
                  f"{fmt(e.get('first_response_s'), '.2f')} | {fmt(e.get('all_workers_ready_s'), '.2f')} | {loads(rs)} |")
        w("")

    if "scaleup" in s:
        w("## scale-up (one worker held by a 3 s request; latency of the next GET /, which needs a new worker)\n")
        w("| server | median ms | samples ms | ÷ rustrack smart | load |")
        w("|---|---:|---|---:|---|")
        base = s["scaleup"].get("rustrack smart", {}).get("scaleup_median_ms")
        for label, e in s["scaleup"].items():
            rs = [r for r in runs if r["scenario"] == "scaleup" and r["label"] == label]
            w(f"| {label} | {fmt(e.get('scaleup_median_ms'), '.1f')} | "
              f"{', '.join(format(x, '.1f') for x in e.get('scaleup_samples', []))} | "
              f"{fmt(ratio(e.get('scaleup_median_ms'), base), '.1f')} | {loads(rs)} |")
        w("")

    if "multiapp" in s:
        L.extend(multiapp.markdown(runs, s["multiapp"]))

    if "realmem" in s:
        realmem_tables(meta, s, runs, w)

    judged = targets(s, meta)
    # A run of scenarios no target speaks of (multiapp alone) gets no table
    # of dashes.
    if any(ok is not None for _, _, ok in judged):
        if "realmem" in s:
            w("## targets\n")
        else:
            w("## targets (issues 7 and 17)\n" if issue17_run(s, meta) else "## targets (issue 7)\n")
        w("| target | measured | met |")
        w("|---|---|---|")
        for name, val, ok in judged:
            w(f"| {name} | {val} | {'–' if ok is None else ('yes' if ok else '**no**')} |")
        w("")
    failed = [r for r in runs if "error" in r]
    if failed:
        w("## failed runs\n")
        for r in failed:
            first = r["error"].splitlines()[0] if r["error"] else ""
            w(f"- {r['scenario']} round {r['round'] + 1} {r['label']}: {first}")
        w("")
    return "\n".join(L)


def realmem_tables(meta: dict, s: dict, runs: list, w) -> None:
    rm = s["realmem"]
    workers, requests = meta.get("realmem_workers", 4), meta.get("realmem_requests", 2000)
    w(f"## realmem (fixtures/rails-large in production, {workers} workers, {requests} requests over "
      "the page mix of pages.txt)\n")
    w("| server | total PSS MB | ÷ direct | worker Private_Dirty MB, mean / largest | template PSS MB | "
      "req/s over the mix | ÷ smart | server CPU ms/req | errors | reforks | spawn from a mold, median ms (samples) | load |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    direct = rm.get("rustrack direct", {}).get("app_pss")
    smart = rm.get("rustrack smart", {}).get("mix_rps")
    mb = lambda x, spec=".0f": fmt(x and x / 2**20, spec)
    for label, e in rm.items():
        rs = [r for r in runs if r["scenario"] == "realmem" and r["label"] == label]
        spawn = "–" if not e.get("mold_spawn_samples") else \
            f"{fmt(e['mold_spawn_median_ms'], '.1f')} ({len(e['mold_spawn_samples'])})"
        errors = f"{e.get('mix_errors', '–')}{' (' + str(e['failed']) + ' runs failed)' if e['failed'] else ''}"
        w(f"| {label} | {mb(e.get('app_pss'))} | {fmt(ratio(e.get('app_pss'), direct), '.2f')} | "
          f"{mb(e.get('worker_dirty_mean'), '.1f')} / {mb(e.get('worker_dirty_max'), '.1f')} | "
          f"{mb(e.get('template_pss'))} | {fmt(e.get('mix_rps'), '.1f')} | {fmt(ratio(e.get('mix_rps'), smart), '.2f')} | "
          f"{fmt(e.get('mix_cpu_ms_per_req'), '.0f')} | {errors} | {fmt(e.get('reforks'), '.1f')} | {spawn} | {loads(rs)} |")
    w("")
    steps = next((e["series"] for e in rm.values() if e.get("series")), None)
    if steps:
        w("Total PSS (MB, front end apart) as the requests are served:\n")
        w("| server | " + " | ".join(f"after {n}" for n, _ in steps) + " |")
        w("|---|" + "---:|" * len(steps))
        for label, e in rm.items():
            series = e.get("series") or []
            w(f"| {label} | " + " | ".join(mb(v) for _, v in series) + " |")
        w("")


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def with_results_section(text: str, md: str, name: str) -> str | None:
    """text (bench/README.md) with its results section replaced by md (a
    results file's Markdown, named name), or None if text has no section."""
    start, end = RESULTS_START, RESULTS_END
    if start not in text or end not in text:
        return None
    body = md.split("\n", 1)[1].replace("\n## ", "\n### ")  # demote headings
    new = f"{start}\nFrom `bench/results/{name}.md`:\n{body}\n{end}"
    return text[: text.index(start)] + new + text[text.index(end) + len(end) :]


def update_readme(md: str, name: str, readme: Path = README) -> None:
    if not readme.exists():
        return
    text = with_results_section(readme.read_text(), md, name)
    if text is not None:
        readme.write_text(text)


def write_results(meta: dict, runs: list, name: str, results: Path = RESULTS) -> str:
    """Writes results/name.md and results/name.json; returns the Markdown."""
    s = summarize(runs)
    results.mkdir(exist_ok=True)
    md = markdown(meta, s, runs)
    (results / f"{name}.md").write_text(md + "\n")
    (results / f"{name}.json").write_text(json.dumps(
        {"meta": meta, "summary": s, "targets": targets(s, meta), "runs": runs}, indent=1) + "\n")
    return md
