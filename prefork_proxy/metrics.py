"""/metrics: the /stats document in Prometheus text exposition, rendered by prometheus_client.

# design: a custom Collector over the same document /stats serves (one source of truth), in a
# registry of its own (the default registry's process collectors describe the master only). Counters
# include the requests of workers that are gone, so they only ever grow while the master lives.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, exposition, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .stats import CACHE_RESULTS

__all__ = ["CONTENT_TYPE", "StatsCollector", "render"]

# generate_latest() writes text format 0.0.4 (newer clients call 1.0.0 "latest", with other escaping)
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", CONTENT_TYPE_LATEST)
P = "prefork_proxy_"

# (stats field in totals, metric name, help)
_TOTALS = (
    ("requests", "requests_total", "Requests served (all workers, including replaced ones)."),
    ("connections", "connections_total", "Client connections accepted."),
    ("bytes_in", "received_bytes_total", "Bytes received from clients."),
    ("bytes_out", "sent_bytes_total", "Bytes sent to clients."),
    ("upstream_errors", "upstream_errors_total", "Requests that failed at the origin (502)."),
    ("upstream_timeouts", "upstream_timeouts_total", "Requests the origin did not answer in time (504)."),
    ("client_errors", "client_errors_total", "Requests refused as the client's fault (4xx from the proxy)."),
)
# (field in a worker's `process`, metric name, kind, help)
_PROCESS = (
    ("rss_bytes", "resident_memory_bytes", "gauge", "Resident set size."),
    ("uss_bytes", "unique_memory_bytes", "gauge", "Unique set size (sampled every 10 s)."),
    ("pss_bytes", "proportional_memory_bytes", "gauge", "Proportional set size (sampled every 10 s)."),
    ("cpu_seconds", "cpu_seconds_total", "counter", "User and system CPU time."),
    ("threads", "threads", "gauge", "OS threads."),
    ("open_fds", "open_fds", "gauge", "Open file descriptors."),
)


class StatsCollector(Collector):
    """Turns a /stats document (from `source()`) into metric families."""

    def __init__(self, source: Callable[[], dict]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        doc = self.source()
        totals, master = doc["totals"], doc["master"]
        for key, name, text in _TOTALS:
            yield CounterMetricFamily(P + name, text, value=totals[key])
        yield _labelled(CounterMetricFamily, "cache_requests_total", "Requests by cache outcome.",
                        "result", {result: totals["cache"][result] for result in CACHE_RESULTS})
        yield _histogram(totals["latency"])
        yield _labelled(GaugeMetricFamily, "connections", "Client connections open now.", "state",
                        {"active": totals["active_connections"], "idle": totals["idle_connections"]})
        yield from _master(doc, master)
        yield from _workers(doc["workers"])
        yield from _cache(doc["cache"])


def _labelled(kind, name: str, text: str, label: str, values: dict) -> Metric:
    family = kind(P + name, text, labels=[label])
    for value, number in values.items():
        family.add_metric([str(value)], number)
    return family


def _gauge(name: str, text: str, value: float) -> Metric:
    return GaugeMetricFamily(P + name, text, value=value)


def _histogram(latency: dict) -> Metric:
    family = HistogramMetricFamily(P + "request_duration_seconds",
                                   "Time from a request head to the end of its response.", labels=[])
    buckets = [(str(bound), count) for bound, count in latency["buckets"]]
    family.add_metric([], buckets, sum_value=latency["sum_seconds"])
    return family


def _master(doc: dict, master: dict) -> Iterator[Metric]:
    reloads = master["reloads"]
    yield _gauge("up", "1 when at least one worker is ready (as /healthz).", 1 if doc["health"]["ok"] else 0)
    yield _gauge("start_time_seconds", "When the master started (unix time).", master["started_at"])
    yield _gauge("generation", "Worker generation (grows by one per successful reload).", master["generation"])
    yield _gauge("workers_wanted", "Workers the master keeps running.", master["workers_wanted"])
    yield CounterMetricFamily(P + "worker_respawns_total", "Workers replaced after an unexpected exit.",
                              value=master["respawns"])
    yield CounterMetricFamily(P + "config_reloads_total", "Reloads attempted (HUP).", value=reloads["count"])
    yield _gauge("config_last_reload_successful", "1 if the last reload succeeded (or none was tried).",
                 1 if reloads["last_ok"] else 0)
    yield _gauge("config_last_reload_timestamp_seconds", "When the last reload was tried (0 = never).",
                 reloads["last_at"] or 0)
    states: dict[str, int] = {"booting": 0, "ready": 0, "draining": 0, "stopped": 0}
    for worker in doc["workers"]:
        states[worker["state"]] = states.get(worker["state"], 0) + 1
    yield _labelled(GaugeMetricFamily, "workers", "Workers running, by state.", "state", states)
    process = master["process"] or {}
    for key, name, kind, text in _PROCESS:
        if process.get(key) is not None:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(P + "master_" + name, "Master: " + text, value=process[key])


def _workers(workers: list[dict]) -> Iterator[Metric]:
    for key, name, kind, text in _PROCESS:
        family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
            P + "worker_" + name, "Per worker: " + text, labels=["worker"])
        for worker in workers:
            value = (worker["process"] or {}).get(key)
            if value is not None:
                family.add_metric([str(worker["pid"])], value)
        yield family
    requests = CounterMetricFamily(P + "worker_requests_total", "Per worker: requests served.",
                                   labels=["worker"])
    for worker in workers:
        requests.add_metric([str(worker["pid"])], worker["requests"])
    yield requests


def _cache(cache: dict) -> Iterator[Metric]:
    yield _gauge("cache_l1_entries", "Objects in the workers' in-process caches (sum).", cache["l1_entries"])
    yield _gauge("cache_l1_bytes", "Bytes in the workers' in-process caches (sum).", cache["l1_bytes"])
    server = (cache["server"] or {}).get("process") or {}
    if server:
        yield _gauge("cache_server_resident_memory_bytes", "The embedded cache server's resident set size.",
                     server["rss_bytes"])
    redis = cache["redis"]
    if redis is None:
        return
    yield _gauge("redis_up", "1 when the master reached Redis on its last check.", 1 if redis["reachable"] else 0)
    fields = (("used_memory_bytes", "redis_used_memory_bytes", "Redis used_memory."),
              ("maxmemory_bytes", "redis_maxmemory_bytes", "Redis maxmemory (0 = no limit)."),
              ("keys", "redis_keys", "Keys in the Redis database(s)."))
    for key, name, text in fields:
        if redis.get(key) is not None:
            yield _gauge(name, text, redis[key])
    if redis.get("evicted_keys") is not None:
        yield CounterMetricFamily(P + "redis_evicted_keys_total", "Redis evicted_keys.", value=redis["evicted_keys"])


def render(document: dict) -> bytes:
    """The document as Prometheus text exposition (format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(lambda: document))
    return generate_latest(registry)
