"""The store against a real redis-server: two workers, pub/sub, locks, failures (kill, OOM, pause, replica)."""

from __future__ import annotations

import threading
import time

import pytest

from cache.store import UNAVAILABLE, Store, connect
from support.redis_server import start_redis_server
from support.wait import wait_until

from .helpers import body_of, put, small

KEY = "http://example.test/r"


@pytest.fixture
def workers(redis_server):
    """Factory: workers(n, **settings) -> n stores on the real server, as n workers would connect
    after fork, each with its listener subscribed. All closed at teardown."""
    stores: list[Store] = []

    def make(count: int = 2, **changes) -> list[Store]:
        made = [connect(small(**changes), redis_server.url) for _ in range(count)]
        stores.extend(made)
        for store in made:
            wait_until(lambda: store.l1_trusted, 5, "the listener to subscribe")
        return made

    yield make
    for store in stores:
        store.close()


def received(store: Store, count: int) -> None:
    wait_until(lambda: store.stats()["listener"]["invalidations"] == count, 5, f"invalidation message {count}")


def test_pubsub_invalidation_between_two_workers(workers):
    first, second = workers(2)
    assert put(first, KEY, b"v1")
    received(second, 1)
    assert second.lookup(KEY, []).source == "redis"
    assert second.lookup(KEY, []).source == "l1"
    assert put(first, KEY, b"v2")                       # a replacement
    received(second, 2)
    assert second.stats()["l1"]["entries"] == 0
    assert second.lookup(KEY, []).body == b"v2" and second.lookup(KEY, []).source == "l1"
    assert first.purge(KEY)
    received(second, 3)
    assert second.stats()["l1"]["entries"] == 0 and second.lookup(KEY, []) is None
    assert first.stats()["listener"]["invalidations"] == 0      # its own messages are skipped


def test_update_meta_reaches_the_other_workers_l1(workers):
    first, second = workers(2)
    put(first, KEY, b"body")
    received(second, 1)
    stale = second.lookup(KEY, [])
    assert second.lookup(KEY, []).source == "l1"
    assert first.update_meta(KEY, first.lookup(KEY, []).meta, now=999.0)
    received(second, 2)
    assert second.stats()["l1"]["entries"] == 0
    hit = second.lookup(KEY, [])
    assert hit.meta.stored_at == 999.0 != stale.meta.stored_at and hit.body == b"body"


def test_a_lost_subscription_clears_the_l1_and_it_comes_back(workers, redis_server):
    (store,) = workers(1)
    put(store, KEY, b"v1")
    store.lookup(KEY, [])
    assert store.stats()["l1"]["entries"] == 1
    redis_server.client().client_kill_filter(_type="pubsub")
    wait_until(lambda: store.stats()["listener"]["subscriptions"] == 2, 5, "the listener to resubscribe")
    assert store.stats()["l1"]["entries"] == 0 and store.l1_trusted
    assert store.lookup(KEY, []).source == "redis"


def test_the_collapsing_lock_across_two_workers(workers):
    first, second = workers(2, lock_timeout=5.0)
    leader = first.collapse(KEY)
    assert leader.outcome == "lock"
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(second.collapse(KEY)))
    thread.start()
    wait_until(lambda: second.stats()["collapsing"]["waiting_for_other_process"] == 1, 5,
               "the second worker to wait")
    put(first, KEY, b"fetched by the leader")
    started = time.monotonic()
    leader.release()
    thread.join(5)
    assert outcome[0].outcome == "done" and not outcome[0].leader
    assert time.monotonic() - started < 1.0
    outcome[0].release()
    assert body_of(second.lookup(KEY, [])) == b"fetched by the leader"


def test_a_killed_lock_holder_does_not_wedge_the_key(workers):
    first, second = workers(2, lock_ttl=0.5, lock_timeout=5.0)
    first.collapse(KEY)                                 # never released: its worker "died"
    started = time.monotonic()
    with second.collapse(KEY) as ticket:
        assert ticket.outcome == "done" and time.monotonic() - started < 2.0
    with second.collapse(KEY) as ticket:
        assert ticket.leader


def test_redis_killed_then_restarted(workers, redis_server):
    (store,) = workers(1, breaker_threshold=1, breaker_cooldown=0.2, l1_max_bytes=0)
    put(store, KEY, b"v1")
    redis_server.kill()
    assert store.lookup(KEY, []) is UNAVAILABLE         # no exception
    assert store.stats()["redis"]["reads"] in ("open", "half-open")
    assert not put(store, KEY, b"v2")
    wait_until(lambda: not store.l1_trusted, 5, "the listener to notice")
    redis_server.restart()                              # empty: no persistence
    wait_until(lambda: put(store, KEY, b"v3"), 10, "caching to resume")
    assert store.lookup(KEY, []).body == b"v3"
    wait_until(lambda: store.l1_trusted, 10, "the listener to resubscribe")
    assert store.stats()["redis"]["reads"] == store.stats()["redis"]["writes"] == "closed"


def test_a_full_redis_refuses_writes_and_still_serves_reads(workers, redis_server):
    (store,) = workers(1, l1_max_bytes=0, breaker_threshold=1)
    put(store, KEY, b"stored before")
    admin = redis_server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1mb")
    writer = store.open_writer("http://example.test/new", [], 60)
    writer.write(b"x" * 5000)                           # the first chunk is refused: -OOM
    assert writer.state == "abandoned" and "OutOfMemoryError" in writer.reason
    assert store.stats()["redis"]["writes"] == "open"
    assert store.stats()["redis"]["reads"] == "closed"
    assert store.lookup(KEY, []).body == b"stored before"
    assert store.stats()["redis"]["errors"] == {"OutOfMemoryError": 1}


def test_a_paused_redis_times_out_fast(workers, redis_server):
    (store,) = workers(1, socket_timeout=0.2, l1_max_bytes=0, breaker_cooldown=0.2)
    put(store, KEY, b"v1")
    redis_server.client().execute_command("CLIENT", "PAUSE", 1500, "ALL")
    started = time.monotonic()
    assert store.lookup(KEY, []) is UNAVAILABLE
    assert time.monotonic() - started < 0.6
    assert store.stats()["redis"]["errors"] == {"TimeoutError": 1}
    wait_until(lambda: store.lookup(KEY, []) is not None, 10, "the pause to end")


def test_a_read_only_replica_serves_reads_and_refuses_writes(redis_server):
    redis_server.client().config_set("repl-diskless-sync-delay", 0)
    replica = start_redis_server("--replicaof", "127.0.0.1", str(redis_server.port))
    store = connect(small(l1_max_bytes=0), replica.url)
    try:
        writer = connect(small(), redis_server.url)
        put(writer, KEY, b"from the primary")
        writer.close()
        wait_until(lambda: store.lookup(KEY, []), 10, "the replica to sync")
        assert not put(store, "http://example.test/other", b"x")
        assert store.stats()["redis"]["errors"] == {"ReadOnlyError": 1}
        assert store.lookup(KEY, []).body == b"from the primary"
    finally:
        store.close()
        replica.stop()


def test_server_info_fields(workers):
    (store,) = workers(1)
    put(store, KEY, b"x")
    info = store.server_info()
    assert info["keys"] == 2 and info["maxmemory_policy"]
    assert {"used_memory", "maxmemory", "evicted_keys", "redis_version"} <= set(info)
