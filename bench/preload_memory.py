#!/usr/bin/env python3
"""Memory of smart-spawned workers under several preloader configurations
(--preload-gc, --warmup-request, ...), on the large Rails fixture.

Each configuration is a label and the extra `rustrack start` arguments,
optionally preceded by NAME=VALUE environment variables:

    bench/preload_memory.py --runs 2 --requests 2000 \\
        "compact=--preload-gc compact" "age=--preload-gc age"

Every run is one `fixtures/rails-large/script/measure --methods smart`
(4 workers by default; N requests over the fixture's page mix from as many
keep-alive clients; `rustrack memory` right after spawning and after the
requests). Runs alternate between configurations (A B C, then C B A, ...)
so that a drift in the machine's load does not favour one. The table shows
the median over runs of: total PSS (preloader + workers, front end
excluded) and private dirty per worker after the requests, total PSS right
after spawning, and seconds from `rustrack start` until every worker is
ready. Standard library only; `--json FILE` keeps every run's figures.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASURE = REPO / "fixtures/rails-large/script/measure"
MB = 1024 * 1024


def parse_config(text):
    label, _, rest = text.partition("=")
    if not label or not _:
        raise SystemExit(f"configuration {text!r}: expected LABEL=ARGS")
    env, args = {}, shlex.split(rest)
    while args and "=" in args[0] and not args[0].startswith("-"):
        name, _, value = args.pop(0).partition("=")
        env[name] = value
    return {"label": label, "env": env, "args": args}


def describe(args):
    """The start arguments, with long runs of --warmup-request counted."""
    out, i = [], 0
    while i < len(args):
        j = i
        while j + 1 < len(args) and args[j] == "--warmup-request":
            j += 2
        if j - i > 6:
            out.append(f"--warmup-request ×{(j - i) // 2}")
            i = j
        else:
            out.append(shlex.quote(args[i]))
            i += 1
    return " ".join(out)


def run_once(config, opts):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            "ruby", str(MEASURE), "--methods", "smart",
            "--workers", str(opts.workers), "--requests", str(opts.requests),
            "--bin", opts.bin, "--json", out.name, "--", *config["args"],
        ]
        env = dict(os.environ, **config["env"])
        print(f"==> {config['label']}: {describe(cmd[2:])}", file=sys.stderr, flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        result = json.load(open(out.name))[0]
    after, spawned = result["after"], result["spawned"]
    row = {
        "total_pss": after["total_pss"] / MB,
        "private_dirty_per_worker": after["worker_private_dirty"] / MB,
        "spawned_total_pss": spawned["total_pss"] / MB,
        "ready_s": result["ready_s"],
        "req_per_s": result["requests"] / result["mix_s"],
        "codes": result["codes"],
    }
    print(f"    {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", metavar="LABEL=[ENV=V ...] ARGS")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--bin", default=str(REPO / "target/release/rustrack"))
    p.add_argument("--json", help="write every run's figures here")
    opts = p.parse_args()
    configs = [parse_config(c) for c in opts.configs]
    runs = {c["label"]: [] for c in configs}
    for i in range(opts.runs):
        order = configs if i % 2 == 0 else list(reversed(configs))
        for c in order:
            runs[c["label"]].append(run_once(c, opts))
    if opts.json:
        Path(opts.json).write_text(json.dumps({"configs": configs, "runs": runs}, indent=2))

    def med(label, key):
        return statistics.median(r[key] for r in runs[label])

    def spread(label, key):
        values = [r[key] for r in runs[label]]
        return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else ""

    print(f"\n{opts.workers} smart workers, {opts.requests} requests over fixtures/rails-large/pages.txt, "
          f"median of {opts.runs} run(s) (range); MB\n")
    print("| configuration | total PSS after | private dirty / worker after | total PSS after spawn | ready (s) |")
    print("|---|---|---|---|---|")
    for c in configs:
        label = c["label"]
        print(f"| {label} (`{describe(c['args'])}`) "
              f"| {med(label, 'total_pss'):.1f} ({spread(label, 'total_pss')}) "
              f"| {med(label, 'private_dirty_per_worker'):.1f} ({spread(label, 'private_dirty_per_worker')}) "
              f"| {med(label, 'spawned_total_pss'):.1f} "
              f"| {med(label, 'ready_s'):.1f} ({spread(label, 'ready_s')}) |")


if __name__ == "__main__":
    main()
