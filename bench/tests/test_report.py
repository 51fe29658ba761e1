"""report: means over rounds, the published ratios, the targets table, and
the committed results files reproduced from their own JSON."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

from rbench import report
from rbench.paths import README, RESULTS

from .helpers import (META, failed_run, memory_run, realmem_run, scaleup_run, spawn_run, threads_run,
                      wrk_run)

RR, PA, PU, UN = "rustrack smart", "passenger smart", "puma preload", "unicorn preload"


class MeanAndRatio(unittest.TestCase):
    def test_mean_skips_none(self):
        self.assertEqual(report.mean([1.0, None, 3.0]), 2.0)
        self.assertIsNone(report.mean([]))
        self.assertIsNone(report.mean([None, None]))

    def test_ratio(self):
        self.assertEqual(report.ratio(3.0, 2.0), 1.5)
        self.assertIsNone(report.ratio(None, 2.0))
        self.assertIsNone(report.ratio(3.0, None))
        # Nothing to divide by: no ratio rather than an error.
        self.assertIsNone(report.ratio(3.0, 0))
        self.assertEqual(report.ratio(0, 3.0), 0.0)

    def test_fmt(self):
        self.assertEqual(report.fmt(None), "–")
        self.assertEqual(report.fmt(1234.5), "1234")
        self.assertEqual(report.fmt(1.005, ".2f"), "1.00")
        self.assertEqual(report.fmt(None, ".2f", none="?"), "?")

    def test_loads_lists_every_round(self):
        runs = [wrk_run("hello", RR, 0, 1, 1, 1, load=0.5), wrk_run("hello", RR, 1, 1, 1, 1, load=2.125)]
        self.assertEqual(report.loads(runs), "0.50 / 2.12")


class Summarize(unittest.TestCase):
    def test_throughput_means_over_rounds(self):
        runs = [
            wrk_run("hello", RR, 0, rps=1000, p50_ms=1.0, p99_ms=4.0, requests=10000,
                    frontend_cpu=60, server_cpu=100),
            wrk_run("hello", RR, 1, rps=3000, p50_ms=2.0, p99_ms=8.0, requests=30000,
                    frontend_cpu=80, server_cpu=140),
        ]
        e = report.summarize(runs)["hello"][RR]
        self.assertEqual(e["rounds"], 2)
        self.assertEqual(e["failed"], 0)
        self.assertEqual(e["rps"], 2000)
        self.assertAlmostEqual(e["p50_ms"], 1.5)
        self.assertAlmostEqual(e["p99_ms"], 6.0)
        self.assertEqual(e["requests"], 40000)
        self.assertEqual(e["frontend_cpu_us_per_req"], 70)
        self.assertEqual(e["server_cpu_us_per_req"], 120)
        self.assertEqual(e["loadavg_before"], [[0.5, 1.0, 1.0], [0.5, 1.0, 1.0]])

    def test_read_errors_apart_and_summed(self):
        runs = [
            wrk_run("hello", UN, 0, 100, 1, 1, read=500, connect=2, status=1),
            wrk_run("hello", UN, 1, 100, 1, 1, read=700, connect=0, status=3),
        ]
        e = report.summarize(runs)["hello"][UN]
        self.assertEqual(e["errors"], 6)
        self.assertEqual(e["read_errors"], 1200)

    def test_failed_rounds_left_out_of_means(self):
        runs = [
            wrk_run("hello", PU, 0, rps=500, p50_ms=1, p99_ms=10, load=0.25),
            failed_run("hello", PU, 1, load=3.0),
        ]
        e = report.summarize(runs)["hello"][PU]
        self.assertEqual((e["rounds"], e["failed"]), (1, 1))
        self.assertEqual(e["rps"], 500)
        # The load column still shows every round, the failed one included.
        self.assertEqual([x[0] for x in e["loadavg_before"]], [0.25, 3.0])

    def test_all_rounds_failed(self):
        e = report.summarize([failed_run("hello", PU, 0), failed_run("hello", PU, 1)])["hello"][PU]
        self.assertEqual((e["rounds"], e["failed"]), (0, 2))
        self.assertNotIn("rps", e)

    def test_round_without_requests_has_no_latency(self):
        runs = [
            wrk_run("hello", UN, 0, rps=1000, p50_ms=2, p99_ms=6),
            wrk_run("hello", UN, 1, rps=0, p50_ms=0, p99_ms=0, requests=0),
        ]
        e = report.summarize(runs)["hello"][UN]
        self.assertEqual(e["rps"], 500)  # the empty round counts as 0 req/s
        self.assertAlmostEqual(e["p99_ms"], 6)  # but has no latency to average

    def test_frontend_cpu_only_where_measured(self):
        runs = [wrk_run("hello", PU, 0, 1, 1, 1, server_cpu=50), wrk_run("hello", PU, 1, 1, 1, 1, server_cpu=70)]
        e = report.summarize(runs)["hello"][PU]
        self.assertIsNone(e["frontend_cpu_us_per_req"])
        self.assertEqual(e["server_cpu_us_per_req"], 60)

    def test_memory_means(self):
        runs = [memory_run(RR, 0, 400, 300, 390), memory_run(RR, 1, 500, 100, 490)]
        e = report.summarize(runs)["memory"][RR]
        self.assertEqual(e["total_pss"], 450 * 2**20)
        self.assertEqual(e["total_private_dirty"], 200 * 2**20)
        self.assertEqual(e["app_pss"], 440 * 2**20)

    def test_spawn_samples_pooled_over_rounds(self):
        runs = [spawn_run("bloat", RR, 0, [4.0, 2.0, 9.0, 3.0], first=3.0, ready=3.5),
                spawn_run("bloat", RR, 1, [5.0, 1.0, 6.0, 7.0], first=4.0, ready=4.5)]
        e = report.summarize(runs)["spawn-bloat"][RR]
        self.assertEqual(len(e["spawn_samples"]), 8)
        self.assertEqual(e["spawn_median_ms"], 4.5)
        self.assertEqual((e["spawn_min_ms"], e["spawn_max_ms"]), (1.0, 9.0))
        self.assertEqual(e["first_response_s"], 3.5)
        self.assertEqual(e["all_workers_ready_s"], 4.0)

    def test_spawn_without_samples(self):
        e = report.summarize([spawn_run("hello", PA, 0, [])])["spawn-hello"][PA]
        self.assertIsNone(e["spawn_median_ms"])
        self.assertIsNone(e["spawn_min_ms"])

    def test_scaleup_median(self):
        runs = [scaleup_run(RR, i, ms) for i, ms in enumerate([6.2, 4.6, 3.7])]
        e = report.summarize(runs)["scaleup"][RR]
        self.assertEqual(e["scaleup_samples"], [6.2, 4.6, 3.7])
        self.assertEqual(e["scaleup_median_ms"], 4.6)

    def test_slow_clients(self):
        r0 = wrk_run("slow-clients", RR, 0, 100, 1, 1)
        r0["slow"] = {"connected_before_fast_stream": 200, "sender_responses": 100, "reader_responses": 200}
        r1 = wrk_run("slow-clients", RR, 1, 100, 1, 1)
        r1["slow"] = {"connected_before_fast_stream": 180, "sender_responses": 50, "reader_responses": 50}
        e = report.summarize([r0, r1])["slow-clients"][RR]
        self.assertEqual(e["slow_connected"], 190)
        self.assertEqual(e["slow_responses"], 200)

    def test_labels_keep_run_order(self):
        runs = [wrk_run("hello", RR, 0, 1, 1, 1), wrk_run("hello", PA, 0, 1, 1, 1),
                wrk_run("hello", PA, 1, 1, 1, 1), wrk_run("hello", RR, 1, 1, 1, 1)]
        self.assertEqual(list(report.summarize(runs)["hello"]), [RR, PA])


def full_summary(**over) -> dict:
    """A summary in which every target is met; `over` replaces single
    figures: {"scenario/label/key": value}."""
    s = {
        "hello": {RR: {"rps": 10000, "p99_ms": 5.0, "frontend_cpu_us_per_req": 40.0},
                  PA: {"rps": 4000, "p99_ms": 9.0, "frontend_cpu_us_per_req": 100.0},
                  UN: {"rps": 5000, "p99_ms": 6.0}},
        "rails": {RR: {"rps": 1200}, PU: {"rps": 1000}},
        "memory": {"rustrack smart": {"total_pss": 300 * 2**20},
                   "rustrack direct": {"total_pss": 800 * 2**20},
                   "rustrack smart (tight GC)": {"total_pss": 200 * 2**20},
                   "rustrack direct (tight GC)": {"total_pss": 600 * 2**20},
                   "passenger smart": {"total_pss": 650 * 2**20}},
    }
    for app in ["bloat", "hello", "bench-rails"]:
        s[f"spawn-{app}"] = {"rustrack smart": {"spawn_median_ms": 4.0},
                             "rustrack direct": {"spawn_median_ms": 400.0}}
    for path, value in over.items():
        scen, label, key = path.split("/")
        s[scen][label][key] = value
    return s


class Targets(unittest.TestCase):
    NAMES = [
        "hello req/s ≥ 2.5× Passenger",
        "hello req/s ≥ 1.5× Unicorn",
        "hello p99 ≤ Unicorn's",
        "rails req/s ≥ 1.1× Puma",
        "bloat: smart total PSS ≤ 40% of direct",
        "bloat, both with tight GC growth: smart total PSS ≤ 40% of direct",
        "bloat: smart total PSS < Passenger smart's",
        "spawn (bloat): smart median < 10 ms",
        "spawn (bloat): smart ≥ 50× faster than direct",
        "spawn (hello): smart median < 10 ms",
        "spawn (hello): smart ≥ 50× faster than direct",
        "spawn (bench-rails): smart median < 10 ms",
        "spawn (bench-rails): smart ≥ 50× faster than direct",
        "front-end CPU/request ≤ ½ Passenger core's",
    ]

    def targets(self, **over) -> dict:
        return {name: (val, ok) for name, val, ok in report.targets(full_summary(**over))}

    def test_names_and_order(self):
        self.assertEqual([t[0] for t in report.targets(full_summary())], self.NAMES)

    def test_all_met(self):
        t = self.targets()
        self.assertTrue(all(ok for _, ok in t.values()), t)
        self.assertEqual(t["hello req/s ≥ 2.5× Passenger"][0], "2.50×")
        self.assertEqual(t["hello req/s ≥ 1.5× Unicorn"][0], "2.00×")
        self.assertEqual(t["hello p99 ≤ Unicorn's"][0], "5.00 ms vs 6.00 ms")
        self.assertEqual(t["rails req/s ≥ 1.1× Puma"][0], "1.20×")
        self.assertEqual(t["bloat: smart total PSS ≤ 40% of direct"][0], "38%")
        self.assertEqual(t["bloat, both with tight GC growth: smart total PSS ≤ 40% of direct"][0], "33%")
        self.assertEqual(t["bloat: smart total PSS < Passenger smart's"][0], "300 MB vs 650 MB")
        self.assertEqual(t["spawn (bloat): smart median < 10 ms"][0], "4.00 ms")
        self.assertEqual(t["spawn (bloat): smart ≥ 50× faster than direct"][0], "100.0×")
        self.assertEqual(t["front-end CPU/request ≤ ½ Passenger core's"][0], "40.0 µs vs 100.0 µs (0.40×)")

    def test_boundaries(self):
        # ≥ and ≤ targets are met at the bound; < targets are not.
        t = self.targets(**{"hello/passenger smart/rps": 4000, "hello/unicorn preload/p99_ms": 5.0,
                            "memory/rustrack direct/total_pss": 750 * 2**20,
                            "memory/passenger smart/total_pss": 300 * 2**20,
                            "spawn-bloat/rustrack smart/spawn_median_ms": 10.0,
                            "spawn-hello/rustrack direct/spawn_median_ms": 200.0,
                            "hello/rustrack smart/frontend_cpu_us_per_req": 50.0})
        self.assertTrue(t["hello req/s ≥ 2.5× Passenger"][1])
        self.assertTrue(t["hello p99 ≤ Unicorn's"][1])
        self.assertTrue(t["bloat: smart total PSS ≤ 40% of direct"][1])
        self.assertEqual(t["bloat: smart total PSS ≤ 40% of direct"][0], "40%")
        self.assertFalse(t["bloat: smart total PSS < Passenger smart's"][1])
        self.assertFalse(t["spawn (bloat): smart median < 10 ms"][1])
        self.assertTrue(t["spawn (hello): smart ≥ 50× faster than direct"][1])
        self.assertTrue(t["front-end CPU/request ≤ ½ Passenger core's"][1])

    def test_missed(self):
        t = self.targets(**{"hello/passenger smart/rps": 5000, "hello/unicorn preload/rps": 7000,
                            "hello/unicorn preload/p99_ms": 4.9, "rails/puma preload/rps": 1100,
                            "memory/rustrack direct/total_pss": 700 * 2**20,
                            "spawn-hello/rustrack direct/spawn_median_ms": 199.0,
                            "hello/rustrack smart/frontend_cpu_us_per_req": 67.4,
                            "hello/passenger smart/frontend_cpu_us_per_req": 97.4})
        for name in ["hello req/s ≥ 2.5× Passenger", "hello req/s ≥ 1.5× Unicorn", "hello p99 ≤ Unicorn's",
                     "rails req/s ≥ 1.1× Puma", "bloat: smart total PSS ≤ 40% of direct",
                     "spawn (hello): smart ≥ 50× faster than direct",
                     "front-end CPU/request ≤ ½ Passenger core's"]:
            self.assertIs(t[name][1], False, name)
        self.assertEqual(t["rails req/s ≥ 1.1× Puma"][0], "1.09×")
        self.assertEqual(t["spawn (hello): smart ≥ 50× faster than direct"][0], "49.8×")
        self.assertEqual(t["front-end CPU/request ≤ ½ Passenger core's"][0], "67.4 µs vs 97.4 µs (0.69×)")

    def test_nothing_measured(self):
        t = report.targets({})
        self.assertEqual([x[0] for x in t], self.NAMES)
        self.assertTrue(all(ok is None for _, _, ok in t))
        d = {name: val for name, val, _ in t}
        self.assertEqual(d["hello req/s ≥ 2.5× Passenger"], "–×")
        self.assertEqual(d["hello p99 ≤ Unicorn's"], "– ms vs – ms")
        self.assertEqual(d["bloat: smart total PSS ≤ 40% of direct"], "–%")
        self.assertEqual(d["front-end CPU/request ≤ ½ Passenger core's"], "– µs vs – µs (–×)")

    def test_only_rustrack(self):
        # A run of rustrack alone judges only what needs no peer.
        s = full_summary()
        for scen in s.values():
            for label in [PA, PU, UN, "passenger smart"]:
                scen.pop(label, None)
        t = {name: ok for name, _, ok in report.targets(s)}
        self.assertIsNone(t["hello req/s ≥ 2.5× Passenger"])
        self.assertIsNone(t["rails req/s ≥ 1.1× Puma"])
        self.assertTrue(t["bloat: smart total PSS ≤ 40% of direct"])
        self.assertTrue(t["spawn (bloat): smart median < 10 ms"])


PN = "puma preload behind nginx"
ISSUE17 = ["front-end CPU per hello request ≤ 30 µs", "rails req/s ≥ 1.0× Puma",
           "rails req/s ≥ 1.2× Puma behind nginx"]


class Issue17Targets(unittest.TestCase):
    """Issue 17's rows: only in runs that measured (or skipped) Puma behind
    nginx, after issue 7's, from the same summary."""

    def summary(self, **over) -> dict:
        s = full_summary()
        s["hello"][PN] = {"rps": 6000, "p99_ms": 7.0, "frontend_cpu_us_per_req": 45.0}
        s["rails"][PN] = {"rps": 1000}
        for path, value in over.items():
            scen, label, key = path.split("/")
            s[scen][label][key] = value
        return s

    def targets(self, s, meta=None) -> dict:
        return {name: (val, ok) for name, val, ok in report.targets(s, meta)}

    def test_names_after_issue_7s(self):
        names = [t[0] for t in report.targets(self.summary())]
        self.assertEqual(names, Targets.NAMES + ISSUE17)
        # The two issue 17 shares with issue 7 are not repeated.
        self.assertEqual(len(set(names)), len(names))

    def test_met_at_the_bounds(self):
        t = self.targets(self.summary(**{"hello/rustrack smart/frontend_cpu_us_per_req": 30.0}))
        self.assertEqual(t["front-end CPU per hello request ≤ 30 µs"], ("30.0 µs", True))
        self.assertEqual(t["rails req/s ≥ 1.0× Puma"], ("1.20×", True))
        self.assertEqual(t["rails req/s ≥ 1.2× Puma behind nginx"], ("1.20×", True))
        s = self.summary(**{"rails/puma preload/rps": 1200})
        self.assertEqual(self.targets(s)["rails req/s ≥ 1.0× Puma"], ("1.00×", True))

    def test_missed(self):
        s = self.summary(**{"hello/rustrack smart/frontend_cpu_us_per_req": 67.4,
                            "rails/puma preload/rps": 1767, "rails/puma preload behind nginx/rps": 1001})
        t = self.targets(s)
        self.assertEqual(t["front-end CPU per hello request ≤ 30 µs"], ("67.4 µs", False))
        self.assertEqual(t["rails req/s ≥ 1.0× Puma"], ("0.68×", False))
        self.assertEqual(t["rails req/s ≥ 1.2× Puma behind nginx"], ("1.20×", False))  # 1.1988...
        # Issue 7's own row is judged from the same figures.
        self.assertEqual(t["rails req/s ≥ 1.1× Puma"], ("0.68×", False))

    def test_only_with_puma_behind_nginx(self):
        # Runs from before it (the committed results): issue 7's rows only.
        self.assertEqual([t[0] for t in report.targets(full_summary())], Targets.NAMES)
        # Measured in rails alone, or failed (a label with no figures): shown.
        s = full_summary()
        s["rails"][PN] = {"rounds": 0, "failed": 2}
        t = self.targets(s)
        self.assertEqual(list(t)[-3:], ISSUE17)
        self.assertEqual(t["rails req/s ≥ 1.2× Puma behind nginx"], ("–×", None))
        self.assertEqual(t["rails req/s ≥ 1.0× Puma"], ("1.20×", True))
        # Skipped for a missing package: shown, that one not judged.
        meta = dict(META, skipped_servers={"puma-nginx": "Debian package nginx not installed"})
        t = self.targets(full_summary(), meta)
        self.assertEqual(list(t)[-3:], ISSUE17)
        self.assertIsNone(t["rails req/s ≥ 1.2× Puma behind nginx"][1])
        # Another server skipped: not an issue 17 run.
        meta = dict(META, skipped_servers={"unicorn": "Debian package unicorn not installed"})
        self.assertEqual(list(self.targets(full_summary(), meta)), Targets.NAMES)

    def test_markdown_rows_and_heading(self):
        runs = [wrk_run("hello", RR, 0, 10000, 1.0, 5.0, frontend_cpu=28.0, server_cpu=90.0),
                wrk_run("hello", PU, 0, 11000, 0.3, 15.0, server_cpu=110.0),
                wrk_run("hello", PN, 0, 8000, 1.6, 6.0, frontend_cpu=45.0, server_cpu=190.0),
                wrk_run("rails", RR, 0, 1300, 10.0, 20.0),
                wrk_run("rails", PU, 0, 1250, 2.0, 90.0),
                wrk_run("rails", PN, 0, 1000, 14.0, 30.0),
                wrk_run("hello", PN, 1, 6000, 1.8, 8.0, frontend_cpu=55.0, server_cpu=210.0)]
        md = report.markdown(META, report.summarize(runs), runs)
        rows = table_rows(md, "hello")
        self.assertEqual(list(rows), [RR, PU, PN])
        # | server | req/s | p50 | p99 | errors | read errors | rr rps ÷ this | rr p99 ÷ this | fe CPU | all CPU | load |
        self.assertEqual(rows[PN][1:11], ["7000", "1.70", "7.00", "0", "0", "1.43", "0.71", "50.0", "200.0",
                                          "0.50 / 0.50"])
        self.assertEqual(table_rows(md, "rails")[PN][6], "1.30")
        self.assertIn("## targets (issues 7 and 17)\n", md)
        rows = table_rows(md, "targets")
        self.assertEqual(rows["front-end CPU per hello request ≤ 30 µs"][1:], ["28.0 µs", "yes"])
        self.assertEqual(rows["rails req/s ≥ 1.0× Puma"][1:], ["1.04×", "yes"])
        self.assertEqual(rows["rails req/s ≥ 1.2× Puma behind nginx"][1:], ["1.30×", "yes"])
        # Without it, the heading and rows of before.
        runs = [r for r in runs if r["label"] != PN]
        md = report.markdown(META, report.summarize(runs), runs)
        self.assertIn("## targets (issue 7)\n", md)
        self.assertNotIn("30 µs", md)

    def test_json_targets_see_the_skipped_servers(self):
        runs = [wrk_run("hello", RR, 0, 10000, 1.0, 5.0, frontend_cpu=28.0)]
        meta = dict(META, skipped_servers={"puma-nginx": "Debian package nginx not installed"})
        with tempfile.TemporaryDirectory() as tmp:
            report.write_results(meta, runs, "x", results=Path(tmp))
            written = json.loads((Path(tmp) / "x.json").read_text())
        self.assertIn(["front-end CPU per hello request ≤ 30 µs", "28.0 µs", True], written["targets"])


