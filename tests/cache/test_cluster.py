"""Redis Cluster (`redis_url = "redis+cluster://..."`): the URL, and the shared cache on a real
three-node cluster through the real 2-worker proxy: hits across workers, PURGE reaching every
worker's L1 (pub/sub through the cluster), a node killed under traffic (no client error), and a
proxy that starts while no node answers (its workers boot and serve uncached).
"""

from __future__ import annotations

import shutil

import pytest

from cache.embedded import redis_server_binary
from cache.redis_url import ClusterURL, check, parse_cluster

from support.redis_server import start_cluster
from support.wait import free_port, require, wait_until

from .helpers import cache_config, get, is_hit, params

FRESH = [("Cache-Control", "max-age=60")]


@pytest.mark.parametrize("url, parsed", [
    ("redis+cluster://10.0.0.1", ClusterURL((("10.0.0.1", 6379),))),
    ("redis+cluster://:pw@a:7000,b:7001/", ClusterURL((("a", 7000), ("b", 7001)), None, "pw")),
])
def test_cluster_urls(url, parsed):
    assert parse_cluster(url) == parsed


def test_a_cluster_url_has_no_database():
    with pytest.raises(ValueError, match="a cluster has no database"):
        check("redis+cluster://a:7000/1")


@pytest.fixture
def cluster():
    require(redis_server_binary() is not None and shutil.which("redis-cli") is not None,
            "redis-server and redis-cli are not installed (make sysdeps)")
    nodes = start_cluster(3)
    yield nodes
    for node in nodes:
        node.stop()


def _url(nodes) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])


def test_hits_and_purge_across_workers_on_a_cluster(cluster, make_proxy, site, pinned):
    proxy = make_proxy(cache_config(_url(cluster), key_prefix="e2e-cluster"))
    site.resource("/c", body=b"clustered", headers=FRESH)
    url = site.url("/c")
    a, b = pinned(proxy)
    assert not is_hit(a.get(url))
    wait_until(lambda: is_hit(b.get(url)), 5, "the other worker to hit from the cluster")
    assert is_hit(a.get(url)) and site.count("/c") == 1

    assert a.request("PURGE", url).status == 200
    after = b.get(url)                  # b's L1 copy was dropped by the message through the cluster
    assert not is_hit(after) and params(after)["fwd"] == "uri-miss" and site.count("/c") == 2


def test_a_cluster_node_killed_under_traffic_costs_no_client_an_error(cluster, make_proxy, site):
    proxy = make_proxy(cache_config(_url(cluster), key_prefix="e2e-cluster-kill"))
    paths = [f"/k{i}" for i in range(12)]              # keys spread over the three nodes' slots
    for path in paths:
        site.resource(path, body=path.encode(), headers=FRESH)
    for path in paths:
        assert get(proxy.port, site.url(path)).status == 200
    cluster[2].kill()
    answers = [get(proxy.port, site.url(path)) for path in paths for _ in range(2)]
    assert [(r.status, r.body) for r in answers] == [(200, path.encode()) for path in paths for _ in range(2)]


def test_a_proxy_started_while_no_cluster_node_answers_serves_uncached(make_proxy, site):
    dead = f"redis+cluster://127.0.0.1:{free_port()}"
    proxy = make_proxy(cache_config(dead, key_prefix="e2e-cluster-down", breaker_cooldown=0.2))
    site.resource("/d", body=b"served anyway", headers=FRESH)
    response = get(proxy.port, site.url("/d"))
    assert (response.status, response.body) == (200, b"served anyway")
    assert params(response)["fwd"] == "bypass"
