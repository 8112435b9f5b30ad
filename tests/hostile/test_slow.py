"""Slow and greedy clients (issue 5): a total deadline for the request head, a minimum rate and a
stall deadline for bodies, a send deadline for slow readers, an idle keep-alive timeout, a
per-worker connection cap, and 1,000 slowloris connections that cost a normal client nothing.
"""

from __future__ import annotations

import random
import resource
import socket
import threading
import time

import psutil
import pytest

from support.memory import RssSampler
from support.rawhttp import RawClient, build
from support.wait import wait_until

from .helpers import MiB, mark, reached, scripted

LIMITS = {"header_timeout": 2.0, "body_timeout": 1.0, "body_min_rate": 2000, "body_rate_grace": 0.5,
          "send_timeout": 1.0}


@pytest.fixture(scope="module")
def slowpoke(module_make_proxy):
    return module_make_proxy({"limits": LIMITS, "server": {"keepalive_timeout": 1.0}}, name="slowpoke")


def client_connections(proxy, pid: int | None = None) -> list:
    """The proxy's established client connections (laddr = its port), in one worker or all."""
    found = []
    for worker in [pid] if pid else proxy.worker_pids():
        try:
            found += [c for c in psutil.Process(worker).net_connections(kind="tcp")
                      if c.laddr.port == proxy.port and c.raddr and c.status == psutil.CONN_ESTABLISHED]
        except psutil.Error:
            pass
    return found


def _read_until_close(client: RawClient, timeout: float) -> tuple[bytes, float]:
    """Everything until EOF; (bytes, seconds until EOF)."""
    started, data = time.monotonic(), b""
    client.sock.settimeout(timeout)
    try:
        while piece := client.sock.recv(65536):
            data += piece
    except (ConnectionResetError, socket.timeout):
        pass
    return data, time.monotonic() - started


# -- request heads and bodies -----------------------------------------------------------------------
def test_head_dripping_one_byte_at_a_time_gets_408_at_the_total_deadline(slowpoke, module_origin):
    token = mark("drip")
    head = build("GET", module_origin.url(f"/echo?m={token}"), [("X-Pad", "p" * 200)])
    with RawClient(slowpoke.port) as client:
        started, answer = time.monotonic(), b""
        for byte in head[:-4]:                        # never the end of the head
            try:
                client.send(bytes([byte]))
            except OSError:
                break
            answer = client.read_available(0.3)
            if answer:
                break
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), f"after {elapsed:.1f}s: {answer[:80]!r}"
        assert b"connection: close" in answer.lower()
        assert client.closed_by_peer(1.0)
    assert 1.8 <= elapsed < 3.2, f"408 after {elapsed:.2f}s with header_timeout = 2 (the deadline is per read?)"
    assert reached(module_origin, token) == []


def _slow_body(slowpoke, origin, token: str, pieces: int, every: float) -> tuple[bytes, float]:
    """A POST announcing 100 kB that sends 50 bytes every `every` seconds; (answer, seconds)."""
    with RawClient(slowpoke.port) as client:
        started = time.monotonic()
        client.send(build("POST", origin.url(f"/echo?m={token}"), [("Content-Length", "100000")]))
        answer = b""
        for _ in range(pieces):
            try:
                client.send(b"b" * 50)
            except OSError:
                break
            answer = client.read_available(every)
            if answer:
                break
        if not answer:
            answer = client.read_available(3.0)
        elapsed = time.monotonic() - started
        assert client.closed_by_peer(1.0), "still open after the 408"
        return answer, elapsed


def _assert_aborted_upstream(origin, token: str) -> None:
    (seen,) = wait_until(lambda: reached(origin, token), 5, "the head at the origin")
    wait_until(lambda: seen.body_sha256, 5, "the origin to see the upload end")
    assert not seen.body_complete and seen.body_length < 100000, "the origin got the whole body"


def test_body_below_the_minimum_rate_gets_408_and_the_upload_is_aborted(slowpoke, module_origin):
    token = mark("slow-body")
    answer, elapsed = _slow_body(slowpoke, module_origin, token, pieces=40, every=0.1)   # 500 B/s
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:120]
    assert elapsed < 2.5, f"the rate check (2000 B/s after 0.5 s) took {elapsed:.1f}s"
    _assert_aborted_upstream(module_origin, token)


def test_body_that_stalls_gets_408_after_body_timeout(slowpoke, module_origin):
    token = mark("stalled-body")
    answer, elapsed = _slow_body(slowpoke, module_origin, token, pieces=1, every=0.1)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:120]
    assert 0.9 <= elapsed < 3.0, f"408 after {elapsed:.1f}s with body_timeout = 1"
    _assert_aborted_upstream(module_origin, token)


