"""multiapp: order, what a timed request waits for, command lines, summary and tables."""

from __future__ import annotations

import tempfile
import types
import unittest
from pathlib import Path

from rbench import multiapp, report

from .helpers import META

MB = 2**20


def sample(tag: str, pss_mb: float, n: int) -> dict:
    return {"t": 0.0, "tag": tag, "pss": pss_mb * MB, "processes": n}


def first(kind: str, ms: float, cold: float | None = None, status: int = 200) -> dict:
    f = {"app": "app1", "kind": kind, "status": status, "ms": ms, "second_ms": ms / 10}
    if cold is not None:
        f["cold_start_ms"] = cold
    return f


def wrk(rps: float, p99_ms: float, errors: int = 0) -> dict:
    return {"requests": 100, "rps": rps, "p50_us": 1000.0, "p99_us": p99_ms * 1000, "errors_total": errors}


def run(key: str, rnd: int, samples: list, firsts: list, starts: list, wrks: list) -> dict:
    return {"scenario": "multiapp", "server": "rustrack", "variant": key,
            "label": f"{key}: {multiapp.CONFIGS[key]}", "round": rnd, "loadavg_before": [1.5, 1.0, 1.0],
            "samples": samples, "warmup": starts,
            "phases": [{"app": "app1", "first": f, "wrk": w} for f, w in zip(firsts, wrks)]}


def a_run(rnd: int = 0) -> dict:
    samples = [sample("warmup", 50, 4), sample("idle 0", 120, 8), sample("idle 0", 60, 4),
               sample("load 0", 140, 8), sample("load 0", 160, 8),
               sample("idle end", 100, 6), sample("idle end", 60, 4)]
    return run("A", rnd, samples, [first("fork", 50.0, cold=4.0), first("fork", 70.0, cold=6.0)],
               [first("boot", 2500.0, cold=2400.0)], [wrk(1000, 40), wrk(1200, 60)])


def b_run(rnd: int = 1) -> dict:
    samples = [sample("idle 0", 240, 12), sample("load 0", 240, 12), sample("load 0", 250, 12),
               sample("idle end", 240, 12)]
    return run("B", rnd, samples, [first("worker", 3.0), first("worker", 5.0, status=502)],
               [first("worker", 4.0)], [wrk(900, 50, errors=2), wrk(1100, 50)])


class Plan(unittest.TestCase):
    def test_order_alternates(self):
        self.assertEqual(list(multiapp.order(3)), [(0, "A"), (0, "B"), (1, "B"), (1, "A"), (2, "A"), (2, "B")])

    def test_phases_visit_every_app_and_come_back(self):
        self.assertEqual([multiapp.APPS[i] for i in multiapp.PHASES], ["app1", "app2", "app3", "app1"])
        # A's apps must have scaled down before the next timed request.
        self.assertGreater(multiapp.IDLE_S, multiapp.POOL_IDLE_S + 1)

    def test_kind(self):
        self.assertEqual(multiapp.kind({"processes": 2, "preloader_pid": 10}), "worker")
        self.assertEqual(multiapp.kind({"processes": 0, "preloader_pid": 10}), "fork")
        self.assertEqual(multiapp.kind({"processes": 0, "preloader_pid": None}), "boot")
        self.assertEqual(multiapp.kind(None), "boot")

    def test_group(self):
        st = {"processes": 1, "groups": [{"app": "app1", "processes": 0}, {"app": "app2", "processes": 3}]}
        self.assertEqual(multiapp.group(st, "app2")["processes"], 3)
        self.assertIsNone(multiapp.group(st, "app3"))
        single = {"processes": 2, "preloader_pid": 7}
        self.assertIs(multiapp.group(single, None), single)
        self.assertIsNone(multiapp.group(None, "app1"))


