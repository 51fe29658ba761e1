"""rbench.balancer: HAProxy's configuration from docs/deployment.md, its
`show stat` and request log, the event schedule, and the summaries and
Markdown of recorded runs (no server or HAProxy started)."""

from __future__ import annotations

import unittest
from pathlib import Path

from rbench import balancer as b

# `show stat` of HAProxy 2.6.12 with this harness's configuration, both
# servers down (nothing listening behind them).
SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
web,FRONTEND,,,0,1,4096,1,83,217,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,1,0,1,,,,0,0,0,0,1,0,,1,1,1,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,1,1,1,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,80,214,0,0,
rustrack,a,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,3,3,,1,3,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,1,0,,,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
rustrack,b,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,1,0,,,,127.0.0.1:18082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
rustrack,BACKEND,0,0,0,1,410,1,83,217,0,0,,1,0,0,0,DOWN,0,0,0,,1,2,2,,1,3,0,,0,,1,1,,1,,,,0,0,0,0,1,0,,,,1,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,0,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,9,9,0,0,0,0,
"""

# HAProxy's output in that state: state changes on stderr and through the
# log, and one logged request (503, no server).
HAPROXY_OUT = """[WARNING]  (19162) : Server rustrack/a is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms. 1 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.
Server rustrack/a is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms. 1 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.
[WARNING]  (19162) : Server rustrack/b is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.
Server rustrack/b is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.
[ALERT]    (19162) : backend 'rustrack' has no server available!
backend rustrack has no server available!
1795979486.806 127.0.0.1:43236 rustrack/<NOSRV> 0/-1/-1/-1/0 503 217 SC-- 1/1/0/0/0 0/0 \"GET /x HTTP/1.1\"
"""

# A request HAProxy retried on another server (redispatched: "+1") and
# answered 200, then one that failed with an empty response from b.
RETRIED = (
    '1795979490.120 127.0.0.1:43240 rustrack/b 0/0/0/1/3 200 124 ---- 16/16/15/7/+1 0/0 "GET / HTTP/1.1"\n'
    '1795979491.500 127.0.0.1:43250 rustrack/b 0/0/0/-1/2 502 221 SH-- 16/16/15/8/2 0/0 "GET / HTTP/1.1"\n'
)


def wrk_result(rps: float, p99_ms: float, status: int = 0, read: int = 0) -> dict:
    errors = {"connect": 0, "read": read, "write": 0, "status": status, "timeout": 0}
    return {"requests": int(rps * 60), "duration_us": 60_000_000, "rps": rps, "p50_us": 800.0,
            "p99_us": p99_ms * 1000, "errors": errors, "errors_total": sum(errors.values())}


def balancer_run(config: str, rnd: int, rps: float, p99_ms: float, status: int = 0, events: int = 0,
                 error: str | None = None) -> dict:
    r = {"part": "balancer", "config": config, "round": rnd, "loadavg_before": [1.5, 1.0, 1.0]}
    if error:
        r["error"] = error
        return r
    r["wrk"] = wrk_result(rps, p99_ms, status=status)
    r["haproxy_log"] = {"retried_ok": 1, "failed": 0, "retries": 1, "failed_lines": []}
    r["events"] = [{"name": "restart a", "kind": "restart", "server": "a", "due": 5.0, "began": 5.0,
                    "term": 5.0, "down": 5.3, "exit": 7.1, "start": 7.1, "ready": 8.0, "up": 9.2,
                    "end": 9.2, "exit_code": 0, "done": True}] * events
    r["state_changes"] = [{"t": 5.3, "server": "a", "from": "UP", "to": "DOWN"},
                          {"t": 9.1, "server": "a", "from": "DOWN 1/2", "to": "UP"}] if events else []
    return r


def overhead_run(config: str, rnd: int, rps: float, cpu: float) -> dict:
    r = {"part": "overhead", "config": config, "round": rnd, "loadavg_before": [2.0, 1.0, 1.0],
         "wrk": wrk_result(rps, 3.0), "cpu_us_per_req": cpu}
    if config == "behind-balancer":
        r["polls"] = {"ok": 30, "failed": 0}
    return r


META = {"date": "2026-11-29 20:20", "cpus": 2, "kernel": "Linux 6.18", "loadavg_start": "1.00 1.00 1.00",
        "loadavg_end": "2.00 2.00 2.00", "commit": "abc1234", "haproxy": "HAProxy version 2.6.12",
        "wrk": "wrk 4.1.0", "ruby": "ruby 3.1.7p261", "tcp_migrate_req": "1", "rounds": 2, "duration": 60.0,
        "events": list(b.EVENTS), "schedule": b.schedule(60, list(b.EVENTS)), "overhead_rounds": 2,
        "overhead_duration": 15.0, "overhead_warmup": 2.0}


class ConfigTest(unittest.TestCase):
    def test_the_backend_is_the_documented_block_with_ports_filled_in(self):
        doc = b.DEPLOYMENT_DOC.read_text()
        backend = b.snippet(doc, "haproxy")
        self.assertIn("option httpchk GET /up", backend)
        cfg = b.haproxy_config(Path("/tmp/x"), 8000, 8001, 8002, backend)
        self.assertIn("bind 127.0.0.1:8000", cfg)
        self.assertIn("server a 127.0.0.1:8001 check", cfg)
        self.assertIn("server b 127.0.0.1:8002 check", cfg)
        self.assertIn("stats socket /tmp/x/haproxy.sock", cfg)
        self.assertIn("option dontlog-normal", cfg)
        self.assertNotIn("{{", cfg)

    def test_an_unfilled_placeholder_is_refused(self):
        with self.assertRaises(ValueError):
            b.fill("server a {{ADDRESS_A}} {{OTHER}}", {"ADDRESS_A": "x"})

    def test_the_instances_match_the_documented_backend(self):
        # send-proxy-v2 needs --proxy-protocol from a trusted proxy, and
        # the health check path must be the one HAProxy asks for.
        opts = b.INSTANCE_OPTIONS
        self.assertIn("--proxy-protocol", opts)
        self.assertEqual(opts[opts.index("--health-check-path") + 1], "/up")
        self.assertIn("--reuse-port", opts)


class ParseTest(unittest.TestCase):
    def test_show_stat(self):
        stat = b.parse_show_stat(SHOW_STAT)
        self.assertEqual(b.server_states(stat), {"a": "DOWN", "b": "DOWN"})
        c = b.stat_counters(stat)
        self.assertEqual(set(c), {"a", "b", "BACKEND"})
        self.assertEqual(c["a"]["chkdown"], 1)
        self.assertEqual(c["BACKEND"]["hrsp_5xx"], 1)
        self.assertEqual(c["b"]["wretr"], 0)
        self.assertEqual(b.parse_show_stat(""), {})

    def test_haproxy_log(self):
        p = b.parse_haproxy_log(HAPROXY_OUT, t0_wall=1795979486.0)
        self.assertEqual(len(p["requests"]), 1)
        r = p["requests"][0]
        self.assertEqual((r["server"], r["status"], r["tsc"], r["retries"]), ("<NOSRV>", 503, "SC--", 0))
        self.assertAlmostEqual(r["t"], 0.806, places=3)
        self.assertTrue(any("rustrack/a is DOWN" in x for x in p["other"]))
        s = b.log_summary(p)
        self.assertEqual((s["logged"], s["failed"], s["retried_ok"]), (1, 1, 0))

    def test_retried_requests_are_told_from_failed_ones(self):
        s = b.log_summary(b.parse_haproxy_log(RETRIED))
        self.assertEqual((s["logged"], s["retried_ok"], s["failed"], s["retries"]), (2, 1, 1, 3))
        self.assertEqual(s["by_tsc"], {"----": 1, "SH--": 1})
        self.assertTrue(b.parse_haproxy_log(RETRIED)["requests"][0]["redispatched"])
        self.assertEqual(s["failed_lines"][0]["status"], 502)
        self.assertEqual([x["server"] for x in s["retried_lines"]], ["b"])

    def test_a_logged_request_is_placed_in_the_event_under_way(self):
        events = [{"name": "restart a", "began": 5.0, "end": 9.2}, {"name": "upgrade b", "began": 16.0, "end": 20.0}]
        self.assertEqual(b.event_at(9.5, events), "restart a (began 5.0)")
        self.assertEqual(b.event_at(12.0, events), "–")
        self.assertEqual(b.event_at(None, events), "–")

    def test_state_changes(self):
        samples = [(0.0, {"a": "UP", "b": "UP"}), (0.1, {"a": "UP", "b": "UP"}), (0.2, {"a": "DOWN", "b": "UP"}),
                   (0.3, {"a": "DOWN 1/2", "b": "UP"}), (0.4, {"a": "UP", "b": "UP"})]
        self.assertEqual([(c["t"], c["server"], c["to"]) for c in b.transitions(samples)],
                         [(0.2, "a", "DOWN"), (0.3, "a", "DOWN 1/2"), (0.4, "a", "UP")])

    def test_rate_timeline(self):
        counts = [(0.0, {"a": 0, "b": 0, "BACKEND": 0}), (0.5, {"a": 50, "b": 50, "BACKEND": 100}),
                  (1.0, {"a": 100, "b": 100, "BACKEND": 200}), (2.0, {"a": 100, "b": 400, "BACKEND": 500})]
        self.assertEqual(b.rate_timeline(counts), [{"t": 1.0, "BACKEND": 200, "a": 100, "b": 100},
                                                   {"t": 2.0, "BACKEND": 300, "a": 0, "b": 300}])
        self.assertEqual(b.rate_timeline([]), [])

    def test_failed_requests_count_every_wrk_error(self):
        w = wrk_result(100, 1)
        w["errors"] = {"connect": 1, "read": 2, "write": 3, "status": 4, "timeout": 5}
        self.assertEqual(b.failed_requests(w), 15)


class ScheduleTest(unittest.TestCase):
    def test_events_spread_over_the_run(self):
        self.assertEqual(b.schedule(60, list(b.EVENTS)), [5.0, 16.25, 27.5, 38.75])
        self.assertEqual(b.schedule(15, ["restart a"]), [5.0])
        self.assertEqual(b.schedule(60, []), [])

    def test_rounds_interleave(self):
        self.assertEqual(b.interleaved(3, b.CONFIGS),
                         [(0, "disturbed"), (0, "unchanged"), (1, "unchanged"), (1, "disturbed"),
                          (2, "disturbed"), (2, "unchanged")])


class SummaryTest(unittest.TestCase):
    def runs(self):
        return [
            balancer_run("disturbed", 0, 9000, 4.0, events=4),
            balancer_run("unchanged", 0, 10000, 2.0),
            balancer_run("unchanged", 1, 8000, 3.0),
            balancer_run("disturbed", 1, 8000, 3.0, status=2, events=4),
        ]

    def test_balancer_summary(self):
        s = b.summarize(self.runs())
        self.assertEqual(s["disturbed"]["failed"], 2)
        self.assertEqual(s["disturbed"]["failed_per_round"], [0, 2])
        self.assertEqual(s["unchanged"]["failed"], 0)
        self.assertAlmostEqual(s["p99_ratio"], 3.5 / 2.5)
        self.assertEqual([round(x, 2) for x in s["p99_round_ratios"]], [2.0, 1.0])
        self.assertEqual((s["events_done"], s["events_planned"]), (8, 8))

    def test_a_failed_run_is_left_out_of_the_means(self):
        runs = self.runs() + [balancer_run("unchanged", 2, 0, 0, error="RuntimeError: boom")]
        s = b.summarize(runs)
        self.assertEqual(s["unchanged"]["rounds"], 2)
        self.assertEqual(s["unchanged"]["errors"], ["RuntimeError: boom"])

    def test_overhead_summary(self):
        runs = [overhead_run("plain", 0, 10000, 100), overhead_run("behind-balancer", 0, 9900, 101),
                overhead_run("behind-balancer", 1, 8000, 102), overhead_run("plain", 1, 8100, 100)]
        o = b.summarize_overhead(runs)
        self.assertAlmostEqual(o["rps_ratio"], 17900 / 18100)
        self.assertEqual([round(x, 4) for x in o["rps_round_ratios"]], [0.99, round(8000 / 8100, 4)])
        self.assertAlmostEqual(o["cpu_ratio"], 101.5 / 100)
        self.assertEqual(o["behind-balancer"]["polls"], 60)

    def test_markdown(self):
        runs = self.runs() + [overhead_run("plain", 0, 10000, 100), overhead_run("behind-balancer", 0, 9900, 101)]
        md = b.markdown(META, runs, b.summarize(runs[:4]), b.summarize_overhead(runs[4:]))
        self.assertIn("| disturbed | 2 | 2 | 0 / 2 |", md)
        self.assertIn("p99 disturbed ÷ unchanged: **1.40**", md)
        self.assertIn("**target not met**", md)
        self.assertIn("TERM → DOWN 300 ms", md)
        self.assertIn("DOWN at 5.30, UP at 9.10", md)
        self.assertIn("| req/s (target: within 2 %, met: yes) | 0.990 |", md)
        self.assertIn("net.ipv4.tcp_migrate_req = 1", md)
        runs[0]["haproxy_log"]["retried_lines"] = b.parse_haproxy_log(RETRIED, 1795979485.0)["requests"][:1]
        md = b.markdown(META, runs, b.summarize(runs[:4]), None)
        self.assertIn("| disturbed | 1 | 5.120 | restart a (began 5.0) | b | 200 | ---- | 1+ | 0/1/3 | retried, answered |",
                      md)
        only_overhead = b.markdown(META, runs[4:], None, b.summarize_overhead(runs[4:]))
        self.assertNotIn("Failed requests and latency", only_overhead)


if __name__ == "__main__":
    unittest.main()
