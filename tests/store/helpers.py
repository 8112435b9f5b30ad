"""Helpers of the cache store tests: a manual clock, small settings, storing an object in one call."""

from __future__ import annotations

from cache.settings import CacheSettings
from cache.store import Meta, Store

TEXT = [("content-type", "text/plain")]


class Clock:
    """A monotonic clock the test moves by hand (breaker cool-downs, L1 ages)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def small(**changes: object) -> CacheSettings:
    """Settings with small sizes, so a few KiB exercise chunking, streaming and the L1 bounds."""
    values: dict = dict(chunk_bytes=1024, max_object_bytes=64 * 1024, l1_max_bytes=1 << 20,
                        l1_max_object_bytes=8192, ttl_margin=30.0, breaker_threshold=2, breaker_cooldown=5.0,
                        lock_timeout=2.0, lock_ttl=10.0)
    values.update(changes)
    return CacheSettings(**values)


def meta(ttl: float = 60.0, headers: list[tuple[str, str]] | None = None, status: int = 200) -> Meta:
    return Meta(status=status, headers=TEXT if headers is None else headers, request_time=100.0,
                response_time=101.0, ttl=ttl)


def put(store: Store, key: str, body: bytes, *, headers: list[tuple[str, str]] | None = None,
        request_headers: list[tuple[str, str]] | None = None, ttl: float = 60.0, piece: int = 700) -> bool:
    """Store `body` for `key` through a writer, written in pieces of `piece` bytes."""
    writer = store.open_writer(key, request_headers or [], ttl)
    try:
        for start in range(0, len(body), piece):
            writer.write(body[start:start + piece])
        return writer.commit(meta(ttl, headers), now=200.0)
    finally:
        writer.abort()


def body_of(hit) -> bytes:
    return b"".join(hit.chunks())
