"""A real `redis-server` for tests: a free loopback port, its own temp dir, no persistence.

    with redis_server() as server:          # started, answers PING
        client = server.client()            # an admin client (closed by stop())
        server.kill(); server.restart()     # SIGKILL, then the same port again
    # stopped (TERM, then KILL), its directory removed

`start_redis_server()` is the same without the `with`; call `server.stop()` yourself. Tests that need
one use the `redis_server` fixture (tests/store/conftest.py), which skips without the binary (fails
in CI).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from cache.embedded import EmbeddedError, redis_server_binary, terminate, wait_until_ready
from support.wait import free_port

__all__ = ["RedisServer", "redis_server", "redis_server_binary", "start_redis_server"]


class RedisServer:
    def __init__(self, binary: str, extra_args: tuple[str, ...] = ()) -> None:
        self.binary, self.extra_args = binary, extra_args
        self.directory = tempfile.mkdtemp(prefix="pp-test-redis-")
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return f"{self.directory}/redis.log"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start on a free port (a few tries: another process may take the port first)."""
        for attempt in range(3):
            self.port = free_port()
            try:
                return self._launch(timeout)
            except EmbeddedError:
                if attempt == 2:
                    raise
        return self

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop it if it runs, then start it again on the same port (empty: no persistence)."""
        self._terminate()
        return self._launch(timeout)

    def _launch(self, timeout: float) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory, "--logfile", self.log_path, "--daemonize", "no", *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_ready(self.url, self.process, timeout, self.log_path)
        except EmbeddedError:
            self._terminate()
            raise
        return self

    def client(self, **options: object) -> redis.Redis:
        """A plain client for the test's own commands (CONFIG SET, CLIENT PAUSE, ...)."""
        client = redis.Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate(process)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._terminate()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis_server(*extra_args: str, binary: str | None = None, timeout: float = 10.0) -> RedisServer:
    """A started server; extra redis-server arguments, e.g. "--maxmemory", "1mb"."""
    binary = binary or redis_server_binary()
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (make sysdeps)")
    server = RedisServer(binary, extra_args)
    try:
        return server.start(timeout)
    except BaseException:
        server.stop()
        raise


@contextmanager
def redis_server(*extra_args: str, binary: str | None = None) -> Iterator[RedisServer]:
    server = start_redis_server(*extra_args, binary=binary)
    try:
        yield server
    finally:
        server.stop()
