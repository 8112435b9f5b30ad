"""The scoreboard: one shared-memory slot per worker, written by the worker, read by the master.

# design: the master creates a slot (an anonymous shared mmap) before it forks a worker, so both
# see the same memory. The slot is an array of float64: a small header (heartbeat, state, ...)
# written only by the worker's main thread, then one row per handler thread written only by that
# thread. Single writer per cell, so the request path takes no lock; 8-byte aligned stores are
# atomic on every platform we run on, and counters stay exact up to 2**53. The master sums rows.
"""

from __future__ import annotations

import mmap
import time
from bisect import bisect_left

__all__ = ["Slot", "HEADER", "ROW", "LATENCY_BOUNDS", "STATES"]

# Header cells (written by the worker's main thread; GENERATION and PID by the master at spawn).
HEADER = ("heartbeat", "state", "pid", "generation", "booted_at", "threads", "idle_connections",
          "l1_entries", "l1_bytes", "redis_up", "redis_rtt")
# Per-thread cells: `busy_since` is the start of the request in progress (0 = none).
_COUNTERS = (
    "requests", "bytes_in", "bytes_out", "connections", "upstream_errors", "upstream_timeouts",
    "client_errors", "cache_hit", "cache_miss", "cache_stale", "cache_revalidated", "cache_bypass",
    "cache_uncacheable",
)
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW = ("busy_since", "active", *_COUNTERS,
       *(f"latency_le_{bound}" for bound in LATENCY_BOUNDS), "latency_inf", "latency_sum")
STATES = ("booting", "ready", "draining", "stopped")

_H = {name: index for index, name in enumerate(HEADER)}
_R = {name: index for index, name in enumerate(ROW)}
_LATENCY_FIRST = _R[f"latency_le_{LATENCY_BOUNDS[0]}"]


class Slot:
    """One worker's shared cells. Create in the master, use in both processes after fork."""

    COUNTERS = _COUNTERS

    def __init__(self, threads: int) -> None:
        self.threads = threads
        size = (len(HEADER) + threads * len(ROW)) * 8
        self._map = mmap.mmap(-1, max(size, mmap.PAGESIZE))
        self._cells = memoryview(self._map).cast("d")
        self._cells[_H["threads"]] = threads

    def close(self) -> None:
        self._cells.release()
        self._map.close()

    # -- header (worker main thread / master at spawn) ---------------------------------------
    def set(self, name: str, value: float) -> None:
        self._cells[_H[name]] = value

    def get(self, name: str) -> float:
        return self._cells[_H[name]]

    def beat(self) -> None:
        self._cells[0] = time.monotonic()

    @property
    def state(self) -> str:
        return STATES[int(self._cells[_H["state"]])]

    @state.setter
    def state(self, name: str) -> None:
        self._cells[_H["state"]] = STATES.index(name)

    # -- rows (one handler thread each) --------------------------------------------------------
    def row(self, index: int) -> "Row":
        return Row(self._cells, len(HEADER) + index * len(ROW))

    def busy_since(self) -> list[float]:
        """When each thread's request in progress started (monotonic), 0.0 for idle threads."""
        base, width = len(HEADER), len(ROW)
        return [self._cells[base + i * width] for i in range(self.threads)]

    def totals(self) -> dict[str, float]:
        """Counters summed over the threads (also `active`, the open connections)."""
        sums = dict.fromkeys(ROW[1:], 0.0)
        for index in range(self.threads):
            row = self.row(index)
            for name in sums:
                sums[name] += row.get(name)
        return sums


class Row:
    """A handler thread's cells; only that thread writes them."""

    __slots__ = ("_cells", "_base")

    def __init__(self, cells: memoryview, base: int) -> None:
        self._cells, self._base = cells, base

    def get(self, name: str) -> float:
        return self._cells[self._base + _R[name]]

    def add(self, name: str, amount: float = 1.0) -> None:
        cell = self._base + _R[name]
        self._cells[cell] += amount

    def begin(self, now: float) -> None:
        self._cells[self._base] = now

    def end(self, duration: float) -> None:
        """The request is over: count it and its latency, mark the thread idle."""
        cells, base = self._cells, self._base
        cells[base] = 0.0
        cells[base + _R["requests"]] += 1
        cells[base + _R["latency_sum"]] += duration
        # the first bucket whose bound is >= duration (le buckets), else +Inf: one C-level search
        cells[base + _LATENCY_FIRST + bisect_left(LATENCY_BOUNDS, duration)] += 1

    def set_active(self, active: bool) -> None:
        self._cells[self._base + 1] = 1.0 if active else 0.0
