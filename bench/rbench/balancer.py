"""Many instances behind a real load balancer (bench/run-balancer; see
"Behind HAProxy" in bench/README.md).

Part *balancer*: Debian's HAProxy, started on 127.0.0.1 with its own
configuration in a temporary directory, in front of 2 rustrack instances
of 2 workers each (`--min-instances 2 --max-pool-size 2`, smart spawning,
production) serving fixtures/hello. The backend is the HAProxy block of
docs/deployment.md, read from the document as tests/behind_balancers.rs
reads it: `option httpchk GET /up` every 500 ms (fall 1, rise 2), retries
with redispatch, PROXY protocol v2, so every instance runs with
`--health-check-path /up --shutdown-delay 2 --trusted-proxy 127.0.0.1/32
--proxy-protocol --reuse-port`. HAProxy logs only what is not a normal
request (`option dontlog-normal`: errors, 5xx, retries, redispatches),
with a millisecond epoch timestamp, and has a stats socket that a sampler
thread reads every 100 ms (`show stat`) to time each server's UP/DOWN
changes.

wrk (`-t1 -c16 --latency`) runs through HAProxy for the measurement's
duration (60 s) in two configurations, interleaved (disturbed, unchanged,
unchanged, disturbed, ...):

- *unchanged*: nothing happens;
- *disturbed*: the events of EVENTS at even intervals: instance a is
  stopped gracefully (SIGTERM; its health check turns 503 and HAProxy
  takes it out while it keeps serving for --shutdown-delay) and, once it
  has exited, started again on the same port; instance b is upgraded in
  place: a new rustrack process starts on b's port (--reuse-port), and
  once both its workers are ready and it has logged "listening on", the
  old one gets SIGTERM. Each event starts only when HAProxy sees both
  servers UP again.

A failed request is any error wrk counts: non-2xx/3xx answers, connect,
read, write and timeout errors (target: 0). HAProxy's log (requests it
retried or failed, by server and time), its `show stat` counters at the
end and every rustrack process's log (info, without the access log) are
kept in the JSON, so a failure can be attributed to a moment and to
HAProxy or rustrack.

Part *overhead*: rustrack alone (no HAProxy), wrk straight at it, with
and without what running behind a balancer adds: `--health-check-path
/up` polled every 500 ms by a thread of the harness (a new connection each
time, as HAProxy's checks), `--trusted-proxy 127.0.0.1/32`, and an
`X-Request-Start: t=...` header on every wrk request (which rustrack then
keeps instead of writing its own). rustrack adds X-Request-Id in both
(there is no switch for it). Interleaved rounds; req/s, p99 and the CPU
time of the server's processes per request.

The parts that turn output into figures (parsing HAProxy's log and stats,
summaries, the Markdown) are pure functions, unit-tested in
bench/tests/test_balancer.py.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import prereqs, procs
from .load import wrk
from .log import log
from .paths import FIXTURES, RESULTS, ROOT, RUSTRACK
from .servers.rustrack import status_of

CONFIGS = ("disturbed", "unchanged")
OVERHEAD_CONFIGS = ("plain", "behind-balancer")
PARTS = ("balancer", "overhead")
EVENTS = ("restart a", "upgrade b", "restart a", "upgrade b")
WORKERS = 2
SHUTDOWN_DELAY = 2
CONNECTIONS = 16
APP = "hello"
PACKAGES = ("ruby-rack", "wrk", "haproxy")
HAPROXY = "/usr/sbin/haproxy"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
# The rustrack options of every instance behind HAProxy (part balancer).
INSTANCE_OPTIONS = (
    "--health-check-path", "/up", "--shutdown-delay", str(SHUTDOWN_DELAY),
    "--trusted-proxy", "127.0.0.1/32", "--proxy-protocol", "--reuse-port",
)
# What part overhead adds to plain rustrack.
OVERHEAD_OPTIONS = ("--health-check-path", "/up", "--trusted-proxy", "127.0.0.1/32")
POLL_INTERVAL = 0.5
# rustrack's lifecycle messages at info, without one access-log line per request.
RUST_LOG = "info,rustrack::access=warn"
# HAProxy's request log line: epoch.ms, client, backend/server, timers,
# status, bytes, termination state, connection counts (retries last,
# "+" when redispatched), queues, request line.
LOG_FORMAT = '%Ts.%ms %ci:%cp %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r'
LOG_LINE = re.compile(
    r"^(?P<ts>\d+\.\d{3}) (?P<client>\S+) (?P<backend>[^/\s]+)/(?P<server>\S+) "
    r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>-?\d+) "
    r"(?P<status>-?\d+) (?P<bytes>\d+) (?P<tsc>\S+) "
    r"\d+/\d+/\d+/\d+/(?P<redispatched>\+?)(?P<retries>\d+) \d+/\d+ \"(?P<request>.*)\"$"
)
STAT_FIELDS = ("status", "stot", "wretr", "wredis", "econ", "eresp", "hrsp_2xx", "hrsp_5xx",
               "cli_abrt", "srv_abrt", "chkfail", "chkdown", "downtime")


# -- pure: configuration, parsing, summaries, the report ---------------------------


def snippet(doc: str, name: str) -> str:
    """The fenced block after `<!-- tested: NAME -->` in docs/deployment.md
    (as tests/behind_balancers.rs reads it)."""
    marker = f"<!-- tested: {name} -->"
    at = doc.index(marker) + len(marker)
    after = doc[at:]
    body = after[after.index("```"):]
    body = body[body.index("\n") + 1:]
    return body[:body.index("```")]


def fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    if "{{" in text:
        raise ValueError(f"unfilled placeholder in:\n{text}")
    return text


def haproxy_config(dir: Path, port: int, port_a: int, port_b: int, backend: str) -> str:
    """HAProxy's whole configuration: a stats socket in dir, request logs to
    stdout (only errors, 5xx, retries and redispatches), and the
    docs/deployment.md block (backend) with its placeholders filled."""
    return (
        "global\n"
        "    maxconn 4096\n"
        "    log stdout format raw daemon\n"
        f"    stats socket {dir / 'haproxy.sock'} mode 600 level admin\n"
        "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    option dontlog-normal\n"
        "    option dontlognull\n"
        f"    log-format \"{LOG_FORMAT}\"\n"
        "    timeout connect 2s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n\n"
        + fill(backend, {"PORT": str(port), "ADDRESS_A": f"127.0.0.1:{port_a}",
                         "ADDRESS_B": f"127.0.0.1:{port_b}"})
    )


def parse_show_stat(text: str) -> dict[str, dict[str, str]]:
    """`show stat` CSV -> {"proxy/server": {field: value}} (FRONTEND and
    BACKEND rows under those names)."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    rows = csv.DictReader([lines[0][2:]] + lines[1:])
    return {f"{r['pxname']}/{r['svname']}": {k: v for k, v in r.items() if k} for r in rows}


