"""Child processes of the harness: free loopback ports, spawn, readiness by polling, stop.

Each child runs in its own session (its own process group), so a Ctrl-C in the terminal reaches only
the harness, which then stops its children in order. Stopping is: the server's stop signal to the
leader, a bounded wait, then SIGKILL for whatever is left in its group and for any descendant that
was seen before the stop (an embedded cache server in a session of its own, say). Leftovers are
reported: a server that orphans processes on stop has a bug worth knowing about. Only processes
started here, directly or by the servers, are touched.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
STOP_GRACE = 10.0     # seconds from the stop signal to SIGKILL


class StartError(Exception):
    """A server that did not start or did not become ready; str() is the row's error text."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    port: int
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes = field(repr=False)


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def spawn(name: str, argv: list[str], log: Path, port: int, *, stop_signal: int = signal.SIGTERM,
          cwd: Path | None = None) -> Proc:
    """Start argv with stdout and stderr going to `log`, in its own session."""
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 cwd=cwd, start_new_session=True)
    return Proc(name, popen, log, port, stop_signal)


def log_tail(path: Path, lines: int = 4, width: int = 240) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    tail = [line.strip()[:width] for line in text.strip().splitlines()[-lines:]]
    return " | ".join(tail) or "(no output)"


def http_get(port: int, path: str, timeout: float = 3.0) -> Reply:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def wait_ready(proc: Proc, path: str, timeout: float) -> None:
    """Poll GET `path` through the server until it answers 200; raise StartError otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        code = proc.popen.poll()
        if code is not None:
            raise StartError(f"did not start (exit code {code}): {log_tail(proc.log)}")
        try:
            status = http_get(proc.port, path, timeout=1.0).status
            if status == 200:
                return
            last = f"GET {path} -> {status}"
        except (OSError, http.client.HTTPException) as error:
            last = f"GET {path}: {error.__class__.__name__}: {error}"
        time.sleep(0.1)
    raise StartError(f"not ready after {timeout:g}s ({last}): {log_tail(proc.log)}")


def stop(proc: Proc, grace: float = STOP_GRACE) -> list[str]:
    """Stop the server and all it started; return the processes still alive after the grace."""
    family = _family(proc.popen.pid)
    if proc.popen.poll() is None:
        proc.popen.send_signal(proc.stop_signal)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _, survivors = psutil.wait_procs(family, timeout=2.0)  # workers may notice the master's exit late
    _kill_group(proc.popen.pid)
    for process in survivors:
        with contextlib.suppress(psutil.Error):
            process.kill()
    proc.popen.wait(5.0)
    return [_describe(process) for process in survivors]


def _family(pid: int) -> list[psutil.Process]:
    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return []


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.name()} (pid {process.pid})"
    except psutil.Error:
        return f"pid {process.pid}"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
