"""The cache store: an in-process L1 in front of Redis. All I/O, no HTTP policy.

API used by a worker (every method is thread-safe unless noted; none raises because of Redis: when
Redis is down, slow, full or read-only they return None / False and the worker serves uncached):

    server = cache.embedded.start(settings.embedded_maxmemory)   # master, before fork, if "embedded"
    store = connect(settings, url)           # in each worker, after fork; None if caching is off
    hit = store.lookup(primary_key, request_headers)          -> Hit | None
        hit.meta (Meta: read it, never edit it, replace it), hit.body (bytes, or None for a large
        body), hit.chunks() (iterate the body; may raise IncompleteBody midway for a large body whose
        chunk vanished: abort the response), hit.derived(settings, derive) (derive(meta, settings),
        computed once per L1 copy)
    writer = store.open_writer(primary_key, request_headers, ttl)   # no I/O yet; one thread only
        writer.write(data) -> bool           # False: not storing any more (too big, Redis failed)
        writer.commit(Meta(status=, headers=, request_time=, response_time=, ttl=), now) -> bool
        writer.abort()                       # idempotent: call it in `finally`
    store.update_meta(primary_key, meta, now) -> bool    # 304 freshening; meta = hit.meta replaced
    store.purge(primary_key) -> bool         # every variant, every process; True if one was stored
    store.invalidate(primary_key)            # the same, after an unsafe method (RFC 9111 §4.4)
    with store.collapse(primary_key) as ticket:   # ticket.leader: fetch; else look up again first
    store.stats() -> dict;  store.server_info() -> dict | None;  store.close()

`ttl` is the seconds Redis keeps the object: freshness lifetime + stale windows (the policy's);
`now` is the wall clock the caller decided with.

Staleness bound of the L1 (ARCHITECTURE "Cache": L1 invalidation with a stated upper bound):
an L1 copy is served only while this worker's pub/sub listener is subscribed, and only for
`l1_ttl` seconds after it was read from Redis (after that the metadata is read again and the body
reused if its body id is unchanged). Every purge, invalidation, replacement and freshening publishes
the primary key's hash after its Redis write, and the L1 is cleared whenever the subscription is lost or
restored. So an L1 copy outlives a change made by any process on any node by at most the pub/sub
delivery time, and by at most `l1_ttl` seconds when the subscription is broken in a way nobody has
noticed yet (or when the change itself could not reach Redis).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache.breaker import Guard, Unavailable
from cache.collapse import Collapser, Ticket
from cache.l1 import L1, L1Entry
from cache.layout import Keys, Meta, tag_of
from cache.listener import Listener
from cache.redis_store import VARY_MISS, Found, RedisStore
from cache.redis_url import client_for
from cache.settings import CacheSettings
from cache.writer import Writer

__all__ = ["UNAVAILABLE", "VARY_MISS", "Hit", "IncompleteBody", "Meta", "Store", "Ticket", "Writer", "connect", "make_client"]

S = TypeVar("S")
T = TypeVar("T")


class _Unavailable:
    """lookup()'s answer when Redis could not be asked (down, slow, circuit open): false."""

    def __bool__(self) -> bool:
        return False


UNAVAILABLE = _Unavailable()


class IncompleteBody(Exception):
    """A large body lost a chunk while it was being streamed (evicted, replaced, or Redis failed)."""


class Hit:
    """A stored response. `body` is the whole body when it was read at once, else None: use chunks().

    `meta` may be the L1's own copy (its headers a tuple): replace it, never edit it."""

    __slots__ = ("meta", "body", "source", "_rest", "_entry", "_derived")

    def __init__(self, meta: Meta, body: bytes | None, source: str,
                 rest: Callable[[], Iterator[bytes]] | None = None, entry: L1Entry | None = None) -> None:
        self.meta, self.body, self.source, self._rest, self._entry = meta, body, source, rest, entry
        self._derived: tuple[object, ...] | None = None

    def derived(self, settings: S, derive: Callable[[Meta, S], T]) -> T:
        """derive(meta, settings), computed once per L1 copy of the object and kept with it (later
        hits of the copy reuse it; it goes when the copy is dropped or replaced), else once per hit.
        `derive` must be a pure function of its arguments (the cache policy's prepare)."""
        entry = self._entry if self._entry is not None and self._entry.meta is self.meta else None
        kept = self._derived if entry is None else entry.derived
        if kept is None or kept[0] is not self.meta or kept[1] is not derive or kept[2] is not settings:
            kept = (self.meta, derive, settings, derive(self.meta, settings))
            if entry is None:
                self._derived = kept
            else:
                entry.derived = kept
        return kept[3]  # type: ignore[return-value]

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces; for a large body may raise IncompleteBody after the first piece."""
        if self.body is not None:
            if self.body:
                yield self.body
        elif self._rest is not None:
            yield from self._rest()

    def __repr__(self) -> str:
        return f"<Hit {self.meta.status} {self.meta.body_length} bytes from {self.source}>"


def make_client(url: str, settings: CacheSettings) -> redis.Redis:
    """A redis-py client (hiredis parser when installed) with short timeouts and no retries:
    the circuit breaker, not a retry loop, deals with a failing Redis."""
    return client_for(url, socket_timeout=settings.socket_timeout, connect_timeout=settings.connect_timeout,
                      retry=Retry(NoBackoff(), 0), health_check_interval=0)


def connect(settings: CacheSettings, url: str | None = None) -> Store | None:
    """The worker's store; call it after fork. `url` overrides settings.redis_url (the master passes
    the embedded server's URL). None when caching is off (redis_url = ""). No network I/O here."""
    url = settings.redis_url if url is None else url
    if url == "":
        return None
    if url == "embedded":
        raise ValueError("redis_url 'embedded': pass the URL of the server that cache.embedded.start() returned")
    return Store(make_client(url, settings), settings)