def server_states(stat: dict[str, dict[str, str]], backend: str = "rustrack") -> dict[str, str]:
    """{server: status} of the backend's servers ("UP", "DOWN", "DOWN 1/2", ...)."""
    out = {}
    for key, row in stat.items():
        px, sv = key.split("/", 1)
        if px == backend and sv not in ("FRONTEND", "BACKEND"):
            out[sv] = row.get("status", "?")
    return out


def stat_counters(stat: dict[str, dict[str, str]], backend: str = "rustrack") -> dict[str, dict]:
    """The STAT_FIELDS of the backend and each of its servers (numbers as int)."""
    out = {}
    for key, row in stat.items():
        px, sv = key.split("/", 1)
        if px != backend:
            continue
        out[sv] = {f: (int(row[f]) if row.get(f, "").isdigit() else row.get(f) or None) for f in STAT_FIELDS}
    return out


def parse_haproxy_log(text: str, t0_wall: float | None = None) -> dict:
    """HAProxy's output: request lines (LOG_FORMAT; only abnormal ones are
    logged) and everything else (server state changes, warnings). Request
    lines get "t", seconds since t0_wall (the start of the load)."""
    requests, other = [], []
    for line in text.splitlines():
        m = LOG_LINE.match(line.strip())
        if not m:
            if line.strip():
                other.append(line.strip())
            continue
        d = m.groupdict()
        r = {
            "ts": float(d["ts"]), "server": d["server"], "status": int(d["status"]),
            "tsc": d["tsc"], "retries": int(d["retries"]), "redispatched": d["redispatched"] == "+",
            "Tc": int(d["Tc"]), "Tr": int(d["Tr"]), "Ta": int(d["Ta"]), "request": d["request"],
        }
        if t0_wall is not None:
            r["t"] = round(r["ts"] - t0_wall, 3)
        requests.append(r)
    return {"requests": requests, "other": other}


def log_summary(parsed: dict) -> dict:
    """Counts over HAProxy's logged requests: retried and answered 2xx/3xx
    (a failure HAProxy hid from the client), failed (5xx, or a
    termination state other than "----"), by server and termination state."""
    reqs = parsed["requests"]
    ok = [r for r in reqs if 200 <= r["status"] < 400 and r["tsc"].startswith("--")]
    failed = [r for r in reqs if r not in ok]
    return {
        "logged": len(reqs),
        "retried_ok": sum(1 for r in ok if r["retries"] or r["redispatched"]),
        "failed": len(failed),
        "retries": sum(r["retries"] for r in reqs),
        "by_server": _count(r["server"] for r in reqs),
        "by_tsc": _count(r["tsc"] for r in reqs),
        "failed_lines": failed[:50],
        "retried_lines": [r for r in ok if r["retries"] or r["redispatched"]][:50],
    }


def event_at(t: float | None, events: list[dict], slack: float = 1.0) -> str:
    """The event under way at t (seconds since the load started), or "–"."""
    if t is None:
        return "–"
    for e in events:
        if e.get("began") is not None and e["began"] <= t <= (e.get("end") or e["began"]) + slack:
            return f"{e['name']} (began {e['began']:.1f})"
    return "–"


def _count(xs) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


def transitions(samples: list[tuple[float, dict[str, str]]]) -> list[dict]:
    """State changes from (t, {server: status}) samples in time order: one
    {"t", "server", "from", "to"} per change (the first sample sets the
    starting states)."""
    out, last = [], {}
    for t, states in samples:
        for sv, st in sorted(states.items()):
            if sv in last and last[sv] != st:
                out.append({"t": round(t, 3), "server": sv, "from": last[sv], "to": st})
            last[sv] = st
    return out


def rate_timeline(counts: list[tuple[float, dict[str, int]]], window: float = 1.0) -> list[dict]:
    """Requests per second in each window of `window` s, per server and in
    total (HAProxy's BACKEND row), from (t, {server: requests so far})
    samples in time order: {"t": end of the window, "a": ..., "b": ...,
    "BACKEND": ...}. A window with no sample in it is skipped."""
    out: list[dict] = []
    if not counts:
        return out
    last_t, last = counts[0]
    edge = last_t + window
    for t, c in counts[1:]:
        if t < edge:
            continue
        dt_ = t - last_t
        out.append({"t": round(t, 1), **{k: round((c[k] - last.get(k, 0)) / dt_) for k in sorted(c) if k in last}})
        last_t, last = t, c
        edge = t + window
    return out


