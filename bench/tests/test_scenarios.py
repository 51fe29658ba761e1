"""scenarios and servers: run order, labels, which servers a selection runs."""

from __future__ import annotations

import tempfile
import types
import unittest
from pathlib import Path
from unittest import mock

from rbench import scenarios
from rbench.servers import ADAPTERS, PEERS, Spec
from rbench.servers import passenger, puma, rustrack, unicorn


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

    def test_labels_with_remedies(self):
        spec = Spec("rustrack", "smart", remedies=("warm-up", "refork"))
        self.assertEqual(spec.label, "rustrack smart + warm-up + refork")
        self.assertEqual(spec.slug, "rustrack-smart-warm-up-refork")
        self.assertEqual(Spec("rustrack", "smart", remedies=("heap aging",)).slug, "rustrack-smart-heap-aging")

    def test_scenario_names(self):
        self.assertEqual(list(scenarios.SCENARIOS),
                         ["hello", "rails", "upload", "download", "slow", "memory", "spawn", "static",
                          "threads", "realmem", "multiapp"])
        # realmem (an hour a round) and multiapp run only when named.
        self.assertEqual(scenarios.DEFAULT_SCENARIOS, list(scenarios.SCENARIOS)[:-2])
        self.assertEqual(set(scenarios.SCENARIO_SPECS), set(scenarios.SCENARIOS))
        self.assertEqual(set(scenarios.SCENARIO_PACKAGES), set(scenarios.SCENARIOS))
        self.assertEqual(PEERS, ["rustrack", "passenger", "puma", "unicorn", "nginx", "puma-nginx"])

    def test_servers_used(self):
        self.assertEqual(scenarios.servers_used(["spawn"], PEERS), ["rustrack", "passenger"])
        self.assertEqual(scenarios.servers_used(["static"], PEERS), ["rustrack", "nginx"])
        self.assertEqual(scenarios.servers_used(["hello"], PEERS),
                         ["rustrack", "passenger", "puma", "unicorn", "puma-nginx"])
        self.assertEqual(scenarios.servers_used(["upload", "download", "slow"], PEERS),
                         ["rustrack", "passenger", "puma", "unicorn"])
        self.assertEqual(scenarios.servers_used(["rails"], ["puma-nginx"]), ["puma-nginx"])
        self.assertEqual(scenarios.servers_used(["hello"], ["unicorn", "rustrack"]), ["unicorn", "rustrack"])
        self.assertEqual(scenarios.servers_used(["spawn"], ["puma"]), [])
        self.assertEqual(scenarios.servers_used(["threads"], PEERS), ["rustrack", "puma"])

    def test_spawn_specs_have_spawn_times(self):
        # Only servers whose adapter reads spawn times can be in SPAWN_SPECS.
        for spec in scenarios.SPAWN_SPECS:
            self.assertIn("spawn_ms", type(ADAPTERS[spec.server]).__dict__, spec.server)


HELP = """Usage: rustrack start [OPTIONS] [APP_ROOT]

      --refork-after <N[,N2,…]>
          Refork

      --preload-gc <PRELOAD_GC>
          Garbage collection in the preloader before the first fork

          [default: compact]
          [possible values: none, start, compact]

      --preload-hugepages <BOOL>
          [possible values: true, false]
"""

HELP_WARMUP_AGING = HELP.replace("none, start, compact", "none, start, compact, age") + """
      --warmup-request <[METHOD ]PATH>
          Serve this request to the app in the preloader before the first fork
"""


