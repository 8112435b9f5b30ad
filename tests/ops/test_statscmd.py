"""`python -m prefork_proxy stats -c FILE [--json] [--watch]`, run as a real command.

Contract: it finds the admin address in the config file; the table has one row per worker (pid,
state, requests) under a summary; --json prints the /stats document; --watch redraws until
Ctrl-C and exits 0; an admin listener that is off or unreachable is exit 1 with one line saying
so, a config error exit 2. `python -m prefork_proxy -c FILE` keeps starting the proxy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from support.proxy import REPO, ProxyProcess
from support.wait import free_port, wait_until

from .helpers import run_cli, traffic


def test_the_table_has_a_row_per_worker(ops_proxy):
    proxy, admin, origin = ops_proxy
    traffic(proxy, origin, 4)
    expected = admin.wait_requests(admin.settled_requests())
    result = run_cli("stats", "-c", str(proxy.config_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"prefork_proxy  master {proxy.master_pid}  up ")
    assert "health: ok (2 of 2 workers ready)" in lines[0]
    assert any(line.startswith(f"requests  {expected:,} total") for line in lines), result.stdout
    header = next(index for index, line in enumerate(lines) if line.split()[:3] == ["PID", "GEN", "STATE"])
    rows = [line.split() for line in lines[header + 1:] if line.strip()]
    assert sorted(int(row[0]) for row in rows) == proxy.worker_pids()
    assert all(row[1:3] == ["1", "ready"] for row in rows)
    requests_column = lines[header].split().index("REQUESTS")
    assert sum(int(row[requests_column + 1].replace(",", "")) for row in rows) <= expected  # RSS is 2 words
    assert "cache     off" in lines


def test_json_is_the_stats_document(ops_proxy):
    proxy, admin, _ = ops_proxy
    result = run_cli("stats", "-c", str(proxy.config_path), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == 1 and doc["master"]["pid"] == proxy.master_pid
    assert sorted(w["pid"] for w in doc["workers"]) == proxy.worker_pids()


def test_watch_refreshes_until_interrupted(ops_proxy):
    proxy, _, _ = ops_proxy
    command = [sys.executable, "-m", "prefork_proxy", "stats", "-c", str(proxy.config_path), "--watch", "0.2"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 15
        while sum("every 0.2s, Ctrl-C to stop" in line for line in lines) < 3 and time.monotonic() < deadline:
            lines.append(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert sum("every 0.2s, Ctrl-C to stop" in line for line in lines) >= 3
    assert sum(line.startswith("prefork_proxy  master") for line in lines) >= 2  # the 3rd is unread


def test_admin_off_unreachable_and_bad_config(tmp_path):
    off = ProxyProcess(tmp_path, {"admin": {"bind": ""}}, name="off")
    result = run_cli("stats", "-c", str(off.config_path))
    assert result.returncode == 1 and "admin.bind is \"\" (the admin listener is off)" in result.stderr
    port = free_port()
    down = ProxyProcess(tmp_path, {"admin": {"bind": f"127.0.0.1:{port}"}}, name="down")
    result = run_cli("stats", "-c", str(down.config_path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"prefork_proxy stats: cannot read http://127.0.0.1:{port}/stats: ")
    bad = ProxyProcess(tmp_path, {"admin": {"bind": "nowhere"}}, name="bad")
    result = run_cli("stats", "-c", str(bad.config_path))
    assert result.returncode == 2 and "admin.bind" in result.stderr


def test_the_proxy_command_line_is_unchanged(make_proxy, origin):
    proxy = make_proxy()        # `python -m prefork_proxy -c FILE`, as ever
    traffic(proxy, origin, 1)
    wait_until(lambda: proxy.access_lines(), 5, "the access log line")
    assert run_cli("-c", str(proxy.config_path), "--check").returncode == 0
