"""The embedded cache server for `redis_url = "embedded"`: a private Redis started as a child process.

design (ARCHITECTURE "Cache", embedded default): the master calls `start()` before it forks the
workers, logs `server.describe()`, passes `server.url` to the workers, and supervises the child
(`poll()`, `restart()` on the same address, `stop()`). What runs:
- a real `redis-server` when the binary is installed: Unix socket in a private 0700 temp dir, no TCP
  port, no persistence, `maxmemory` with `allkeys-lru` eviction;
- else fakeredis's TCP server in a child Python (`python -m cache.embedded`) on a free loopback port
  (pure Python, no memory limit: keys leave by their TTLs). That child exits when its stdin closes,
  i.e. when the master is gone.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import redis
from redis.exceptions import RedisError

__all__ = ["EmbeddedError", "EmbeddedServer", "redis_server_binary", "start", "terminate", "wait_until_ready"]

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EmbeddedError(Exception):
    """The embedded server could not be started (the message says why, with its log's tail)."""


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (path for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(path, os.X_OK)), None)


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float, log_path: str = "") -> None:
    """Return once the server at `url` answers PING; EmbeddedError if it exits or `timeout` passes."""
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise EmbeddedError(f"it exited with status {process.returncode}{_tail(log_path)}")
            try:
                if client.ping():
                    return
            except RedisError:
                pass
            if time.monotonic() > deadline:
                raise EmbeddedError(f"no answer to PING on {url} within {timeout} s{_tail(log_path)}")
            time.sleep(0.02)
    finally:
        client.close()


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return ": " + " | ".join(file.read().strip().splitlines()[-5:])
    except OSError:
        return ""


class EmbeddedServer:
    """A running embedded server. `kind` is "redis-server" or "fakeredis"; `url` is what workers use."""

    def __init__(self, kind: str, maxmemory: int, directory: str, binary: str | None) -> None:
        self.kind, self.maxmemory, self.directory, self._binary = kind, maxmemory, directory, binary
        self.process: subprocess.Popen | None = None
        self.port = 0                          # fakeredis: chosen by its first start, kept on restart
        self.url = ""

    def _launch(self, timeout: float) -> None:
        if self.kind == "redis-server":
            self._launch_redis(timeout)
        else:
            self._launch_fakeredis(timeout)

    def _launch_redis(self, timeout: float) -> None:
        socket_path = os.path.join(self.directory, "redis.sock")
        log_path = os.path.join(self.directory, "redis.log")
        self.process = subprocess.Popen(
            [self._binary, "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--maxmemory", str(self.maxmemory),
             "--maxmemory-policy", "allkeys-lru", "--dir", self.directory, "--logfile", log_path,
             "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        self.url = f"unix://{socket_path}"
        wait_until_ready(self.url, self.process, timeout, log_path)

    def _launch_fakeredis(self, timeout: float) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        log_path = os.path.join(self.directory, "fakeredis.log")
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cache.embedded", "--host", "127.0.0.1", "--port", str(self.port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env)
        self.port = _read_port(self.process, timeout, log_path)
        self.url = f"redis://127.0.0.1:{self.port}"
        wait_until_ready(self.url, self.process, timeout, log_path)

    def describe(self) -> str:
        """The log line for the master: which server runs, and where."""
        if self.kind == "redis-server":
            return (f"cache: embedded redis-server on {self.url} (pid {self.pid}, maxmemory {self.maxmemory} "
                    "bytes, allkeys-lru, no persistence)")
        return (f"cache: embedded fakeredis on {self.url} (pid {self.pid}; pure Python, "
                "no memory limit: keys leave by their TTLs; install redis-server for a faster, bounded cache)")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        """None while it runs, else its exit status (the master restarts it)."""
        return self.process.poll() if self.process else -1

    def restart(self, timeout: float = 10.0) -> None:
        """Stop it if it still runs, then start it again on the same address."""
        self._terminate()
        self._launch(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """TERM, then KILL after `timeout`; remove the private directory."""
        self._terminate(timeout)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _terminate(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child, before exec: Linux delivers SIGTERM to it when the master dies (even by
    SIGKILL), so no private cache server outlives the proxy. The master is single-threaded, which
    is what makes preexec_fn safe."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def terminate(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """TERM, wait up to `timeout`, then KILL; reap it and close our ends of its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _read_port(process: subprocess.Popen, timeout: float, log_path: str) -> int:
    """The child prints "port N" once it listens."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            line = process.stdout.readline().decode("ascii", "replace").split()
            if len(line) == 2 and line[0] == "port" and line[1].isdigit():
                return int(line[1])
    process.kill()
    process.wait()
    raise EmbeddedError(f"fakeredis did not report its port{_tail(log_path)}")


def start(maxmemory: int = 256 << 20, *, kind: str = "auto", timeout: float = 10.0) -> EmbeddedServer:
    """Start the embedded server and wait until it answers PING. `kind`: "auto" (redis-server when
    installed, else fakeredis), "redis-server" or "fakeredis". Raises EmbeddedError."""
    binary = redis_server_binary()
    if kind == "auto":
        kind = "redis-server" if binary else "fakeredis"
    if kind not in ("redis-server", "fakeredis"):
        raise ValueError(f"kind must be 'auto', 'redis-server' or 'fakeredis', got {kind!r}")
    if kind == "redis-server" and binary is None:
        raise EmbeddedError("redis-server is not installed")
    server = EmbeddedServer(kind, maxmemory, tempfile.mkdtemp(prefix="pp-cache-"), binary)
    try:
        server._launch(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _keep_alive_on_errors(handler_class: type) -> type:
    """fakeredis 2.40's TCP handler closes the connection after any error reply (-WRONGTYPE, unknown
    command, ...); a real Redis keeps it open, and redis-py expects that. Send the error as the reply."""
    class Handler(handler_class):
        def setup(self) -> None:
            super().setup()
            read = self.current_client.read_response

            def read_response() -> object:
                try:
                    return read()
                except redis.exceptions.ResponseError as error:
                    return error

            self.current_client.read_response = read_response

    return Handler


def main(argv: list[str] | None = None) -> int:
    """The fakeredis child: serve until TERM, INT, or the parent closing our stdin."""
    from fakeredis import TcpFakeServer

    parser = argparse.ArgumentParser(prog="python -m cache.embedded")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = TcpFakeServer((args.host, args.port))
    server.daemon_threads, server.block_on_close = True, False
    server.RequestHandlerClass = _keep_alive_on_errors(server.RequestHandlerClass)
    print(f"port {server.server_address[1]}", flush=True)

    def shut_down(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    def watch_parent() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader aborts the exit
        while os.read(0, 4096):
            pass
        shut_down()

    signal.signal(signal.SIGTERM, shut_down)
    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