class Realmem(unittest.TestCase):
    PAGES = ["/", "/de"]

    def options(self, remedies, help_text=HELP):
        return scenarios.realmem_options(Spec("rustrack", "smart", remedies=remedies), help_text,
                                         self.PAGES, "50,100,1000")

    def test_remedies_become_options(self):
        self.assertEqual(self.options(()), [])
        self.assertEqual(self.options(("refork",)), ["--refork-after", "50,100,1000"])
        self.assertEqual(self.options(("warm-up", "refork"), HELP_WARMUP_AGING),
                         ["--warmup-request", "/", "--warmup-request", "/de", "--refork-after", "50,100,1000",
                          "--preload-gc", "compact"])
        self.assertEqual(self.options(("heap aging",), HELP_WARMUP_AGING), ["--preload-gc", "age"])

    def test_missing_flags_skip_with_a_reason(self):
        self.assertIn("--warmup-request", self.options(("warm-up",)))
        self.assertIn("possible values: none, start, compact", self.options(("heap aging",)))
        self.assertIn("--refork-after", self.options(("refork",), HELP.replace("--refork-after", "--other")))

    def test_preload_gc_modes_in_both_help_layouts(self):
        self.assertEqual(scenarios.preload_gc_modes(HELP), ["none", "start", "compact"])
        listed = ("      --preload-gc <PRELOAD_GC>\n          GC\n\n          Possible values:\n"
                  "          - none:    nothing\n          - aged:    GC until every object is old\n\n"
                  "      --preload-hugepages <BOOL>\n          [possible values: true, false]\n")
        self.assertEqual(scenarios.preload_gc_modes(listed), ["none", "aged"])
        self.assertEqual(scenarios.preload_gc_modes("no such option"), [])

    def test_specs(self):
        labels = [s.label for s in scenarios.REALMEM_SPECS]
        self.assertEqual(labels[:2], ["rustrack direct", "rustrack smart"])
        for want in ["rustrack smart + refork", "rustrack smart + warm-up + refork", "rustrack smart + heap aging",
                     "puma preload", "unicorn preload", "passenger smart"]:
            self.assertIn(want, labels)
        pages = scenarios.realmem_pages()
        self.assertEqual(len(pages), 83)
        self.assertEqual(pages[0], "/")

    def test_memory_figures(self):
        procs = [{"pid": 1, "role": "front", "pss": 10, "private_dirty": 8},
                 {"pid": 2, "role": "master", "pss": 50, "private_dirty": 40},
                 {"pid": 3, "role": "worker", "pss": 30, "private_dirty": 20},
                 {"pid": 4, "role": "worker", "pss": 35, "private_dirty": 25}]
        f = scenarios.memory_figures(procs)
        self.assertEqual((f["total_pss"], f["app_pss"], f["template_pss"]), (125, 115, 50))
        self.assertEqual((f["total_private_dirty"], f["app_private_dirty"]), (93, 85))
        self.assertEqual((f["worker_count"], f["worker_private_dirty"]), (2, [20, 25]))
        self.assertIsNone(scenarios.memory_figures([p for p in procs if p["role"] != "master"])["template_pss"])

    def test_refork_figures_from_status(self):
        st = {"reforks": 2, "generation": 3, "template": {"kind": "mold", "pid": 9},
              "workers": [{"generation": 3, "spawn_ms": 4.5}, {"generation": 3, "spawn_ms": 7.0},
                          {"generation": 2, "spawn_ms": 30.0}, {"generation": 3, "spawn_ms": None}]}
        self.assertEqual(rustrack.refork_figures(st), {"reforks": 2, "template": "mold", "mold_spawn_ms": [4.5, 7.0]})
        st = {"reforks": 0, "generation": 1, "template": {"kind": "preloader"}, "workers": []}
        self.assertEqual(rustrack.refork_figures(st), {"reforks": 0, "template": "preloader"})


