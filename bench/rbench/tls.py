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

Static files over TLS (`--only static`): two more configurations, also
alone and interleaved (A B then B A), serving one shared copy of
fixtures/bench-static whose public/ holds the static scenario's two files
(scenarios.STATIC_FILES, written by scenarios.write_static_files: 10 KB and
1 MB):

- `rustrack static`: `rustrack start <copy> --ssl ...`, 2 workers standing
  by; the front end must answer every request from public/ (rustrack's
  `processed_total` before and after each file's measurements: the target
  is 0);
- `nginx static`: nginx serving the same public/ over TLS (HTTP/1.1 and h2
  by ALPN) with the same certificate, as servers/nginx.py does over plain
  HTTP (`sendfile on`, which OpenSSL without kTLS does not use: both
  servers read, encrypt and write every byte).

For each file: `wrk -t1 -c16` over HTTPS/1.1 keep-alive and `h2load -t1
-c4 -m10`, each after its own warm-up run (the CPU window covers the
measured run only).

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
from .scenarios import STATIC_FILES, write_static_files

CONFIGS = ["rustrack", "nginx -> rustrack", "nginx return 200"]
STATIC_CONFIGS = ["rustrack static", "nginx static"]
PARTS = {"app": CONFIGS, "static": STATIC_CONFIGS}
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