def table_rows(md: str, title: str) -> dict[str, list[str]]:
    """The rows of the table under "## title...", by first cell."""
    lines = md.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("## " + title))
    rows = {}
    for line in lines[i + 4 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0] if title != "spawn" else cells[0] + "/" + cells[1]] = cells
    return rows


class Markdown(unittest.TestCase):
    def render(self, runs: list, meta: dict | None = None) -> str:
        return report.markdown(meta or META, report.summarize(runs), runs)

    def test_throughput_ratios_against_rustrack(self):
        runs = [wrk_run("hello", RR, 0, 12000, 1.25, 5.0, frontend_cpu=67.4, server_cpu=106.3),
                wrk_run("hello", PA, 0, 6000, 2.5, 10.0, frontend_cpu=97.4, server_cpu=190),
                wrk_run("hello", UN, 0, 4800, 2.0, 4.0, read=1000, server_cpu=170)]
        rows = table_rows(self.render(runs), "hello")
        # | server | req/s | p50 | p99 | errors | read errors | rr rps ÷ this | rr p99 ÷ this | fe CPU | all CPU | load |
        self.assertEqual(rows[RR][1:8], ["12000", "1.25", "5.00", "0", "0", "1.00", "1.00"])
        self.assertEqual(rows[PA][6:10], ["2.00", "0.50", "97.4", "190.0"])
        self.assertEqual(rows[UN][4:10], ["0", "1000", "2.50", "1.25", "–", "170.0"])
        self.assertEqual(rows[UN][10], "0.50")

    def test_no_ratio_without_rustrack(self):
        runs = [wrk_run("upload", PU, 0, 500, 30, 60), wrk_run("upload", PU, 1, 700, 30, 60)]
        rows = table_rows(self.render(runs), "upload")
        self.assertEqual(rows[PU][1], "600")
        self.assertEqual(rows[PU][6:8], ["–", "–"])
        self.assertEqual(rows[PU][8], "0.50 / 0.50")

    def test_failed_runs_counted_in_errors_and_listed(self):
        runs = [wrk_run("hello", RR, 0, 100, 1, 1), failed_run("hello", PU, 0)]
        md = self.render(runs)
        rows = table_rows(md, "hello")
        self.assertEqual(rows[PU][1], "–")
        self.assertEqual(rows[PU][4], "– (1 runs failed)")
        self.assertIn("## failed runs\n\n- hello round 1 puma preload: ServerError: puma preload exited (1)\n", md)

    def test_memory_ratio_is_this_over_rustrack(self):
        runs = [memory_run(RR, 0, 444, 295, 440), memory_run("rustrack direct", 0, 818, 810, 815)]
        rows = table_rows(self.render(runs), "memory")
        self.assertEqual(rows[RR][1:6], ["444", "295", "440", "295", "1.00"])
        self.assertEqual(rows["rustrack direct"][5], "1.84")

    def test_spawn_and_scaleup(self):
        runs = [spawn_run("bloat", RR, 0, [3.0, 4.0]), spawn_run("bloat", "rustrack direct", 0, [2500.0]),
                scaleup_run(RR, 0, 4.0), scaleup_run(RR, 1, 6.0), scaleup_run("passenger direct", 0, 270.0)]
        md = self.render(runs)
        rows = table_rows(md, "spawn")
        self.assertEqual(rows["bloat/rustrack smart"][2:6], ["3.50", "3.00", "4.00", "2"])
        rows = table_rows(md, "scale-up")
        self.assertEqual(rows[RR][1:4], ["5.0", "4.0, 6.0", "1.0"])
        self.assertEqual(rows["passenger direct"][3], "54.0")

    def test_threads_tables_and_targets_only_when_measured(self):
        r4, p4, r1 = "rustrack smart, 4 threads", "puma preload, 4 threads", RR
        runs = [threads_run("threads-io", r4, 0, 390, 20.5, 30.0, 150, 140),
                threads_run("threads-io", p4, 0, 360, 21.0, 60.0, 200),
                threads_run("threads-io", r1, 0, 98, 80.0, 90.0, 120),
                threads_run("threads-rails", r4, 0, 900, 30.0, 50.0, 260),
                threads_run("threads-rails", p4, 0, 1000, 20.0, 90.0, 250)]
        md = self.render(runs)
        rows = table_rows(md, "threads: I/O-bound")
        # | server | req/s | p50 | p99 | errors | total PSS | app PSS | rps ratio | p99 ratio | PSS ratio | CPU | load |
        self.assertEqual(rows[r4][1:10], ["390", "20.50", "30.00", "0", "150", "140", "1.00", "1.00", "1.00"])
        self.assertEqual(rows[p4][7:10], ["1.08", "0.50", "0.75"])
        self.assertEqual(rows[r1][7], "3.98")
        rows = table_rows(md, "threads: Rails")
        self.assertEqual(rows[p4][7:10], ["0.90", "0.56", "1.04"])
        t = {name: (val, ok) for name, val, ok in report.targets(report.summarize(runs))}
        self.assertEqual(t["I/O-bound, 2×4 threads: req/s ≥ 1.0× Puma's"], ("1.08×", True))
        self.assertEqual(t["I/O-bound, 2×4 threads: p99 < Puma's"], ("30.0 ms vs 60.0 ms", True))
        self.assertEqual(t["I/O-bound, 2×4 threads: total PSS < Puma's"], ("150 MB vs 200 MB", True))
        # The issue sets no target on Rails: shown, not judged.
        self.assertEqual(t["Rails, 2×4 threads: req/s ≥ 1.0× Puma's"], ("0.90×", None))
        # Older runs, without the scenario, have neither tables nor targets.
        md = self.render([wrk_run("hello", RR, 0, 100, 1, 1)])
        self.assertNotIn("threads:", md)
        self.assertNotIn("2×4", md)

    def test_targets_table(self):
        runs = [wrk_run("hello", RR, 0, 10000, 1, 5), wrk_run("hello", PA, 0, 5000, 1, 9)]
        rows = table_rows(self.render(runs), "targets")
        self.assertEqual(rows["hello req/s ≥ 2.5× Passenger"][1:], ["2.00×", "**no**"])
        self.assertEqual(rows["hello req/s ≥ 1.5× Unicorn"][1:], ["–×", "–"])

    def test_skipped_servers_line_only_when_skipping(self):
        runs = [wrk_run("hello", RR, 0, 100, 1, 1)]
        self.assertNotIn("not measured", self.render(runs))
        meta = dict(META, skipped_servers={"puma": "Debian package puma not installed"})
        self.assertIn("\n- not measured: puma (Debian package puma not installed)\n", self.render(runs, meta))

    def test_quick_title(self):
        md = self.render([], dict(META, quick=True))
        self.assertTrue(md.startswith("# rustrack benchmark, 2026-01-01 00:00 (quick)\n"))


