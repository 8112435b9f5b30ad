"""cache.freshness: age (RFC 9111 §4.2.3) and freshness lifetime (§4.2.1, §4.2.2), injected clock."""

from __future__ import annotations

import pytest

from cache.fields import format_http_date
from cache.freshness import corrected_initial_age, current_age, freshness_lifetime, time_to_live
from cache.model import Settings, StoredResponse

T0 = 1_700_000_000.0


def date(offset: float) -> str:
    return format_http_date(T0 + offset)


@pytest.mark.parametrize("headers, request_time, response_time, expected", [
    pytest.param([], 0, 2, 2, id="§4.2.3 no Date, no Age: the response delay"),
    pytest.param([("Date", date(-10))], 0, 0, 10, id="§4.2.3 apparent_age"),
    pytest.param([("Date", date(10))], 0, 0, 0, id="§4.2.3 apparent_age is never negative (clock skew)"),
    pytest.param([("Date", date(-10)), ("Age", "30")], -2, 0, 32, id="§4.2.3 corrected_age_value wins"),
    pytest.param([("Date", date(-40)), ("Age", "30")], -2, 0, 40, id="§4.2.3 apparent_age wins"),
    pytest.param([("Age", "abc")], 0, 0, 0, id="§5.1 an invalid Age is ignored"),
    pytest.param([("Age", "5"), ("Age", "9")], 0, 0, 5, id="§5.1 the first Age counts"),
    pytest.param([("Date", "garbage")], -1, 0, 1, id="RFC 9110 §6.6.1 invalid Date: the receipt time"),
])
def test_corrected_initial_age(headers, request_time, response_time, expected):
    assert corrected_initial_age(headers, T0 + request_time, T0 + response_time) == expected


@pytest.mark.parametrize("now, expected", [
    pytest.param(0, 32, id="§4.2.3 resident_time 0"),
    pytest.param(30, 62, id="§4.2.3 + resident_time"),
    pytest.param(-5, 32, id="§4.2.3 a clock that went back adds nothing"),
])
def test_current_age(now, expected):
    stored = StoredResponse(200, [("Date", date(-10)), ("Age", "30")], T0 - 2, T0)
    assert current_age(stored, T0 + now) == expected


@pytest.mark.parametrize("status, headers, settings, expected", [
    pytest.param(200, [("Cache-Control", "s-maxage=5, max-age=9")], Settings(), 5, id="§5.2.2.10 s-maxage"),
    pytest.param(200, [("Cache-Control", "s-maxage=x, max-age=9")], Settings(), 0,
                 id="§4.2.1 invalid s-maxage is stale, no fallback"),
    pytest.param(200, [("Cache-Control", "max-age=9"), ("Expires", date(99))], Settings(), 9,
                 id="§5.2.2.1 max-age over Expires"),
    pytest.param(200, [("Date", date(0)), ("Expires", date(99))], Settings(), 99, id="§5.3 Expires - Date"),
    pytest.param(200, [("Date", date(0)), ("Expires", date(-99))], Settings(), 0, id="§5.3 Expires in the past"),
    pytest.param(200, [("Date", date(0)), ("Expires", date(99)), ("Expires", date(9))], Settings(), 0,
                 id="§4.2.1 conflicting Expires is stale"),
    pytest.param(200, [("Date", date(0)), ("Last-Modified", date(-50))], Settings(), 5, id="§4.2.2 heuristic"),
    pytest.param(200, [("Date", date(0)), ("Last-Modified", date(50))], Settings(), 0,
                 id="§4.2.2 Last-Modified after Date"),
    pytest.param(500, [("Date", date(0)), ("Last-Modified", date(-50))], Settings(), 0,
                 id="§4.2.2 not heuristically cacheable"),
    pytest.param(200, [("CDN-Cache-Control", "max-age=7"), ("Cache-Control", "max-age=9")],
                 Settings(cdn_cache_control="CDN-Cache-Control"), 7, id="RFC 9213 targeted max-age"),
])
def test_freshness_lifetime(status, headers, settings, expected):
    assert freshness_lifetime(StoredResponse(status, headers, T0, T0), settings) == expected


@pytest.mark.parametrize("headers, settings, expected", [
    pytest.param([("Cache-Control", "max-age=60")], Settings(), 60, id="freshness only"),
    pytest.param([("Cache-Control", "max-age=60"), ("Age", "70")], Settings(stale_if_error=30), 20,
                 id="RFC 5861 §4 a window partly used on arrival"),
    pytest.param([("Cache-Control", "max-age=60, no-cache, stale-if-error=30"), ("ETag", '"a"')],
                 Settings(keep=5), 65, id="§4.2.4 no-cache: no stale window, keep applies"),
    pytest.param([("Cache-Control", "max-age=1.5")], Settings(), 0, id="§4.2.1 invalid max-age: nothing"),
])
def test_time_to_live(headers, settings, expected):
    assert time_to_live(StoredResponse(200, [("Date", date(0)), *headers], T0, T0), settings) == expected
