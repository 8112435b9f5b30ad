"""Fixtures of the hostile-input suite: a real redis-server per test (to kill, pause or fill)."""

from __future__ import annotations

import pytest

from support.redis_server import redis_server_binary, start_redis_server
from support.wait import require


@pytest.fixture
def own_redis():
    """A redis-server of this test alone, on a free loopback port; stopped at teardown."""
    require(redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    server = start_redis_server()
    yield server
    server.stop()
