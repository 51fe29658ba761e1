"""load: reading wrk's BENCHJSON line, and the delay server of the threads scenario."""

from __future__ import annotations

import http.server
import threading
import unittest
from pathlib import Path

from rbench import load

OUT = """Running 3s test @ http://127.0.0.1:4000/
  1 threads and 16 connections
  Latency Distribution
     50%    1.15ms
BENCHJSON {"requests":30000,"duration_us":3000000,"bytes":1000,"p50_us":1148.0,"p90_us":1557.0,"p99_us":2546.0,"max_us":7030.0,"mean_us":1199.0,"errors":{"connect":1,"read":20,"write":0,"status":3,"timeout":0}}
"""


class ParseWrk(unittest.TestCase):
    def test_parse(self):
        r = load.parse_wrk(OUT, 0)
        self.assertEqual(r["requests"], 30000)
        self.assertEqual(r["rps"], 10000.0)
        self.assertEqual(r["p99_us"], 2546.0)
        self.assertEqual(r["errors"]["read"], 20)
        self.assertEqual(r["errors_total"], 24)  # read errors included; the report takes them apart

    def test_zero_duration(self):
        out = OUT.replace('"duration_us":3000000', '"duration_us":0')
        self.assertEqual(load.parse_wrk(out, 0)["rps"], 0.0)

    def test_failure(self):
        with self.assertRaisesRegex(RuntimeError, r"wrk failed \(1\)"):
            load.parse_wrk(OUT, 1)
        with self.assertRaisesRegex(RuntimeError, r"wrk failed \(0\)"):
            load.parse_wrk("unable to connect to 127.0.0.1:4000\n", 0)

    def test_argv(self):
        argv = load.wrk_argv(4000, "/upload", 0.4, 16, Path("/tmp/x.lua"), 5)
        self.assertEqual(argv, ["wrk", "-t1", "-c16", "-d1s", "--latency", "--timeout=5s",
                                "-s", "/tmp/x.lua", "http://127.0.0.1:4000/upload"])
        self.assertIn("-d10s", load.wrk_argv(4000, "/", 10.0, 16, Path("x"), 5))

    def test_done_hook_prints_benchjson(self):
        self.assertIn("BENCHJSON", load.WRK_DONE)
        self.assertIn("done = function(summary, latency, requests)", load.WRK_DONE)


class Mix(unittest.TestCase):
    def test_steps(self):
        self.assertEqual(load.mix_steps(2000, 4), [500, 1000, 1500, 2000])
        self.assertEqual(load.mix_steps(10, 3), [3, 7, 10])
        self.assertEqual(load.mix_steps(2, 5), [1, 2])
        self.assertEqual(load.mix_steps(0, 4), [])

    def test_paths_from_each_connections_offset(self):
        pages = [f"/{i}" for i in range(83)]
        self.assertEqual([load.mix_path(c, 8, 0, pages) for c in range(3)], ["/0", "/10", "/20"])
        self.assertEqual(load.mix_path(7, 8, 11, pages), "/0")
        self.assertEqual(sorted(load.mix_path(3, 8, i, pages) for i in range(83)), sorted(pages))

    def test_requests_in_steps_against_a_local_server(self):
        seen: list[str] = []
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with lock:
                    seen.append(self.path)
                self.send_response(404 if self.path == "/missing" else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            paused_at = []

            def on_step(done):
                with lock:
                    paused_at.append((done, len(seen)))

            r = load.mix_requests(server.server_address[1], ["/a", "/b", "/missing"], 30, 4, [10, 20, 30], on_step)
        finally:
            server.shutdown()
            server.server_close()
        # No request in flight at a pause: exactly the step's count was served.
        self.assertEqual(paused_at, [(10, 10), (20, 20), (30, 30)])
        self.assertEqual(r["requests"], 30)
        self.assertEqual(r["errors"], 0)
        self.assertEqual(sum(r["statuses"].values()), 30)
        self.assertEqual(set(seen), {"/a", "/b", "/missing"})
        self.assertGreater(r["rps"], 0)

    def test_a_failing_step_stops_the_clients(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def on_step(done):
            raise RuntimeError("memory reading failed")

        try:
            with self.assertRaisesRegex(RuntimeError, "memory reading failed"):
                load.mix_requests(server.server_address[1], ["/"], 20, 3, [10, 20], on_step)
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    unittest.main()


class Delay(unittest.TestCase):
    def test_each_line_comes_back_after_the_delay_on_its_connection(self):
        import socket
        import tempfile
        import time

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "io.sock"
            server = load.DelayServer(path, delay_s=0.05).start()
            try:
                a, b = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
                a.connect(str(path))
                b.connect(str(path))
                t0 = time.monotonic()
                a.sendall(b"one\n")
                b.sendall(b"two\n")
                self.assertEqual(a.makefile("rb").readline(), b"one\n")
                self.assertEqual(b.makefile("rb").readline(), b"two\n")
                # Not before the delay; the two connections waited together.
                self.assertGreaterEqual(time.monotonic() - t0, 0.05)
                a.close()
                b.close()
            finally:
                replies = server.stop()
            self.assertEqual(replies, 2)
            self.assertFalse(path.exists())
