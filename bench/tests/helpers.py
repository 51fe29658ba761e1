"""Run records as the scenarios write them, with only the fields the report reads."""

from __future__ import annotations


def _base(scenario: str, label: str, rnd: int, load: float) -> dict:
    server, variant = label.split(" ")[:2]
    return {"scenario": scenario, "server": server, "variant": variant, "label": label,
            "round": rnd, "app": "hello", "workers": 2, "loadavg_before": [load, 1.0, 1.0]}


def wrk_run(scenario: str, label: str, rnd: int, rps: float, p50_ms: float, p99_ms: float,
            requests: int = 1000, read: int = 0, connect: int = 0, status: int = 0,
            frontend_cpu: float | None = None, server_cpu: float | None = None, load: float = 0.5) -> dict:
    errors = {"connect": connect, "read": read, "write": 0, "status": status, "timeout": 0}
    r = _base(scenario, label, rnd, load)
    r["wrk"] = {"requests": requests, "duration_us": 10_000_000, "p50_us": p50_ms * 1000,
                "p99_us": p99_ms * 1000, "errors": errors, "rps": rps,
                "errors_total": sum(errors.values())}
    if server_cpu is not None:
        r["server_cpu_us_per_req"] = server_cpu
    if frontend_cpu is not None:
        r["frontend_cpu_us_per_req"] = frontend_cpu
    return r


def memory_run(label: str, rnd: int, total_pss_mb: float, dirty_mb: float = 0.0,
               app_pss_mb: float | None = None, load: float = 0.5) -> dict:
    r = _base("memory", label, rnd, load)
    mb = 2**20
    r.update({"total_pss": total_pss_mb * mb, "total_private_dirty": dirty_mb * mb,
              "app_pss": (app_pss_mb if app_pss_mb is not None else total_pss_mb) * mb,
              "app_private_dirty": dirty_mb * mb})
    return r


def threads_run(scenario: str, label: str, rnd: int, rps: float, p50_ms: float, p99_ms: float,
                total_pss_mb: float, app_pss_mb: float | None = None, load: float = 0.5) -> dict:
    """A threads-scenario record: a wrk run and the memory read after it."""
    r = wrk_run(scenario, label, rnd, rps, p50_ms, p99_ms, load=load)
    m = memory_run(label, rnd, total_pss_mb, 0.0, app_pss_mb, load)
    r.update({k: m[k] for k in ["total_pss", "total_private_dirty", "app_pss", "app_private_dirty"]})
    return r


def spawn_run(app: str, label: str, rnd: int, ms: list[float], first: float = 1.0,
              ready: float = 2.0, load: float = 0.5) -> dict:
    r = _base(f"spawn-{app}", label, rnd, load)
    r.update({"spawn_ms": ms, "first_response_s": first, "all_workers_ready_s": ready})
    return r


def scaleup_run(label: str, rnd: int, ms: float, load: float = 0.5) -> dict:
    r = _base("scaleup", label, rnd, load)
    r["scaleup_ms"] = ms
    return r


def realmem_run(label: str, rnd: int, app_pss_mb: float, worker_dirty_mb: list[float], rps: float,
                mold_spawn_ms: list[float] | None = None, reforks: int | None = None,
                series_mb: list[float] | None = None, statuses: dict | None = None,
                template_mb: float = 50.0, load: float = 0.5) -> dict:
    r = _base("realmem", label, rnd, load)
    mb = 2**20
    steps = [0, 500, 1000, 1500, 2000]
    r.update({"app_pss": app_pss_mb * mb, "total_pss": (app_pss_mb + 10) * mb,
              "app_private_dirty": sum(worker_dirty_mb) * mb, "total_private_dirty": sum(worker_dirty_mb) * mb,
              "template_pss": template_mb * mb if template_mb else None, "worker_count": len(worker_dirty_mb),
              "worker_private_dirty": [d * mb for d in worker_dirty_mb], "settled": True,
              "mix": {"requests": 2000, "seconds": 2000 / rps, "rps": rps, "errors": 0,
                      "statuses": statuses or {200: 2000}, "server_cpu_ms_per_req": 2000 / rps},
              "series": [{"requests": n, "app_pss": v * mb} for n, v in zip(steps, series_mb or [])]})
    if reforks is not None:
        r.update({"reforks": reforks, "template": "mold" if reforks else "preloader"})
    if mold_spawn_ms is not None:
        r["mold_spawn_ms"] = mold_spawn_ms
    return r


def failed_run(scenario: str, label: str, rnd: int, load: float = 0.5) -> dict:
    r = _base(scenario, label, rnd, load)
    r["error"] = "ServerError: puma preload exited (1)\nlog tail"
    return r


META = {
    "date": "2026-01-01 00:00", "quick": False, "rounds": 2, "duration": 10.0, "warmup": 2.0,
    "cpus": 2, "kernel": "Linux 6.1", "rustrack_commit": "abc1234", "rustrack_dirty": False,
    "versions": {"ruby": "ruby 3.1"}, "loadavg_start": [0.1, 0.2, 0.3], "loadavg_end": [0.4, 0.5, 0.6],
    "memory_workers": 4, "memory_per_worker": 2000, "slow_senders": 100, "slow_readers": 100,
    "spawn_workers": 4, "elapsed_s": 600.0,
    "realmem_workers": 4, "realmem_requests": 2000, "realmem_refork_after": "50,100,1000",
}
