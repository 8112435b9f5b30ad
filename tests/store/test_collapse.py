"""Request collapsing on fakeredis: in-process flights, the Redis lock, timeouts, token checks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from cache.layout import Keys
from support.wait import wait_until

from .helpers import put, small

KEY = "http://example.test/c"


def test_concurrent_misses_in_one_process_wait_for_one_leader(make_store):
    store = make_store(small(lock_timeout=5.0))
    leader = store.collapse(KEY)
    assert leader.leader and leader.outcome == "lock"
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(store.collapse, KEY) for _ in range(4)]
        wait_until(lambda: all(future.running() for future in waiting), 5, "the followers to wait")
        assert not any(future.done() for future in waiting)
        put(store, KEY, b"fetched once")
        leader.release()
        tickets = [future.result(5) for future in waiting]
    assert [ticket.outcome for ticket in tickets] == ["done"] * 4
    assert not any(ticket.leader for ticket in tickets)
    assert store.lookup(KEY, []).body == b"fetched once"


def test_a_follower_gives_up_after_lock_timeout(make_store):
    store = make_store(small(lock_timeout=0.2))
    with store.collapse(KEY):
        ticket = store.collapse(KEY)
    assert not ticket.leader and ticket.outcome == "timeout"


def test_the_lock_holder_in_another_store_makes_this_one_wait(make_store):
    first, second = make_store(small(lock_timeout=5.0)), make_store(small(lock_timeout=5.0))
    held = first.collapse(KEY)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(second.collapse(KEY)))
    thread.start()
    wait_until(lambda: second.stats()["collapsing"]["waiting_for_other_process"] == 1, 5,
               "the second store to wait")
    assert not result
    held.release()                                      # no listener here: found by polling the lock
    thread.join(5)
    assert result[0].outcome == "done" and not result[0].leader
    result[0].release()
    assert second.stats()["collapsing"] == {"keys": 0, "waiting_for_other_process": 0}


def test_a_remote_waiter_gives_up_after_lock_timeout(make_store):
    first, second = make_store(), make_store(small(lock_timeout=0.3))
    with first.collapse(KEY):
        with second.collapse(KEY) as ticket:
            assert ticket.outcome == "timeout" and not ticket.leader


def test_the_lock_has_a_ttl(make_store, fake):
    store = make_store(small(lock_ttl=10.0))
    with store.collapse(KEY):
        assert 9_000 < fake.pttl(Keys("pp", KEY).lock) <= 10_000
    assert fake.exists(Keys("pp", KEY).lock) == 0


def test_release_does_not_delete_a_lock_taken_over_by_another_holder(make_store, fake):
    store = make_store()
    ticket = store.collapse(KEY)
    lock = Keys("pp", KEY).lock
    fake.set(lock, "someone else")                      # ours expired; another worker took it
    ticket.release()
    ticket.release()                                    # idempotent
    assert fake.get(lock) == b"someone else"


def test_a_release_is_announced_on_the_channel(make_store, fake):
    store = make_store()
    pubsub = fake.pubsub()
    pubsub.subscribe("pp:events")
    wait_until(lambda: pubsub.get_message(timeout=0.1), 5, "the subscription")
    store.collapse(KEY).release()
    message = wait_until(lambda: pubsub.get_message(timeout=0.1), 5, "the release message")
    assert message["data"] == b"d:" + Keys("pp", KEY).tag.encode()
    pubsub.close()
