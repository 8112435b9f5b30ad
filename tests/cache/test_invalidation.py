"""Invalidation after unsafe methods (RFC 9111 §4.4) and PURGE, seen from both workers: once the client
has the response, the next request on any connection must not get the old object, from Redis or
from the other worker's L1 (l1_ttl is 30 s here: only the pub/sub invalidation can drop that copy).

cache/store.py bounds an L1 copy's staleness by the pub/sub delivery time, so "the next request"
is strict by a few milliseconds: a worker publishes before it answers, and the client's next request
needs a new connection and a round trip; in practice delivery wins (PURGE: 15 of 15 runs)."""

from __future__ import annotations

import pytest

from support.cache_origin import CountingOrigin

from .helpers import cache_config, get, is_hit, params, request, wait_stored

FRESH = [("Cache-Control", "max-age=60")]


def _versioned(site, path):
    """A fresh resource whose body the test bumps: b"v1", b"v2", ..."""
    return site.resource(path, body=b"v1", headers=FRESH)


def _warm(proxy, url, *connections):
    """Store `url` and load it into every given worker's L1 (each serves it as a hit)."""
    connections[0].get(url)
    wait_stored(proxy, url)
    for connection in (*connections, *connections):
        response = connection.get(url)
        assert is_hit(response), (connection.pid, response.header("Cache-Status"))


def _next_body(connection, url, expected):
    """The next response `connection` gets for `url`, which must have the new body."""
    response = connection.get(url)
    assert response.body == expected, (f"worker {connection.pid} still served {response.body!r}: "
                                       f"{response.header('Cache-Status')}")
    return response


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_an_unsafe_method_invalidates_the_uri_in_every_worker(cache_proxy, site, pinned, method):
    page = _versioned(site, "/doc")
    url = site.url("/doc")
    a, b = pinned(cache_proxy)
    _warm(cache_proxy, url, a, b)
    page.body = b"v2"

    changed = a.request(method, url, body=b"new content")
    assert changed.status == 200
    assert params(changed)["fwd"] == "method", changed.header("Cache-Status")
    assert site.count("/doc", method) == 1

    assert not is_hit(_next_body(b, url, b"v2"))         # the other worker's L1 copy is gone
    assert _next_body(a, url, b"v2").body == b"v2"
    assert site.count("/doc", "GET") == 2


def test_post_invalidates_same_origin_location_and_content_location(cache_proxy, site, pinned):
    created, listed = _versioned(site, "/created"), _versioned(site, "/listed")
    site.resource("/form", body=b"ok", status=201,
                  headers=[("Location", "/created"), ("Content-Location", site.url("/listed"))])
    a, b = pinned(cache_proxy)
    for path in ("/created", "/listed"):
        _warm(cache_proxy, site.url(path), a, b)
    created.body = listed.body = b"v2"

    assert a.request("POST", site.url("/form"), body=b"x=1").status == 201
    for path in ("/created", "/listed"):
        assert not is_hit(_next_body(b, site.url(path), b"v2")), path
        assert site.count(path, "GET") == 2, path


def test_post_does_not_invalidate_another_origins_location(cache_proxy, site):
    with CountingOrigin() as other:
        other.resource("/elsewhere", body=b"kept", headers=FRESH)
        elsewhere = other.url("/elsewhere")
        site.resource("/redirecting-form", body=b"ok", status=201, headers=[("Location", elsewhere)])
        get(cache_proxy.port, elsewhere)
        assert request(cache_proxy.port, "POST", site.url("/redirecting-form"), body=b"x").status == 201
        response = get(cache_proxy.port, elsewhere)
        assert (response.body, is_hit(response)) == (b"kept", True)   # RFC 9111 §4.4: other host
        assert other.count("/elsewhere") == 1


def test_purge_removes_the_object_from_every_workers_l1(cache_proxy, site, pinned):
    page = _versioned(site, "/purged")
    url = site.url("/purged")
    a, b = pinned(cache_proxy)
    _warm(cache_proxy, url, a, b)
    page.body = b"v2"

    purged = a.request("PURGE", url)
    assert purged.status == 200, (purged.status, purged.body)
    fetched = _next_body(b, url, b"v2")                   # B's L1 copy went with the purge
    assert not is_hit(fetched), fetched.header("Cache-Status")
    again = a.get(url)                                    # A's own copy went too: B's new one is served
    assert (again.body, is_hit(again)) == (b"v2", True)
    assert site.count("/purged") == 2


def test_purge_of_an_unknown_url_is_404(cache_proxy, site):
    response = request(cache_proxy.port, "PURGE", site.url("/never-stored"))
    assert response.status == 404
    assert site.count("/never-stored") == 0


def test_purge_from_an_address_outside_purge_allow_is_403(make_proxy, session_redis, site):
    proxy = make_proxy(cache_config(session_redis.url, key_prefix="e2e-purge-403",
                                    purge_allow=["10.0.0.0/8"]))
    site.resource("/guarded", body=b"guarded", headers=FRESH)
    url = site.url("/guarded")
    get(proxy.port, url)
    assert request(proxy.port, "PURGE", url).status == 403
    response = get(proxy.port, url)
    assert (response.body, is_hit(response)) == (b"guarded", True)
    assert site.count("/guarded") == 1
