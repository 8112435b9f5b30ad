"""cache.policy: storing, reuse, validation, invalidation — table-driven, with an injected clock.

Every case's id cites the rule it checks. Times are offsets from T0 (epoch seconds); no test reads
the clock.
"""

from __future__ import annotations

import pytest

from cache.fields import format_http_date
from cache.policy import (DontStore, Forward, Fresh, NoMatch, OnlyIfCachedMiss, Revalidate, ServeOnce, ServeStale,
                          Settings, Store, StoredResponse, conditional_reply, decide_reuse, decide_store, freshen,
                          freshen_head, invalidations, with_age)

T0 = 1_700_000_000.0
DEFAULT = Settings()


def date(offset: float = 0) -> str:
    return format_http_date(T0 + offset)


def store(headers, *, method="GET", request=(), status=200, settings=DEFAULT, delay=0.0):
    """decide_store for a response whose request left at T0 and which arrived `delay` later."""
    return decide_store(method, list(request), status, list(headers), settings,
                        request_time=T0, response_time=T0 + delay)


def stored(headers, *, request=(), status=200) -> StoredResponse:
    """A response stored at T0 (kept whatever its freshness, to judge it later)."""
    verdict = store(headers, request=request, status=status, settings=Settings(keep=10**6))
    assert isinstance(verdict, Store), verdict
    return verdict.response


def names(headers) -> set[str]:
    return {name.lower() for name, _ in headers}


# --- Storing: RFC 9111 §3 ------------------------------------------------------------------------

FRESH_60 = [("Date", date()), ("Cache-Control", "max-age=60")]
CDN = Settings(cdn_cache_control="CDN-Cache-Control")
ACME = Settings(cdn_cache_control="Acme-Cache-Control")


