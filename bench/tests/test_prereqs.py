"""prereqs: what a selection needs, and what happens without --install."""

from __future__ import annotations

import unittest
from unittest import mock

from rbench import prereqs
from rbench.servers import PEERS


def only(*installed):
    return lambda p: p in installed


@mock.patch("rbench.prereqs.log", lambda msg: None)
class Plan(unittest.TestCase):
    def test_everything_installed(self):
        plan = prereqs.plan(["hello", "spawn"], PEERS, False,
                            only("ruby-rack", "wrk", "ruby-rails", "passenger", "puma", "unicorn", "nginx"))
        self.assertEqual(plan.servers, ["rustrack", "passenger", "puma", "unicorn", "puma-nginx"])
        self.assertEqual(plan.skipped, {})

    def test_static_runs_nginx_and_skips_it_when_missing(self):
        plan = prereqs.plan(["static"], PEERS, False, only("ruby-rack", "wrk", "nginx"))
        self.assertEqual(plan.servers, ["rustrack", "nginx"])
        plan = prereqs.plan(["static"], PEERS, False, only("ruby-rack", "wrk"))
        self.assertEqual(plan.servers, ["rustrack"])
        self.assertEqual(plan.skipped, {"nginx": "Debian package nginx not installed"})

    def test_missing_peer_is_skipped(self):
        plan = prereqs.plan(["hello"], PEERS, False, only("ruby-rack", "wrk", "puma"))
        self.assertEqual(plan.servers, ["rustrack", "puma"])
        self.assertEqual(plan.skipped, {"passenger": "Debian package passenger not installed",
                                        "unicorn": "Debian package unicorn not installed",
                                        "puma-nginx": "Debian package nginx not installed"})

    def test_puma_behind_nginx_needs_both_packages(self):
        plan = prereqs.plan(["rails"], ["puma-nginx"], False, only("ruby-rack", "wrk", "ruby-rails", "puma", "nginx"))
        self.assertEqual(plan.servers, ["puma-nginx"])
        with self.assertRaisesRegex(prereqs.PrereqError, "puma-nginx: Debian package puma, nginx not installed"):
            prereqs.plan(["hello"], ["puma-nginx"], False, only("ruby-rack", "wrk"))
        # Run only by hello and rails: not checked for the other scenarios.
        plan = prereqs.plan(["upload", "static"], PEERS, False, only("ruby-rack", "wrk", "puma", "nginx"))
        self.assertNotIn("puma-nginx", plan.servers)
        self.assertNotIn("puma-nginx", plan.skipped)

    def test_peer_not_run_by_the_scenarios_is_not_checked(self):
        plan = prereqs.plan(["spawn"], PEERS, False, only("ruby-rack", "ruby-rails", "passenger"))
        self.assertEqual(plan.servers, ["rustrack", "passenger"])
        self.assertEqual(plan.skipped, {})

    def test_missing_harness_package_stops_the_run(self):
        with self.assertRaises(prereqs.PrereqError) as cm:
            prereqs.plan(["memory", "hello", "rails"], ["rustrack"], False, only("ruby-rack"))
        msg = str(cm.exception)
        self.assertIn("wrk (for hello, rails)", msg)
        self.assertIn("ruby-rails (for rails)", msg)
        self.assertIn("--install", msg)

    def test_memory_needs_no_wrk(self):
        plan = prereqs.plan(["memory"], ["rustrack"], False, only("ruby-rack"))
        self.assertEqual(plan.servers, ["rustrack"])

    def test_no_server_left(self):
        with self.assertRaisesRegex(prereqs.PrereqError, "none of the selected servers"):
            prereqs.plan(["hello"], ["puma"], False, only("ruby-rack", "wrk"))
        with self.assertRaisesRegex(prereqs.PrereqError, "none of the servers puma runs in spawn"):
            prereqs.plan(["spawn"], ["puma"], False, only("ruby-rack", "ruby-rails", "puma"))

    def test_install_installs_only_the_missing(self):
        with mock.patch("rbench.prereqs.install") as install:
            plan = prereqs.plan(["hello"], ["rustrack", "puma"], True, only("ruby-rack"))
        install.assert_called_once_with(["wrk", "puma"])
        self.assertEqual(plan.installed, ["wrk", "puma"])
        self.assertEqual(plan.servers, ["rustrack", "puma"])

    def test_install_with_nothing_missing(self):
        with mock.patch("rbench.prereqs.install") as install:
            plan = prereqs.plan(["hello"], ["rustrack"], True, only("ruby-rack", "wrk"))
        install.assert_not_called()
        self.assertEqual(plan.servers, ["rustrack"])


if __name__ == "__main__":
    unittest.main()