RF, WRF, DI = "rustrack smart + refork", "rustrack smart + warm-up + refork", "rustrack direct"


def realmem_runs(refork_pss: float = 240, refork_dirty: float = 28, refork_rps: float = 10.5,
                 mold_ms: list | None = None) -> list:
    """One round of realmem: direct, smart, smart + refork, Puma, Unicorn."""
    return [
        realmem_run(DI, 0, 500, [120, 121, 122, 125], 10.0, reforks=0, series_mb=[340, 420, 460, 490, 500],
                    template_mb=0),
        realmem_run(RR, 0, 440, [85, 86, 88, 90], 10.0, reforks=0, series_mb=[100, 330, 400, 430, 440]),
        realmem_run(RF, 0, refork_pss, [refork_dirty - 4, refork_dirty - 2, refork_dirty - 1, refork_dirty],
                    refork_rps, mold_spawn_ms=mold_ms if mold_ms is not None else [4.0, 6.0, 8.0, 30.0],
                    reforks=2, series_mb=[100, 300, 260, 250, 240]),
        realmem_run(PU, 0, 400, [90, 90, 90, 90], 9.0, template_mb=60),
        realmem_run(UN, 0, 420, [95, 95, 95, 95], 8.0, template_mb=60),
    ]


class Realmem(unittest.TestCase):
    def test_summary(self):
        runs = realmem_runs()
        runs.append(realmem_run(RF, 1, 260, [30, 32, 20, 22], 9.5, mold_spawn_ms=[12.0], reforks=3,
                                series_mb=[100, 300, 280, 270, 260], statuses={200: 1998, 500: 2}))
        e = report.summarize(runs)["realmem"][RF]
        self.assertEqual(e["rounds"], 2)
        self.assertEqual(e["app_pss"], 250 * 2**20)
        self.assertEqual(e["mix_rps"], 10.0)
        # Each round's largest worker, averaged: (28 + 32) / 2.
        self.assertEqual(e["worker_dirty_max"], 30 * 2**20)
        self.assertEqual(e["worker_dirty_mean"], (26.25 + 26) / 2 * 2**20)
        self.assertEqual(e["mold_spawn_samples"], [4.0, 6.0, 8.0, 30.0, 12.0])
        self.assertEqual(e["mold_spawn_median_ms"], 8.0)
        self.assertEqual(e["reforks"], 2.5)
        self.assertEqual(e["mix_errors"], 2)
        self.assertEqual(e["series"], [[0, 100 * 2**20], [500, 300 * 2**20], [1000, 270 * 2**20],
                                       [1500, 260 * 2**20], [2000, 250 * 2**20]])
        p = report.summarize(runs)["realmem"][PU]
        self.assertIsNone(p["reforks"])
        self.assertIsNone(p["mold_spawn_median_ms"])

    def targets(self, runs) -> dict:
        return {name: (val, ok) for name, val, ok in report.targets(report.summarize(runs))}

    def test_targets_met(self):
        t = self.targets(realmem_runs())
        # Only realmem ran: none of issue 7's rows.
        self.assertEqual(list(t), [
            "realmem: smart + refork: total PSS ≤ 50% of direct's",
            "realmem: smart + refork: every worker's Private_Dirty ≤ 30 MB",
            "realmem: smart + refork: total PSS ≥ 1.4× less than puma preload's",
            "realmem: smart + refork: total PSS ≥ 1.4× less than unicorn preload's",
            "realmem: smart + refork: req/s on the mix ≥ plain smart's",
            "realmem: smart + refork: spawn from a mold < 10 ms",
        ])
        self.assertEqual(t["realmem: smart + refork: total PSS ≤ 50% of direct's"], ("48%", True))
        self.assertEqual(t["realmem: smart + refork: every worker's Private_Dirty ≤ 30 MB"], ("largest 28 MB", True))
        self.assertEqual(t["realmem: smart + refork: total PSS ≥ 1.4× less than puma preload's"], ("1.67×", True))
        self.assertEqual(t["realmem: smart + refork: req/s on the mix ≥ plain smart's"], ("1.05×", True))
        self.assertEqual(t["realmem: smart + refork: spawn from a mold < 10 ms"], ("7.0 ms (median)", True))

    def test_targets_missed_and_boundaries(self):
        t = self.targets(realmem_runs(refork_pss=250, refork_dirty=31, refork_rps=9.9, mold_ms=[10.0]))
        self.assertEqual(t["realmem: smart + refork: total PSS ≤ 50% of direct's"], ("50%", True))
        self.assertIs(t["realmem: smart + refork: every worker's Private_Dirty ≤ 30 MB"][1], False)
        self.assertEqual(t["realmem: smart + refork: total PSS ≥ 1.4× less than puma preload's"], ("1.60×", True))
        self.assertIs(t["realmem: smart + refork: req/s on the mix ≥ plain smart's"][1], False)
        self.assertIs(t["realmem: smart + refork: spawn from a mold < 10 ms"][1], False)
        t = self.targets(realmem_runs(refork_pss=300, mold_ms=[]))
        self.assertEqual(t["realmem: smart + refork: total PSS ≥ 1.4× less than unicorn preload's"], ("1.40×", True))
        self.assertIs(t["realmem: smart + refork: total PSS ≤ 50% of direct's"][1], False)
        self.assertEqual(t["realmem: smart + refork: spawn from a mold < 10 ms"], ("– ms (median)", None))

    def test_warmup_refork_judged_too_when_it_ran(self):
        runs = realmem_runs() + [realmem_run(WRF, 0, 200, [20, 20, 20, 20], 11.0, mold_spawn_ms=[5.0], reforks=2)]
        names = [n for n, _, _ in report.targets(report.summarize(runs))]
        self.assertEqual(len(names), 12)
        self.assertIn("realmem: smart + warm-up + refork: total PSS ≤ 50% of direct's", names)

    def test_with_issue_7_scenarios(self):
        runs = realmem_runs() + [wrk_run("hello", RR, 0, 10000, 1, 5)]
        names = [n for n, _, _ in report.targets(report.summarize(runs))]
        self.assertEqual(len(names), 6 + len(Targets.NAMES))

    def test_tables(self):
        meta = dict(META, skipped_configs={"realmem: rustrack smart + warm-up": "no --warmup-request"})
        runs = realmem_runs()
        md = report.markdown(meta, report.summarize(runs), runs)
        self.assertIn("\n- configurations not measured: realmem: rustrack smart + warm-up (no --warmup-request)\n", md)
        rows = table_rows(md, "realmem")
        # | server | PSS | ÷ direct | dirty mean / largest | template | req/s | ÷ smart | CPU ms/req | errors
        # | reforks | mold spawn | load |
        self.assertEqual(rows[RF][1:11], ["240", "0.48", "26.2 / 28.0", "50", "10.5", "1.05", "190", "0", "2.0",
                                          "7.0 (4)"])
        self.assertEqual(rows[DI][4], "–")
        self.assertEqual(rows[DI][10], "–")
        self.assertEqual(rows[PU][9], "–")
        self.assertIn("| server | after 0 | after 500 | after 1000 | after 1500 | after 2000 |", md)
        self.assertIn(f"| {RF} | 100 | 300 | 260 | 250 | 240 |", md)
        self.assertIn("## targets\n", md)
        self.assertNotIn("(issue 7)", md)


