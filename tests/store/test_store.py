"""The store on fakeredis: layout, TTLs, metadata last, incomplete objects, writers, purge, update_meta."""

from __future__ import annotations

import msgspec
import pytest

from cache.layout import NO_VARY_ID, Keys, decode_record, variant_id
from cache.store import VARY_MISS, IncompleteBody, Store
from cache.vary import secondary_key

from .helpers import body_of, meta, put, small

KEY = "http://example.test/a"
GZIP = [("accept-encoding", "gzip")]
BR = [("accept-encoding", "br")]
VARY_AE = [("content-type", "text/plain"), ("vary", "Accept-Encoding")]


def keys_of(fake, key: str = KEY) -> set[str]:
    tag = Keys("pp", key).tag
    return {name.decode() for name in fake.keys(f"pp:{{{tag}}}:*")}


def test_small_body_is_inline_in_the_record(make_store, fake):
    store = make_store()
    assert put(store, KEY, b"hello")
    keys = Keys("pp", KEY)
    assert keys_of(fake) == {keys.index, keys.meta(NO_VARY_ID)}
    record = decode_record(fake.get(keys.meta(NO_VARY_ID)))
    assert record.inline == b"hello" and record.meta.chunks == 0 and record.meta.body_length == 5
    hit = store.lookup(KEY, [])
    assert hit.body == b"hello" and hit.meta.status == 200 and hit.meta.headers == [("content-type", "text/plain")]
    assert (hit.meta.request_time, hit.meta.response_time, hit.meta.stored_at) == (100.0, 101.0, 200.0)


def test_large_body_is_chunked_under_one_hash_tag(make_store, fake):
    body = bytes(range(256)) * 20                        # 5120 bytes: 5 chunks of 1024
    assert put(make_store(), KEY, body)
    keys = Keys("pp", KEY)
    record = decode_record(fake.get(keys.meta(NO_VARY_ID)))
    assert record.inline is None and record.meta.chunks == 5 and record.meta.body_length == 5120
    assert keys_of(fake) == {keys.index, keys.meta(NO_VARY_ID), *keys.chunks(record.meta)}
    assert all(f"{{{keys.tag}}}" in name for name in keys_of(fake))
    assert b"".join(fake.get(name) for name in keys.chunks(record.meta)) == body


def test_every_key_has_a_ttl_and_chunks_get_the_margin(make_store, fake):
    assert put(make_store(small(ttl_margin=30.0)), KEY, b"x" * 3000, ttl=100)
    keys = Keys("pp", KEY)
    record = decode_record(fake.get(keys.meta(NO_VARY_ID)))
    assert 99_000 < fake.pttl(keys.meta(NO_VARY_ID)) <= 100_000
    assert 99_000 < fake.pttl(keys.index) <= 100_000
    for name in keys.chunks(record.meta):
        assert 129_000 < fake.pttl(name) <= 130_000


def test_the_index_keeps_the_longest_ttl_of_its_variants(make_store, fake):
    store = make_store()
    put(store, KEY, b"a", headers=VARY_AE, request_headers=GZIP, ttl=500)
    put(store, KEY, b"b", headers=VARY_AE, request_headers=BR, ttl=50)
    assert fake.pttl(Keys("pp", KEY).index) > 400_000


def test_metadata_is_written_last(make_store, fake):
    store = make_store()
    writer = store.open_writer(KEY, [], 60)
    writer.write(b"x" * 2500)                            # two full chunks are flushed at once
    keys = Keys("pp", KEY)
    assert keys_of(fake) == {keys.chunk(writer.body_id, 0), keys.chunk(writer.body_id, 1)}
    assert store.lookup(KEY, []) is None
    assert writer.commit(meta())
    assert keys.index in keys_of(fake) and store.lookup(KEY, []).body == b"x" * 2500


def test_abort_leaves_nothing(make_store, fake):
    store = make_store()
    with store.open_writer(KEY, [], 60) as writer:
        writer.write(b"x" * 5000)
    assert writer.state == "aborted" and keys_of(fake) == set()
    assert store.lookup(KEY, []) is None
    assert store.stats()["writes"]["aborted"] == 1


def test_abort_after_commit_does_nothing(make_store):
    store = make_store()
    writer = store.open_writer(KEY, [], 60)
    writer.write(b"abc")
    assert writer.commit(meta())
    writer.abort()
    assert writer.state == "committed" and body_of(store.lookup(KEY, [])) == b"abc"


def test_a_body_over_max_object_bytes_is_abandoned_mid_stream(make_store, fake):
    store = make_store(small(max_object_bytes=4000))
    writer = store.open_writer(KEY, [], 60)
    assert writer.write(b"x" * 3000)
    assert not writer.write(b"x" * 1001)
    assert writer.state == "abandoned" and "max_object_bytes" in writer.reason
    assert not writer.write(b"more") and not writer.commit(meta())
    assert keys_of(fake) == set()