def test_idle_keep_alive_connection_is_closed_silently(slowpoke, module_origin):
    with RawClient(slowpoke.port) as client:
        assert client.request(build("GET", module_origin.url(f"/echo?m={mark('idle')}"))).status == 200
        data, waited = _read_until_close(client, 5.0)
    assert data == b"", f"sent {data[:80]!r} to an idle connection"
    assert 0.8 <= waited < 2.5, f"closed after {waited:.1f}s with keepalive_timeout = 1"


def test_connection_that_never_sends_a_byte_is_closed_at_header_timeout(slowpoke):
    with RawClient(slowpoke.port) as client:
        data, waited = _read_until_close(client, 6.0)
    assert data == b""
    assert 1.8 <= waited < 3.5, f"closed after {waited:.1f}s with header_timeout = 2"


# -- slow readers -------------------------------------------------------------------------------------
def test_slow_reader_is_dropped_after_send_timeout_with_bounded_memory(slowpoke, module_origin):
    size = 256 * MiB
    (worker,) = slowpoke.worker_pids()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", slowpoke.port))
    with RssSampler(worker) as rss:
        try:
            sock.sendall(build("GET", module_origin.url(f"/bytes?n={size}&m={mark('slow-reader')}")))
            sock.settimeout(5)
            first = sock.recv(100)                       # the head arrives; then we stop reading
            assert first.startswith(b"HTTP/1.1 200"), first
            port = sock.getsockname()[1]
            stalled = time.monotonic()
            wait_until(lambda: not [c for c in client_connections(slowpoke, worker) if c.raddr.port == port],
                       10, "the proxy to drop the slow reader")
            dropped = time.monotonic() - stalled
        finally:
            sock.close()
    assert dropped < 1.0 + 3.0, f"dropped {dropped:.1f}s after the client stopped reading (send_timeout = 1)"
    assert rss.growth < 32 * MiB, rss.describe()
    assert module_origin.bytes_sent < size, "the whole body was read from the origin for nobody"


# -- connection caps ------------------------------------------------------------------------------------
def test_max_connections_per_worker_holds_new_ones_in_the_backlog(make_proxy, origin):
    proxy = make_proxy({"server": {"threads": 4, "max_connections": 4}, "limits": {"header_timeout": 5.0}})
    idle = [RawClient(proxy.port) for _ in range(4)]
    try:
        wait_until(lambda: len(client_connections(proxy)) == 4, 5, "four parked connections")
        with RawClient(proxy.port) as fifth:
            fifth.send(build("GET", origin.url(f"/echo?m={mark('fifth')}")))
            assert fifth.read_available(0.7) == b"", "a fifth connection was served over max_connections"
            assert len(client_connections(proxy)) == 4
            idle.pop().close()
            fifth.sock.settimeout(3)
            assert fifth.response().status == 200
    finally:
        for client in idle:
            client.close()


# -- 1,000 slowloris connections ------------------------------------------------------------------------
SLOWLORIS = 1000
NORMAL_REQUESTS = 200


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Slowloris:
    """`count` connections with partial heads, each sent one more byte now and then (a thread)."""

    def __init__(self, port: int, target: str, count: int, bytes_per_second: float) -> None:
        self.socks: list[socket.socket] = []
        self.interval = 1.0 / bytes_per_second
        self._stop = threading.Event()
        for number in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(f"GET {target}?loris={number} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
            self.socks.append(sock)
        self._thread = threading.Thread(target=self._drip, daemon=True, name="slowloris")
        self._thread.start()

    def _drip(self) -> None:
        while not self._stop.wait(self.interval):
            sock = random.choice(self.socks)
            try:
                sock.send(b"x")
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def test_1000_slowloris_connections_do_not_slow_a_normal_client(make_proxy, origin):
    _raise_fd_limit(SLOWLORIS * 2 + 512)
    proxy = make_proxy({"server": {"workers": 2, "threads": 64}, "limits": {"header_timeout": 60.0}})
    origin.route("/fast", scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))   # one write: no Nagle
    loris = Slowloris(proxy.port, origin.url("/echo"), SLOWLORIS, bytes_per_second=500)
    try:
        wait_until(lambda: len(client_connections(proxy)) >= SLOWLORIS, 20, "every slowloris connection accepted")
        latencies = []
        for number in range(NORMAL_REQUESTS):
            started = time.monotonic()
            with RawClient(proxy.port, timeout=5) as client:
                response = client.request(build("GET", origin.url(f"/fast?m=normal-{number}")))
            latencies.append(time.monotonic() - started)
            assert response.status == 200
            time.sleep(0.01)                 # spread over ~2 s, while the slowloris keep dripping
        still_open = len(client_connections(proxy))
    finally:
        loris.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert still_open >= SLOWLORIS, f"only {still_open} slowloris connections were still open"
    assert p99 < 0.100, f"p99 {p99 * 1000:.1f} ms, median {latencies[len(latencies) // 2] * 1000:.1f} ms"
    assert [r for r in origin.requests() if "loris" in r.target] == []
    wait_until(lambda: len(client_connections(proxy)) < 10, 10, "the slowloris connections to be closed")
