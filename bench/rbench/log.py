"""Progress messages: one timestamped line per event on stderr, flushed at
once, so that stdout carries only the final Markdown report."""

from __future__ import annotations

import sys
import time


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