# Results written by the current report code (the earlier ones predate
# the tight-GC and huge-page rows and the present targets).
GOLDEN = ["2026-11-22-2256", "2026-11-22-2329", "2026-11-22-2356", "2026-11-30-0012"]
PUBLISHED = "2026-11-30-0012"  # the figures in bench/README.md


class CommittedResults(unittest.TestCase):
    """The committed results files, recomputed from their own runs."""

    def load(self, name: str) -> dict:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            self.skipTest(f"{path} is gone")
        return json.loads(path.read_text())

    def test_markdown_summary_and_targets(self):
        for name in GOLDEN:
            with self.subTest(name):
                d = self.load(name)
                s = report.summarize(d["runs"])
                self.assertEqual(json.loads(json.dumps(s)), d["summary"])
                self.assertEqual(json.loads(json.dumps(report.targets(s))), d["targets"])
                md = report.markdown(d["meta"], s, d["runs"])
                self.assertEqual(md + "\n", (RESULTS / f"{name}.md").read_text())

    def test_readme_section(self):
        d = self.load(PUBLISHED)
        md = report.markdown(d["meta"], report.summarize(d["runs"]), d["runs"])
        text = README.read_text()
        self.assertEqual(report.with_results_section(text, md, PUBLISHED), text)

    def test_write_results(self):
        d = self.load(PUBLISHED)
        with tempfile.TemporaryDirectory() as tmp:
            md = report.write_results(d["meta"], d["runs"], "x", results=Path(tmp))
            written = json.loads((Path(tmp) / "x.json").read_text())
            self.assertEqual(list(written), ["meta", "summary", "targets", "runs"])
            self.assertEqual(written["summary"], d["summary"])
            self.assertEqual((Path(tmp) / "x.md").read_text(), md + "\n")
            self.assertEqual(md + "\n", (RESULTS / f"{PUBLISHED}.md").read_text())


