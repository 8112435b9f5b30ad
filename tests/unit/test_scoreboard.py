"""workers.scoreboard.Slot: header cells, per-thread rows, totals, latency buckets, and that a write
in a forked child is seen by the parent (the whole point of the shared mmap)."""

from __future__ import annotations

import os

import pytest

from workers.scoreboard import HEADER, LATENCY_BOUNDS, ROW, STATES, Slot


@pytest.fixture
def slot():
    made = Slot(threads=3)
    yield made
    made.close()


def bucket_counts(slot: Slot) -> dict[str, float]:
    """The non-zero latency buckets of the totals."""
    return {name: value for name, value in slot.totals().items()
            if name.startswith("latency_") and name != "latency_sum" and value}


def in_child(action, parent=lambda: None) -> None:
    """Fork; the child runs `action()` and exits 0 only if it succeeded; the parent runs `parent()`,
    then waits for the child and asserts its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        finally:
            os._exit(code)
    try:
        parent()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_new_slot_is_zero_and_booting(slot):
    assert slot.get("threads") == 3
    assert slot.state == "booting"
    assert slot.busy_since() == [0.0, 0.0, 0.0]
    assert set(slot.totals()) == set(ROW[1:]) and not any(slot.totals().values())
    assert all(slot.get(name) == 0 for name in HEADER if name != "threads")


@pytest.mark.parametrize("state", STATES)
def test_state_round_trip(slot, state):
    slot.state = state
    assert slot.state == state


def test_header_cells(slot):
    slot.set("pid", 1234)
    slot.set("generation", 7)
    slot.beat()
    assert (slot.get("pid"), slot.get("generation")) == (1234, 7)
    assert slot.get("heartbeat") > 0


def test_rows_are_independent_and_summed(slot):
    rows = [slot.row(index) for index in range(3)]
    rows[0].add("requests")
    rows[0].add("bytes_out", 100)
    rows[2].add("bytes_out", 50)
    rows[2].add("cache_hit", 2)
    rows[1].set_active(True)
    rows[2].set_active(True)
    rows[2].set_active(False)
    assert [row.get("bytes_out") for row in rows] == [100, 0, 50]
    totals = slot.totals()
    assert (totals["requests"], totals["bytes_out"], totals["cache_hit"], totals["active"]) == (1, 150, 2, 1)


def test_busy_since_per_thread(slot):
    slot.row(1).begin(123.5)
    assert slot.busy_since() == [0.0, 123.5, 0.0]
    slot.row(1).end(0.2)
    assert slot.busy_since() == [0.0, 0.0, 0.0]


# Each finished request counts once, in the first bucket whose bound is >= its duration (bounds are
# inclusive; the buckets are per-bound, not cumulative), or in `latency_inf` past the last bound.
LATENCIES = [
    (0.0, "latency_le_0.001"),
    (0.001, "latency_le_0.001"),
    (0.0011, "latency_le_0.0025"),
    (0.3, "latency_le_0.5"),
    (1.0, "latency_le_1.0"),
    (10.0, "latency_le_10.0"),
    (10.5, "latency_inf"),
    (3600.0, "latency_inf"),
]


@pytest.mark.parametrize("duration, bucket", LATENCIES)
def test_latency_bucket(slot, duration, bucket):
    slot.row(0).end(duration)
    assert bucket_counts(slot) == {bucket: 1}
    assert slot.totals()["requests"] == 1 and slot.totals()["latency_sum"] == pytest.approx(duration)


def test_latency_buckets_cover_every_bound():
    assert [name for name in ROW if name.startswith("latency_le_")] == [
        f"latency_le_{bound}" for bound in LATENCY_BOUNDS]


def test_latency_accumulates_across_threads(slot):
    for index, duration in enumerate((0.002, 0.002, 20.0)):
        slot.row(index).end(duration)
    assert bucket_counts(slot) == {"latency_le_0.0025": 2, "latency_inf": 1}
    assert slot.totals()["latency_sum"] == pytest.approx(20.004)


def test_child_writes_are_seen_by_parent(slot):
    def work():
        slot.state = "ready"
        slot.set("pid", os.getpid())
        slot.row(2).begin(42.0)
        slot.row(1).add("requests", 5)
        slot.row(0).end(0.02)

    in_child(work)
    assert slot.state == "ready"
    assert slot.get("pid") not in (0, os.getpid())
    assert slot.busy_since() == [0.0, 0.0, 42.0]
    assert slot.totals()["requests"] == 6 and bucket_counts(slot) == {"latency_le_0.025": 1}


def test_parent_writes_after_fork_are_seen_by_child(slot):
    read, write = os.pipe()

    def child():
        os.close(write)
        assert os.read(read, 1) == b"x"          # the parent has written
        assert slot.state == "draining" and slot.get("generation") == 3

    def parent():
        try:
            slot.state = "draining"
            slot.set("generation", 3)
            os.write(write, b"x")
        finally:
            os.close(write)                      # the child never blocks past this

    try:
        in_child(child, parent)
    finally:
        os.close(read)
