"""The functional check before each load run: right status, whole body, cache hit or not.

A row whose answer is wrong (status, body length) gets no wrk run: its error says why, so a broken
proxy costs no load time and a fast wrong answer is never reported as a result. A cache mismatch
(a hit row that misses, a no-store row served from cache) is a note shown in the row, which still
runs. Hit detection reads each server's usual header.
"""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass

from bench.procs import Reply, http_get

WARMUP_REQUESTS = 3


class CheckError(Exception):
    """The proxy's answer is wrong; str() is the row's error text."""


@dataclass(frozen=True)
class Scenario:
    key: str        # for --only
    title: str      # for the table
    path: str
    size: int
    cached: bool    # a hit row: served from the proxy's cache after warm-up
    varied: bool = False   # every request differs in a header (bench.wrk VARY_LUA)


def served_from_cache(headers: http.client.HTTPMessage) -> bool | None:
    """True/False from the cache header of ours, nginx, Squid or Varnish; None if there is none."""
    status = headers.get("Cache-Status")            # RFC 9211 (ours)
    if status is not None:
        return bool(re.search(r";\s*hit\b", status, re.IGNORECASE))
    nginx = headers.get("X-Cache-Status")
    if nginx is not None:
        return nginx.upper() in ("HIT", "STALE", "REVALIDATED")
    squid = headers.get("X-Cache")
    if squid is not None:
        return squid.upper().startswith("HIT")
    varnish = headers.get("X-Varnish")              # "<this xid> <xid that stored it>" on a hit
    if varnish is not None:
        return len(varnish.split()) == 2
    return None


def check(port: int, scenario: Scenario) -> list[str]:
    """Warm up and verify; return notes (non-fatal), raise CheckError when the answer is wrong."""
    reply = None
    for _ in range(WARMUP_REQUESTS if scenario.cached else 2):
        reply = _get(port, scenario)
    return _cache_notes(scenario, served_from_cache(reply.headers))


def _get(port: int, scenario: Scenario) -> Reply:
    try:
        reply = http_get(port, scenario.path)
    except (OSError, http.client.HTTPException) as error:
        raise CheckError(f"GET {scenario.path}: {error.__class__.__name__}: {error}") from None
    if reply.status != 200:
        raise CheckError(f"GET {scenario.path} -> {reply.status}, expected 200")
    if len(reply.body) != scenario.size:
        raise CheckError(f"GET {scenario.path}: body {len(reply.body)} bytes, expected {scenario.size}")
    return reply


def _cache_notes(scenario: Scenario, hit: bool | None) -> list[str]:
    """A cache mismatch is a note, not an error: the row still runs, flagged in the table."""
    if hit is None:
        return ["hit not verified (no cache status header)"] if scenario.cached else []
    if scenario.cached and not hit:
        return [f"NOT A HIT: {scenario.path} still a miss after {WARMUP_REQUESTS} requests"]
    if not scenario.cached and hit:
        return [f"WRONG: no-store {scenario.path} was served from cache"]
    return []
