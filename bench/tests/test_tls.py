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


class TlsTest(unittest.TestCase):
    def test_h2load_summary(self):
        r = tls.parse_h2load(H2LOAD)
        self.assertEqual(r["succeeded"], 24370)
        self.assertAlmostEqual(r["rps"], 8123.33)
        self.assertEqual(r["seconds"], 3.0)
        self.assertEqual(r["protocol"], "h2")
        self.assertEqual(r["status_2xx"], 24370)
        self.assertEqual(r["failed"], 0)
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


if __name__ == "__main__":
    unittest.main()