class ReadmeSection(unittest.TestCase):
    def test_replaces_only_the_section_and_demotes_headings(self):
        text = "intro\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n"
        md = "# title\n\n- line\n\n## hello\n\n| a |\n"
        out = report.with_results_section(text, md, "NAME")
        self.assertEqual(out, "intro\n<!-- results:start -->\nFrom `bench/results/NAME.md`:\n\n- line\n\n"
                              "### hello\n\n| a |\n\n<!-- results:end -->\ntail\n")

    def test_no_markers(self):
        self.assertIsNone(report.with_results_section("no section\n", "# t\nx", "n"))


if __name__ == "__main__":
    unittest.main()


class Static(unittest.TestCase):
    """The static scenario: rustrack against nginx, and the app untouched."""

    def runs(self, rr_rps: float, ng_rps: float, during=(0, 0)) -> list:
        out = []
        for scen in ["static-10k", "static-1m"]:
            for rnd, n in enumerate(during):
                r = wrk_run(scen, RR, rnd, rr_rps, 1.0, 3.0, frontend_cpu=40.0)
                r["app_requests_during"] = n
                out.append(r)
                out.append(wrk_run(scen, "nginx static", rnd, ng_rps, 0.8, 2.0, server_cpu=30.0))
        return out

    def test_table_ratio_and_app_requests(self):
        runs = self.runs(8000, 10000)
        md = report.markdown(META, report.summarize(runs), runs)
        rows = table_rows(md, "static 10 KB")
        # ... | rr rps ÷ this | rr p99 ÷ this | fe CPU | all CPU | reached the app | load |
        self.assertEqual(rows["nginx static"][6], "0.80")
        self.assertEqual(rows[RR][10], "0")
        self.assertEqual(rows["nginx static"][10], "–")
        self.assertIn("## static 1 MB", md)

    def test_targets_only_when_measured(self):
        t = {name: (val, ok) for name, val, ok in report.targets(report.summarize(self.runs(8000, 10000)))}
        self.assertEqual(t["static 10 KB req/s ≥ 0.8× nginx"], ("0.80×", True))
        self.assertEqual(t["static 1 MB: no request reaches a worker"], ("0 requests", True))
        t = {name: ok for name, _, ok in report.targets(report.summarize(self.runs(7000, 10000, (0, 3))))}
        self.assertFalse(t["static 10 KB req/s ≥ 0.8× nginx"])
        self.assertFalse(t["static 10 KB: no request reaches a worker"])
        self.assertNotIn("static 10 KB req/s ≥ 0.8× nginx", [n for n, _, _ in report.targets(full_summary())])


