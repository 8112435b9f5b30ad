"""Origin faults (issue 5, "Faults survived, nothing lost"): refused, silent, reset or short mid-body,
invalid framing, extra bytes. Through a caching proxy on a real redis-server: every broken response
here says `Cache-Control: max-age=60`, and none of them may ever be stored.
"""

from __future__ import annotations

import time

import pytest

from support.rawhttp import RawClient, build
from support.redis_server import redis_server_binary, start_redis_server
from support.wait import free_port, require

from .helpers import cache_config, cache_params, get, mark, one_exchange, reached, scripted, stored_keys

PREFIX = "hostile-faults"
CACHEABLE = b"Cache-Control: max-age=60\r\n"


def head(*lines: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + CACHEABLE + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


@pytest.fixture(scope="module")
def redis_db():
    require(redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    server = start_redis_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faulty(module_make_proxy, redis_db):
    config = cache_config(redis_db.url, PREFIX)
    config["upstream"] = {"connect_timeout": 1.0, "read_timeout": 1.0}
    proxy = module_make_proxy(config, name="faulty")
    proxy.redis = redis_db.client()
    return proxy


def assert_not_stored(proxy, origin, path: str) -> None:
    """No metadata for the URL in Redis, and the next request goes to the origin again."""
    url = origin.url(path)
    assert stored_keys(proxy.redis, PREFIX, url) == [], "a broken response was stored"
    before = len(origin.requests(path))
    try:
        response = get(proxy.port, url, timeout=5)
        assert not cache_params(response).get("hit"), "a broken response is served from the cache"
    except (OSError, EOFError):
        pass                        # cut again: fine, it was not a hit
    assert len(origin.requests(path)) == before + 1


# -- refused and silent ---------------------------------------------------------------------------------
def test_origin_refusing_connections_is_502(faulty):
    outcome = one_exchange(faulty.port, build("GET", f"http://127.0.0.1:{free_port()}/refused"), close_wait=0.1)
    assert outcome.response.status == 502 and not outcome.closed


def test_silent_origin_is_504_after_read_timeout(faulty, module_origin):
    path = f"/silent-{mark('silent')}"
    module_origin.route(path, scripted(end="hang"))
    started = time.monotonic()
    outcome = one_exchange(faulty.port, build("GET", module_origin.url(path)), close_wait=0.1)
    elapsed = time.monotonic() - started
    assert outcome.response.status == 504
    assert 0.9 <= elapsed < 3.0, f"504 after {elapsed:.1f}s with read_timeout = 1"
    assert stored_keys(faulty.redis, PREFIX, module_origin.url(path)) == []


# -- cut mid-body: the client sees the cut, nothing is stored --------------------------------------------
CUT = {
    "length-then-reset": (head(b"Content-Length: 100000"), b"x" * 5000, "reset"),
    "length-then-fin": (head(b"Content-Length: 100000"), b"x" * 5000, "close"),
    "length-then-silence": (head(b"Content-Length: 100000"), b"x" * 5000, "hang"),
    "chunked-then-reset": (head(b"Transfer-Encoding: chunked"), b"1388\r\n" + b"x" * 5000 + b"\r\n", "reset"),
    "chunked-then-fin": (head(b"Transfer-Encoding: chunked"), b"1388\r\n" + b"x" * 5000 + b"\r\n", "close"),
    "chunked-mid-chunk-fin": (head(b"Transfer-Encoding: chunked"), b"2710\r\n" + b"x" * 5000, "close"),
    "close-delimited-then-reset": (head(b"Connection: close"), b"x" * 5000, "reset"),
}


@pytest.mark.parametrize("case", list(CUT))
def test_body_cut_short_is_never_passed_off_as_complete(faulty, module_origin, case):
    response_head, body, end = CUT[case]
    path = f"/cut-{mark(case)}"
    module_origin.route(path, scripted(response_head, body, end=end, pause=0.05))
    started = time.monotonic()
    outcome = one_exchange(faulty.port, build("GET", module_origin.url(path)), close_wait=3.0)
    response = outcome.response
    assert response.status == 200
    assert not response.complete, f"a cut body arrived as complete ({response.framing}, {response.body_length} B)"
    assert response.framing in ("length", "chunked"), "sent close-delimited: a cut looks like an end"
    assert response.body_length <= len(body)
    assert outcome.closed
    assert time.monotonic() - started < 4.0
    assert_not_stored(faulty, module_origin, path)


# -- invalid framing: 502, and the upstream connection is discarded --------------------------------------
INVALID = {
    "length-and-chunked": head(b"Content-Length: 5", b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
    "two-lengths": head(b"Content-Length: 5", b"Content-Length: 6") + b"hello!",
    "length-not-a-number": head(b"Content-Length: 5x") + b"hello",
    "status-2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    "obs-fold": head(b"X-A: 1", b" folded", b"Content-Length: 5") + b"hello",
    "nul-in-field": head(b"X-A: 1\x002", b"Content-Length: 5") + b"hello",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "bad-chunk-size": head(b"Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n",
    "head-300k": head(*[b"X-H%d: %s" % (n, b"h" * 1000) for n in range(300)], b"Content-Length: 5") + b"hello",
}


def through_a_pooled_connection(proxy, origin, token: str, path: str):
    """On one client connection: a good request (pools an upstream connection), `path` (reuses it),
    a good request again. Returns the response for `path`, the one after it, and what the origin
    received for the three, in order."""
    with RawClient(proxy.port) as client:
        assert client.request(build("GET", origin.url(f"/echo?m={token}-first"))).status == 200
        response = client.request(build("GET", origin.url(path)))
        stray = client.read_available(0.2)
        after = client.request(build("GET", origin.url(f"/echo?m={token}-after")))
    assert stray == b"", f"bytes after the response reached the client: {stray[:100]!r}"
    seen = (reached(origin, f"{token}-first"), origin.requests(path), reached(origin, f"{token}-after"))
    assert [len(found) for found in seen] == [1, 1, 1], seen
    first, bad, last = (found[0] for found in seen)
    assert bad.connection == first.connection, "the pooled connection was not reused for the bad response"
    assert last.connection != bad.connection, "the connection that sent the bad response was reused"
    return response, after


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_response_framing_is_502_and_the_connection_is_discarded(faulty, module_origin, case):
    token = mark(case)
    path = f"/invalid-{token}"
    module_origin.route(path, scripted(INVALID[case]))
    response, after = through_a_pooled_connection(faulty, module_origin, token, path)
    assert response.status == 502, (response.status, response.body[:200])
    assert after.status == 200
    assert_not_stored(faulty, module_origin, path)


# -- extra bytes after the declared end ----------------------------------------------------------------
SMUGGLED_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nCache-Control: max-age=60\r\n\r\nsmuggled"
EXTRA = {   # what the origin sends -> (status, body) the client must get
    "after-content-length": (head(b"Content-Length: 5") + b"hello" + SMUGGLED_RESPONSE, 200, b"hello"),
    "after-last-chunk": (head(b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED_RESPONSE,
                         200, b"hello"),
    "after-a-204": (b"HTTP/1.1 204 No Content\r\n\r\n" + SMUGGLED_RESPONSE, 204, b""),
    "garbage-after-length": (head(b"Content-Length: 5") + b"hello\x00\x01garbage", 200, b"hello"),
}


@pytest.mark.parametrize("case", list(EXTRA))
def test_extra_bytes_after_the_response_are_dropped_and_the_connection_not_reused(faulty, module_origin, case):
    sent, status, body = EXTRA[case]
    token = mark(case)
    path = f"/extra-{token}"
    module_origin.route(path, scripted(sent))
    response, after = through_a_pooled_connection(faulty, module_origin, token, path)
    assert (response.status, response.body, response.complete) == (status, body, True)
    assert after.status == 200 and b"smuggled" not in after.body, after.body[:200]
    again = get(faulty.port, module_origin.url(path))             # a hit now, or fetched again
    assert again.body == body
