"""meta: versions are asked of the peers that run, in the report's order."""

from __future__ import annotations

import subprocess
import unittest
from unittest import mock

from rbench import meta


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


if __name__ == "__main__":
    unittest.main()
