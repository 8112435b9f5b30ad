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
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from cache.embedded import EmbeddedError, redis_server_binary, terminate, wait_until_ready
from support.wait import free_port

__all__ = ["RedisServer", "SentinelServer", "redis_server", "redis_server_binary", "start_cluster",
           "start_redis_server", "start_sentinel"]


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

    def _argv(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.directory, "--logfile", self.log_path, "--daemonize", "no", *self.extra_args]

    def _launch(self, timeout: float) -> RedisServer:
        self.process = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
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


class SentinelServer(RedisServer):
    """`redis-server --sentinel` watching one master as `service` (quorum 1: it alone decides a
    failover), with short timers so a failover takes a second or two."""

    def __init__(self, binary: str, service: str, master_port: int, down_after_ms: int = 500) -> None:
        super().__init__(binary)
        self.service, self.master_port, self.down_after_ms = service, master_port, down_after_ms

    def sentinel_url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def _argv(self) -> list[str]:
        config = f"{self.directory}/sentinel.conf"         # Sentinel rewrites its file: one of its own
        with open(config, "w") as out:
            out.write(f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
                      f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                      f"sentinel failover-timeout {self.service} 3000\n")
        return [self.binary, config, "--sentinel", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--logfile", self.log_path, "--daemonize", "no"]

    def master(self) -> tuple[str, int] | None:
        """The master's address as this Sentinel sees it now."""
        found = self._ask("GET-MASTER-ADDR-BY-NAME")
        return (found[0].decode(), int(found[1])) if found else None

    def replicas(self) -> int:
        return len(self._ask("REPLICAS"))

    def _ask(self, command: str):
        if not self._clients:
            self.client(socket_timeout=2)
        return self._clients[0].execute_command("SENTINEL", command, self.service)


def _binary(binary: str | None) -> str:
    found = binary or redis_server_binary()
    if found is None:
        raise FileNotFoundError("redis-server is not installed (make sysdeps)")
    return found


def _started(server: RedisServer, timeout: float = 10.0) -> RedisServer:
    """`server` started, or stopped (its directory removed) if it did not start."""
    try:
        return server.start(timeout)
    except BaseException:
        server.stop()
        raise


def start_sentinel(service: str, master_port: int, binary: str | None = None) -> SentinelServer:
    return _started(SentinelServer(_binary(binary), service, master_port))


def start_cluster(size: int = 3, binary: str | None = None, timeout: float = 20.0) -> list[RedisServer]:
    """`size` cluster-enabled servers joined into one Redis Cluster (no replicas) that reports
    cluster_state:ok; stop each yourself (they are stopped here if the cluster does not form)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise FileNotFoundError("redis-cli is not installed (make sysdeps)")
    nodes: list[RedisServer] = []
    try:
        for _ in range(size):
            node = RedisServer(_binary(binary), ())
            node.extra_args = ("--cluster-enabled", "yes", "--cluster-config-file", f"{node.directory}/nodes.conf",
                               "--cluster-node-timeout", "2000")
            nodes.append(node.start())
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout)
        deadline, clients = time.monotonic() + timeout, [node.client() for node in nodes]
        while not all(client.cluster("info")["cluster_state"] == "ok" for client in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        return nodes
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def start_redis_server(*extra_args: str, binary: str | None = None, timeout: float = 10.0) -> RedisServer:
    """A started server; extra redis-server arguments, e.g. "--maxmemory", "1mb"."""
    return _started(RedisServer(_binary(binary), extra_args), timeout)


@contextmanager
def redis_server(*extra_args: str, binary: str | None = None) -> Iterator[RedisServer]:
    server = start_redis_server(*extra_args, binary=binary)
    try:
        yield server
    finally:
        server.stop()
