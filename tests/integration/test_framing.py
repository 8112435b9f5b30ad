"""Message framing through the proxy: bodies that must not be there (HEAD, 1xx, 204, 304), bodies
in every framing, 100-continue, and an origin that dies mid-body.

Each test reuses one client connection for a second request afterwards: a response framed wrong
desynchronises the connection, and the second response shows it.
"""

from __future__ import annotations

import pytest

from support.pattern import iter_pattern, pattern_sha256
from support.rawhttp import RawClient, build, chunked


@pytest.fixture(scope="module")
def fwd(module_make_proxy, module_origin):
    return module_make_proxy(name="framing")


@pytest.fixture
def origin(module_origin):
    return module_origin


def then_still_in_sync(client: RawClient, origin, case: str) -> None:
    follow = client.request(build("GET", origin.url(f"/echo?case={case}-follow-up")))
    assert follow.status == 200, "the connection lost sync after the previous response"
    assert follow.json()["target"] == f"/echo?case={case}-follow-up"


@pytest.mark.parametrize("query", ["n=1000", "n=1000&chunked=1"], ids=["length", "chunked"])
def test_head_has_no_body(fwd, origin, query):
    with RawClient(fwd.port) as client:
        response = client.request(build("HEAD", origin.url(f"/bytes?{query}")))
        assert response.status == 200
        assert response.header("Content-Length") in ("1000", None)
        then_still_in_sync(client, origin, "head")
    assert origin.requests("/bytes", method="HEAD")


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_have_no_body(fwd, origin, code):
    with RawClient(fwd.port) as client:
        response = client.request(build("GET", origin.url(f"/status?code={code}")))
        assert response.status == code
        assert not response.has("Transfer-Encoding"), f"a {code} must not be chunked"
        if code == 204:
            assert not response.has("Content-Length"), "RFC 9110 §8.6: no Content-Length in a 204"
        else:
            assert response.header("ETag") == '"v1"'
        then_still_in_sync(client, origin, f"status-{code}")


def test_1xx_is_forwarded_then_the_final_response(fwd, origin):
    with RawClient(fwd.port) as client:
        response = client.request(build("GET", origin.url("/info")))
        assert response.status == 200 and response.body == b"final"
        # RFC 9110 §15.2: a proxy MUST forward 1xx responses (to an HTTP/1.1 client)
        assert [r.status for r in response.interim] == [103]
        assert response.interim[0].header("Link") == "</style.css>; rel=preload"
        then_still_in_sync(client, origin, "info")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_expect_100_continue(fwd, origin, framing):
    size = 200_000
    fields = [("Expect", "100-continue")] + (
        [("Content-Length", str(size))] if framing == "length" else [("Transfer-Encoding", "chunked")])
    with RawClient(fwd.port, timeout=5) as client:
        client.send(build("PUT", origin.url(f"/echo?case=expect-{framing}"), fields))
        interim = client.reader.read_until(b"\r\n\r\n")  # the client waits for the 100 before its body
        assert interim.startswith(b"HTTP/1.1 100"), interim
        body = iter_pattern(size) if framing == "length" else chunked(iter_pattern(size, 10_000))
        client.send_body(body)
        response = client.response()
        assert response.status == 200
        assert [r.status for r in response.interim] == [], "more than one 100 Continue"
        assert (response.json()["body_length"], response.json()["body_sha256"]) == (size, pattern_sha256(size))
        then_still_in_sync(client, origin, f"expect-{framing}")


def test_expect_100_continue_client_that_does_not_wait(fwd, origin):
    with RawClient(fwd.port) as client:
        response = client.request(build("POST", origin.url("/echo?case=expect-eager"), [("Expect", "100-continue")],
                                        body=b"eager body"))
        assert response.status == 200 and response.json()["body_length"] == 10
        then_still_in_sync(client, origin, "expect-eager")


@pytest.mark.parametrize("query", ["", "&chunked=1", "&close=1"], ids=["length", "chunked", "close-delimited"])
def test_response_bodies_in_every_framing(fwd, origin, query):
    size = 3_000_001
    with RawClient(fwd.port) as client:
        response = client.request(build("GET", origin.url(f"/bytes?n={size}{query}")), keep_body=False)
        assert response.status == 200 and response.complete
        assert (response.body_length, response.sha256) == (size, pattern_sha256(size))
        if response.framing != "close":
            then_still_in_sync(client, origin, f"framing{query}")


def test_request_bodies_chunked_and_empty(fwd, origin):
    with RawClient(fwd.port) as client:
        client.send(build("POST", origin.url("/echo?case=chunked-req"), [("Transfer-Encoding", "chunked")]))
        client.send_body(chunked(iter_pattern(100_000, 7_000)))
        response = client.response()
        assert response.json()["body_length"] == 100_000
        empty = client.request(build("POST", origin.url("/echo?case=empty"), [("Content-Length", "0")]))
        assert empty.status == 200 and empty.json()["body_length"] == 0
        then_still_in_sync(client, origin, "bodies")


def test_origin_dying_mid_body_is_not_passed_off_as_complete(fwd, origin):
    with RawClient(fwd.port) as client:
        response = client.request(build("GET", origin.url("/close-mid?n=1000000")), keep_body=False)
        assert response.status == 200
        assert not response.complete, f"a truncated body ({response.body_length} bytes) was framed as complete"
        assert client.closed_by_peer(3)