class Baseline(unittest.TestCase):
    """A before/after run (--baseline): "rustrack smart (baseline)" rows with
    the usual columns, ratios of this build against them, a header line."""

    BL = "rustrack smart (baseline)"
    META_BL = dict(META, rustrack_version="rustrack 0.1.0",
                   baseline={"path": "/old/target/release/rustrack", "version": "rustrack 0.1.0",
                             "checkout": "/old at 7f7a1d8", "sha256": "c5867c9b93f7"})

    def runs(self):
        return [wrk_run("hello", RR, 0, 12000, 1.25, 5.0, frontend_cpu=25.0, server_cpu=100.0),
                wrk_run("hello", self.BL, 0, 10000, 1.5, 6.0, frontend_cpu=40.0, server_cpu=120.0),
                wrk_run("hello", PA, 0, 6000, 2.5, 10.0, frontend_cpu=97.4, server_cpu=190),
                wrk_run("hello", self.BL, 1, 8000, 1.5, 4.0, frontend_cpu=20.0, server_cpu=80.0),
                wrk_run("hello", RR, 1, 12000, 1.25, 5.0, frontend_cpu=25.0, server_cpu=100.0),
                memory_run(RR, 0, 100), memory_run(self.BL, 0, 125)]

    def test_rows_and_ratios(self):
        runs = self.runs()
        md = report.markdown(self.META_BL, report.summarize(runs), runs)
        rows = table_rows(md, "hello")
        self.assertEqual(list(rows), [RR, self.BL, PA])
        # | server | req/s | p50 | p99 | errors | read errors | rr rps ÷ this | rr p99 ÷ this | fe CPU | all CPU | load |
        self.assertEqual(rows[self.BL][1:], ["9000", "1.50", "5.00", "0", "0", "1.33", "1.00", "30.0", "100.0",
                                             "0.50 / 0.50"])
        self.assertEqual(rows[PA][6], "2.00")  # still against this build, not the baseline
        mem = table_rows(md, "memory")
        self.assertEqual(mem[self.BL][5], "1.25")  # the baseline's PSS ÷ this build's

    def test_targets_ignore_the_baseline(self):
        runs = self.runs()
        with_bl = report.targets(report.summarize(runs), self.META_BL)
        without = [r for r in runs if r["label"] != self.BL]
        self.assertEqual(with_bl, report.targets(report.summarize(without), META))

    def test_header_line_only_in_a_baseline_run(self):
        runs = self.runs()
        md = report.markdown(self.META_BL, report.summarize(runs), runs)
        line = next(x for x in md.splitlines() if x.startswith("- baseline:"))
        self.assertEqual(line, '- baseline: `/old/target/release/rustrack` (rustrack 0.1.0, /old at 7f7a1d8, '
                               'sha256 c5867c9b93f7) in the rows "rustrack smart (baseline)", against this build '
                               '(rustrack 0.1.0); in those rows "rustrack ÷ this" is this build ÷ the baseline, '
                               'and "÷ rustrack smart" the baseline ÷ this build')
        self.assertNotIn("baseline", report.markdown(META, report.summarize(runs[:1]), runs[:1]))
