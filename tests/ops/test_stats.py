"""/stats and /metrics against a running 2-worker proxy, before and after real traffic.

Contract: the request counters move by exactly the requests sent, per worker and in total, in
/stats and in /metrics alike; a SIGKILLed worker's requests stay in the totals; /metrics parses
with prometheus_client's own parser; every documented field is there; the master stays
single-threaded; Redis figures come from INFO when the server has it, and a dead or silent Redis
costs /stats a fraction of a second, never a hang.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import Admin, admin_config, traffic
from support.redis_server import redis_server, redis_server_binary
from support.wait import free_port, require, wait_until

SENT = 25
WORKER_FIELDS = {"pid", "generation", "state", "retiring", "uptime_seconds", "heartbeat_age_seconds",
                 "handler_threads", "active_connections", "idle_connections", "requests", "connections",
                 "bytes_in", "bytes_out", "upstream_errors", "upstream_timeouts", "client_errors", "cache",
                 "hit_ratio", "latency", "l1_entries", "l1_bytes", "redis_up", "redis_rtt_seconds", "process"}
PROCESS_FIELDS = {"cpu_percent", "cpu_seconds", "rss_bytes", "uss_bytes", "pss_bytes", "threads", "open_fds",
                  "ctx_switches_voluntary", "ctx_switches_involuntary"}


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family, suffix: str = "", **labels) -> float:
    values = [s.value for s in family.samples if s.name == family.name + suffix and s.labels == labels]
    assert len(values) == 1, (family.name, suffix, labels, family.samples)
    return values[0]


def per_worker(doc: dict) -> dict[int, int]:
    return {worker["pid"]: worker["requests"] for worker in doc["workers"]}


def test_the_document_has_every_documented_field(ops_proxy):
    proxy, admin, _ = ops_proxy
    doc = admin.stats()
    assert set(doc) == {"schema", "time", "health", "master", "totals", "rates", "cache", "workers", "history"}
    assert doc["schema"] == 1 and doc["health"] == {"ok": True, "reason": "2 of 2 workers ready"}
    master = doc["master"]
    assert master["pid"] == proxy.master_pid
    assert master["config_path"] == str(proxy.config_path)
    assert (master["workers_wanted"], master["workers_running"], master["generation"]) == (2, 2, 1)
    assert master["reloads"] == {"count": 0, "last_ok": True, "last_at": None, "last_error": ""}
    assert sorted(w["pid"] for w in doc["workers"]) == proxy.worker_pids()
    for worker in doc["workers"]:
        assert set(worker) == WORKER_FIELDS
        assert worker["state"] == "ready" and worker["generation"] == 1
        assert set(worker["cache"]) == {"hit", "miss", "stale", "revalidated", "bypass", "uncacheable"}
    wait_until(lambda: all(w["process"] for w in admin.stats()["workers"]), 5, "psutil figures of every worker")
    for worker in admin.stats()["workers"]:
        assert set(worker["process"]) == PROCESS_FIELDS
        assert worker["process"]["rss_bytes"] > 1 << 20 and worker["process"]["open_fds"] > 3
    assert doc["cache"]["backend"] == "off" and doc["cache"]["redis"] is None


def test_the_master_stays_single_threaded(ops_proxy):
    _, admin, _ = ops_proxy
    process = wait_until(lambda: admin.stats()["master"]["process"], 5, "the master's psutil figures")
    assert process["threads"] == 1, "the master forks: it must never start a thread"


def test_counts_move_by_exactly_the_requests_sent(ops_proxy):
    proxy, admin, origin = ops_proxy
    before_total = admin.settled_requests()
    before = admin.stats()
    traffic(proxy, origin, SENT)
    after_total = admin.wait_requests(before_total + SENT)
    after = admin.stats()
    assert after_total == before_total + SENT
    moved = {pid: count - per_worker(before).get(pid, 0) for pid, count in per_worker(after).items()}
    assert sum(moved.values()) == SENT, moved
    latency = after["totals"]["latency"]
    assert latency["count"] == after_total and latency["buckets"][-1] == ["+Inf", after_total]
    assert latency["sum_seconds"] > 0
    assert after["totals"]["bytes_in"] > before["totals"]["bytes_in"]
    assert after["rates"]["requests_last_minute"] >= SENT


def test_metrics_parse_and_agree_with_stats(ops_proxy):
    proxy, admin, origin = ops_proxy
    traffic(proxy, origin, 3)
    expected = admin.wait_requests(admin.settled_requests())
    found = families(admin.metrics())
    assert sample(found["prefork_proxy_requests"], "_total") == expected
    histogram = found["prefork_proxy_request_duration_seconds"]
    assert histogram.type == "histogram"
    assert sample(histogram, "_count") == expected
    assert sample(histogram, "_bucket", le="+Inf") == expected
    bounds = [s for s in histogram.samples if s.name.endswith("_bucket")]
    assert [s.value for s in bounds] == sorted(s.value for s in bounds), "buckets must be cumulative"
    cache = found["prefork_proxy_cache_requests"]
    assert cache.type == "counter"
    assert {s.labels["result"] for s in cache.samples if s.name.endswith("_total")} == {
        "hit", "miss", "stale", "revalidated", "bypass", "uncacheable"}
    rss = found["prefork_proxy_worker_resident_memory_bytes"]
    assert {int(s.labels["worker"]) for s in rss.samples} == set(proxy.worker_pids())
    assert all(s.value > 0 for s in rss.samples)
    assert sample(found["prefork_proxy_config_last_reload_successful"]) == 1
    assert sample(found["prefork_proxy_up"]) == 1
    assert sample(found["prefork_proxy_workers"], state="ready") == 2
    assert sample(found["prefork_proxy_master_threads"]) == 1


def test_a_killed_workers_requests_stay_in_the_totals(make_proxy, origin):
    proxy = make_proxy(admin_config(workers=2))
    admin = Admin(proxy)
    before = admin.settled_requests()
    traffic(proxy, origin, SENT)
    assert admin.wait_requests(before + SENT) == before + SENT
    counts = per_worker(admin.stats())
    victim = max(counts, key=counts.get)
    assert counts[victim] > 0
    os.kill(victim, signal.SIGKILL)
    survivors = proxy.wait_workers(2, exclude={victim})
    doc = wait_until(lambda: (d := admin.stats()) and victim not in per_worker(d) and d, 5, "the victim reaped")
    assert doc["totals"]["requests"] == before + SENT
    assert doc["master"]["respawns"] == 1
    assert sorted(per_worker(doc)) == survivors
    assert sample(families(admin.metrics())["prefork_proxy_requests"], "_total") == before + SENT
    traffic(proxy, origin, 2)
    assert admin.wait_requests(before + SENT + 2) == before + SENT + 2


def test_history_and_rates_follow_the_traffic(ops_proxy):
    proxy, admin, origin = ops_proxy
    traffic(proxy, origin, 10)
    doc = wait_until(lambda: (d := admin.stats()) and any(p[1] > 0 for p in d["history"]["points"]) and d,
                     5, "a history point with traffic")
    points = doc["history"]["points"]
    assert doc["history"]["interval_seconds"] == 1.0
    assert all(len(point) == 3 for point in points)
    assert [p[0] for p in points] == sorted(p[0] for p in points)
    assert all(doc["time"] - p[0] <= 301 for p in points)


def test_redis_figures_come_from_info(make_proxy):
    require(redis_server_binary() is not None, "redis-server is not installed (make sysdeps)")
    with redis_server() as server:
        client = server.client()
        client.mset({"ops:a": 1, "ops:b": 2, "ops:c": 3})
        proxy = make_proxy(admin_config(workers=1, cache={"redis_url": server.url}))
        cache = Admin(proxy).stats()["cache"]
        assert cache["backend"] == "redis" and cache["url"] == server.url
        redis = cache["redis"]
        assert redis["reachable"] is True and redis["error"] == ""
        assert redis["keys"] >= 3 and redis["version"]
        assert redis["used_memory_bytes"] > 0 and redis["maxmemory_policy"]
        assert redis["evicted_keys"] >= 0 and redis["maxmemory_bytes"] >= 0
        found = families(Admin(proxy).metrics())
        assert sample(found["prefork_proxy_redis_up"]) == 1
        assert sample(found["prefork_proxy_redis_keys"]) >= 3


def test_a_password_in_the_redis_url_is_not_shown(make_proxy):
    port = free_port()
    proxy = make_proxy(admin_config(workers=1, cache={"redis_url": f"redis://user:s3cret@127.0.0.1:{port}/0"}))
    cache = Admin(proxy).stats()["cache"]
    assert cache["url"] == f"redis://user:***@127.0.0.1:{port}/0"
    assert "s3cret" not in Admin(proxy).get("/stats")[2].decode()
    assert cache["redis"]["reachable"] is False and cache["redis"]["error"]


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_redis_never_stalls_the_master(make_proxy, kind):
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)   # accepts in the kernel, never answers
    try:
        port = silent.getsockname()[1] if kind == "silent" else free_port()
        proxy = make_proxy(admin_config(workers=1, cache={"redis_url": f"redis://127.0.0.1:{port}"}))
        admin = Admin(proxy)
        started = time.monotonic()
        redis = admin.stats()["cache"]["redis"]
        assert time.monotonic() - started < 1.5
        assert redis["reachable"] is False and redis["error"]
        for _ in range(5):      # the figure is cached: no second wait within a few seconds
            started = time.monotonic()
            assert admin.healthz()[0] == 200 and admin.stats()["cache"]["redis"]["reachable"] is False
            assert time.monotonic() - started < 0.5
    finally:
        silent.close()


def test_the_embedded_server_is_shown(make_proxy):
    proxy = make_proxy(admin_config(workers=1, cache={"redis_url": "embedded"}))
    admin = Admin(proxy)
    cache = admin.stats()["cache"]
    assert cache["backend"] == "embedded"
    if cache["server"] is None:     # a master that does not run the embedded server (yet): nothing to ask
        assert cache["redis"] is None
        return
    assert cache["server"]["kind"] in ("redis-server", "fakeredis")
    assert cache["server"]["pid"] in [child.pid for child in proxy.children()]
    assert cache["url"].startswith(("redis://127.0.0.1:", "unix://"))
    assert cache["redis"]["reachable"] is True and cache["redis"]["keys"] >= 0
    server = wait_until(lambda: admin.stats()["cache"]["server"]["process"], 5, "the server's psutil figures")
    assert server["rss_bytes"] > 0