def schedule(duration: float, events: list[str], lead: float = 5.0, tail: float = 10.0) -> list[float]:
    """When each event is due, in seconds after the load starts: the first
    after `lead`, the rest evenly spread so the last one is due `tail` plus
    one interval before the end (time for it to finish under load)."""
    if not events:
        return []
    step = max(0.0, duration - lead - tail) / len(events)
    return [round(lead + i * step, 3) for i in range(len(events))]


def interleaved(rounds: int, configs: tuple[str, ...]) -> list[tuple[int, str]]:
    """(round, config) in run order: A B, then B A, then A B, ..."""
    out = []
    for rnd in range(rounds):
        for c in (configs if rnd % 2 == 0 else tuple(reversed(configs))):
            out.append((rnd, c))
    return out


def failed_requests(w: dict) -> int:
    """wrk's errors: non-2xx/3xx answers plus connect, read, write and
    timeout errors."""
    return sum(w["errors"].get(k, 0) for k in ("status", "connect", "read", "write", "timeout"))


def _ratio(a, b):
    return a / b if a is not None and b else None


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def summarize(runs: list[dict]) -> dict:
    """Part balancer: per configuration, rounds, failed requests (total and
    per round), mean req/s and p99; the p99 and req/s ratios disturbed ÷
    unchanged, overall (of the means) and per round."""
    s: dict = {}
    ok = {c: {r["round"]: r for r in runs if r["config"] == c and "wrk" in r} for c in CONFIGS}
    for c in CONFIGS:
        recs = [r for r in runs if r["config"] == c]
        good = list(ok[c].values())
        s[c] = {
            "rounds": len(good), "errors": [r["error"] for r in recs if "error" in r],
            "failed": sum(failed_requests(r["wrk"]) for r in good),
            "failed_per_round": [failed_requests(r["wrk"]) for r in good],
            "requests": sum(r["wrk"]["requests"] for r in good),
            "rps": _mean(r["wrk"]["rps"] for r in good),
            "p99_ms": _mean(r["wrk"]["p99_us"] / 1000 for r in good),
            "p50_ms": _mean(r["wrk"]["p50_us"] / 1000 for r in good),
            "haproxy_retried_ok": sum(r.get("haproxy_log", {}).get("retried_ok", 0) for r in good),
            "haproxy_failed": sum(r.get("haproxy_log", {}).get("failed", 0) for r in good),
            "loads": [r["loadavg_before"][0] for r in recs],
        }
    d, u = ok["disturbed"], ok["unchanged"]
    both = sorted(set(d) & set(u))
    s["p99_ratio"] = _ratio(s["disturbed"]["p99_ms"], s["unchanged"]["p99_ms"])
    s["rps_ratio"] = _ratio(s["disturbed"]["rps"], s["unchanged"]["rps"])
    s["p99_round_ratios"] = [_ratio(d[n]["wrk"]["p99_us"], u[n]["wrk"]["p99_us"]) for n in both]
    s["rps_round_ratios"] = [_ratio(d[n]["wrk"]["rps"], u[n]["wrk"]["rps"]) for n in both]
    s["events_done"] = sum(sum(1 for e in r.get("events", []) if e.get("done")) for r in d.values())
    s["events_planned"] = sum(len(r.get("events", [])) for r in d.values())
    return s


def summarize_overhead(runs: list[dict]) -> dict:
    """Part overhead: per configuration, mean req/s, p99 and CPU µs per
    request; behind-balancer ÷ plain of the means and per round."""
    s: dict = {}
    ok = {c: {r["round"]: r for r in runs if r["config"] == c and "wrk" in r} for c in OVERHEAD_CONFIGS}
    for c in OVERHEAD_CONFIGS:
        recs = [r for r in runs if r["config"] == c]
        good = list(ok[c].values())
        s[c] = {
            "rounds": len(good), "errors": [r["error"] for r in recs if "error" in r],
            "rps": _mean(r["wrk"]["rps"] for r in good),
            "p99_ms": _mean(r["wrk"]["p99_us"] / 1000 for r in good),
            "cpu_us_per_req": _mean(r.get("cpu_us_per_req") for r in good),
            "failed": sum(failed_requests(r["wrk"]) for r in good),
            "polls": sum(r.get("polls", {}).get("ok", 0) for r in good),
            "poll_failures": sum(r.get("polls", {}).get("failed", 0) for r in good),
            "loads": [r["loadavg_before"][0] for r in recs],
        }
    a, b = ok["behind-balancer"], ok["plain"]
    both = sorted(set(a) & set(b))
    s["rps_ratio"] = _ratio(s["behind-balancer"]["rps"], s["plain"]["rps"])
    s["cpu_ratio"] = _ratio(s["behind-balancer"]["cpu_us_per_req"], s["plain"]["cpu_us_per_req"])
    s["p99_ratio"] = _ratio(s["behind-balancer"]["p99_ms"], s["plain"]["p99_ms"])
    s["rps_round_ratios"] = [_ratio(a[n]["wrk"]["rps"], b[n]["wrk"]["rps"]) for n in both]
    s["cpu_round_ratios"] = [_ratio(a[n].get("cpu_us_per_req"), b[n].get("cpu_us_per_req")) for n in both]
    rr = [x for x in s["rps_round_ratios"] if x is not None]
    s["rps_round_ratio_median"] = statistics.median(rr) if rr else None
    return s


def _f(x, spec=".0f"):
    return "–" if x is None else format(x, spec)