@pytest.mark.parametrize("method, request_headers, status, headers, settings, expected", [
    pytest.param("GET", [], 200, FRESH_60, DEFAULT, 60, id="§3 GET 200 max-age is stored"),
    pytest.param("HEAD", [], 200, FRESH_60, DEFAULT, "head", id="§4.3.5 a HEAD response only freshens"),
    pytest.param("POST", [], 200, FRESH_60, DEFAULT, "method", id="§3 method not understood"),
    pytest.param("get", [], 200, FRESH_60, DEFAULT, "method", id="RFC 9110 §9.1 methods are case-sensitive"),
    pytest.param("GET", [], 103, FRESH_60, DEFAULT, "status-not-final", id="§3 final status only"),
    pytest.param("GET", [], 206, FRESH_60, DEFAULT, "partial", id="§3.3 never a 206 as a full response"),
    pytest.param("GET", [], 304, FRESH_60, DEFAULT, "not-modified", id="§4.3.4 a 304 only freshens"),
    pytest.param("GET", [], 299, [("Cache-Control", "max-age=60, must-understand, no-store")], DEFAULT,
                 "must-understand", id="§5.2.2.3 must-understand, status not understood"),
    pytest.param("GET", [], 200, [("Cache-Control", "max-age=60, must-understand, no-store")], DEFAULT,
                 60, id="§5.2.2.3 must-understand overrides no-store"),
    pytest.param("GET", [], 200, [*FRESH_60, ("Cache-Control", "no-store")], DEFAULT, "no-store",
                 id="§5.2.2.5 response no-store"),
    pytest.param("GET", [], 200, [("Cache-Control", "max-age=60, NO-STORE")], DEFAULT, "no-store",
                 id="§5.2 directive names are case-insensitive"),
    pytest.param("GET", [("Cache-Control", "no-store")], 200, FRESH_60, DEFAULT, "request-no-store",
                 id="§5.2.1.5 request no-store"),
    pytest.param("GET", [], 200, [("Cache-Control", "private, max-age=60")], DEFAULT, "private",
                 id="§5.2.2.7 private in a shared cache"),
    pytest.param("GET", [], 200, [("Cache-Control", "private, max-age=60")], Settings(shared=False), 60,
                 id="§5.2.2.7 private in a private cache"),
    pytest.param("GET", [], 200, [("Cache-Control", 'private="x-user", max-age=60')], DEFAULT, 60,
                 id="§5.2.2.7 qualified private stores the rest"),
    pytest.param("GET", [("Authorization", "Basic eA==")], 200, FRESH_60, DEFAULT, "authorization",
                 id="§3.5 Authorization without explicit permission"),
    pytest.param("GET", [("Authorization", "Basic eA==")], 200, [("Cache-Control", "public, max-age=60")],
                 DEFAULT, 60, id="§3.5 Authorization with public"),
    pytest.param("GET", [("Authorization", "Basic eA==")], 200, [("Cache-Control", "s-maxage=60")],
                 DEFAULT, 60, id="§3.5 Authorization with s-maxage"),
    pytest.param("GET", [("Authorization", "Basic eA==")], 200,
                 [("Cache-Control", "must-revalidate, max-age=60")], DEFAULT, 60,
                 id="§3.5 Authorization with must-revalidate"),
    pytest.param("GET", [("Authorization", "Basic eA==")], 200, FRESH_60, Settings(shared=False), 60,
                 id="§3.5 applies to shared caches only"),
    pytest.param("GET", [], 200, [*FRESH_60, ("Set-Cookie", "a=1")], DEFAULT, "set-cookie",
                 id="setting: Set-Cookie responses are not stored"),
    pytest.param("GET", [], 200, [*FRESH_60, ("Set-Cookie", "a=1")], Settings(store_set_cookie=True), 60,
                 id="setting: store_set_cookie allows them"),
    pytest.param("GET", [], 200, [("Cache-Control", 'max-age=60, private="Set-Cookie"'), ("Set-Cookie", "a=1")],
                 DEFAULT, 60, id="§5.2.2.7 private=set-cookie strips it, then storable"),
    pytest.param("GET", [], 200, [("Cache-Control", 'max-age=60, no-cache="set-cookie"'), ("Set-Cookie", "a=1")],
                 DEFAULT, 60, id="§5.2.2.4 no-cache=set-cookie strips it, then storable"),
    pytest.param("GET", [], 302, [("Date", date())], DEFAULT, "no-freshness-info",
                 id="§3 no explicit freshness and not heuristically cacheable"),
    pytest.param("GET", [], 302, [("Date", date()), ("Expires", date(120))], DEFAULT, 120,
                 id="§3 Expires makes a 302 storable"),
    pytest.param("GET", [], 302, [("Date", date()), ("Cache-Control", "public"), ("Last-Modified", date(-1000))],
                 DEFAULT, 100, id="§4.2.2 public allows a heuristic on any status"),
    pytest.param("GET", [], 200, [("Date", date()), ("Last-Modified", date(-1000))], DEFAULT, 100,
                 id="§4.2.2 heuristic 10% of Date - Last-Modified"),
    pytest.param("GET", [], 404, [("Date", date()), ("Last-Modified", date(-1000))], DEFAULT, 100,
                 id="§4.2.2 404 is heuristically cacheable"),
    pytest.param("GET", [], 200, [("Date", date()), ("Last-Modified", date(-1000))],
                 Settings(heuristic_fraction=0.5), 500, id="§4.2.2 heuristic fraction is a setting"),
    pytest.param("GET", [], 200, [("Date", date()), ("Last-Modified", date(-100 * 86400))], DEFAULT, 86400,
                 id="§4.2.2 heuristic capped at one day by default"),
    pytest.param("GET", [], 200, [("Date", date()), ("Last-Modified", date(-100 * 86400))],
                 Settings(heuristic_max=3600), 3600, id="§4.2.2 heuristic cap is a setting"),
    pytest.param("GET", [], 200, [("Date", date())], DEFAULT, "stale-on-arrival",
                 id="§4.2.2 no Last-Modified: no heuristic lifetime"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=0")], DEFAULT,
                 "stale-on-arrival", id="§4.2 max-age=0 without validator is useless"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=0"), ("ETag", '"v1"')],
                 Settings(keep=600), 600, id="setting: keep holds a validatable response"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=0")], Settings(keep=600),
                 "stale-on-arrival", id="setting: keep needs a validator"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60"), ("Age", "50")], DEFAULT,
                 10, id="§4.2.3 a received Age shortens the TTL"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60"), ("Age", "60")], DEFAULT,
                 "stale-on-arrival", id="§4.2.3 stale on arrival"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=abc")], DEFAULT,
                 "stale-on-arrival", id="§4.2.1 invalid max-age is stale"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=90")],
                 DEFAULT, "stale-on-arrival", id="§4.2.1 conflicting max-age is stale"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60, max-age=60")], DEFAULT, 60,
                 id="§4.2.1 a repeated identical max-age is kept"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", 'max-age="60"')], DEFAULT, 60,
                 id="§5.2 quoted-string argument accepted"),
    pytest.param("GET", [], 200, [("Date", date()), ("Expires", "0")], DEFAULT, "stale-on-arrival",
                 id="§5.3 invalid Expires means already expired"),
    pytest.param("GET", [], 200, [("Date", date()), ("Expires", date(300))], DEFAULT, 300,
                 id="§4.2.1 Expires minus Date"),
    pytest.param("GET", [], 200, [("Expires", date(300))], DEFAULT, 300,
                 id="§4.2.1 Expires minus the receipt time without Date"),
    pytest.param("GET", [], 200, [("Date", date()), ("Expires", date(300)), ("Cache-Control", "max-age=30")],
                 DEFAULT, 30, id="§4.2.1 max-age over Expires"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60, s-maxage=120")], DEFAULT, 120,
                 id="§5.2.2.10 s-maxage over max-age in a shared cache"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60, s-maxage=120")],
                 Settings(shared=False), 60, id="§5.2.2.10 s-maxage ignored by a private cache"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=60, stale-while-revalidate=30")],
                 DEFAULT, 90, id="RFC 5861 §3 TTL includes stale-while-revalidate"),
    pytest.param("GET", [], 200, [("Date", date()),
                                  ("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=300")],
                 DEFAULT, 360, id="RFC 5861 §4 TTL includes the longer stale window"),
    pytest.param("GET", [], 200, [("Date", date()),
                                  ("Cache-Control", "max-age=60, must-revalidate, stale-if-error=300")], DEFAULT, 60,
                 id="§4.2.4 must-revalidate: no stale window"),
    pytest.param("GET", [], 200, FRESH_60, Settings(stale_while_revalidate=100), 160,
                 id="§4.2.4 configured default stale window"),
    pytest.param("GET", [], 200, [("Date", date()), ("Vary", "*"), ("Cache-Control", "max-age=60")], DEFAULT,
                 "vary-star", id="§4.1 Vary: * can never match"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "no-store"),
                                  ("CDN-Cache-Control", "max-age=60")], CDN, 60,
                 id="RFC 9213 §2.2 CDN-Cache-Control overrides Cache-Control"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "no-store"),
                                  ("CDN-Cache-Control", "max-age=60")], DEFAULT, "no-store",
                 id="RFC 9213 off in forward mode"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=600"),
                                  ("CDN-Cache-Control", "no-store")], CDN, "no-store",
                 id="RFC 9213 §2.2 targeted no-store"),
    pytest.param("GET", [], 200, [("Date", date()), ("Cache-Control", "max-age=600"),
                                  ("CDN-Cache-Control", "Max-Age=60")], CDN, 600,
                 id="RFC 9213 §2.1 an invalid targeted field is ignored"),
    pytest.param("GET", [], 200, [("Date", date()), ("Expires", date(600)),
                                  ("CDN-Cache-Control", "must-revalidate")], CDN, "stale-on-arrival",
                 id="RFC 9213 §2.2 a targeted field makes Expires ignored"),
    pytest.param("GET", [], 200, [("Date", date()), ("Acme-Cache-Control", "max-age=5"),
                                  ("CDN-Cache-Control", "max-age=50")], ACME, 5,
                 id="RFC 9213 §2.2 the first target wins"),
    pytest.param("GET", [], 200, [("Date", date()), ("CDN-Cache-Control", "max-age=50")], ACME, 50,
                 id="RFC 9213 §2.2 an own target falls back to CDN-Cache-Control"),
    pytest.param("GET", [], 200, [("Date", date()), ("CDN-Cache-Control", "no-store=?0, max-age=60")], CDN, 60,
                 id="RFC 8941 §3.3.6 ?0 is false"),
])
def test_decide_store(method, request_headers, status, headers, settings, expected):
    verdict = decide_store(method, request_headers, status, headers, settings, request_time=T0, response_time=T0)
    if isinstance(expected, int):
        assert isinstance(verdict, Store) and verdict.ttl == expected, verdict
    else:
        assert isinstance(verdict, DontStore) and verdict.detail == expected, verdict


