"""scenarios and servers: run order, labels, which servers a selection runs."""

from __future__ import annotations

import types
import unittest
from pathlib import Path

from rbench import scenarios
from rbench.servers import ADAPTERS, PEERS, Spec
from rbench.servers import passenger, puma, unicorn


class Order(unittest.TestCase):
    def test_interleaved(self):
        specs = [Spec("rustrack", "smart"), Spec("passenger", "smart"), Spec("puma", "preload")]
        order = [(r, s.server) for r, s in scenarios.interleaved(specs, 3)]
        self.assertEqual(order, [(0, "rustrack"), (0, "passenger"), (0, "puma"),
                                 (1, "puma"), (1, "passenger"), (1, "rustrack"),
                                 (2, "rustrack"), (2, "passenger"), (2, "puma")])

    def test_labels_and_slugs(self):
        self.assertEqual(Spec("rustrack", "smart", tight_gc=True).label, "rustrack smart (tight GC)")
        self.assertEqual(Spec("rustrack", "smart", no_hugepages=True).slug, "rustrack-smart-nohp")
        self.assertEqual(Spec("puma", "no-preload").label, "puma no-preload")
        self.assertEqual(Spec("rustrack", "direct", tight_gc=True).env,
                         {"RUBY_GC_HEAP_FREE_SLOTS_GOAL_RATIO": "0.05", "RUBY_GC_HEAP_FREE_SLOTS_MIN_RATIO": "0.02"})
        self.assertEqual(Spec("rustrack", "direct").env, {})
        self.assertEqual(Spec("rustrack", "smart", threads=4).label, "rustrack smart, 4 threads")
        self.assertEqual(Spec("puma", "preload", threads=4).slug, "puma-preload-t4")
        self.assertEqual(Spec("puma", "preload").label, "puma preload")

    def test_scenario_names(self):
        self.assertEqual(list(scenarios.SCENARIOS),
                         ["hello", "rails", "upload", "download", "slow", "memory", "spawn", "static",
                          "threads"])
        self.assertEqual(set(scenarios.SCENARIO_SPECS), set(scenarios.SCENARIOS))
        self.assertEqual(set(scenarios.SCENARIO_PACKAGES), set(scenarios.SCENARIOS))
        self.assertEqual(PEERS, ["rustrack", "passenger", "puma", "unicorn", "nginx"])

    def test_servers_used(self):
        self.assertEqual(scenarios.servers_used(["spawn"], PEERS), ["rustrack", "passenger"])
        self.assertEqual(scenarios.servers_used(["static"], PEERS), ["rustrack", "nginx"])
        self.assertEqual(scenarios.servers_used(["hello"], PEERS), ["rustrack", "passenger", "puma", "unicorn"])
        self.assertEqual(scenarios.servers_used(["hello"], ["unicorn", "rustrack"]), ["unicorn", "rustrack"])
        self.assertEqual(scenarios.servers_used(["spawn"], ["puma"]), [])
        self.assertEqual(scenarios.servers_used(["threads"], PEERS), ["rustrack", "puma"])

    def test_spawn_specs_have_spawn_times(self):
        # Only servers whose adapter reads spawn times can be in SPAWN_SPECS.
        for spec in scenarios.SPAWN_SPECS:
            self.assertIn("spawn_ms", type(ADAPTERS[spec.server]).__dict__, spec.server)


