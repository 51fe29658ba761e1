"""Unit tests of the benchmark harness (bench/rbench), standard library only.

From the repository root:

    python3 -m unittest discover -s bench/tests -t bench

They start no server and run no load: they check the arithmetic that turns
run records into the published figures (means over rounds, ratios, the
targets table), the parsing of wrk, /proc and the servers' own records, and
which servers and packages a selection needs.
"""
