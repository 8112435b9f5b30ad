"""Helpers of the end-to-end cache tests: the proxy config, requests, Cache-Status, pinned workers.

A test that must prove something crossed workers (a hit served by the worker that did not fetch, an
L1 copy dropped in the other worker) uses `pin_workers`: one keep-alive connection per worker,
found by asking each worker process (psutil) which of them holds the connection's socket.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import redis

from cache.layout import tag_of

from support.proxy import ProxyProcess
from support.rawhttp import RawClient, Response, build, exchange
from support.wait import wait_until

__all__ = ["cache_config", "get", "request", "params", "is_hit", "poll", "stored_variants", "wait_stored",
           "pin_workers", "Pinned", "MiB"]

MiB = 1 << 20


def cache_config(redis_url: str, **cache: object) -> dict:
    """Two workers with enough threads for 50 concurrent requests; small cache timeouts.

    l1_ttl is long on purpose: a test that sees a change reach another worker's L1 then proves the
    pub/sub invalidation, not the L1 re-check. Tests about Redis trouble shorten it.
    """
    settings = {"redis_url": redis_url, "socket_timeout": 0.25, "connect_timeout": 0.25,
                "breaker_threshold": 2, "breaker_cooldown": 0.5, "lock_timeout": 2.0, "lock_ttl": 5.0,
                "l1_ttl": 30.0, "max_object_bytes": MiB, "chunk_bytes": 65536,
                "l1_max_object_bytes": 128 * 1024, "ttl_margin": 30.0}
    settings.update(cache)
    return {"server": {"workers": 2, "threads": 64, "keepalive_timeout": 30.0, "graceful_timeout": 2.0},
            "upstream": {"connect_timeout": 1.0, "read_timeout": 5.0},
            "cache": settings}


def request(port: int, method: str, url: str, headers: list[tuple[str, str]] | tuple = (),
            body: bytes = b"", timeout: float = 10.0) -> Response:
    """One request on a fresh connection (so any worker may serve it)."""
    response, _ = exchange(port, build(method, url, list(headers), body), timeout=timeout)
    return response


def get(port: int, url: str, headers: list[tuple[str, str]] | tuple = ()) -> Response:
    return request(port, "GET", url, headers)


def stored_variants(client: redis.Redis, prefix: str, url: str) -> int:
    """How many variants of `url` (the primary key: the effective request URI) Redis holds now."""
    return len(client.keys(f"{prefix}:{{{tag_of(url)}}}:meta:*"))


def wait_stored(proxy: ProxyProcess, url: str, timeout: float = 2.0) -> None:
    """Wait until Redis holds `url`: a response reaches the client before the proxy commits it.
    `proxy` is a cache_proxy fixture (it carries `redis` and `cache_prefix`)."""
    wait_until(lambda: stored_variants(proxy.redis, proxy.cache_prefix, url), timeout, f"{url} to be stored")


def params(response: Response) -> dict[str, str | bool]:
    """Our Cache-Status member's parameters: {"hit": True, "fwd": "uri-miss", "detail": "..."}.

    The test origins send no Cache-Status, so the field is our one member; `;` inside a quoted
    string (a detail) does not split it.
    """
    value = response.header("Cache-Status")
    assert value, f"no Cache-Status in {response.headers}"
    parts = re.findall(r'(?:[^;"]|"(?:[^"\\]|\\.)*")+', value)
    found: dict[str, str | bool] = {}
    for part in parts[1:]:
        name, _, raw = part.strip().partition("=")
        found[name] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else (raw or True)
    return found


def is_hit(response: Response) -> bool:
    return params(response).get("hit") is True


def poll(send: Callable[[], Response], until: Callable[[Response], bool], timeout: float,
         what: str, interval: float = 0.05) -> tuple[Response, list[Response]]:
    """Send requests until one satisfies `until` (a test about time passing, e.g. max-age=1 running
    out); return it and every response before it. Bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[Response] = []
    while True:
        response = send()
        if until(response):
            return response, seen
        seen.append(response)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last response "
                                 f"{response.status} {response.headers}")
        time.sleep(interval)


class Pinned:
    """A keep-alive connection known to be served by worker `pid`."""

    def __init__(self, client: RawClient, pid: int) -> None:
        self.client, self.pid = client, pid

    def request(self, method: str, url: str, headers: list[tuple[str, str]] | tuple = (),
                body: bytes = b"") -> Response:
        return self.client.request(build(method, url, list(headers), body), method)

    def get(self, url: str, headers: list[tuple[str, str]] | tuple = ()) -> Response:
        return self.request("GET", url, headers)

    def close(self) -> None:
        self.client.close()


def pin_workers(proxy: ProxyProcess, tries: int = 80) -> list[Pinned]:
    """One open connection per worker (ordered by pid); fails if the kernel never spreads them."""
    pids = proxy.worker_pids()
    pinned: dict[int, Pinned] = {}
    for _ in range(tries):
        client = RawClient(proxy.port)
        local_port = client.sock.getsockname()[1]
        pid = wait_until(lambda: proxy.worker_holding(local_port, pids), 5, "a worker to accept the connection")
        if pid in pinned:
            client.close()
            continue
        pinned[pid] = Pinned(client, pid)
        if len(pinned) == len(pids):
            return [pinned[pid] for pid in sorted(pinned)]
    for connection in pinned.values():
        connection.close()
    raise AssertionError(f"{tries} connections were all accepted by worker(s) {sorted(pinned)} of {pids}")
