"""The command line: `--check`, config errors at start-up, and the overrides `--bind` / `--workers`.

Contract: a config error is one line on stderr naming the file and the key, exit status 2, nothing
bound; `--check` prints the effective config as `section.key = value` lines and exits 0 or 2.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.proxy import REPO, ProxyProcess, dump_toml, http_probe, merge
from support.wait import free_port, port_refuses

BROKEN = {
    "wrong-type": ({"server": {"workers": "two"}}, "server.workers", "expected `int`, got `str`"),
    "unknown-key": ({"server": {"wrokers": 2}}, "server.wrokers", "unknown key"),
    "bad-address": ({"server": {"bind": "localhost"}}, "server.bind", "localhost"),
    "bad-origin": ({"upstream": {"origin": "ftp://x"}}, "upstream.origin", "ftp://x"),
    "unknown-section": ({"bogus": {"x": 1}}, "bogus", "unknown key"),
}


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_proxy", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def write(proxy: ProxyProcess, changes: dict) -> None:
    proxy.write_config(dump_toml(merge(proxy.config, changes)))


def test_check_a_good_file(tmp_path):
    proxy = ProxyProcess(tmp_path, {"server": {"workers": 3, "via_pseudonym": "checked"}})
    result = run("-c", str(proxy.config_path), "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "server.workers = 3" in lines
    assert any(line.startswith("server.via_pseudonym = ") and "checked" in line for line in lines)
    for section in ("server", "upstream", "limits", "cache", "admin", "log"):
        assert any(line.startswith(f"{section}.") for line in lines), f"no {section}.* line"
    assert port_refuses(proxy.port), "--check bound the listening port"


def test_check_the_shipped_config():
    result = run("-c", "config/proxy.toml", "--check")
    assert result.returncode == 0, result.stderr
    assert "server.bind = " in result.stdout


def test_check_shows_the_overrides(tmp_path):
    proxy = ProxyProcess(tmp_path, {"server": {"workers": 1}})
    other = free_port()
    result = run("-c", str(proxy.config_path), "--check", "--workers", "4", "--bind", f"127.0.0.1:{other}")
    assert result.returncode == 0, result.stderr
    assert "server.workers = 4" in result.stdout.splitlines()
    assert f"127.0.0.1:{other}" in result.stdout and f"127.0.0.1:{proxy.port}" not in result.stdout


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_a_broken_file(tmp_path, case):
    changes, key, detail = BROKEN[case]
    proxy = ProxyProcess(tmp_path, changes)
    result = run("-c", str(proxy.config_path), "--check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {result.stderr!r}"
    assert str(proxy.config_path) in lines[0] and f"{key}:" in lines[0] and detail in lines[0]


def test_check_bad_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[server\nworkers = 1\n")
    result = run("-c", str(path), "--check")
    assert result.returncode == 2
    assert str(path) in result.stderr and "TOML" in result.stderr


def test_check_a_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    result = run("-c", str(path), "--check")
    assert result.returncode == 2
    assert str(path) in result.stderr


@pytest.mark.parametrize("case", ["wrong-type", "unknown-key", "bad-origin"])
def test_start_with_a_broken_file_exits_2_and_binds_nothing(make_proxy, case):
    changes, key, _ = BROKEN[case]
    proxy = make_proxy(changes, start=False)
    proxy.spawn()
    assert proxy.wait_exit(15) == 2
    lines = proxy.stderr_text().strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert str(proxy.config_path) in lines[0] and f"{key}:" in lines[0]
    assert port_refuses(proxy.port)
    assert not proxy.leftovers(timeout=1)


def test_start_with_a_port_in_use_fails(make_proxy, origin):
    proxy = make_proxy({"server": {"bind": f"127.0.0.1:{origin.port}"}}, start=False)
    proxy.spawn()
    code = proxy.wait_exit(15)
    assert code not in (None, 0), "the master kept running without its listening socket"
    assert str(origin.port) in proxy.stderr_text()
    assert not proxy.leftovers(timeout=1)


def test_workers_override(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}}, args=("--workers", "2"), expect_workers=2)
    assert len(proxy.worker_pids()) == 2


def test_repeated_bind_overrides_the_file(make_proxy, origin):
    first, second = free_port(), free_port()
    proxy = make_proxy(args=("--bind", f"127.0.0.1:{first}", "--bind", f"127.0.0.1:{second}"), start=False)
    proxy.spawn()
    proxy.wait_ready(port=first)
    assert http_probe("127.0.0.1", second)
    assert port_refuses(proxy.port), "the file's bind address was used despite --bind"
