"""TLS and HTTP/2: rustrack's own TLS against nginx from Debian
(bench/run-tls; see "TLS and HTTP/2" in bench/README.md).

Three configurations, each started alone on 127.0.0.1 with the same
certificate (EC P-256, made with `openssl req` at the start of the run) and
stopped by PID before the next, in rounds A B C then C B A:

- `rustrack`: `rustrack start fixtures/hello --ssl ...`, HTTPS (HTTP/1.1 and
  h2 by ALPN) on one port, 2 workers;
- `nginx -> rustrack`: nginx terminates TLS (`listen ... ssl http2`) and
  proxies over plain HTTP/1.1 keep-alive to a rustrack serving the same app
  with the same 2 workers: the deployment `--ssl` replaces;
- `nginx return 200`: nginx answers `Hello world` itself: what TLS and HTTP
  cost with no app behind them (static files are not in rustrack yet, so
  there is no like-for-like no-app pair).

Every configuration runs the same three measurements:

- handshakes/s: `HANDSHAKE_THREADS` Python threads (OpenSSL through the ssl
  module, which releases the GIL while it works) connect, complete a full
  TLS 1.3 handshake (no session resumption) and close, in a loop;
- HTTPS/1.1 keep-alive: `wrk -t1 -c16` on https://…/ (the hello response);
- HTTP/2: `h2load -t1 -c4 -m10` for the same duration (4 connections, 10
  concurrent streams each).

CPU per request is `utime + stime` of every server process (nginx's
master and workers, rustrack's front end, preloader and workers) over the
measurement, divided by the requests. The load generators share the 2 cores
with the servers, as in the other scenarios; read the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import ssl
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

CONFIGS = ["rustrack", "nginx -> rustrack", "nginx return 200"]
PACKAGES = ("ruby-rack", "nginx", "wrk", "nghttp2-client", "openssl")
HANDSHAKE_THREADS = 4
WORKERS = 2


# -- certificates and nginx ----------------------------------------------------


def make_cert(dir: Path) -> tuple[Path, Path]:
    cert, key = dir / "server.crt", dir / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def nginx_conf(dir: Path, port: int, cert: Path, key: Path, upstream: int | None) -> str:
    """nginx with as many worker processes as rustrack has event-loop
    threads (one per CPU), no access log, TLS 1.2 and 1.3, h2 by ALPN, no
    request limit per connection (as rustrack), and
    either a keep-alive proxy to 127.0.0.1:upstream or `return 200`."""
    if upstream is None:
        location = 'location / { default_type text/plain; return 200 "Hello world\\n"; }'
        upstream_block = ""
    else:
        upstream_block = f"upstream app {{ server 127.0.0.1:{upstream}; keepalive 32; }}"
        location = ("location / { proxy_pass http://app; proxy_http_version 1.1; "
                    'proxy_set_header Connection ""; proxy_set_header Host $host; '
                    "proxy_set_header X-Forwarded-Proto https; }")
    temp = "\n".join(f"  {k}_temp_path {dir / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes auto;
pid {dir / 'nginx.pid'};
error_log {dir / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  # Default 1000: nginx would end every keep-alive and HTTP/2 connection
  # after 1000 requests (h2load does not reconnect), where rustrack does not.
  keepalive_requests 1000000;
{temp}
  {upstream_block}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    {location}
  }}
}}
"""


# -- load ----------------------------------------------------------------------


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def handshakes(port: int, seconds: float, threads: int = HANDSHAKE_THREADS) -> dict:
    """Full TLS handshakes per second from `threads` threads (connect,
    handshake, close; a new SSLSocket each time, so no resumption)."""
    ctx = client_context()
    counts = [0] * threads
    errors = [0] * threads
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    with ctx.wrap_socket(s, server_hostname="localhost"):
                        counts[i] += 1
            except OSError:
                errors[i] += 1

    t0 = time.monotonic()
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    return {"handshakes": sum(counts), "errors": sum(errors), "seconds": elapsed,
            "per_s": sum(counts) / elapsed, "threads": threads}


