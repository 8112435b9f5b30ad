"""The embedded cache server: both kinds start, answer PING, serve two stores, restart, and stop."""

from __future__ import annotations

import os

import pytest
import redis

from cache import embedded
from cache.store import connect
from support.wait import require, wait_until

from .helpers import put, small

KEY = "http://example.test/e"


@pytest.fixture(params=["redis-server", "fakeredis"])
def server(request):
    if request.param == "redis-server":
        require(embedded.redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    started = embedded.start(2 << 20, kind=request.param)
    yield started
    process = started.process
    started.stop()
    assert process.returncode == 0, "TERM is a clean exit"
    assert started.poll() == -1 and not os.path.exists(started.directory)


def ping(url: str) -> bool:
    with redis.Redis.from_url(url, socket_timeout=1) as client:
        return client.ping()


def test_it_answers_ping_and_says_what_runs(server):
    assert ping(server.url) and server.poll() is None
    assert server.describe().startswith(f"cache: embedded {server.kind} on {server.url}")


def test_the_redis_server_is_private_and_bounded():
    require(embedded.redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    with embedded.start(3 << 20, kind="redis-server") as server:
        assert server.url.startswith("unix://") and os.stat(server.directory).st_mode & 0o077 == 0
        with redis.Redis.from_url(server.url) as client:
            assert client.config_get("maxmemory") == {"maxmemory": str(3 << 20)}
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
            assert client.config_get("port") == {"port": "0"} and client.config_get("save") == {"save": ""}
    assert server.process is None


def test_two_workers_share_it(server):
    first, second = connect(small(), server.url), connect(small(), server.url)
    try:
        wait_until(lambda: first.l1_trusted and second.l1_trusted, 5, "both listeners")
        assert put(first, KEY, b"shared")
        assert second.lookup(KEY, []).body == b"shared"
        first.purge(KEY)
        wait_until(lambda: second.lookup(KEY, []) is None, 5, "the purge to reach the other worker")
        assert second.server_info()["keys"] == 0
    finally:
        first.close()
        second.close()


def test_error_replies_keep_the_connection(server):
    with redis.Redis.from_url(server.url, single_connection_client=True) as client:
        client.set("s", "1")
        with pytest.raises(redis.ResponseError):
            client.hset("s", "f", "v")
        assert client.get("s") == b"1"


def test_restart_keeps_the_address(server):
    url, pid = server.url, server.pid
    server.process.kill()
    server.process.wait()
    assert server.poll() is not None
    server.restart()
    assert server.url == url and server.pid != pid and ping(url)


def test_the_fakeredis_child_exits_with_its_parent():
    with embedded.start(kind="fakeredis") as server:
        server.process.stdin.close()                     # what the master's death does
        wait_until(lambda: server.poll() is not None, 5, "the child to exit")
        assert server.poll() == 0


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        embedded.start(kind="memcached")


def test_connect_needs_the_embedded_url():
    assert connect(small(redis_url="")) is None
    with pytest.raises(ValueError, match="embedded"):
        connect(small(redis_url="embedded"))
