"""Circuit breakers: transitions on a manual clock, error classes, and the store when Redis fails."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, ResponseError, TimeoutError

from cache.breaker import Breaker, Guard, Unavailable
from cache.store import UNAVAILABLE

from .helpers import meta, put, small

KEY = "http://example.test/b"


def fail(error: Exception):
    def op():
        raise error
    return op


def test_opens_after_threshold_failures_then_probes_once_after_the_cooldown(clock):
    breaker = Breaker("reads", threshold=2, cooldown=5.0, clock=clock)
    assert not breaker.failed() and breaker.state == "closed"
    assert breaker.failed() and breaker.state == "open"
    assert not breaker.allow()
    clock.advance(5.0)
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow()                          # one probe at a time
    assert breaker.succeeded() and breaker.state == "closed" and breaker.allow()


def test_a_failed_probe_waits_another_cooldown(clock):
    breaker = Breaker("reads", threshold=1, cooldown=5.0, clock=clock)
    breaker.failed()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.failed()
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_a_success_resets_the_consecutive_count(clock):
    breaker = Breaker("reads", threshold=2, cooldown=5.0, clock=clock)
    breaker.failed()
    breaker.succeeded()
    assert not breaker.failed() and breaker.state == "closed"


def test_a_stuck_probe_is_replaced_after_a_cooldown(clock):
    breaker = Breaker("reads", threshold=1, cooldown=5.0, clock=clock)
    breaker.failed()
    clock.advance(5.0)
    assert breaker.allow() and not breaker.allow()
    clock.advance(5.0)
    assert breaker.allow()


@pytest.mark.parametrize("error", [ConnectionError("refused"), TimeoutError("slow")])
def test_an_unreachable_server_opens_both_circuits(clock, error):
    guard = Guard(threshold=1, cooldown=5.0, clock=clock)
    with pytest.raises(Unavailable):
        guard.read(fail(error))
    assert guard.reads.state == guard.writes.state == "open"
    with pytest.raises(Unavailable):
        guard.write(lambda: "never called")
    assert guard.skipped == 1


@pytest.mark.parametrize("error", [OutOfMemoryError("OOM"), ReadOnlyError("READONLY"), ResponseError("WRONGTYPE")])
def test_a_refused_write_opens_only_the_write_circuit(clock, error):
    guard = Guard(threshold=1, cooldown=5.0, clock=clock)
    with pytest.raises(Unavailable):
        guard.write(fail(error))
    assert guard.writes.state == "open" and guard.reads.state == "closed"
    assert guard.read(lambda: "still reads") == "still reads"
    assert guard.stats()["errors"] == {type(error).__name__: 1}


def test_a_bug_in_an_operation_is_not_blamed_on_redis(clock):
    guard = Guard(threshold=1, cooldown=5.0, clock=clock)
    with pytest.raises(ZeroDivisionError):
        guard.read(lambda: 1 / 0)
    assert guard.reads.state == "closed"


def test_the_store_never_raises_when_redis_is_down_and_resumes_by_itself(make_store, fake_server, clock):
    store = make_store(small(breaker_threshold=2, breaker_cooldown=5.0))
    put(store, KEY, b"cached")
    fake_server.connected = False
    assert store.lookup(KEY, []) is UNAVAILABLE
    assert store.lookup(KEY, []) is UNAVAILABLE
    assert store.stats()["redis"]["reads"] == "open"
    calls = store.stats()["redis"]["calls"]
    assert store.lookup(KEY, []) is UNAVAILABLE and store.stats()["redis"]["calls"] == calls   # skipped
    writer = store.open_writer(KEY, [], 60)
    assert writer.write(b"x" * 5000) is False and writer.state == "abandoned"
    assert not writer.commit(meta())
    assert not store.purge(KEY) and not store.update_meta(KEY, meta()) and store.server_info() is None
    with store.collapse(KEY) as ticket:
        assert ticket.leader and ticket.outcome == "local"
    fake_server.connected = True
    assert store.lookup(KEY, []) is UNAVAILABLE                # still cooling down
    clock.advance(5.0)
    assert store.lookup(KEY, []).body == b"cached"      # the probe closes the read circuit
    clock.advance(5.0)
    assert put(store, "http://example.test/new", b"new")
    assert store.stats()["redis"]["reads"] == store.stats()["redis"]["writes"] == "closed"


def test_a_commit_that_fails_leaves_no_visible_object(make_store, fake_server, fake):
    store = make_store()
    writer = store.open_writer(KEY, [], 60)
    writer.write(b"x" * 3000)
    fake_server.connected = False
    assert not writer.commit(meta()) and writer.state == "abandoned"
    fake_server.connected = True
    assert fake.keys("pp:*:meta:*") == [] and fake.keys("pp:*:idx") == []