def test_refusal_names_its_rule():
    verdict = store([("Cache-Control", "no-store")])
    assert verdict == DontStore("no-store", "RFC 9111 §5.2.2.5")


@pytest.mark.parametrize("headers, request_headers, absent, present", [
    pytest.param([*FRESH_60, ("Connection", "close, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                  ("Transfer-Encoding", "chunked"), ("X-End", "2")], [],
                 {"connection", "x-hop", "keep-alive", "transfer-encoding"}, {"x-end"},
                 id="§3.1 hop-by-hop and Connection-listed fields are not stored"),
    pytest.param([*FRESH_60, ("Proxy-Authenticate", "Basic")], [], {"proxy-authenticate"}, set(),
                 id="§3.1 proxy-specific fields are not stored"),
    pytest.param([("Cache-Control", 'max-age=60, private="X-User, X-Id"'), ("X-User", "u"), ("X-Id", "1"),
                  ("X-Page", "p")], [], {"x-user", "x-id"}, {"x-page"},
                 id="§5.2.2.7 qualified private fields are not stored"),
    pytest.param([("Cache-Control", "max-age=60")], [], set(), {"date"},
                 id="RFC 9110 §6.6.1 a Date is added when missing"),
])
def test_stored_header_fields(headers, request_headers, absent, present):
    verdict = store(headers, request=request_headers)
    assert isinstance(verdict, Store)
    kept = names(verdict.response.headers)
    assert not (kept & absent) and present <= kept


def test_added_date_is_the_receipt_time():
    verdict = store([("Cache-Control", "max-age=60")], delay=2)
    assert isinstance(verdict, Store)
    assert ("Date", date(2)) in verdict.response.headers


def test_stored_response_keeps_times_and_secondary_key():
    verdict = store([*FRESH_60, ("Vary", "Accept-Encoding")], request=[("Accept-Encoding", "gzip")], delay=1)
    assert isinstance(verdict, Store)
    response = verdict.response
    assert (response.status, response.request_time, response.response_time) == (200, T0, T0 + 1)
    assert response.secondary_key == "accept-encoding:gzip"


# --- Reuse: RFC 9111 §4 ---------------------------------------------------------------------------

ETAG_60 = [("Date", date()), ("Cache-Control", "max-age=60"), ("ETag", '"v1"')]


def cc(value: str) -> list[tuple[str, str]]:
    return [("Date", date()), ("Cache-Control", value), ("ETag", '"v1"')]


@pytest.mark.parametrize("request_headers, headers, now, settings, expected", [
    pytest.param([], ETAG_60, 30, DEFAULT, Fresh(30, 30), id="§4.2 fresh: age 30 of 60"),
    pytest.param([], ETAG_60, 60, DEFAULT, ("Revalidate", "stale", "stale"),
                 id="§4.2 stale once age reaches the lifetime"),
    pytest.param([], ETAG_60, 90, DEFAULT, ("Revalidate", "stale", "stale"), id="§4.2 stale: revalidate"),
    pytest.param([("Cache-Control", "no-cache")], ETAG_60, 1, DEFAULT,
                 ("Revalidate", "request", "request-no-cache"), id="§5.2.1.4 request no-cache"),
    pytest.param([("Pragma", "no-cache")], ETAG_60, 1, DEFAULT,
                 ("Revalidate", "request", "request-no-cache"), id="§5.4 Pragma no-cache without Cache-Control"),
    pytest.param([("Pragma", "no-cache"), ("Cache-Control", "max-stale")], ETAG_60, 1, DEFAULT, Fresh(1, 59),
                 id="§5.4 Pragma ignored with Cache-Control"),
    pytest.param([("Cache-Control", "max-age=10")], ETAG_60, 30, DEFAULT,
                 ("Revalidate", "request", "request-max-age"), id="§5.2.1.1 request max-age exceeded"),
    pytest.param([("Cache-Control", "max-age=30")], ETAG_60, 30, DEFAULT, Fresh(30, 30),
                 id="§5.2.1.1 request max-age equal to the age"),
    pytest.param([("Cache-Control", "max-age=0")], cc("max-age=60, stale-while-revalidate=60"), 70, DEFAULT,
                 ("Revalidate", "request", "request-max-age"), id="§5.2.1.1 reload wins over swr"),
    pytest.param([("Cache-Control", "max-age=x")], ETAG_60, 30, DEFAULT, Fresh(30, 30),
                 id="§5.2.1.1 invalid request max-age ignored"),
    pytest.param([("Cache-Control", "min-fresh=40")], ETAG_60, 30, DEFAULT,
                 ("Revalidate", "request", "min-fresh"), id="§5.2.1.3 min-fresh not met"),
    pytest.param([("Cache-Control", "min-fresh=20")], ETAG_60, 30, DEFAULT, Fresh(30, 30),
                 id="§5.2.1.3 min-fresh met"),
    pytest.param([("Cache-Control", "max-stale")], ETAG_60, 1000, DEFAULT,
                 ServeStale(1000, -940, "max-stale", None), id="§5.2.1.2 max-stale without value"),
    pytest.param([("Cache-Control", "max-stale=60")], ETAG_60, 100, DEFAULT,
                 ServeStale(100, -40, "max-stale", None), id="§5.2.1.2 max-stale within"),
    pytest.param([("Cache-Control", "max-stale=10")], ETAG_60, 100, DEFAULT,
                 ("Revalidate", "stale", "stale"), id="§5.2.1.2 max-stale exceeded"),
    pytest.param([("Cache-Control", "max-stale")], cc("max-age=60, must-revalidate"), 100, DEFAULT,
                 ("Revalidate", "stale", "must-revalidate"), id="§5.2.2.2 must-revalidate beats max-stale"),
    pytest.param([("Cache-Control", "max-stale")], cc("max-age=60, proxy-revalidate"), 100, DEFAULT,
                 ("Revalidate", "stale", "must-revalidate"), id="§5.2.2.8 proxy-revalidate in a shared cache"),
    pytest.param([("Cache-Control", "max-stale")], cc("max-age=60, proxy-revalidate"), 100,
                 Settings(shared=False), ServeStale(100, -40, "max-stale", None),
                 id="§5.2.2.8 proxy-revalidate ignored by a private cache"),
    pytest.param([("Cache-Control", "max-stale")], cc("s-maxage=60"), 100, DEFAULT,
                 ("Revalidate", "stale", "must-revalidate"), id="§5.2.2.10 s-maxage implies proxy-revalidate"),
    pytest.param([], cc("max-age=60, no-cache"), 1, DEFAULT, ("Revalidate", "stale", "no-cache"),
                 id="§5.2.2.4 response no-cache: validate even when fresh"),
    pytest.param([], cc('max-age=60, no-cache="set-cookie"'), 1, DEFAULT, Fresh(1, 59),
                 id="§5.2.2.4 qualified no-cache: reuse without the field"),
    pytest.param([], cc("max-age=60, stale-while-revalidate=30"), 70, DEFAULT,
                 ServeStale(70, -10, "stale-while-revalidate", [("If-None-Match", '"v1"')]),
                 id="RFC 5861 §3 within stale-while-revalidate: serve and revalidate"),
    pytest.param([], cc("max-age=60, stale-while-revalidate=30"), 100, DEFAULT, ("Revalidate", "stale", "stale"),
                 id="RFC 5861 §3 past stale-while-revalidate"),
    pytest.param([("Cache-Control", "min-fresh=1")], cc("max-age=60, stale-while-revalidate=30"), 70, DEFAULT,
                 ("Revalidate", "stale", "stale"), id="RFC 5861 §3 not against a client's min-fresh"),
    pytest.param([], ETAG_60, 70, Settings(stale_while_revalidate=30),
                 ServeStale(70, -10, "stale-while-revalidate", [("If-None-Match", '"v1"')]),
                 id="§4.2.4 configured stale-while-revalidate"),
    pytest.param([], cc("max-age=60, must-revalidate, stale-while-revalidate=30"), 70, DEFAULT,
                 ("Revalidate", "stale", "must-revalidate"), id="§4.2.4 must-revalidate forbids swr"),
    pytest.param([], cc("max-age=60, no-cache"), 1, CDN, ("Revalidate", "stale", "no-cache"),
                 id="Cache-Control counts when no targeted field is present"),
    pytest.param([], [*ETAG_60, ("CDN-Cache-Control", "max-age=600")], 100, CDN, Fresh(100, 500),
                 id="RFC 9213 §2.2 targeted freshness on reuse"),
    pytest.param([("Cache-Control", "no-store")], ETAG_60, 1, DEFAULT, Fresh(1, 59),
                 id="§5.2.1.5 request no-store does not forbid reuse"),
])
def test_decide_reuse(request_headers, headers, now, settings, expected):
    outcome = decide_reuse("GET", request_headers, stored(headers), settings, T0 + now)
    if isinstance(expected, tuple):
        assert isinstance(outcome, Revalidate), outcome
        assert (outcome.fwd, outcome.detail) == expected[1:]
        assert outcome.conditional == [("If-None-Match", '"v1"')]
    else:
        assert outcome == expected


@pytest.mark.parametrize("headers, now, stale_if_error, must_revalidate", [
    pytest.param(cc("max-age=60, stale-if-error=60"), 70, True, False, id="RFC 5861 §4 within stale-if-error"),
    pytest.param(cc("max-age=60, stale-if-error=60"), 130, False, False, id="RFC 5861 §4 past stale-if-error"),
    pytest.param(cc("max-age=60, stale-if-error=x"), 61, False, False, id="RFC 5861 §4 invalid window is 0"),
    pytest.param(cc("max-age=60, must-revalidate, stale-if-error=60"), 70, False, True,
                 id="§5.2.2.2 must-revalidate: 504 instead of stale"),
    pytest.param(ETAG_60, 70, False, False, id="§4.2.4 no window, no stale on error"),
])
def test_revalidation_on_error(headers, now, stale_if_error, must_revalidate):
    outcome = decide_reuse("GET", [], stored(headers), DEFAULT, T0 + now)
    assert isinstance(outcome, Revalidate)
    assert (outcome.stale_if_error, outcome.must_revalidate) == (stale_if_error, must_revalidate)


def test_configured_stale_if_error():
    outcome = decide_reuse("GET", [], stored(ETAG_60), Settings(stale_if_error=60), T0 + 70)
    assert isinstance(outcome, Revalidate) and outcome.stale_if_error


VARY = [*ETAG_60, ("Vary", "Accept-Encoding")]


@pytest.mark.parametrize("method, request_headers, response, expected", [
    pytest.param("POST", [], stored(ETAG_60), Forward("method", "method"), id="§4 only GET and HEAD reuse"),
    pytest.param("GET", [], None, Forward("uri-miss", "uri-miss"), id="§4 nothing stored"),
    pytest.param("HEAD", [], stored(ETAG_60), Fresh(1, 59), id="§4 a stored GET answers HEAD"),
    pytest.param("GET", [("Accept-Encoding", "gzip")], stored(VARY, request=[("Accept-Encoding", "gzip")]),
                 Fresh(1, 59), id="§4.1 Vary'd field matches"),
    pytest.param("GET", [("accept-encoding", "gzip,br")], stored(VARY, request=[("Accept-Encoding", "gzip, br")]),
                 Fresh(1, 59), id="§4.1 normalised values match"),
    pytest.param("GET", [("Accept-Encoding", "br")], stored(VARY, request=[("Accept-Encoding", "gzip")]),
                 Forward("vary-miss", "vary-miss"), id="§4.1 Vary'd field differs"),
    pytest.param("GET", [], stored(VARY, request=[("Accept-Encoding", "gzip")]),
                 Forward("vary-miss", "vary-miss"), id="§4.1 Vary'd field absent"),
    pytest.param("GET", [("If-Match", '"v1"')], stored(ETAG_60), Forward("bypass", "origin-precondition"),
                 id="§4.3.2 If-Match is the origin's to evaluate"),
    pytest.param("GET", [("Cache-Control", "only-if-cached")], stored(ETAG_60), Fresh(1, 59),
                 id="§5.2.1.7 only-if-cached with a fresh response"),
    pytest.param("GET", [("Cache-Control", "only-if-cached")], None, OnlyIfCachedMiss("uri-miss"),
                 id="§5.2.1.7 only-if-cached, nothing stored: 504"),
    pytest.param("POST", [("Cache-Control", "only-if-cached")], None, OnlyIfCachedMiss("method"),
                 id="§5.2.1.7 only-if-cached, unsafe method: 504"),
])
def test_selection(method, request_headers, response, expected):
    assert decide_reuse(method, request_headers, response, DEFAULT, T0 + 1) == expected


@pytest.mark.parametrize("headers, now, expected", [
    pytest.param(ETAG_60, 90, OnlyIfCachedMiss("stale"), id="§5.2.1.7 only-if-cached, stale: 504"),
    pytest.param(cc("max-age=60, stale-while-revalidate=60"), 90,
                 ServeStale(90, -30, "stale-while-revalidate", [("If-None-Match", '"v1"')]),
                 id="§5.2.1.7 only-if-cached takes a stale-while-revalidate response"),
])
def test_only_if_cached(headers, now, expected):
    request = [("Cache-Control", "only-if-cached")]
    assert decide_reuse("GET", request, stored(headers), DEFAULT, T0 + now) == expected


@pytest.mark.parametrize("headers, expected", [
    pytest.param(ETAG_60, [("If-None-Match", '"v1"')], id="§4.3.1 entity-tag as If-None-Match"),
    pytest.param([*FRESH_60, ("Last-Modified", date(-10))], [("If-Modified-Since", date(-10))],
                 id="§4.3.1 Last-Modified as If-Modified-Since"),
    pytest.param([*ETAG_60, ("Last-Modified", date(-10))],
                 [("If-None-Match", '"v1"'), ("If-Modified-Since", date(-10))], id="§4.3.1 both validators"),
    pytest.param(FRESH_60, [], id="§4.3.1 no validator: an unconditional request"),
])
def test_conditional_headers(headers, expected):
    outcome = decide_reuse("GET", [], stored(headers), DEFAULT, T0 + 100)
    assert isinstance(outcome, Revalidate) and outcome.conditional == expected


@pytest.mark.parametrize("headers, age, expected", [
    pytest.param([("Date", "x"), ("Age", "10")], 30, [("Date", "x"), ("Age", "30")], id="§5.1 Age replaced"),
    pytest.param([("Date", "x")], 7, [("Date", "x"), ("Age", "7")], id="§5.1 Age added"),
    pytest.param([("age", "1"), ("AGE", "2")], 0, [("Age", "0")], id="§5.1 one Age field"),
])
def test_with_age(headers, age, expected):
    assert with_age(headers, age) == expected


def test_age_of_a_response_that_arrived_old():
    response = stored([("Date", date(-100)), ("Cache-Control", "max-age=600"), ("ETag", '"v1"')])
    assert decide_reuse("GET", [], response, DEFAULT, T0 + 20) == Fresh(120, 480)


# --- Validation: RFC 9111 §4.3 --------------------------------------------------------------------

def refresh(response, headers, *, method_head=False, settings=DEFAULT, at=100.0):
    update = freshen_head if method_head else freshen
    return update(response, [], headers, settings, request_time=T0 + at, response_time=T0 + at)


STRONG = stored([*ETAG_60, ("Content-Length", "5"), ("Last-Modified", date(-1000))])
WEAK = stored([("Date", date()), ("Cache-Control", "max-age=60"), ("ETag", 'W/"v1"')])
PLAIN = stored([*FRESH_60, ("Last-Modified", date(-1000))])


@pytest.mark.parametrize("response, headers_304, selected", [
    pytest.param(STRONG, [("ETag", '"v1"')], True, id="§4.3.4 the same strong validator"),
    pytest.param(STRONG, [("ETag", '"v2"')], False, id="§4.3.4 another strong validator"),
    pytest.param(STRONG, [("ETag", 'W/"v1"')], True, id="§4.3.4 a weak validator compares weakly"),
    pytest.param(WEAK, [("ETag", '"v1"')], False, id="§4.3.4 a strong validator never matches a weak one"),
    pytest.param(WEAK, [("ETag", 'W/"v1"')], True, id="§4.3.4 weak matches weak"),
    pytest.param(PLAIN, [("Last-Modified", date(-1000))], True, id="§4.3.4 the same Last-Modified"),
    pytest.param(PLAIN, [("Last-Modified", date(-10))], False, id="§4.3.4 another Last-Modified"),
    pytest.param(PLAIN, [("ETag", '"v1"')], False, id="§4.3.4 an entity-tag the stored response lacks"),
    pytest.param(STRONG, [("Cache-Control", "max-age=60")], True, id="DEVIATION: a 304 without validators"),
])
def test_freshen_selects_by_validator(response, headers_304, selected):
    result = refresh(response, [("Date", date(100)), *headers_304])
    assert isinstance(result, Store) == selected
    if not selected:
        assert result == NoMatch("validator-mismatch")


def test_freshen_updates_headers_and_restarts_freshness():
    result = refresh(STRONG, [("Date", date(100)), ("ETag", '"v1"'), ("Cache-Control", "max-age=120"),
                              ("Content-Length", "0"), ("X-New", "1"), ("Connection", "close")])
    assert isinstance(result, Store) and result.ttl == 120
    headers = dict((name.lower(), value) for name, value in result.response.headers)
    assert headers["cache-control"] == "max-age=120"  # §3.2: replaced
    assert headers["content-length"] == "5"  # §3.2: Content-Length is never updated
    assert headers["x-new"] == "1" and "connection" not in headers
    assert headers["last-modified"] == date(-1000)  # kept
    assert decide_reuse("GET", [], result.response, DEFAULT, T0 + 150) == Fresh(50, 70)


@pytest.mark.parametrize("headers_304, date_header, age", [
    pytest.param([("ETag", '"v1"')], date(100), 0, id="RFC 9110 §6.6.1 a 304 without Date gets one"),
    pytest.param([("ETag", '"v1"'), ("Date", date(100)), ("Age", "20")], date(100), 20,
                 id="§4.2.3 the 304's Age counts"),
])
def test_freshen_takes_the_new_message_date_and_age(headers_304, date_header, age):
    response = stored([*ETAG_60, ("Age", "50")])
    result = refresh(response, headers_304)
    assert isinstance(result, Store)
    assert ("Date", date_header) in result.response.headers
    assert [value for name, value in result.response.headers if name == "Age"] == ([str(age)] if age else [])


@pytest.mark.parametrize("request_headers, headers_304, detail, drop", [
    pytest.param([], [("Cache-Control", "no-store")], "no-store", True,
                 id="§5.2.2.5 a 304 with no-store: serve once, drop the entry"),
    pytest.param([], [("Set-Cookie", "a=1")], "set-cookie", True,
                 id="setting: a 304 adding Set-Cookie drops the entry"),
    pytest.param([], [("Cache-Control", "max-age=0")], "stale-on-arrival", True,
                 id="§4.2 freshened but already stale"),
    pytest.param([("Cache-Control", "no-store")], [], "request-no-store", False,
                 id="§5.2.1.5 a no-store request updates nothing and purges nothing"),
    pytest.param([("Authorization", "Basic eA==")], [], "authorization", False,
                 id="§3.5 an authorized request's 304 does not update the entry"),
])
def test_freshen_that_must_not_keep(request_headers, headers_304, detail, drop):
    result = freshen(STRONG, request_headers, [("Date", date(100)), ("ETag", '"v1"'), *headers_304], DEFAULT,
                     request_time=T0 + 100, response_time=T0 + 100)
    assert isinstance(result, ServeOnce) and (result.detail, result.drop) == (detail, drop)
    assert ("Date", date(100)) in result.response.headers


@pytest.mark.parametrize("head_headers, agrees", [
    pytest.param([("ETag", '"v1"'), ("Content-Length", "5")], True, id="§4.3.5 validators and length agree"),
    pytest.param([("Cache-Control", "max-age=90")], True, id="§4.3.5 nothing to disagree with"),
    pytest.param([("ETag", '"v2"')], False, id="§4.3.5 another entity-tag"),
    pytest.param([("Last-Modified", date(-5))], False, id="§4.3.5 another Last-Modified"),
    pytest.param([("ETag", '"v1"'), ("Content-Length", "6")], False, id="§4.3.5 another Content-Length"),
])
def test_freshen_head(head_headers, agrees):
    result = refresh(STRONG, [("Date", date(100)), ("Cache-Control", "max-age=90"), *head_headers],
                     method_head=True)
    if agrees:
        assert isinstance(result, Store) and result.ttl == 90
        assert ("Content-Length", "5") in result.response.headers
    else:
        assert result == NoMatch("head-mismatch")


# --- Answering a client's conditional request (RFC 9110 §13.1, §15.4.5) --------------------------

CONDITIONAL = stored([("Date", date()), ("Cache-Control", "max-age=60"), ("ETag", '"v1"'),
                      ("Last-Modified", date(-1000)), ("Content-Type", "text/plain"), ("Vary", "Accept"),
                      ("Content-Length", "5")])
NO_ETAG = stored([*FRESH_60, ("Last-Modified", date(-1000)), ("Content-Type", "text/plain")])


@pytest.mark.parametrize("request_headers, response, not_modified", [
    pytest.param([("If-None-Match", '"v1"')], CONDITIONAL, True, id="RFC 9110 §13.1.2 matching entity-tag"),
    pytest.param([("If-None-Match", 'W/"v1"')], CONDITIONAL, True, id="RFC 9110 §13.1.2 weak comparison"),
    pytest.param([("If-None-Match", '"x", "v1"')], CONDITIONAL, True, id="RFC 9110 §13.1.2 one of a list"),
    pytest.param([("If-None-Match", "*")], CONDITIONAL, True, id="RFC 9110 §13.1.2 star"),
    pytest.param([("If-None-Match", '"v2"')], CONDITIONAL, False, id="RFC 9110 §13.1.2 no match"),
    pytest.param([("If-None-Match", '"v2"'), ("If-Modified-Since", date())], CONDITIONAL, False,
                 id="RFC 9110 §13.1.3 If-Modified-Since ignored with If-None-Match"),
    pytest.param([("If-Modified-Since", date(-1000))], CONDITIONAL, True,
                 id="RFC 9110 §13.1.3 not modified since"),
    pytest.param([("If-Modified-Since", date(-2000))], CONDITIONAL, False, id="RFC 9110 §13.1.3 modified since"),
    pytest.param([("If-Modified-Since", "yesterday")], CONDITIONAL, False,
                 id="RFC 9110 §13.1.3 an invalid date is ignored"),
    pytest.param([("If-Modified-Since", date(-10))], stored(FRESH_60), False,
                 id="§4.3.2 without Last-Modified the stored Date counts"),
    pytest.param([("If-Modified-Since", date(10))], stored(FRESH_60), True,
                 id="§4.3.2 Date not after If-Modified-Since"),
    pytest.param([], CONDITIONAL, False, id="no precondition"),
    pytest.param([("If-None-Match", '"v1"')], stored([*ETAG_60], status=404), False,
                 id="RFC 9110 §13.2.1 preconditions only for a 2xx"),
])
def test_conditional_reply(request_headers, response, not_modified):
    assert (conditional_reply(request_headers, response) is not None) == not_modified


@pytest.mark.parametrize("response, expected", [
    pytest.param(CONDITIONAL, {"date", "cache-control", "etag", "vary"},
                 id="RFC 9110 §15.4.5 a 304 carries the cache-related fields"),
    pytest.param(NO_ETAG, {"date", "cache-control", "last-modified"},
                 id="RFC 9110 §15.4.5 Last-Modified only without an ETag"),
])
def test_not_modified_fields(response, expected):
    reply = conditional_reply([("If-Modified-Since", date())], response)
    assert reply is not None and names(reply) == expected


# --- Invalidation: RFC 9111 §4.4 ------------------------------------------------------------------

TARGET = "http://example.com/a/b"


@pytest.mark.parametrize("method, status, headers, expected", [
    pytest.param("POST", 200, [], [TARGET], id="§4.4 unsafe method, 2xx"),
    pytest.param("DELETE", 302, [], [TARGET], id="§4.4 3xx is not an error"),
    pytest.param("PATCH", 404, [], [], id="§4.4 an error response invalidates nothing"),
    pytest.param("POST", 500, [], [], id="§4.4 5xx invalidates nothing"),
    pytest.param("GET", 200, [], [], id="§4.4 safe method"),
    pytest.param("OPTIONS", 200, [], [], id="RFC 9110 §9.2.1 OPTIONS is safe"),
    pytest.param("PURGE", 200, [], [TARGET], id="§4.4 a method of unknown safety is unsafe"),
    pytest.param("POST", 201, [("Location", "/a/c")], [TARGET, "http://example.com/a/c"],
                 id="§4.4 same-origin Location"),
    pytest.param("PUT", 200, [("Content-Location", "d#top")], [TARGET, "http://example.com/a/d"],
                 id="§4.4 relative Content-Location, fragment dropped"),
    pytest.param("POST", 201, [("Location", "http://other.example/x")], [TARGET], id="§4.4 another host"),
    pytest.param("POST", 201, [("Location", "https://example.com/x")], [TARGET], id="§4.4 another scheme"),
    pytest.param("POST", 201, [("Location", "http://example.com:8080/x")], [TARGET], id="§4.4 another port"),
    pytest.param("POST", 201, [("Location", "http://EXAMPLE.com:80/x")], [TARGET, "http://EXAMPLE.com:80/x"],
                 id="§4.4 same origin by default port and host case"),
    pytest.param("POST", 201, [("Location", "http://example.com:99999/x")], [TARGET], id="§4.4 invalid port"),
    pytest.param("POST", 200, [("Location", TARGET), ("Content-Location", TARGET)], [TARGET],
                 id="§4.4 each URI once"),
])
def test_invalidations(method, status, headers, expected):
    assert invalidations(method, TARGET, status, headers) == expected