def test_vary_star_is_never_stored(make_store, fake):
    writer = make_store().open_writer(KEY, [], 60)
    writer.write(b"x")
    assert not writer.commit(meta(headers=[("vary", "*")]))
    assert writer.state == "abandoned" and keys_of(fake) == set()


def test_variants_are_selected_by_the_vary_index(make_store):
    store = make_store()
    assert put(store, KEY, b"gzip body", headers=VARY_AE, request_headers=GZIP)
    assert put(store, KEY, b"br body", headers=VARY_AE, request_headers=BR)
    assert store.lookup(KEY, GZIP).body == b"gzip body"
    assert store.lookup(KEY, BR).body == b"br body"
    assert store.lookup(KEY, [("accept-encoding", "zstd")]) is VARY_MISS   # only other variants
    assert store.lookup(KEY, []) is VARY_MISS   # absent is a value of its own (RFC 9111 §4.1)
    hit = store.lookup(KEY, [("Accept-Encoding", "gzip")])
    assert hit.meta.vary == ("accept-encoding",)
    assert hit.meta.secondary_key == secondary_key(GZIP, ("accept-encoding",))


def test_replacement_gets_a_new_body_id_and_retires_old_chunks(make_store, fake):
    store = make_store(small(ttl_margin=30.0))
    keys = Keys("pp", KEY)
    put(store, KEY, b"1" * 3000)
    old = decode_record(fake.get(keys.meta(NO_VARY_ID))).meta
    put(store, KEY, b"2" * 3000)
    new = decode_record(fake.get(keys.meta(NO_VARY_ID))).meta
    assert new.body_id != old.body_id
    assert body_of(store.lookup(KEY, [])) == b"2" * 3000
    for name in keys.chunks(old):                       # readers streaming the old body get a grace
        assert 0 < fake.pttl(name) <= 30_000


@pytest.mark.parametrize("damage", ["evict a chunk", "shorten a chunk", "corrupt the record", "empty record"])
def test_an_incomplete_object_is_a_miss_and_is_deleted(make_store, fake, damage):
    store = make_store()
    keys = Keys("pp", KEY)
    put(store, KEY, b"z" * 3000)
    record = decode_record(fake.get(keys.meta(NO_VARY_ID)))
    if damage == "evict a chunk":
        fake.delete(keys.chunk(record.meta.body_id, 1))
    elif damage == "shorten a chunk":
        fake.set(keys.chunk(record.meta.body_id, 2), b"short")
    elif damage == "corrupt the record":
        fake.set(keys.meta(NO_VARY_ID), b"\x93not msgpack")
    else:
        fake.set(keys.meta(NO_VARY_ID), b"")
    assert store.lookup(KEY, []) is None
    assert keys.meta(NO_VARY_ID) not in keys_of(fake)
    chunk_damage = damage in ("evict a chunk", "shorten a chunk")
    if chunk_damage:                                     # (an unreadable record's chunks just expire)
        assert not any(":body:" in name for name in keys_of(fake))
    assert store.stats()["lookups"]["misses"] == 1
    assert store.stats()["lookups"]["incomplete"] == (1 if chunk_damage else 0)


def test_a_record_inconsistent_with_its_body_is_rejected(make_store, fake):
    store = make_store()
    keys = Keys("pp", KEY)
    put(store, KEY, b"abc")
    record = decode_record(fake.get(keys.meta(NO_VARY_ID)))
    liar = msgspec.structs.replace(record.meta, body_length=4)
    fake.set(keys.meta(NO_VARY_ID), msgspec.msgpack.encode((1, liar, b"abc")))
    assert store.lookup(KEY, []) is None and keys_of(fake) <= {keys.index}


def test_a_broken_object_replaced_meanwhile_is_not_deleted(make_store, fake):
    store = make_store()
    keys = Keys("pp", KEY)
    put(store, KEY, b"1" * 3000)
    found = store._redis.read_meta(keys, [])
    put(store, KEY, b"2" * 3000)
    assert not store._redis.delete_broken(keys, found.variant, found.raw, found.record.meta)
    assert body_of(store.lookup(KEY, [])) == b"2" * 3000


def test_a_large_body_is_streamed_chunk_by_chunk(make_store):
    store = make_store(small(l1_max_object_bytes=2048))
    body = bytes(range(256)) * 40                        # 10 KiB > the 2 KiB whole-read limit
    put(store, KEY, body)
    hit = store.lookup(KEY, [])
    assert hit.body is None and hit.meta.body_length == len(body)
    pieces = list(hit.chunks())
    assert len(pieces) == 10 and b"".join(pieces) == body


def test_a_chunk_lost_while_streaming_raises_incomplete_body(make_store, fake):
    store = make_store(small(l1_max_object_bytes=2048))
    keys = Keys("pp", KEY)
    put(store, KEY, b"q" * 10240)
    hit = store.lookup(KEY, [])
    chunks = hit.chunks()
    assert next(chunks) == b"q" * 1024
    fake.delete(keys.chunk(hit.meta.body_id, 5))
    with pytest.raises(IncompleteBody):
        list(chunks)
    assert store.lookup(KEY, []) is None                 # and the object is gone