def parse_h2load(out: str) -> dict:
    """h2load's summary: succeeded requests, req/s over its measured time,
    failures, status classes, and the negotiated protocol."""
    m = re.search(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", out, re.M)
    r = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out, re.M)
    if not m or not r:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    proto = re.search(r"^Application protocol: (\S+)", out, re.M)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+(\S+)", out, re.M)
    return {
        "seconds": seconds, "rps": float(m.group(3)), "succeeded": int(r.group(4)),
        "failed": int(r.group(5)), "errored": int(r.group(6)), "timeout": int(r.group(7)),
        "status_2xx": int(codes.group(1)) if codes else None,
        "status_5xx": int(codes.group(4)) if codes else None,
        "protocol": proto.group(1) if proto else None,
        "mean_request": mean.group(1) if mean else None,
    }


def h2load(port: int, seconds: float, warmup: float) -> dict:
    argv = ["h2load", "-t1", "-c4", "-m10", "-D", str(max(1, round(seconds))),
            "--warm-up-time", str(max(1, round(warmup))), f"https://127.0.0.1:{port}/"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.Clients.pids.add(p.pid)
    try:
        out, _ = p.communicate(timeout=seconds + warmup + 120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        procs.Clients.pids.discard(p.pid)
    if p.returncode != 0:
        raise RuntimeError(f"h2load failed ({p.returncode}):\n{out}")
    r = parse_h2load(out)
    r["argv"] = argv
    return r


def https_ok(port: int) -> bool:
    import http.client
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=client_context())
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


# -- servers -------------------------------------------------------------------


class Setup:
    """One configuration's processes, started and stopped together."""

    def __init__(self, config: str, dir: Path, cert: Path, key: Path):
        self.config, self.dir, self.cert, self.key = config, dir, cert, key
        self.port = procs.free_port()
        self.procs: list[subprocess.Popen] = []

    def rustrack(self, port: int, tls: bool) -> subprocess.Popen:
        reg = self.dir / "reg"
        reg.mkdir(exist_ok=True)
        argv = [str(RUSTRACK), "start", str(FIXTURES / "hello"), "--address", "127.0.0.1",
                "--port", str(port), "--min-instances", str(WORKERS), "--max-pool-size", str(WORKERS),
                "--environment", "production", "--log-level", "warn",
                "--instance-registry-dir", str(reg)]
        if tls:
            argv += ["--ssl", "--ssl-certificate", str(self.cert), "--ssl-certificate-key", str(self.key)]
        p = procs.spawn(argv, ROOT, dict(os.environ), self.dir / "rustrack.log")
        self.procs.append(p)
        self.wait_workers(reg, p)
        return p

    def wait_workers(self, reg: Path, p: subprocess.Popen) -> None:
        def ready() -> bool:
            dirs = sorted(reg.glob("rustrack.*"))
            if not dirs:
                return False
            r = subprocess.run([str(RUSTRACK), "status", "--instance", str(dirs[0]), "--json"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                return False
            workers = json.loads(r.stdout).get("workers", [])
            return sum(1 for w in workers if w.get("state") == "ready") >= WORKERS

        if not procs.wait_for(ready, time.monotonic() + 120, lambda: self.alive(p)):
            raise RuntimeError(f"{self.config}: workers not ready in 120 s")

    def alive(self, p: subprocess.Popen) -> None:
        if p.poll() is not None:
            raise RuntimeError(f"{self.config}: {p.args[0]} exited ({p.returncode}); logs in {self.dir}")

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.config == "rustrack":
            self.rustrack(self.port, tls=True)
        else:
            upstream = None
            if self.config == "nginx -> rustrack":
                upstream = procs.free_port()
                self.rustrack(upstream, tls=False)
            conf = self.dir / "nginx.conf"
            conf.write_text(nginx_conf(self.dir, self.port, self.cert, self.key, upstream))
            p = procs.spawn(["nginx", "-c", str(conf), "-g", "daemon off;"], self.dir, dict(os.environ),
                            self.dir / "nginx.log")
            self.procs.append(p)
        deadline = time.monotonic() + 60
        if not procs.wait_for(lambda: https_ok(self.port), deadline, lambda: [self.alive(p) for p in self.procs]):
            raise RuntimeError(f"{self.config}: no HTTPS answer on {self.port} in 60 s")

    def stop(self) -> bool:
        """TERM the front processes (nginx first), then wait for the whole
        tree; KILL what is left after 20 s."""
        for p in reversed(self.procs[1:]):
            if p.poll() is None:
                p.terminate()
        return procs.stop(self.procs[0], 20, self.config) if self.procs else False


# -- a run ---------------------------------------------------------------------


def measure(setup: Setup, duration: float, warmup: float) -> dict:
    out: dict = {}
    handshakes(setup.port, warmup)
    t0 = procs.tree_cpu_ticks()
    out["handshakes"] = handshakes(setup.port, duration)
    t1 = procs.tree_cpu_ticks()
    out["handshake_cpu_us"] = (t1 - t0) / procs.CLK_TCK * 1e6 / max(1, out["handshakes"]["handshakes"])

    wrk(setup.port, "/", warmup, 16, setup.dir, scheme="https")
    t0 = procs.tree_cpu_ticks()
    out["h1"] = wrk(setup.port, "/", duration, 16, setup.dir, scheme="https")
    t1 = procs.tree_cpu_ticks()
    out["h1_cpu_us_per_req"] = (t1 - t0) / procs.CLK_TCK * 1e6 / max(1, out["h1"]["requests"])

    t0 = procs.tree_cpu_ticks()
    out["h2"] = h2load(setup.port, duration, warmup)
    t1 = procs.tree_cpu_ticks()
    # h2load's warm-up runs inside this window too: a rough figure.
    out["h2_cpu_us_per_req"] = (t1 - t0) / procs.CLK_TCK * 1e6 / max(1, out["h2"]["succeeded"])
    return out


def run_one(config: str, rnd: int, workdir: Path, cert: Path, key: Path, duration: float,
            warmup: float, n: int) -> dict:
    rec = {"scenario": "tls", "label": config, "round": rnd, "loadavg_before": procs.loadavg(),
           "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"tls: round {rnd + 1}, {config} (load {rec['loadavg_before'][0]:.2f})")
    setup = Setup(config, workdir / f"{n:02d}", cert, key)
    try:
        setup.start()
        rec.update(measure(setup, duration, warmup))
    except Exception as e:  # recorded; the run goes on
        rec["error"] = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {rec['error'][:2000]}")
    finally:
        rec["needed_kill"] = setup.stop()
    return rec


def summarize(runs: list) -> dict:
    s: dict = {}
    for config in CONFIGS:
        ok = [r for r in runs if r["label"] == config and "error" not in r]
        if not ok:
            s[config] = {"rounds": 0, "failed": sum(1 for r in runs if r["label"] == config)}
            continue

        def mean(f):
            return statistics.fmean(f(r) for r in ok)

        s[config] = {
            "rounds": len(ok),
            "failed": sum(1 for r in runs if r["label"] == config and "error" in r),
            "handshakes_per_s": mean(lambda r: r["handshakes"]["per_s"]),
            "handshake_errors": sum(r["handshakes"]["errors"] for r in ok),
            "handshake_cpu_us": mean(lambda r: r["handshake_cpu_us"]),
            "h1_rps": mean(lambda r: r["h1"]["rps"]),
            "h1_p99_ms": mean(lambda r: r["h1"]["p99_us"] / 1000),
            "h1_errors": sum(r["h1"]["errors_total"] for r in ok),
            "h1_cpu_us_per_req": mean(lambda r: r["h1_cpu_us_per_req"]),
            "h2_rps": mean(lambda r: r["h2"]["rps"]),
            "h2_failed": sum(r["h2"]["failed"] for r in ok),
            "h2_cpu_us_per_req": mean(lambda r: r["h2_cpu_us_per_req"]),
            "loads": [r["loadavg_before"][0] for r in runs if r["label"] == config],
        }
    return s


def _ratio(a, b):
    return a / b if a is not None and b else None


def markdown(meta: dict, s: dict) -> str:
    def f(x, spec=".0f"):
        return "–" if x is None else format(x, spec)

    lines = [
        f"# TLS and HTTP/2: rustrack vs nginx ({meta['date']})", "",
        f"- machine: {meta['cpus']} CPUs; load average before {meta['loadavg_start']}, after {meta['loadavg_end']}",
        f"- rustrack {meta['commit']} (release build), {meta['nginx']}, {meta['openssl']}, {meta['h2load']}",
        f"- {meta['rounds']} round(s), configurations interleaved; {meta['duration']:.0f} s measurements after "
        f"{meta['warmup']:.0f} s warm-ups; certificate EC P-256; {WORKERS} workers; "
        f"handshakes from {HANDSHAKE_THREADS} Python ssl threads, HTTP/1.1 from wrk -t1 -c16, "
        f"HTTP/2 from h2load -t1 -c4 -m10",
        "",
        "| configuration | handshakes/s | server CPU µs/handshake | HTTPS/1.1 keep-alive req/s | p99 ms "
        "| µs/req | HTTP/2 req/s | µs/req | errors (hs, h1, h2) | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for config in CONFIGS:
        e = s.get(config, {})
        if not e.get("rounds"):
            lines.append(f"| {config} | failed | | | | | | | | |")
            continue
        lines.append(
            f"| {config} | {f(e['handshakes_per_s'])} | {f(e['handshake_cpu_us'])} | {f(e['h1_rps'])} "
            f"| {f(e['h1_p99_ms'], '.2f')} | {f(e['h1_cpu_us_per_req'])} | {f(e['h2_rps'])} "
            f"| {f(e['h2_cpu_us_per_req'])} | {e['handshake_errors']}, {e['h1_errors']}, {e['h2_failed']} "
            f"| {' / '.join(f'{x:.2f}' for x in e['loads'])} |"
        )
    rr, proxy, ret = (s.get(c, {}) for c in CONFIGS)
    lines += [
        "",
        "| ratio (target ≥ 0.8) | measured | met |",
        "|---|---:|---|",
    ]
    for what, a, b in [
        ("handshakes/s: rustrack ÷ nginx", rr.get("handshakes_per_s"), ret.get("handshakes_per_s")),
        ("HTTPS/1.1 req/s: rustrack ÷ nginx -> rustrack", rr.get("h1_rps"), proxy.get("h1_rps")),
        ("HTTP/2 req/s: rustrack ÷ nginx -> rustrack", rr.get("h2_rps"), proxy.get("h2_rps")),
    ]:
        x = _ratio(a, b)
        lines.append(f"| {what} | {f(x, '.2f')} | {'–' if x is None else ('yes' if x >= 0.8 else '**no**')} |")
    lines += [
        "",
        "For reference (no app behind nginx, so not a target): rustrack ÷ nginx return 200 is "
        f"{f(_ratio(rr.get('h1_rps'), ret.get('h1_rps')), '.2f')} over HTTPS/1.1 and "
        f"{f(_ratio(rr.get('h2_rps'), ret.get('h2_rps')), '.2f')} over HTTP/2.",
        "",
    ]
    return "\n".join(lines)


def version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run-tls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s measurements, 1 round")
    ap.add_argument("--rounds", type=int, help="rounds (default 2, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per measurement (default 10, quick 3)")
    ap.add_argument("--install", action="store_true", help="apt-get install missing Debian packages")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/rustrack")
    ap.add_argument("--keep-workdir", action="store_true")
    ap.add_argument("--output", help="results file name without extension")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0

    missing = [p for p in PACKAGES if not prereqs.is_installed(p)]
    if missing and args.install:
        prereqs.install(missing)
    elif missing:
        log(f"missing Debian packages: {' '.join(missing)} (apt-get install them, or bench/run-tls --install)")
        return 1
    if not args.no_build:
        prereqs.build()
    procs.become_subreaper()

    workdir = Path(tempfile.mkdtemp(prefix="rtbench-tls.", dir="/tmp"))
    cert, key = make_cert(workdir)
    now = dt.datetime.now()
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in procs.loadavg()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "nginx": version(["nginx", "-v"]), "openssl": version(["openssl", "version"]),
        "h2load": version(["h2load", "--version"]), "rounds": rounds, "duration": duration, "warmup": warmup,
    }
    runs = []
    n = 0
    try:
        for rnd in range(rounds):
            for config in CONFIGS if rnd % 2 == 0 else list(reversed(CONFIGS)):
                n += 1
                runs.append(run_one(config, rnd, workdir, cert, key, duration, warmup, n))
    except KeyboardInterrupt:
        procs.kill_tree()
        return 130
    finally:
        procs.kill_tree()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in procs.loadavg())
    s = summarize(runs)
    md = markdown(meta, s)
    name = args.output or now.strftime("%Y-%m-%d-%H%M") + ("-tls-quick" if args.quick else "-tls")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(md)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "summary": s, "runs": runs}, indent=1))
    print(md)
    log(f"wrote {RESULTS / name}.md and .json")
    return 0
