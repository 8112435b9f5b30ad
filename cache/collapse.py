"""Request collapsing: concurrent misses for one primary key wait for one origin fetch.

design (ARCHITECTURE "Cache"): inside a process the first caller for a key becomes the local leader
and the others wait on its `_Flight` (an event set when the leader releases its ticket). The local
leader then takes the Redis lock `SET <p>:{tag}:lock <token> NX PX lock_ttl`:
- got it: it fetches (Ticket.leader); releasing deletes the lock only if the token still matches
  (compare-and-delete) and publishes b"d:<tag>" so waiters everywhere wake at once;
- another process holds it: it waits for that message (or polls the lock every 0.1 s, in case the
  message is lost) at most `lock_timeout`, then returns a follower ticket: look up again, and on a
  miss fetch yourself;
- Redis unavailable: it fetches, collapsed within this process only.
The lock has a TTL, so a killed worker cannot wedge a key for longer than `lock_ttl`.
"""

from __future__ import annotations

import secrets
import threading
import time

from cache.breaker import Unavailable
from cache.layout import Keys
from cache.redis_store import RedisStore

__all__ = ["Collapser", "Ticket"]

_LOCK_POLL = 0.1


class _Flight:
    __slots__ = ("done", "remote")

    def __init__(self) -> None:
        self.done = threading.Event()      # the local leader released its ticket
        self.remote = threading.Event()    # a lock for this key was released somewhere


class Ticket:
    """The caller's turn for one key. `leader`: fetch from the origin (and store); otherwise another
    fetch has finished or timed out: look the key up again first. Always `release()` (or use `with`).

    outcome: "lock" (leader, holds the Redis lock), "local" (leader, Redis unavailable), "done"
    (the other fetch finished), "timeout" (gave up waiting after lock_timeout), "unavailable"
    (Redis failed while waiting).
    """

    __slots__ = ("leader", "outcome", "_collapser", "_keys", "_flight", "_token", "_released")

    def __init__(self, collapser: Collapser, keys: Keys, outcome: str, *,
                 flight: _Flight | None = None, token: str | None = None) -> None:
        self.leader = outcome in ("lock", "local")
        self.outcome = outcome
        self._collapser, self._keys, self._flight, self._token = collapser, keys, flight, token
        self._released = False

    def release(self) -> None:
        """Idempotent: free the Redis lock (if ours) and wake this process's waiters."""
        if self._released:
            return
        self._released = True
        self._collapser.land(self._keys, self._flight, self._token)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Ticket {self.outcome} leader={self.leader}>"


class Collapser:
    def __init__(self, store: RedisStore, *, lock_ttl: float, lock_timeout: float) -> None:
        self._store, self._lock_ttl, self._lock_timeout = store, lock_ttl, lock_timeout
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self.waiting = 0                    # local leaders waiting for another process (stats only)

    def acquire(self, primary_key: str) -> Ticket:
        """Block until it is this caller's turn (at most lock_timeout, plus Redis timeouts)."""
        keys = self._store.keys(primary_key)
        with self._lock:
            flight = self._flights.get(keys.tag)
            lead = flight is None
            if lead:
                flight = self._flights[keys.tag] = _Flight()
        if not lead:
            finished = flight.done.wait(self._lock_timeout)
            return Ticket(self, keys, "done" if finished else "timeout")
        return self._lead(keys, flight)

    def _lead(self, keys: Keys, flight: _Flight) -> Ticket:
        token = secrets.token_hex(16)
        try:
            if self._store.try_lock(keys, token, self._lock_ttl):
                return Ticket(self, keys, "lock", flight=flight, token=token)
        except Unavailable:
            return Ticket(self, keys, "local", flight=flight)
        return Ticket(self, keys, self._wait_remote(keys, flight), flight=flight)

    def _wait_remote(self, keys: Keys, flight: _Flight) -> str:
        deadline = time.monotonic() + self._lock_timeout
        self.waiting += 1
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if flight.remote.wait(min(_LOCK_POLL, remaining)) or not self._store.lock_held(keys):
                    return "done"
        except Unavailable:
            return "unavailable"
        finally:
            self.waiting -= 1
        return "timeout"

    def notify(self, tag: str) -> None:
        """A lock for `tag` was released in some process (called by the listener thread)."""
        with self._lock:
            flight = self._flights.get(tag)
        if flight is not None:
            flight.remote.set()

    def land(self, keys: Keys, flight: _Flight | None, token: str | None) -> None:
        if token is not None:
            try:
                self._store.unlock(keys, token)
            except Unavailable:
                pass                        # the lock expires after lock_ttl
        if flight is not None:
            with self._lock:
                if self._flights.get(keys.tag) is flight:
                    del self._flights[keys.tag]
            flight.done.set()

    def stats(self) -> dict:
        return {"keys": len(self._flights), "waiting_for_other_process": self.waiting}
