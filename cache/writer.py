"""The streaming writer: stores a response body while it is being sent to the client.

design: memory is bounded by one chunk: each full chunk goes to Redis as it fills (with a TTL, so a
killed worker leaves only garbage that expires). Nothing is visible until `commit`, which writes the
metadata last (ARCHITECTURE "Cache"). Any failure, a body over `max_object_bytes`, or `abort()`
deletes what was written; the writer then reports `state == "abandoned"` and the caller keeps
streaming to the client, unstored. A body that does not arrive whole is never committed: the
caller commits only after the last byte (ARCHITECTURE: "a body that does not arrive whole is never
stored").
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

import msgspec

from cache.breaker import Unavailable
from cache.layout import INLINE_BODY_BYTES, Keys, Meta
from cache.redis_store import RedisStore
from cache.vary import secondary_key, vary_names

__all__ = ["Writer"]

log = logging.getLogger("cache.store")


class Writer:
    """One body being stored. Not thread-safe: it belongs to the thread serving the response.

    state: "open" -> "committed" | "aborted" (by the caller) | "abandoned" (by the store; see reason).
    """

    def __init__(self, store: RedisStore, keys: Keys, request_headers: list[tuple[str, str]], ttl: float, *,
                 chunk_bytes: int, max_object_bytes: int, on_end: Callable[[Writer], None]) -> None:
        self._store, self._keys, self._request_headers, self._ttl = store, keys, request_headers, ttl
        self._chunk_bytes, self._max_object_bytes, self._on_end = chunk_bytes, max_object_bytes, on_end
        self._buffer = bytearray()
        self._length = 0
        self._chunks = 0                    # chunks already in Redis
        self.tag, self.body_id = keys.tag, secrets.token_hex(8)
        self.state, self.reason = "open", ""

    def write(self, data: bytes) -> bool:
        """Add body bytes; False once the writer is no longer storing (keep streaming anyway)."""
        if self.state != "open":
            return False
        self._length += len(data)
        if self._length > self._max_object_bytes:
            return self._abandon(f"body larger than max_object_bytes ({self._max_object_bytes})")
        self._buffer += data
        try:
            while len(self._buffer) >= self._chunk_bytes:
                self._flush(bytes(self._buffer[:self._chunk_bytes]))
                del self._buffer[:self._chunk_bytes]
        except Unavailable as error:
            return self._abandon(f"Redis unavailable ({error})")
        return True

    def _flush(self, chunk: bytes) -> None:
        self._store.put_chunk(self._keys, self.body_id, self._chunks, chunk, self._ttl)
        self._chunks += 1

    def commit(self, meta: Meta, now: float | None = None) -> bool:
        """Publish the object (the whole body has been written). True if it is now stored.

        `meta` carries status, headers, request_time, response_time and ttl; the Vary fields, body
        length, body id, chunk count and stored_at (`now`, default the wall clock) are filled in here.
        """
        if self.state != "open":
            return False
        names = vary_names(meta.headers)
        if names is None:
            return self._abandon("Vary: * never matches (RFC 9111 §4.1)")
        if meta.ttl <= 0:
            return self._abandon("ttl <= 0")
        full, inline, last = self._complete(meta, names, time.time() if now is None else now)
        self._chunks = full.chunks          # the commit writes the last chunk: abandoning deletes it too
        try:
            stored = self._store.commit(self._keys, full, inline, last)
        except Unavailable as error:
            return self._abandon(f"Redis unavailable ({error})")
        if not stored:
            return self._abandon("a chunk expired or was evicted before the commit")
        self._end("committed", "")
        return True

    def _complete(self, meta: Meta, names: tuple[str, ...], now: float) -> tuple[Meta, bytes | None, bytes | None]:
        """The full record, the inline body (small bodies) or the last chunk still in the buffer."""
        rest = bytes(self._buffer)
        inline = rest if self._chunks == 0 and len(rest) <= INLINE_BODY_BYTES else None
        last = rest if inline is None and rest else None
        full = msgspec.structs.replace(
            meta, stored_at=now, vary=names, secondary_key=secondary_key(self._request_headers, names),
            body_length=self._length, body_id=self.body_id, chunks=self._chunks + (last is not None))
        return full, inline, last

    def abort(self) -> None:
        """Give up: delete what was written. Idempotent; safe in `finally` after commit."""
        if self.state == "open":
            self._discard()
            self._end("aborted", "aborted by the caller")

    def _abandon(self, reason: str) -> bool:
        log.debug("cache: not storing %s: %s", self._keys.tag, reason)
        self._discard()
        self._end("abandoned", reason)
        return False

    def _discard(self) -> None:
        self._buffer = bytearray()
        try:
            self._store.delete(*(self._keys.chunk(self.body_id, n) for n in range(self._chunks)))
        except Unavailable:
            pass                            # invisible without metadata; the chunks expire

    def _end(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        self._on_end(self)

    @property
    def length(self) -> int:
        return self._length

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()
