"""Fixtures of the end-to-end cache tests: a real redis-server for the session, a counting origin
per test, and a 2-worker caching proxy shared by a module's tests (each test uses its own origin,
so its own URLs and keys). Tests that break Redis or need another config start their own."""

from __future__ import annotations

import pytest

from support.cache_origin import CountingOrigin
from support.redis_server import redis_server, redis_server_binary
from support.wait import require

from .helpers import cache_config, pin_workers


def _redis_server():
    """A started real redis-server (skips without the binary, fails in CI); stopped after."""
    require(redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def session_redis():
    """The real redis-server the shared proxies use (free loopback port), for the whole session."""
    yield from _redis_server()


@pytest.fixture
def own_redis():
    """A redis-server of this test alone (to kill, restart or fill)."""
    yield from _redis_server()


@pytest.fixture
def site():
    """A counting origin (tests/support/cache_origin.py) for this test only."""
    server = CountingOrigin().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache_proxy(module_make_proxy, session_redis, request):
    """A 2-worker caching forward proxy on the session's Redis, shared by the module's tests."""
    prefix = "e2e-" + request.module.__name__.rsplit(".", 1)[-1]
    proxy = module_make_proxy(cache_config(session_redis.url, key_prefix=prefix))
    proxy.cache_prefix, proxy.redis = prefix, session_redis.client()    # to look at what is stored
    return proxy


@pytest.fixture
def pinned():
    """pinned(proxy) -> [Pinned, Pinned]: one keep-alive connection per worker; closed after the test."""
    opened = []

    def pin(proxy):
        connections = pin_workers(proxy)
        opened.extend(connections)
        return connections

    yield pin
    for connection in opened:
        connection.close()
