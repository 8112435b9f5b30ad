"""Hits through the real 2-worker proxy on a real Redis: across workers, Vary variants, request
collapsing, only-if-cached, Range from the cache (RFC 9111 §4, §4.1, §5.2.1.7; RFC 9110 §14)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from support.pattern import pattern_bytes
from support.rawhttp import RawClient, build

from .helpers import get, is_hit, params, wait_stored

FRESH = [("Cache-Control", "max-age=60")]


def test_hit_after_miss_is_served_by_the_other_worker_too(cache_proxy, site, pinned):
    body = pattern_bytes(5000)
    site.resource("/shared", body=body, headers=FRESH)
    url = site.url("/shared")
    a, b = pinned(cache_proxy)

    first = a.get(url)
    assert (first.status, first.body) == (200, body)
    assert params(first)["fwd"] == "uri-miss" and params(first).get("stored") is True
    assert not is_hit(first)

    for connection in (b, a, b):         # B has it from Redis, A from its L1, B from its L1
        response = connection.get(url)
        assert (response.status, response.body) == (200, body)
        assert is_hit(response), f"worker {connection.pid}: {response.header('Cache-Status')}"
        assert response.header("Age") is not None and int(response.header("Age")) >= 0
    assert site.count("/shared") == 1


def test_fresh_connections_all_hit_after_the_first(cache_proxy, site):
    body = pattern_bytes(2000)
    site.resource("/many", body=body, headers=FRESH)
    url = site.url("/many")
    responses = [get(cache_proxy.port, url) for _ in range(30)]
    assert all((r.status, r.body) == (200, body) for r in responses)
    assert not is_hit(responses[0])
    assert [r.header("Cache-Status") for r in responses[1:] if not is_hit(r)] == []
    assert all(r.header("Age") is not None for r in responses[1:])
    assert site.count("/many") == 1


def test_hits_carry_a_date(cache_proxy, site):
    # RFC 9110 §6.6.1: a cache that receives a response without Date appends one to what it stores
    # and forwards (the policy's stored headers have it); the test origin sends no Date.
    site.resource("/dateless", body=b"no date\n", headers=FRESH)
    url = site.url("/dateless")
    miss = get(cache_proxy.port, url)
    hit = get(cache_proxy.port, url)
    assert is_hit(hit)
    assert miss.header("Date") is not None
    assert hit.header("Date") is not None, hit.headers


def test_vary_stores_one_response_per_variant(cache_proxy, site):
    site.resource("/vary", body=lambda r: f"for {r.header('Accept-Encoding')}".encode(),
                  headers=FRESH + [("Vary", "Accept-Encoding")])
    url = site.url("/vary")
    gzip, br = [("Accept-Encoding", "gzip")], [("Accept-Encoding", "br")]

    assert get(cache_proxy.port, url, gzip).body == b"for gzip"
    second = get(cache_proxy.port, url, br)
    assert second.body == b"for br" and not is_hit(second)
    assert [r.header("Accept-Encoding") for r in site.seen("/vary")] == ["gzip", "br"]

    for headers, body in [(gzip, b"for gzip"), (br, b"for br")] * 3:
        response = get(cache_proxy.port, url, headers)
        assert (response.status, response.body) == (200, body)
        assert is_hit(response), response.header("Cache-Status")
    assert site.count("/vary") == 2


def test_cache_status_says_vary_miss_when_only_another_variant_is_stored(cache_proxy, site):
    # RFC 9211 §2.2: fwd=vary-miss "the cache had the URI, but Vary didn't match".
    site.resource("/vary-status", body=b"v", headers=FRESH + [("Vary", "Accept-Language")])
    url = site.url("/vary-status")
    get(cache_proxy.port, url, [("Accept-Language", "en")])
    wait_stored(cache_proxy, url)
    other = get(cache_proxy.port, url, [("Accept-Language", "fr")])
    assert params(other)["fwd"] == "vary-miss", other.header("Cache-Status")


def test_vary_star_is_never_reused(cache_proxy, site):
    site.resource("/vary-star", body=b"star", headers=FRESH + [("Vary", "*")])
    url = site.url("/vary-star")
    responses = [get(cache_proxy.port, url) for _ in range(3)]
    assert [r.status for r in responses] == [200] * 3
    assert not any(is_hit(r) for r in responses)
    assert params(responses[-1])["detail"] == "vary-star"
    assert site.count("/vary-star") == 3


def test_fifty_concurrent_misses_cause_one_origin_fetch(cache_proxy, site):
    body = pattern_bytes(20_000)
    site.resource("/collapse", body=body, headers=FRESH, delay=0.3)
    url, count = site.url("/collapse"), 50
    clients = [RawClient(cache_proxy.port) for _ in range(count)]   # connected before the start
    start = threading.Barrier(count)

    def one(client: RawClient):
        start.wait(10)
        return client.request(build("GET", url))

    try:
        with ThreadPoolExecutor(count) as pool:
            responses = list(pool.map(one, clients))
    finally:
        for client in clients:
            client.close()
    assert [(r.status, r.body == body) for r in responses] == [(200, True)] * count
    assert site.count("/collapse") == 1
    misses = [r.header("Cache-Status") for r in responses if not is_hit(r)]
    assert len(misses) == 1, misses


def test_only_if_cached_miss_is_504_and_never_reaches_the_origin(cache_proxy, site):
    site.resource("/oic", body=b"cached?", headers=FRESH)
    url, only = site.url("/oic"), [("Cache-Control", "only-if-cached")]
    response = get(cache_proxy.port, url, only)
    assert response.status == 504
    assert site.count("/oic") == 0
    get(cache_proxy.port, url)
    # the body reached us before the proxy committed it; only-if-cached does not wait for a fetch
    wait_stored(cache_proxy, url)
    response = get(cache_proxy.port, url, only)
    assert (response.status, response.body) == (200, b"cached?") and is_hit(response)
    assert site.count("/oic") == 1


def _ranges(size: int) -> list[tuple[str, int, str, bytes]]:
    body = pattern_bytes(size)
    cases = [("bytes=0-99", 206, f"bytes 0-99/{size}", body[:100]),
             ("bytes=-10", 206, f"bytes {size - 10}-{size - 1}/{size}", body[-10:]),
             (f"bytes={size}-{size + 100}", 416, f"bytes */{size}", b"")]
    if size > 65536:                    # across the boundary of two stored chunks (chunk_bytes)
        cases.append(("bytes=65500-65600", 206, f"bytes 65500-65600/{size}", body[65500:65601]))
    return cases


def test_range_requests_are_answered_from_the_cache(cache_proxy, site):
    for size in (1000, 300_000):        # from the L1, and streamed from Redis in chunks
        path = f"/range-{size}"
        site.resource(path, body=pattern_bytes(size), headers=FRESH)
        url = site.url(path)
        assert get(cache_proxy.port, url).body == pattern_bytes(size)
        for spec, status, content_range, part in _ranges(size):
            response = get(cache_proxy.port, url, [("Range", spec)])
            assert (response.status, response.header("Content-Range")) == (status, content_range), spec
            assert response.body == part, spec
            assert int(response.header("Content-Length") or 0) == len(part), spec
            assert is_hit(response), (spec, response.header("Cache-Status"))
        assert site.count(path) == 1


def test_an_l1_hit_to_a_client_that_does_not_read_is_finished_by_a_thread(cache_proxy, site):
    """The main thread answers L1 hits with non-blocking sends; what a slow reader's socket does not
    take is finished by a handler thread, and pipelined hits on the same connection still follow."""
    import socket
    import time

    body = pattern_bytes(900_000)                 # under l1_max_object_bytes: answered inline
    site.resource("/big-hot", body=body, headers=FRESH)
    url = site.url("/big-hot")
    assert get(cache_proxy.port, url).body == body
    wait_stored(cache_proxy, url)
    assert is_hit(get(cache_proxy.port, url)) and is_hit(get(cache_proxy.port, url))   # warm L1s

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", cache_proxy.port))
    sock.settimeout(20)
    request = build("GET", url)

    def read_responses(count: int) -> bytes:
        received = bytearray()
        while received.count(body) < count:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(received)} bytes"
            received += chunk
        return bytes(received)

    sock.sendall(request)                         # a hit: afterwards the connection is parked, so
    assert read_responses(1).count(b"HTTP/1.1 200 OK") == 1   # the next ones meet the main thread
    time.sleep(0.3)
    sock.sendall(request * 3)                     # three pipelined hits, nobody reading yet
    time.sleep(0.5)                               # the time passing is the point: the buffers fill
    assert read_responses(3).count(b"HTTP/1.1 200 OK") == 3
    sock.close()
