"""Helpers of the hostile-input suite: one exchange read to its end, what the origin saw, scripted
origin misbehaviour, the Redis view of the cache, and which worker holds a connection.

Every request a test sends carries a unique `mark` in its target, so a test on a shared origin can
say exactly which requests reached it (`reached`) — for a refused request, none.
"""

from __future__ import annotations

import itertools
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from cache.layout import tag_of
from support.origin import Exchange, Origin, Received
from support.proxy import ProxyProcess
from support.rawhttp import PeerClosed, RawClient, Response, build
from support.wait import wait_until

__all__ = ["mark", "reached", "Outcome", "one_exchange", "scripted", "cache_config", "stored_keys",
           "cache_params", "get", "owner_of", "connect_to_worker", "MiB"]

MiB = 1 << 20
_counter = itertools.count(1)


def mark(name: str) -> str:
    """A token unique to this request, to find it at the origin."""
    return f"{name}-{next(_counter)}-{time.monotonic_ns() % 10**9}"


def reached(origin: Origin, token: str) -> list[Received]:
    """The requests the origin received whose target carries `token`."""
    return [r for r in origin.requests() if token in r.target]


@dataclass
class Outcome:
    response: Response | None      # None: the proxy closed without answering
    closed: bool                   # the proxy closed the connection after it
    after: bytes                   # bytes that followed the response (a second response = desync)


def one_exchange(port: int, data: bytes, method: str | None = None, close_wait: float = 2.0,
                 timeout: float = 5.0, shut_write: bool = False) -> Outcome:
    """Send `data`, read one response, then whatever follows it for up to `close_wait` seconds.

    `closed` is True when the proxy ended the connection within that time (at least 2 s when the
    response says `Connection: close`); a test that expects the connection to stay open passes a
    short close_wait.
    """
    with RawClient(port, timeout=timeout) as client:
        try:
            client.send(data)
            if shut_write:
                client.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                   # the proxy answered and closed before it took everything
        try:
            response = client.response(method or data.split(b" ", 1)[0].decode("latin-1"))
        except PeerClosed:
            return Outcome(None, True, b"")
        closing = "close" in response.tokens("Connection")
        after, closed = _rest(client, max(close_wait, 2.0) if closing else close_wait)
        return Outcome(response, closed, after)


def _rest(client: RawClient, wait: float) -> tuple[bytes, bool]:
    data = bytes(client.reader.buf)
    client.reader.buf.clear()
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        client.sock.settimeout(left)
        try:
            piece = client.sock.recv(65536)
        except socket.timeout:
            return data, False
        except OSError:
            return data, True
        if not piece:
            return data, True
        data += piece


# -- a misbehaving origin ----------------------------------------------------------------------------
def scripted(*parts: bytes, end: str = "keep", pause: float = 0.0) -> Callable[[Exchange], None]:
    """An origin route that reads the request and sends exactly `parts` (with `pause` seconds
    between them), then: "keep" the connection, "close" it (FIN), "reset" it (RST), or "hang"
    (send nothing more until the origin stops)."""

    def handler(ex: Exchange) -> None:
        ex.read_body()
        for number, part in enumerate(parts):
            if number and pause:
                ex.sleep(pause)
            ex.send(part)
        if end == "close":
            ex.close()
        elif end == "reset":
            reset(ex)
        elif end == "hang":
            ex.sleep(30)
            ex.close()

    return handler


def reset(ex: Exchange) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0; the origin closes the socket next)."""
    ex.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ex.closed, ex.keep_alive = True, False


# -- the cache ------------------------------------------------------------------------------------
def cache_config(redis_url: str, prefix: str, **cache: object) -> dict:
    """A caching forward proxy with short Redis timeouts and a breaker that recovers quickly."""
    settings = {"redis_url": redis_url, "key_prefix": prefix, "socket_timeout": 0.25,
                "connect_timeout": 0.25, "breaker_threshold": 2, "breaker_cooldown": 0.5,
                "lock_timeout": 1.0, "lock_ttl": 3.0, "l1_ttl": 0.5, "chunk_bytes": 65536}
    settings.update(cache)
    return {"server": {"workers": 1, "threads": 16, "graceful_timeout": 2.0},
            "upstream": {"connect_timeout": 1.0, "read_timeout": 5.0},
            "cache": settings}


def stored_keys(client: redis.Redis, prefix: str, url: str, kind: str = "meta") -> list[bytes]:
    """The Redis keys of `url`'s cached object: kind "meta" (what makes it visible), "body", "*"."""
    return client.keys(f"{prefix}:{{{tag_of(url)}}}:{kind}*")


def cache_params(response: Response) -> dict[str, str | bool]:
    """Our Cache-Status member's parameters, e.g. {"hit": True} or {"fwd": "bypass"}."""
    value = response.header("Cache-Status") or ""
    parts = re.findall(r'(?:[^;"]|"(?:[^"\\]|\\.)*")+', value)
    found: dict[str, str | bool] = {}
    for part in parts[1:]:
        name, _, raw = part.strip().partition("=")
        found[name] = raw.strip('"') if raw else True
    return found


def get(port: int, url: str, headers: list[tuple[str, str]] | tuple = (), timeout: float = 10.0) -> Response:
    """One GET on a fresh connection."""
    with RawClient(port, timeout=timeout) as client:
        return client.request(build("GET", url, list(headers)))


# -- workers ----------------------------------------------------------------------------------------
def owner_of(proxy: ProxyProcess, local_port: int) -> int | None:
    """The worker pid holding the proxy's end of our connection from `local_port`."""
    return proxy.worker_holding(local_port)


def connect_to_worker(proxy: ProxyProcess, tries: int = 60) -> dict[int, RawClient]:
    """One open connection per worker: {pid: client}. Extra connections are closed."""
    wanted = len(proxy.worker_pids())
    found: dict[int, RawClient] = {}
    for _ in range(tries):
        client = RawClient(proxy.port)
        port = client.sock.getsockname()[1]
        pid = wait_until(lambda: owner_of(proxy, port), 5, "a worker to accept the connection")
        if pid in found:
            client.close()
        else:
            found[pid] = client
        if len(found) == wanted:
            return found
    for client in found.values():
        client.close()
    raise AssertionError(f"{tries} connections all went to workers {sorted(found)}")