def test_a_stream_missing_a_chunk_before_it_starts_is_a_miss(make_store, fake):
    store = make_store(small(l1_max_object_bytes=2048))
    keys = Keys("pp", KEY)
    put(store, KEY, b"q" * 10240)
    record = decode_record(fake.get(keys.meta(NO_VARY_ID)))
    fake.delete(keys.chunk(record.meta.body_id, 9))
    assert store.lookup(KEY, []) is None and keys.meta(NO_VARY_ID) not in keys_of(fake)


def test_empty_body(make_store):
    store = make_store()
    assert put(store, KEY, b"")
    hit = store.lookup(KEY, [])
    assert hit.body == b"" and list(hit.chunks()) == []


def test_update_meta_freshens_the_head_and_keeps_the_body(make_store, fake):
    store = make_store()
    keys = Keys("pp", KEY)
    put(store, KEY, b"b" * 3000, ttl=60)
    hit = store.lookup(KEY, [])
    fresher = msgspec.structs.replace(hit.meta, headers=[("content-type", "text/plain"), ("etag", '"2"')],
                                      response_time=300.0, ttl=500.0, body_length=1, chunks=99)
    assert store.update_meta(KEY, fresher, now=301.0)
    again = store.lookup(KEY, [])
    assert again.meta.headers[-1] == ("etag", '"2"') and again.meta.stored_at == 301.0
    assert (again.meta.body_length, again.meta.chunks, again.meta.body_id) == (3000, 3, hit.meta.body_id)
    assert body_of(again) == b"b" * 3000
    assert fake.pttl(keys.meta(NO_VARY_ID)) > 400_000
    assert all(fake.pttl(name) > 400_000 for name in keys.chunks(again.meta))


def test_update_meta_of_a_replaced_or_gone_object_is_refused(make_store):
    store = make_store()
    put(store, KEY, b"old")
    stale = store.lookup(KEY, []).meta
    put(store, KEY, b"new")
    assert not store.update_meta(KEY, stale)
    assert store.lookup(KEY, []).body == b"new"
    store.purge(KEY)
    assert not store.update_meta(KEY, stale)


def test_purge_removes_every_variant(make_store, fake):
    store = make_store()
    put(store, KEY, b"g" * 3000, headers=VARY_AE, request_headers=GZIP)
    put(store, KEY, b"b", headers=VARY_AE, request_headers=BR)
    put(store, "http://example.test/other", b"other")
    assert store.purge(KEY)
    assert keys_of(fake) == set()
    assert store.lookup(KEY, GZIP) is None and store.lookup(KEY, BR) is None
    assert store.lookup("http://example.test/other", []).body == b"other"
    assert not store.purge(KEY)


def test_invalidate_is_a_purge(make_store, fake):
    store = make_store()
    put(store, KEY, b"x")
    store.invalidate(KEY)
    assert keys_of(fake) == set()


def test_the_variant_id_of_a_response_without_vary_is_fixed():
    assert variant_id(secondary_key([("accept", "x")], ())) == NO_VARY_ID


def test_server_info_on_fakeredis_has_the_key_count(make_store):
    store = make_store()
    put(store, KEY, b"x")
    assert store.server_info() == {"keys": 2}


def test_stats_count_lookups_and_writes(make_store):
    store: Store = make_store()
    put(store, KEY, b"x")
    store.lookup(KEY, [])
    store.lookup("http://example.test/none", [])
    stats = store.stats()
    assert stats["lookups"]["redis_hits"] == 1 and stats["lookups"]["misses"] == 1
    assert stats["writes"]["committed"] == 1
    assert stats["redis"]["reads"] == "closed" and stats["redis"]["latency"]["samples"] >= 3


def round_trips(store: Store, action) -> int:
    before = store.stats()["redis"]["calls"]
    action()
    return store.stats()["redis"]["calls"] - before


def test_round_trips_on_the_read_path(make_store):
    store = make_store(small(l1_max_bytes=0))
    put(store, KEY, b"small")
    put(store, "http://example.test/vary", b"v", headers=VARY_AE, request_headers=GZIP)
    put(store, "http://example.test/chunked", b"c" * 3000)
    assert round_trips(store, lambda: store.lookup(KEY, [])) == 1
    assert round_trips(store, lambda: store.lookup("http://example.test/nothing", [])) == 1
    assert round_trips(store, lambda: store.lookup("http://example.test/vary", GZIP)) == 2
    assert round_trips(store, lambda: store.lookup("http://example.test/chunked", [])) == 2


def test_a_commit_is_one_round_trip_for_a_small_body(make_store):
    store = make_store()
    assert round_trips(store, lambda: put(store, KEY, b"small")) == 1
