"""The main thread's replay of byte-identical requests (workers/replay.py): it answers only what the
parser would have answered from the L1, and falls back to the parser whenever that changes.

The first tests drive one worker's objects in-process: a store on fakeredis, the cache front, and
`ClientConnection.serve_inline` on one end of a socketpair (the other end is the client), exactly
as the worker's main thread calls it when a parked connection is readable. The last ones go through
the real 2-worker proxy on a real Redis.
"""

from __future__ import annotations

import socket
import time

import fakeredis
import pytest

from cache.fields import format_http_date
from cache.settings import CacheSettings
from cache.store import Meta, Store
from workers.access import AccessPolicy
from workers.accesslog import AccessLog
from workers.caching import CacheFront
from workers.connection import CLOSE, DISPATCH, PARK, ClientConnection, Context
from workers.http1 import RequestHead
from workers.replay import Replays
from workers.scoreboard import Slot
from workers.settings import Access, Limits, Server
from workers.upstream import Pool

from support.rawhttp import RawClient, build
from support.wait import wait_until

from .helpers import is_hit, params, pin_workers, wait_stored

ORIGIN = ("http", "origin.test", 80)
URL = "http://origin.test/obj"
BODY = b"replayed body\n" * 64
BROWSER = [("Host", "origin.test"), ("User-Agent", "test-browser/1.0"), ("Accept", "*/*")]


def wire(path: str = "/obj", headers: list[tuple[str, str]] = BROWSER) -> bytes:
    return (f"GET {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n").encode()


REQUEST = wire()


class Worker:
    """One worker's objects, in-process, with the object at URL stored and held in the L1."""

    def __init__(self, max_age: int = 3600) -> None:
        self.store = Store(fakeredis.FakeRedis(), CacheSettings(redis_url="redis://fake", l1_ttl=3600.0))
        wait_until(lambda: self.store.l1_trusted, 5, "the store's listener to subscribe")
        self.put(max_age)
        self.front = CacheFront(self.store, self.store.settings.policy(reverse=True), "prefork_proxy", pool=None)
        self.slot = Slot(1)
        self.access_log = AccessLog("")
        self.ctx = Context(server=Server(), limits=Limits(), origin=ORIGIN,
                           pool=Pool(size=1, idle_timeout=1, connect_timeout=1, read_timeout=1),
                           access_log=self.access_log, cache=self.front, forward_proxy=False,
                           access=AccessPolicy.build(Access(deny=["10.9.9.9/32"], allow=["0.0.0.0/0"]),
                                                     [("127.0.0.1", 8080)]))
        self.sockets: list[socket.socket] = []

    def put(self, max_age: int) -> None:
        now = time.time()
        writer = self.store.open_writer(URL, BROWSER, max_age + 60)
        writer.write(BODY)
        headers = [("Date", format_http_date(now)), ("Content-Type", "text/plain"),
                   ("Cache-Control", f"max-age={max_age}"), ("ETag", '"v1"')]
        assert writer.commit(Meta(status=200, headers=headers, request_time=now, response_time=now,
                                  ttl=max_age + 60), now)
        assert self.store.lookup(URL, BROWSER) is not None      # now in the L1

    def connect(self, client_ip: str = "127.0.0.1") -> tuple[ClientConnection, socket.socket]:
        ours, client = socket.socketpair()
        ours.setblocking(False)
        client.settimeout(2)
        self.sockets += [ours, client]
        return ClientConnection(ours, client_ip, self.ctx), client

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.store.close()
        self.slot.close()


class FeedSpy:
    """Counts what a connection's request parser is fed."""

    def __init__(self, conn: ClientConnection) -> None:
        self.fed: list[bytes] = []
        real = conn.reader.feed
        conn.reader.feed = lambda data: (self.fed.append(data), real(data))[1]


@pytest.fixture
def worker():
    made = Worker()
    yield made
    made.close()


