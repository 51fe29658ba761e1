"""cli: the command line, and which runs replace the README's figures."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import types
import unittest
from pathlib import Path
from unittest import mock

from rbench import cli
from rbench.servers import PEERS

ALL = ["hello", "rails", "upload", "download", "slow", "memory", "spawn", "static", "threads"]


class Publishes(unittest.TestCase):
    def test_full_run(self):
        self.assertTrue(cli.publishes(False, ALL, PEERS))
        self.assertTrue(cli.publishes(False, list(reversed(ALL)), list(reversed(PEERS))))

    def test_realmem_is_not_needed_to_publish(self):
        self.assertTrue(cli.publishes(False, ALL + ["realmem"], PEERS))
        self.assertFalse(cli.publishes(False, ["realmem"], PEERS))
        self.assertTrue(cli.publishes(False, ALL + ["multiapp"], PEERS))

    def test_partial_runs(self):
        self.assertFalse(cli.publishes(True, ALL, PEERS))
        self.assertFalse(cli.publishes(False, ALL[:-1], PEERS))
        # A peer skipped (not installed) or left out with --servers.
        self.assertFalse(cli.publishes(False, ALL, ["rustrack", "puma", "unicorn"]))
        self.assertFalse(cli.publishes(False, ALL, ["rustrack", "passenger", "puma", "unicorn"]))

    def test_a_baseline_run_never_publishes(self):
        self.assertTrue(cli.publishes(False, ALL, PEERS, None))
        self.assertFalse(cli.publishes(False, ALL, PEERS, "/old/rustrack"))


class CommandLine(unittest.TestCase):
    def parse(self, *argv):
        return cli.parser().parse_args(list(argv))

    def test_defaults(self):
        a = self.parse()
        self.assertFalse(a.install)
        self.assertEqual(a.servers, ",".join(PEERS))
        self.assertIsNone(a.only)

    def test_install_flags(self):
        self.assertTrue(self.parse("--install").install)
        self.assertTrue(self.parse("--no-install").no_install)
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            self.parse("--install", "--no-install")

    def test_unknown_names_fail_before_anything_runs(self):
        for argv in (["--only", "hello,nope"], ["--servers", "rustrack,lighttpd"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
                cli.main(argv)
            self.assertEqual(cm.exception.code, 2)
            self.assertIn("unknown", err.getvalue())



def executable(tmp: str, name: str = "rustrack", mode: int = 0o755) -> str:
    path = Path(tmp) / name
    path.write_text("#!/bin/sh\necho rustrack 0.0.9\n")
    path.chmod(mode)
    return str(path)


class BaselineOption(unittest.TestCase):
    def test_parsed(self):
        self.assertIsNone(cli.parser().parse_args([]).baseline)
        self.assertEqual(cli.parser().parse_args(["--baseline", "/old/rustrack"]).baseline, "/old/rustrack")

    def test_checked(self):
        with tempfile.TemporaryDirectory() as tmp:
            good = executable(tmp)
            self.assertEqual(cli.check_baseline(good, ["hello"], PEERS), good)
            # Made absolute: servers start in their app copy's directory.
            with contextlib.chdir(tmp):
                self.assertEqual(cli.check_baseline("rustrack", ["memory"], ["rustrack"]), good)
            cases = [
                ((f"{tmp}/missing", ["hello"], PEERS), "no such file"),
                ((executable(tmp, "plain", 0o644), ["hello"], PEERS), "not an executable file"),
                ((tmp, ["hello"], PEERS), "not an executable file"),
                ((good, ["hello"], ["puma"]), "--servers must include rustrack"),
                ((good, ["spawn", "static"], PEERS), "--only selects none of them"),
            ]
            for argv, why in cases:
                with self.assertRaises(ValueError) as cm:
                    cli.check_baseline(*argv)
                self.assertIn(why, str(cm.exception))

    def test_bad_baseline_fails_before_anything_runs(self):
        err = io.StringIO()
        with mock.patch.object(cli.prereqs, "plan") as plan, contextlib.redirect_stderr(err), \
                self.assertRaises(SystemExit) as cm:
            cli.main(["--baseline", "/nonexistent/rustrack", "--only", "hello"])
        self.assertEqual(cm.exception.code, 2)
        self.assertIn("--baseline /nonexistent/rustrack: no such file", err.getvalue())
        plan.assert_not_called()


class Main(unittest.TestCase):
    """cli.main with every scenario, server and file write faked: what
    reaches the scenarios, the meta and the README."""

    def run_main(self, *argv):
        seen = {}

        def scenario(name):
            def run(ctx):
                seen.setdefault("baseline", set()).add(ctx.baseline)
            return run

        def collect(ctx, now, scenarios, servers, skipped):
            return {"loadavg_start": [0, 0, 0], "baseline": {"version": "v", "sha256": "x"} if ctx.baseline else None}

        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as st:
            rustrack = executable(tmp)
            st.enter_context(mock.patch.object(cli, "RUSTRACK", Path(rustrack)))
            st.enter_context(mock.patch.object(cli.prereqs, "plan", lambda scen, servers, allow_install:
                                               types.SimpleNamespace(servers=servers, skipped={})))
            st.enter_context(mock.patch.object(cli.procs, "become_subreaper", lambda: True))
            st.enter_context(mock.patch.object(cli.procs, "kill_tree", lambda: None))
            st.enter_context(mock.patch.object(cli, "collect", collect))
            st.enter_context(mock.patch.object(cli, "SCENARIOS", {n: scenario(n) for n in cli.SCENARIOS}))
            st.enter_context(mock.patch.object(cli.report, "write_results", lambda meta, runs, name: "md"))
            update = st.enter_context(mock.patch.object(cli.report, "update_readme"))
            st.enter_context(contextlib.redirect_stdout(io.StringIO()))
            st.enter_context(contextlib.redirect_stderr(io.StringIO()))
            code = cli.main(["--no-build", *[a.replace("OLD", rustrack) for a in argv]])
        return code, seen, update

    def test_full_run_replaces_the_readme(self):
        code, seen, update = self.run_main()
        self.assertEqual(code, 0)
        self.assertEqual(seen["baseline"], {None})
        update.assert_called_once()

    def test_baseline_run_does_not(self):
        code, seen, update = self.run_main("--baseline", "OLD")
        self.assertEqual(code, 0)
        (baseline,) = seen["baseline"]
        self.assertTrue(os.path.isabs(baseline) and baseline.endswith("/rustrack"))
        update.assert_not_called()


if __name__ == "__main__":
    unittest.main()
