"""Redis trouble is never a client's trouble (issue 5, "Faults"): down at start, killed under load
and restarted, paused, full. Every response is a complete 200 with the right body, and caching
resumes by itself. (tests/cache covers the cache semantics around these; this is the fault view.)
"""

from __future__ import annotations

import time

import redis

from support.load import BackgroundLoad
from support.pattern import pattern_bytes
from support.wait import wait_until

from .helpers import cache_config, cache_params, get

FRESH = [("Cache-Control", "max-age=60")]


def serve(origin, path: str, size: int) -> tuple[str, bytes]:
    body = pattern_bytes(size)
    origin.route(path, lambda ex: ex.respond(200, body, headers=FRESH))
    return origin.url(path), body


def is_hit(port: int, url: str) -> bool:
    return cache_params(get(port, url)).get("hit") is True


class Load(BackgroundLoad):
    """Threads sending GETs on fresh connections until stopped; every failure is kept."""

    def __init__(self, port: int, bodies: dict[str, bytes], threads: int = 3) -> None:
        self.port, self.bodies = port, bodies
        self.statuses: list[str] = []          # the Cache-Status of every good response
        self.failures: list[str] = []
        self.slowest = 0.0
        super().__init__(threads)

    def _run(self, number: int) -> None:
        urls = list(self.bodies)
        while not self._stop.is_set():
            url = urls[number % len(urls)]
            number += 1
            started = time.monotonic()
            try:
                response = get(self.port, url, timeout=10)
                failure = None if (response.status, response.complete, response.body) == (200, True, self.bodies[url]) \
                    else f"{url}: {response.status} complete={response.complete} {len(response.body)} B"
            except Exception as error:  # noqa: BLE001 - a client-side failure is what we look for
                failure, response = f"{url}: {error!r}", None
            with self._lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                if failure:
                    self.failures.append(failure)
                else:
                    self.statuses.append(response.header("Cache-Status") or "")

    def count(self) -> int:
        with self._lock:
            return len(self.statuses) + len(self.failures)

    def since(self, start: int) -> list[str]:
        with self._lock:
            return self.statuses[start:]


def test_redis_down_at_start(make_proxy, origin, own_redis):
    own_redis.kill()                                    # its port refuses from now on
    proxy = make_proxy(cache_config(own_redis.url, "hostile-down"))
    url, body = serve(origin, "/down", 20_000)
    statuses = []
    for _ in range(5):
        response = get(proxy.port, url)
        assert (response.status, response.complete, response.body == body) == (200, True, True)
        statuses.append(cache_params(response))
    assert [s.get("fwd") for s in statuses[1:]] == ["bypass"] * 4, statuses
    own_redis.restart()
    wait_until(lambda: is_hit(proxy.port, url), 10, "caching to start once Redis is up")
    assert get(proxy.port, url).body == body
    assert not [s for s in statuses if s.get("fwd") == "bypass" and s.get("stored")], \
        f"Cache-Status says 'stored' while Redis is down: {statuses}"


def test_redis_killed_under_load_then_restarted(make_proxy, origin, own_redis):
    proxy = make_proxy(cache_config(own_redis.url, "hostile-kill"))
    bodies = dict(serve(origin, f"/busy-{n}", 4000 + n) for n in range(3))
    for url in bodies:
        wait_until(lambda: is_hit(proxy.port, url), 5, f"{url} cached")
    with Load(proxy.port, bodies) as load:
        wait_until(lambda: load.count() >= 20, 10, "requests flowing")
        own_redis.kill()
        killed = load.count()
        wait_until(lambda: load.count() >= killed + 30, 10, "requests while Redis is down")
        own_redis.restart()
        restarted = load.count()
        wait_until(lambda: any("; hit" in s for s in load.since(restarted)), 10, "hits after the restart")
    assert load.failures == [], load.failures[:5]


def test_redis_paused(make_proxy, origin, own_redis):
    proxy = make_proxy(cache_config(own_redis.url, "hostile-pause"))
    bodies = dict(serve(origin, f"/paused-{n}", 3000 + n) for n in range(2))
    first = next(iter(bodies))
    wait_until(lambda: is_hit(proxy.port, first), 5, "caching works")
    with Load(proxy.port, bodies, threads=2) as load:
        wait_until(lambda: load.count() >= 10, 10, "requests flowing")
        admin = own_redis.client(socket_timeout=10)
        admin.execute_command("CLIENT", "PAUSE", "2000")
        paused, started = load.count(), time.monotonic()
        admin.ping()                                    # answered when the pause is over
        assert time.monotonic() - started > 1.5, "the pause did not hold"
        assert load.count() > paused + 4, "requests stopped while Redis was paused"
        resumed = load.count()
        wait_until(lambda: any("; hit" in s for s in load.since(resumed)), 10, "hits after the pause")
    assert load.failures == [], load.failures[:5]
    assert load.slowest < 1.5, f"a request took {load.slowest:.2f}s while Redis was paused"


def test_redis_full(make_proxy, origin, own_redis):
    proxy = make_proxy(cache_config(own_redis.url, "hostile-full"))
    admin = own_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1mb")
    filler = b"f" * 16384
    for number in range(2000):
        try:
            admin.set(f"filler:{number}", filler)
        except redis.exceptions.OutOfMemoryError:
            break
    else:
        raise AssertionError("Redis never said it was full")
    bodies = dict(serve(origin, f"/full-{n}", 100_000 + n) for n in range(3))
    for _ in range(3):
        for url, body in bodies.items():
            response = get(proxy.port, url)
            assert (response.status, response.complete, response.body == body) == (200, True, True)
    admin.config_set("maxmemory", "0")
    url = next(iter(bodies))
    wait_until(lambda: is_hit(proxy.port, url), 10, "caching to resume when Redis has room again")
    assert get(proxy.port, url).body == bodies[url]