def _ms(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{(b - a) * 1000:.0f}"


def _s(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{b - a:.2f}"


def event_row(rnd: int, e: dict, changes: list[dict]) -> str:
    """One event of a disturbed run: when, and how long each step took."""
    srv = e["server"]
    during = [c for c in changes if c["server"] == srv and e["due"] <= c["t"] <= (e.get("end") or 1e9)]
    flips = ", ".join(f"{c['to']} at {c['t']:.2f}" for c in during) or "none"
    if e["kind"] == "restart":
        steps = (f"TERM → DOWN {_ms(e.get('term'), e.get('down'))} ms, TERM → exit {_s(e.get('term'), e.get('exit'))} s, "
                 f"start → ready {_s(e.get('start'), e.get('ready'))} s, start → UP {_s(e.get('start'), e.get('up'))} s")
    else:
        steps = (f"start → ready {_s(e.get('start'), e.get('ready'))} s, TERM old → exit "
                 f"{_s(e.get('term'), e.get('exit'))} s, back UP {_s(e.get('start'), e.get('up'))} s after start")
    status = "done" if e.get("done") else f"**not done**: {e.get('error', 'ran out of time')}"
    return (f"| {rnd + 1} | {e['name']} | {_f(e.get('began'), '.1f')} | {steps} | {flips} | "
            f"{e.get('exit_code', '–')} | {status} |")


def markdown(meta: dict, runs: list[dict], s: dict | None, o: dict | None) -> str:
    lines = [
        f"# rustrack behind HAProxy: stops, restarts and upgrades under load ({meta['date']})", "",
        f"- machine: {meta['cpus']} CPUs, {meta['kernel']}; load average before {meta['loadavg_start']}, "
        f"after {meta['loadavg_end']}",
        f"- rustrack {meta['commit']}{' (uncommitted changes)' if meta.get('dirty') else ''} (release build), "
        f"{meta['haproxy']}, {meta['wrk']}, {meta['ruby']}",
        f"- net.ipv4.tcp_migrate_req = {meta['tcp_migrate_req']}",
    ]
    if s is not None:
        lines += [
            f"- {meta['rounds']} round(s) of {meta['duration']:.0f} s, interleaved (disturbed, unchanged, "
            f"unchanged, disturbed, ...); wrk -t1 -c{CONNECTIONS} --latency through HAProxy; "
            f"events in a disturbed run, due at {', '.join(f'{t:.0f}' for t in meta['schedule'])} s: "
            f"{', '.join(meta['events'])}",
            f"- 2 rustrack instances × {WORKERS} workers of fixtures/{APP} "
            f"(`--min-instances {WORKERS} --max-pool-size {WORKERS} --spawn-method smart --environment production "
            f"{' '.join(INSTANCE_OPTIONS)}`), HAProxy with the docs/deployment.md block "
            "(`option httpchk GET /up`, `inter 500ms fall 1 rise 2`, `retries 2`, `option redispatch`, "
            "`send-proxy-v2`), logging only abnormal requests (`option dontlog-normal`)",
            "",
            "## Failed requests and latency",
            "",
            "| run | configuration | round | load | req/s | p50 ms | p99 ms | failed (status, connect, read, write, "
            "timeout) | HAProxy: retried and answered, failed, retries | events done |",
            "|---:|---|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for i, r in enumerate(runs):
            if r.get("part") != "balancer":
                continue
            if "wrk" not in r:
                lines.append(f"| {i + 1} | {r['config']} | {r['round'] + 1} | {r['loadavg_before'][0]:.2f} "
                             f"| failed: {r.get('error', '?')[:120]} | | | | | |")
                continue
            w, e, h = r["wrk"], r["wrk"]["errors"], r.get("haproxy_log", {})
            evs = r.get("events", [])
            events_done = f"{sum(1 for x in evs if x.get('done'))}/{len(evs)}" if evs else "–"
            lines.append(
                f"| {i + 1} | {r['config']} | {r['round'] + 1} | {r['loadavg_before'][0]:.2f} | {w['rps']:.0f} "
                f"| {w['p50_us'] / 1000:.2f} | {w['p99_us'] / 1000:.2f} | **{failed_requests(w)}** "
                f"({e['status']}, {e['connect']}, {e['read']}, {e['write']}, {e['timeout']}) "
                f"| {h.get('retried_ok', '–')}, {h.get('failed', '–')}, {h.get('retries', '–')} "
                f"| {events_done} |"
            )
        d, u = s["disturbed"], s["unchanged"]
        lines += [
            "",
            "| configuration | rounds | failed requests (target 0) | per round | mean req/s | mean p99 ms |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for c in CONFIGS:
            x = s[c]
            lines.append(f"| {c} | {x['rounds']} | {x['failed']} | {' / '.join(str(n) for n in x['failed_per_round'])} "
                         f"| {_f(x['rps'])} | {_f(x['p99_ms'], '.2f')} |")
        lines += [
            "",
            f"p99 disturbed ÷ unchanged: **{_f(s['p99_ratio'], '.2f')}** (per round "
            f"{' / '.join(_f(x, '.2f') for x in s['p99_round_ratios'])}); req/s disturbed ÷ unchanged: "
            f"{_f(s['rps_ratio'], '.2f')} (per round {' / '.join(_f(x, '.2f') for x in s['rps_round_ratios'])}). "
            f"Events done: {s['events_done']} of {s['events_planned']}. "
            f"Failed requests: disturbed {d['failed']}, unchanged {u['failed']} "
            f"({'target met' if d['failed'] == 0 and u['failed'] == 0 and d['rounds'] and u['rounds'] else '**target not met**'}).",
            "",
            "### Events of the disturbed runs",
            "",
            "Times in seconds since the load started; DOWN and UP are HAProxy's view (its stats socket, "
            "read every 100 ms).",
            "",
            "| round | event | at s | steps | HAProxy state changes of the server | exit code of the stopped process "
            "| status |",
            "|---:|---|---:|---|---|---:|---|",
        ]
        for r in runs:
            if r.get("part") == "balancer" and r["config"] == "disturbed":
                for e in r.get("events", []):
                    lines.append(event_row(r["round"], e, r.get("state_changes", [])))
        logged = [(r, x, outcome) for r in runs if r.get("part") == "balancer"
                  for key, outcome in (("failed_lines", "**failed**"), ("retried_lines", "retried, answered"))
                  for x in r.get("haproxy_log", {}).get(key, [])]
        if logged:
            lines += ["", "### Requests HAProxy logged (retried or failed)", "",
                      "The client's view is wrk's; a retried request that HAProxy answered from the other "
                      "instance did not fail for the client, but shows where an instance dropped one.", "",
                      "| configuration | round | t s | during | server | status | termination | retries "
                      "| Tc/Tr/Ta ms | outcome |",
                      "|---|---:|---:|---|---|---:|---|---:|---|---|"]
            for r, x, outcome in logged[:40]:
                lines.append(f"| {r['config']} | {r['round'] + 1} | {_f(x.get('t'), '.3f')} "
                             f"| {event_at(x.get('t'), r.get('events', []))} | {x['server']} "
                             f"| {x['status']} | {x['tsc']} | {x['retries']}{'+' if x['redispatched'] else ''} "
                             f"| {x['Tc']}/{x['Tr']}/{x['Ta']} | {outcome} |")
        lines.append("")
    if o is not None:
        p, b = o["plain"], o["behind-balancer"]
        lines += [
            "## Overhead of a health-check poller and proxy headers (rustrack alone)",
            "",
            f"wrk -t1 -c{CONNECTIONS} straight at one rustrack ({WORKERS} workers of fixtures/{APP}, smart, "
            f"production), {meta['overhead_rounds']} round(s) of {meta['overhead_duration']:.0f} s after "
            f"{meta['overhead_warmup']:.0f} s of warm-up, interleaved. *behind-balancer* adds "
            f"`{' '.join(OVERHEAD_OPTIONS)}`, a GET /up every {POLL_INTERVAL * 1000:.0f} ms from the harness "
            "(a new connection each, as HAProxy's checks) and `X-Request-Start: t=…` on every wrk request. "
            "CPU is `utime + stime` of every rustrack process over the measurement, per request.",
            "",
            "| configuration | round | load | req/s | p99 ms | CPU µs/req | failed | health checks (ok, failed) |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in runs:
            if r.get("part") != "overhead":
                continue
            if "wrk" not in r:
                lines.append(f"| {r['config']} | {r['round'] + 1} | {r['loadavg_before'][0]:.2f} | failed: "
                             f"{r.get('error', '?')[:120]} | | | | |")
                continue
            w, pl = r["wrk"], r.get("polls")
            polls = f"{pl['ok']}, {pl['failed']}" if pl else "–"
            lines.append(f"| {r['config']} | {r['round'] + 1} | {r['loadavg_before'][0]:.2f} | {w['rps']:.0f} "
                         f"| {w['p99_us'] / 1000:.2f} | {_f(r.get('cpu_us_per_req'), '.1f')} | {failed_requests(w)} "
                         f"| {polls} |")
        x = o["rps_ratio"]
        met = "–" if x is None else ("yes" if abs(1 - x) < 0.02 else "**no**")
        lines += [
            "",
            "| behind-balancer ÷ plain | of the means | per round | median of rounds |",
            "|---|---:|---|---:|",
            f"| req/s (target: within 2 %, met: {met}) | {_f(x, '.3f')} "
            f"| {' / '.join(_f(y, '.3f') for y in o['rps_round_ratios'])} | {_f(o['rps_round_ratio_median'], '.3f')} |",
            f"| CPU µs per request | {_f(o['cpu_ratio'], '.3f')} "
            f"| {' / '.join(_f(y, '.3f') for y in o['cpu_round_ratios'])} | |",
            f"| p99 | {_f(o['p99_ratio'], '.3f')} | | |",
            "",
            f"Means: plain {_f(p['rps'])} req/s, {_f(p['cpu_us_per_req'], '.1f')} µs/req; behind-balancer "
            f"{_f(b['rps'])} req/s, {_f(b['cpu_us_per_req'], '.1f')} µs/req. Load before each run: plain "
            f"{' / '.join(f'{v:.2f}' for v in p['loads'])}; behind-balancer {' / '.join(f'{v:.2f}' for v in b['loads'])}.",
            "",
        ]
    return "\n".join(lines)


# -- processes ---------------------------------------------------------------------


rustrack_status = status_of


class Instance:
    """One rustrack process on a fixed port, with its own instance
    registry directory and log file."""

    def __init__(self, name: str, n: int, app: Path, port: int, dir: Path, options=INSTANCE_OPTIONS):
        self.name, self.n, self.app, self.port = name, n, app, port
        self.reg = dir / f"reg-{name}-{n}"
        self.reg.mkdir(parents=True)
        self.logfile = dir / f"rustrack-{name}-{n}.log"
        self.options = tuple(options)
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [str(RUSTRACK), "start", str(self.app), "--address", "127.0.0.1", "--port", str(self.port),
                "--min-instances", str(WORKERS), "--max-pool-size", str(WORKERS), "--spawn-method", "smart",
                "--environment", "production", "--log-level", "info",
                "--instance-registry-dir", str(self.reg), *self.options]

    def start(self) -> "Instance":
        env = dict(os.environ, RACK_ENV="production", RUST_LOG=RUST_LOG)
        self.proc = procs.spawn(self.argv(), self.app, env, self.logfile)
        return self

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"rustrack {self.name}#{self.n} exited ({self.proc.returncode}):\n{self.log_tail()}")

    def ready(self) -> bool:
        """Both workers ready and the listener bound (with --reuse-port it
        is bound only once a worker is ready)."""
        workers = (rustrack_status(self.reg) or {}).get("workers", [])
        if sum(1 for w in workers if w.get("state") == "ready") < WORKERS:
            return False
        return "listening on http://" in self.logfile.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        if not procs.wait_for(self.ready, time.monotonic() + timeout, self.alive):
            raise RuntimeError(f"rustrack {self.name}#{self.n} not ready in {timeout:.0f} s:\n{self.log_tail()}")

    def term(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)
        procs.reap_orphans(set())
        return rc

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def notable_lines(self, limit: int = 40) -> list[str]:
        """WARN and ERROR lines of its log, and the lifecycle lines around a stop."""
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return []
        keep = [x for x in lines if " WARN " in x or " ERROR " in x or "drain" in x or "shut" in x.lower()
                or "listening on" in x or "exit" in x]
        return keep[:limit]


class HAProxy:
    def __init__(self, dir: Path, port: int, port_a: int, port_b: int):
        self.dir, self.port = dir, port
        self.cfg = dir / "haproxy.cfg"
        backend = snippet(DEPLOYMENT_DOC.read_text(), "haproxy")
        self.cfg.write_text(haproxy_config(dir, port, port_a, port_b, backend))
        self.logfile = dir / "haproxy.log"
        self.sock = dir / "haproxy.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = procs.spawn([HAPROXY, "-db", "-f", str(self.cfg)], self.dir, dict(os.environ), self.logfile)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited ({self.proc.returncode}):\n{self.logfile.read_text(errors='replace')}")

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def stat(self) -> dict:
        return parse_show_stat(self.command("show stat"))

    def states(self) -> dict[str, str]:
        try:
            return server_states(self.stat())
        except OSError:
            return {}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sampler(threading.Thread):
    """Reads HAProxy's server states every `interval` s (seconds since t0)."""

    def __init__(self, haproxy: HAProxy, t0: float, interval: float = 0.1):
        super().__init__(daemon=True, name="haproxy-sampler")
        self.haproxy, self.t0, self.interval = haproxy, t0, interval
        self.samples: list[tuple[float, dict[str, str]]] = []
        # (t, {server: requests answered so far}), for rate_timeline.
        self.counts: list[tuple[float, dict[str, int]]] = []
        self.latest: dict[str, str] = {}
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                stat = self.haproxy.stat()
            except OSError:
                stat = {}
            t = time.monotonic() - self.t0
            st = server_states(stat)
            with self.lock:
                if st:
                    self.samples.append((t, st))
                    self.counts.append((t, {k: v["stot"] for k, v in stat_counters(stat).items()
                                            if isinstance(v.get("stot"), int)}))
                    self.latest = st
            self.stopped.wait(self.interval)

    def state(self, server: str) -> str:
        with self.lock:
            return self.latest.get(server, "?")

    def first(self, server: str, status: str, after: float) -> float | None:
        """The first sample time at or after `after` with server in status."""
        with self.lock:
            for t, st in self.samples:
                if t >= after and st.get(server) == status:
                    return t
        return None


def wait_until(cond, timeout: float, alive=lambda: None, interval: float = 0.05) -> bool:
    return procs.wait_for(cond, time.monotonic() + timeout, alive, interval)


def all_up(sampler: Sampler) -> bool:
    return sampler.state("a") == "UP" and sampler.state("b") == "UP"


# -- part balancer -------------------------------------------------------------------


class Cluster:
    """HAProxy and the current instance behind each of its servers."""

    def __init__(self, dir: Path, app: Path):
        self.dir, self.app = dir, app
        self.ports = {"a": procs.free_port(), "b": procs.free_port()}
        self.port = procs.free_port()
        self.count = {"a": 0, "b": 0}
        self.current: dict[str, Instance] = {}
        self.retired: list[Instance] = []
        self.haproxy = HAProxy(dir, self.port, self.ports["a"], self.ports["b"])

    def new_instance(self, name: str) -> Instance:
        self.count[name] += 1
        return Instance(name, self.count[name], self.app, self.ports[name], self.dir).start()

    def start(self) -> None:
        for name in ("a", "b"):
            self.current[name] = self.new_instance(name)
        for inst in self.current.values():
            inst.wait_ready()
        self.haproxy.start()
        if not wait_until(lambda: self.haproxy.sock.exists() and all_up_now(self.haproxy), 30, self.haproxy.alive):
            raise RuntimeError(f"HAProxy did not see both instances UP: {self.haproxy.states()}")
        if not wait_until(lambda: procs.answers_http(self.port), 20, self.haproxy.alive):
            raise RuntimeError("no answer through HAProxy")

    def restart(self, e: dict, sampler: Sampler, now) -> None:
        """Stop instance a gracefully, then start it again on its port."""
        old = self.current[e["server"]]
        e["term"] = now()
        old.term()
        e["exit_code"] = old.wait_exit(SHUTDOWN_DELAY + 40)
        e["exit"] = now()
        self.retired.append(old)
        e["down"] = sampler.first(e["server"], "DOWN", e["term"])
        new = self.new_instance(e["server"])
        self.current[e["server"]] = new
        e["start"] = now()
        new.wait_ready()
        e["ready"] = now()
        if not wait_until(lambda: sampler.state(e["server"]) == "UP", 30, new.alive):
            raise RuntimeError(f"HAProxy did not see {e['server']} UP again")
        e["up"] = now()

    def upgrade(self, e: dict, sampler: Sampler, now) -> None:
        """A new process on b's port (--reuse-port); once it is ready, TERM
        the old one."""
        old = self.current[e["server"]]
        new = self.new_instance(e["server"])
        e["start"] = now()
        new.wait_ready()
        e["ready"] = now()
        self.current[e["server"]] = new
        e["term"] = now()
        old.term()
        e["exit_code"] = old.wait_exit(SHUTDOWN_DELAY + 40)
        e["exit"] = now()
        self.retired.append(old)
        if not wait_until(lambda: sampler.state(e["server"]) == "UP", 30, new.alive):
            raise RuntimeError(f"HAProxy did not see {e['server']} UP again")
        e["up"] = now()

    def instances(self) -> list[Instance]:
        return self.retired + list(self.current.values())

    def stop(self) -> bool:
        """HAProxy first, then TERM every instance still running and wait;
        KILL what is left. Returns whether KILL was needed."""
        self.haproxy.stop()
        live = [i for i in self.current.values() if i.proc and i.proc.poll() is None]
        for i in live:
            i.term()
        deadline = time.monotonic() + SHUTDOWN_DELAY + 30
        needed_kill = False
        for i in live:
            try:
                i.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                needed_kill = True
        # The workers and preloader go right after the front end.
        wait_until(lambda: (procs.reap_orphans(set()), not procs.server_tree())[1], 10)
        if needed_kill or procs.server_tree():
            log("  processes left after TERM: KILL")
            procs.kill_tree()
            needed_kill = True
        return needed_kill


def all_up_now(h: HAProxy) -> bool:
    st = h.states()
    return st.get("a") == "UP" and st.get("b") == "UP"


def run_balancer(config: str, rnd: int, workdir: Path, app: Path, duration: float, events: list[str],
                 n: int) -> dict:
    rec: dict = {"part": "balancer", "config": config, "round": rnd, "loadavg_before": procs.loadavg(),
                 "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"balancer: round {rnd + 1}, {config} (load {rec['loadavg_before'][0]:.2f})")
    dir = workdir / f"{n:02d}-{config}"
    dir.mkdir(parents=True)
    cluster = Cluster(dir, app)
    sampler = None
    try:
        cluster.start()
        rec["ports"] = {"haproxy": cluster.port, **cluster.ports}
        result: dict = {}

        def load() -> None:
            try:
                result["wrk"] = wrk(cluster.port, "/", duration, CONNECTIONS, dir)
            except Exception as e:  # reported below
                result["error"] = f"{type(e).__name__}: {e}"

        t0 = time.monotonic()
        t0_wall = time.time()
        now = lambda: round(time.monotonic() - t0, 3)  # noqa: E731
        sampler = Sampler(cluster.haproxy, t0)
        sampler.start()
        loader = threading.Thread(target=load, name="wrk")
        loader.start()
        evs: list[dict] = []
        if config == "disturbed":
            for name, due in zip(events, schedule(duration, events)):
                kind, server = name.split()
                evs.append({"name": name, "kind": kind, "server": server, "due": due})
            for e in evs:
                while now() < e["due"] and loader.is_alive():
                    time.sleep(0.05)
                if not loader.is_alive():
                    e["error"] = "the load had ended"
                    continue
                # The previous event must be over in HAProxy's view too.
                e["both_up_before"] = wait_until(lambda: all_up(sampler), 30)
                e["began"] = now()
                try:
                    (cluster.restart if e["kind"] == "restart" else cluster.upgrade)(e, sampler, now)
                    e["done"] = True
                except Exception as ex:
                    e["error"] = f"{type(ex).__name__}: {ex}"
                    log(f"  event {e['name']} failed: {e['error'][:500]}")
                e["end"] = now()
                e["after_load"] = not loader.is_alive()
                log(f"  {e['name']}: began {e['began']:.1f} s, ended {e['end']:.1f} s")
        loader.join(duration + 180)
        sampler.stopped.set()
        sampler.join(5)
        rec["events"] = evs
        rec["state_changes"] = transitions(sampler.samples)
        rec["rate_timeline"] = rate_timeline(sampler.counts)
        rec["haproxy_stat"] = stat_counters(cluster.haproxy.stat())
        if "error" in result:
            raise RuntimeError(result["error"])
        rec["wrk"] = result["wrk"]
        rec["failed"] = failed_requests(result["wrk"])
        log(f"  {rec['wrk']['rps']:.0f} req/s, p99 {rec['wrk']['p99_us'] / 1000:.2f} ms, failed {rec['failed']}")
        rec["t0_wall"] = t0_wall
    except Exception as e:  # recorded; the run goes on
        rec["error"] = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {rec['error'][:2000]}")
    finally:
        if sampler is not None:
            sampler.stopped.set()
        rec["needed_kill"] = cluster.stop()
    text = cluster.haproxy.logfile.read_text(errors="replace") if cluster.haproxy.logfile.exists() else ""
    parsed = parse_haproxy_log(text, rec.get("t0_wall"))
    rec["haproxy_log"] = log_summary(parsed)
    rec["haproxy_other"] = parsed["other"][:200]
    rec["rustrack_logs"] = {f"{i.name}#{i.n}": i.notable_lines() for i in cluster.instances()}
    return rec


# -- part overhead -------------------------------------------------------------------


class Poller(threading.Thread):
    """GET /up every `interval` s on a new connection, until stopped."""

    def __init__(self, port: int, interval: float = POLL_INTERVAL):
        super().__init__(daemon=True, name="health-poller")
        self.port, self.interval = port, interval
        self.ok = self.failed = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                status, _ = procs.http_get(self.port, "/up", timeout=5)
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
            except OSError:
                self.failed += 1
            self.stopped.wait(self.interval)


def run_overhead(config: str, rnd: int, workdir: Path, app: Path, duration: float, warmup: float,
                 n: int) -> dict:
    rec: dict = {"part": "overhead", "config": config, "round": rnd, "loadavg_before": procs.loadavg(),
                 "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"overhead: round {rnd + 1}, {config} (load {rec['loadavg_before'][0]:.2f})")
    dir = workdir / f"{n:02d}-{config}"
    dir.mkdir(parents=True)
    behind = config == "behind-balancer"
    inst = Instance("solo", n, app, procs.free_port(), dir, OVERHEAD_OPTIONS if behind else ())
    poller = None
    try:
        inst.start()
        inst.wait_ready()
        script = ""
        if behind:
            # A fixed value: wrk builds its request once (a per-request
            # Lua function would slow wrk itself down).
            script = f'wrk.headers["X-Request-Start"] = "t={int(time.time() * 1e6)}"\n'
            poller = Poller(inst.port)
            poller.start()
        wrk(inst.port, "/", warmup, CONNECTIONS, dir, script)
        t0 = procs.tree_cpu_ticks()
        rec["wrk"] = wrk(inst.port, "/", duration, CONNECTIONS, dir, script)
        ticks = procs.tree_cpu_ticks() - t0
        rec["cpu_us_per_req"] = ticks / procs.CLK_TCK * 1e6 / max(1, rec["wrk"]["requests"])
        if poller:
            rec["polls"] = {"ok": poller.ok, "failed": poller.failed}
        log(f"  {rec['wrk']['rps']:.0f} req/s, p99 {rec['wrk']['p99_us'] / 1000:.2f} ms, "
            f"{rec['cpu_us_per_req']:.1f} µs/req")
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {rec['error'][:2000]}")
    finally:
        if poller:
            poller.stopped.set()
            poller.join(10)
        if inst.proc:
            rec["needed_kill"] = procs.stop(inst.proc, 20, f"rustrack {config}")
    return rec


# -- main ------------------------------------------------------------------------------


def version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    out = ((r.stdout or "") + (r.stderr or "")).strip().splitlines()
    return out[0] if out else "?"


def migrate_req() -> str:
    """net.ipv4.tcp_migrate_req, with what it means for the upgrade."""
    try:
        v = MIGRATE_REQ.read_text().strip()
    except OSError:
        return "unknown (no /proc/sys/net/ipv4/tcp_migrate_req: Linux before 5.14?)"
    if v == "1":
        return "1 (connections queued in a closing listener move to the other --reuse-port listener)"
    return (f"{v}: connections still queued in the old listener when it closes are reset, so the "
            "upgrade in place can fail requests; `sysctl -w net.ipv4.tcp_migrate_req=1` (root) before running")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run-balancer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: balancer, overhead (default both)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of part balancer (default 3)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per balancer run (default 60)")
    ap.add_argument("--events", default=",".join(e.replace(" ", "-") for e in EVENTS),
                    help="the events of a disturbed run, in order (restart-a, upgrade-b); default: "
                         "restart-a,upgrade-b,restart-a,upgrade-b")
    ap.add_argument("--overhead-rounds", type=int, default=6, help="rounds of part overhead (default 6)")
    ap.add_argument("--overhead-duration", type=float, default=10.0, help="seconds per overhead run (default 10)")
    ap.add_argument("--install", action="store_true", help="apt-get install missing Debian packages")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/rustrack")
    ap.add_argument("--keep-workdir", action="store_true")
    ap.add_argument("--output", help="results file name without extension (default DATE-balancer)")
    args = ap.parse_args(argv)
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    if not parts or any(p not in PARTS for p in parts):
        ap.error(f"--only: choose from {', '.join(PARTS)}")
    events = [e.strip().replace("-", " ") for e in args.events.split(",") if e.strip()]
    if any(e not in ("restart a", "upgrade b") for e in events):
        ap.error("--events: restart-a or upgrade-b, comma-separated")

    if not prereqs.ready(PACKAGES, args.install, args.no_build, "bench/run-balancer"):
        return 1
    procs.become_subreaper()
    migrate = migrate_req()
    log(f"net.ipv4.tcp_migrate_req = {migrate}")

    workdir = Path(tempfile.mkdtemp(prefix="rtbench-balancer.", dir="/tmp"))
    app = workdir / APP
    shutil.copytree(FIXTURES / APP, app)
    now = dt.datetime.now()
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg_start": " ".join(f"{x:.2f}" for x in procs.loadavg()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--", "src", "ruby", "Cargo.toml", "Cargo.lock"],
                                     cwd=ROOT, capture_output=True, text=True).stdout.strip()),
        "haproxy": version([HAPROXY, "-v"]).split(" - ")[0], "wrk": version(["wrk", "-v"]).split(" [")[0],
        "ruby": version(["ruby", "-v"]).split(" (")[0], "tcp_migrate_req": migrate,
        "parts": parts, "rounds": args.rounds, "duration": args.duration, "events": events,
        "schedule": schedule(args.duration, events), "overhead_rounds": args.overhead_rounds,
        "overhead_duration": args.overhead_duration, "overhead_warmup": 2.0, "workdir": str(workdir),
    }
    runs: list[dict] = []
    n = 0
    try:
        if "balancer" in parts:
            for rnd, config in interleaved(args.rounds, CONFIGS):
                n += 1
                runs.append(run_balancer(config, rnd, workdir, app, args.duration, events, n))
        if "overhead" in parts:
            for rnd, config in interleaved(args.overhead_rounds, OVERHEAD_CONFIGS):
                n += 1
                runs.append(run_overhead(config, rnd, workdir, app, args.overhead_duration,
                                         meta["overhead_warmup"], n))
    except KeyboardInterrupt:
        procs.kill_tree()
        return 130
    finally:
        procs.kill_tree()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in procs.loadavg())
    s = summarize([r for r in runs if r["part"] == "balancer"]) if "balancer" in parts else None
    o = summarize_overhead([r for r in runs if r["part"] == "overhead"]) if "overhead" in parts else None
    md = markdown(meta, runs, s, o)
    name = args.output or now.strftime("%Y-%m-%d-%H%M") + "-balancer"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(md)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "summary": s, "overhead": o, "runs": runs},
                                                     indent=1))
    print(md)
    log(f"wrote {RESULTS / name}.md and .json")
    return 0
