"""Fixtures of the cache store tests: fakeredis clients, a manual clock, stores, a real redis-server."""

from __future__ import annotations

import fakeredis
import pytest

from cache.settings import CacheSettings
from cache.store import Store
from support.redis_server import redis_server_binary, start_redis_server
from support.wait import require, wait_until

from .helpers import Clock, small


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake(fake_server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    """A direct client on the fake server, to inspect and tamper with what the store wrote."""
    return fakeredis.FakeRedis(server=fake_server)


@pytest.fixture
def make_store(fake_server: fakeredis.FakeServer, clock: Clock):
    """Factory: make_store(settings=None, listen=False, client=None) -> Store on the fake server
    (with listen=True it waits until the listener is subscribed). All are closed at teardown."""
    stores: list[Store] = []

    def make(settings: CacheSettings | None = None, *, listen: bool = False, client=None) -> Store:
        store = Store(client or fakeredis.FakeRedis(server=fake_server), settings or small(),
                      clock=clock, listen=listen)
        stores.append(store)
        if listen:
            wait_until(lambda: store.l1_trusted, 5, "the listener to subscribe")
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def redis_server():
    """A real redis-server on a free loopback port (tests/support/redis_server.py); stopped after."""
    require(redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    server = start_redis_server()
    yield server
    server.stop()
