"""Load generation: wrk for throughput, Python clients for the rest.

`wrk` runs the real wrk (1 thread, N connections, fixed duration) with a
Lua `done` hook that prints one `BENCHJSON {...}` line: request count,
duration, bytes, latency percentiles in µs and the error counters, which
`parse_wrk` reads (wrk's own text summary is not parsed). Its PID is put in
procs.Clients for the run so it never counts as part of the server.

`fixed_requests` sends an exact number of GETs from Python threads (wrk
cannot stop after a count); `mix_requests` does the same over a page mix,
in steps with a pause for a memory reading after each. `SlowClients` keeps slow senders and slow
readers busy from an asyncio loop in a thread while wrk measures the fast
stream. `DelayServer` is the other end of fixtures/bench-io: a Unix socket
that answers each line it reads 20 ms later, from an asyncio loop in a
thread of the harness (so it is never counted as the server's).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from .procs import Clients

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%.1f,"p90_us":%.1f,' ..
    '"p99_us":%.1f,"max_us":%.1f,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_argv(port: int, path: str, seconds: float, connections: int, lua: Path, timeout_s: int,
             scheme: str = "http") -> list[str]:
    return [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        f"--timeout={timeout_s}s", "-s", str(lua), f"{scheme}://127.0.0.1:{port}{path}",
    ]


def wrk(port: int, path: str, seconds: float, connections: int, workdir: Path,
        script: str = "", timeout_s: int = 5, scheme: str = "http") -> dict:
    """One wrk run (1 thread); returns its numbers (latencies in µs).
    `scheme` "https" runs it over TLS (bench/run-tls)."""
    lua = workdir / f"wrk-{time.monotonic_ns()}.lua"
    lua.write_text(script + WRK_DONE)
    argv = wrk_argv(port, path, seconds, connections, lua, timeout_s, scheme)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    Clients.pids.add(p.pid)
    try:
        out, _ = p.communicate(timeout=seconds + 120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        Clients.pids.discard(p.pid)
    r = parse_wrk(out, p.returncode)
    r["argv"] = argv
    return r


def parse_wrk(out: str, returncode: int) -> dict:
    """The BENCHJSON line of wrk's output, plus rps (requests per second of
    wrk's own measured duration) and errors_total (all error counters,
    read errors included). Raises RuntimeError if wrk failed."""
    m = re.search(r"^BENCHJSON (.*)$", out, re.M)
    if returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({returncode}):\n{out}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    r["errors_total"] = sum(r["errors"].values())
    return r


def fixed_requests(port: int, path: str, total: int, connections: int) -> dict:
    """Exactly `total` GETs over `connections` keep-alive connections (one
    thread each; reconnecting when the server closes), for the memory
    scenario. wrk cannot stop after a count: its thread:stop() still waits
    out -d."""
    lock = threading.Lock()
    left = [total]
    statuses: dict[int, int] = {}
    errors = [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                conn.close()
        conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"requests": total, "seconds": time.monotonic() - t0, "statuses": statuses, "errors": errors[0]}


def mix_steps(total: int, steps: int) -> list[int]:
    """Cumulative request counts at which mix_requests pauses: `steps`
    about equal steps ending at total."""
    steps = max(1, min(steps, total)) if total > 0 else 0
    return [round(total * (i + 1) / steps) for i in range(steps)]


def mix_path(client: int, clients: int, i: int, paths: list[str]) -> str:
    """The i-th request of connection `client`: each walks the mix from its
    own offset, so the connections spread over the pages."""
    return paths[(i + client * len(paths) // max(1, clients)) % len(paths)]


def mix_requests(port: int, paths: list[str], total: int, connections: int,
                 steps: list[int] | None = None, on_step=None) -> dict:
    """Exactly `total` GETs over a page mix from `connections` keep-alive
    connections (one thread each; reconnecting when the server closes),
    connection c walking `paths` from its own offset (mix_path). The load
    runs in steps (cumulative counts, the last = total): after each, every
    connection waits while on_step(requests so far) runs with no request in
    flight. "seconds" and "rps" cover the requests only, not the pauses."""
    steps = steps or [total]
    lock = threading.Lock()
    budget = [0]
    statuses: dict[int, int] = {}
    errors = [0]
    start = threading.Barrier(connections + 1)
    end = threading.Barrier(connections + 1)

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i = 0
        try:
            for _ in steps:
                start.wait()
                while True:
                    with lock:
                        if budget[0] <= 0:
                            break
                        budget[0] -= 1
                    path = mix_path(c, connections, i, paths)
                    i += 1
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        resp.read()
                        with lock:
                            statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    except (OSError, http.client.HTTPException):
                        with lock:
                            errors[0] += 1
                        conn.close()
                end.wait()
        except threading.BrokenBarrierError:
            pass
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(connections)]
    for th in threads:
        th.start()
    done, seconds = 0, 0.0
    try:
        for target in steps:
            budget[0] = target - done
            t0 = time.monotonic()
            start.wait()
            end.wait()
            seconds += time.monotonic() - t0
            done = target
            if on_step:
                on_step(done)
    except BaseException:
        start.abort()
        end.abort()
        raise
    finally:
        for th in threads:
            th.join()
    return {"requests": total, "seconds": seconds, "rps": total / seconds if seconds else 0.0,
            "statuses": statuses, "errors": errors[0], "connections": connections}


class SlowClients:
    """Slow connections against one server, from an asyncio loop in a thread:
    `senders` connections trickle each request's bytes (8 bytes every 250 ms,
    about 3 s per request) and `readers` connections ask for GET /download
    (1 MB) with a 4 KiB receive buffer and read 4 KiB every 50 ms (about
    80 KB/s, 12 s per response). Each repeats on its connection (or a new one
    after an error) until stopped."""

    def __init__(self, port: int, senders: int, readers: int):
        self.port, self.senders, self.readers = port, senders, readers
        self.stats = {"connected": 0, "sender_responses": 0, "reader_responses": 0,
                      "reader_bytes": 0, "errors": 0, "statuses": {}}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.tasks: list[asyncio.Task] = []
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.tasks = [asyncio.create_task(self._sender(i)) for i in range(self.senders)]
        self.tasks += [asyncio.create_task(self._reader(i)) for i in range(self.readers)]
        self.ready.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connect(self, rcvbuf: int | None = None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await self.loop.sock_connect(sock, ("127.0.0.1", self.port))
        return await asyncio.open_connection(sock=sock, limit=1 << 20)

    async def _response(self, reader, chunk: int = 0, pause: float = 0.0) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        self.stats["statuses"][status] = self.stats["statuses"].get(status, 0) + 1
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if not m:
            raise ConnectionError("no content-length")
        left = int(m.group(1))
        while left > 0:
            data = await reader.read(min(left, chunk or left))
            if not data:
                raise ConnectionError("eof in body")
            left -= len(data)
            if chunk:
                self.stats["reader_bytes"] += len(data)
                await asyncio.sleep(pause)
        return status

    async def _sender(self, i: int) -> None:
        req = (f"GET /slow-sender/{i} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
               "User-Agent: rustrack-bench-slow-sender\r\nAccept: */*\r\n\r\n").encode()
        while True:
            writer = None
            try:
                reader, writer = await self._connect()
                self.stats["connected"] += 1
                while True:
                    for k in range(0, len(req), 8):
                        writer.write(req[k : k + 8])
                        await writer.drain()
                        await asyncio.sleep(0.25)
                    await self._response(reader)
                    self.stats["sender_responses"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["errors"] += 1
                await asyncio.sleep(0.2)
            finally:
                if writer:
                    writer.close()

    async def _reader(self, i: int) -> None:
        req = (f"GET /download HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
               "User-Agent: rustrack-bench-slow-reader\r\n\r\n").encode()
        while True:
            writer = None
            try:
                reader, writer = await self._connect(rcvbuf=4096)
                self.stats["connected"] += 1
                while True:
                    writer.write(req)
                    await writer.drain()
                    await self._response(reader, chunk=4096, pause=0.05)
                    self.stats["reader_responses"] += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["errors"] += 1
                await asyncio.sleep(0.2)
            finally:
                if writer:
                    writer.close()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)

    def stop(self) -> dict:
        def cancel():
            for t in self.tasks:
                t.cancel()

        self.loop.call_soon_threadsafe(cancel)
        self.thread.join(30)
        self.loop.close()
        return dict(self.stats)


class DelayServer:
    """A Unix socket at `path` that answers each line after `delay_s` (the
    I/O an app waits for: fixtures/bench-io). One asyncio loop in a thread;
    each connection's lines are answered in order, connections
    concurrently. `replies` counts the answers sent."""

    def __init__(self, path: Path, delay_s: float = 0.020):
        self.path = Path(path)
        self.delay_s = delay_s
        self.replies = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                await asyncio.sleep(self.delay_s)
                writer.write(line)
                await writer.drain()
                self.replies += 1
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_unix_server(self._handle, path=str(self.path)))
        self._ready.set()
        loop.run_forever()
        self._server.close()
        loop.run_until_complete(self._server.wait_closed())
        loop.close()

    def start(self) -> "DelayServer":
        self._thread = threading.Thread(target=self._run, name="delay-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the delay server did not listen on {self.path}")
        return self

    def stop(self) -> int:
        """Stops serving; returns how many replies were sent."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.path.unlink(missing_ok=True)
        return self.replies
