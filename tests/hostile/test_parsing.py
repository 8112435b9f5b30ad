"""Strict parsing (issue 5, "Strict parsing"): every malformed request gets its status and
`Connection: close`, nothing reaches the origin, and the bytes after it are never a request.

Each case is sent in one write followed by a valid request for the same origin (a smuggling
attempt); the proxy must answer the bad one, close, and never answer or forward the second. Cases
whose fault is in the body ("body" stage) may have their head forwarded when the body arrives later;
the origin must then never see a complete body. An Upgrade request is not a protocol switch here
(the proxy drops Upgrade), so the bytes after it are still requests, framed as such.
"""

from __future__ import annotations

import time

import pytest

from support.rawhttp import PeerClosed, RawClient, build
from support.wait import wait_until

from .helpers import cache_config, cache_params, get, mark, one_exchange, reached, stored_keys

LIMITS = {"max_request_line": 1024, "max_header_line": 512, "max_header_bytes": 4096,
          "max_header_count": 20, "header_timeout": 2.0, "max_body_bytes": 1000}


@pytest.fixture(scope="module")
def strict(module_make_proxy):
    return module_make_proxy({"limits": LIMITS}, name="strict")


def _head(method: str, url: str, lines: list[bytes], version: bytes = b"HTTP/1.1") -> bytes:
    return b"%s %s %s\r\n" % (method.encode(), url.encode(), version) + b"".join(line + b"\r\n" for line in lines)


def get_with(*lines: bytes):
    return lambda url: _head("GET", url, [b"Host: x", *lines]) + b"\r\n"


def post_with(*lines: bytes, body: bytes = b""):
    return lambda url: _head("POST", url, [b"Host: x", *lines]) + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked"

