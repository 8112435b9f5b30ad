"""The test harness itself, against the scriptable origin directly (no proxy).

If these fail, every proxy test built on them means nothing.
"""

from __future__ import annotations

import json
import socket

import pytest

from support.origin import Origin
from support.pattern import iter_pattern, pattern_sha256
from support.proxy import dump_toml
from support.rawhttp import PeerClosed, RawClient, chunked, exchange
from support.wait import free_port, port_refuses, wait_until


def test_echo_reports_what_was_received(origin):
    body = b"hello world"
    response, closed = exchange(origin.port, b"POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-One: 1\r\n"
                                             b"Content-Length: 11\r\nConnection: close\r\n\r\n" + body, close_wait=2)
    assert response.status == 200 and closed
    seen = response.json()
    assert seen["method"] == "POST" and seen["target"] == "/echo?x=1" and seen["body_length"] == 11
    assert ["X-One", "1"] in seen["headers"]
    assert origin.requests("/echo")[0].header("x-one") == "1"


def test_chunked_upload_and_keep_alive(origin):
    with RawClient(origin.port) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send_body(chunked(iter_pattern(300_000, 10_000)))
        first = client.response()
        second = client.request(b"GET /bytes?n=5 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert first.json()["body_length"] == 300_000
    assert first.json()["body_sha256"] == pattern_sha256(300_000)
    assert second.body_length == 5 and second.complete
    assert origin.connections == 1


@pytest.mark.parametrize("query, framing", [("", "length"), ("&chunked=1", "chunked"), ("&close=1", "close")])
def test_bytes_framings(origin, query, framing):
    with RawClient(origin.port) as client:
        response = client.request(f"GET /bytes?n=1000000{query} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
                                  keep_body=False)
    assert response.framing == framing and response.complete
    assert response.sha256 == pattern_sha256(1_000_000)


def test_head_1xx_204_304(origin):
    with RawClient(origin.port) as client:
        head = client.request(b"HEAD /bytes?n=1000 HTTP/1.1\r\nHost: a\r\n\r\n")
        info = client.request(b"GET /info HTTP/1.1\r\nHost: a\r\n\r\n")
        empty = client.request(b"GET /status?code=204 HTTP/1.1\r\nHost: a\r\n\r\n")
        unchanged = client.request(b"GET /status?code=304 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.header("Content-Length") == "1000" and head.body == b""
    assert [r.status for r in info.interim] == [103] and info.body == b"final"
    assert empty.status == 204 and unchanged.status == 304


def test_misbehaviours(origin):
    with pytest.raises(PeerClosed):
        exchange(origin.port, b"GET /close-before HTTP/1.1\r\nHost: a\r\n\r\n")
    response, closed = exchange(origin.port, b"GET /close-mid?n=1000 HTTP/1.1\r\nHost: a\r\n\r\n", close_wait=2)
    assert not response.complete and response.body_length == 500 and closed
    with RawClient(origin.port, timeout=0.5) as client:
        client.send(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(socket.timeout):
            client.response()
    with RawClient(origin.port) as client:
        assert client.request(b"GET /flaky HTTP/1.1\r\nHost: a\r\n\r\n").status == 200
        with pytest.raises(PeerClosed):
            client.request(b"GET /flaky HTTP/1.1\r\nHost: a\r\n\r\n")


def test_expect_100_continue(origin):
    with RawClient(origin.port) as client:
        client.send(b"PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        assert client.reader.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100")
        client.send(b"abc")
        assert client.response().json()["body_length"] == 3


def test_stop_ends_hanging_connections():
    origin = Origin().start()
    client = RawClient(origin.port)
    client.send(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
    wait_until(lambda: origin.requests("/hang"), 2, "the origin saw the request")
    origin.stop(timeout=3)
    assert client.closed_by_peer(2)
    assert port_refuses(origin.port)
    client.close()


def test_dump_toml_round_trips():
    import tomllib
    config = {"server": {"bind": ["127.0.0.1:1", "[::1]:2"], "workers": 2, "keepalive_timeout": 1.5,
                         "via_pseudonym": 'a"b'}, "log": {"access_log": "/tmp/x y.log"}}
    assert tomllib.loads(dump_toml(config)) == config


def test_free_port_is_free():
    assert port_refuses(free_port())


def test_echo_json_is_json(origin):
    response, _ = exchange(origin.port, b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert json.loads(response.body)["version"] == "HTTP/1.1"
