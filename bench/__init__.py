"""The benchmark harness: prefork_proxy side by side with nginx (and Squid/Varnish where installed).

design: one run starts one origin (nginx serving fixed bodies) and, lazily, one process per
contender instance, each on its own free loopback port, all under one temporary directory. The plan
is scenario-major (every server runs a scenario before the next scenario starts), so slow drift of
the machine hits all servers alike. Each row is: a short functional check through the proxy (status,
body length, cache hit or not), then one time-bounded wrk run whose numbers come from a Lua `done()`
hook as one JSON line. A server that cannot start is a row error, never a harness failure. Results
are plain data, rendered once as a table and saved as text and JSON under bench/results/. Every
process the harness started is stopped in a `finally`, and the temporary directory is removed.

Modules: `procs` (ports, spawn, readiness, stop), `nginx` (the one nginx config template),
`contenders` (how each server is started), `checks` (the pre-run functional check), `wrk` (load and
parse), `report` (table, text and JSON), `__main__` (flags and the run).
"""
