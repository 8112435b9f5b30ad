"""Every error status the proxy produces, each from a real malformed or refused request (raw bytes).

Errors are short text/plain bodies; where the framing of the request is in doubt the response says
`Connection: close` and the connection is closed (RFC 9112 §9.6 and §6.3).
"""

from __future__ import annotations

import time

import pytest

from support.rawhttp import RawClient, build, chunked, exchange
from support.wait import free_port

LIMITS = {"max_request_line": 1024, "max_header_line": 512, "max_header_bytes": 4096,
          "max_header_count": 20, "header_timeout": 1.0, "max_body_bytes": 1000}


@pytest.fixture(scope="module")
def strict(module_make_proxy, module_origin):
    return module_make_proxy({"limits": LIMITS, "upstream": {"read_timeout": 1.0, "connect_timeout": 1.0}},
                             name="strict")


@pytest.fixture
def origin(module_origin):
    return module_origin


def url(origin, case: str) -> str:
    return origin.url(f"/echo?case={case}")


# (case, request(origin) -> bytes, status, framing in doubt -> must close, reaches the origin)
CASES = [
    ("no-colon", lambda o: build("GET", url(o, "no-colon"), [("X-Fine", "1")])[:-2] + b"NoColonHere\r\n\r\n",
     400, True, False),
    ("space-before-colon", lambda o: build("GET", url(o, "space-before-colon"), [("X-Bad ", "1")]), 400, True, False),
    ("bad-content-length", lambda o: build("POST", url(o, "bad-cl"), [("Content-Length", "12abc")]), 400, True, False),
    ("two-content-lengths", lambda o: build("POST", url(o, "two-cl"), [("Content-Length", "5"), ("Content-Length", "6")])
     + b"hello!", 400, True, False),
    ("garbage-request-line", lambda o: b"HELLO THERE\r\n\r\n", 400, True, False),
    ("missing-host", lambda o: build("GET", url(o, "missing-host"), host=None), 400, False, False),
    ("origin-form-without-origin", lambda o: build("GET", "/echo?case=origin-form", host=o.authority()), 400, False, False),
    ("connect-port-not-allowed", lambda o: build("CONNECT", f"127.0.0.1:{o.port}"), 403, False, False),
    ("body-over-limit", lambda o: build("POST", url(o, "big-body"), [("Content-Length", "5000")]), 413, True, False),
    ("request-line-over-limit", lambda o: build("GET", url(o, "long-line") + "&x=" + "a" * 2000), 414, True, False),
    ("header-line-over-limit", lambda o: build("GET", url(o, "long-header"), [("X-Long", "a" * 600)]), 431, True, False),
    ("head-over-limit", lambda o: build("GET", url(o, "big-head"), [(f"X-H{n}", "b" * 400) for n in range(12)]),
     431, True, False),
    ("too-many-headers", lambda o: build("GET", url(o, "many-headers"), [(f"X-H{n}", "c") for n in range(25)]),
     431, True, False),
    ("transfer-coding-gzip", lambda o: build("POST", url(o, "gzip"), [("Transfer-Encoding", "gzip")]) + b"xxxx",
     501, True, False),
    ("http-2.0", lambda o: build("GET", url(o, "http2"), version="HTTP/2.0"), 505, True, False),
    ("http-3.0", lambda o: build("GET", url(o, "http3"), version="HTTP/3.0"), 505, True, False),
    ("origin-refused", lambda o: build("GET", f"http://127.0.0.1:{free_port()}/refused"), 502, False, False),
    ("origin-invalid-response", lambda o: build("GET", o.url("/garbage?case=garbage")), 502, False, True),
    ("origin-closed-before-a-byte", lambda o: build("GET", o.url("/close-before?case=close-before")), 502, False, True),
    ("origin-silent", lambda o: build("GET", o.url("/hang?case=silent&s=5")), 504, False, True),
    ("loop", lambda o: build("GET", url(o, "loop"), [("Via", "1.1 prefork_proxy")]), None, False, False),
]


