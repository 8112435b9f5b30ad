"""Persistent connections on both sides, and the upstream pool's one transparent retry.

Upstream reuse is visible at the origin: requests arriving on fewer TCP connections than there were
requests (each request here comes on a new client connection, so only the proxy can reuse).
"""

from __future__ import annotations

import pytest

from support.rawhttp import RawClient, build, exchange


def test_client_connection_is_kept_alive(make_proxy, origin):
    proxy = make_proxy()
    with RawClient(proxy.port) as client:
        for number in range(5):
            response = client.request(build("GET", origin.url(f"/echo?case=client-ka&i={number}")))
            assert response.status == 200 and response.json()["target"].endswith(f"i={number}")
            assert "close" not in response.tokens("Connection")
        assert not client.closed_by_peer(0.3)


def test_pipelined_requests_are_answered_in_order(make_proxy, origin):
    proxy = make_proxy()
    with RawClient(proxy.port) as client:
        client.send(b"".join(build("GET", origin.url(f"/echo?case=pipeline&i={n}")) for n in range(3)))
        targets = [client.response().json()["target"] for _ in range(3)]
    assert targets == [f"/echo?case=pipeline&i={n}" for n in range(3)]


def test_connection_close_is_honoured(make_proxy, origin):
    proxy = make_proxy()
    with RawClient(proxy.port) as client:
        response = client.request(build("GET", origin.url("/echo?case=close"), [("Connection", "close")]))
        assert response.status == 200
        assert "close" in response.tokens("Connection")
        assert client.closed_by_peer(2)


def test_http10_client_without_keep_alive_is_closed(make_proxy, origin):
    proxy = make_proxy()
    with RawClient(proxy.port) as client:
        response = client.request(build("GET", origin.url("/echo?case=http10"), version="HTTP/1.0"))
        assert response.status == 200
        assert client.closed_by_peer(2)


def test_idle_client_connection_is_closed_after_keepalive_timeout(make_proxy, origin):
    proxy = make_proxy({"server": {"keepalive_timeout": 1.0}})
    with RawClient(proxy.port) as client:
        assert client.request(build("GET", origin.url("/echo?case=idle"))).status == 200
        assert client.closed_by_peer(4.0)


def test_upstream_connections_are_reused(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}})
    for number in range(10):
        response, _ = exchange(proxy.port, build("GET", origin.url(f"/echo?case=pool&i={number}")))
        assert response.status == 200
    connections = {r.connection for r in origin.requests("/echo")}
    assert len(origin.requests("/echo")) == 10
    assert len(connections) <= 3, f"10 requests used {len(connections)} upstream connections"


def test_pool_size_zero_keeps_no_idle_connection(make_proxy, origin):
    proxy = make_proxy({"upstream": {"pool_size": 0}})
    for number in range(4):
        response, _ = exchange(proxy.port, build("GET", origin.url(f"/echo?case=nopool&i={number}")))
        assert response.status == 200
    assert len({r.connection for r in origin.requests("/echo")}) == 4


def _reused_attempt(proxy, origin, method: str, body: bytes = b""):
    """Warm the pool with a GET /flaky, then send `method` /flaky; return its response and record.

    The origin answers /flaky on a fresh connection only: on a reused one it reads the request and
    closes without a byte. Returns (response, the Received for our request) or None when the proxy
    happened not to reuse a connection for it.
    """
    marker = f"{method}-{len(origin.requests())}"
    warm, _ = exchange(proxy.port, build("GET", origin.url(f"/flaky?warm&{marker}")))
    assert warm.status == 200
    response, _ = exchange(proxy.port, build(method, origin.url(f"/flaky?ours&{marker}"), body=body), method=method)
    ours = [r for r in origin.requests("/flaky") if r.target == f"/flaky?ours&{marker}"]
    return response, ours


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_idempotent_request_is_retried_once_on_a_dead_pooled_connection(make_proxy, origin, method):
    proxy = make_proxy({"server": {"workers": 1}})
    for _ in range(3):
        response, ours = _reused_attempt(proxy, origin, method)
        assert response.status == 200, f"{method} on a dead pooled connection got {response.status}"
        if any(r.index > 0 for r in ours):  # it did go out on a reused connection, and was retried
            assert [r.index for r in ours] == [1, 0], ours
            return
    pytest.fail("the proxy never reused a pooled upstream connection")


def test_post_is_not_retried_and_gets_502(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}})
    for _ in range(3):
        response, ours = _reused_attempt(proxy, origin, "POST", body=b"not idempotent")
        if ours and ours[0].index > 0:
            assert response.status == 502
            assert len(ours) == 1, "the POST was sent to the origin twice"
            return
        assert response.status == 200
    pytest.fail("the proxy never reused a pooled upstream connection")
