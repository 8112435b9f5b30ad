"""python -m bench.micro_hit: the cost in µs of one cache hit of a 1 KiB object held in the L1.

design: in-process, no sockets. A fakeredis-backed `cache.store.Store` holds one stored response
(nginx-like headers, `Cache-Control: public, max-age=3600`, 1 KiB body); after one read from Redis
it sits in the worker's L1. Each stage runs `--number` times per round, the best of `--rounds` is
reported (the least disturbed by other work on the machine):

  lookup        store.lookup(key, request headers) -> Hit from the L1
  decide_reuse  what CacheFront.handle does to decide: request_fields, hit.derived(settings,
                prepare) (kept with the L1 copy), decide_reuse
  (unprepared)  decide_reuse(method, header list, hit.meta, ...): prepare runs on the call, as it
                does once per L1 copy (and once per Redis hit)
  serve_hit     CacheFront._serve_hit, reading the request's fields itself: 304 check, Age, Range,
                Cache-Status, the send (to one end of a socketpair, read at the other)
  handle        CacheFront.handle: the whole decision, lookup to send
  inline        what the worker's main thread does for a readable parked connection: the request
                written to the socketpair, ClientConnection.serve_inline (recv, parse, route, the
                L1 hit, sendmsg), the response read back; the client's syscalls are included

Each stage runs for two requests: `plain` (a browser's GET: no Cache-Control, no If-*, no Range)
and `if-none-match` (a revalidating browser: the answer is a 304).
"""

from __future__ import annotations

import argparse
import socket
import time
import timeit
from typing import Any

import fakeredis

from cache import policy
from cache.fields import format_http_date
from cache.settings import CacheSettings
from cache.store import Meta, Store
from workers.accesslog import AccessLog, Record
from workers.caching import CacheFront
from workers.connection import PARK, ClientConnection, Context
from workers.http1 import RequestHead
from workers.proxy import Route
from workers.scoreboard import Row, Slot
from workers.settings import Limits, Server
from workers.upstream import Pool

KEY = "http://origin.test/c/1k"
BODY = b"x" * 1024
NOW = time.time()
STORED_HEADERS = [
    ("Server", "nginx/1.24.0"), ("Date", format_http_date(NOW)), ("Content-Type", "text/plain"),
    ("Last-Modified", format_http_date(NOW - 86400)), ("ETag", '"6650f0a1-400"'),
    ("Cache-Control", "public, max-age=3600"), ("Accept-Ranges", "bytes"),
]
BROWSER = [
    ("Host", "origin.test"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"), ("Accept-Encoding", "gzip, deflate, br"),
    ("Connection", "keep-alive"), ("Upgrade-Insecure-Requests", "1"),
]
REQUESTS = {"plain": BROWSER, "if-none-match": [*BROWSER, ("If-None-Match", '"6650f0a1-400"')]}


REQUEST_BYTES = {name: ("GET /c/1k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()
                 for name, headers in REQUESTS.items()}


def make_store() -> Store:
    store = Store(fakeredis.FakeRedis(), CacheSettings(redis_url="redis://fake", l1_ttl=3600.0), listen=True)
    deadline = time.monotonic() + 5
    while not store.l1_trusted:
        if time.monotonic() > deadline:
            raise SystemExit("the store's listener did not subscribe")
        time.sleep(0.01)
    writer = store.open_writer(KEY, BROWSER, 3600)
    writer.write(BODY)
    meta = Meta(status=200, headers=STORED_HEADERS, request_time=NOW - 0.01, response_time=NOW, ttl=3600)
    if not writer.commit(meta, NOW):
        raise SystemExit(f"could not store the object: {writer.reason}")
    hit = store.lookup(KEY, BROWSER)
    assert hit is not None and hit.source == "redis"
    return store


def connection(front: CacheFront, row: Row) -> tuple[ClientConnection, socket.socket]:
    """A worker's connection on one end of a socketpair (the other end is the client's)."""
    ctx = Context(server=Server(), limits=Limits(), origin=("http", "origin.test", 80),
                  pool=Pool(size=1, idle_timeout=1, connect_timeout=1, read_timeout=1),
                  access_log=AccessLog(""), cache=front, forward_proxy=False)
    ours, client = socket.socketpair()
    ours.setblocking(False)
    conn = ClientConnection(ours, "127.0.0.1", ctx)
    conn.row = row
    return conn, client


def inline(conn: ClientConnection, client: socket.socket, request: bytes, row: Row) -> None:
    client.sendall(request)
    outcome = conn.serve_inline(row)
    answer = client.recv(65536)
    if outcome != PARK or not answer.startswith(b"HTTP/1.1 "):
        raise SystemExit(f"the hit was not answered inline: {outcome} {answer[:80]!r}")


def stages(store: Store, front: CacheFront, name: str, row: Row) -> dict[str, Any]:
    """Stage name -> a no-argument callable running that stage once."""
    headers, request = REQUESTS[name], REQUEST_BYTES[name]
    settings, record = front.settings, Record("bench")
    conn, client = connection(front, row)
    head = RequestHead("GET", "/c/1k", "1.1", headers, True, False, None)
    route = Route("reverse", "http", "origin.test", 80, "/c/1k", "origin.test")
    hit = store.lookup(KEY, headers)
    assert hit is not None and hit.source == "l1", hit
    decision = policy.decide_reuse("GET", headers, hit.meta, settings, NOW)
    assert isinstance(decision, policy.Fresh), decision
    status = front._status(hit=True, ttl=decision.ttl)
    return {
        "lookup": lambda: store.lookup(KEY, headers),
        "decide_reuse": lambda: policy.decide_reuse("GET", policy.request_fields(headers),
                                                    hit.derived(settings, policy.prepare), settings, NOW),
        "(unprepared)": lambda: policy.decide_reuse("GET", headers, hit.meta, settings, NOW),
        "serve_hit": lambda: (front._serve_hit(conn, head, hit, decision.age, record, status), client.recv(65536)),
        "handle": lambda: (front.handle(conn, head, route, record), client.recv(65536)),
        "inline": lambda: inline(conn, client, request, row),
    }


def best_us(run, number: int, rounds: int) -> float:
    return min(timeit.repeat(run, number=number, repeat=rounds)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro_hit", description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds; the best is reported")
    options = parser.parse_args(argv)
    store = make_store()
    slot = Slot(1)
    try:
        front = CacheFront(store, store.settings.policy(reverse=True), "prefork_proxy", pool=None)
        print(f"{'µs per hit':<14}" + "".join(f"{name:>15}" for name in REQUESTS))
        table = {name: stages(store, front, name, slot.row(0)) for name in REQUESTS}
        for stage in table["plain"]:
            cells = [best_us(table[name][stage], options.number, options.rounds) for name in REQUESTS]
            print(f"{stage:<14}" + "".join(f"{cell:>15.2f}" for cell in cells))
    finally:
        store.close()
        slot.close()


if __name__ == "__main__":
    main()