def fake_server(server: str, variant: str, tmp: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(spec=Spec(server, variant), workers=2, max_pool=2, port=4000,
                                 app=tmp / "app", dir=tmp, reg=tmp / "r")


class Adapters(unittest.TestCase):
    def test_passenger_options(self):
        srv = fake_server("passenger", "smart", Path("/w"))
        self.assertNotIn("--max-preloader-idle-time", ADAPTERS["passenger"].argv(srv))
        srv.spec = Spec("passenger", "smart", options=("--max-preloader-idle-time", "0"))
        self.assertEqual(ADAPTERS["passenger"].argv(srv)[-2:], ["--max-preloader-idle-time", "0"])

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
        srv.spec = Spec("rustrack", "smart", remedies=("refork",), options=("--refork-after", "50"))
        self.assertEqual(ADAPTERS["rustrack"].argv(srv)[-2:], ["--refork-after", "50"])

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
        self.assertEqual(ADAPTERS["rustrack"].role("rustrack mold 9 (app): promoted after 50 requests"), "master")
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


class PumaBehindNginx(unittest.TestCase):
    """puma-nginx: the same Puma on a Unix socket, nginx in front of it."""

    def start(self, tmp: str):
        srv = fake_server("puma-nginx", "preload", Path(tmp))
        adapter = ADAPTERS["puma-nginx"]
        return srv, adapter.argv(srv), adapter.fronts(srv), (Path(tmp) / "nginx.conf").read_text()

    def test_puma_runs_as_puma_preload_on_a_socket(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            _, argv, _, _ = self.start(tmp)
        plain = ADAPTERS["puma"].argv(fake_server("puma", "preload", Path(tmp)))
        self.assertEqual(argv[:3], ["puma", "-b", f"unix://{tmp}/puma.sock"])
        # Everything but the bind is the plain "puma preload" command.
        self.assertEqual(argv[3:], plain[3:])
        self.assertEqual(argv[3:], ["-w", "2", "-t", "1:1", "-e", "production", "--preload", "config.ru"])

    def test_nginx_config(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            _, _, fronts, conf = self.start(tmp)
            self.assertTrue((Path(tmp) / "nginx-tmp").is_dir())
        self.assertEqual(fronts, [("nginx", ["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp,
                                             "-e", f"{tmp}/nginx-error.log"])])
        for line in [
            f"server unix:{tmp}/puma.sock fail_timeout=0;",
            "listen 127.0.0.1:4000;",  # the port wrk hits
            f"root {tmp}/app/public;",
            "location / { try_files $uri $uri.html $uri/index.html @puma; }",
            "proxy_pass http://puma;",
            "proxy_set_header Host $http_host;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_redirect off;",
            # nginx.py's shared part
            "daemon off;", "worker_processes auto;", "access_log off;", "keepalive_requests 1000000;",
            f"pid {tmp}/nginx.pid;", f"error_log {tmp}/nginx-error.log warn;",
            f"proxy_temp_path {tmp}/nginx-tmp/proxy;",
        ]:
            self.assertIn(line, conf)
        # Keep-alive to clients stays on; to Puma a connection per request
        # (nginx's default, as the documented configs).
        self.assertNotIn("keepalive_timeout 0", conf)
        self.assertNotIn("keepalive 32", conf)
        self.assertNotIn("proxy_http_version", conf)
        self.assertEqual(conf.count("{"), conf.count("}"))

    def test_static_config_is_the_shared_part_plus_its_server(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            _, _, _, proxy = self.start(tmp)
            ADAPTERS["nginx"].argv(fake_server("nginx", "static", Path(tmp)))
            static = (Path(tmp) / "nginx.conf").read_text()
        head = static[: static.index("    server {")]
        self.assertTrue(proxy.startswith(head))
        self.assertNotIn("upstream", static)

    def test_label_roles_and_packages(self):
        spec = Spec("puma-nginx", "preload")
        self.assertEqual(spec.label, "puma preload behind nginx")
        self.assertEqual(spec.slug, "puma-nginx-preload")
        self.assertEqual(ADAPTERS["puma-nginx"].packages, ("puma", "nginx"))
        a = ADAPTERS["puma-nginx"]
        self.assertEqual(a.role("nginx: master process nginx -c /w/nginx.conf"), "front")
        self.assertEqual(a.role("nginx: worker process"), "front")
        self.assertEqual(a.role("puma: cluster worker 1: 11 [app]"), "worker")
        self.assertEqual(a.role("puma 5.6.5 (unix:///w/puma.sock) [app]"), "master")

    def test_frontend_is_nginx_master_and_workers(self):
        from unittest import mock
        srv = fake_server("puma-nginx", "preload", Path("/w"))
        srv.fronts = [types.SimpleNamespace(pid=50)]
        # pid -> (ppid, state, ticks): puma's master 40 and workers, nginx's
        # master 50 and its two workers.
        tree = {40: (1, "S", 0), 41: (40, "S", 0), 42: (40, "S", 0), 50: (1, "S", 0),
                52: (50, "S", 0), 51: (50, "R", 0)}
        with mock.patch("rbench.procs.server_tree", return_value=tree):
            self.assertEqual(ADAPTERS["puma-nginx"].frontend_pids(srv), [50, 51, 52])
        self.assertEqual(ADAPTERS["puma-nginx"].frontend_pid(srv), 50)
        srv.fronts = []
        self.assertEqual(ADAPTERS["puma-nginx"].frontend_pids(srv), [])
        # Servers with one front-end process: that one.
        srv = fake_server("rustrack", "smart", Path("/w"))
        srv.proc = types.SimpleNamespace(pid=7)
        self.assertEqual(ADAPTERS["rustrack"].frontend_pids(srv), [7])
        self.assertEqual(ADAPTERS["puma"].frontend_pids(fake_server("puma", "preload", Path("/w"))), [])

    def test_runs_in_hello_and_rails_only_interleaved(self):
        self.assertEqual([s.label for s in scenarios.SCENARIO_SPECS["hello"]],
                         ["rustrack smart", "passenger smart", "puma preload", "puma preload behind nginx",
                          "unicorn preload"])
        self.assertIs(scenarios.SCENARIO_SPECS["rails"], scenarios.SCENARIO_SPECS["hello"])
        for scen in ["upload", "download", "slow", "memory", "spawn", "static", "threads", "realmem"]:
            self.assertNotIn("puma-nginx", {s.server for s in scenarios.SCENARIO_SPECS[scen]}, scen)
        order = [s.server for _, s in scenarios.interleaved(scenarios.APP_SPECS, 2)]
        self.assertEqual(order, ["rustrack", "passenger", "puma", "puma-nginx", "unicorn",
                                 "unicorn", "puma-nginx", "puma", "passenger", "rustrack"])



class Baseline(unittest.TestCase):
    """bench/run --baseline: the plain rustrack smart spec again, run by
    another binary, in the scenarios that compare with rustrack smart."""

    OLD = "/opt/old/rustrack"

    def ctx(self, baseline, servers=PEERS):
        return scenarios.Ctx(False, 2, 10.0, 2.0, Path("/nonexistent"), list(servers), baseline=baseline)

    def ran(self, scen, baseline, servers=PEERS):
        """(round, label) of every run_one call of scenario scen."""
        calls = []
        with mock.patch.object(scenarios, "run_one", lambda ctx, name, spec, rnd, *a, **k: calls.append((rnd, spec))):
            scenarios.SCENARIOS[scen](self.ctx(baseline, servers))
        return calls

    def test_label_and_slug(self):
        spec = Spec("rustrack", "smart", binary=self.OLD)
        self.assertEqual(spec.label, "rustrack smart (baseline)")
        self.assertEqual(spec.slug, "rustrack-smart-baseline")
        self.assertEqual(Spec("rustrack", "smart").label, "rustrack smart")
        self.assertEqual(Spec("rustrack", "smart").slug, "rustrack-smart")

    def test_specs_without_baseline_are_unchanged(self):
        for specs in [scenarios.APP_SPECS, scenarios.THROUGHPUT_SPECS, scenarios.MEMORY_SPECS]:
            self.assertEqual(scenarios.with_baseline(specs, None), specs)
        for scen in scenarios.BASELINE_SCENARIOS:
            self.assertTrue(all(s.binary is None for _, s in self.ran(scen, None)), scen)

    def test_baseline_right_after_plain_smart_only(self):
        specs = scenarios.with_baseline(scenarios.MEMORY_SPECS, self.OLD)
        self.assertEqual(len(specs), len(scenarios.MEMORY_SPECS) + 1)
        self.assertEqual([s.label for s in specs[:3]],
                         ["rustrack smart", "rustrack smart (baseline)", "rustrack direct"])
        self.assertEqual([s.binary for s in specs].count(self.OLD), 1)
        self.assertEqual([s.label for s in scenarios.with_baseline(scenarios.APP_SPECS, self.OLD)],
                         ["rustrack smart", "rustrack smart (baseline)", "passenger smart", "puma preload",
                          "puma preload behind nginx", "unicorn preload"])

    def test_interleaved_like_any_server(self):
        self.assertEqual([(r, s.label) for r, s in self.ran("upload", self.OLD)],
                         [(0, "rustrack smart"), (0, "rustrack smart (baseline)"), (0, "passenger smart"),
                          (0, "puma preload"), (0, "unicorn preload"),
                          (1, "unicorn preload"), (1, "puma preload"), (1, "passenger smart"),
                          (1, "rustrack smart (baseline)"), (1, "rustrack smart")])

    def test_which_scenarios_run_it(self):
        self.assertEqual(scenarios.BASELINE_SCENARIOS, ["hello", "rails", "upload", "download", "slow", "memory"])
        for scen in scenarios.BASELINE_SCENARIOS:
            labels = [s.label for _, s in self.ran(scen, self.OLD)]
            self.assertEqual(labels.count("rustrack smart (baseline)"), 2, scen)  # one per round
            self.assertTrue(all(s.binary in (None, self.OLD) for _, s in self.ran(scen, self.OLD)))
        for scen in ["spawn", "static"]:
            self.assertTrue(all(s.binary is None for _, s in self.ran(scen, self.OLD)), scen)

    def test_not_without_rustrack(self):
        labels = [s.label for _, s in self.ran("hello", self.OLD, ["puma"])]
        self.assertEqual(labels, ["puma preload", "puma preload"])

    def test_argv_and_status_use_the_baseline_binary(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv = fake_server("rustrack", "smart", Path(tmp))
            (Path(tmp) / "r" / "rustrack.1").mkdir(parents=True)
            plain = ADAPTERS["rustrack"].argv(srv)
            self.assertEqual(plain[0], str(scenarios.RUSTRACK))
            srv.spec = Spec("rustrack", "smart", binary=self.OLD)
            argv = ADAPTERS["rustrack"].argv(srv)
            self.assertEqual(argv, [self.OLD] + plain[1:])
            seen = []

            def fake_run(argv, **kw):
                seen.append(argv)
                return types.SimpleNamespace(returncode=0, stdout='{"workers": [{"spawn_ms": 5}], "processed_total": 3}')

            with mock.patch.object(rustrack.subprocess, "run", fake_run):
                self.assertEqual(ADAPTERS["rustrack"].ready_workers(srv), 1)
                self.assertEqual(ADAPTERS["rustrack"].app_processed(srv), {"app_processed": 3})
                srv.spec = Spec("rustrack", "smart")
                ADAPTERS["rustrack"].ready_workers(srv)
            self.assertEqual([a[:2] for a in seen], [[self.OLD, "status"]] * 2 + [[str(scenarios.RUSTRACK), "status"]])
            self.assertEqual(seen[0][2:], ["--instance", f"{tmp}/r/rustrack.1", "--json"])


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