def nginx_conf(dir: Path, port: int, cert: Path, key: Path, upstream: int | None,
               root: Path | None = None) -> str:
    """nginx with as many worker processes as rustrack has event-loop
    threads (one per CPU), no access log, TLS 1.2 and 1.3, h2 by ALPN, no
    request limit per connection (as rustrack), and
    either a keep-alive proxy to 127.0.0.1:upstream, or the files under
    `root` with rustrack's lookup (as servers/nginx.py), or `return 200`."""
    user = ""
    if root is not None:
        # As servers/nginx.py: `user root` (the copy is under a 0700 temp
        # directory), the Debian MIME table, sendfile.
        user = "user root;\n"
        http_extra = ("include /etc/nginx/mime.types; default_type application/octet-stream; "
                      "sendfile on; tcp_nopush on;")
        location = f"root {root}; location / {{ try_files $uri $uri.html $uri/index.html =404; }}"
    elif upstream is None:
        location = 'location / { default_type text/plain; return 200 "Hello world\\n"; }'
        http_extra = ""
    else:
        http_extra = f"upstream app {{ server 127.0.0.1:{upstream}; keepalive 32; }}"
        location = ("location / { proxy_pass http://app; proxy_http_version 1.1; "
                    'proxy_set_header Connection ""; proxy_set_header Host $host; '
                    "proxy_set_header X-Forwarded-Proto https; }")
    temp = "\n".join(f"  {k}_temp_path {dir / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}worker_processes auto;
pid {dir / 'nginx.pid'};
error_log {dir / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  # Default 1000: nginx would end every keep-alive and HTTP/2 connection
  # after 1000 requests (h2load does not reconnect), where rustrack does not.
  keepalive_requests 1000000;
{temp}
  {http_extra}
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
    cipher = re.search(r"^Cipher: (\S+)", out, re.M)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+(\S+)", out, re.M)
    return {
        "seconds": seconds, "rps": float(m.group(3)), "succeeded": int(r.group(4)),
        "failed": int(r.group(5)), "errored": int(r.group(6)), "timeout": int(r.group(7)),
        "status_2xx": int(codes.group(1)) if codes else None,
        "status_3xx": int(codes.group(2)) if codes else None,
        "status_4xx": int(codes.group(3)) if codes else None,
        "status_5xx": int(codes.group(4)) if codes else None,
        "protocol": proto.group(1) if proto else None,
        "cipher": cipher.group(1) if cipher else None,
        "mean_request": mean.group(1) if mean else None,
    }


def h2load_errors(r: dict) -> int:
    """Failed, errored and timed-out requests plus non-2xx answers."""
    return (r["failed"] + r["errored"] + r["timeout"]
            + sum(r.get(f"status_{c}xx") or 0 for c in (3, 4, 5)))


def h2load(port: int, seconds: float, warmup: float, path: str = "/") -> dict:
    """`h2load -t1 -c4 -m10 -D seconds` on https://127.0.0.1:port/path,
    with h2load's own warm-up of `warmup` seconds when it is not 0."""
    argv = ["h2load", "-t1", "-c4", "-m10", "-D", str(max(1, round(seconds)))]
    if warmup:
        argv += ["--warm-up-time", str(max(1, round(warmup)))]
    argv.append(f"https://127.0.0.1:{port}{path}")
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


def https_get(port: int, path: str = "/") -> tuple[int, bytes] | None:
    """Status and body of GET path over HTTPS/1.1, or None."""
    import http.client
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=client_context())
        conn.request("GET", path)
        resp = conn.getresponse()
        out = resp.status, resp.read()
        conn.close()
        return out
    except (OSError, http.client.HTTPException):
        return None


def https_ok(port: int, path: str = "/") -> bool:
    r = https_get(port, path)
    return r is not None and r[0] == 200


# -- servers -------------------------------------------------------------------


class Setup:
    """One configuration's processes, started and stopped together."""

    def __init__(self, config: str, dir: Path, cert: Path, key: Path, static_app: Path | None = None):
        self.config, self.dir, self.cert, self.key = config, dir, cert, key
        # The copy of fixtures/bench-static the static configurations serve.
        self.static_app = static_app
        self.port = procs.free_port()
        self.procs: list[subprocess.Popen] = []
        self.reg = self.dir / "reg"

    def rustrack(self, port: int, tls: bool, app: Path = FIXTURES / "hello") -> subprocess.Popen:
        reg = self.reg
        reg.mkdir(exist_ok=True)
        argv = [str(RUSTRACK), "start", str(app), "--address", "127.0.0.1",
                "--port", str(port), "--min-instances", str(WORKERS), "--max-pool-size", str(WORKERS),
                "--environment", "production", "--log-level", "warn",
                "--instance-registry-dir", str(reg)]
        if tls:
            argv += ["--ssl", "--ssl-certificate", str(self.cert), "--ssl-certificate-key", str(self.key)]
        p = procs.spawn(argv, ROOT, dict(os.environ), self.dir / "rustrack.log")
        self.procs.append(p)
        self.wait_workers(reg, p)
        return p

    def status(self) -> dict | None:
        """`rustrack status --json` of this configuration's rustrack, if any."""
        dirs = sorted(self.reg.glob("rustrack.*"))
        if not dirs:
            return None
        r = subprocess.run([str(RUSTRACK), "status", "--instance", str(dirs[0]), "--json"],
                           capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def processed(self) -> int | None:
        """Requests rustrack's workers have processed (None: no rustrack)."""
        return (self.status() or {}).get("processed_total")

    def wait_workers(self, reg: Path, p: subprocess.Popen) -> None:
        def ready() -> bool:
            workers = (self.status() or {}).get("workers", [])
            return sum(1 for w in workers if w.get("state") == "ready") >= WORKERS

        if not procs.wait_for(ready, time.monotonic() + 120, lambda: self.alive(p)):
            raise RuntimeError(f"{self.config}: workers not ready in 120 s")

    def alive(self, p: subprocess.Popen) -> None:
        if p.poll() is not None:
            raise RuntimeError(f"{self.config}: {p.args[0]} exited ({p.returncode}); logs in {self.dir}")

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        static = self.config in STATIC_CONFIGS
        if self.config == "rustrack":
            self.rustrack(self.port, tls=True)
        elif self.config == "rustrack static":
            self.rustrack(self.port, tls=True, app=self.static_app)
        else:
            upstream = None
            if self.config == "nginx -> rustrack":
                upstream = procs.free_port()
                self.rustrack(upstream, tls=False)
            conf = self.dir / "nginx.conf"
            root = self.static_app / "public" if static else None
            conf.write_text(nginx_conf(self.dir, self.port, self.cert, self.key, upstream, root))
            p = procs.spawn(["nginx", "-c", str(conf), "-g", "daemon off;"], self.dir, dict(os.environ),
                            self.dir / "nginx.log")
            self.procs.append(p)
        # The static configurations are probed with a static file (nginx
        # has no GET /; rustrack's workers then see no request at all).
        probe = next(iter(STATIC_FILES)) if static else "/"
        deadline = time.monotonic() + 60
        if not procs.wait_for(lambda: https_ok(self.port, probe), deadline,
                              lambda: [self.alive(p) for p in self.procs]):
            raise RuntimeError(f"{self.config}: no HTTPS answer on {self.port} in 60 s")
        if static:  # both serve the very bytes on disk
            for path in STATIC_FILES:
                r = https_get(self.port, path)
                want = (self.static_app / "public" / path.lstrip("/")).read_bytes()
                if r is None or r[0] != 200 or r[1] != want:
                    raise RuntimeError(f"{self.config}: GET {path} did not answer the file")

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


def cpu_us_per(t0: int, t1: int, n: int) -> float:
    return (t1 - t0) / procs.CLK_TCK * 1e6 / max(1, n)


def measure_static(setup: Setup, duration: float, warmup: float) -> dict:
    """For each static file: HTTPS/1.1 (wrk) then HTTP/2 (h2load), each
    measured after a warm-up run of its own; and how many requests reached
    rustrack's workers from the first warm-up to the end (None for nginx)."""
    files: dict = {}
    for path, size in STATIC_FILES.items():
        out: dict = {"size": size}
        before = setup.processed()
        wrk(setup.port, path, warmup, 16, setup.dir, scheme="https")
        t0 = procs.tree_cpu_ticks()
        out["h1"] = wrk(setup.port, path, duration, 16, setup.dir, scheme="https")
        out["h1_cpu_us_per_req"] = cpu_us_per(t0, procs.tree_cpu_ticks(), out["h1"]["requests"])

        h2load(setup.port, warmup, 0, path)
        t0 = procs.tree_cpu_ticks()
        out["h2"] = h2load(setup.port, duration, 0, path)
        out["h2_cpu_us_per_req"] = cpu_us_per(t0, procs.tree_cpu_ticks(), out["h2"]["succeeded"])
        after = setup.processed()
        out["app_requests"] = after - before if before is not None and after is not None else None
        files[path] = out
    return {"files": files}


def run_one(config: str, rnd: int, workdir: Path, cert: Path, key: Path, duration: float,
            warmup: float, n: int, static_app: Path | None = None) -> dict:
    static = config in STATIC_CONFIGS
    rec = {"scenario": "tls-static" if static else "tls", "label": config, "round": rnd,
           "loadavg_before": procs.loadavg(), "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"tls: round {rnd + 1}, {config} (load {rec['loadavg_before'][0]:.2f})")
    setup = Setup(config, workdir / f"{n:02d}", cert, key, static_app)
    try:
        setup.start()
        rec.update((measure_static if static else measure)(setup, duration, warmup))
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


def summarize_static(runs: list) -> dict:
    """Means over the rounds of each static configuration, per file, and the
    rustrack ÷ nginx ratio of every round both completed (rounds are
    interleaved, so a round's two runs were minutes apart at most)."""
    s: dict = {}
    ok = {c: {r["round"]: r for r in runs if r["label"] == c and "error" not in r} for c in STATIC_CONFIGS}
    for config in STATIC_CONFIGS:
        recs = [r for r in runs if r["label"] == config]
        e = {"rounds": len(ok[config]), "failed": len(recs) - len(ok[config]),
             "loads": [r["loadavg_before"][0] for r in recs], "files": {}}
        for path in STATIC_FILES:
            fs = [r["files"][path] for r in ok[config].values()]
            if not fs:
                continue
            apps = [x["app_requests"] for x in fs]
            e["files"][path] = {
                "h1_rps": statistics.fmean(x["h1"]["rps"] for x in fs),
                "h1_p99_ms": statistics.fmean(x["h1"]["p99_us"] / 1000 for x in fs),
                "h1_errors": sum(x["h1"]["errors_total"] for x in fs),
                "h1_cpu_us_per_req": statistics.fmean(x["h1_cpu_us_per_req"] for x in fs),
                "h2_rps": statistics.fmean(x["h2"]["rps"] for x in fs),
                "h2_errors": sum(h2load_errors(x["h2"]) for x in fs),
                "h2_cpu_us_per_req": statistics.fmean(x["h2_cpu_us_per_req"] for x in fs),
                "h2_negotiated": sorted({f"{x['h2'].get('protocol')} {x['h2'].get('cipher')}" for x in fs}),
                "app_requests": None if None in apps else sum(apps),
            }
        s[config] = e
    rr, ng = (ok[c] for c in STATIC_CONFIGS)
    both = sorted(set(rr) & set(ng))
    s["round_ratios"] = {
        path: {proto: [_ratio(rr[n]["files"][path][proto]["rps"], ng[n]["files"][path][proto]["rps"])
                       for n in both] for proto in ("h1", "h2")}
        for path in STATIC_FILES
    }
    return s


def _ratio(a, b):
    return a / b if a is not None and b else None


def size_label(size: int) -> str:
    return f"{size // 2**20} MB" if size >= 2**20 else f"{size // 1024} KB"


def static_markdown(s: dict) -> list[str]:
    """The static-files section: one row per file and protocol."""
    def f(x, spec=".0f"):
        return "–" if x is None else format(x, spec)

    rr, ng = (s.get(c, {}) for c in STATIC_CONFIGS)
    lines = [
        "## Static files over TLS: rustrack --ssl against nginx, the same public/", "",
        "fixtures/bench-static's public/ (the static scenario's files), served by rustrack's front end "
        f"({WORKERS} workers standing by) and by nginx (`ssl http2`, sendfile on, no kTLS); "
        "HTTPS/1.1 keep-alive from wrk -t1 -c16, HTTP/2 from h2load -t1 -c4 -m10; "
        "CPU is every server process's, per request.", "",
        "| file | protocol | rustrack req/s | nginx req/s | rustrack ÷ nginx (target ≥ 0.8) | per round | met "
        "| rustrack CPU µs/req | nginx CPU µs/req | requests that reached a worker | errors (rustrack, nginx) |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for proto, name in (("h1", "HTTPS/1.1"), ("h2", "HTTP/2")):
        for path, size in STATIC_FILES.items():
            a, b = rr.get("files", {}).get(path, {}), ng.get("files", {}).get(path, {})
            x = _ratio(a.get(f"{proto}_rps"), b.get(f"{proto}_rps"))
            per_round = " / ".join(f(y, ".2f") for y in s.get("round_ratios", {}).get(path, {}).get(proto, []))
            met = "–" if x is None else ("yes" if x >= 0.8 else "**no**")
            lines.append(
                f"| {size_label(size)} | {name} | {f(a.get(f'{proto}_rps'))} | {f(b.get(f'{proto}_rps'))} "
                f"| {f(x, '.2f')} | {per_round} | {met} | {f(a.get(f'{proto}_cpu_us_per_req'))} "
                f"| {f(b.get(f'{proto}_cpu_us_per_req'))} | {f(a.get('app_requests'), 'd')} "
                f"| {a.get(f'{proto}_errors', '–')}, {b.get(f'{proto}_errors', '–')} |"
            )
    negotiated = sorted({n for e in (rr, ng) for v in e.get("files", {}).values() for n in v["h2_negotiated"]})
    lines += [
        "",
        f"Rounds completed (failed): rustrack static {rr.get('rounds', 0)} ({rr.get('failed', 0)}), "
        f"nginx static {ng.get('rounds', 0)} ({ng.get('failed', 0)}). "
        f"Load before each run: rustrack static {' / '.join(f'{x:.2f}' for x in rr.get('loads', []))}; "
        f"nginx static {' / '.join(f'{x:.2f}' for x in ng.get('loads', []))}. "
        f"h2load negotiated: {', '.join(negotiated) or '–'}.",
        "",
    ]
    return lines


def markdown(meta: dict, s: dict | None, static: dict | None = None) -> str:
    """The report: the app configurations' tables (s), then the static
    files' (static); either may be None when its part did not run."""
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
    ]
    if static is not None and s is None:
        return "\n".join(lines + static_markdown(static))
    lines += [
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
    if static is not None:
        lines += static_markdown(static)
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
    ap.add_argument("--only", default="app,static",
                    help="comma-separated parts: app (hello app: rustrack, nginx -> rustrack, nginx return 200), "
                         "static (static files: rustrack static, nginx static); default both")
    args = ap.parse_args(argv)
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in parts if x not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: unknown part(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PARTS)}")
    rounds = args.rounds or (1 if args.quick else 2)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0

    if not prereqs.ready(PACKAGES, args.install, args.no_build, "bench/run-tls"):
        return 1
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
        "parts": parts,
    }
    static_app = None
    if "static" in parts:  # one copy, served by both static configurations
        static_app = workdir / "bench-static"
        shutil.copytree(FIXTURES / "bench-static", static_app)
        write_static_files(static_app)
    runs = []
    n = 0
    try:
        for part in parts:
            for rnd in range(rounds):
                for config in PARTS[part] if rnd % 2 == 0 else list(reversed(PARTS[part])):
                    n += 1
                    runs.append(run_one(config, rnd, workdir, cert, key, duration, warmup, n, static_app))
    except KeyboardInterrupt:
        procs.kill_tree()
        return 130
    finally:
        procs.kill_tree()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in procs.loadavg())
    s = summarize(runs) if "app" in parts else None
    static = summarize_static(runs) if "static" in parts else None
    md = markdown(meta, s, static)
    name = args.output or now.strftime("%Y-%m-%d-%H%M") + ("-tls-quick" if args.quick else "-tls")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(md)
    data = {"meta": meta, "summary": s, "static_summary": static, "runs": runs}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1))
    print(md)
    log(f"wrote {RESULTS / name}.md and .json")
    return 0
