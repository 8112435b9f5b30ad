"""Redis behind Sentinel (`redis_url = "redis+sentinel://..."`): the URL, and a real failover.

The failover test runs a real master, a real replica and a real Sentinel (quorum 1, so it decides
alone) on free loopback ports, puts the 2-worker caching proxy in front of them, kills the master
and watches: no client sees an error while Sentinel promotes the replica, and caching resumes on
the promoted server by itself.
"""

from __future__ import annotations

import pytest

from cache.embedded import redis_server_binary
from cache.redis_url import SentinelURL, client_for, parse_sentinel

from support.rawhttp import build, exchange
from support.redis_server import start_redis_server, start_sentinel
from support.wait import require, wait_until

from .helpers import cache_config, is_hit, stored_variants


@pytest.mark.parametrize("url, parsed", [
    ("redis+sentinel://127.0.0.1/cache", SentinelURL((("127.0.0.1", 26379),), "cache")),
    ("redis+sentinel://a:1,b:2,[::1]:3/svc/4", SentinelURL((("a", 1), ("b", 2), ("::1", 3)), "svc", 4)),
    ("redis+sentinel://user:secret@h:5/svc", SentinelURL((("h", 5),), "svc", 0, "user", "secret")),
    ("redis+sentinel://:secret@h/svc/", SentinelURL((("h", 26379),), "svc", 0, None, "secret")),
])
def test_sentinel_urls(url, parsed):
    assert parse_sentinel(url) == parsed


def test_a_sentinel_client_asks_for_the_master_of_its_service():
    client = client_for("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/cache/3", socket_timeout=0.1,
                        connect_timeout=0.1)
    pool = client.connection_pool
    assert pool.service_name == "cache" and pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "pw"
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in pool.sentinel_manager.sentinels] == [("127.0.0.1", 1), ("127.0.0.1", 2)]


@pytest.fixture
def sentinel_setup():
    require(redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    started = []
    try:
        master = start_redis_server()
        started.append(master)
        replica = start_redis_server("--replicaof", "127.0.0.1", str(master.port))
        started.append(replica)
        sentinel = start_sentinel("pp-cache", master.port)
        started.append(sentinel)
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", 10,
                   "the replica to sync")
        wait_until(lambda: sentinel.replicas() == 1, 10, "Sentinel to find the replica")
        yield master, replica, sentinel
    finally:
        for server in reversed(started):
            server.stop()


def test_caching_survives_a_sentinel_failover(sentinel_setup, make_proxy, site):
    master, replica, sentinel = sentinel_setup
    proxy = make_proxy(cache_config(sentinel.sentinel_url(), key_prefix="e2e-sentinel"))
    for path in ("/before", "/after"):
        site.resource(path, body=b"content of " + path.encode(), headers=[("Cache-Control", "max-age=60")])
    statuses = []

    def hit(url: str) -> bool:
        response, _ = exchange(proxy.port, build("GET", url, []), timeout=10)
        statuses.append(response.status)
        return is_hit(response)

    wait_until(lambda: hit(site.url("/before")), 10, "a hit through the Sentinel-discovered master")
    assert stored_variants(master.client(), "e2e-sentinel", site.url("/before")) == 1

    master.kill()
    wait_until(lambda: hit(site.url("/after")), 20, "caching to resume on the promoted replica", interval=0.1)
    assert set(statuses) == {200}, statuses                 # no client saw the outage
    assert sentinel.master() == ("127.0.0.1", replica.port)
    assert stored_variants(replica.client(), "e2e-sentinel", site.url("/after")) == 1   # on the new master