def fake_server(server: str, variant: str, tmp: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(spec=Spec(server, variant), workers=2, max_pool=2, port=4000,
                                 app=tmp / "app", dir=tmp, reg=tmp / "r")


class Adapters(unittest.TestCase):
    def test_puma_argv(self):
        argv = ADAPTERS["puma"].argv(fake_server("puma", "preload", Path("/w")))
        self.assertEqual(argv, ["puma", "-b", "tcp://127.0.0.1:4000", "-w", "2", "-t", "1:1",
                                "-e", "production", "--preload", "config.ru"])
        self.assertNotIn("--preload", ADAPTERS["puma"].argv(fake_server("puma", "no-preload", Path("/w"))))

    def test_threads_argv(self):
        srv = fake_server("puma", "preload", Path("/w"))
        srv.spec = Spec("puma", "preload", threads=4)
        argv = ADAPTERS["puma"].argv(srv)
        self.assertEqual(argv[argv.index("-t") + 1], "4:4")
        srv = fake_server("rustrack", "smart", Path("/w"))
        self.assertNotIn("--threads-per-worker", ADAPTERS["rustrack"].argv(srv))
        srv.spec = Spec("rustrack", "smart", threads=4)
        self.assertEqual(ADAPTERS["rustrack"].argv(srv)[-2:], ["--threads-per-worker", "4"])

    def test_unicorn_config(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            srv = fake_server("unicorn", "no-preload", Path(tmp))
            argv = ADAPTERS["unicorn"].argv(srv)
            conf = (Path(tmp) / "unicorn.rb").read_text()
        self.assertEqual(argv[:3], ["unicorn", "-c", f"{tmp}/unicorn.rb"])
        self.assertIn("worker_processes 2\n", conf)
        self.assertIn("preload_app false\n", conf)
        self.assertIn('listen "127.0.0.1:4000", backlog: 1024\n', conf)

    def test_rustrack_argv(self):
        srv = fake_server("rustrack", "smart", Path("/w"))
        argv = ADAPTERS["rustrack"].argv(srv)
        self.assertEqual(argv[1:3], ["start", "/w/app"])
        self.assertIn("--spawn-method", argv)
        self.assertNotIn("--preload-hugepages", argv)
        srv.spec = Spec("rustrack", "smart", no_hugepages=True)
        self.assertEqual(ADAPTERS["rustrack"].argv(srv)[-2:], ["--preload-hugepages", "false"])

    def test_readiness_from_logs(self):
        log = ("[1] - Worker 0 (PID: 11) booted in 0.01s, phase: 0\n"
               "[1] - Worker 1 (PID: 12) booted in 0.01s, phase: 0\n")
        self.assertEqual(puma.count_booted(log), 2)
        log = "I, worker=0 ready\nI, worker=1 ready\nI, worker=1 ready\n"
        self.assertEqual(unicorn.count_ready(log), 2)

    def test_roles(self):
        self.assertEqual(ADAPTERS["rustrack"].role("rustrack worker 1 (hello)"), "worker")
        self.assertEqual(ADAPTERS["rustrack"].role("rustrack preloader (hello)"), "master")
        self.assertEqual(ADAPTERS["rustrack"].role("/x/rustrack start /w/app"), "front")
        self.assertEqual(ADAPTERS["passenger"].role("Passenger RubyApp: /w/app (production)"), "worker")
        self.assertEqual(ADAPTERS["passenger"].role("Passenger AppPreloader: /w/app"), "master")
        self.assertEqual(ADAPTERS["passenger"].role("Passenger core"), "front")
        self.assertEqual(ADAPTERS["puma"].role("puma: cluster worker 0: 11 [app]"), "worker")
        self.assertEqual(ADAPTERS["unicorn"].role("unicorn worker[1] -c /w/unicorn.rb"), "worker")
        self.assertEqual(ADAPTERS["unicorn"].role("unicorn master -c /w/unicorn.rb"), "master")

    def test_passenger_status_xml(self):
        out = (b"Version : 6.0.17\n<?xml version=\"1.0\" encoding=\"iso8859-1\" ?>\n<info><supergroups><supergroup>"
               b"<group><processes>"
               b"<process><spawn_start_time>1000000</spawn_start_time><spawn_end_time>1050000</spawn_end_time></process>"
               b"<process><spawn_start_time>2000000</spawn_start_time><spawn_end_time>0</spawn_end_time></process>"
               b"</processes></group></supergroup></supergroups></info>")
        x = passenger.parse_status(out)
        self.assertEqual(passenger.spawn_times(x), [50.0])
        self.assertIsNone(passenger.parse_status(b"not running\n"))
        self.assertEqual(passenger.spawn_times(None), [])


if __name__ == "__main__":
    unittest.main()


class Static(unittest.TestCase):
    def test_files_have_their_sizes_and_fingerprinted_names(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            scenarios.write_static_files(Path(tmp))
            for path, size in scenarios.STATIC_FILES.items():
                self.assertEqual((Path(tmp) / "public" / path.lstrip("/")).stat().st_size, size)
                self.assertRegex(path, r"^/assets/[a-z]+-[0-9a-f]{16}\.\w+$")

    def test_nginx_config(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            srv = fake_server("nginx", "static", Path(tmp))
            argv = ADAPTERS["nginx"].argv(srv)
            conf = (Path(tmp) / "nginx.conf").read_text()
        self.assertEqual(argv[:3], ["nginx", "-c", f"{tmp}/nginx.conf"])
        self.assertIn("listen 127.0.0.1:4000;", conf)
        self.assertIn(f"root {tmp}/app/public;", conf)
        self.assertIn("try_files $uri $uri.html $uri/index.html =404;", conf)
        self.assertIn("sendfile on;", conf)
        self.assertIn("daemon off;", conf)
