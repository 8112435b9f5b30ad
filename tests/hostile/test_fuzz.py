"""Property-based request framing (issue 5, "Tests"): mutated pipelines of valid requests.

Two properties, each bounded (hypothesis, ~200 examples, no deadline):
- `workers.http1.RequestReader` (sans-IO): it raises nothing but a `ProxyError`, and where the
  bytes are cut into reads changes nothing: the same heads, bodies and ends, an error or not.
- the real proxy (reverse mode, so every request goes to the test origin whatever its target):
  it answers or closes, its worker stays alive, and the origin never receives more complete
  requests than the client got responses (no desync, no smuggled request).
"""

from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from support.rawhttp import PeerClosed, Reader, read_response
from workers.errors import ProxyError
from workers.http1 import END, RequestHead, RequestReader

from .helpers import scripted

TOKENS = [b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b";", b",", b"0\r\n\r\n", b"\r\n\r\n",
          b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n", b"Content-Length: 0\r\n",
          b"GET /fz HTTP/1.1\r\nHost: x\r\n\r\n", b"Connection: close\r\n", b"Expect: 100-continue\r\n",
          b"HTTP/1.0", b"ffffffff", b"-1", b"Host: y\r\n", b"\xff", b"Connection: upgrade\r\nUpgrade: h2c\r\n"]

REQUESTS = st.lists(st.tuples(st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
                              st.sampled_from(["none", "length", "chunked"]),
                              st.binary(max_size=24)), min_size=1, max_size=3)
MUTATIONS = st.lists(st.tuples(st.sampled_from(["insert", "delete", "replace", "repeat"]),
                               st.integers(min_value=0, max_value=1 << 16),
                               st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=3))),
                     max_size=4)


def pipeline(requests: list[tuple[str, str, bytes]], number: int) -> bytes:
    """Valid requests in origin-form, each with a body framed as asked."""
    out = b""
    for index, (method, framing, body) in enumerate(requests):
        out += f"{method} /fz?e={number}&r={index} HTTP/1.1\r\nHost: fuzz.test\r\n".encode()
        if framing == "length":
            out += b"Content-Length: %d\r\n\r\n" % len(body) + body
        elif framing == "chunked":
            out += b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") \
                + b"0\r\n\r\n"
        else:
            out += b"\r\n"
    return out


def mutate(data: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    for kind, position, token in mutations:
        at = position % (len(data) + 1)
        if kind == "insert":
            data = data[:at] + token + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(token):]
        elif kind == "replace":
            data = data[:at] + token + data[at + len(token):]
        else:
            data = data[:at] + data[at:at + 1 + len(token) * 7] * 2 + data[at + 1 + len(token) * 7:]
    return data


# -- sans-IO: RequestReader ---------------------------------------------------------------------------
def parse(data: bytes, cuts: list[int]) -> tuple[list, int | None]:
    """Feed `data` cut at `cuts`; (normalised events, error status or None)."""
    reader, events, status = RequestReader(), [], None
    bounds = [0, *sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]
    try:
        for start, end in zip(bounds, bounds[1:]):
            reader.feed(data[start:end])
            events += reader.events
            reader.events.clear()
            if reader.tunnel_data is not None:
                events.append(("tunnel", reader.tunnel_data + data[end:]))
                break
    except ProxyError as error:
        events += reader.events
        status = error.status
    return _normalise(events), status


def _normalise(events: list) -> list:
    out: list = []
    for item in events:
        if isinstance(item, RequestHead):
            out.append(("head", item.method, item.target, item.version, tuple(item.headers),
                        item.chunked, item.content_length, item.keep_alive))
        elif item is END:
            out.append(("end",))
        elif isinstance(item, bytes):
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + item)
            elif item:
                out.append(("body", item))
        else:
            out.append(item)
    return out


@given(REQUESTS, MUTATIONS, st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=6))
@settings(max_examples=200, deadline=None)
def test_request_reader_is_independent_of_how_bytes_arrive(requests, mutations, cuts):
    data = mutate(pipeline(requests, 0), mutations)
    whole = outcome(*parse(data, []))
    assert outcome(*parse(data, cuts)) == whole, f"{data!r} cut at {sorted(cuts)}"
    assert outcome(*parse(data, list(range(1, len(data))))) == whole, f"{data!r} fed byte by byte"


def outcome(events: list, status: int | None) -> tuple[list, bool]:
    """What must not depend on the cuts: the events, and whether it ended in an error. (Which
    error may: with two faults in one head, the one llhttp reports first can depend on the cuts.)"""
    return events, status is not None


# -- the real proxy ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_target(module_make_proxy, module_origin):
    module_origin.route("/fz", scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    proxy = module_make_proxy({"upstream": {"origin": module_origin.base, "read_timeout": 2.0},
                               "server": {"connect_ports": [1], "threads": 8},
                               "limits": {"header_timeout": 2.0, "body_timeout": 1.0}}, name="fuzz")
    return proxy, module_origin, proxy.worker_pids()


def responses_until_close(port: int, data: bytes, cut: int) -> int:
    """Send `data` in two writes (cut at `cut`), half-close, and count the responses until the proxy closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cut %= len(data) + 1
    try:
        try:
            sock.sendall(data[:cut])
            time.sleep(0.003)                     # most often, two reads for the proxy
            sock.sendall(data[cut:])
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        reader, count = Reader(sock), 0
        while True:
            try:
                read_response(reader, "GET")
            except (PeerClosed, socket.timeout, ConnectionResetError):
                return count
            count += 1
    finally:
        sock.close()


def complete_at_origin(origin, start: int) -> int:
    """Requests the origin received since `start` whose body arrived whole.

    The origin reads a body before it answers, so every request the proxy got an answer for is
    counted by now; what it is still reading was cut off by the proxy (never complete)."""
    deadline = time.monotonic() + 1.0
    while not all(r.body_sha256 for r in origin.requests()[start:]) and time.monotonic() < deadline:
        time.sleep(0.005)
    return sum(1 for r in origin.requests()[start:] if r.body_complete)


_examples = iter(range(1, 1 << 30))


@given(REQUESTS, MUTATIONS, st.integers(min_value=0, max_value=1 << 16))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_proxy_answers_or_closes_and_never_desyncs(fuzz_target, requests, mutations, cut):
    proxy, origin, workers = fuzz_target
    start = len(origin.requests())
    data = mutate(pipeline(requests, next(_examples)), mutations)
    answered = responses_until_close(proxy.port, data, cut)
    forwarded = complete_at_origin(origin, start)
    event(f"answered {answered}, forwarded {forwarded}")      # --hypothesis-show-statistics
    assert forwarded <= answered, f"origin got {forwarded} complete requests, client {answered} responses: {data!r}"
    assert proxy.worker_pids() == workers, "a worker died"


def test_fuzzing_left_no_traceback(fuzz_target):
    proxy, _, workers = fuzz_target
    assert proxy.worker_pids() == workers
    assert "Traceback" not in proxy.stderr_text(), proxy.stderr_text()[-3000:]
