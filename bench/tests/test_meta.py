"""meta: versions are asked of the peers that run, in the report's order."""

from __future__ import annotations

import datetime
import subprocess
import tempfile
import types
import unittest
from pathlib import Path
from unittest import mock

from rbench import hop, meta


def fake_run(argv, **_):
    return subprocess.CompletedProcess(argv, 0, stdout=f"{argv[0]} 1.0 [x]\n", stderr="")


class Versions(unittest.TestCase):
    def test_only_peers_that_run(self):
        with mock.patch("rbench.meta.subprocess.run", fake_run):
            v = meta.versions(["rustrack", "unicorn"])
        self.assertEqual(list(v), ["unicorn", "ruby", "rails", "wrk"])
        self.assertEqual(v["wrk"], "wrk 1.0")

    def test_all_peers_in_published_order(self):
        with mock.patch("rbench.meta.subprocess.run", fake_run):
            v = meta.versions(["unicorn", "puma", "passenger", "rustrack"])
        self.assertEqual(list(v), ["passenger", "puma", "unicorn", "ruby", "rails", "wrk"])

    def test_puma_behind_nginx_reports_both(self):
        with mock.patch("rbench.meta.subprocess.run", fake_run):
            v = meta.versions(["rustrack", "puma-nginx"])
        self.assertEqual(list(v), ["puma", "nginx", "ruby", "rails", "wrk"])

    def test_missing_command(self):
        with mock.patch("rbench.meta.subprocess.run", side_effect=FileNotFoundError("no wrk")):
            self.assertEqual(meta.versions([])["wrk"], "? (no wrk)")



class Baseline(unittest.TestCase):
    """--baseline: what the meta records of the other binary."""

    def binary(self, tmp: str, prints: str, under: str = "") -> str:
        d = Path(tmp) / under
        d.mkdir(parents=True, exist_ok=True)
        path = d / "rustrack"
        path.write_text(f"#!/bin/sh\necho '{prints}'\n")
        path.chmod(0o755)
        return str(path)

    def test_version_and_hash(self):
        with tempfile.TemporaryDirectory() as tmp:
            b = meta.baseline(self.binary(tmp, "rustrack 0.1.0"))
        self.assertEqual(b["version"], "rustrack 0.1.0")
        self.assertEqual(len(b["sha256"]), 12)
        self.assertNotIn("describe", b)
        self.assertNotIn("checkout", b)

    def test_a_commit_in_the_version_is_described(self):
        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.object(meta, "git", lambda *a, **k: "v0.1-3-gaf87b73"):
            b = meta.baseline(self.binary(tmp, "rustrack 0.1.0 (af87b73 2026-11-29)"))
        self.assertEqual(b["describe"], "v0.1-3-gaf87b73")

    def test_built_in_a_checkout(self):
        calls = []

        def git(*args, cwd=None):
            calls.append((args, cwd))
            return "7f7a1d8-dirty"

        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(meta, "git", git):
            b = meta.baseline(self.binary(tmp, "rustrack 0.1.0", "old/target/release"))
        self.assertEqual(b["checkout"], f"{tmp}/old at 7f7a1d8-dirty")
        self.assertEqual(calls, [(("describe", "--always", "--dirty"), Path(tmp) / "old")])

    def test_only_in_a_baseline_run(self):
        ctx = types.SimpleNamespace(quick=True, rounds=1, duration=3.0, warmup=1.0, memory_workers=4,
                                    memory_per_worker=500, slow_senders=100, slow_readers=100, spawn_workers=4,
                                    realmem_workers=4, realmem_requests=1000, realmem_refork_after="50",
                                    workdir="/tmp/x", servers=["rustrack"], baseline=None)
        now = datetime.datetime(2026, 1, 1)
        with mock.patch("rbench.meta.subprocess.run", fake_run), \
                mock.patch.object(meta.hop, "measure", lambda rounds: {"rounds": rounds}):
            m = meta.collect(ctx, now, ["hello"], ["rustrack"], {})
            self.assertEqual(m["hop"], {"rounds": meta.hop.ROUNDS // 4})
            self.assertNotIn("baseline", m)
            self.assertNotIn("rustrack_version", m)
            with mock.patch.object(meta, "baseline", lambda path: {"path": path}):
                m = meta.collect(types.SimpleNamespace(**dict(vars(ctx), baseline="/old/rustrack")), now,
                                 ["hello"], ["rustrack"], {})
        self.assertEqual(m["baseline"], {"path": "/old/rustrack"})
        self.assertEqual(m["rustrack_version"], f"{meta.RUSTRACK} 1.0 [x]")


class HopFloor(unittest.TestCase):
    """hop.py really measures: two processes, a real socketpair, CPU from
    getrusage. No figure is asserted (timing is for the report, not tests),
    only that each placement produced one from both sides."""

    def test_every_placement_measured_by_both_sides(self):
        h = meta.hop_floor(200)
        self.assertEqual(set(h), {"cross_cpu", "one_cpu", "cross_cpu_busy_peer"})
        for r in h.values():
            self.assertGreater(r["ping"], 0)
            self.assertGreater(r["echo"], 0)
        self.assertIn("µs on one CPU", hop.header_line(h))

    def test_a_failure_is_recorded_not_raised(self):
        with mock.patch.object(meta.hop, "round_trip", side_effect=OSError("no socketpair")):
            self.assertEqual(meta.hop_floor(10), {"error": "OSError: no socketpair"})


if __name__ == "__main__":
    unittest.main()
