"""Runs `python -m prefork_proxy -c FILE` as a real process tree for a test, and always stops it.

A ProxyProcess writes its TOML into the test's directory (free loopback port, cache and admin off,
access log to a file, logs to a file), starts the master, waits until a request is answered and the
expected number of workers exists, and exposes the master pid, the worker pids, stderr and the
access log. stop() sends TERM, then KILL after a bounded wait; every process it ever saw in the tree
is checked to be gone (a zombie counts as gone: it no longer runs or holds a socket).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .wait import free_port, wait_until

__all__ = ["ProxyProcess", "ProxyStartError", "dump_toml", "REPO", "READY_TIMEOUT"]

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0       # a cold start on a loaded 2-core machine
EXIT_TIMEOUT = 10.0        # after the graceful timeout, before KILL
GONE_TIMEOUT = 5.0         # after the master is gone, for its children


class ProxyStartError(AssertionError):
    pass


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(config: dict[str, dict[str, object]]) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def merge(base: dict, extra: dict | None) -> dict:
    result = copy.deepcopy(base)
    for section, values in (extra or {}).items():
        result.setdefault(section, {}).update(values)
    return result


def is_gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def http_probe(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if host:port answers `OPTIONS *` with any HTTP response."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: readiness-probe\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


class ProxyProcess:
    def __init__(self, workdir: Path, config: dict | None = None, *, args: tuple[str, ...] = (),
                 expect_workers: int | None = None, name: str = "proxy") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.access_log = self.workdir / f"{name}-access.log"
        self.config_path = self.workdir / f"{name}.toml"
        self.stderr_path = self.workdir / f"{name}-stderr.log"
        self.stdout_path = self.workdir / f"{name}-stdout.log"
        self.config = merge(self.default_config(), config)
        self.args = tuple(args)
        self.expect_workers = expect_workers
        self.process: subprocess.Popen | None = None
        self.seen: dict[int, psutil.Process] = {}   # every process observed in the tree
        self.write_config(self.config)

    def default_config(self) -> dict:
        return {
            "server": {"bind": f"127.0.0.1:{self.port}", "workers": 1, "threads": 8,
                       "keepalive_timeout": 5.0, "graceful_timeout": 5.0, "heartbeat_timeout": 5.0,
                       "request_deadline": 60.0, "connect_ports": [443]},
            "upstream": {"connect_timeout": 2.0, "read_timeout": 10.0},
            "limits": {"header_timeout": 5.0},
            # the test origins live on loopback, which forward mode refuses by default
            "access": {"allow_destinations": ["127.0.0.0/8", "::1/128"]},
            "cache": {"redis_url": ""},
            "admin": {"bind": ""},
            "log": {"access_log": str(self.access_log), "error_log": "-", "level": "info"},
        }

    # -- config ------------------------------------------------------------------------------------
    def write_config(self, config: dict | str) -> None:
        """Write a config (a dict of sections, or raw text) to the config file, atomically."""
        text = config if isinstance(config, str) else dump_toml(config)
        if not isinstance(config, str):
            self.config = copy.deepcopy(config)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.config_path)

    def reload(self, changes: dict | None = None, text: str | None = None) -> None:
        """Rewrite the file (merged changes, or raw text) and send HUP."""
        self.write_config(text if text is not None else merge(self.config, changes))
        self.signal(signal.SIGHUP)

    @property
    def workers_wanted(self) -> int:
        if self.expect_workers is not None:
            return self.expect_workers
        return int(self.config.get("server", {}).get("workers", 1))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxies(self) -> dict[str, str]:
        return {"http": self.url, "https": self.url}

    # -- lifecycle ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [sys.executable, "-m", "prefork_proxy", "-c", str(self.config_path), *self.args]

    def spawn(self) -> subprocess.Popen:
        """Start the master without waiting for anything."""
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            env.pop(key, None)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(self.command(), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err)
        self.seen[self.process.pid] = psutil.Process(self.process.pid)
        return self.process

    def start(self, timeout: float = READY_TIMEOUT) -> "ProxyProcess":
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT, port: int | None = None) -> None:
        """Wait until a request is answered and the wanted number of workers runs."""
        deadline = time.monotonic() + timeout
        port = port or self.port
        while True:
            code = self.process.poll()
            if code is not None:
                raise ProxyStartError(f"proxy exited with {code} during start-up:\n{self.stderr_text()}")
            if http_probe("127.0.0.1", port) and len(self.worker_pids()) == self.workers_wanted:
                return
            if time.monotonic() > deadline:
                raise ProxyStartError(f"proxy not ready on port {port} after {timeout}s "
                                      f"(workers {self.worker_pids()}, wanted {self.workers_wanted}):\n"
                                      f"{self.stderr_text()}")
            time.sleep(0.05)

    @property
    def master_pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def children(self) -> list[psutil.Process]:
        """Live direct children of the master (workers; plus the cache server if one is embedded)."""
        try:
            found = psutil.Process(self.master_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self.seen.setdefault(child.pid, child)
        direct = [child for child in found if _ppid(child) == self.master_pid]
        return [child for child in direct if not is_gone(child)]

    def worker_pids(self) -> list[int]:
        """Workers: the master's children forked without exec (same command line as the master).

        That leaves out helpers that exec another program (multiprocessing's resource tracker, a
        redis-server), which are children too.
        """
        try:
            master_cmdline = psutil.Process(self.master_pid).cmdline()
        except psutil.Error:
            return []
        return sorted(child.pid for child in self.children() if _cmdline(child) == master_cmdline)

    def signal(self, signum: int) -> None:
        self.children()  # remember the current tree before it changes
        os.kill(self.master_pid, signum)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float | None = None) -> int | None:
        """TERM, wait (graceful_timeout + a margin), then KILL; return the master's exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.children()
            graceful = float(self.config.get("server", {}).get("graceful_timeout", 30.0))
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait_exit(timeout if timeout is not None else graceful + EXIT_TIMEOUT) is None:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def leftovers(self, timeout: float = GONE_TIMEOUT) -> list[psutil.Process]:
        """Processes of the tree still running `timeout` seconds after the master went away."""
        deadline = time.monotonic() + timeout
        while True:
            left = [process for process in self.seen.values() if not is_gone(process)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def kill_leftovers(self) -> list[int]:
        left = self.leftovers(timeout=0)
        for process in left:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        return [process.pid for process in left]

    # -- output ------------------------------------------------------------------------------------
    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_lines(self) -> list[str]:
        try:
            return [line for line in self.access_log.read_text(errors="replace").splitlines() if line]
        except FileNotFoundError:
            return []

    def worker_holding(self, local_port: int, pids: list[int] | None = None) -> int | None:
        """The worker pid holding the proxy's end of our connection from `local_port`."""
        for pid in self.worker_pids() if pids is None else pids:
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.raddr and c.raddr.port == local_port and c.laddr.port == self.port for c in connections):
                return pid
        return None

    def wait_workers(self, count: int, timeout: float = 10.0, exclude: set[int] | frozenset = frozenset()) -> list[int]:
        """Wait until exactly `count` workers run, none of them in `exclude`; return their pids."""
        def ready() -> list[int] | None:
            pids = self.worker_pids()
            return pids if len(pids) == count and not set(pids) & set(exclude) else None
        return wait_until(ready, timeout, f"{count} workers (not {sorted(exclude)})")


def _ppid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _cmdline(process: psutil.Process) -> list[str] | None:
    try:
        return process.cmdline()
    except psutil.Error:
        return None
