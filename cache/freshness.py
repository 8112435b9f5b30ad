"""Freshness and age (RFC 9111 §4.2), stale windows (RFC 5861) and the storage TTL they imply.

All times are epoch seconds passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import math

from cache.cache_control import Directives, response_directives
from cache.fields import Headers, delta_seconds, field_date, first_value, parse_http_date
from cache.model import Settings, StoredResponse
from cache.vary import field_values

__all__ = [
    "HEURISTIC_STATUSES", "corrected_initial_age", "current_age", "freshness_lifetime", "resident_time",
    "stale_forbidden", "stale_window", "time_to_live",
]

# RFC 9110 §15.1: the status codes that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})


def date_value(headers: Headers, response_time: float) -> float:
    """The Date field, or the time the response arrived when it has none (RFC 9110 §6.6.1)."""
    date = field_date(headers, "date")
    return response_time if date is None else date


def corrected_initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """RFC 9111 §4.2.3: the age of a response when it arrived."""
    apparent_age = max(0.0, response_time - date_value(headers, response_time))
    response_delay = max(0.0, response_time - request_time)
    age_value = delta_seconds(first_value(headers, "age")) or 0
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(stored: StoredResponse, now: float) -> float:
    """RFC 9111 §4.2.3: corrected_initial_age + resident_time."""
    return corrected_initial_age(stored.headers, stored.request_time, stored.response_time) + resident_time(stored, now)


def resident_time(stored: StoredResponse, now: float) -> float:
    """RFC 9111 §4.2.3: how long the response has been stored here (never negative)."""
    return max(0.0, now - stored.response_time)


def freshness_lifetime(stored: StoredResponse, settings: Settings) -> float:
    """RFC 9111 §4.2.1: s-maxage, else max-age, else Expires - Date, else a heuristic, else 0.

    An invalid or conflicting freshness directive makes the response stale (RFC 9111 §4.2.1).
    """
    directives, targeted = response_directives(stored.headers, settings.targeted_fields)
    if settings.shared and "s-maxage" in directives:
        return float(directives.seconds("s-maxage") or 0)  # RFC 9111 §5.2.2.10
    if "max-age" in directives:
        return float(directives.seconds("max-age") or 0)  # RFC 9111 §5.2.2.1
    if not targeted and field_values(stored.headers, "expires"):
        return _expires_lifetime(stored.headers, stored.response_time)
    heuristically_cacheable = stored.status in HEURISTIC_STATUSES or "public" in directives  # RFC 9111 §4.2.2
    return heuristic_lifetime(stored.headers, settings, stored.response_time) if heuristically_cacheable else 0.0


def _expires_lifetime(headers: Headers, response_time: float) -> float:
    values = {value.strip() for value in field_values(headers, "expires")}
    expires = parse_http_date(values.pop()) if len(values) == 1 else None
    if expires is None:
        return 0.0  # RFC 9111 §5.3: an invalid Expires (e.g. "0") means already expired
    return max(0.0, expires - date_value(headers, response_time))


def heuristic_lifetime(headers: Headers, settings: Settings, response_time: float) -> float:
    """RFC 9111 §4.2.2: a fraction of the time since Last-Modified, capped; 0 without Last-Modified."""
    last_modified = field_date(headers, "last-modified")
    if last_modified is None:
        return 0.0
    interval = date_value(headers, response_time) - last_modified
    return min(max(0.0, interval * settings.heuristic_fraction), settings.heuristic_max)


def stale_forbidden(directives: Directives, settings: Settings) -> bool:
    """RFC 9111 §4.2.4: directives under which a stale response is never served."""
    no_cache = directives.unqualified("no-cache")  # RFC 9111 §5.2.2.4
    must_revalidate = "must-revalidate" in directives  # RFC 9111 §5.2.2.2
    proxy_revalidate = settings.shared and "proxy-revalidate" in directives  # RFC 9111 §5.2.2.8
    s_maxage = settings.shared and "s-maxage" in directives  # RFC 9111 §5.2.2.10 implies proxy-revalidate
    return no_cache or must_revalidate or proxy_revalidate or s_maxage


def stale_window(directives: Directives, name: str, default: float) -> float:
    """Seconds a stale response stays usable under `name` (stale-while-revalidate, stale-if-error)."""
    if name not in directives:
        return default
    return float(directives.seconds(name) or 0)


def time_to_live(stored: StoredResponse, settings: Settings) -> int:
    """Seconds to keep a just stored or freshened response: fresh, then stale-usable, then `keep`."""
    directives, _ = response_directives(stored.headers, settings.targeted_fields)
    window = 0.0
    if not stale_forbidden(directives, settings):
        window = max(stale_window(directives, "stale-while-revalidate", settings.stale_while_revalidate),
                     stale_window(directives, "stale-if-error", settings.stale_if_error))
    age = corrected_initial_age(stored.headers, stored.request_time, stored.response_time)
    usable = max(0.0, freshness_lifetime(stored, settings) + window - age)
    validator = first_value(stored.headers, "etag") or first_value(stored.headers, "last-modified")
    return math.ceil(usable + (settings.keep if validator else 0.0))