def ask(worker: Worker, conn: ClientConnection, client: socket.socket, data: bytes = REQUEST) -> tuple[str, bytes]:
    """Write `data` as the client, let the main thread serve it; (outcome, what the client got)."""
    client.sendall(data)
    outcome = conn.serve_inline(worker.slot.row(0))
    client.setblocking(False)
    try:
        answer = client.recv(1 << 20)
    except BlockingIOError:
        answer = b""
    client.setblocking(True)
    return outcome, answer


def test_a_byte_identical_request_is_answered_without_the_parser(worker):
    conn, client = worker.connect()
    outcome, first = ask(worker, conn, client)
    assert outcome == PARK and first.startswith(b"HTTP/1.1 200") and first.endswith(BODY)
    assert len(worker.ctx.replays) == 1

    spy = FeedSpy(conn)
    outcome, second = ask(worker, conn, client)
    assert outcome == PARK and spy.fed == []
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(BODY)
    assert b"Cache-Status: prefork_proxy; hit" in second and b"\r\nAge: " in second
    row = worker.slot.row(0)
    assert row.get("requests") == 2 and row.get("bytes_in") == 2 * len(REQUEST)


def test_another_connection_of_an_allowed_client_replays_after_its_first_request(worker):
    first, client = worker.connect()
    assert ask(worker, first, client)[0] == PARK
    conn, client = worker.connect()
    spy = FeedSpy(conn)
    outcome, answer = ask(worker, conn, client)     # its address is checked first: parsed
    assert outcome == PARK and answer.startswith(b"HTTP/1.1 200") and spy.fed == [REQUEST]
    outcome, answer = ask(worker, conn, client)
    assert outcome == PARK and answer.startswith(b"HTTP/1.1 200") and spy.fed == [REQUEST]


def test_a_denied_client_is_never_answered_from_a_remembered_request(worker):
    allowed, client = worker.connect()
    assert ask(worker, allowed, client)[0] == PARK
    assert len(worker.ctx.replays) == 1
    denied, client = worker.connect("10.9.9.9")
    outcome, answer = ask(worker, denied, client)
    assert outcome == DISPATCH and answer == b""       # nothing sent: a handler thread answers
    denied.run(worker.slot.row(0))                     # ... as that thread does
    assert client.recv(65536).startswith(b"HTTP/1.1 403")


def test_after_a_purge_the_twin_is_parsed_and_handed_to_a_thread(worker):
    conn, client = worker.connect()
    assert ask(worker, conn, client)[0] == PARK
    assert worker.store.purge(URL)
    spy = FeedSpy(conn)
    outcome, answer = ask(worker, conn, client)
    assert outcome == DISPATCH and answer == b""       # nothing sent: the thread fetches it
    assert spy.fed == [REQUEST]
    head = conn.pending[0]
    assert isinstance(head, RequestHead) and head.target == "/obj"


def test_a_replayed_request_whose_object_went_stale_is_parsed_and_handed_on():
    worker = Worker(max_age=2)         # Date has second resolution: fresh for 1-2 s
    try:
        conn, client = worker.connect()
        assert ask(worker, conn, client)[0] == PARK
        spy = FeedSpy(conn)
        outcome, answer = wait_until(lambda: (lambda o: o if o[0] == DISPATCH else None)(ask(worker, conn, client)),
                                     5, "max-age=2 to run out")
        assert answer == b"" and spy.fed[-1] == REQUEST
    finally:
        worker.close()


def test_only_a_request_read_alone_and_whole_is_remembered(worker):
    conn, client = worker.connect()
    other = wire(headers=[*BROWSER, ("X-Other", "1")])
    outcome, answer = ask(worker, conn, client, REQUEST + other)        # pipelined: two answers
    assert outcome == PARK and answer.count(b"HTTP/1.1 200") == 2
    assert len(worker.ctx.replays) == 0
    assert ask(worker, conn, client, REQUEST[:20])[0] == PARK            # half a request
    outcome, answer = ask(worker, conn, client, REQUEST[20:])
    assert outcome == PARK and answer.startswith(b"HTTP/1.1 200")
    assert len(worker.ctx.replays) == 0


