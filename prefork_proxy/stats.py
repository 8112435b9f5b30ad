"""The /stats document: the master's state, the workers' scoreboard slots and psutil, as one dict.

# design: the master calls `Stats.tick(master)` on every turn of its loop; at most once a second
# it samples psutil (one `psutil.Process` kept per pid, read inside `oneshot()`; USS/PSS every
# 10 s, as they walk the memory maps) and records the counter totals in a ring of ten minutes,
# from which the rates, the last-minute hit ratio and the dashboard's charts come. `document()`
# renders the current state from shared memory and those samples. The only I/O it may do is the
# Redis INFO fetch: at most every 5 s, only while someone asks, each round trip bounded by 0.2 s,
# so a dead Redis costs the master a fraction of a second every few seconds, never a hang.
# Nothing here starts a thread (the master forks).
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psutil
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from cache.redis_url import client_for
from workers.scoreboard import LATENCY_BOUNDS, Slot

__all__ = ["Stats", "SCHEMA", "CACHE_RESULTS", "counter_totals", "hit_ratio", "health"]

SCHEMA = 1
CACHE_RESULTS = ("hit", "miss", "stale", "revalidated", "bypass", "uncacheable")
COUNTERS = ("requests", "connections", "bytes_in", "bytes_out", "upstream_errors",
            "upstream_timeouts", "client_errors")
_SAMPLE_EVERY = 1.0          # psutil and the history ring
_FULL_MEMORY_EVERY = 10.0    # USS/PSS (reads smaps)
_HISTORY = 600               # samples kept (~10 minutes)
_HISTORY_SHOWN = 300.0       # seconds of history in the document
_RATE_WINDOW = 5.0           # "requests per second now" is averaged over this
_REDIS_EVERY = 5.0
_REDIS_TIMEOUT = 0.2
HEALTH_STALE = 2.0           # a ready worker silent this long does not count as serving (/healthz)


# -- counters -------------------------------------------------------------------------------------
def counter_totals(master) -> dict[str, float]:
    """Every scoreboard counter summed over live workers and the reaped ones (`retired_totals`)."""
    sums = dict(master.retired_totals)
    sums["active"] = 0.0
    for handle in master.workers.values():
        for name, value in handle.slot.totals().items():
            sums[name] = sums.get(name, 0.0) + value
    return sums


def hit_ratio(served_from_cache: float, lookups: float) -> float | None:
    return round(served_from_cache / lookups, 4) if lookups else None


def _cache_counts(sums: dict[str, float]) -> tuple[float, float]:
    """(served from cache, lookups): hit + stale + revalidated out of those plus miss (as Varnish,
    bypassed and uncacheable requests are not lookups)."""
    served = sums.get("cache_hit", 0.0) + sums.get("cache_stale", 0.0) + sums.get("cache_revalidated", 0.0)
    return served, served + sums.get("cache_miss", 0.0)


def _latency(sums: dict[str, float]) -> dict:
    """Cumulative buckets as Prometheus wants them: [[upper bound, count <= bound], ...]."""
    buckets, running = [], 0.0
    for bound in LATENCY_BOUNDS:
        running += sums.get(f"latency_le_{bound}", 0.0)
        buckets.append([bound, int(running)])
    running += sums.get("latency_inf", 0.0)
    buckets.append(["+Inf", int(running)])
    return {"count": int(running), "sum_seconds": round(sums.get("latency_sum", 0.0), 6), "buckets": buckets}


def _traffic(sums: dict[str, float]) -> dict:
    served, lookups = _cache_counts(sums)
    return {**{name: int(sums.get(name, 0.0)) for name in COUNTERS},
            "cache": {result: int(sums.get(f"cache_{result}", 0.0)) for result in CACHE_RESULTS},
            "hit_ratio": hit_ratio(served, lookups),
            "latency": _latency(sums)}


# -- psutil -----------------------------------------------------------------------------------------
class ProcessSampler:
    """Latest psutil figures per pid; one `psutil.Process` kept per pid so CPU % has a baseline."""

    def __init__(self) -> None:
        self.processes: dict[int, psutil.Process] = {}
        self.figures: dict[int, dict] = {}
        self._full_at: dict[int, float] = {}

    def sample(self, pids: list[int], now: float) -> None:
        for gone in set(self.processes) - set(pids):
            self.processes.pop(gone, None)
            self.figures.pop(gone, None)
            self._full_at.pop(gone, None)
        for pid in pids:
            process = self.processes.get(pid)
            if process is None:
                process = self.processes[pid] = psutil.Process(pid)
            try:
                self.figures[pid] = self._read(pid, process, now)
            except psutil.Error:
                self.figures.pop(pid, None)   # it just exited; the next sample forgets it

    def _read(self, pid: int, process: psutil.Process, now: float) -> dict:
        previous = self.figures.get(pid, {})
        with process.oneshot():
            times = process.cpu_times()
            switches = process.num_ctx_switches()
            figures = {
                "cpu_percent": round(process.cpu_percent(None), 1),
                "cpu_seconds": round(times.user + times.system, 3),
                "rss_bytes": process.memory_info().rss,
                "uss_bytes": previous.get("uss_bytes"),
                "pss_bytes": previous.get("pss_bytes"),
                "threads": process.num_threads(),
                "open_fds": process.num_fds(),
                "ctx_switches_voluntary": switches.voluntary,
                "ctx_switches_involuntary": switches.involuntary,
            }
        if now - self._full_at.get(pid, -_FULL_MEMORY_EVERY) >= _FULL_MEMORY_EVERY:
            self._full_at[pid] = now
            full = process.memory_full_info()
            figures["uss_bytes"], figures["pss_bytes"] = full.uss, getattr(full, "pss", None)
        return figures

    def get(self, pid: int) -> dict | None:
        return self.figures.get(pid)


# -- history -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    mono: float
    wall: float
    requests: float
    served: float          # from cache
    lookups: float


class History:
    """A ring of once-a-second counter totals: rates and ratios over any recent window."""

    def __init__(self, size: int = _HISTORY) -> None:
        self.samples: deque[Sample] = deque(maxlen=size)

    def record(self, sums: dict[str, float], mono: float, wall: float) -> None:
        served, lookups = _cache_counts(sums)
        self.samples.append(Sample(mono, wall, sums.get("requests", 0.0), served, lookups))

    def since(self, seconds: float, now: Sample) -> Sample | None:
        """The oldest sample no older than `seconds` before `now` (None if there is none)."""
        for sample in self.samples:
            if now.mono - sample.mono <= seconds + 0.5:
                return sample
        return None

    def window(self, seconds: float, now: Sample) -> dict:
        start = self.since(seconds, now) or now
        elapsed = now.mono - start.mono
        requests = now.requests - start.requests
        return {"seconds": round(elapsed, 1), "requests": int(requests),
                "requests_per_second": round(requests / elapsed, 2) if elapsed > 0 else 0.0,
                "hit_ratio": hit_ratio(now.served - start.served, now.lookups - start.lookups)}

    def series(self, seconds: float, now: Sample) -> list[list]:
        """[[unix time, requests/s, hit ratio or null], ...] between consecutive recorded samples."""
        points, previous = [], None
        for sample in self.samples:
            if previous is not None and sample.mono > previous.mono and now.mono - sample.mono < seconds:
                elapsed = sample.mono - previous.mono
                points.append([round(sample.wall, 1), round((sample.requests - previous.requests) / elapsed, 2),
                               hit_ratio(sample.served - previous.served, sample.lookups - previous.lookups)])
            previous = sample
        return points


# -- Redis -----------------------------------------------------------------------------------------
def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=user + host))


def fetch_redis(url: str, timeout: float = _REDIS_TIMEOUT) -> dict:
    """PING and INFO (where the server has it: fakeredis has not) with short timeouts, no retry."""
    client = client_for(url, socket_timeout=timeout, connect_timeout=timeout,
                        retry=Retry(NoBackoff(), 0), lib_name=None, lib_version=None)
    try:
        started = time.monotonic()
        client.ping()
        result = {"reachable": True, "error": "", "ping_seconds": round(time.monotonic() - started, 6)}
        try:
            info = client.info()
        except ResponseError:
            info = {}
        keys = sum(value.get("keys", 0) for name, value in info.items()
                   if name.startswith("db") and isinstance(value, dict))
        result.update({
            "version": info.get("redis_version"),
            "used_memory_bytes": info.get("used_memory"),
            "maxmemory_bytes": info.get("maxmemory"),
            "maxmemory_policy": info.get("maxmemory_policy"),
            "evicted_keys": info.get("evicted_keys"),
            "keys": keys if info else client.dbsize(),
        })
        return result
    except (RedisError, OSError) as error:
        return {"reachable": False, "error": str(error) or type(error).__name__}
    finally:
        client.close()


# -- the document -------------------------------------------------------------------------------
@dataclass
class Stats:
    sampler: ProcessSampler = field(default_factory=ProcessSampler)
    history: History = field(default_factory=History)
    _sampled_at: float = float("-inf")
    _redis: dict | None = None
    _redis_at: float = float("-inf")
    _redis_url: str = ""

    def tick(self, master) -> None:
        """Called every turn of the master loop; samples at most once a second."""
        now = time.monotonic()
        if now - self._sampled_at < _SAMPLE_EVERY:
            return
        self._sampled_at = now
        self.history.record(counter_totals(master), now, time.time())
        server = _embedded(master)
        self.sampler.sample([os.getpid(), *master.workers, *([server.pid] if server else [])], now)

    def document(self, master) -> dict:
        now_mono, now_wall = time.monotonic(), time.time()
        sums = counter_totals(master)
        served, lookups = _cache_counts(sums)
        current = Sample(now_mono, now_wall, sums.get("requests", 0.0), served, lookups)
        workers = [self._worker(handle, now_mono) for handle in
                   sorted(master.workers.values(), key=lambda h: (h.generation, h.spawned_at))]
        ok, reason = health(master, now_mono)
        last_minute = self.history.window(60.0, current)
        return {
            "schema": SCHEMA,
            "time": round(now_wall, 3),
            "health": {"ok": ok, "reason": reason},
            "master": self._master(master, now_mono, now_wall, len(workers)),
            "totals": {**_traffic(sums), "active_connections": int(sums["active"]),
                       "idle_connections": sum(w["idle_connections"] for w in workers)},
            "rates": {"requests_per_second": self.history.window(_RATE_WINDOW, current)["requests_per_second"],
                      "requests_last_minute": last_minute["requests"],
                      "hit_ratio_last_minute": last_minute["hit_ratio"]},
            "cache": self._cache(master, workers, now_mono),
            "workers": workers,
            "history": {"interval_seconds": _SAMPLE_EVERY,
                        "points": self.history.series(_HISTORY_SHOWN, current)},
        }

    def _master(self, master, now: float, wall: float, running: int) -> dict:
        reloads = master.reloads
        return {
            "pid": os.getpid(),
            "started_at": round(master.started_at, 3),
            "uptime_seconds": round(wall - master.started_at, 1),
            "generation": master.generation,
            "config_path": master.config.path,
            "config_sha256": master.config.digest,
            "workers_wanted": master.wanted,
            "workers_running": running,
            "respawns": master.respawns,
            "early_deaths": len(master._deaths),
            "next_spawn_in_seconds": round(max(0.0, master._next_spawn - now), 2),
            "stopping": master.stopping,
            "reloads": {"count": reloads.count, "last_ok": reloads.ok,
                        "last_at": round(reloads.at, 3) if reloads.at else None,
                        "last_error": reloads.error},
            "process": self.sampler.get(os.getpid()),
        }

    def _worker(self, handle, now: float) -> dict:
        slot: Slot = handle.slot
        sums = slot.totals()
        beat = slot.get("heartbeat")
        return {
            "pid": handle.pid,
            "generation": handle.generation,
            "state": slot.state,
            "retiring": bool(handle.retire_deadline),
            "uptime_seconds": round(now - handle.spawned_at, 1),
            "heartbeat_age_seconds": round(now - beat, 3) if beat else None,
            "handler_threads": slot.threads,
            "active_connections": int(sums["active"]),
            "idle_connections": int(slot.get("idle_connections")),
            **_traffic(sums),
            "l1_entries": int(slot.get("l1_entries")),
            "l1_bytes": int(slot.get("l1_bytes")),
            "redis_up": bool(slot.get("redis_up")),
            "redis_rtt_seconds": round(slot.get("redis_rtt"), 6),
            "process": self.sampler.get(handle.pid),
        }

    def _cache(self, master, workers: list[dict], now: float) -> dict:
        configured = master.config.cache.redis_url
        url = (getattr(master, "cache_url", None) or "") if configured == "embedded" else configured
        backend = "off" if not configured else "embedded" if configured == "embedded" else "redis"
        rtts = [w["redis_rtt_seconds"] for w in workers if w["redis_up"]]
        server = _embedded(master)
        return {
            "backend": backend,
            "url": redact(url) if url else "",
            "server": {"kind": server.kind, "pid": server.pid, "process": self.sampler.get(server.pid)}
            if server else None,
            "l1_entries": sum(w["l1_entries"] for w in workers),
            "l1_bytes": sum(w["l1_bytes"] for w in workers),
            "workers_redis_up": sum(1 for w in workers if w["redis_up"]),
            "redis_rtt_seconds": round(sum(rtts) / len(rtts), 6) if rtts else None,
            "redis": self._redis_info(url, now) if url else None,
        }

    def _redis_info(self, url: str, now: float) -> dict:
        if url != self._redis_url or now - self._redis_at >= _REDIS_EVERY:
            self._redis = {**fetch_redis(url), "fetched_at": round(time.time(), 3)}
            self._redis_url, self._redis_at = url, now
        return self._redis


def _embedded(master):
    """The embedded cache server the master runs (None if none, or not started)."""
    server = getattr(master, "embedded", None)
    return server if server is not None and server.pid else None


def health(master, now: float) -> tuple[bool, str]:
    """(serving, why): serving when at least one worker is ready with a fresh heartbeat."""
    if master.stopping:
        return False, f"stopping ({master.stopping})"
    workers = list(master.workers.values())
    if not workers:
        wait = max(0.0, master._next_spawn - now)
        return False, "no worker is running" + (f" (respawn back-off: next in {wait:.1f}s)" if wait else "")
    stale = min(HEALTH_STALE, master.config.server.heartbeat_timeout)
    states = {"ready": 0, "silent": 0, "killed": 0, "booting": 0, "draining": 0, "stopped": 0}
    for handle in workers:
        state = handle.slot.state
        if handle.killed:
            state = "killed"
        elif state == "ready" and now - (handle.slot.get("heartbeat") or handle.spawned_at) > stale:
            state = "silent"
        states[state] += 1
    if states["ready"]:
        return True, f"{states['ready']} of {len(workers)} workers ready"
    detail = ", ".join(f"{count} {name}" for name, count in states.items() if count)
    silent = f" (silent = no heartbeat for over {stale:g}s)" if states["silent"] else ""
    return False, f"no worker is ready: {detail}{silent}"
