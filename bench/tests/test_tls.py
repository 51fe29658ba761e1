"""rbench.tls: parsing h2load, the nginx configuration, and the summary and
table from recorded runs (no server started)."""

from __future__ import annotations

import unittest
from pathlib import Path

from rbench import tls

H2LOAD = """starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 1s of warm-up time and 3s of main duration for measurements.
Warm-up started for thread #0.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 3.00s, 8123.33 req/s, 411.03KB/s
requests: 24370 total, 24410 started, 24370 done, 24370 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 24370 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 1.20MB (1262696) total, 452.15KB (463006) headers (space savings 81.72%), 285.59KB (292440) data
                     min         max         mean         sd        +/- sd
time for request:      345us     25.91ms      4.87ms      2.21ms    71.40%
"""


def run(label: str, rnd: int, hs: float, h1: float, h2: float, error: str | None = None) -> dict:
    r = {"scenario": "tls", "label": label, "round": rnd, "loadavg_before": [1.0, 1.0, 1.0]}
    if error:
        r["error"] = error
        return r
    r.update({
        "handshakes": {"per_s": hs, "errors": 0, "handshakes": int(hs * 10)},
        "handshake_cpu_us": 500.0,
        "h1": {"rps": h1, "p99_us": 4000.0, "errors_total": 0, "requests": int(h1 * 10)},
        "h1_cpu_us_per_req": 80.0,
        "h2": {"rps": h2, "failed": 0, "succeeded": int(h2 * 10)},
        "h2_cpu_us_per_req": 90.0,
    })
    return r


SMALL, LARGE = tls.STATIC_FILES  # 10 KB, 1 MB


def static_run(label: str, rnd: int, rps: dict, app_requests: int | None = 0, error: str | None = None) -> dict:
    """A static record; rps: path -> (HTTPS/1.1 req/s, HTTP/2 req/s)."""
    r = {"scenario": "tls-static", "label": label, "round": rnd, "loadavg_before": [2.0, 2.0, 2.0]}
    if error:
        r["error"] = error
        return r
    r["files"] = {
        path: {
            "size": tls.STATIC_FILES[path],
            "h1": {"rps": h1, "p99_us": 2000.0, "errors_total": 0, "requests": int(h1 * 10)},
            "h1_cpu_us_per_req": 20.0,
            "h2": {"rps": h2, "failed": 0, "errored": 0, "timeout": 0, "status_3xx": 0, "status_4xx": 1,
                   "status_5xx": 0, "succeeded": int(h2 * 10), "protocol": "h2", "cipher": "TLS_AES_128_GCM_SHA256"},
            "h2_cpu_us_per_req": 30.0,
            "app_requests": app_requests,
        }
        for path, (h1, h2) in rps.items()
    }
    return r


