"""The Redis tier: reads, writes, purges and locks on the layout of `cache.layout`, all via the Guard.

design: every method may raise `Unavailable` (never a redis exception) and does no L1 work; the
facade in `cache.store` combines this with the L1. Rules from ARCHITECTURE "Cache" implemented here:
- metadata last: body chunks are written first (by the writer); the record, the Vary index entry
  and the invalidation message go in one MULTI, so a reader sees a whole object or none;
- a TTL on every key: the record and the index get the caller's ttl (freshness + stale windows),
  chunks that plus `ttl_margin`;
- one round trip on the common read path: the Vary index and the no-Vary record are read together;
  a variant that Varies costs one more (MGET), a chunked body one more (a pipeline);
- an incomplete or undecodable object is deleted by the reader that found it, only if it is still
  the same object (compare-and-delete, so a concurrent replacement is never destroyed).

DEVIATION: compare-and-delete uses WATCH/MULTI instead of a Lua script: the embedded fallback
(fakeredis without the optional `lupa`) has no scripting, and one code path serves both. Every key
involved shares one hash tag, so this also works on Redis Cluster. There a transaction cannot carry
PUBLISH (it names no key, so no slot): the message is sent right after EXEC instead (`_execute`),
which gives other processes the same news a round trip later.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import NamedTuple

import msgspec
import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError, WatchError

from cache.breaker import Guard, Unavailable
from cache.layout import (NO_VARY_ID, Keys, Meta, Record, decode_names, decode_record, encode_names,
                          encode_record, matching_variants, variant_id)

__all__ = ["Found", "RedisStore", "INFO_FIELDS", "VARY_MISS"]

INFO_FIELDS = ("redis_version", "used_memory", "maxmemory", "maxmemory_policy", "evicted_keys")


class _VaryMiss:
    """read_meta's answer when variants of the URL are stored but none is this request's."""

    def __bool__(self) -> bool:
        return False


VARY_MISS = _VaryMiss()


class Found(NamedTuple):
    variant: str
    raw: bytes          # the record as read: the compare-and-delete operand
    record: Record


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    def __init__(self, client: redis.Redis, guard: Guard, *, prefix: str, ttl_margin: float) -> None:
        self.client, self.guard = client, guard
        self.cluster = isinstance(client, RedisCluster) or getattr(client, "is_cluster", False)
        self.prefix, self.ttl_margin = prefix, ttl_margin
        self.channel = f"{prefix}:events"
        self.origin = secrets.token_hex(4)   # in our own messages, so our listener can skip them

    def _invalidation(self, keys: Keys) -> bytes:
        return f"i:{keys.tag}:{self.origin}".encode()

    def _execute(self, pipe: Pipeline, message: bytes | None = None) -> list:
        """Run the queued transaction and publish `message` on the channel with it: inside it, or
        right after EXEC on a cluster. The results are those of the queued commands, in order."""
        if message is None or self.cluster:
            results = pipe.execute()
            if message is not None:
                self.client.publish(self.channel, message)
            return results
        pipe.publish(self.channel, message)
        return pipe.execute()[:-1]

    def keys(self, primary_key: str) -> Keys:
        return Keys(self.prefix, primary_key)

    # -- reading

    def read_meta(self, keys: Keys, request_headers: list[tuple[str, str]]) -> Found | None:
        """The stored variant this request selects (RFC 9111 §4.1), or None."""
        def first() -> list:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(keys.index)
            pipe.get(keys.meta(NO_VARY_ID))
            return pipe.execute()

        index, plain = self.guard.read(first)
        listed = {vid.decode("latin-1"): decode_names(raw) for vid, raw in index.items()}
        wanted = matching_variants((names for names in listed.values() if names is not None), request_headers)
        present = [vid for vid in wanted if vid in listed]
        raws = {NO_VARY_ID: plain} if NO_VARY_ID in present else {}
        if not present and listed:
            return VARY_MISS                    # variants exist, none with this request's values
        rest = [vid for vid in present if vid not in raws]
        if rest:
            values = self.guard.read(lambda: self.client.mget([keys.meta(vid) for vid in rest]))
            raws.update(zip(rest, values))
        return self._select(keys, raws, wanted)

    def _select(self, keys: Keys, raws: dict[str, bytes | None], wanted: dict[str, str]) -> Found | None:
        """The selected variant; None if nothing is stored, VARY_MISS if only other variants are."""
        found: list[Found] = []
        others = False
        for vid, raw in raws.items():
            if raw is None:
                continue                        # expired; its index entry goes with the index's TTL
            record = decode_record(raw)
            if record is None:
                self._forget_corrupt(keys, vid, raw)
            elif record.meta.secondary_key == wanted[vid]:
                found.append(Found(vid, raw, record))
            else:
                others = True
        # RFC 9111 §4.1: of several selected responses, use the most recent one.
        return max(found, key=lambda item: item.record.meta.stored_at, default=VARY_MISS if others else None)

    def _forget_corrupt(self, keys: Keys, vid: str, raw: bytes) -> None:
        try:
            self.delete_broken(keys, vid, raw, None)
        except Unavailable:
            pass                                # a miss all the same; the record expires

    def read_chunks(self, keys: Keys, meta: Meta) -> list[bytes | None]:
        return self.guard.read(lambda: self.client.mget(keys.chunks(meta)))

    def chunk_sizes_and_first(self, keys: Keys, meta: Meta) -> tuple[list[int], bytes | None]:
        """STRLEN of every chunk and chunk 0, in one round trip (the check before streaming)."""
        def op() -> list:
            pipe = self.client.pipeline(transaction=False)
            for key in keys.chunks(meta):
                pipe.strlen(key)
            pipe.get(keys.chunk(meta.body_id, 0))
            return pipe.execute()

        *sizes, first = self.guard.read(op)
        return sizes, first

    def read_chunk(self, keys: Keys, meta: Meta, number: int) -> bytes | None:
        return self.guard.read(lambda: self.client.get(keys.chunk(meta.body_id, number)))

    def delete_broken(self, keys: Keys, vid: str, raw: bytes, meta: Meta | None) -> bool:
        """Delete an incomplete or corrupt object, unless it has been replaced since it was read."""
        def also(pipe: Pipeline) -> None:
            if meta is not None and meta.chunks:
                pipe.delete(*keys.chunks(meta))
            pipe.hdel(keys.index, vid)

        return self._delete_if(keys.meta(vid), raw, also)

    def _delete_if(self, key: str, expected: bytes, also: Callable[[Pipeline], None] = lambda pipe: None,
                   message: bytes | None = None) -> bool:
        """Compare-and-delete `key` (plus what `also` queues) in one transaction, then `message`."""
        def op() -> bool:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    if pipe.get(key) != expected:
                        return False
                    pipe.multi()
                    pipe.delete(key)
                    also(pipe)
                    self._execute(pipe, message)
                    return True
                except WatchError:
                    return False

        return self.guard.write(op)

    # -- writing

    def put_chunk(self, keys: Keys, body_id: str, number: int, data: bytes, ttl: float) -> None:
        self.guard.write(lambda: self.client.set(keys.chunk(body_id, number), data,
                                                 px=_ms(ttl + self.ttl_margin)))

    def delete(self, *names: str) -> None:
        if names:
            self.guard.write(lambda: self.client.delete(*names))

    def commit(self, keys: Keys, meta: Meta, inline: bytes | None, last: bytes | None) -> bool:
        """Publish a complete object: the last chunk, then record + index + message in one MULTI."""
        vid, raw = variant_id(meta.secondary_key), encode_record(meta, inline)
        chunk_keys = keys.chunks(meta)
        earlier = chunk_keys[:-1] if last is not None else chunk_keys

        def op() -> list:
            pipe = self.client.pipeline(transaction=True)
            if last is not None:
                pipe.set(chunk_keys[-1], last, px=_ms(meta.ttl + self.ttl_margin))
            for key in earlier:            # the final TTL; 0 means the chunk was evicted meanwhile
                pipe.pexpire(key, _ms(meta.ttl + self.ttl_margin))
            pipe.set(keys.meta(vid), raw, px=_ms(meta.ttl), get=True)
            self._index(pipe, keys, vid, meta)
            return self._execute(pipe, self._invalidation(keys))

        results = self.guard.write(op)
        offset = 1 if last is not None else 0
        if not all(results[offset:offset + len(earlier)]):
            self.delete_broken(keys, vid, raw, meta)
            return False
        self._retire(keys, results[offset + len(earlier)], meta.body_id)
        return True

    def _index(self, pipe: Pipeline, keys: Keys, vid: str, meta: Meta) -> None:
        pipe.hset(keys.index, vid, encode_names(meta.vary))
        pipe.pexpire(keys.index, _ms(meta.ttl), nx=True)    # a new index gets this TTL,
        pipe.pexpire(keys.index, _ms(meta.ttl), gt=True)    # an old one keeps the longest

    def _retire(self, keys: Keys, old_raw: bytes | None, new_body_id: str) -> None:
        """Old chunks of a replaced variant: expire them after `ttl_margin` (readers may be streaming)."""
        old = decode_record(old_raw) if old_raw else None
        if old is None or not old.meta.chunks or old.meta.body_id == new_body_id:
            return

        def op() -> None:
            pipe = self.client.pipeline(transaction=False)
            for key in keys.chunks(old.meta):
                pipe.pexpire(key, int(self.ttl_margin * 1000), lt=True)
            pipe.execute()

        self.guard.write(op)

    def update_meta(self, keys: Keys, meta: Meta) -> bool:
        """Replace status, headers, times and ttl of a stored variant whose body id is meta.body_id."""
        vid = variant_id(meta.secondary_key)

        def op() -> bool:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(keys.meta(vid))
                    raw = pipe.get(keys.meta(vid))
                    old = decode_record(raw) if raw else None
                    if old is None or old.meta.body_id != meta.body_id:
                        return False           # gone or replaced: nothing to freshen
                    new = _keep_body(meta, old.meta)
                    pipe.multi()
                    pipe.set(keys.meta(vid), encode_record(new, old.inline), px=_ms(new.ttl))
                    for key in keys.chunks(new):
                        pipe.pexpire(key, _ms(new.ttl + self.ttl_margin))
                    self._index(pipe, keys, vid, new)
                    self._execute(pipe, self._invalidation(keys))
                    return True
                except WatchError:
                    return False

        return self.guard.write(op)

    def purge(self, keys: Keys) -> bool:
        """Delete every variant of a primary key and tell every process; True if something was stored."""
        vids = {vid.decode("latin-1") for vid in self.guard.write(lambda: self.client.hkeys(keys.index))}
        metas = [keys.meta(vid) for vid in vids | {NO_VARY_ID}]
        doomed = [keys.index, *metas]
        for raw in self.guard.write(lambda: self.client.mget(metas)):
            record = decode_record(raw) if raw else None
            if record is not None:
                doomed.extend(keys.chunks(record.meta))

        def op() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*doomed)
            return self._execute(pipe, self._invalidation(keys))[0]

        return self.guard.write(op) > 0

    # -- request collapsing

    def try_lock(self, keys: Keys, token: str, ttl: float) -> bool:
        return bool(self.guard.write(lambda: self.client.set(keys.lock, token, nx=True, px=_ms(ttl))))

    def lock_held(self, keys: Keys) -> bool:
        return bool(self.guard.read(lambda: self.client.exists(keys.lock)))

    def unlock(self, keys: Keys, token: str) -> bool:
        """Release the lock if it is still ours, and wake the waiters of every process."""
        return self._delete_if(keys.lock, token.encode(), message=b"d:" + keys.tag.encode())

    # -- operations

    def info(self) -> dict:
        """Selected INFO fields and the key count (fakeredis has no INFO: only the key count then)."""
        def op() -> tuple[dict, int]:
            try:
                info = self.client.info()
            except ResponseError:
                info = {}
            return info, self.client.dbsize()

        info, keys = self.guard.read(op)
        return {**{name: info[name] for name in INFO_FIELDS if name in info}, "keys": keys}


def _keep_body(meta: Meta, stored: Meta) -> Meta:
    """The caller's new head with the stored object's body and Vary fields (they cannot change)."""
    return msgspec.structs.replace(
        meta, vary=stored.vary, secondary_key=stored.secondary_key, body_length=stored.body_length,
        body_id=stored.body_id, chunks=stored.chunks)
