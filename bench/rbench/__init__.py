"""rbench: the rustrack benchmark harness (issue 7), run by bench/run.

How it fits together: `cli` parses the command line, checks the Debian
packages (`prereqs`), builds rustrack, then hands each selected scenario
(`scenarios`) a context. A scenario starts one server at a time through
`servers` (one adapter module per server under `servers/`), drives it with
the load generators in `load`, and appends one plain dict per run to the
context. `procs` keeps every server in the harness's own process tree
(child subreaper) so it can be measured from /proc and stopped by PID.
`report` turns the runs into means over rounds, ratios, the targets table,
the Markdown tables and the JSON; `meta` records the machine and versions.
Python 3.11, standard library only.
"""
