"""The operations modules' pure parts, without processes: history windows, ratios, health reasons,
the allow-list, URL redaction, the Prometheus rendering of a full document, the terminal table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prefork_proxy import metrics, statscmd
from prefork_proxy.admin import allowed, parse_allow
from prefork_proxy.stats import History, Sample, health, hit_ratio, redact
from workers.scoreboard import Slot


def sums(requests: float, hit: float = 0, miss: float = 0, stale: float = 0, revalidated: float = 0,
         bypass: float = 0) -> dict[str, float]:
    return {"requests": requests, "cache_hit": hit, "cache_miss": miss, "cache_stale": stale,
            "cache_revalidated": revalidated, "cache_bypass": bypass}


def test_hit_ratio_counts_stale_and_revalidated_as_served_and_ignores_bypass():
    history = History()
    history.record(sums(10, hit=2, miss=2, stale=1, revalidated=1, bypass=50), 0.0, 1000.0)
    now = history.samples[-1]
    assert (now.served, now.lookups) == (4, 6)
    assert hit_ratio(0, 0) is None and hit_ratio(1, 3) == 0.3333


def test_windows_and_series():
    history = History(size=100)
    for second in range(0, 91):                       # 2 requests/s, 1 hit and 1 miss each second
        history.record(sums(2 * second, hit=second, miss=second), float(second), 1000.0 + second)
    now = history.samples[-1]
    minute = history.window(60.0, now)
    assert minute == {"seconds": 60.0, "requests": 120, "requests_per_second": 2.0, "hit_ratio": 0.5}
    assert history.window(5.0, now)["requests_per_second"] == 2.0
    points = history.series(10.0, now)
    assert [p[0] for p in points] == [1081.0 + i for i in range(10)]
    assert all(p[1:] == [2.0, 0.5] for p in points)


def test_a_window_longer_than_the_history_uses_what_there_is():
    history = History()
    history.record(sums(0), 0.0, 0.0)
    history.record(sums(30), 10.0, 10.0)
    assert history.window(60.0, history.samples[-1])["requests"] == 30
    assert history.window(60.0, Sample(10.0, 10.0, 30, 0, 0))["hit_ratio"] is None


@dataclass
class FakeHandle:
    slot: Slot
    spawned_at: float = field(default_factory=time.monotonic)
    killed: bool = False
    retire_deadline: float = 0.0


def fake_master(*states: str, stopping: str = "", next_spawn: float = 0.0, beat_age: float = 0.0):
    handles = {}
    for pid, state in enumerate(states, start=100):
        slot = Slot(1)
        slot.state = state
        slot.set("heartbeat", time.monotonic() - beat_age)
        handles[pid] = FakeHandle(slot)
    config = SimpleNamespace(server=SimpleNamespace(heartbeat_timeout=10.0))
    return SimpleNamespace(workers=handles, stopping=stopping, _next_spawn=next_spawn, config=config)


@pytest.mark.parametrize("states, options, expected", [
    (("ready", "booting"), {}, (True, "1 of 2 workers ready")),
    (("booting", "booting"), {}, (False, "no worker is ready: 2 booting")),
    (("ready",), {"beat_age": 3.0}, (False, "no worker is ready: 1 silent (silent = no heartbeat for over 2s)")),
    (("ready",), {"stopping": "graceful"}, (False, "stopping (graceful)")),
    ((), {}, (False, "no worker is running")),
], ids=["ready", "booting", "silent", "stopping", "none"])
def test_health_reasons(states, options, expected):
    assert health(fake_master(*states, **options), time.monotonic()) == expected


def test_health_names_the_respawn_back_off():
    master = fake_master(next_spawn=time.monotonic() + 4.0)
    ok, reason = health(master, time.monotonic())
    assert not ok and reason.startswith("no worker is running (respawn back-off: next in ")


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("::2", False), ("fe80::1%eth0", False), ("not an ip", False),
])
def test_allow_list(address, expected):
    assert allowed(address, parse_allow(["127.0.0.0/8", "::1/128"])) is expected


def test_redact():
    assert redact("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("rediss://user:pw@host") == "rediss://user:***@host"
    assert redact("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"


def document() -> dict:
    latency = {"count": 3, "sum_seconds": 0.5, "buckets": [[0.1, 1], [1.0, 3], ["+Inf", 3]]}
    process = {"cpu_percent": 1.5, "cpu_seconds": 2.0, "rss_bytes": 30 << 20, "uss_bytes": None, "pss_bytes": None,
               "threads": 5, "open_fds": 12, "ctx_switches_voluntary": 1, "ctx_switches_involuntary": 2}
    cache = {"hit": 2, "miss": 1, "stale": 0, "revalidated": 0, "bypass": 0, "uncacheable": 0}
    traffic = {"requests": 3, "connections": 2, "bytes_in": 300, "bytes_out": 4000, "upstream_errors": 0,
               "upstream_timeouts": 1, "client_errors": 0, "cache": cache, "hit_ratio": 0.6667, "latency": latency}
    worker = {"pid": 42, "generation": 2, "state": "ready", "retiring": True, "uptime_seconds": 3725.0,
              "heartbeat_age_seconds": 0.1, "handler_threads": 4, "active_connections": 1, "idle_connections": 2,
              **traffic, "l1_entries": 5, "l1_bytes": 5000, "redis_up": True, "redis_rtt_seconds": 0.0003,
              "process": process}
    redis = {"reachable": True, "error": "", "ping_seconds": 0.0002, "version": "7.0.15",
             "used_memory_bytes": 2 << 20, "maxmemory_bytes": 256 << 20, "maxmemory_policy": "allkeys-lru",
             "evicted_keys": 7, "keys": 99, "fetched_at": 1.0}
    return {
        "schema": 1, "time": 2000.0, "health": {"ok": True, "reason": "1 of 1 workers ready"},
        "master": {"pid": 41, "started_at": 1000.0, "uptime_seconds": 1000.0, "generation": 2,
                   "config_path": "proxy.toml", "config_sha256": "ab" * 32, "workers_wanted": 1,
                   "workers_running": 1, "respawns": 3, "early_deaths": 0, "next_spawn_in_seconds": 0.0,
                   "stopping": "", "reloads": {"count": 1, "last_ok": False, "last_at": 1500.0,
                                               "last_error": "proxy.toml: admin.bind: cannot listen"},
                   "process": process},
        "totals": {**traffic, "active_connections": 1, "idle_connections": 2},
        "rates": {"requests_per_second": 0.5, "requests_last_minute": 3, "hit_ratio_last_minute": 1.0},
        "cache": {"backend": "redis", "url": "redis://x", "server": None, "l1_entries": 5, "l1_bytes": 5000,
                  "workers_redis_up": 1, "redis_rtt_seconds": 0.0003, "redis": redis},
        "workers": [worker],
        "history": {"interval_seconds": 1.0, "points": []},
    }


def test_metrics_of_a_full_document_parse():
    found = {f.name: f for f in text_string_to_metric_families(metrics.render(document()).decode())}
    value = {s.name + str(sorted(s.labels.items())): s.value for f in found.values() for s in f.samples}
    assert value["prefork_proxy_requests_total[]"] == 3
    assert value["prefork_proxy_cache_requests_total[('result', 'hit')]"] == 2
    assert value["prefork_proxy_request_duration_seconds_bucket[('le', '0.1')]"] == 1
    assert value["prefork_proxy_request_duration_seconds_sum[]"] == 0.5
    assert value["prefork_proxy_worker_resident_memory_bytes[('worker', '42')]"] == 30 << 20
    assert value["prefork_proxy_config_last_reload_successful[]"] == 0
    assert value["prefork_proxy_redis_evicted_keys_total[]"] == 7
    assert value["prefork_proxy_redis_keys[]"] == 99
    assert "prefork_proxy_worker_unique_memory_bytes" not in {s.name for f in found.values() for s in f.samples}


def test_the_table_of_a_full_document():
    text = statscmd.render(document())
    assert "2 respawns" not in text and "3 respawns" in text
    assert "last FAILED at" in text and "admin.bind: cannot listen" in text
    assert "hit ratio 66.7% (last minute 100.0%)" in text
    assert "redis     up, ping 0.20 ms, 99 keys, memory 2.0 MiB of 256.0 MiB (allkeys-lru), 7 evicted" in text
    row = text.splitlines()[-2].split()
    assert row[:4] == ["42", "2", "ready*", "1h02m"]
    assert text.splitlines()[-1].startswith("* retiring")


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (65, "1m05s"), (3725, "1h02m"), (90000, "1d01h")])
def test_duration(seconds, text):
    assert statscmd.duration(seconds) == text


@pytest.mark.parametrize("count, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")])
def test_size(count, text):
    assert statscmd.size(count) == text
