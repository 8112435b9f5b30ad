"""The L1: byte-bounded LRU, epochs, and how the store trusts it (listener state, l1_ttl)."""

from __future__ import annotations

import threading

import pytest

from cache.l1 import L1
from cache.layout import Keys, Meta, variant_id
from cache.vary import secondary_key
from support.wait import wait_until

from .helpers import body_of, put, small

KEY = "http://example.test/hot"


def entry_meta(vary: tuple[str, ...] = (), request: list[tuple[str, str]] | None = None,
               stored_at: float = 1.0) -> Meta:
    return Meta(status=200, headers=[], request_time=0, response_time=0, ttl=60, stored_at=stored_at,
                vary=vary, secondary_key=secondary_key(request or [], vary))


def put_entry(l1: L1, tag: str, body: bytes, **kwargs) -> bool:
    meta = entry_meta(**kwargs)
    return l1.put(tag, variant_id(meta.secondary_key), meta, body, l1.epoch)


def test_the_lru_is_bounded_in_bytes_and_evicts_the_least_recently_used(clock):
    l1 = L1(max_bytes=3 * 2400, max_object_bytes=3000, clock=clock)   # 1000 bytes + overhead each
    for tag in "abc":
        assert put_entry(l1, tag, b"x" * 1000)
    assert l1.get("a", []) is not None                  # "a" is now the most recent
    assert put_entry(l1, "d", b"x" * 1000)
    assert l1.get("b", []) is None and l1.get("a", []) is not None
    assert l1.bytes <= l1.max_bytes and l1.entries == 3 and l1.evictions == 1


def test_objects_above_l1_max_object_bytes_are_not_kept(clock):
    l1 = L1(max_bytes=1 << 20, max_object_bytes=1000, clock=clock)
    assert not put_entry(l1, "big", b"x" * 1000)
    assert l1.get("big", []) is None and l1.bytes == 0


def test_a_zero_sized_l1_keeps_nothing(clock):
    l1 = L1(max_bytes=0, max_object_bytes=1 << 20, clock=clock)
    assert not put_entry(l1, "a", b"")


def test_a_put_after_an_invalidation_is_refused(clock):
    l1 = L1(max_bytes=1 << 20, max_object_bytes=1 << 20, clock=clock)
    epoch = l1.epoch                                    # a reader starts reading Redis
    l1.drop("other")                                    # an invalidation arrives meanwhile
    meta = entry_meta()
    assert not l1.put("a", variant_id(""), meta, b"old", epoch)
    assert l1.put("a", variant_id(""), meta, b"new", l1.epoch)


def test_replacing_a_variant_keeps_the_byte_count_right(clock):
    l1 = L1(max_bytes=1 << 20, max_object_bytes=1 << 20, clock=clock)
    put_entry(l1, "a", b"x" * 100)
    size = l1.bytes
    put_entry(l1, "a", b"y" * 100)
    assert l1.bytes == size and l1.entries == 1
    assert l1.drop("a") and l1.bytes == 0 and l1.entries == 0 and not l1.drop("a")


def test_variants_are_selected_like_in_redis(clock):
    l1 = L1(max_bytes=1 << 20, max_object_bytes=1 << 20, clock=clock)
    gzip, br = [("accept-encoding", "gzip")], [("accept-encoding", "br")]
    put_entry(l1, "a", b"g", vary=("accept-encoding",), request=gzip)
    put_entry(l1, "a", b"b", vary=("accept-encoding",), request=br)
    assert l1.get("a", gzip).body == b"g" and l1.get("a", br).body == b"b"
    assert l1.get("a", []) is None


# -- the store's use of the L1


def test_a_hot_hit_needs_no_round_trip(make_store):
    store = make_store(listen=True)
    put(store, KEY, b"hot")
    assert store.lookup(KEY, []).source == "redis"
    calls = store.stats()["redis"]["calls"]
    for _ in range(5):
        assert store.lookup(KEY, []).source == "l1"
    assert store.stats()["redis"]["calls"] == calls and store.stats()["lookups"]["l1_hits"] == 5


def test_without_a_listener_the_l1_is_not_trusted(make_store):
    store = make_store(listen=False)
    put(store, KEY, b"hot")
    assert store.lookup(KEY, []).source == "redis"
    assert store.lookup(KEY, []).source == "redis"


def test_after_l1_ttl_the_metadata_is_checked_and_the_body_reused(make_store, clock, fake):
    store = make_store(small(l1_ttl=5.0), listen=True)
    put(store, KEY, b"b" * 3000)
    store.lookup(KEY, [])
    clock.advance(4.9)
    assert store.lookup(KEY, []).source == "l1"
    clock.advance(0.2)
    fake.delete(*[name for name in fake.keys("pp:*:body:*")])   # the body is not read again
    hit = store.lookup(KEY, [])
    assert hit.source == "redis" and body_of(hit) == b"b" * 3000
    assert store.lookup(KEY, []).source == "l1"


