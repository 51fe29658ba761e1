"""Where things are, found from this file's own location (bench/rbench/paths.py),
so the harness works from any current directory: the repository root, the
Ruby fixtures the servers run, the release build of rustrack, and the
directory the results are written to."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "bench"
FIXTURES = ROOT / "fixtures"
RUSTRACK = ROOT / "target" / "release" / "rustrack"
RESULTS = BENCH / "results"
README = BENCH / "README.md"