# name -> (request(url) -> bytes, status(es), stage)
CASES = {
    # framing of the body
    "cl-and-te": (post_with(b"Content-Length: 5", CHUNKED, body=b"0\r\n\r\n"), 400, "head"),
    "te-and-cl": (post_with(CHUNKED, b"Content-Length: 5", body=b"0\r\n\r\n"), 400, "head"),
    "duplicate-cl-same": (post_with(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"), 400, "head"),
    "duplicate-cl-differ": (post_with(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), 400, "head"),
    "cl-list": (post_with(b"Content-Length: 5, 5", body=b"hello"), 400, "head"),
    "cl-not-a-number": (post_with(b"Content-Length: 12abc", body=b"hello"), 400, "head"),
    "cl-negative": (post_with(b"Content-Length: -1"), 400, "head"),
    "cl-plus-sign": (post_with(b"Content-Length: +5", body=b"hello"), 400, "head"),
    "te-gzip": (post_with(b"Transfer-Encoding: gzip", body=b"hello"), 501, "head"),
    "te-gzip-then-chunked": (post_with(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501, "head"),
    "te-chunked-then-gzip": (post_with(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), 400, "head"),
    "te-twice": (post_with(CHUNKED, CHUNKED, body=b"0\r\n\r\n"), 400, "head"),
    # field syntax
    "space-before-colon": (get_with(b"X-Bad : 1"), 400, "head"),
    "tab-before-colon": (get_with(b"Host\t: y"), 400, "head"),
    "obs-fold": (get_with(b"X-A: 1", b" folded"), 400, "head"),
    "obs-fold-tab": (get_with(b"X-A: 1", b"\tfolded"), 400, "head"),
    "bare-cr-in-value": (get_with(b"X-A: 1\r2"), 400, "head"),
    "nul-in-value": (get_with(b"X-A: 1\x002"), 400, "head"),
    "ctl-0x01-in-value": (get_with(b"X-A: 1\x012"), 400, "head"),
    "del-in-value": (get_with(b"X-A: 1\x7f2"), 400, "head"),
    "escape-in-value": (get_with(b"X-A: \x1b[31mred"), 400, "head"),
    "paren-in-name": (get_with(b"X(A): 1"), 400, "head"),
    "at-in-name": (get_with(b"X@A: 1"), 400, "head"),
    "8bit-in-name": (get_with(b"X\xe9: 1"), 400, "head"),
    "empty-name": (get_with(b": 1"), 400, "head"),
    "bare-lf-everywhere": (lambda url: b"GET %s HTTP/1.1\nHost: x\n\n" % url.encode(), 400, "head"),
    "bare-lf-one-field": (get_with(b"X-A: 1\n"), 400, "head"),
    "missing-host": (lambda url: _head("GET", url, [b"X-A: 1"]) + b"\r\n", 400, "head"),
    "duplicate-host-same": (get_with(b"Host: x"), 400, "head"),
    "duplicate-host-differ": (get_with(b"Host: evil.example"), 400, "head"),
    # chunked bodies
    "chunk-size-not-hex": (post_with(CHUNKED, body=b"zz\r\nhello\r\n0\r\n\r\n"), 400, "body"),
    "chunk-size-negative": (post_with(CHUNKED, body=b"-5\r\nhello\r\n0\r\n\r\n"), 400, "body"),
    "chunk-size-0x": (post_with(CHUNKED, body=b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "body"),
    "chunk-size-overflow": (post_with(CHUNKED, body=b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"), 400, "body"),
    "chunk-longer-than-declared": (post_with(CHUNKED, body=b"3\r\nhelloEXTRA\r\n0\r\n\r\n"), 400, "body"),
    "chunk-shorter-than-declared": (post_with(CHUNKED, body=b"8\r\nhello\r\n0\r\n\r\n"), 400, "body"),
    "chunk-without-crlf": (post_with(CHUNKED, body=b"5\r\nhello0\r\n\r\n"), 400, "body"),
    "chunk-extension-100k": (post_with(CHUNKED, body=b"5;" + b"e" * 100_000 + b"\r\nhello\r\n0\r\n\r\n"),
                             (400, 431), "body"),
    "trailer-field-100k": (post_with(CHUNKED, body=b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 100_000 + b"\r\n\r\n"),
                           (400, 431), "body"),
    "trailers-many-20k": (post_with(CHUNKED, body=b"5\r\nhello\r\n0\r\n"
                                    + b"".join(b"X-T%d: %s\r\n" % (n, b"v" * 90) for n in range(200)) + b"\r\n"),
                          (400, 431), "body"),
    # sizes
    "request-line-too-long": (lambda url: _head("GET", url + "&pad=" + "a" * 2000, [b"Host: x"]) + b"\r\n",
                              414, "head"),
    "header-line-too-long": (get_with(b"X-Long: " + b"a" * 600), 431, "head"),
    "too-many-headers": (get_with(*[b"X-H%d: 1" % n for n in range(25)]), 431, "head"),
    "head-too-large": (get_with(*[b"X-H%d: %s" % (n, b"b" * 400) for n in range(15)]), 431, "head"),
    "head-100k": (get_with(*[b"X-H%d: %s" % (n, b"b" * 400) for n in range(250)]), 431, "head"),
    "body-over-limit-cl": (post_with(b"Content-Length: 5000", body=b"x" * 5000), 413, "head"),
    "body-over-limit-chunked": (post_with(CHUNKED, body=b"".join([b"258\r\n" + b"z" * 600 + b"\r\n"] * 4)
                                          + b"0\r\n\r\n"), 413, "body"),
    # versions
    "http-2.0": (lambda url: _head("GET", url, [b"Host: x"], b"HTTP/2.0") + b"\r\n", 505, "head"),
    "http-3.1": (lambda url: _head("GET", url, [b"Host: x"], b"HTTP/3.1") + b"\r\n", 505, "head"),
    "http-1.2": (lambda url: _head("GET", url, [b"Host: x"], b"HTTP/1.2") + b"\r\n", 505, "head"),
    "http-0.9": (lambda url: _head("GET", url, [b"Host: x"], b"HTTP/0.9") + b"\r\n", 505, "head"),
}


def smuggled(origin, token: str) -> bytes:
    return build("GET", origin.url(f"/echo?m={token}-smuggled"))


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request(strict, module_origin, case):
    request_of, statuses, stage = CASES[case]
    statuses = statuses if isinstance(statuses, tuple) else (statuses,)
    token = mark(case)
    outcome = one_exchange(strict.port, request_of(module_origin.url(f"/echo?m={token}"))
                           + smuggled(module_origin, token), close_wait=3.0)
    response = outcome.response
    assert response is not None, "closed without an answer"
    assert response.status in statuses, f"expected {statuses}, got {response.status}: {response.body[:200]!r}"
    assert "close" in response.tokens("Connection"), "no Connection: close"
    assert outcome.after == b"", f"more after the error: {outcome.after[:200]!r}"
    assert outcome.closed, "the connection stayed open"
    seen = reached(module_origin, token)
    if stage == "head":
        assert seen == [], f"forwarded: {[r.raw_head for r in seen]}"
    else:
        _assert_aborted(seen)


def _assert_aborted(seen) -> None:
    """The origin got at most the head of the bad request, never a complete body or the smuggled one."""
    assert not [r for r in seen if "smuggled" in r.target], "the smuggled request reached the origin"
    wait_until(lambda: all(r.body_sha256 for r in seen), 5, "the origin to finish reading")
    assert not [r for r in seen if r.body_complete], "the origin received a complete body"


@pytest.mark.parametrize("bad_body", [b"zz\r\nhello\r\n0\r\n\r\n", b"3\r\nhelloEXTRA\r\n0\r\n\r\n"],
                         ids=["bad-size", "too-long"])
def test_chunk_error_after_the_head_was_forwarded_aborts_the_upstream_request(strict, module_origin, bad_body):
    token = mark("late-chunk")
    with RawClient(strict.port) as client:
        client.send(_head("POST", module_origin.url(f"/echo?m={token}"), [b"Host: x", CHUNKED]) + b"\r\n"
                    + b"5\r\nfirst\r\n")
        wait_until(lambda: reached(module_origin, token), 5, "the head to reach the origin")
        client.send(bad_body + smuggled(module_origin, token))
        response = client.response()
        assert response.status == 400 and "close" in response.tokens("Connection")
        assert client.closed_by_peer(2)
    _assert_aborted(reached(module_origin, token))


def test_bytes_sent_after_an_early_error_are_never_a_request(strict, module_origin):
    """The client goes on writing after the 400 (a pipelining client): nothing is answered or forwarded."""
    token = mark("after-error")
    with RawClient(strict.port) as client:
        client.send(get_with(b"X-Bad : 1")(module_origin.url(f"/echo?m={token}")))
        assert client.response().status == 400
        try:
            for _ in range(3):
                client.send(smuggled(module_origin, token))
                time.sleep(0.05)
        except OSError:
            pass                    # reset: the proxy has closed
        assert client.read_available(0.5) == b""
    assert reached(module_origin, token) == []


def test_a_valid_request_still_works(strict, module_origin):
    """The control case: the same shape, well formed, pipelined twice, is answered twice."""
    token = mark("control")
    with RawClient(strict.port) as client:
        client.send(post_with(b"Content-Length: 5", body=b"hello")(module_origin.url(f"/echo?m={token}"))
                    + build("GET", module_origin.url(f"/echo?m={token}-second")))
        assert client.response().status == 200
        assert client.response().status == 200
    assert len(reached(module_origin, token)) == 2


# -- Upgrade: the proxy never switches protocols, so what follows is still HTTP/1.1 -------------------
UPGRADES = {"websocket": [("Connection", "Upgrade"), ("Upgrade", "websocket")],
            "h2c": [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")]}


@pytest.mark.parametrize("upgrade", list(UPGRADES))
def test_request_pipelined_after_an_upgrade_request_is_answered_or_the_connection_closed(strict, module_origin,
                                                                                         upgrade):
    token = mark(f"upgrade-{upgrade}")
    with RawClient(strict.port, timeout=3) as client:
        client.send(build("GET", module_origin.url(f"/echo?m={token}-first"), UPGRADES[upgrade])
                    + build("GET", module_origin.url(f"/echo?m={token}-second")))
        first = client.response()
        assert first.status == 200
        if "close" in first.tokens("Connection"):
            assert client.closed_by_peer(2)
            return
        try:
            second = client.response()
        except (TimeoutError, PeerClosed):
            pytest.fail("the request pipelined after the Upgrade one was dropped: no answer, connection kept")
        assert second.status == 200 and token in second.json()["target"]


@pytest.mark.parametrize("upgrade", list(UPGRADES))
def test_bytes_after_an_upgrade_request_are_never_dropped_into_a_desync(strict, module_origin, upgrade):
    """The request after the Upgrade one arrives in two pieces: its head (with the upgrade request)
    and its body (which looks like a request). The body must stay a body."""
    token = mark(f"upgrade-split-{upgrade}")
    inner = build("GET", module_origin.url(f"/echo?m={token}-smuggled"))
    outer = _head("POST", module_origin.url(f"/echo?m={token}-outer"), [b"Host: x", b"Content-Length: %d" % len(inner)])
    with RawClient(strict.port, timeout=3) as client:
        client.send(build("GET", module_origin.url(f"/echo?m={token}-first"), UPGRADES[upgrade]) + outer + b"\r\n")
        wait_until(lambda: reached(module_origin, f"{token}-first"), 5, "the first request at the origin")
        client.send(inner)
        while client.read_available(1.0):      # until the proxy is quiet for a second (or closed)
            pass
    assert not reached(module_origin, f"{token}-smuggled"), "a request body was forwarded as a request"
    outer_seen = reached(module_origin, f"{token}-outer")
    assert not outer_seen or outer_seen[0].body_length == len(inner)


# -- the cache key is the forwarded target ---------------------------------------------------------
SPELLINGS = ["/key/a/../b?x=1#fragment", "/key/%2e%2e/c?", "/key/d?y=1&y=2"]


def test_cache_key_is_exactly_the_forwarded_target(make_proxy, origin, own_redis):
    prefix = "hostile-key"
    proxy = make_proxy(cache_config(own_redis.url, prefix))
    admin = own_redis.client()
    for path in ("/key/a/../b", "/key/%2e%2e/c", "/key/b", "/key/c", "/key/d"):
        origin.route(path, lambda ex: ex.respond(200, ex.request.target.encode(),
                                                 headers=[("Cache-Control", "max-age=60")]))
    for spelling in SPELLINGS:
        host = f"LOCALHOST:{origin.port}"
        response = get(proxy.port, f"http://{host}{spelling}")
        assert response.status == 200
        seen = origin.requests()[-1]
        forwarded = f"http://{seen.header('Host')}{seen.target}"
        assert response.body == seen.target.encode()
        wait_until(lambda: stored_keys(admin, prefix, forwarded), 5, f"{forwarded} stored under its own key")
        assert cache_params(get(proxy.port, f"http://{host}{spelling}")).get("hit")
        assert cache_params(get(proxy.port, forwarded)).get("hit"), "the forwarded target is another key"
    count = len(origin.requests())
    for other in ("/key/b?x=1", "/key/c?"):     # what a normalising cache would have served
        response = get(proxy.port, f"http://localhost:{origin.port}{other}")
        assert not cache_params(response).get("hit"), other
    assert len(origin.requests()) == count + 2