def test_a_request_differing_by_one_byte_is_parsed(worker):
    conn, client = worker.connect()
    assert ask(worker, conn, client)[0] == PARK
    spy = FeedSpy(conn)
    twin = REQUEST.replace(b"test-browser/1.0", b"test-browser/1.1")
    outcome, answer = ask(worker, conn, client, twin)
    assert outcome == PARK and answer.startswith(b"HTTP/1.1 200") and spy.fed == [twin]


def test_connection_close_is_honoured_on_a_replay(worker):
    conn, client = worker.connect()
    closing = wire(headers=[*BROWSER, ("Connection", "close")])
    assert ask(worker, conn, client, closing)[0] == CLOSE
    conn, client = worker.connect()
    assert ask(worker, conn, client)[0] == PARK                 # its address checked
    outcome, answer = ask(worker, conn, client, closing)       # replayed
    assert outcome == CLOSE and b"Connection: close" in answer


def test_replays_are_bounded():
    replays = Replays(max_entries=2, max_request_bytes=100)
    head = RequestHead("GET", "/", "1.1", [], True, False, None)
    for raw in (b"a", b"b", b"c", b"x" * 101):
        replays.remember(raw, head, None)
    assert len(replays) == 2
    assert replays.get(b"a") is None and replays.get(b"b") is not None and replays.get(b"x" * 101) is None


# -- through the real proxy ------------------------------------------------------------------------

def test_byte_identical_requests_on_many_connections_hit_until_a_purge(cache_proxy, site):
    site.resource("/twin", body=BODY, headers=[("Cache-Control", "max-age=60")])
    url = site.url("/twin")
    raw = build("GET", url, [("User-Agent", "same-client/1.0")])
    connections = [RawClient(cache_proxy.port) for _ in range(6)]
    try:
        answers = [c.request(raw, "GET") for c in connections for _ in range(3)]
        assert all((r.status, r.body) == (200, BODY) for r in answers)
        assert sum(not is_hit(r) for r in answers) == 1 and site.count("/twin") == 1
        wait_stored(cache_proxy, url)

        purge = connections[0].request(build("PURGE", url, []), "PURGE")
        assert purge.status == 200
        after = [c.request(raw, "GET") for c in connections]
        assert all((r.status, r.body) == (200, BODY) for r in after)
        assert params(after[0])["fwd"] == "uri-miss" and site.count("/twin") == 2
        assert sum(is_hit(r) for r in after) >= len(after) - 2      # one refetch per worker at most
    finally:
        for c in connections:
            c.close()


def test_replayed_hits_are_logged_like_any_request(make_proxy, session_redis, site, tmp_path):
    from .helpers import cache_config
    log = tmp_path / "access.log"
    config = cache_config(session_redis.url, key_prefix="e2e-replay-log")
    config["log"] = {"access_log": str(log)}
    proxy = make_proxy(config)
    site.resource("/logged", body=BODY, headers=[("Cache-Control", "max-age=60")])
    url = site.url("/logged")
    raw = build("GET", url, [("User-Agent", "logged-client/2.0"), ("Referer", "http://ref.test/")])
    pinned = pin_workers(proxy)
    try:
        for connection in pinned:
            for _ in range(4):
                assert connection.client.request(raw, "GET").status == 200
    finally:
        for connection in pinned:
            connection.close()
    lines = wait_until(lambda: (lambda ls: ls if len(ls) == 8 else None)(
        [line for line in log.read_text().splitlines() if "/logged" in line] if log.exists() else []),
        5, "eight access log lines")
    assert all(f'"GET {url} HTTP/1.1" 200 {len(BODY)} "http://ref.test/" "logged-client/2.0"' in line
               for line in lines), lines
    assert sum(line.endswith("cs=hit") for line in lines) == 7
