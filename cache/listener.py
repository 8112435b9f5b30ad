"""The per-worker pub/sub listener: L1 invalidations and lock releases from every process and node.

design: one daemon thread per store owns one pub/sub connection to `<prefix>:events`. Messages are
b"i:<tag>:<origin store>" (a purge, invalidation, replacement or freshening: drop L1 copies) and
b"d:<tag>" (a collapsing lock was released: wake the waiters). The thread reports `on_state(True)` only once the
subscription is confirmed, and `on_state(False)` as soon as it fails; the store then clears its L1 and
stops trusting it until the next confirmed subscription (messages sent in between are lost, the
clear makes up for them). A silent connection is detected by our own PING: no reply within
`2 * ping_interval` counts as broken. Reconnects back off from 0.1 s to 2 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisClusterException, RedisError

__all__ = ["Listener"]

log = logging.getLogger("cache.store")

_POLL = 0.1
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 2.0


class _Silent(Exception):
    """The connection stopped answering our PINGs."""


class Listener:
    def __init__(self, client: redis.Redis, channel: str, *, ping_interval: float,
                 on_message: Callable[[bytes], None], on_state: Callable[[bool], None]) -> None:
        self._client, self._channel, self._ping_interval = client, channel, ping_interval
        self._on_message, self._on_state = on_message, on_state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cache-listener", daemon=True)
        self.connected = False
        self.subscriptions = 0   # confirmed subscriptions (the first one included)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub()     # a cluster client may reach the nodes only now
                self._subscribe(pubsub)
                backoff = _BACKOFF_MIN
                self._listen(pubsub)
            except (RedisError, RedisClusterException, OSError, _Silent) as error:
                if self.connected:
                    log.warning("cache: invalidation listener lost (%s); L1 cleared until it is back", error)
            except Exception:
                log.exception("cache: invalidation listener failed; restarting it")
            finally:
                self._set_state(False)
                _close(pubsub)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _subscribe(self, pubsub: redis.client.PubSub) -> None:
        pubsub.subscribe(self._channel)
        deadline = time.monotonic() + self._ping_interval
        while time.monotonic() < deadline and not self._stop.is_set():
            message = pubsub.get_message(timeout=_POLL)
            if message is not None and message["type"] == "subscribe":
                self.subscriptions += 1
                self._set_state(True)
                return
        raise _Silent("no subscription confirmation")

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        heard = next_ping = time.monotonic()
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=_POLL)
            now = time.monotonic()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self._on_message(message["data"])
            if now >= next_ping:
                pubsub.ping()
                next_ping = now + self._ping_interval
            if now - heard > 2 * self._ping_interval:
                raise _Silent(f"no reply for {now - heard:.1f} s")

    def _set_state(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self._on_state(connected)


def _close(pubsub: redis.client.PubSub | None) -> None:
    if pubsub is None:
        return
    try:
        pubsub.close()
    except (RedisError, OSError):
        pass
