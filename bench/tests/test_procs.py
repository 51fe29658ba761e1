"""procs: /proc parsing and the process tree walk."""

from __future__ import annotations

import os
import unittest

from rbench import procs


class Proc(unittest.TestCase):
    def test_parse_stat_with_odd_command_name(self):
        # comm may hold spaces and parentheses: fields count from the last ')'.
        line = "4242 (Passenger core (x)) S 17 4242 4242 0 -1 4194560 10 0 0 0 120 35 0 0 20 0 5 0 100 0 0"
        self.assertEqual(procs.parse_stat(line), (17, "S", 155))

    def test_read_stat_of_self(self):
        ppid, state, ticks = procs.read_stat(os.getpid())
        self.assertEqual(ppid, os.getppid())
        self.assertIn(state, "RS")
        self.assertGreaterEqual(ticks, 0)
        self.assertIsNone(procs.read_stat(2**22 + 1))  # above pid_max

    def test_parse_smaps_rollup(self):
        text = ("00400000-7ffd0000 ---p 00000000 00:00 0  [rollup]\n"
                "Rss:              204800 kB\nPss:               51200 kB\n"
                "Private_Dirty:      1024 kB\nTHPeligible:    0\n")
        self.assertEqual(procs.parse_smaps_rollup(text),
                         {"Rss": 200 * 2**20, "Pss": 50 * 2**20, "Private_Dirty": 2**20})

    def test_tree_below(self):
        table = {10: (1, "S", 0), 11: (10, "S", 1), 12: (11, "Z", 2), 13: (10, "S", 3), 20: (1, "S", 4)}
        self.assertEqual(sorted(procs.tree_below(10, table)), [11, 12, 13])
        self.assertEqual(procs.tree_below(13, table), {})

    def test_pids_ticks(self):
        me = procs.pid_ticks(os.getpid())
        self.assertGreaterEqual(procs.pids_ticks([os.getpid(), os.getpid()]), 2 * me)
        # No process, or one gone: no figure rather than a partial sum.
        self.assertIsNone(procs.pids_ticks([]))
        self.assertIsNone(procs.pids_ticks([os.getpid(), 2**22 + 1]))

    def test_stop_terms_the_fronts_too(self):
        # A server and the proxy in front of it (two sleeps): both get TERM,
        # and stop returns once the whole tree is gone, without KILL.
        import subprocess
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as tmp:
            main = procs.spawn(["sleep", "60"], Path(tmp), dict(os.environ), Path(tmp) / "a.log")
            front = procs.spawn(["sleep", "60"], Path(tmp), dict(os.environ), Path(tmp) / "b.log")
            try:
                self.assertFalse(procs.stop(main, 10, "test", [front]))
            finally:
                for p in (main, front):
                    if p.poll() is None:
                        p.kill()
                        p.wait()
        self.assertEqual((main.returncode, front.returncode), (-15, -15))
        self.assertNotIn(front.pid, procs.server_tree())

    def test_wait_for(self):
        calls = []
        self.assertTrue(procs.wait_for(lambda: len(calls) >= 2, 1e18, lambda: calls.append(1), interval=0))
        self.assertEqual(len(calls), 2)
        self.assertFalse(procs.wait_for(lambda: False, 0, lambda: None))


if __name__ == "__main__":
    unittest.main()
