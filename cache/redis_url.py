"""Which Redis a URL names, and a redis-py client for it: one server, a Sentinel-managed master, or
a Redis Cluster.

    redis://[[user]:password@]host[:port][/db]        rediss:// (TLS)        unix:///path/to.sock
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]

The first three are redis-py's own URLs. `redis+sentinel://` lists Sentinels (port 26379 by
default) and names the monitored service; the client asks them for the service's current master
on every new connection, so after a failover the next connection goes to the promoted replica (a
connection still open to a demoted master fails on its first write and is replaced). The user and
password are the master's; the Sentinels are asked without them. `redis+cluster://` lists some of
a cluster's nodes (port 6379 by default); the client learns the rest and the slot map from them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.exceptions import RedisClusterException
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

__all__ = ["SCHEMES", "ClusterURL", "LazyCluster", "SentinelURL", "check", "client_for", "parse_cluster",
           "parse_sentinel"]

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")
_SENTINEL, _CLUSTER = "redis+sentinel://", "redis+cluster://"


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def _split(url: str, scheme: str, default_port: int) -> tuple[tuple[tuple[str, int], ...], str, str | None, str | None]:
    """(hosts, path, user, password) of a URL with a comma-separated list of hosts."""
    netloc, _, path = url.removeprefix(scheme).partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    return tuple(_host_port(item, default_port) for item in hosts.split(",")), path, username or None, password or None


def parse_sentinel(url: str) -> SentinelURL:
    """A redis+sentinel:// URL's parts; ValueError saying what is wrong."""
    sentinels, path, username, password = _split(url, _SENTINEL, 26379)
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError("names no service: redis+sentinel://host:port[,host:port]/service[/db]")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return SentinelURL(sentinels, service, int(db or 0), username, password)


def parse_cluster(url: str) -> ClusterURL:
    """A redis+cluster:// URL's parts; ValueError saying what is wrong."""
    nodes, path, username, password = _split(url, _CLUSTER, 6379)
    if path.strip("/"):
        raise ValueError(f"a cluster has no database or path, got {path!r}: redis+cluster://host:port[,host:port]")
    return ClusterURL(nodes, username, password)


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):                                   # [::1]:26379
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"address {item!r} has no host")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"address {item!r} has a bad port")
    return host, int(port or default_port)


def check(url: str) -> None:
    """ValueError when `url` is not one of the forms above (a config check: no I/O)."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"must start with {', '.join(SCHEMES)}")
    if url.startswith(_SENTINEL):
        parse_sentinel(url)
    elif url.startswith(_CLUSTER):
        parse_cluster(url)


def client_for(url: str, *, socket_timeout: float, connect_timeout: float, **options: object) -> redis.Redis:
    """A client with these timeouts (and other redis.Redis options) for any URL of the forms above."""
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    if url.startswith(_CLUSTER):
        cluster = parse_cluster(url)
        return LazyCluster(lambda: RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username, password=cluster.password, **timeouts, **options))
    if not url.startswith(_SENTINEL):
        return redis.Redis.from_url(url, **timeouts, **options)
    parts = parse_sentinel(url)
    sentinel = Sentinel(list(parts.sentinels), sentinel_kwargs=dict(timeouts), **timeouts)
    return sentinel.master_for(parts.service, db=parts.db, username=parts.username,
                               password=parts.password, **options)


class LazyCluster:
    """A RedisCluster made on first use. Its constructor asks the nodes for the slot map, so made
    eagerly it would make a worker's boot fail while the cluster is down; made here, that is one
    more Redis failure (redis.ConnectionError) for the breaker, and a later call tries again."""

    is_cluster = True

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make, self._client, self._lock = make, None, threading.Lock()

    def client(self) -> RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._make()
                    except RedisClusterException as error:
                        raise redis.ConnectionError(f"cluster unreachable: {error}") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str):
        return getattr(self.client(), name)