class CommandLines(unittest.TestCase):
    def test_a_serves_three_roots_from_one_instance_and_b_runs_three(self):
        with tempfile.TemporaryDirectory() as tmp:
            ctx = types.SimpleNamespace(counter=0)

            def new_dir(name):
                ctx.counter += 1
                return Path(tmp) / f"{ctx.counter}" / "s"

            ctx.new_dir = new_dir
            a = multiapp.instances(ctx, "A")
            one = a["app1"]
            self.assertEqual({id(i) for i in a.values()}, {id(one)})
            argv = one.argv()
            self.assertEqual(argv[argv.index("--max-pool-size") + 1], "4")
            self.assertEqual(argv[argv.index("--min-instances") + 1], "0")
            self.assertEqual(argv[argv.index("--pool-idle-time") + 1], "5")
            self.assertEqual([argv[i + 1] for i, x in enumerate(argv) if x == "--app"],
                             ["app1.test=app1", "app2.test=app2", "app3.test=app3"])
            for app in multiapp.APPS:
                self.assertTrue((one.app / app / "config.ru").is_file())
            self.assertFalse((one.app / "config.ru").exists())

            b = multiapp.instances(ctx, "B")
            self.assertEqual(len({i.app for i in b.values()}), 3)
            for inst in b.values():
                argv = inst.argv()
                self.assertNotIn("--app", argv)
                self.assertEqual(argv[argv.index("--min-instances") + 1], "2")
                self.assertEqual(argv[argv.index("--max-pool-size") + 1], "2")
                self.assertEqual(argv[argv.index("--environment") + 1], "production")


class Summary(unittest.TestCase):
    def test_pss(self):
        p = multiapp.pss([a_run()], "idle")
        self.assertAlmostEqual(p["mean"] / MB, (120 + 60 + 100 + 60) / 4)
        self.assertEqual(p["max"] / MB, 120)
        self.assertAlmostEqual(p["settled"] / MB, 60)  # last sample of "idle 0" and of "idle end"
        self.assertEqual(p["processes"], 5.5)
        self.assertEqual(multiapp.pss([a_run()], "load")["mean"] / MB, 150)

    def test_summarize(self):
        s = multiapp.summarize([a_run(0), a_run(1)])
        self.assertEqual(s["rps"], 1100)
        self.assertEqual(s["p99_ms"], 50)
        self.assertEqual(s["first_kinds"], "fork ×4")
        self.assertEqual(s["cold_start_ms"], [4.0, 6.0, 4.0, 6.0])
        self.assertEqual(s["start_kinds"], "boot ×2")
        b = multiapp.summarize([b_run()])
        self.assertEqual(b["errors"], 3)  # 2 from wrk, one timed request answered 502
        self.assertEqual(b["cold_start_ms"], [])

    def test_kinds(self):
        self.assertEqual(multiapp.kinds(["worker", "boot", "worker"]), "worker ×2, boot ×1")
        self.assertEqual(multiapp.kinds([]), "–")


class Table(unittest.TestCase):
    def test_report_renders_both_configurations_and_the_ratios(self):
        runs = [a_run(0), b_run(0), b_run(1), a_run(1)]
        s = report.summarize(runs)
        md = report.markdown(dict(META), s, runs)
        self.assertIn("## multiapp", md)
        self.assertIn("| A: one instance, 3 apps, --max-pool-size 4 | 150 / 160 | 85 / 120 | 60 |", md)
        self.assertIn("| B: three instances, 2 workers each | 245 / 250 | 240 / 240 | 240 |", md)
        self.assertIn("| A: one instance, 3 apps, --max-pool-size 4 | 60.0 / 70.0 | fork ×4 | 5.0 | 6.0 | "
                      "2500 / 2500 | boot ×2 |", md)
        # A ÷ B: PSS under load 150/245, max 160/250, settled 60/240, req/s 1100/1000, p99 50/50, first 60/4.
        self.assertIn("| | 0.61 | 0.64 | 0.25 | 1.10 | 1.00 | 15.00 |", md)

    def test_a_failed_configuration_has_a_row_and_no_ratios(self):
        failed = {"scenario": "multiapp", "server": "rustrack", "variant": "B", "round": 0,
                  "label": f"B: {multiapp.CONFIGS['B']}", "loadavg_before": [2.0, 1.0, 1.0],
                  "error": "ServerError: x"}
        runs = [a_run(0), failed]
        md = report.markdown(dict(META), report.summarize(runs), runs)
        row = "| B: three instances, 2 workers each | – | – | – | – | – | – | – | 1 runs failed | 2.00 |"
        self.assertIn(row, md)
        self.assertNotIn("| A ÷ B |", md)
        self.assertIn("- multiapp round 1 B: three instances, 2 workers each: ServerError: x", md)

if __name__ == "__main__":
    unittest.main()
