"""cli: the command line, and which runs replace the README's figures."""

from __future__ import annotations

import contextlib
import io
import unittest

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


if __name__ == "__main__":
    unittest.main()