class TlsTest(unittest.TestCase):
    def test_h2load_summary(self):
        r = tls.parse_h2load(H2LOAD)
        self.assertEqual(r["succeeded"], 24370)
        self.assertAlmostEqual(r["rps"], 8123.33)
        self.assertEqual(r["seconds"], 3.0)
        self.assertEqual(r["protocol"], "h2")
        self.assertEqual(r["status_2xx"], 24370)
        self.assertEqual(r["failed"], 0)
        self.assertEqual(r["cipher"], "TLS_AES_256_GCM_SHA384")
        self.assertEqual((r["status_3xx"], r["status_4xx"], r["status_5xx"]), (0, 0, 0))
        self.assertEqual(tls.h2load_errors(r), 0)
        bad = tls.parse_h2load(H2LOAD.replace("0 failed, 0 errored, 0 timeout", "2 failed, 1 errored, 0 timeout")
                               .replace("0 3xx, 0 4xx, 0 5xx", "0 3xx, 5 4xx, 1 5xx"))
        self.assertEqual(tls.h2load_errors(bad), 9)
        self.assertEqual(tls.parse_h2load(H2LOAD.replace("3.00s,", "950.12ms,"))["seconds"], 0.95012)
        with self.assertRaises(RuntimeError):
            tls.parse_h2load("connect: Connection refused\n")

    def test_nginx_conf(self):
        d = Path("/tmp/x")
        proxy = tls.nginx_conf(d, 8443, d / "c.pem", d / "k.pem", 9000)
        self.assertIn("listen 127.0.0.1:8443 ssl http2;", proxy)
        self.assertIn("server 127.0.0.1:9000; keepalive 32;", proxy)
        self.assertIn("proxy_http_version 1.1;", proxy)
        self.assertIn("access_log off;", proxy)
        self.assertIn("keepalive_requests 1000000;", proxy)
        ret = tls.nginx_conf(d, 8443, d / "c.pem", d / "k.pem", None)
        self.assertIn('return 200 "Hello world\\n";', ret)
        self.assertNotIn("upstream", ret)
        self.assertNotIn("user root", ret)
        static = tls.nginx_conf(d, 8443, d / "c.pem", d / "k.pem", None, root=d / "app/public")
        self.assertTrue(static.startswith("user root;\n"))
        self.assertIn("listen 127.0.0.1:8443 ssl http2;", static)
        self.assertIn("ssl_certificate /tmp/x/c.pem;", static)
        self.assertIn("root /tmp/x/app/public;", static)
        self.assertIn("try_files $uri $uri.html $uri/index.html =404;", static)
        self.assertIn("include /etc/nginx/mime.types;", static)
        self.assertIn("keepalive_requests 1000000;", static)
        self.assertNotIn("return 200", static)
        self.assertNotIn("proxy_pass", static)

    def test_static_files_are_the_static_scenarios(self):
        self.assertEqual([tls.size_label(n) for n in tls.STATIC_FILES.values()], ["10 KB", "1 MB"])

    def test_static_summary_and_table(self):
        runs = [
            static_run("rustrack static", 0, {SMALL: (9000, 8000), LARGE: (450, 400)}),
            static_run("nginx static", 0, {SMALL: (10000, 10000), LARGE: (500, 400)}),
            # Round 1: nginx failed, so no ratio for that round.
            static_run("nginx static", 1, {}, error="RuntimeError: boom"),
            static_run("rustrack static", 1, {SMALL: (7000, 6000), LARGE: (350, 300)}),
            static_run("rustrack static", 2, {SMALL: (8000, 7000), LARGE: (400, 350)}, app_requests=2),
            static_run("nginx static", 2, {SMALL: (8000, 10000), LARGE: (400, 500)}, app_requests=None),
        ]
        s = tls.summarize_static(runs)
        rr, ng = s["rustrack static"], s["nginx static"]
        self.assertEqual((rr["rounds"], rr["failed"], ng["rounds"], ng["failed"]), (3, 0, 2, 1))
        self.assertEqual(rr["files"][SMALL]["h1_rps"], 8000)
        self.assertEqual(rr["files"][SMALL]["app_requests"], 2)
        self.assertIsNone(ng["files"][SMALL]["app_requests"])
        self.assertEqual(ng["files"][SMALL]["h2_errors"], 2)  # one 4xx per round
        self.assertEqual(ng["files"][LARGE]["h2_negotiated"], ["h2 TLS_AES_128_GCM_SHA256"])
        self.assertEqual(s["round_ratios"][SMALL]["h1"], [0.9, 1.0])
        self.assertEqual(s["round_ratios"][LARGE]["h2"], [1.0, 0.7])

        md = tls.markdown({"date": "d", "cpus": 2, "loadavg_start": "1", "loadavg_end": "1", "commit": "abc",
                           "nginx": "nginx/1.22.1", "openssl": "OpenSSL 3", "h2load": "h2load", "rounds": 3,
                           "duration": 10.0, "warmup": 2.0}, None, s)
        self.assertNotIn("handshakes/s", md)  # the app part did not run
        self.assertIn("| 10 KB | HTTPS/1.1 | 8000 | 9000 | 0.89 | 0.90 / 1.00 | yes | 20 | 20 | 2 | 0, 0 |", md)
        self.assertIn("| 1 MB | HTTP/2 | 350 | 450 | 0.78 | 1.00 / 0.70 | **no** | 30 | 30 | 2 | 3, 2 |", md)
        self.assertIn("rustrack static 3 (0), nginx static 2 (1)", md)
        self.assertIn("h2load negotiated: h2 TLS_AES_128_GCM_SHA256.", md)

    def test_summary_and_ratios(self):
        runs = [
            run("rustrack", 0, 900, 8000, 9000), run("nginx -> rustrack", 0, 1000, 7000, 6000),
            run("nginx return 200", 0, 1000, 30000, 40000), run("nginx return 200", 1, 1000, 30000, 40000),
            run("nginx -> rustrack", 1, 0, 0, 0, error="RuntimeError: boom"),
            run("rustrack", 1, 700, 6000, 7000),
        ]
        s = tls.summarize(runs)
        self.assertEqual(s["rustrack"]["rounds"], 2)
        self.assertEqual(s["rustrack"]["handshakes_per_s"], 800)
        self.assertEqual(s["nginx -> rustrack"]["failed"], 1)
        md = tls.markdown({"date": "d", "cpus": 2, "loadavg_start": "1", "loadavg_end": "1", "commit": "abc",
                           "nginx": "nginx/1.22.1", "openssl": "OpenSSL 3", "h2load": "h2load", "rounds": 2,
                           "duration": 10.0, "warmup": 2.0}, s)
        self.assertIn("| handshakes/s: rustrack ÷ nginx | 0.80 | yes |", md)
        self.assertIn("| HTTPS/1.1 req/s: rustrack ÷ nginx -> rustrack | 1.00 | yes |", md)
        self.assertIn("| HTTP/2 req/s: rustrack ÷ nginx -> rustrack | 1.33 | yes |", md)
        self.assertIn("| rustrack | 800 | 500 | 7000 | 4.00 | 80 | 8000 | 90 | 0, 0, 0 | 1.00 / 1.00 |", md)
        self.assertNotIn("Static files over TLS", md)  # the static part did not run


if __name__ == "__main__":
    unittest.main()
