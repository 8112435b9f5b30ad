"""200 MiB through the proxy in each direction, with the worker's memory bounded.

Each transfer first stalls one end until the other end's progress stops (backpressure reached),
so a proxy that buffered bodies instead of streaming them would show it twice: the far end would
get far ahead (it would push the whole body), and the worker's RSS would grow by the body size.
"""

from __future__ import annotations

import threading

import pytest

from support.memory import RssSampler
from support.pattern import iter_pattern, pattern_sha256
from support.rawhttp import RawClient, build, chunked, exchange
from support.wait import wait_stable

pytestmark = pytest.mark.slow

SIZE = 200 << 20
MAX_GROWTH = 50 << 20      # worker RSS growth allowed during a 200 MiB transfer
MAX_AHEAD = 64 << 20       # how far one end may get ahead of a stalled other end (socket buffers)


@pytest.fixture
def streaming_proxy(make_proxy, origin):
    proxy = make_proxy({"server": {"workers": 1}, "upstream": {"read_timeout": 30.0},
                        "limits": {"body_timeout": 30.0, "max_body_bytes": 0}})
    # warm up both directions, so buffers and the upstream pool exist before the baseline
    for query in ("n=2000000", "n=2000000&chunked=1"):
        response, _ = exchange(proxy.port, build("GET", origin.url(f"/bytes?{query}")))
        assert response.status == 200 and response.complete
    response, _ = exchange(proxy.port, build("POST", origin.url("/echo"), body=b"x" * 2_000_000))
    assert response.status == 200
    return proxy


@pytest.mark.parametrize("query", ["", "&chunked=1"], ids=["content-length", "chunked"])
def test_200mib_download_streams_with_bounded_memory(streaming_proxy, origin, query):
    proxy = streaming_proxy
    (worker,) = proxy.worker_pids()
    with RssSampler(worker) as rss, RawClient(proxy.port, timeout=60) as client:
        sent_before = origin.bytes_sent
        client.send(build("GET", origin.url(f"/bytes?n={SIZE}{query}")))
        # the client reads nothing yet: the origin must be held back by the proxy
        ahead = wait_stable(lambda: origin.bytes_sent, quiet=0.5, timeout=30,
                            message="origin output to stop while the client does not read") - sent_before
        assert ahead < MAX_AHEAD, f"the origin sent {ahead >> 20} MiB to a client that read nothing"
        response = client.response(keep_body=False)
    assert rss.growth < MAX_GROWTH, rss.describe()
    assert response.status == 200 and response.complete
    assert response.body_length == SIZE and response.sha256 == pattern_sha256(SIZE)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_200mib_upload_streams_with_bounded_memory(streaming_proxy, origin, framing):
    proxy = streaming_proxy
    gate = threading.Event()

    def gated_echo(ex) -> None:  # the origin reads nothing until the test opens the gate
        while not gate.wait(0.1) and not ex.origin.stopping:
            pass
        ex.read_body()
        ex.respond(200, b'{"length": %d, "sha256": "%s"}' % (ex.request.body_length, ex.request.body_sha256.encode()),
                   "application/json")

    origin.route("/gated-upload", gated_echo)
    (worker,) = proxy.worker_pids()
    sent = [0]
    with RssSampler(worker) as rss, RawClient(proxy.port, timeout=60) as client:
        if framing == "chunked":
            head = build("POST", origin.url("/gated-upload"), [("Transfer-Encoding", "chunked")])
            body = chunked(iter_pattern(SIZE))
        else:
            head = build("POST", origin.url("/gated-upload"), [("Content-Length", str(SIZE))])
            body = iter_pattern(SIZE)
        client.send(head)

        def upload() -> None:
            for piece in body:
                client.sock.sendall(piece)
                sent[0] += len(piece)

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        ahead = wait_stable(lambda: sent[0], quiet=0.5, timeout=30,
                            message="the client's upload to stall while the origin does not read")
        gate.set()
        assert ahead < MAX_AHEAD, f"the client pushed {ahead >> 20} MiB while the origin read nothing"
        uploader.join(120)
        assert not uploader.is_alive(), "the upload did not finish"
        response = client.response()
    assert rss.growth < MAX_GROWTH, rss.describe()
    assert response.status == 200
    assert response.json() == {"length": SIZE, "sha256": pattern_sha256(SIZE)}
