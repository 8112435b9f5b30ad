"""Validation and stale responses through the real proxy: a 304 freshens the stored headers
(RFC 9111 §4.3.4), stale-while-revalidate and stale-if-error (RFC 5861), must-revalidate with
the origin down (RFC 9111 §5.2.2.2). The short max-age tests are about time passing: they poll.

Date has second resolution and the age counts from it (RFC 9111 §4.2.3), so a max-age=N response
goes stale N-1 to N seconds after it was stored: a test that must see it fresh first uses N = 2."""

from __future__ import annotations

import time

import pytest

from support.wait import wait_until

from .helpers import get, is_hit, params, poll, stored_variants, wait_stored

STALE_WITHIN = 5.0      # max-age=1 or 2: stale within 2 s of being stored


def _stale_detail(prefix: str):
    return lambda response: str(params(response).get("detail", "")).startswith(prefix)


def test_304_updates_the_stored_headers_no_cache(cache_proxy, site):
    page = site.resource("/nc", body=b"stored body", etag='"v1"',
                         headers=[("Cache-Control", "no-cache, max-age=60"), ("X-Version", "1")],
                         not_modified_headers=[("X-Version", "2")])
    url = site.url("/nc")
    assert get(cache_proxy.port, url).header("X-Version") == "1"
    # the body reached us before the proxy committed it: wait for the commit
    wait_stored(cache_proxy, url)
    for version in ("2", "3"):
        page.not_modified_headers = [("X-Version", version)]
        response = get(cache_proxy.port, url)
        assert (response.status, response.body) == (200, b"stored body")
        assert response.header("X-Version") == version, response.headers
        assert params(response).get("fwd-status") == "304", response.header("Cache-Status")
        assert site.seen("/nc")[-1].header("If-None-Match") == '"v1"'
    assert site.count("/nc") == 3


def test_304_after_expiry_freshens_the_entry_for_every_worker(cache_proxy, site, pinned):
    site.resource("/ma1", body=b"stored body", etag='"v1"',
                  headers=[("Cache-Control", "max-age=2"), ("X-Version", "1")],
                  not_modified_headers=[("Cache-Control", "max-age=60"), ("X-Version", "2")])
    url = site.url("/ma1")
    a, b = pinned(cache_proxy)
    a.get(url)
    wait_stored(cache_proxy, url)
    assert is_hit(b.get(url)) and is_hit(a.get(url))      # both workers' L1 hold version 1

    revalidated, before = poll(lambda: a.get(url), lambda r: not is_hit(r), STALE_WITHIN,
                               "the entry to go stale")
    assert all(r.header("X-Version") == "1" for r in before)
    assert (revalidated.status, revalidated.body) == (200, b"stored body")
    assert revalidated.header("X-Version") == "2", revalidated.headers
    assert site.seen("/ma1")[-1].header("If-None-Match") == '"v1"'
    assert site.count("/ma1") == 2
    assert params(revalidated).get("stored") is True, revalidated.header("Cache-Status")
    assert stored_variants(cache_proxy.redis, cache_proxy.cache_prefix, url) == 1, \
        "Cache-Status says the freshened response was stored, but Redis does not hold it"

    for connection in (b, a):              # the freshened headers, now fresh for 60 s, everywhere
        response = connection.get(url)
        assert (response.body, response.header("X-Version")) == (b"stored body", "2"), response.headers
        assert is_hit(response), response.header("Cache-Status")
    assert site.count("/ma1") == 2


def test_stale_while_revalidate_serves_stale_then_revalidates_once(cache_proxy, site):
    page = site.resource("/swr", body=b"v1", etag='"v1"', conditional_delay=0.6,
                         headers=[("Cache-Control", "max-age=1, stale-while-revalidate=30")])
    url = site.url("/swr")
    assert get(cache_proxy.port, url).body == b"v1"
    page.body, page.etag = b"v2", '"v2"'

    took: list[float] = []

    def timed_get():
        started = time.monotonic()
        response = get(cache_proxy.port, url)
        took.append(time.monotonic() - started)
        return response

    stale, _ = poll(timed_get, _stale_detail("stale-while-revalidate"), STALE_WITHIN,
                    "a stale-while-revalidate response")
    assert (stale.status, stale.body, is_hit(stale)) == (200, b"v1", True)
    burst = [timed_get() for _ in range(10)]    # while the revalidation runs (the origin takes 0.6 s)
    assert all((r.status, r.body) == (200, b"v1") for r in burst), [r.header("Cache-Status") for r in burst]
    assert max(took) < 0.5, f"a stale response waited for the origin: {max(took):.3f}s"

    fresh = wait_until(lambda: (r := get(cache_proxy.port, url)).body == b"v2" and r, 5.0, "the new content")
    assert is_hit(fresh), fresh.header("Cache-Status")
    seen = site.seen("/swr")
    assert len(seen) == 2, [r.headers for r in seen]
    assert seen[1].header("If-None-Match") == '"v1"'
    assert all(get(cache_proxy.port, url).body == b"v2" for _ in range(5))
    assert site.count("/swr") == 2


@pytest.mark.parametrize("failure", ["500", "down"])
def test_stale_if_error_serves_the_stored_response(cache_proxy, site, failure):
    page = site.resource("/sie", body=b"still good", etag='"v1"',
                         headers=[("Cache-Control", "max-age=1, stale-if-error=60")])
    url = site.url("/sie")
    assert get(cache_proxy.port, url).body == b"still good"
    if failure == "500":
        page.mode = "error"
    else:
        site.stop()

    stale, before = poll(lambda: get(cache_proxy.port, url), _stale_detail("stale-if-error"),
                         STALE_WITHIN, "a stale-if-error response")
    assert all((r.status, r.body) == (200, b"still good") for r in before)
    assert (stale.status, stale.body, is_hit(stale)) == (200, b"still good", True)
    assert int(stale.header("Age")) >= 1
    if failure == "500":
        assert site.seen("/sie")[-1].header("If-None-Match") == '"v1"'


def test_must_revalidate_with_the_origin_down_is_504(cache_proxy, site, pinned):
    site.resource("/mr", body=b"strict", etag='"v1"',
                  headers=[("Cache-Control", "max-age=2, must-revalidate")])
    url = site.url("/mr")
    a, _ = pinned(cache_proxy)
    # The second request puts the object in this worker's L1. Redis drops it once stale (its TTL is
    # the freshness lifetime when `keep` = 0), and a worker holding no copy answers a plain miss (502).
    assert a.get(url).body == b"strict"
    wait_stored(cache_proxy, url)
    assert is_hit(a.get(url))
    site.stop()
    failed, before = poll(lambda: a.get(url), lambda r: r.status != 200, STALE_WITHIN,
                          "the stale must-revalidate response to be refused")
    assert all(is_hit(r) and r.body == b"strict" for r in before)
    assert failed.status == 504, (failed.status, failed.headers)
