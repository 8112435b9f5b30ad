"""The L1: a per-process, byte-bounded LRU of whole objects (metadata + body) in front of Redis.

design: keyed by the primary key's tag, each holding the variants this process has read. It stores
exactly what Redis stores; freshness and age are the policy's business (the caller passes `now`).
Thread-safe: one lock, held only for dictionary work. An entry remembers when it was loaded (on
the injected monotonic clock) so the store can stop trusting it after `l1_ttl`.

`epoch` counts invalidations: a reader notes it before going to Redis and `put` refuses the result
if any drop or clear happened meanwhile, so a purge racing with a read cannot leave an old copy here.

A hit gets the entry's own Meta, not a copy: its headers are kept as a tuple, so nobody can edit
them. Next to it the entry keeps `derived`, what the caller derives from that Meta (the cache
policy's cache.prepared.Prepared); it goes with the entry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from cache.layout import NO_VARY_ID, Meta, matching_variants

__all__ = ["L1", "L1Entry"]

# Bytes per entry beyond its body and header text, counted against max_bytes: the entry, its Meta
# and the caller's `derived` object (a Prepared), measured with tracemalloc for a response with
# seven header fields: about 650 bytes for the entry and Meta, 660 for the Prepared.
_OVERHEAD = 1312


class L1Entry:
    __slots__ = ("meta", "body", "loaded_at", "size", "derived")

    def __init__(self, meta: Meta, body: bytes, loaded_at: float) -> None:
        self.meta = msgspec.structs.replace(meta, headers=tuple(meta.headers))   # read-only from here
        self.body, self.loaded_at = body, loaded_at
        self.size = len(body) + sum(len(k) + len(v) for k, v in meta.headers) + _OVERHEAD
        self.derived: tuple[object, ...] | None = None    # see cache.store.Hit.derived


class L1:
    def __init__(self, max_bytes: int, max_object_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes, self.max_object_bytes = max_bytes, min(max_object_bytes, max_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._objects: OrderedDict[str, dict[str, L1Entry]] = OrderedDict()
        self.bytes = self.entries = self.evictions = 0
        self.epoch = 0

    def get(self, tag: str, request_headers: list[tuple[str, str]]) -> L1Entry | None:
        """The most recently stored variant that this request selects (RFC 9111 §4.1), if held."""
        with self._lock:
            variants = self._objects.get(tag)
            if variants is None:
                return None
            self._objects.move_to_end(tag)
            variants = dict(variants)
        plain = variants.get(NO_VARY_ID) if len(variants) == 1 else None
        if plain is not None and not plain.meta.vary and not plain.meta.secondary_key:
            return plain     # the only variant varies on nothing: every request selects it (as below)
        wanted = matching_variants((entry.meta.vary for entry in variants.values()), request_headers)
        found = [entry for vid, entry in variants.items() if wanted.get(vid) == entry.meta.secondary_key]
        return max(found, key=lambda entry: entry.meta.stored_at, default=None)

    def put(self, tag: str, variant: str, meta: Meta, body: bytes, epoch: int) -> bool:
        """Keep a copy read from Redis, unless it is too big or an invalidation came since `epoch`."""
        entry = L1Entry(meta, body, self._clock())
        if entry.size > self.max_object_bytes:
            return False
        with self._lock:
            if epoch != self.epoch:
                return False
            variants = self._objects.setdefault(tag, {})
            self._objects.move_to_end(tag)
            old = variants.pop(variant, None)
            if old is not None:
                self.bytes, self.entries = self.bytes - old.size, self.entries - 1
            variants[variant] = entry
            self.bytes, self.entries = self.bytes + entry.size, self.entries + 1
            self._evict()
        return True

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._objects:
            _, variants = self._objects.popitem(last=False)
            self._forget(variants)
            self.evictions += len(variants)

    def _forget(self, variants: dict[str, L1Entry]) -> None:
        self.bytes -= sum(entry.size for entry in variants.values())
        self.entries -= len(variants)

    def drop(self, tag: str) -> bool:
        """Forget every variant of `tag`; True if one was held."""
        with self._lock:
            self.epoch += 1
            variants = self._objects.pop(tag, None)
            if variants:
                self._forget(variants)
            return bool(variants)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._objects.clear()
            self.bytes = self.entries = 0

    def stats(self) -> dict:
        return {"entries": self.entries, "bytes": self.bytes, "max_bytes": self.max_bytes,
                "evictions": self.evictions}