def assert_error_shape(response, status: int | None, must_close: bool, closed: bool) -> None:
    if status is None:
        assert 400 <= response.status < 600, response.status
    else:
        assert response.status == status, f"expected {status}, got {response.status}: {response.body[:200]!r}"
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert 0 < len(response.body) < 1024, response.body
    if must_close:
        assert "close" in response.tokens("Connection"), "an error with framing in doubt lacks Connection: close"
        assert closed, "the connection stayed open after an error with framing in doubt"


@pytest.mark.parametrize("case, request_of, status, must_close, reaches_origin", CASES, ids=[c[0] for c in CASES])
def test_error_status(strict, origin, case, request_of, status, must_close, reaches_origin):
    before = {id(r) for r in origin.requests()}
    started = time.monotonic()
    response, closed = exchange(strict.port, request_of(origin), close_wait=2.0 if must_close else 0)
    assert_error_shape(response, status, must_close, closed)
    if status == 504:
        assert time.monotonic() - started < 1.0 + 3.0, "504 long after upstream.read_timeout"
    if not reaches_origin:
        reached = [r.target for r in origin.requests() if id(r) not in before]
        assert not reached, f"the origin received {reached}"


def test_408_when_the_head_does_not_arrive_in_time(strict, origin):
    with RawClient(strict.port) as client:
        started = time.monotonic()
        client.send(b"GET " + url(origin, "partial").encode() + b" HTTP/1.1\r\nHost: x\r\n")
        response = client.response()
        assert_error_shape(response, 408, True, client.closed_by_peer(2))
    assert 0.9 <= time.monotonic() - started < 1.0 + 3.0


def test_408_for_a_head_dripping_in_too_slowly(strict, origin):
    """header_timeout bounds the whole head, not each read (a slowloris cannot keep a thread)."""
    with RawClient(strict.port) as client:
        started = time.monotonic()
        client.send(b"GET " + url(origin, "drip").encode() + b" HTTP/1.1\r\n")
        answer = b""
        for number in range(40):
            answer = client.read_available(0.2)
            if answer:
                break
            try:
                client.send(b"X-Drip-%d: 1\r\n" % number)
            except OSError:
                break
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 3.0, "a head dripping in kept the connection for 8 s"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_413_for_a_chunked_body_over_the_limit(strict, origin):
    with RawClient(strict.port) as client:
        client.send(build("POST", url(origin, "big-chunked"), [("Transfer-Encoding", "chunked")]))
        try:
            client.send_body(chunked([b"z" * 600] * 4))
        except OSError:
            pass  # the proxy may answer and close before it has read everything
        response = client.response()
        assert_error_shape(response, 413, True, client.closed_by_peer(2))


def test_413_without_100_continue(strict, origin):
    """RFC 9110 §10.1.1: a request that will be refused gets the final status, not a 100."""
    with RawClient(strict.port) as client:
        response = client.request(build("POST", url(origin, "expect-big"),
                                        [("Content-Length", "5000"), ("Expect", "100-continue")]))
        assert response.interim == []
        assert_error_shape(response, 413, False, False)
    assert not [r for r in origin.requests() if "expect-big" in r.target]


def test_request_smuggling_with_content_length_and_chunked(strict, origin):
    """RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; the rest must not become a request."""
    smuggled = b"0\r\n\r\nGET /echo?case=smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    request = build("POST", url(origin, "smuggle"), [("Content-Length", str(len(smuggled))),
                                                     ("Transfer-Encoding", "chunked")]) + smuggled
    with RawClient(strict.port) as client:
        client.send(request)
        response = client.response()
        assert response.status in (200, 400)
        client.closed_by_peer(2)
    assert not [r for r in origin.requests() if "smuggled" in r.target], "a smuggled request reached the origin"
    for forwarded in [r for r in origin.requests() if "smuggle" in r.target]:
        assert not (forwarded.has("Content-Length") and forwarded.has("Transfer-Encoding"))


def test_non_closing_errors_keep_the_connection_usable(strict, origin):
    with RawClient(strict.port) as client:
        refused = client.request(build("CONNECT", f"127.0.0.1:{origin.port}"), method="CONNECT")
        assert refused.status == 403
        if "close" not in refused.tokens("Connection"):
            assert client.request(build("GET", url(origin, "after-403"))).status == 200
