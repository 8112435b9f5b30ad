"""How a cached object is laid out in Redis: key names, the metadata record, variant ids.

design: all keys of one primary key share the hash tag `{sha1(primary key)}`, so one object lives in
one Redis Cluster slot and MULTI/WATCH work on it (ARCHITECTURE "Cache": keys of one object share a
hash tag). Per tag:

    <p>:{tag}:idx                 hash: variant id -> msgpack(Vary names)       the Vary index
    <p>:{tag}:meta:<variant id>   msgpack Record(meta, inline body or None)     written last
    <p>:{tag}:body:<body id>:<n>  body chunk n (n = 0 .. meta.chunks - 1)
    <p>:{tag}:lock                request-collapsing lock (a random token)

A body id is random per write, so a replacement never mixes its chunks with the old ones. Bodies up
to INLINE_BODY_BYTES travel inside the record (one key, one round trip).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

import msgspec

from cache.vary import secondary_key

__all__ = ["INLINE_BODY_BYTES", "NO_VARY_ID", "Keys", "Meta", "Record", "decode_names", "decode_record",
           "encode_names", "encode_record", "matching_variants", "tag_of", "variant_id"]

INLINE_BODY_BYTES = 16 * 1024
_VERSION = 1


class Meta(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What is stored about one variant. The caller fills the first five fields; the writer the rest."""

    status: int
    headers: list[tuple[str, str]]
    request_time: float          # wall clock when the request that got this response was sent
    response_time: float         # wall clock when its response arrived (RFC 9111 §4.2.3)
    ttl: float                   # seconds to keep it in Redis: freshness lifetime + stale windows
    stored_at: float = 0.0       # wall clock at commit / update_meta
    vary: tuple[str, ...] = ()   # the lower-cased field names it varies on
    secondary_key: str = ""      # cache.vary.secondary_key of the request that stored it
    body_length: int = 0
    body_id: str = ""
    chunks: int = 0              # 0: the body is inline in the record


class Record(msgspec.Struct, frozen=True, array_like=True):
    version: int
    meta: Meta
    inline: bytes | None


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_names_decoder = msgspec.msgpack.Decoder(tuple[str, ...])


def encode_record(meta: Meta, inline: bytes | None) -> bytes:
    return _record_encoder.encode(Record(_VERSION, meta, inline))


def decode_record(raw: bytes) -> Record | None:
    """The record, or None when it is corrupt, of another version, or inconsistent with itself."""
    try:
        record = _record_decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    meta = record.meta
    inline_ok = (record.inline is not None and meta.chunks == 0 and len(record.inline) == meta.body_length)
    chunked_ok = record.inline is None and meta.chunks > 0 and meta.body_id != ""
    if record.version != _VERSION or not (inline_ok or chunked_ok):
        return None
    return record


def encode_names(names: tuple[str, ...]) -> bytes:
    return _record_encoder.encode(names)


def decode_names(raw: bytes) -> tuple[str, ...] | None:
    try:
        return _names_decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def tag_of(primary_key: str) -> str:
    """sha1 hex of the primary key; memoised (a hot key is hashed once, not on every hit) for keys
    up to _MEMO_KEY_CHARS long, so the memo stays under ~3 MiB whatever the requests."""
    if len(primary_key) <= _MEMO_KEY_CHARS:
        return _memo_tag(primary_key)
    return _sha1_hex(primary_key)


_MEMO_KEY_CHARS = 512


@functools.lru_cache(maxsize=4096)
def _memo_tag(primary_key: str) -> str:
    return _sha1_hex(primary_key)


def _sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def variant_id(secondary: str) -> str:
    """A short stable id of a secondary key (the one for "no Vary" is a constant)."""
    return _sha1_hex(secondary)[:20]


NO_VARY_ID = variant_id("")


def matching_variants(names_sets: Iterable[tuple[str, ...]],
                      request_headers: list[tuple[str, str]]) -> dict[str, str]:
    """Variant id -> secondary key, for each set of Vary names applied to this request (RFC 9111 §4.1)."""
    wanted: dict[str, str] = {}
    for names in set(names_sets):
        secondary = secondary_key(request_headers, names)
        wanted[variant_id(secondary)] = secondary
    return wanted


class Keys:
    """Key names of one primary key (all under one Cluster hash tag)."""

    __slots__ = ("tag", "base")

    def __init__(self, prefix: str, primary_key: str) -> None:
        self.tag = tag_of(primary_key)
        self.base = f"{prefix}:{{{self.tag}}}"

    @property
    def index(self) -> str:
        return f"{self.base}:idx"

    @property
    def lock(self) -> str:
        return f"{self.base}:lock"

    def meta(self, variant: str) -> str:
        return f"{self.base}:meta:{variant}"

    def chunk(self, body_id: str, number: int) -> str:
        return f"{self.base}:body:{body_id}:{number}"

    def chunks(self, meta: Meta) -> list[str]:
        return [self.chunk(meta.body_id, n) for n in range(meta.chunks)]
