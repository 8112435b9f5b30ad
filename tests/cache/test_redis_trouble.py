"""Redis trouble is never the client's trouble (ARCHITECTURE "Cache"): Redis killed under load and
restarted, Redis full; and the embedded cache server the shipped config starts."""

from __future__ import annotations


import redis

from support.load import BackgroundLoad
from support.pattern import pattern_bytes
from support.wait import wait_until

from .helpers import MiB, cache_config, get, is_hit, params

FRESH = [("Cache-Control", "max-age=60")]


class Load(BackgroundLoad):
    """Threads sending GETs for `urls` on fresh connections until stopped; keeps every outcome."""

    def __init__(self, port: int, urls: list[str], bodies: dict[str, bytes], threads: int = 4) -> None:
        self.port, self.urls, self.bodies = port, urls, bodies
        self.results: list[tuple[str, int, bool, str]] = []   # url, status, body intact, Cache-Status
        self.errors: list[str] = []
        super().__init__(threads)

    def _run(self, number: int) -> None:
        turn = number
        while not self._stop.is_set():
            url = self.urls[turn % len(self.urls)]
            turn += 1
            try:
                response = get(self.port, url)
            except Exception as error:     # noqa: BLE001 - a client-side failure is what we look for
                with self._lock:
                    self.errors.append(f"{url}: {error!r}")
                continue
            outcome = (url, response.status, response.complete and response.body == self.bodies[url],
                       response.header("Cache-Status") or "")
            with self._lock:
                self.results.append(outcome)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def since(self, start: int) -> list[tuple[str, int, bool, str]]:
        with self._lock:
            return self.results[start:]

    def bad(self) -> list[tuple[str, int, bool, str]]:
        with self._lock:
            return [r for r in self.results if r[1] != 200 or not r[2]]


def is_hit_status(cache_status: str) -> bool:
    return "; hit" in cache_status


def test_redis_killed_mid_run_then_restarted(make_proxy, own_redis, site):
    proxy = make_proxy(cache_config(own_redis.url, key_prefix="e2e-kill", l1_ttl=1.0))
    bodies = {}
    for n in range(3):
        path = f"/busy-{n}"
        bodies[site.url(path)] = pattern_bytes(3000 + n)
        site.resource(path, body=bodies[site.url(path)], headers=FRESH)
    urls = list(bodies)
    for url in urls:
        wait_until(lambda: is_hit(get(proxy.port, url)), 5, f"{url} cached")

    with Load(proxy.port, urls, bodies) as load:
        wait_until(lambda: load.count() >= 30, 10, "requests flowing")
        own_redis.kill()
        killed_at = load.count()
        wait_until(lambda: any("fwd=bypass" in r[3] for r in load.since(killed_at)), 5,
                   "responses marked fwd=bypass while Redis is down")
        wait_until(lambda: load.count() >= killed_at + 30, 10, "requests while Redis is down")
        own_redis.restart()
        restarted_at = load.count()
        wait_until(lambda: any(is_hit_status(r[3]) for r in load.since(restarted_at)), 10,
                   "hits again after the restart")
        resumed = load.count()
        wait_until(lambda: load.count() >= resumed + 20, 10, "requests after caching resumed")
    assert load.errors == []
    assert load.bad() == [], load.bad()[:5]
    assert not site.errors


def test_redis_full_responses_stay_intact(make_proxy, own_redis, site):
    proxy = make_proxy(cache_config(own_redis.url, key_prefix="e2e-full"))
    site.resource("/before", body=b"stored before", headers=FRESH)
    get(proxy.port, site.url("/before"))
    wait_until(lambda: is_hit(get(proxy.port, site.url("/before"))), 5, "caching works")

    admin = own_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1mb")
    filler = b"x" * 16384
    for n in range(2000):
        try:
            admin.set(f"filler:{n}", filler)
        except redis.exceptions.OutOfMemoryError:            # -OOM: full
            break
    else:
        raise AssertionError("Redis never said it was full")

    bodies = {}
    for n in range(5):
        path = f"/while-full-{n}"
        bodies[path] = pattern_bytes(50_000 + n)
        site.resource(path, body=bodies[path], headers=FRESH)
    for _ in range(3):
        for path, body in bodies.items():
            response = get(proxy.port, site.url(path))
            assert (response.status, response.complete, response.body == body) == (200, True, True), \
                (path, response.status, response.header("Cache-Status"))
    before = get(proxy.port, site.url("/before"))          # reads still work: still a hit
    assert (before.status, before.body) == (200, b"stored before")
    assert is_hit(before), before.header("Cache-Status")

    admin.config_set("maxmemory", "0")                     # room again: caching resumes by itself
    url = site.url("/while-full-0")
    wait_until(lambda: is_hit(get(proxy.port, url)), 10, "caching to resume")
    assert get(proxy.port, url).body == bodies["/while-full-0"]


def test_embedded_cache_server_is_shared_by_the_workers(make_proxy, site, pinned):
    proxy = make_proxy(cache_config("embedded", key_prefix="e2e-embedded", embedded_maxmemory=16 * MiB))
    assert "cache: embedded redis-server" in proxy.stderr_text()
    body = pattern_bytes(4000)
    site.resource("/embedded", body=body, headers=FRESH)
    url = site.url("/embedded")
    a, b = pinned(proxy)
    first = a.get(url)
    assert (first.body, params(first).get("stored")) == (body, True)
    for connection in (b, a):
        response = connection.get(url)
        assert (response.body, is_hit(response)) == (body, True), \
            (connection.pid, response.header("Cache-Status"))
    assert site.count("/embedded") == 1