class Store:
    def __init__(self, client: redis.Redis, settings: CacheSettings, *,
                 clock: Callable[[], float] = time.monotonic, listen: bool = True) -> None:
        self.settings, self._clock = settings, clock
        self._guard = Guard(settings.breaker_threshold, settings.breaker_cooldown, clock)
        self._redis = RedisStore(client, self._guard, prefix=settings.key_prefix, ttl_margin=settings.ttl_margin)
        self._l1 = L1(settings.l1_max_bytes, settings.l1_max_object_bytes, clock)
        self._whole_limit = max(settings.l1_max_object_bytes, settings.chunk_bytes)
        self._collapser = Collapser(self._redis, lock_ttl=settings.lock_ttl, lock_timeout=settings.lock_timeout)
        self.counters: Counter[str] = Counter()      # approximate under threads: stats only
        self._listening = False
        self._listener = Listener(client, self._redis.channel, ping_interval=max(0.2, settings.l1_ttl / 3),
                                  on_message=self._on_message, on_state=self._on_listener_state)
        if listen:
            self._listener.start()

    # -- reading

    def lookup(self, primary_key: str, request_headers: list[tuple[str, str]]) -> Hit | None:
        """The stored variant this request selects, or a false value: VARY_MISS when only other
        variants of the URL are stored, UNAVAILABLE when Redis could not be asked, else None."""
        entry = self._l1.get(tag_of(primary_key), request_headers)
        if entry is not None and self._trusted(entry):
            self.counters["l1_hits"] += 1
            return Hit(entry.meta, entry.body, "l1", entry=entry)   # no copy: the L1's meta is read-only
        epoch = self._l1.epoch                         # before reading Redis: see L1.put
        try:
            hit = self._from_redis(self._redis.keys(primary_key), request_headers, entry, epoch)
        except Unavailable:
            self.counters["unavailable"] += 1
            return UNAVAILABLE
        self.counters["redis_hits" if hit else "misses"] += 1
        return hit

    def lookup_l1(self, primary_key: str, request_headers: list[tuple[str, str]]) -> Hit | None:
        """The L1's copy if it holds a trusted one, else None: never a network round trip."""
        entry = self._l1.get(tag_of(primary_key), request_headers)
        if entry is not None and self._trusted(entry):
            self.counters["l1_hits"] += 1
            return Hit(entry.meta, entry.body, "l1", entry=entry)
        return None

    def _trusted(self, entry: L1Entry) -> bool:
        return self._listening and self._clock() - entry.loaded_at < self.settings.l1_ttl

    def _from_redis(self, keys: Keys, request_headers: list[tuple[str, str]],
                    entry: L1Entry | None, epoch: int) -> Hit | None:
        found = self._redis.read_meta(keys, request_headers)
        if not found:
            return VARY_MISS if found is VARY_MISS else None
        meta, inline = found.record.meta, found.record.inline
        if entry is not None and entry.meta.body_id == meta.body_id:
            body = entry.body                          # the L1 body is still current: no transfer
        elif inline is not None:
            body = inline
        elif meta.body_length > self._whole_limit:
            return self._stream(keys, found)
        else:
            body = self._whole(keys, found)
            if body is None:
                return None
        self._l1.put(keys.tag, found.variant, meta, body, epoch)
        return Hit(meta, body, "redis")

    def _whole(self, keys: Keys, found: Found) -> bytes | None:
        meta = found.record.meta
        chunks = self._redis.read_chunks(keys, meta)
        if None in chunks or sum(map(len, chunks)) != meta.body_length:
            self._discard(keys, found)
            return None
        return b"".join(chunks)

    def _stream(self, keys: Keys, found: Found) -> Hit | None:
        """A body too large to read at once: check that every chunk is there, then read lazily."""
        meta = found.record.meta
        sizes, first = self._redis.chunk_sizes_and_first(keys, meta)
        if first is None or 0 in sizes or sum(sizes) != meta.body_length:
            self._discard(keys, found)
            return None
        return Hit(meta, None, "redis", lambda: self._rest(keys, found, first))

    def _rest(self, keys: Keys, found: Found, first: bytes) -> Iterator[bytes]:
        yield first
        meta = found.record.meta
        for number in range(1, meta.chunks):
            try:
                chunk = self._redis.read_chunk(keys, meta, number)
            except Unavailable as error:
                raise IncompleteBody(f"chunk {number} of {meta.chunks}: {error}") from None
            if chunk is None:
                self._discard(keys, found)
                raise IncompleteBody(f"chunk {number} of {meta.chunks} is gone")
            yield chunk

    def _discard(self, keys: Keys, found: Found) -> None:
        """An incomplete object is a miss and is deleted (if it is still the one we read)."""
        self.counters["incomplete"] += 1
        try:
            self._redis.delete_broken(keys, found.variant, found.raw, found.record.meta)
        except Unavailable:
            pass

    # -- writing

    def open_writer(self, primary_key: str, request_headers: list[tuple[str, str]], ttl: float) -> Writer:
        """A writer for the response to this request; `ttl` as in commit (chunks get it + ttl_margin)."""
        settings = self.settings
        return Writer(self._redis, self._redis.keys(primary_key), request_headers, ttl,
                      chunk_bytes=settings.chunk_bytes, max_object_bytes=settings.max_object_bytes,
                      on_end=self._writer_ended)

    def _writer_ended(self, writer: Writer) -> None:
        self.counters[f"writes_{writer.state}"] += 1
        if writer.state == "committed":
            self._l1.drop(writer.tag)

    def update_meta(self, primary_key: str, meta: Meta, now: float | None = None) -> bool:
        """Freshen a stored variant after a 304 (RFC 9111 §4.3.4): new status/headers/times/ttl,
        same body. `meta` is the hit's meta with those fields replaced. False if it is gone,
        was replaced meanwhile (another body id), or Redis is unavailable."""
        keys = self._redis.keys(primary_key)
        meta = msgspec.structs.replace(meta, stored_at=time.time() if now is None else now)
        try:
            updated = meta.ttl > 0 and self._redis.update_meta(keys, meta)
        except Unavailable:
            updated = False
        self._l1.drop(keys.tag)
        return updated

    def purge(self, primary_key: str) -> bool:
        """Remove every variant from Redis and from the L1 of every process; True if one was held."""
        keys = self._redis.keys(primary_key)
        try:
            removed = self._redis.purge(keys)
        except Unavailable:
            removed = False
        return self._l1.drop(keys.tag) or removed

    def invalidate(self, primary_key: str) -> None:
        """RFC 9111 §4.4: after an unsafe method, remove the stored responses for this URI."""
        self.purge(primary_key)

    def collapse(self, primary_key: str) -> Ticket:
        """Wait for this key's turn (at most lock_timeout); see cache.collapse.Ticket."""
        return self._collapser.acquire(primary_key)

    # -- the listener thread

    def _on_message(self, data: bytes) -> None:
        kind, tag, origin = (data.decode("latin-1").split(":") + ["", ""])[:3]
        if kind == "i" and origin != self._redis.origin:   # our own changes dropped our copy already
            self.counters["invalidations_received"] += 1
            self._l1.drop(tag)
        elif kind == "d":
            self._collapser.notify(tag)

    def _on_listener_state(self, connected: bool) -> None:
        if connected:
            self._l1.clear()         # whatever was published while we were not subscribed is lost
            self._listening = True
        else:
            self._listening = False
            self._l1.clear()

    # -- operations

    @property
    def l1_trusted(self) -> bool:
        return self._listening

    def l1_stats(self) -> dict:
        """The L1's entries, bytes, max_bytes, evictions (no Redis round trip)."""
        return self._l1.stats()

    def latency_p50(self) -> float:
        """Median Redis round trip in seconds over recent operations (0.0 before any)."""
        return self._guard.latency_p50()

    @property
    def available(self) -> bool:
        """False while the read circuit is open: requests go uncached (Cache-Status fwd=bypass)."""
        return self._guard.reads.state != "open"

    def stats(self) -> dict:
        """Cheap counters for the dashboard (no Redis round trip)."""
        return {"l1": {**self._l1.stats(), "trusted": self._listening},
                "lookups": {name: self.counters[name] for name in
                            ("l1_hits", "redis_hits", "misses", "unavailable", "incomplete")},
                "writes": {name: self.counters[f"writes_{name}"] for name in ("committed", "aborted", "abandoned")},
                "redis": self._guard.stats(),
                "listener": {"connected": self._listener.connected,
                             "subscriptions": self._listener.subscriptions,
                             "invalidations": self.counters["invalidations_received"]},
                "collapsing": self._collapser.stats()}

    def server_info(self) -> dict | None:
        """Selected INFO fields (used_memory, maxmemory, maxmemory_policy, evicted_keys) and the key
        count: one round trip; None when Redis is unavailable."""
        try:
            return self._redis.info()
        except Unavailable:
            return None

    def close(self) -> None:
        self._listener.stop()
        self._redis.client.close()
