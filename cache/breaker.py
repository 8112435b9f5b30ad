"""Circuit breakers around Redis: a slow, down or full Redis costs the proxy caching, never availability.

design: every Redis operation runs through `Guard.read` or `Guard.write`. A failure of any kind
(`redis.RedisError` or redis-py's cluster errors: connection refused, timeout, -OOM, -READONLY, a
slot no node serves, ...) becomes `Unavailable` for the
caller inside `cache/`, and the store's public methods turn that into None/False (ARCHITECTURE
"Cache": Redis is an optimisation, never a dependency of availability).

Two circuits, because a full (-OOM) or read-only (replica) Redis still serves reads: refused writes
open only the write circuit; an unreachable server (connection error, timeout) opens both. An open
circuit skips Redis for `cooldown` seconds, then lets one probe through; its success closes the
circuit, its failure opens it again. So caching resumes by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import ClusterDownError, ConnectionError, RedisClusterException, RedisError, TimeoutError

__all__ = ["Breaker", "Guard", "Unavailable"]

log = logging.getLogger("cache.store")
T = TypeVar("T")

_FAILURES = (RedisError, RedisClusterException)    # the latter: a cluster with slots nobody serves
_UNREACHABLE = (ConnectionError, TimeoutError, ClusterDownError, RedisClusterException)
_LATENCY_SAMPLES = 256


class Unavailable(Exception):
    """Redis could not do it (down, slow, full, read-only, or its circuit is open). Never leaves cache/."""


class Breaker:
    """One circuit: closed -> `threshold` consecutive failures -> open -> `cooldown` -> one probe."""

    def __init__(self, name: str, threshold: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self._threshold, self._cooldown, self._clock = name, threshold, cooldown, clock
        self._lock = threading.Lock()
        self._failures = 0          # consecutive
        self._opened_at: float | None = None
        self._probe_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probe_at is not None else "open"

    def allow(self) -> bool:
        """May an operation go to Redis now? In the open state, True for one probe per cool-down."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self._clock()
            if self._probe_at is not None and now - self._probe_at < self._cooldown:
                return False                     # a probe is in flight (a stuck one is replaced)
            if self._probe_at is None and now - self._opened_at < self._cooldown:
                return False
            self._probe_at = now
            return True

    def succeeded(self) -> bool:
        """Record a success; True if that closed the circuit."""
        with self._lock:
            was_open = self._opened_at is not None
            self._failures, self._opened_at, self._probe_at = 0, None, None
            return was_open

    def failed(self) -> bool:
        """Record a failure; True if that opened the circuit."""
        with self._lock:
            self._failures += 1
            if self._opened_at is not None:       # a failed probe: stay open, wait another cool-down
                self._opened_at, self._probe_at = self._clock(), None
                return False
            if self._failures < self._threshold:
                return False
            self._opened_at, self._probe_at = self._clock(), None
            self.times_opened += 1
            return True

    def cancel(self) -> None:
        """The operation ended without a verdict on Redis (a bug of ours): free the probe slot."""
        with self._lock:
            self._probe_at = None


class Guard:
    """Runs Redis operations behind the read and write circuits; counts and times them."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.reads = Breaker("reads", threshold, cooldown, clock)
        self.writes = Breaker("writes", threshold, cooldown, clock)
        self._clock = clock
        self._latency: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self.calls = self.skipped = 0          # approximate under threads: stats only
        self.errors: Counter[str] = Counter()

    def read(self, op: Callable[[], T]) -> T:
        return self._call(self.reads, op)

    def write(self, op: Callable[[], T]) -> T:
        return self._call(self.writes, op)

    def _call(self, circuit: Breaker, op: Callable[[], T]) -> T:
        if not circuit.allow():
            self.skipped += 1
            raise Unavailable(f"Redis {circuit.name} circuit is open")
        self.calls += 1
        started = self._clock()
        try:
            result = op()
        except _FAILURES as error:
            self._failed(circuit, error)
            raise Unavailable(f"{type(error).__name__}: {error}") from error
        except BaseException:
            circuit.cancel()
            raise
        self._latency.append(self._clock() - started)
        if circuit.succeeded():
            log.warning("cache: Redis %s work again; caching resumes", circuit.name)
        return result

    def _failed(self, circuit: Breaker, error: Exception) -> None:
        self.errors[type(error).__name__] += 1
        # Unreachable: nothing will work. A refused write (-OOM, -READONLY) or any other error:
        # only this kind of operation.
        circuits = (self.reads, self.writes) if isinstance(error, _UNREACHABLE) else (circuit,)
        for each in circuits:
            if each.failed():
                log.warning("cache: Redis %s failing (%s: %s); skipping them for a cool-down",
                            each.name, type(error).__name__, error)

    def latency_p50(self) -> float:
        samples = sorted(self._latency.copy())
        return samples[len(samples) // 2] if samples else 0.0

    def stats(self) -> dict:
        samples = sorted(self._latency.copy())
        latency = {}
        if samples:
            latency = {"samples": len(samples), "p50_ms": round(samples[len(samples) // 2] * 1000, 3),
                       "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3),
                       "max_ms": round(samples[-1] * 1000, 3)}
        return {"reads": self.reads.state, "writes": self.writes.state,
                "opened": self.reads.times_opened + self.writes.times_opened,
                "calls": self.calls, "skipped": self.skipped, "errors": dict(self.errors),
                "latency": latency}
