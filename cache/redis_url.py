"""Which Redis a URL names, and a redis-py client for it: a plain server or a Sentinel-managed master.

    redis://[[user]:password@]host[:port][/db]        rediss:// (TLS)        unix:///path/to.sock
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]

The first three are redis-py's own URLs. `redis+sentinel://` lists Sentinels (port 26379 by
default) and names the monitored service; the client asks them for the service's current master
on every new connection, so after a failover the next connection goes to the promoted replica (a
connection still open to a demoted master fails on its first write and is replaced). The user and
password are the master's; the Sentinels are asked without them.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.sentinel import Sentinel

__all__ = ["SCHEMES", "SentinelURL", "check", "client_for", "parse_sentinel"]

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")
_SENTINEL = "redis+sentinel://"
_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel(url: str) -> SentinelURL:
    """A redis+sentinel:// URL's parts; ValueError saying what is wrong."""
    rest = url.removeprefix(_SENTINEL)
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError("names no service: redis+sentinel://host:port[,host:port]/service[/db]")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return SentinelURL(sentinels, service, int(db or 0), username or None, password or None)


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):                                   # [::1]:26379
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"sentinel address {item!r} has no host")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"sentinel address {item!r} has a bad port")
    return host, int(port or _SENTINEL_PORT)


def check(url: str) -> None:
    """ValueError when `url` is not one of the forms above (a config check: no I/O)."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"must start with {', '.join(SCHEMES)}")
    if url.startswith(_SENTINEL):
        parse_sentinel(url)


def client_for(url: str, *, socket_timeout: float, connect_timeout: float, **options: object) -> redis.Redis:
    """A client with these timeouts (and other redis.Redis options) for any URL of the forms above."""
    if not url.startswith(_SENTINEL):
        return redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                    socket_connect_timeout=connect_timeout, **options)
    parts = parse_sentinel(url)
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    sentinel = Sentinel(list(parts.sentinels), sentinel_kwargs=dict(timeouts), **timeouts)
    return sentinel.master_for(parts.service, db=parts.db, username=parts.username,
                               password=parts.password, **options)