def test_staleness_bound_when_the_invalidation_message_is_lost(make_store, clock, fake):
    """A purge whose message never arrives: the L1 copy lives at most l1_ttl seconds."""
    store = make_store(small(l1_ttl=5.0), listen=True)
    put(store, KEY, b"v1")
    store.lookup(KEY, [])
    fake.delete(*fake.keys("pp:*"))                   # deleted behind the store's back, no message
    assert store.lookup(KEY, []).body == b"v1"        # stale, within the bound
    clock.advance(5.0)
    assert store.lookup(KEY, []) is None


def test_an_invalidation_from_another_store_drops_the_copy(make_store):
    reader, writer = make_store(listen=True), make_store(listen=True)

    def received(count: int) -> None:
        wait_until(lambda: reader.stats()["listener"]["invalidations"] == count, 5, f"message {count}")

    put(writer, KEY, b"v1")
    received(1)
    assert reader.lookup(KEY, []).source == "redis" and reader.lookup(KEY, []).source == "l1"
    put(writer, KEY, b"v2")
    received(2)
    assert reader.stats()["l1"]["entries"] == 0 and reader.lookup(KEY, []).body == b"v2"
    writer.purge(KEY)
    received(3)
    assert reader.stats()["l1"]["entries"] == 0 and reader.lookup(KEY, []) is None


def test_own_purge_drops_the_local_copy_at_once(make_store):
    store = make_store(listen=True)
    put(store, KEY, b"v1")
    store.lookup(KEY, [])
    assert store.purge(KEY)
    assert store.lookup(KEY, []) is None


def test_losing_the_listener_clears_the_l1(make_store):
    store = make_store(listen=True)
    put(store, KEY, b"v1")
    store.lookup(KEY, [])
    assert store.stats()["l1"]["entries"] == 1
    store._on_listener_state(False)
    assert not store.l1_trusted and store.stats()["l1"]["entries"] == 0


def test_l1_keys_are_the_hash_tags(make_store):
    store = make_store(listen=True)
    put(store, KEY, b"v1")
    store.lookup(KEY, [])
    assert store._l1.get(Keys("pp", KEY).tag, []).body == b"v1"


def test_a_hit_cannot_edit_the_l1_copy(make_store):
    """An L1 hit shares the L1's meta (no copy per hit): its headers are a tuple, so an edit fails
    instead of changing the copy; a Redis hit's headers are its own list."""
    store = make_store(listen=True)
    put(store, KEY, b"v1")
    store.lookup(KEY, []).meta.headers.append(("age", "5"))      # from Redis: the caller's own list
    with pytest.raises(AttributeError):
        store.lookup(KEY, []).meta.headers.append(("age", "5"))
    assert store.lookup(KEY, []).meta.headers == (("content-type", "text/plain"),)


def test_what_a_hit_derives_is_kept_with_the_l1_copy(make_store):
    store = make_store(listen=True)
    put(store, KEY, b"v1")
    calls: list[Meta] = []

    def derive(meta: Meta, settings: object) -> tuple[int, object]:
        calls.append(meta)
        return len(calls), settings

    settings = object()
    hit = store.lookup(KEY, [])
    assert hit.derived(settings, derive) == (1, settings) == hit.derived(settings, derive)  # from Redis
    assert store.lookup(KEY, []).derived(settings, derive) == (2, settings)   # from the L1: kept with it
    assert store.lookup(KEY, []).derived(settings, derive) == (2, settings)
    other = object()
    assert store.lookup(KEY, []).derived(other, derive) == (3, other)         # other settings: derived anew
    hit = store.lookup(KEY, [])
    hit.meta = Meta(status=200, headers=[], request_time=0, response_time=0, ttl=1)
    assert hit.derived(other, derive) == (4, other) and calls[-1] is hit.meta  # a replaced meta: its own
    put(store, KEY, b"v2")                                                      # replaced: the copy goes
    assert store.lookup(KEY, []).source == "redis"
    assert store.lookup(KEY, []).derived(other, derive) == (5, other)
    assert store.lookup(KEY, []).derived(other, derive) == (5, other)


def test_concurrent_use_keeps_the_byte_count_exact(clock):
    l1 = L1(max_bytes=20 * 1400, max_object_bytes=2000, clock=clock)

    def churn(worker: int) -> None:
        for step in range(300):
            tag = f"t{(worker * 7 + step) % 40}"
            put_entry(l1, tag, b"x" * (step % 1000))
            l1.get(tag, [])
            if step % 5 == 0:
                l1.drop(f"t{step % 40}")

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = [entry for variants in l1._objects.values() for entry in variants.values()]
    assert l1.bytes == sum(entry.size for entry in held) <= l1.max_bytes
    assert l1.entries == len(held)
